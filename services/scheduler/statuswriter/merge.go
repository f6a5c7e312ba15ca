// Package statuswriter applies status events from every stage to
// EtcdBackupConfig.status.lastBackups. It is the only writer of that list.
package statuswriter

import (
	"sort"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
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

// Merge applies ev to the backup entries of a config. Entries stay sorted by scheduled time,
// oldest first. Events without a backup name or phase are ignored.
func Merge(status *kubermaticv1.EtcdBackupConfigStatus, ev *etcdbackupv1.StatusEvent) {
	phase := phaseOf(ev.GetPhase())
	if ev.GetBackupName() == "" || phase == "" {
		return
	}
	i := -1
	for j := range status.LastBackups {
		if status.LastBackups[j].BackupName == ev.GetBackupName() {
			i = j
			break
		}
	}
	if i < 0 {
		status.LastBackups = append(status.LastBackups, kubermaticv1.BackupStatus{BackupName: ev.GetBackupName()})
		i = len(status.LastBackups) - 1
	}
	e := &status.LastBackups[i]
	at := metav1.NewTime(ev.GetTime().AsTime().UTC().Truncate(1e9))

	fill(&e.JobName, ev.GetJobName())
	fill(&e.Destination, ev.GetDestination())
	fill(&e.ObjectKey, ev.GetObjectKey())
	if e.ScheduledTime.IsZero() && ev.GetScheduledTime() != nil {
		e.ScheduledTime = metav1.NewTime(ev.GetScheduledTime().AsTime().UTC())
	}
	// The backup started with the first event of a stage doing the work.
	if ev.GetStage() != etcdbackupv1.Stage_STAGE_SCHEDULER && (e.BackupStartTime.IsZero() || at.Before(&e.BackupStartTime)) {
		e.BackupStartTime = at
	}
	switch {
	case rank(phase) > rank(e.BackupPhase):
		e.BackupPhase, e.BackupMessage = phase, ev.GetMessage()
		if phase != kubermaticv1.PhaseRunning {
			e.BackupFinishedTime = at
		}
		if phase == kubermaticv1.PhaseCompleted {
			e.Size, e.SHA256, e.EtcdRevision = int64(ev.GetSize()), ev.GetSha256(), ev.GetRevision()
		}
	case phase == kubermaticv1.PhaseRunning && e.BackupPhase == kubermaticv1.PhaseRunning && ev.GetStage() != etcdbackupv1.Stage_STAGE_SCHEDULER:
		// Progress of a running backup: the newest word of the stage doing the work.
		e.BackupMessage = ev.GetMessage()
	}
	sort.SliceStable(status.LastBackups, func(a, b int) bool {
		x, y := status.LastBackups[a], status.LastBackups[b]
		if !x.ScheduledTime.Equal(&y.ScheduledTime) {
			return x.ScheduledTime.Before(&y.ScheduledTime)
		}
		return x.BackupName < y.BackupName
	})
	summarize(status)
}

func fill(dst *string, v string) {
	if *dst == "" {
		*dst = v
	}
}

// summarize sets the newest entry's name and phase for kubectl's printer columns.
func summarize(s *kubermaticv1.EtcdBackupConfigStatus) {
	if n := len(s.LastBackups); n > 0 {
		s.LastBackupName, s.LastBackupPhase = s.LastBackups[n-1].BackupName, s.LastBackups[n-1].BackupPhase
	}
}
