package prune

import (
	"bytes"
	"context"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"

	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/journal"
	"github.com/etcd-backup/etcdbackup/pkg/natstest"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Segments go with the backups they follow: of a live config (keep 2 of 4 backups at
// revisions 100 to 400), those ending at or before the oldest kept backup (300) are deleted,
// and a newer timeline without a backup yet keeps its segments; of a config being deleted,
// every one.
func TestJournalSegmentsGoWithTheBackupsTheyFollow(t *testing.T) {
	p, cfg, s3 := fixture(t)
	p.JS = natstest.Bus(t, 1<<20) // retention queues its deletions
	ctx := context.Background()
	b := s3.Bucket(t, "new-bucket")
	put := func(key string, md map[string]string) {
		t.Helper()
		if err := b.Put(ctx, key, bytes.NewReader([]byte("x")), 1, destination.PutOptions{Metadata: md}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 4 {
		name := backupname.Backup(cfg.Name, t0.Add(time.Duration(i)*time.Minute))
		key := backupname.ObjectKey("c", cfg.Namespace, cfg.Name, name)
		put(key, backupformat.Meta{Revision: int64(100 * (i + 1))}.Map())
		cfg.Status.LastBackups = append(cfg.Status.LastBackups, backupStatus(name, i))
	}
	prefix := backupname.Prefix("c", cfg.Namespace, cfg.Name)
	initial := journal.Timeline{Name: journal.InitialTimeline}.Dir(prefix)
	later := journal.NewTimeline(time.Now().Add(time.Hour)).Dir(prefix)
	for _, s := range [][2]int64{{101, 200}, {201, 300}, {301, 400}, {401, 450}} {
		put(journal.Key(initial, s[0], s[1]), nil)
	}
	put(journal.Key(later, 301, 320), nil)

	l, err := p.Plan(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Decision.Delete) != 2 {
		t.Fatalf("retention deletes %d backups, want 2", len(l.Decision.Delete))
	}
	left := func(dir string) []int64 {
		segs, err := journal.Segments(ctx, b, dir)
		if err != nil {
			t.Fatal(err)
		}
		var firsts []int64
		for _, s := range segs {
			firsts = append(firsts, s.First)
		}
		return firsts
	}
	if got := left(initial); len(got) != 2 || got[0] != 301 || got[1] != 401 {
		t.Fatalf("segments left of the first timeline start at %v, want [301 401]", got)
	}
	if got := left(later); len(got) != 1 {
		t.Fatalf("segments left of the newest timeline: %v, want its one", got)
	}

	cfg.DeletionTimestamp = &metav1.Time{Time: t0}
	if _, err := p.Plan(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if got := append(left(initial), left(later)...); len(got) != 0 {
		t.Fatalf("segments left of a deleted config: %v", got)
	}
}

func backupStatus(name string, i int) kubermaticv1.BackupStatus {
	return kubermaticv1.BackupStatus{BackupName: name, BackupPhase: kubermaticv1.PhaseCompleted, Destination: "new",
		ScheduledTime: metav1.NewTime(t0.Add(time.Duration(i) * time.Minute)),
		ObjectKey:     backupname.ObjectKey("c", "cluster-c", "cfg", name)}
}
