package retention

import (
	"fmt"
	"strings"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var t0 = time.Date(2021, 3, 16, 1, 48, 0, 0, time.UTC)

func obj(i int) Object {
	t := t0.Add(time.Duration(i) * time.Minute)
	name := backupname.Backup("cfg", t)
	return Object{Key: backupname.ObjectKey("c", "cluster-c", "cfg", name), Backup: name, Scheduled: t}
}

func entry(i int, phase string) kubermaticv1.BackupStatus {
	o := obj(i)
	return kubermaticv1.BackupStatus{BackupName: o.Backup, ScheduledTime: metav1.NewTime(o.Scheduled),
		BackupPhase: phase, ObjectKey: o.Key}
}

func config(schedule string, keep int, entries ...kubermaticv1.BackupStatus) *kubermaticv1.EtcdBackupConfig {
	c := &kubermaticv1.EtcdBackupConfig{ObjectMeta: metav1.ObjectMeta{Name: "cfg", Namespace: "cluster-c"}}
	c.Spec.Schedule, c.Spec.Keep = schedule, &keep
	c.Status.LastBackups = entries
	return c
}

func backups(ds []Deletion) string {
	s := ""
	for _, d := range ds {
		s += fmt.Sprintf("%s(%s) ", d.Scheduled.Format("15:04"), d.Reason)
	}
	return s
}

func TestParseKey(t *testing.T) {
	o := obj(3)
	got, ok := ParseKey("cfg", o.Key)
	if !ok || got.Backup != o.Backup || !got.Scheduled.Equal(o.Scheduled) {
		t.Fatalf("ParseKey(%s) = %+v, %v", o.Key, got, ok)
	}
	for _, bad := range []string{"c/cluster-c/cfg/other-2021-03-16T01-48-00.db.zst",
		"c/cluster-c/cfg/cfg-yesterday.db.zst", "c/cluster-c/cfg/cfg-2021-03-16T01-48-00.db", "c/cluster-c/cfg/notes.txt"} {
		if _, ok := ParseKey("cfg", bad); ok {
			t.Errorf("ParseKey accepted %s", bad)
		}
	}
}

func TestPlan(t *testing.T) {
	deleting := config("@every 1m", 2, entry(0, "Completed"), entry(1, "Completed"))
	now := metav1.Now()
	deleting.DeletionTimestamp = &now
	withDeleted := entry(0, "Completed")
	withDeleted.DeletePhase = "Completed"
	beingDeleted := entry(0, "Completed")
	beingDeleted.DeletePhase = "Running"
	tests := []struct {
		name     string
		cfg      *kubermaticv1.EtcdBackupConfig
		objects  []Object
		delete   string
		unlisted int
		vanished int
	}{
		{"within keep: nothing", config("@every 1m", 3, entry(0, "Completed"), entry(1, "Completed")), []Object{obj(0),
			obj(1)}, "", 0, 0},
		{"beyond keep: the oldest go", config("@every 1m", 2, entry(0, "Completed"), entry(1, "Completed"), entry(2,
			"Completed"), entry(3, "Completed")), []Object{obj(0), obj(1), obj(2), obj(3)},
			"01:48(retention) 01:49(retention) ", 0, 0},
		{"keep 0 (KKP's CRD takes it) keeps the newest, not none", config("@every 1m", 0, entry(0, "Completed"), entry(1,
			"Completed")), []Object{obj(0), obj(1)}, "01:48(retention) ", 0, 0},
		{"failed backups always go", config("@every 1m", 5, entry(0, "Failed"), entry(1, "Completed")), []Object{obj(1)},
			"01:48(failed) ", 0, 0},
		{"running backups stay", config("@every 1m", 1, entry(0, "Completed"), entry(1, "Running")), []Object{obj(0)}, "",
			0, 0},
		{"one-time backups are not pruned by count", config("", 1, entry(0, "Completed"), entry(1, "Completed")),
			[]Object{obj(0), obj(1)}, "", 0, 0},
		{"an object no status lists is counted and listed", config("@every 1m", 2, entry(1, "Completed"), entry(2,
			"Completed")), []Object{obj(0), obj(1), obj(2)}, "01:48(retention) ", 1, 0},
		{"a listed object that vanished is reported", config("@every 1m", 5, entry(0, "Completed"), entry(1, "Completed")),
			[]Object{obj(1)}, "", 0, 1},
		{"a deleted entry is done", config("@every 1m", 5, withDeleted), nil, "", 0, 0},
		{"an entry being deleted has not vanished: its deleter reports the end", config("@every 1m", 5, beingDeleted,
			entry(1, "Completed")), []Object{obj(1)}, "", 0, 0},
		{"status saying Failed does not delete a stored object", config("@every 1m", 5, entry(0, "Failed"), entry(1,
			"Completed")), []Object{obj(0), obj(1)}, "", 0, 0},
		{"a status entry that is not a backup of the config is ignored", config("@every 1m", 5,
			kubermaticv1.BackupStatus{BackupName: "other-2021-03-16T01:48:00", BackupPhase: "Failed",
				ObjectKey: "victim/cluster-victim/x.db.zst"}), nil, "", 0, 0},
		{"a deleted config loses everything", deleting, []Object{obj(0), obj(1)},
			"01:48(config deleted) 01:49(config deleted) ", 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := plan(tc.cfg, tc.objects)
			if got := backups(d.Delete); got != tc.delete {
				t.Errorf("delete %q, want %q", got, tc.delete)
			}
			if len(d.Unlisted) != tc.unlisted || len(d.Vanished) != tc.vanished {
				t.Errorf("unlisted %d vanished %d, want %d and %d", len(d.Unlisted), len(d.Vanished), tc.unlisted, tc.vanished)
			}
		})
	}
}

// A Failed entry's deletion names no object, whatever key status claims: deleting it only
// marks the entry.
func TestFailedEntryDeletionNamesNoObject(t *testing.T) {
	e := entry(0, "Failed")
	e.ObjectKey = "victim/cluster-victim/cfg/cfg-2021-03-16T01-48-00.db.zst"
	d := plan(config("@every 1m", 5, e), nil)
	if len(d.Delete) != 1 || d.Delete[0].Key != "" {
		t.Fatalf("deletions %+v, want one naming no object", d.Delete)
	}
}

// A scheduler replica whose clock ran 30 days ahead named two backups in the future. Once its
// clock is right again, the good backups taken after those must not be pushed out of keep:
// retention ranks by when the bucket stored each backup (or its name's time, if earlier).
func TestRetentionRanksByStoredTimeNotAFutureName(t *testing.T) {
	at := func(i int, stored time.Time) Object {
		o := obj(i)
		o.Stored = stored
		return o
	}
	const ahead = 30 * 24 * 60 // minutes
	future1, future2 := at(ahead, t0), at(ahead+1, t0.Add(time.Minute))
	good := []Object{at(2, t0.Add(2*time.Minute)), at(3, t0.Add(3*time.Minute)), at(4, t0.Add(4*time.Minute))}
	var entries []kubermaticv1.BackupStatus
	for _, i := range []int{ahead, ahead + 1, 2, 3, 4} {
		entries = append(entries, entry(i, "Completed"))
	}
	d := plan(config("@every 1m", 3, entries...), append([]Object{future1, future2}, good...))
	var deleted []string
	for _, x := range d.Delete {
		deleted = append(deleted, x.Backup)
	}
	if len(deleted) != 2 || deleted[0] != future1.Backup && deleted[1] != future1.Backup ||
		deleted[0] != future2.Backup && deleted[1] != future2.Backup {
		t.Fatalf("deleted %v, want the two future-named backups (stored first), not the good ones", deleted)
	}
	// A copy of an old backup stored again ranks by its name's (earlier) time.
	old := at(0, t0.Add(time.Hour))
	d = plan(config("@every 1m", 3, entry(0, "Completed"), entry(2, "Completed"), entry(3, "Completed"), entry(4,
		"Completed")), append([]Object{old}, good...))
	if len(d.Delete) != 1 || d.Delete[0].Backup != old.Backup {
		t.Fatalf("deleted %s, want the old backup stored again", backups(d.Delete))
	}
}

// plan decides over one destination, "s3", listed.
func plan(cfg *kubermaticv1.EtcdBackupConfig, objects []Object) Decision {
	return Plan(cfg, objects, Scope{Current: "s3", Listed: map[string]bool{"s3": true}, Now: t0})
}

func in(dest string, o Object) Object {
	o.Destination = dest
	return o
}

func at(dest string, e kubermaticv1.BackupStatus) kubermaticv1.BackupStatus {
	e.Destination = dest
	return e
}

// A backup a restore needs is neither pruned by count nor deleted with its config while the
// restore runs; it is held (and counts as pending for the config's deletion).
func TestHeldBackupsAreNotDeleted(t *testing.T) {
	held := map[string]string{obj(0).Backup: "held: EtcdRestore cluster-c/r restores from it"}
	scope := Scope{Current: "s3", Listed: map[string]bool{"s3": true}, Held: held, Now: t0}
	cfg := config("@every 1m", 2, entry(0, "Completed"), entry(1, "Completed"), entry(2, "Completed"), entry(3,
		"Completed"))
	d := Plan(cfg, []Object{obj(0), obj(1), obj(2), obj(3)}, scope)
	if got := backups(d.Delete); got != "01:49(retention) " {
		t.Fatalf("retention deletes %q, want only 01:49: 01:48 is held", got)
	}
	if len(d.Held) != 1 || d.Held[0].Backup != obj(0).Backup || d.Held[0].Reason != held[obj(0).Backup] {
		t.Fatalf("held %+v", d.Held)
	}
	now := metav1.Now()
	cfg.DeletionTimestamp = &now
	d = Plan(cfg, []Object{obj(0), obj(1), obj(2), obj(3)}, scope)
	if len(d.Delete) != 3 || len(d.Held) != 1 || d.Pending() != 4 {
		t.Fatalf("a deleted config: delete %q, held %d, pending %d; want 3 deleted, 1 held, 4 pending", backups(d.Delete),
			len(d.Held), d.Pending())
	}
	// Once the restore ends, the same listing deletes it.
	scope.Held = nil
	if d = Plan(cfg, []Object{obj(0)}, scope); backups(d.Delete) != "01:48(config deleted) " {
		t.Fatalf("after the restore: %q", backups(d.Delete))
	}
}

// Backups left in a destination the config no longer uses (a changed spec.destination or
// Seed default) are neither "vanished" nor forgotten: retention ranks them with the new
// ones, and deletes them from where they are.
func TestRetentionOverEveryDestination(t *testing.T) {
	cfg := config("@every 1m", 2, at("old", entry(0, "Completed")), at("old", entry(1, "Completed")), at("new", entry(2,
		"Completed")), at("new", entry(3, "Completed")))
	objects := []Object{in("old", obj(0)), in("old", obj(1)), in("new", obj(2)), in("new", obj(3))}
	d := Plan(cfg, objects, Scope{Current: "new", Listed: map[string]bool{"old": true, "new": true}, Now: t0})
	if len(d.Vanished) != 0 {
		t.Fatalf("vanished %v: backups in the old destination are there", d.Vanished)
	}
	if len(d.Delete) != 2 || d.Delete[0].Destination != "old" || d.Delete[1].Destination != "old" ||
		backups(d.Delete) != "01:48(retention) 01:49(retention) " {
		t.Fatalf("delete %+v, want the two oldest, from destination old", d.Delete)
	}
	// A destination that could not be listed says nothing about its backups.
	d = Plan(cfg, objects[2:], Scope{Current: "new", Listed: map[string]bool{"new": true}, Now: t0})
	if len(d.Vanished) != 0 || len(d.Delete) != 0 {
		t.Fatalf("old not listed: vanished %v, delete %q; want neither", d.Vanished, backups(d.Delete))
	}
	// One listed, where the object is gone, has vanished.
	d = Plan(cfg, objects[1:], Scope{Current: "new", Listed: map[string]bool{"old": true, "new": true}, Now: t0})
	if len(d.Vanished) != 1 || d.Vanished[0].BackupName != obj(0).Backup || d.Vanished[0].Destination != "old" {
		t.Fatalf("vanished %+v, want 01:48 in old", d.Vanished)
	}
}

// A config's deletion waits for backups still Running (their upload may store an object after
// the listing), for up to RunningGrace from their start.
func TestConfigDeletionWaitsForRunningBackups(t *testing.T) {
	running := entry(5, "Running")
	running.BackupStartTime = metav1.NewTime(t0)
	cfg := config("@every 1m", 2, entry(0, "Completed"), running)
	now := metav1.Now()
	cfg.DeletionTimestamp = &now
	for _, tc := range []struct {
		now  time.Time
		wait int
	}{{t0.Add(time.Minute), 1}, {t0.Add(RunningGrace + time.Second), 0}} {
		d := Plan(cfg, []Object{obj(0)}, Scope{Current: "s3", Listed: map[string]bool{"s3": true}, Now: tc.now})
		if len(d.Waiting) != tc.wait || d.Pending() != 1+tc.wait {
			t.Fatalf("at %s: waiting %d, pending %d; want %d and %d", tc.now.Sub(t0), len(d.Waiting), d.Pending(), tc.wait,
				1+tc.wait)
		}
	}
	// A config that is not being deleted waits for nothing.
	cfg.DeletionTimestamp = nil
	if d := Plan(cfg, []Object{obj(0)}, Scope{Current: "s3", Listed: map[string]bool{"s3": true},
		Now: t0}); len(d.Waiting) != 0 {
		t.Fatalf("waiting %v", d.Waiting)
	}
}

// When newer backups fail their drills, the newest one that passed stays beyond keep:
// retention never lets a config lose its last backup known to restore. The config's deletion
// still deletes it.
func TestRetentionKeepsTheLastRestorableBackup(t *testing.T) {
	cfg := config("@every 1m", 2, entry(0, "Completed"), entry(1, "Completed"), entry(2, "Completed"), entry(3,
		"Completed"))
	cfg.Annotations = map[string]string{kubermaticv1.AnnotationLastRestorable: obj(0).Backup}
	objects := []Object{obj(0), obj(1), obj(2), obj(3)}
	if got := backups(plan(cfg, objects).Delete); got != "01:49(retention) " {
		t.Fatalf("delete %q, want only 01:49: 01:48 is the last backup that passed a drill", got)
	}
	now := metav1.Now()
	cfg.DeletionTimestamp = &now
	if d := plan(cfg, objects); len(d.Delete) != 4 {
		t.Fatalf("a deleted config: delete %q, want all four", backups(d.Delete))
	}
}

// Tiered retention keeps the newest backup of each of the last N hours, days, weeks and
// months on top of keep; a bad annotation deletes nothing; a deleted config still loses all.
func TestTieredRetention(t *testing.T) {
	now := time.Date(2026, 12, 2, 13, 50, 0, 0, time.UTC)
	var objects []Object
	var entries []kubermaticv1.BackupStatus
	// Every 20 minutes for 3 days.
	for at := now.Add(-72 * time.Hour); !at.After(now); at = at.Add(20 * time.Minute) {
		name := backupname.Backup("cfg", at)
		objects = append(objects, Object{Key: backupname.ObjectKey("c", "cluster-c", "cfg", name), Backup: name,
			Scheduled: at})
		entries = append(entries, kubermaticv1.BackupStatus{BackupName: name, ScheduledTime: metav1.NewTime(at),
			BackupPhase: "Completed"})
	}
	cfg := config("@every 20m", 2, entries...)
	cfg.Annotations = map[string]string{kubermaticv1.AnnotationRetention: "hourly=3,daily=3"}
	d := Plan(cfg, objects, Scope{Current: "s3", Listed: map[string]bool{"s3": true}, Now: now})
	kept := map[string]bool{}
	for _, o := range objects {
		kept[o.Backup] = true
	}
	for _, del := range d.Delete {
		if del.Reason != ReasonRetention {
			t.Errorf("%s deleted for %s", del.Backup, del.Reason)
		}
		delete(kept, del.Backup)
	}
	var names []string
	for _, o := range objects {
		if kept[o.Backup] {
			names = append(names, o.Scheduled.Format("01-02T15:04"))
		}
	}
	// keep 2: 13:50 and 13:30; hours 13, 12, 11: 13:50, 12:50, 11:50; days 12-02, 12-01,
	// 11-30: 13:50, 23:50, 23:50.
	want := "11-30T23:50 12-01T23:50 12-02T11:50 12-02T12:50 12-02T13:30 12-02T13:50"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("kept %s, want %s", got, want)
	}
	if tiers := d.Tiers[backupname.Backup("cfg", now)]; len(tiers) != 2 {
		t.Errorf("the newest backup is kept by %v, want hourly and daily", tiers)
	}

	cfg.Annotations[kubermaticv1.AnnotationRetention] = "hourly=3,yearly=1"
	d = Plan(cfg, objects, Scope{Current: "s3", Listed: map[string]bool{"s3": true}, Now: now})
	if len(d.Delete) != 0 || d.InvalidRetention == nil {
		t.Errorf("a bad annotation: %d deletions, error %v; want none and the error", len(d.Delete), d.InvalidRetention)
	}

	deleted := metav1.NewTime(now)
	cfg.Annotations[kubermaticv1.AnnotationRetention] = "daily=7"
	cfg.DeletionTimestamp = &deleted
	if d := Plan(cfg, objects, Scope{Current: "s3", Listed: map[string]bool{"s3": true}, Now: now}); len(d.Delete) != len(
		objects) {
		t.Errorf("a deleted config with tiers: %d of %d deleted", len(d.Delete), len(objects))
	}
}

// With a grace period, a config being deleted keeps what its retention keeps (keep, tiers, the
// last restorable backup; a one-time config all of them) and deletes the rest; without, all go.
func TestDeletionGraceKeepsWhatRetentionKeeps(t *testing.T) {
	names := func(objects []Object) string {
		s := ""
		for _, o := range objects {
			s += o.Scheduled.Format("15:04") + " "
		}
		return s
	}
	objects := []Object{obj(0), obj(1), obj(2), obj(3), obj(4)}
	now := metav1.NewTime(t0.Add(time.Hour))
	scheduled := config("@every 1m", 2, entry(0, "Completed"), entry(1, "Completed"), entry(2, "Completed"), entry(3,
		"Completed"), entry(4, "Completed"), entry(5, "Failed"))
	scheduled.DeletionTimestamp = &now
	scheduled.Annotations = map[string]string{kubermaticv1.AnnotationLastRestorable: obj(0).Backup}
	oneTime := config("", 1, entry(0, "Completed"), entry(1, "Completed"))
	oneTime.DeletionTimestamp = &now
	tests := []struct {
		name           string
		cfg            *kubermaticv1.EtcdBackupConfig
		objects        []Object
		grace          bool
		graced, delete string
	}{
		{"no grace: every backup goes", scheduled, objects, false, "",
			"01:48(config deleted) 01:49(config deleted) 01:50(config deleted) 01:51(config deleted) " +
				"01:52(config deleted) 01:53(failed) "},
		{"grace: the newest keep and the last restorable stay", scheduled, objects, true, "01:52 01:51 01:48 ",
			"01:49(config deleted) 01:50(config deleted) 01:53(failed) "},
		{"grace: a one-time config keeps all", oneTime, objects[:2], true, "01:49 01:48 ", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := Plan(tc.cfg, tc.objects, Scope{Current: "s3", Listed: map[string]bool{"s3": true}, Now: now.Time,
				Grace: tc.grace})
			if got := names(d.Graced); got != tc.graced {
				t.Errorf("graced %q, want %q", got, tc.graced)
			}
			if got := backups(d.Delete); got != tc.delete {
				t.Errorf("delete %q, want %q", got, tc.delete)
			}
		})
	}
}
