// Package statuswriter applies status events from every stage to
// EtcdBackupConfig.status.lastBackups. It is the only writer of that list.
package statuswriter

import (
	"encoding/json"
	"sort"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// rank orders backup phases: an event never moves an entry to a lower rank, so events may be
// applied in any order and any number of times with the same result. Completed outranks
// Failed: a retry that succeeded after a failure report wins.
func rank(phase string) int {
	switch phase {
	case kubermaticv1.PhaseRunning:
		return 1
	case kubermaticv1.PhaseFailed:
		return 2
	case kubermaticv1.PhaseCompleted:
		return 3
	}
	return 0
}

func phaseOf(p etcdbackupv1.Phase) string {
	switch p {
	case etcdbackupv1.Phase_PHASE_RUNNING:
		return kubermaticv1.PhaseRunning
	case etcdbackupv1.Phase_PHASE_COMPLETED:
		return kubermaticv1.PhaseCompleted
	case etcdbackupv1.Phase_PHASE_FAILED:
		return kubermaticv1.PhaseFailed
	}
	return ""
}

// MaxDeletedEntries is how many entries whose deletion completed stay listed (newest first):
// they show what was deleted, as the seed's example does, and keep a late event about a
// deleted backup from listing it again.
const MaxDeletedEntries = 10

// Merge applies ev to the backup entries of a config. Entries stay sorted by scheduled time,
// oldest first. Events without a backup name or phase are ignored.
func Merge(status *kubermaticv1.EtcdBackupConfigStatus, ev *etcdbackupv1.StatusEvent) {
	phase := phaseOf(ev.GetPhase())
	if ev.GetBackupName() == "" || phase == "" {
		return
	}
	list := append([]kubermaticv1.BackupStatus(nil), status.Backups()...)
	defer func() { status.SetBackups(finish(status, list)) }()
	i := -1
	for j := range list {
		if list[j].BackupName == ev.GetBackupName() {
			i = j
			break
		}
	}
	if i < 0 {
		list = append(list, kubermaticv1.BackupStatus{BackupName: ev.GetBackupName()})
		i = len(list) - 1
	}
	e := &list[i]
	at := metav1.NewTime(ev.GetTime().AsTime().UTC().Truncate(1e9))

	fill(&e.JobName, ev.GetJobName())
	fill(&e.Destination, ev.GetDestination())
	fill(&e.ObjectKey, ev.GetObjectKey())
	if e.ScheduledTime.IsZero() && ev.GetScheduledTime() != nil {
		e.ScheduledTime = metav1.NewTime(ev.GetScheduledTime().AsTime().UTC())
	}
	if ev.GetOperation() == etcdbackupv1.Operation_OPERATION_DELETE {
		mergeDelete(e, ev, phase, at)
		return
	}
	// The backup started with the first event of a stage doing the work; the scheduler's
	// "queued" is not progress.
	working := ev.GetStage() == etcdbackupv1.Stage_STAGE_SNAPSHOTTER || ev.GetStage() == etcdbackupv1.Stage_STAGE_UPLOADER
	if working {
		earliest(&e.BackupStartTime, at)
	}
	if advance(&e.BackupPhase, &e.BackupMessage, &e.BackupFinishedTime, phase, ev.GetMessage(), at,
		working) && phase == kubermaticv1.PhaseCompleted {
		e.Size, e.SHA256, e.EtcdRevision = int64(ev.GetSize()), ev.GetSha256(), ev.GetRevision()
		e.Object = storedObject(ev.GetObject())
	}
}

// storedObject is the status's copy of a stored object's record (nil: none).
func storedObject(o *etcdbackupv1.StoredObject) *kubermaticv1.StoredObject {
	if o == nil {
		return nil
	}
	out := &kubermaticv1.StoredObject{Codec: o.GetCodec(), Recipients: o.GetRecipients(),
		SnapshotSize: int64(o.GetSnapshotSize()), SnapshotSHA256: o.GetSnapshotSha256(), KeyCount: o.GetKeyCount(),
		LockMode: o.GetLockMode()}
	if u := o.GetRetainUntil(); u != nil {
		t := metav1.NewTime(u.AsTime().UTC())
		out.RetainUntil = &t
	}
	return out
}

// mergeDelete applies a deletion event to an entry, with the same rules as backups.
func mergeDelete(e *kubermaticv1.BackupStatus, ev *etcdbackupv1.StatusEvent, phase string, at metav1.Time) {
	if ev.GetJobName() != "" {
		e.DeleteJobName = ev.GetJobName()
	}
	earliest(&e.DeleteStartTime, at)
	// A listing that raced the deletion may report the object gone first: the deletion's own
	// report, which says more (under Object Lock, until when the version stays), replaces it.
	if e.DeletePhase == kubermaticv1.PhaseCompleted && phase == kubermaticv1.PhaseCompleted &&
		bus.IsVanished(e.DeleteMessage) && !bus.IsVanished(ev.GetMessage()) {
		e.DeleteMessage = ev.GetMessage()
		return
	}
	advance(&e.DeletePhase, &e.DeleteMessage, &e.DeleteFinishedTime, phase, ev.GetMessage(), at, true)
}

// advance moves *cur to phase if that ranks higher, with its message, and stamps *finished
// once the phase is terminal; it reports whether it moved. While both are Running and
// progress is set, only the message is updated: the newest word of the work in progress.
func advance(cur, msg *string, finished *metav1.Time, phase, message string, at metav1.Time, progress bool) bool {
	switch {
	case rank(phase) > rank(*cur):
		*cur, *msg = phase, message
		if phase != kubermaticv1.PhaseRunning {
			*finished = at
		}
		return true
	case progress && phase == kubermaticv1.PhaseRunning && *cur == kubermaticv1.PhaseRunning:
		*msg = message
	}
	return false
}

// earliest sets *t to at if *t is unset or later.
func earliest(t *metav1.Time, at metav1.Time) {
	if t.IsZero() || at.Before(t) {
		*t = at
	}
}

// finish sorts the entries, drops the oldest deleted ones beyond MaxDeletedEntries, updates
// the summary and returns the list.
func finish(status *kubermaticv1.EtcdBackupConfigStatus, list []kubermaticv1.BackupStatus) []kubermaticv1.BackupStatus {
	sort.SliceStable(list, func(a, b int) bool {
		x, y := list[a], list[b]
		if !x.ScheduledTime.Equal(&y.ScheduledTime) {
			return x.ScheduledTime.Before(&y.ScheduledTime)
		}
		return x.BackupName < y.BackupName
	})
	deleted := 0
	for i := len(list) - 1; i >= 0; i-- {
		if list[i].DeletePhase != kubermaticv1.PhaseCompleted {
			continue
		}
		if deleted++; deleted > MaxDeletedEntries {
			list = append(list[:i], list[i+1:]...)
		}
	}
	summarize(status, list)
	return list
}

// StatusBudget bounds the JSON size of a config's backup lists, currentBackups and the
// lastBackups that repeat its newest entries: etcd refuses an object over 1.5 MiB, and the
// rest of the config needs room too.
const StatusBudget = 1<<20 + 1<<18

// Fit keeps status's backup lists within StatusBudget, once the events of a write are merged.
// Past it, the oldest finished entries give up first their record of the stored object, then
// their messages (8 KiB at most each); phases, times, key, size and sha256 stay, and so does
// every entry. It reports the lists' size (0: not measured, for MaxLastBackups entries or
// fewer), over the budget only when trimming all it may was not enough.
func Fit(status *kubermaticv1.EtcdBackupConfigStatus) int {
	list := append([]kubermaticv1.BackupStatus(nil), status.Backups()...)
	if len(list) <= kubermaticv1.MaxLastBackups {
		return 0
	}
	trimmed := false
	defer func() {
		if trimmed {
			status.SetBackups(list)
		}
	}()
	sizes := make([]int, len(list))
	total := 0
	for i := range list {
		sizes[i] = entryBytes(&list[i])
		total += sizes[i]
		if i >= len(list)-kubermaticv1.MaxLastBackups {
			total += sizes[i] // repeated in lastBackups
		}
	}
	for _, trim := range []func(e *kubermaticv1.BackupStatus){
		func(e *kubermaticv1.BackupStatus) { e.Object = nil },
		func(e *kubermaticv1.BackupStatus) { e.BackupMessage, e.DeleteMessage = "", "" },
	} {
		for i := 0; i < len(list)-kubermaticv1.MaxLastBackups && total > StatusBudget; i++ {
			if e := &list[i]; e.BackupPhase != kubermaticv1.PhaseRunning && e.DeletePhase != kubermaticv1.PhaseRunning {
				trim(e)
				if n := entryBytes(e); n != sizes[i] {
					total, sizes[i], trimmed = total-sizes[i]+n, n, true
				}
			}
		}
	}
	return total
}

// entryBytes is e's size in JSON.
func entryBytes(e *kubermaticv1.BackupStatus) int {
	b, err := json.Marshal(e)
	if err != nil {
		return 0
	}
	return len(b)
}

func fill(dst *string, v string) {
	if *dst == "" {
		*dst = v
	}
}

// summarize sets the newest entry's name and phase for kubectl's printer columns, skipping
// entries already deleted.
func summarize(s *kubermaticv1.EtcdBackupConfigStatus, list []kubermaticv1.BackupStatus) {
	s.LastBackupName, s.LastBackupPhase = "", ""
	for i := len(list) - 1; i >= 0; i-- {
		if b := list[i]; b.DeletePhase != kubermaticv1.PhaseCompleted {
			s.LastBackupName, s.LastBackupPhase = b.BackupName, b.BackupPhase
			return
		}
	}
}
