package statuswriter

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var t0 = time.Date(2021, 3, 16, 1, 48, 0, 0, time.UTC)

func ev(backup string, slot time.Time, stage etcdbackupv1.Stage, phase etcdbackupv1.Phase, at time.Duration,
	msg string) *etcdbackupv1.StatusEvent {
	return &etcdbackupv1.StatusEvent{
		BackupName: backup, JobName: "job-" + backup, ScheduledTime: timestamppb.New(slot),
		Stage: stage, Phase: phase, Message: msg, Time: timestamppb.New(slot.Add(at)),
		ObjectKey: "key/" + backup, Size: 42, Sha256: "abc", Revision: 7,
	}
}

const (
	sched = etcdbackupv1.Stage_STAGE_SCHEDULER
	snap  = etcdbackupv1.Stage_STAGE_SNAPSHOTTER
	up    = etcdbackupv1.Stage_STAGE_UPLOADER
	run   = etcdbackupv1.Phase_PHASE_RUNNING
	done  = etcdbackupv1.Phase_PHASE_COMPLETED
	fail  = etcdbackupv1.Phase_PHASE_FAILED
)

func del(backup string, slot time.Time, phase etcdbackupv1.Phase, at time.Duration,
	msg string) *etcdbackupv1.StatusEvent {
	e := ev(backup, slot, etcdbackupv1.Stage_STAGE_PRUNER, phase, at, msg)
	e.Operation = etcdbackupv1.Operation_OPERATION_DELETE
	e.JobName = "delete-" + backup
	return e
}

func TestMergeDeletion(t *testing.T) {
	b1 := "cfg-a"
	var s kubermaticv1.EtcdBackupConfigStatus
	for _, e := range []*etcdbackupv1.StatusEvent{
		ev(b1, t0, up, done, time.Second, "stored"),
		del(b1, t0, run, time.Hour, "deleting"),
		del(b1, t0, fail, time.Hour+time.Second, "s3 down"),
	} {
		Merge(&s, e)
	}
	e := s.LastBackups[0]
	if e.BackupPhase != "Completed" || e.DeletePhase != "Failed" || e.DeleteMessage != "s3 down" ||
		e.DeleteJobName != "delete-"+b1 || e.DeleteStartTime.IsZero() {
		t.Fatalf("entry %+v", e)
	}
	Merge(&s, del(b1, t0, done, 2*time.Hour, "deleted"))
	Merge(&s, del(b1, t0, run, 3*time.Hour, "late progress"))
	Merge(&s, ev(b1, t0, up, done, 4*time.Hour, "late backup event"))
	if e := s.LastBackups[0]; len(s.LastBackups) != 1 || e.DeletePhase != "Completed" || e.DeleteMessage != "deleted" ||
		!e.DeleteFinishedTime.Time.Equal(t0.Add(2*time.Hour)) {
		t.Fatalf("entries %+v", s.LastBackups)
	}
	if s.LastBackupName != "" {
		t.Fatalf("summary names a deleted backup: %s", s.LastBackupName)
	}
}

// A listing that raced a deletion reports the object gone before the deletion reports its
// end: the deletion's message replaces the listing's, never the other way round.
func TestADeletionsReportReplacesAVanishedObjects(t *testing.T) {
	b1 := "cfg-a"
	vanished := bus.VanishedMessage("key/"+b1, "locked")
	for _, order := range [][]string{{vanished, "deleted (retention); object lock"}, {"deleted (retention); object lock",
		vanished}} {
		var s kubermaticv1.EtcdBackupConfigStatus
		Merge(&s, ev(b1, t0, up, done, time.Second, "stored"))
		Merge(&s, del(b1, t0, done, time.Hour, order[0]))
		Merge(&s, del(b1, t0, done, time.Hour+time.Second, order[1]))
		if e := s.LastBackups[0]; e.DeletePhase != "Completed" || e.DeleteMessage != "deleted (retention); object lock" {
			t.Fatalf("after %q: entry %+v", order, e)
		}
	}
}

func TestMergeKeepsTenDeletedEntries(t *testing.T) {
	var s kubermaticv1.EtcdBackupConfigStatus
	for i := range 15 {
		slot := t0.Add(time.Duration(i) * time.Minute)
		name := slot.Format("cfg-15:04")
		Merge(&s, ev(name, slot, up, done, time.Second, "stored"))
		Merge(&s, del(name, slot, done, time.Hour, "deleted"))
	}
	Merge(&s, ev("cfg-live", t0.Add(time.Hour), up, done, time.Second, "stored"))
	if len(s.LastBackups) != MaxDeletedEntries+1 {
		t.Fatalf("%d entries, want %d deleted and the live one", len(s.LastBackups), MaxDeletedEntries)
	}
	if s.LastBackups[0].BackupName != t0.Add(5*time.Minute).Format("cfg-15:04") || s.LastBackupName != "cfg-live" {
		t.Fatalf("oldest kept %s, summary %s", s.LastBackups[0].BackupName, s.LastBackupName)
	}
}

func TestMerge(t *testing.T) {
	b1, b2 := "cfg-2021-03-16T01:48:00", "cfg-2021-03-16T01:51:00"
	t1 := t0.Add(3 * time.Minute)
	tests := []struct {
		name   string
		events []*etcdbackupv1.StatusEvent
		check  func(t *testing.T, s kubermaticv1.EtcdBackupConfigStatus)
	}{
		{
			name: "full lifecycle",
			events: []*etcdbackupv1.StatusEvent{ev(b1, t0, sched, run, 0, "queued"), ev(b1, t0, snap, run, time.Second,
				"taking snapshot"), ev(b1, t0, up, done, 5*time.Second, "stored")},
			check: func(t *testing.T, s kubermaticv1.EtcdBackupConfigStatus) {
				t.Helper()
				e := s.LastBackups[0]
				if len(s.LastBackups) != 1 || e.BackupPhase != "Completed" || e.BackupMessage != "stored" ||
					e.JobName != "job-"+b1 {
					t.Fatalf("entry %+v", e)
				}
				if !e.ScheduledTime.Time.Equal(t0) || !e.BackupStartTime.Time.Equal(t0.Add(time.Second)) ||
					!e.BackupFinishedTime.Time.Equal(t0.Add(5*time.Second)) {
					t.Fatalf("times %v %v %v", e.ScheduledTime, e.BackupStartTime, e.BackupFinishedTime)
				}
				if e.Size != 42 || e.SHA256 != "abc" || e.EtcdRevision != 7 || e.ObjectKey != "key/"+b1 {
					t.Fatalf("object fields %+v", e)
				}
				if s.LastBackupName != b1 || s.LastBackupPhase != "Completed" {
					t.Fatalf("summary %s %s", s.LastBackupName, s.LastBackupPhase)
				}
			},
		},
		{
			name: "late running event does not undo completion",
			events: []*etcdbackupv1.StatusEvent{ev(b1, t0, up, done, 5*time.Second, "stored"), ev(b1, t0, sched, run, 0,
				"queued"), ev(b1, t0, snap, run, time.Second, "taking snapshot")},
			check: func(t *testing.T, s kubermaticv1.EtcdBackupConfigStatus) {
				t.Helper()
				if e := s.LastBackups[0]; e.BackupPhase != "Completed" || e.BackupMessage != "stored" {
					t.Fatalf("entry %+v", e)
				}
			},
		},
		{
			name: "failure keeps its cause",
			events: []*etcdbackupv1.StatusEvent{ev(b1, t0, sched, run, 0, "queued"), ev(b1, t0, snap, fail, 2*time.Second,
				"etcd unreachable: connection refused")},
			check: func(t *testing.T, s kubermaticv1.EtcdBackupConfigStatus) {
				t.Helper()
				if e := s.LastBackups[0]; e.BackupPhase != "Failed" ||
					e.BackupMessage != "etcd unreachable: connection refused" || e.BackupFinishedTime.IsZero() {
					t.Fatalf("entry %+v", e)
				}
			},
		},
		{
			name:   "entries sorted by scheduled time whatever the arrival order",
			events: []*etcdbackupv1.StatusEvent{ev(b2, t1, sched, run, 0, "queued"), ev(b1, t0, sched, run, 0, "queued")},
			check: func(t *testing.T, s kubermaticv1.EtcdBackupConfigStatus) {
				t.Helper()
				if len(s.LastBackups) != 2 || s.LastBackups[0].BackupName != b1 || s.LastBackups[1].BackupName != b2 ||
					s.LastBackupName != b2 {
					t.Fatalf("entries %+v", s.LastBackups)
				}
			},
		},
		{
			name:   "event without phase is ignored",
			events: []*etcdbackupv1.StatusEvent{ev(b1, t0, sched, etcdbackupv1.Phase_PHASE_UNSPECIFIED, 0, "")},
			check: func(t *testing.T, s kubermaticv1.EtcdBackupConfigStatus) {
				t.Helper()
				if len(s.LastBackups) != 0 {
					t.Fatalf("entries %+v", s.LastBackups)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var s kubermaticv1.EtcdBackupConfigStatus
			for _, e := range tc.events {
				Merge(&s, e)
			}
			tc.check(t, s)
		})
	}
}

// Applying the same events in any order, with duplicates, gives the same status.
func TestMergeIsOrderIndependent(t *testing.T) {
	b1, b2 := "cfg-a", "cfg-b"
	events := []*etcdbackupv1.StatusEvent{
		ev(b1, t0, sched, run, 0, "queued"), ev(b1, t0, snap, run, time.Second, "taking"), ev(b1, t0, up, done,
			3*time.Second, "stored"),
		ev(b2, t0.Add(time.Minute), sched, run, 0, "queued"), ev(b2, t0.Add(time.Minute), snap, fail, time.Second,
			"etcd down"),
	}
	var want kubermaticv1.EtcdBackupConfigStatus
	for _, e := range events {
		Merge(&want, e)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 200 {
		var got kubermaticv1.EtcdBackupConfigStatus
		for _, j := range r.Perm(len(events)) {
			Merge(&got, events[j])
			if r.IntN(2) == 0 {
				Merge(&got, events[j])
			}
		}
		if !apiequality.Semantic.DeepEqual(got, want) {
			t.Fatalf("permutation %d: got %+v, want %+v", i, got, want)
		}
	}
}

// The list is written under KKP's name, currentBackups, and the seed document's, lastBackups;
// an object written before holds only lastBackups, and is read from it.
func TestMergeWritesBothListNames(t *testing.T) {
	var st kubermaticv1.EtcdBackupConfigStatus
	st.LastBackups = []kubermaticv1.BackupStatus{{BackupName: "old", BackupPhase: kubermaticv1.PhaseCompleted,
		ScheduledTime: metav1.NewTime(time.Unix(1000, 0))}}
	ev := &etcdbackupv1.StatusEvent{BackupName: "new", Phase: etcdbackupv1.Phase_PHASE_RUNNING,
		Stage:         etcdbackupv1.Stage_STAGE_SNAPSHOTTER,
		ScheduledTime: timestamppb.New(time.Unix(2000, 0)), Time: timestamppb.Now()}
	Merge(&st, ev)
	if len(st.CurrentBackups) != 2 || st.CurrentBackups[0].BackupName != "old" ||
		st.CurrentBackups[1].BackupName != "new" {
		t.Fatalf("currentBackups %+v, want old then new", st.CurrentBackups)
	}
	if !reflect.DeepEqual(st.CurrentBackups, st.LastBackups) {
		t.Fatalf("lastBackups %+v differs from currentBackups %+v", st.LastBackups, st.CurrentBackups)
	}
}

// A config keeping 1,000 backups (keep's maximum) of a cluster named as KKP names them, under a
// config name of 63 characters, encrypted and under Object Lock: its status, written as the
// status writer merges the stages' events, stays well inside etcd's request limit (1.5 MiB;
// the rest of the object needs room too), or every status write of that config would fail.
// (Both lists in full and the object key in each message made it 2.1 MB without the stored
// object's record, 2.6 MB with it.)
func TestStatusOfAThousandBackupsFitsInEtcd(t *testing.T) {
	const cluster, keep = "zvc78xnnz7", 1000
	config := strings.Repeat("c", 63)
	ns := "cluster-" + cluster
	var status kubermaticv1.EtcdBackupConfigStatus
	until := timestamppb.New(t0.AddDate(1, 0, 0))
	for i := range keep + 5 {
		slot := t0.Add(time.Duration(i) * time.Hour)
		backup := backupname.Backup(config, slot)
		key := backupname.ObjectKey(cluster, ns, config, backup)
		e := &etcdbackupv1.StatusEvent{
			Config:  &etcdbackupv1.ConfigRef{Namespace: ns, Name: config, Uid: "6f1c2a3e-0000-4000-8000-000000000001"},
			Cluster: cluster, BackupName: backup, JobName: backupname.Job(cluster, config, backup),
			ScheduledTime: timestamppb.New(slot), Stage: up, Phase: done, Time: timestamppb.New(slot.Add(time.Minute)),
			Destination: "s3-sealed", ObjectKey: key, Size: 123456789, Sha256: strings.Repeat("a", 64), Revision: 123456789,
			// the uploader's words (upload.complete)
			Message: fmt.Sprintf("stored %d bytes (snapshot %d bytes, revision %d) in bucket %s", 123456789,
				1234567890, 123456789, "etcd-backups"),
			Object: &etcdbackupv1.StoredObject{Codec: "zstd+age", Recipients: []string{"0123456789abcdef",
				"fedcba9876543210"}, SnapshotSize: 1234567890, SnapshotSha256: strings.Repeat("b", 64), KeyCount: 123456,
				RetainUntil: until, LockMode: "COMPLIANCE"},
		}
		Merge(&status, e)
		if i >= keep { // retention deletes the oldest
			old := status.Backups()[0].BackupName
			Merge(&status, del(old, t0.Add(time.Duration(i-keep)*time.Hour), done, time.Hour, "retention"))
		}
	}
	// As the writer does before each write; nothing needs trimming here.
	before := status.DeepCopy()
	Fit(&status)
	if !reflect.DeepEqual(before, &status) {
		t.Fatal("Fit trimmed a status within its budget")
	}
	raw, err := json.Marshal(status)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range status.CurrentBackups {
		if e.DeletePhase == "" && e.Object == nil {
			t.Fatalf("backup %s lost its stored object's record", e.BackupName)
		}
	}
	cur := status.CurrentBackups
	if !reflect.DeepEqual(status.LastBackups, cur[len(cur)-kubermaticv1.MaxLastBackups:]) {
		t.Fatalf("lastBackups holds %d entries, want the newest %d of currentBackups", len(status.LastBackups),
			kubermaticv1.MaxLastBackups)
	}
	const budget = StatusBudget
	t.Logf("status of %d backups (currentBackups %d, lastBackups %d): %d bytes", keep, len(status.CurrentBackups),
		len(status.LastBackups), len(raw))
	if len(raw) > budget {
		t.Fatalf("the status of %d backups is %d bytes, over %d", keep, len(raw), budget)
	}
}

// overBudget is a status list of 1,000 backups of config, every tenth Failed with a long
// message, the others encrypted: over StatusBudget with a long config name.
func overBudget(config string) []kubermaticv1.BackupStatus {
	var list []kubermaticv1.BackupStatus
	for i := range 1000 {
		slot := t0.Add(time.Duration(i) * time.Hour)
		backup := backupname.Backup(config, slot)
		e := kubermaticv1.BackupStatus{ScheduledTime: metav1.NewTime(slot), BackupName: backup,
			JobName: backupname.Job("abc", config, backup), BackupPhase: kubermaticv1.PhaseCompleted,
			BackupMessage: "stored 1 bytes", ObjectKey: backupname.ObjectKey("abc", "cluster-abc", config, backup),
			Size: 1, SHA256: strings.Repeat("a", 64),
			Object: &kubermaticv1.StoredObject{Codec: "zstd+age", Recipients: []string{"0123456789abcdef"},
				SnapshotSHA256: strings.Repeat("b", 64), SnapshotSize: 9}}
		if i%10 == 0 {
			e.BackupPhase, e.BackupMessage, e.Object = kubermaticv1.PhaseFailed, strings.Repeat("no etcd member: ", 250), nil
		}
		list = append(list, e)
	}
	return list
}

// listsBytes is the JSON size of status's backup lists.
func listsBytes(t *testing.T, status kubermaticv1.EtcdBackupConfigStatus) int {
	t.Helper()
	raw, err := json.Marshal(struct{ C, L []kubermaticv1.BackupStatus }{status.CurrentBackups, status.LastBackups})
	if err != nil {
		t.Fatal(err)
	}
	return len(raw)
}

// A status that would pass its budget (names of 200 characters, long failure messages) is
// trimmed from its oldest finished entries: first their stored object's record, then their
// messages. Every backup stays listed with its phase, key and sha256; the newest keep all.
func TestFitTrimsTheOldestEntriesToTheBudget(t *testing.T) {
	list := overBudget(strings.Repeat("c", 200))
	var status kubermaticv1.EtcdBackupConfigStatus
	status.SetBackups(list)
	size := func() int { return listsBytes(t, status) }
	if before := size(); before <= StatusBudget {
		t.Fatalf("the status is %d bytes before, within the budget: the test shows nothing", before)
	}
	reported := Fit(&status)
	after := size()
	if after > StatusBudget || reported > StatusBudget {
		t.Fatalf("%d bytes after Fit (it reported %d), over %d", after, reported, StatusBudget)
	}
	got := status.CurrentBackups
	if len(got) != len(list) {
		t.Fatalf("%d entries after Fit, want all %d", len(got), len(list))
	}
	// Oldest first: once an entry keeps its record (message), every newer one does.
	trimmed, keptObject, keptMessage := 0, false, false
	for i, e := range got {
		if e.BackupName != list[i].BackupName || e.BackupPhase != list[i].BackupPhase || e.ObjectKey != list[i].ObjectKey ||
			e.SHA256 != list[i].SHA256 {
			t.Fatalf("entry %d became %+v", i, e)
		}
		if !reflect.DeepEqual(e, list[i]) {
			trimmed++
			if i >= len(got)-kubermaticv1.MaxLastBackups {
				t.Fatalf("entry %d of the newest %d was trimmed", i, kubermaticv1.MaxLastBackups)
			}
		}
		lostObject, lostMessage := list[i].Object != nil && e.Object == nil, e.BackupMessage != list[i].BackupMessage
		if (lostObject && keptObject) || (lostMessage && keptMessage) {
			t.Fatalf("entry %d trimmed after an older one was kept", i)
		}
		keptObject = keptObject || (e.Object != nil)
		keptMessage = keptMessage || (e.BackupMessage != "")
	}
	if trimmed == 0 {
		t.Fatal("nothing trimmed")
	}
	if !reflect.DeepEqual(status.LastBackups, got[len(got)-kubermaticv1.MaxLastBackups:]) {
		t.Fatal("lastBackups is not the newest entries of currentBackups")
	}
	t.Logf("%d of %d entries trimmed; %d bytes", trimmed, len(got), after)
}

// The writer fits what it writes: a config whose status is over its budget gets the next
// backup listed, and a status within the budget.
func TestWriterKeepsTheStatusWithinItsBudget(t *testing.T) {
	name := strings.Repeat("c", 200)
	a := config("abc", name, "u-a")
	a.Status.SetBackups(overBudget(name))
	if listsBytes(t, a.Status) <= StatusBudget {
		t.Fatal("the config's status is within its budget: the test shows nothing")
	}
	api := newCounting(t, a)
	w := New(api.client, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	queued := lifecycle(a, t0.Add(1000*time.Hour))[0]
	if err := handleOne(w, queued.Msg, queued.Delivery); err != nil {
		t.Fatal(err)
	}
	got := getConfig(t, api.client, a).Status
	if n := listsBytes(t, got); n > StatusBudget {
		t.Fatalf("the writer wrote %d bytes of backup lists, over %d", n, StatusBudget)
	}
	if bs := got.Backups(); len(bs) != 1001 || bs[1000].BackupName != queued.Msg.GetBackupName() {
		t.Fatalf("%d entries, the newest %s; want 1001, the new backup newest", len(bs), bs[len(bs)-1].BackupName)
	}
}
