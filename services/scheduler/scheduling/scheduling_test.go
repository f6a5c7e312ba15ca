package scheduling

import (
	"fmt"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func cfgWith(schedule string, keep int, phases ...string) *kubermaticv1.EtcdBackupConfig {
	c := &kubermaticv1.EtcdBackupConfig{ObjectMeta: metav1.ObjectMeta{Name: "cfg",
		CreationTimestamp: metav1.NewTime(time.Date(2021, 3, 16, 1, 0, 0, 0, time.UTC))}}
	c.Spec.Schedule, c.Spec.Keep = schedule, &keep
	for i, p := range phases {
		c.Status.LastBackups = append(c.Status.LastBackups, kubermaticv1.BackupStatus{BackupName: fmt.Sprint(i),
			BackupPhase: kubermaticv1.PhaseCompleted, DeletePhase: p})
	}
	return c
}

func TestPiled(t *testing.T) {
	tests := []struct {
		name string
		cfg  *kubermaticv1.EtcdBackupConfig
		want bool
	}{
		{"twice keep is fine", cfgWith("@every 1m", 2, "", "", "", ""), false},
		{"more than twice keep piles up", cfgWith("@every 1m", 2, "", "", "", "", "Failed"), true},
		{"deleted entries do not count", cfgWith("@every 1m", 2, "", "", "", "", "Completed"), false},
		{"one-time configs never pile up", cfgWith("", 1, "", "", ""), false},
		{"running backups do not count", running(cfgWith("@every 1m", 2, "", "", "", ""), 10), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, got := Piled(tc.cfg); got != tc.want {
				t.Fatalf("Piled = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestDue(t *testing.T) {
	c := cfgWith("", 1)
	slot, due, _, err := Due(c, c.CreationTimestamp.Add(time.Hour))
	if err != nil || !due || !slot.Equal(c.CreationTimestamp.Time) {
		t.Fatalf("one-time: slot %v due %v err %v", slot, due, err)
	}
	// Listed as queued only (its request may never have been published): queued again.
	c.Status.LastBackups = []kubermaticv1.BackupStatus{{BackupName: backupname.Backup("cfg", slot),
		BackupPhase: kubermaticv1.PhaseRunning}}
	if _, due, _, _ := Due(c, c.CreationTimestamp.Add(time.Hour)); !due {
		t.Fatal("one-time backup listed as queued only is not due again")
	}
	c.Status.LastBackups[0].BackupStartTime = metav1.NewTime(slot.Add(time.Second))
	if _, due, _, _ := Due(c, c.CreationTimestamp.Add(time.Hour)); due {
		t.Fatal("one-time backup due again once a stage started it")
	}
	c.Status.LastBackups = []kubermaticv1.BackupStatus{{BackupName: backupname.Backup("cfg", slot),
		BackupPhase: kubermaticv1.PhaseFailed}}
	if _, due, _, _ := Due(c, c.CreationTimestamp.Add(time.Hour)); due {
		t.Fatal("one-time backup due again once listed")
	}
	s := cfgWith("@every 20m", 1)
	slot, due, next, err := Due(s, s.CreationTimestamp.Add(50*time.Minute))
	if err != nil || !due || !slot.Equal(s.CreationTimestamp.Add(40*time.Minute)) ||
		!next.Equal(s.CreationTimestamp.Add(60*time.Minute)) {
		t.Fatalf("scheduled: slot %v due %v next %v err %v", slot, due, next, err)
	}
	if _, _, _, err := Due(cfgWith("every tuesday", 1), time.Now()); err == nil {
		t.Fatal("bad schedule accepted")
	}
}

// The interval an overdue backup is measured against: the time between two slots.
func TestInterval(t *testing.T) {
	now := time.Date(2026, 11, 29, 7, 30, 0, 0, time.UTC)
	for schedule, want := range map[string]time.Duration{"@every 20m": 20 * time.Minute, "0 2 * * *": 24 * time.Hour,
		"@hourly": time.Hour, "": 0, "not a schedule": 0} {
		cfg := &kubermaticv1.EtcdBackupConfig{Spec: kubermaticv1.EtcdBackupConfigSpec{Schedule: schedule}}
		cfg.CreationTimestamp = metav1.NewTime(now.Add(-36 * time.Hour))
		if got := Interval(cfg, now); got != want {
			t.Errorf("Interval(%q) = %s, want %s", schedule, got, want)
		}
	}
}

// running adds n Running entries to c (a forged or a lost event's).
func running(c *kubermaticv1.EtcdBackupConfig, n int) *kubermaticv1.EtcdBackupConfig {
	for i := range n {
		c.Status.LastBackups = append(c.Status.LastBackups, kubermaticv1.BackupStatus{BackupName: fmt.Sprint("r", i),
			BackupPhase: kubermaticv1.PhaseRunning})
	}
	return c
}
