// Package journaltest records a journal of a real etcd for tests: a snapshot (the full
// backup), every revision after it as the journal records them, and etcd's HashKV at the last.
package journaltest

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/etcdtest"
	"github.com/etcd-backup/etcdbackup/pkg/journal"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Recorded is a snapshot of an etcd at Anchor and the journal of Anchor+1 to Last.
type Recorded struct {
	Snapshot     []byte
	Anchor, Last int64
	Revisions    []*etcdbackupv1.JournalRevision
	// Hash is etcd's HashKV at Last.
	Hash journal.Hash
}

// Record runs before, snapshots e, runs after while recording what it changes, and returns it.
func Record(t testing.TB, e *etcdtest.Etcd, before, after func(c *clientv3.Client)) Recorded {
	t.Helper()
	ctx := t.Context()
	c := e.Client(t)
	before(c)
	r := Recorded{Snapshot: e.Snapshot(t)}
	rev := func() int64 {
		resp, err := c.Get(ctx, "probe")
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}
	r.Anchor = rev()
	w := c.Watch(ctx, "\x00", clientv3.WithFromKey(), clientv3.WithRev(r.Anchor+1))
	after(c)
	r.Last = rev()
	rec := journal.NewRecorder(journal.ClientLeaseTTL(c))
	for resp := range w {
		got, err := rec.Revisions(ctx, resp.Events)
		if err != nil {
			t.Fatal(err)
		}
		r.Revisions = append(r.Revisions, got...)
		if n := len(r.Revisions); n > 0 && r.Revisions[n-1].GetRevision() >= r.Last {
			break
		}
	}
	h, err := c.HashKV(ctx, e.Endpoint, r.Last)
	if err != nil {
		t.Fatal(err)
	}
	r.Hash = journal.Hash{Revision: r.Last, CompactRevision: h.CompactRevision, Hash: h.Hash}
	return r
}

// Seal stores the revisions as one segment in dir (a timeline's folder) of b, carrying hash.
func (r Recorded) Seal(t testing.TB, b destination.Bucket, dir string, hash journal.Hash) {
	t.Helper()
	var buf bytes.Buffer
	m, err := journal.Write(&buf, r.Revisions, backupformat.Encryption{})
	if err != nil {
		t.Fatal(err)
	}
	m.Hash = &hash
	if err := b.Put(t.Context(), journal.Key(dir, m.First, m.Last), bytes.NewReader(buf.Bytes()), int64(buf.Len()),
		destination.PutOptions{Metadata: m.Map()}); err != nil {
		t.Fatal(err)
	}
}

// Replay opens a replay on snapshot (a full backup's database, its hash stripped as a restore
// does), closed when tb ends.
func Replay(tb testing.TB, snapshot []byte) *journal.Replay {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "db")
	if err := os.WriteFile(path, snapshot, 0o600); err != nil {
		tb.Fatal(err)
	}
	if err := journal.StripHash(path); err != nil {
		tb.Fatal(err)
	}
	r, err := journal.OpenReplay(path)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = r.Close() })
	return r
}
