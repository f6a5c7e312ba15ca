package journal_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/etcdtest"
	"github.com/etcd-backup/etcdbackup/pkg/journal"
	"github.com/etcd-backup/etcdbackup/pkg/journal/journaltest"
	"github.com/etcd-backup/etcdbackup/pkg/s3test"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	clientv3 "go.etcd.io/etcd/client/v3"
	etcdsnapshot "go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"
)

// source is a cluster's etcd with a journal recorded from its first revision: every test's
// starting point. Its writes look like kube-apiserver's: objects under /registry, rewritten,
// deleted, events attached to leases, and transactions of several keys.
type source struct {
	etcd *etcdtest.Etcd
	c    *clientv3.Client
	// snap is a snapshot taken after the first part of the writes, at revision snapRev at least.
	snap    []byte
	snapRev int64
	// revs is the journal of every revision, 2 to last.
	revs []*etcdbackupv1.JournalRevision
	last int64
	rnd  *rand.Rand
}

func newSource(t *testing.T) *source {
	t.Helper()
	e := etcdtest.Start(t)
	s := &source{etcd: e, c: e.Client(t), rnd: rand.New(rand.NewPCG(1, 2))}
	ctx := t.Context()
	w := s.c.Watch(clientv3.WithRequireLeader(ctx), "", clientv3.WithFromKey(), clientv3.WithRev(1))
	rec := journal.NewRecorder(journal.ClientLeaseTTL(s.c))
	s.write(t, 300)
	s.snap = e.Snapshot(t)
	s.snapRev = s.rev(t)
	s.write(t, 700)
	s.last = s.rev(t)
	for resp := range w {
		if err := resp.Err(); err != nil {
			t.Fatal(err)
		}
		revs, err := rec.Revisions(ctx, resp.Events)
		if err != nil {
			t.Fatal(err)
		}
		s.revs = append(s.revs, revs...)
		if n := len(s.revs); n > 0 && s.revs[n-1].GetRevision() >= s.last {
			break
		}
	}
	return s
}

func (s *source) rev(t *testing.T) int64 {
	t.Helper()
	resp, err := s.c.Get(t.Context(), "probe")
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

// write makes n changes, each its own revision.
func (s *source) write(t *testing.T, n int) {
	t.Helper()
	ctx := t.Context()
	key := func() string { return fmt.Sprintf("/registry/pods/ns-%d/pod-%d", s.rnd.IntN(3), s.rnd.IntN(40)) }
	for i := 0; i < n; i++ {
		var err error
		switch op := s.rnd.IntN(10); {
		case op < 5:
			_, err = s.c.Put(ctx, key(), fmt.Sprintf("pod %d %x", i, s.rnd.Uint64()))
		case op < 7:
			// A deletion that deletes nothing makes no revision: delete what is there.
			k := key()
			_, err = s.c.Put(ctx, k, "doomed")
			if err == nil {
				_, err = s.c.Delete(ctx, k)
			}
		case op < 8:
			var l *clientv3.LeaseGrantResponse
			if l, err = s.c.Grant(ctx, int64(600+s.rnd.IntN(600))); err == nil {
				_, err = s.c.Put(ctx, fmt.Sprintf("/registry/events/ns-0/ev-%d", i), "event", clientv3.WithLease(l.ID))
			}
		case op < 9:
			_, err = s.c.Txn(ctx).Then(
				clientv3.OpPut(fmt.Sprintf("/registry/leases/a-%d", s.rnd.IntN(5)), "a"),
				clientv3.OpPut(fmt.Sprintf("/registry/leases/b-%d", s.rnd.IntN(5)), "b")).Commit()
		default:
			// A lease revoked with its keys: one revision of several deletions.
			var l *clientv3.LeaseGrantResponse
			if l, err = s.c.Grant(ctx, 300); err == nil {
				_, err = s.c.Put(ctx, fmt.Sprintf("/registry/masterleases/m-%d", i), "x", clientv3.WithLease(l.ID))
				if err == nil {
					_, err = s.c.Put(ctx, fmt.Sprintf("/registry/masterleases/n-%d", i), "y", clientv3.WithLease(l.ID))
				}
				if err == nil {
					_, err = s.c.Revoke(ctx, l.ID)
				}
			}
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// hash is the source's HashKV at rev.
func (s *source) hash(t *testing.T, rev int64) journal.Hash {
	t.Helper()
	resp, err := s.c.HashKV(t.Context(), s.etcd.Endpoint, rev)
	if err != nil {
		t.Fatal(err)
	}
	return journal.Hash{Revision: rev, CompactRevision: resp.CompactRevision, Hash: resp.Hash}
}

// kvs is every key at rev, as etcd serves it.
func kvs(ctx context.Context, t *testing.T, c *clientv3.Client, rev int64) []string {
	t.Helper()
	resp, err := c.Get(ctx, "", clientv3.WithFromKey(), clientv3.WithRev(rev))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, kv := range resp.Kvs {
		out = append(out, fmt.Sprintf("%s=%q create=%d mod=%d version=%d lease=%x", kv.Key, kv.Value,
			kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease))
	}
	return out
}

// replay replays s.revs up to target on s's snapshot, checking hashes on the way.
func (s *source) replay(t *testing.T, target int64, hashes ...journal.Hash) (*journal.Replay, error) {
	t.Helper()
	r := s.open(t)
	for _, rev := range s.revs {
		if rev.GetRevision() > target {
			break
		}
		if err := r.Apply(rev); err != nil {
			return r, err
		}
		for _, h := range hashes {
			if h.Revision == rev.GetRevision() {
				if err := r.Check(h); err != nil {
					return r, err
				}
			}
		}
	}
	return r, nil
}

// open is a replay on s's snapshot.
func (s *source) open(t *testing.T) *journal.Replay {
	t.Helper()
	r := journaltest.Replay(t, s.snap)
	if r.Base() < s.snapRev {
		t.Fatalf("the snapshot's revision %d is before the revision %d read before it", r.Base(), s.snapRev)
	}
	return r
}

// restored starts etcd on the replay's database, restored by etcdutl as a restore step does.
func restored(t *testing.T, r *journal.Replay) *clientv3.Client {
	t.Helper()
	dir := t.TempDir()
	snap := filepath.Join(dir, "snapshot.db")
	var buf bytes.Buffer
	if _, _, err := r.WriteSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(snap, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	peer := "http://127.0.0.1:2380"
	data := filepath.Join(dir, "data")
	err := etcdsnapshot.NewV3(zap.NewNop()).Restore(etcdsnapshot.RestoreConfig{
		SnapshotPath: snap, Name: "restored", OutputDataDir: data, PeerURLs: []string{peer},
		InitialCluster: "restored=" + peer, InitialClusterToken: "replay",
	})
	if err != nil {
		t.Fatal(err)
	}
	e, err := etcdtest.StartIn(data, "restored", func(cfg *embed.Config) {
		u, _ := url.Parse(peer)
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*u}, []url.URL{*u}
		cfg.InitialCluster = "restored=" + peer
		cfg.ClusterState = embed.ClusterStateFlagExisting
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	return e.Client(t)
}

func TestReplayRestoresEveryKeyAsEtcdHeldItAtTheTarget(t *testing.T) {
	s := newSource(t)
	ctx := t.Context()
	target := s.snapRev + (s.last-s.snapRev)/2
	want := kvs(ctx, t, s.c, target)
	wantHash := s.hash(t, target)

	r, err := s.replay(t, target, wantHash)
	if err != nil {
		t.Fatal(err)
	}
	if r.Revision() != target {
		t.Fatalf("replayed to revision %d, want %d", r.Revision(), target)
	}
	c := restored(t, r)
	got := kvs(ctx, t, c, 0)
	if len(got) == 0 || !equal(got, want) {
		t.Fatalf("restored at %d:\n%d keys, first %q\nsource:\n%d keys", target, len(got), first(got), len(want))
	}
	resp, err := c.Get(ctx, "probe")
	if err != nil {
		t.Fatal(err)
	}
	if resp.Header.Revision != target {
		t.Fatalf("the restored etcd is at revision %d, want %d", resp.Header.Revision, target)
	}
	leases, err := c.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(leases.Leases) == 0 {
		t.Fatal("the restored etcd holds no lease, though keys at the target are attached to leases")
	}
}

// TestReplayChecksHashesAcrossCompaction: the source compacts between two recorded hashes; the
// replay compacts to the second hash's compact revision and matches both.
func TestReplayChecksHashesAcrossCompaction(t *testing.T) {
	s := newSource(t)
	mid := s.snapRev + (s.last-s.snapRev)/3
	h1 := s.hash(t, mid)
	compact := s.snapRev + (s.last-s.snapRev)/2
	if _, err := s.c.Compact(t.Context(), compact, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	h2 := s.hash(t, s.last)
	if h2.CompactRevision != compact {
		t.Fatalf("the source's hash is compacted to %d, want %d", h2.CompactRevision, compact)
	}
	if _, err := s.replay(t, s.last, h1, h2); err != nil {
		t.Fatal(err)
	}

	t.Run("a changed value is found by the next hash", func(t *testing.T) {
		changed := false
		for _, rev := range s.revs {
			if rev.GetRevision() > s.snapRev && rev.GetRevision() < mid && !rev.GetEvents()[0].GetDelete() {
				ev := rev.GetEvents()[0]
				orig := proto.Clone(ev).(*etcdbackupv1.JournalEvent)
				ev.Value = append([]byte("x"), ev.GetValue()...)
				t.Cleanup(func() { proto.Merge(ev, orig); ev.Value = orig.GetValue() })
				changed = true
				break
			}
		}
		if !changed {
			t.Fatal("no put to change")
		}
		_, err := s.replay(t, s.last, h1, h2)
		if !errors.Is(err, journal.ErrDiverged) {
			t.Fatalf("replay of a changed journal: %v, want ErrDiverged", err)
		}
	})
	t.Run("a missing revision is refused", func(t *testing.T) {
		i := len(s.revs) / 2
		hole := append(append([]*etcdbackupv1.JournalRevision{}, s.revs[:i]...), s.revs[i+1:]...)
		all := s.revs
		s.revs = hole
		defer func() { s.revs = all }()
		_, err := s.replay(t, s.last)
		if !errors.Is(err, journal.ErrDiverged) {
			t.Fatalf("replay with revision %d missing: %v, want ErrDiverged", all[i].GetRevision(), err)
		}
	})
}

// Revisions sealed twice (a replaced replica's put that landed after the next replica had
// listed the bucket) keep the window whole: a segment that reaches past the others extends it,
// one within them is skipped, and the replay through them applies each revision once and is
// the source at the window's end.
func TestAReplayThroughOverlappingSegmentsIsTheSource(t *testing.T) {
	s := newSource(t)
	const prefix = "c1/cluster-c1/daily/"
	srv := s3test.Run(t, "backups")
	b := srv.Bucket(t, "backups")
	dir := journal.Timeline{Name: journal.InitialTimeline}.Dir(prefix)
	srv.PutBackup(t, "backups", prefix+"daily-2026-12-05T01-00-00.db.zst", s.snap, backupformat.Encryption{},
		backupformat.Meta{Revision: s.snapRev})
	var after []*etcdbackupv1.JournalRevision
	for _, rev := range s.revs {
		if rev.GetRevision() > s.snapRev {
			after = append(after, rev)
		}
	}
	n := len(after)
	var want []string
	for i, cut := range [][2]int{{0, n / 2}, {n / 8, n / 4}, {n / 3, 2 * n / 3}, {2 * n / 3, n}} {
		var buf bytes.Buffer
		m, err := journal.Write(&buf, after[cut[0]:cut[1]], backupformat.Encryption{})
		if err != nil {
			t.Fatal(err)
		}
		if cut[1] == n {
			h := s.hash(t, s.last)
			m.Hash = &h
		}
		if err := b.Put(t.Context(), journal.Key(dir, m.First, m.Last), bytes.NewReader(buf.Bytes()),
			int64(buf.Len()), destination.PutOptions{Metadata: m.Map()}); err != nil {
			t.Fatal(err)
		}
		if i != 1 {
			want = append(want, fmt.Sprintf("%d-%d", m.First, m.Last))
		}
	}
	ws, err := journal.Windows(t.Context(), b, prefix)
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) != 1 || ws[0].FromRevision != s.snapRev || ws[0].ToRevision != s.last {
		t.Fatalf("windows %s, want one of revisions %d to %d", journal.Describe(ws), s.snapRev, s.last)
	}
	var got []string
	for _, seg := range ws[0].Segments {
		got = append(got, fmt.Sprintf("%d-%d", seg.First, seg.Last))
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("the window's segments are %s, want %s", strings.Join(got, " "), strings.Join(want, " "))
	}
	r := s.open(t)
	segments, hashes, err := journal.ReplayWindow(t.Context(), b, r, ws[0], nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Revision() != s.last || segments != 3 || hashes != 1 {
		t.Fatalf("replayed to revision %d from %d segments, %d hashes reproduced; want %d, 3 and 1", r.Revision(),
			segments, hashes, s.last)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

var _ = time.Second
