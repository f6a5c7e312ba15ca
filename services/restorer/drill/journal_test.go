package drill

import (
	"errors"
	"fmt"
	"testing"

	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/etcdtest"
	"github.com/etcd-backup/etcdbackup/pkg/journal"
	"github.com/etcd-backup/etcdbackup/pkg/journal/journaltest"
	"github.com/etcd-backup/etcdbackup/pkg/s3test"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// A continuous config's drill replays its newest window onto its newest full backup and
// reproduces the journal's HashKV; a hash that is not the source's fails the drill.
func TestDrillReplaysTheNewestWindow(t *testing.T) {
	ctx := t.Context()
	put := func(from, to int) func(c *clientv3.Client) {
		return func(c *clientv3.Client) {
			for i := from; i < to; i++ {
				if _, err := c.Put(ctx, fmt.Sprintf("/registry/k%d", i%30), fmt.Sprint(i)); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	rec := journaltest.Record(t, etcdtest.Start(t), put(0, 50), put(50, 150))
	s3 := s3test.Run(t, "backups")
	b := s3.Bucket(t, "backups")
	const prefix = "c/cluster-c/daily/"
	s3.PutBackup(t, "backups", prefix+"daily-2026-12-05T01-00-00.db.zst", rec.Snapshot, backupformat.Encryption{},
		backupformat.Meta{SnapshotSize: int64(len(rec.Snapshot)), Revision: rec.Anchor})
	dir := journal.Timeline{Name: journal.InitialTimeline}.Dir(prefix)

	rec.Seal(t, b, dir, rec.Hash)
	res, ok, err := RunJournal(ctx, b, prefix, nil, t.TempDir(), 0)
	if err != nil || !ok {
		t.Fatalf("drill of the window: %v (ok %v)", err, ok)
	}
	if res.Revisions != rec.Last-rec.Anchor || res.Hash != 1 || res.Window.ToRevision != rec.Last {
		t.Fatalf("drilled %s; want %d revisions to %d with 1 hash", res, rec.Last-rec.Anchor, rec.Last)
	}

	wrong := rec.Hash
	wrong.Hash++
	rec.Seal(t, b, dir, wrong)
	if _, _, err := RunJournal(ctx, b, prefix, nil, t.TempDir(), 0); !errors.Is(err, ErrFailed) ||
		!errors.Is(err, journal.ErrDiverged) {
		t.Fatalf("drill of a journal whose hash is not the source's: %v, want ErrFailed (diverged)", err)
	}

	if _, ok, err := RunJournal(ctx, b, "c/cluster-c/other/", nil, t.TempDir(), 0); ok || err != nil {
		t.Fatalf("drill of a config without a journal: ok %v, %v", ok, err)
	}
}
