package v1

import (
	"os"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// The seed document's status example decodes into our type with no unknown field: the names
// kubectl shows are the names the seed shows.
func TestSeedStatusExampleMatchesTypes(t *testing.T) {
	b, err := os.ReadFile("testdata/seed-status.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var obj struct {
		Status EtcdBackupConfigStatus `json:"status"`
	}
	if err := yaml.UnmarshalStrict(b, &obj); err != nil {
		t.Fatalf("seed status does not fit our types: %v", err)
	}
	if len(obj.Status.LastBackups) != 3 {
		t.Fatalf("decoded %d entries, want 3", len(obj.Status.LastBackups))
	}
	e := obj.Status.LastBackups[0]
	if e.BackupName != "zvc78xnnz7-jobtest1-2021-03-16T03:48:00" || e.BackupPhase != PhaseCompleted ||
		e.DeletePhase != PhaseCompleted ||
		e.JobName == "" || e.DeleteJobName == "" || e.ScheduledTime.IsZero() || e.BackupFinishedTime.IsZero() ||
		e.DeleteFinishedTime.IsZero() {
		t.Fatalf("first entry decoded as %+v", e)
	}
}

func TestKeepCount(t *testing.T) {
	three, zero, negative := 3, 0, -2
	for _, tc := range []struct {
		keep *int
		want int
	}{{nil, DefaultKeep}, {&three, 3}, {&zero, 1}, {&negative, 1}} {
		c := &EtcdBackupConfig{Spec: EtcdBackupConfigSpec{Keep: tc.keep}}
		if got := c.KeepCount(); got != tc.want {
			t.Fatalf("KeepCount = %d, want %d", got, tc.want)
		}
	}
}

// Conditions keep KKP's shape: a change stamps heartbeat and transition; the same status with
// another reason keeps the transition time; an unchanged condition is not rewritten.
func TestSetCondition(t *testing.T) {
	var st EtcdBackupConfigStatus
	t0 := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	t1 := metav1.NewTime(t0.Add(time.Minute))
	if !st.SetCondition(ConditionSchedulingActive, corev1.ConditionTrue, ReasonScheduled, "on", t0) {
		t.Fatal("a new condition did not change status")
	}
	if st.SetCondition(ConditionSchedulingActive, corev1.ConditionTrue, ReasonScheduled, "on", t1) {
		t.Fatal("an unchanged condition changed status")
	}
	st.SetCondition(ConditionSchedulingActive, corev1.ConditionTrue, ReasonOneTimeBackup, "once", t1)
	c := st.Condition(ConditionSchedulingActive)
	if c == nil || !c.LastTransitionTime.Equal(&t0) || !c.LastHeartbeatTime.Equal(&t1) || c.Reason != ReasonOneTimeBackup {
		t.Fatalf("condition %+v", c)
	}
	st.SetCondition(ConditionSchedulingActive, corev1.ConditionFalse, ReasonClusterPaused, "paused", t1)
	if c := st.Condition(ConditionSchedulingActive); !c.LastTransitionTime.Equal(&t1) {
		t.Fatalf("a status change kept the old transition time: %+v", c)
	}
}

// A drill's verdict on a backup: the condition when it names the backup, else the restorer's
// last-restorable mark.
func TestDrillVerdict(t *testing.T) {
	cfg := &EtcdBackupConfig{}
	cfg.Annotations = map[string]string{AnnotationLastRestorable: "d-1"}
	for status, want := range map[corev1.ConditionStatus]string{
		corev1.ConditionTrue: DrillPassed, corev1.ConditionFalse: DrillFailed, corev1.ConditionUnknown: DrillNotRun,
	} {
		cfg.Status.Conditions = map[string]EtcdBackupConfigCondition{ConditionBackupRestorable: {Status: status,
			Message: "backup d-2 failed its restore drill at 2026-12-06T11:00:00Z: corrupt"}}
		if got := cfg.DrillVerdict("d-2"); got != want {
			t.Errorf("condition %s naming d-2: %q, want %q", status, got, want)
		}
		if got := cfg.DrillVerdict("d-1"); got != DrillPassed {
			t.Errorf("d-1, marked last restorable: %q, want passed", got)
		}
		if got := cfg.DrillVerdict("d-3"); got != "" {
			t.Errorf("d-3, named nowhere: %q, want nothing", got)
		}
		// A name that is a prefix of the one the condition names is not it.
		if got := cfg.DrillVerdict("d"); got != "" {
			t.Errorf("d: %q, want nothing", got)
		}
	}
}
