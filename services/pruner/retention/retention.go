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
	Key       string
	Backup    string
	Scheduled time.Time
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
	Backup    string
	Key       string
	Scheduled time.Time
	Reason    string
}

// Decision is what Plan decided.
type Decision struct {
	Delete []Deletion
	// Unlisted are objects in the bucket that status does not list.
	Unlisted []Object
	// Vanished are completed, undeleted entries whose object is not in the bucket.
	Vanished []kubermaticv1.BackupStatus
}

// Plan decides for cfg given the objects under its prefix, listed after cfg was read:
//   - a config being deleted loses every backup;
//   - Failed backups are always deleted (usually there is no object; the deletion marks them);
//   - of a scheduled config, the completed backups beyond keep, newest first (by rank: when
//     stored, or the name's time if earlier), are deleted;
//   - one-time backups (no schedule) are not pruned by count.
func Plan(cfg *kubermaticv1.EtcdBackupConfig, objects []Object) Decision {
	var d Decision
	entries := map[string]kubermaticv1.BackupStatus{}
	for _, e := range cfg.Status.Backups() {
		entries[e.BackupName] = e
	}
	inBucket := map[string]bool{}
	for _, o := range objects {
		inBucket[o.Backup] = true
		if _, ok := entries[o.Backup]; !ok {
			d.Unlisted = append(d.Unlisted, o)
		}
	}
	deleting := cfg.DeletionTimestamp != nil
	planned := map[string]bool{}
	add := func(backup, key string, scheduled time.Time, reason string) {
		if !planned[backup] {
			planned[backup] = true
			d.Delete = append(d.Delete, Deletion{Backup: backup, Key: key, Scheduled: scheduled, Reason: reason})
		}
	}
	// Status is not trusted: anyone who may write a config's status could name any key there.
	// Entries count only when their name is a backup name of this config, and a Failed
	// entry's deletion never deletes an object: an object in the bucket is ranked by count
	// like every other.
	for _, e := range cfg.Status.Backups() {
		scheduled, ok := backupname.Parse(cfg.Name, e.BackupName)
		switch {
		case !ok, e.DeletePhase == kubermaticv1.PhaseCompleted:
		case e.BackupPhase == kubermaticv1.PhaseFailed && !inBucket[e.BackupName]:
			add(e.BackupName, "", scheduled, ReasonFailed)
		case e.BackupPhase == kubermaticv1.PhaseCompleted && !inBucket[e.BackupName]:
			e.ObjectKey = backupname.ObjectKey(cfg.Spec.Cluster.Name, cfg.Namespace, cfg.Name, e.BackupName)
			d.Vanished = append(d.Vanished, e)
		}
	}
	sorted := append([]Object(nil), objects...)
	sort.SliceStable(sorted, func(i, j int) bool {
		a, b := sorted[i].rank(), sorted[j].rank()
		if a.Equal(b) {
			return sorted[i].Scheduled.After(sorted[j].Scheduled)
		}
		return a.After(b)
	})
	for i, o := range sorted {
		switch {
		case deleting:
			add(o.Backup, o.Key, o.Scheduled, ReasonConfigDeleted)
		case cfg.Spec.Schedule != "" && i >= cfg.KeepCount():
			add(o.Backup, o.Key, o.Scheduled, ReasonRetention)
		}
	}
	sort.Slice(d.Delete, func(i, j int) bool { return d.Delete[i].Scheduled.Before(d.Delete[j].Scheduled) })
	return d
}
