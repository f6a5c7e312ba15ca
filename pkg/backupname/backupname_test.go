package backupname

import (
	"strings"
	"testing"
	"time"
)

func TestNames(t *testing.T) {
	scheduled := time.Date(2021, 3, 2, 16, 24, 0, 0, time.FixedZone("CET", 3600))
	tests := []struct {
		name, got, want string
	}{
		{"backup name is config and UTC time, as the seed shows", Backup("daily-backup", scheduled),
			"daily-backup-2021-03-02T15:24:00"},
		{"object key has no colon and includes the cluster", ObjectKey("zvc78xnnz7", "cluster-zvc78xnnz7", "daily-backup",
			"daily-backup-2021-03-02T15:24:00"),
			"zvc78xnnz7/cluster-zvc78xnnz7/daily-backup/daily-backup-2021-03-02T15-24-00.db.zst"},
		{"prefix", Prefix("c", "ns", "cfg"), "c/ns/cfg/"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Fatalf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
}

func TestJobNameIsDeterministicAndDistinct(t *testing.T) {
	a := Job("zvc78xnnz7", "jobtest1", "jobtest1-2021-03-16T03:48:00")
	if a != Job("zvc78xnnz7", "jobtest1", "jobtest1-2021-03-16T03:48:00") {
		t.Fatal("job name differs between calls")
	}
	if !strings.HasPrefix(a,
		"zvc78xnnz7-backup-jobtest1-create-") || len(a) != len("zvc78xnnz7-backup-jobtest1-create-")+10 {
		t.Fatalf("job name %q has not KKP's shape", a)
	}
	if a == Job("zvc78xnnz7", "jobtest1", "jobtest1-2021-03-16T03:51:00") {
		t.Fatal("two backups share a job name")
	}
	if DeleteJob("c", "cfg", "b") == Job("c", "cfg", "b") {
		t.Fatal("delete and create job share a name")
	}
}
