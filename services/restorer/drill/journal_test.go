package drill

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/etcdtest"
	"github.com/etcd-backup/etcdbackup/pkg/journal"
	"github.com/etcd-backup/etcdbackup/pkg/s3test"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// A continuous config's drill replays its newest window onto its newest full backup and
// reproduces the journal's HashKV; a hash that is not the source's fails the drill.
func TestDrillReplaysTheNewestWindow(t *testing.T) {
	ctx := t.Context()
	e := etcdtest.Start(t)
	c := e.Client(t)
	put := func(from, to int) {
		for i := from; i < to; i++ {
			if _, err := c.Put(ctx, fmt.Sprintf("/registry/k%d", i%30), fmt.Sprint(i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	put(0, 50)
	raw := e.Snapshot(t)
	anchor, err := c.Get(ctx, "probe")
	if err != nil {
		t.Fatal(err)
	}
	w := c.Watch(ctx, "\x00", clientv3.WithFromKey(), clientv3.WithRev(anchor.Header.Revision+1))
	put(50, 150)
	last, err := c.Get(ctx, "probe")
	if err != nil {
		t.Fatal(err)
	}
	rec := journal.NewRecorder(journal.ClientLeaseTTL(c))
	var revs []*etcdbackupv1.JournalRevision
	for resp := range w {
		got, err := rec.Revisions(ctx, resp.Events)
		if err != nil {
			t.Fatal(err)
		}
		revs = append(revs, got...)
		if revs[len(revs)-1].GetRevision() >= last.Header.Revision {
			break
		}
	}
	h, err := c.HashKV(ctx, e.Endpoint, last.Header.Revision)
	if err != nil {
		t.Fatal(err)
	}

	s3 := s3test.Run(t, "backups")
	b := s3.Bucket(t, "backups")
	const prefix = "c/cluster-c/daily/"
	s3.PutBackup(t, "backups", prefix+"daily-2026-12-05T01-00-00.db.zst", raw, backupformat.Encryption{},
		backupformat.Meta{SnapshotSize: int64(len(raw)), Revision: anchor.Header.Revision})
	dir := journal.Timeline{Name: journal.InitialTimeline}.Dir(prefix)
	seal := func(hash uint32) {
		t.Helper()
		var buf bytes.Buffer
		m, err := journal.Write(&buf, revs, backupformat.Encryption{})
		if err != nil {
			t.Fatal(err)
		}
		m.Hash = &journal.Hash{Revision: m.Last, CompactRevision: h.CompactRevision, Hash: hash}
		if err := b.Put(ctx, journal.Key(dir, m.First, m.Last), bytes.NewReader(buf.Bytes()), int64(buf.Len()),
			destination.PutOptions{Metadata: m.Map()}); err != nil {
			t.Fatal(err)
		}
	}

	seal(h.Hash)
	res, ok, err := RunJournal(ctx, b, prefix, nil, t.TempDir(), 0)
	if err != nil || !ok {
		t.Fatalf("drill of the window: %v (ok %v)", err, ok)
	}
	if res.Revisions != last.Header.Revision-anchor.Header.Revision || res.Hash != 1 ||
		res.Window.ToRevision != last.Header.Revision {
		t.Fatalf("drilled %s; want %d revisions to %d with 1 hash", res, last.Header.Revision-anchor.Header.Revision,
			last.Header.Revision)
	}

	seal(h.Hash + 1)
	if _, _, err := RunJournal(ctx, b, prefix, nil, t.TempDir(), 0); !errors.Is(err, ErrFailed) ||
		!errors.Is(err, journal.ErrDiverged) {
		t.Fatalf("drill of a journal whose hash is not the source's: %v, want ErrFailed (diverged)", err)
	}

	if _, ok, err := RunJournal(ctx, b, "c/cluster-c/other/", nil, t.TempDir(), 0); ok || err != nil {
		t.Fatalf("drill of a config without a journal: ok %v, %v", ok, err)
	}
}
