package v1

import (
	"os"
	"testing"

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
	if e.BackupName != "zvc78xnnz7-jobtest1-2021-03-16T03:48:00" || e.BackupPhase != PhaseCompleted || e.DeletePhase != PhaseCompleted ||
		e.JobName == "" || e.DeleteJobName == "" || e.ScheduledTime.IsZero() || e.BackupFinishedTime.IsZero() || e.DeleteFinishedTime.IsZero() {
		t.Fatalf("first entry decoded as %+v", e)
	}
}

func TestKeepCount(t *testing.T) {
	three := 3
	for _, tc := range []struct {
		keep *int
		want int
	}{{nil, DefaultKeep}, {&three, 3}} {
		c := &EtcdBackupConfig{Spec: EtcdBackupConfigSpec{Keep: tc.keep}}
		if got := c.KeepCount(); got != tc.want {
			t.Fatalf("KeepCount = %d, want %d", got, tc.want)
		}
	}
}
