// Package retention decides which backups of a config to delete. The bucket is the truth:
// the decision starts from a listing of the config's prefix, so objects that no status
// mentions are counted too, and status entries whose object vanished are reported.
package retention

import (
	"path"
	"sort"
	"strings"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
)

// Reasons for a deletion.
const (
	ReasonRetention     = bus.DeleteReasonRetention
	ReasonFailed        = bus.DeleteReasonFailed
	ReasonConfigDeleted = bus.DeleteReasonConfigDeleted
)

// keyTimeLayout is the time in an object key: the backup name's time with '-' for ':'.
const keyTimeLayout = "2006-01-02T15-04-05"

// Object is a backup object found under a config's prefix.
type Object struct {
	// Destination is the Seed destination the object was listed in ("": Scope.Current).
	Destination string
	Key         string
	Backup      string
	Scheduled   time.Time
	// Stored is when the bucket stored it (S3 LastModified); zero when unknown.
	Stored time.Time
	Size   int64
}

// rank is the time retention orders an object by: when it was stored, or the time its name
// carries if that is earlier (a copy of an old backup stored again stays old). The name's
// time alone is the clock of the scheduler replica that queued it: one running 30 days ahead
// would name backups that stay "newest" for 30 days and push every good backup taken after
// them out of keep.
func (o Object) rank() time.Time {
	if o.Stored.IsZero() || o.Scheduled.Before(o.Stored) {
		return o.Scheduled
	}
	return o.Stored
}

// ParseKey reads the backup name and scheduled time from a key of config's prefix; ok is
// false for a key this system did not write.
func ParseKey(config, key string) (Object, bool) {
	base, found := strings.CutSuffix(path.Base(key), backupname.ObjectSuffix)
	if !found {
		return Object{}, false
	}
	stamp, found := strings.CutPrefix(base, config+"-")
	if !found {
		return Object{}, false
	}
	t, err := time.Parse(keyTimeLayout, stamp)
	if err != nil {
		return Object{}, false
	}
	return Object{Key: key, Backup: backupname.Backup(config, t), Scheduled: t}, true
}

// Deletion is one backup to delete.
type Deletion struct {
	Backup string
	// Destination holds the object (Scope.Current for an entry with no object).
	Destination string
	Key         string
	Scheduled   time.Time
	Reason      string
}

// RunningGrace is how long the deletion of a config waits for a backup status still calls
// Running (from its start, or its scheduled time): the upload may store it after the prefix
// was found empty. An upload that finishes later still deletes its own object.
const RunningGrace = 30 * time.Minute

// Scope is what Plan decides over besides the config and the listing.
type Scope struct {
	// Current is the config's destination now (resolved: the Seed's default for none).
	Current string
	// Listed are the destinations whose listing objects holds: Current and every other that
	// status records a backup in and that could be listed.
	Listed map[string]bool
	// Held are backups a restore needs (backup name -> why): not deleted while held.
	Held map[string]string
	// Now is the time (RunningGrace).
	Now time.Time
	// Grace keeps, of a config being deleted, what its retention would keep were it live
	// (Decision.Graced): they stay for the pruner's --deletion-grace, recorded in a
	// DeletedBackupSet. Without it a config's deletion deletes every backup (KKP's way).
	Grace bool
}

func (s Scope) dest(name string) string {
	if name == "" {
		return s.Current
	}
	return name
}

// Decision is what Plan decided.
type Decision struct {
	Delete []Deletion
	// Unlisted are objects in the bucket that status does not list.
	Unlisted []Object
	// Vanished are completed, undeleted entries whose object is not in their destination
	// (only destinations that were listed: a backup in one that was not is not vanished).
	Vanished []kubermaticv1.BackupStatus
	// Held are deletions skipped because a restore needs the backup; retention decides
	// again after the restore ends.
	Held []Deletion
	// Waiting are backups still Running that a config's deletion waits for.
	Waiting []kubermaticv1.BackupStatus
	// Tiers are the backups the config's tiered retention keeps (AnnotationRetention), and by
	// which tiers; InvalidRetention is why the annotation does not parse (then retention
	// deletes nothing).
	Tiers            map[string][]kubermaticv1.Tier
	InvalidRetention error
	// Graced are the backups a config being deleted keeps for the grace period (Scope.Grace),
	// newest first.
	Graced []Object
}

// Pending is how many backups a config's deletion still waits for.
func (d Decision) Pending() int { return len(d.Delete) + len(d.Held) + len(d.Waiting) }

// Plan decides for cfg given the objects under its prefix in every destination of scope,
// listed after cfg was read:
//   - a config being deleted loses every backup, in every destination, after the backups
//     still Running (for up to RunningGrace) end; with Scope.Grace, but those its retention
//     keeps (below), which are Graced instead;
//   - Failed backups are always deleted (usually there is no object; the deletion marks them);
//   - of a scheduled config, the completed backups beyond keep, newest first (by rank: when
//     stored, or the name's time if earlier) across all its destinations, are deleted, but
//     for those its tiered retention keeps (AnnotationRetention: the newest of each of the
//     last N hours, days, weeks, months); an annotation that does not parse deletes none;
//   - one-time backups (no schedule) are not pruned by count;
//   - the newest backup that passed a restore drill (AnnotationLastRestorable) is not
//     pruned by count either;
//   - a backup a restore holds is not deleted (Held), whatever the reason.
func Plan(cfg *kubermaticv1.EtcdBackupConfig, objects []Object, scope Scope) Decision {
	p := &planning{cfg: cfg, scope: scope, inBucket: map[string]bool{}, inListing: map[string]bool{},
		planned: map[string]bool{}}
	p.index(objects)
	p.fromStatus()
	p.byCount(objects)
	sort.Slice(p.d.Delete, func(i, j int) bool { return p.d.Delete[i].Scheduled.Before(p.d.Delete[j].Scheduled) })
	return p.d
}

// planning is one Plan under way.
type planning struct {
	cfg   *kubermaticv1.EtcdBackupConfig
	scope Scope
	d     Decision
	// inBucket holds backup names found in any destination, inListing destination + "/" +
	// backup name, planned the deletions added so far by the same key.
	inBucket, inListing, planned map[string]bool
}

// index records what the listing holds, and the objects status does not list.
func (p *planning) index(objects []Object) {
	listed := map[string]bool{}
	for _, e := range p.cfg.Status.Backups() {
		listed[e.BackupName] = true
	}
	for i := range objects {
		o := &objects[i]
		o.Destination = p.scope.dest(o.Destination)
		p.inBucket[o.Backup] = true
		p.inListing[o.Destination+"/"+o.Backup] = true
		if !listed[o.Backup] {
			p.d.Unlisted = append(p.d.Unlisted, *o)
		}
	}
}

// add plans a deletion once, or holds it when a restore needs the backup.
func (p *planning) add(del Deletion) {
	id := del.Destination + "/" + del.Backup
	if p.planned[id] {
		return
	}
	p.planned[id] = true
	if why, held := p.scope.Held[del.Backup]; held {
		del.Reason = why
		p.d.Held = append(p.d.Held, del)
		return
	}
	p.d.Delete = append(p.d.Delete, del)
}

// fromStatus decides what the status entries call for: Failed entries with no object go,
// Completed ones whose object vanished are reported, and a config being deleted waits for
// the ones still running. Status is not trusted: anyone who may write a config's status could
// name any key there. Entries count only when their name is a backup name of this config, and
// a Failed entry's deletion never deletes an object: an object in the bucket is ranked by
// count like every other.
func (p *planning) fromStatus() {
	cfg, deleting := p.cfg, p.cfg.DeletionTimestamp != nil
	for _, e := range cfg.Status.Backups() {
		scheduled, ok := backupname.Parse(cfg.Name, e.BackupName)
		dest := p.scope.dest(e.Destination)
		switch {
		case !ok, e.DeletePhase == kubermaticv1.PhaseCompleted:
		case e.DeletePhase == kubermaticv1.PhaseRunning && !p.inBucket[e.BackupName]:
			// A deleter is at work on it (another replica, a moment ago): it reports the end, with
			// what it knows (under Object Lock, until when the version stays), not a vanished object.
		case e.BackupPhase == kubermaticv1.PhaseFailed && !p.inBucket[e.BackupName]:
			p.add(Deletion{Backup: e.BackupName, Destination: p.scope.Current, Scheduled: scheduled, Reason: ReasonFailed})
		case e.BackupPhase == kubermaticv1.PhaseCompleted && p.scope.Listed[dest] && !p.inListing[dest+"/"+e.BackupName]:
			e.ObjectKey = backupname.ObjectKey(cfg.Spec.Cluster.Name, cfg.Namespace, cfg.Name, e.BackupName)
			e.Destination = dest
			p.d.Vanished = append(p.d.Vanished, e)
		case deleting && e.BackupPhase != kubermaticv1.PhaseCompleted && e.BackupPhase != kubermaticv1.PhaseFailed &&
			!p.inBucket[e.BackupName]:
			since := e.BackupStartTime.Time
			if since.IsZero() {
				since = scheduled
			}
			if p.scope.Now.Sub(since) < RunningGrace {
				p.d.Waiting = append(p.d.Waiting, e)
			}
		}
	}
}

// byCount ranks the objects newest first and deletes those beyond keep, or all of them when
// the config is being deleted. The newest backup that passed a restore drill stays, whatever
// keep says: a config always keeps one backup known to restore (the restorer names it).
func (p *planning) byCount(objects []Object) {
	cfg := p.cfg
	restorable := cfg.Annotations[kubermaticv1.AnnotationLastRestorable]
	sorted := append([]Object(nil), objects...)
	sort.SliceStable(sorted, func(i, j int) bool {
		a, b := sorted[i].rank(), sorted[j].rank()
		if a.Equal(b) {
			return sorted[i].Scheduled.After(sorted[j].Scheduled)
		}
		return a.After(b)
	})
	// Tiered retention keeps more; an annotation that does not parse keeps everything (the
	// scheduler refuses the config with InvalidRetention until it is mended).
	tiers, err := cfg.Retention()
	p.d.InvalidRetention = err
	dated := make([]kubermaticv1.Dated, len(sorted))
	for i, o := range sorted {
		dated[i] = kubermaticv1.Dated{Name: o.Backup, At: o.rank()}
	}
	p.d.Tiers = tiers.Keeps(dated, p.scope.Now)
	for i, o := range sorted {
		del := Deletion{Backup: o.Backup, Destination: o.Destination, Key: o.Key, Scheduled: o.Scheduled}
		kept := cfg.Spec.Schedule == "" || err != nil || i < cfg.KeepCount() || o.Backup == restorable ||
			p.d.Tiers[o.Backup] != nil
		switch {
		case cfg.DeletionTimestamp != nil && p.scope.Grace && kept:
			p.d.Graced = append(p.d.Graced, o)
		case cfg.DeletionTimestamp != nil:
			del.Reason = ReasonConfigDeleted
			p.add(del)
		case !kept:
			del.Reason = ReasonRetention
			p.add(del)
		}
	}
}
