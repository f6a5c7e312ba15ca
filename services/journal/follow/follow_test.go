package follow_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/etcdtest"
	"github.com/etcd-backup/etcdbackup/pkg/journal"
	"github.com/etcd-backup/etcdbackup/pkg/logtest"
	"github.com/etcd-backup/etcdbackup/pkg/natstest"
	"github.com/etcd-backup/etcdbackup/pkg/s3test"
	"github.com/etcd-backup/etcdbackup/services/journal/follow"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const prefix = "c1/cluster-c1/daily/"

type bench struct {
	js     jetstream.JetStream
	s3     *s3test.Server
	bucket destination.Bucket
	etcd   *etcdtest.Etcd
	c      *clientv3.Client
	// snap is the full backup's snapshot, taken before any write of the test.
	snap    []byte
	anchor  int64
	metrics *follow.Metrics
	mu      sync.Mutex
	asked   []string
}

func newBench(t *testing.T) *bench {
	t.Helper()
	b := &bench{js: natstest.Bus(t, 64<<20), s3: s3test.Run(t, "backups"), etcd: etcdtest.Start(t)}
	b.bucket = b.s3.BucketWithKeys(t, "backups", "journal", "journal-secret")
	b.c = b.etcd.Client(t)
	b.metrics = follow.NewMetrics(prometheus.NewRegistry())
	b.write(t, 0, 50)
	b.snap = b.etcd.Snapshot(t)
	b.anchor = b.rev(t)
	b.s3.PutBackup(t, "backups", prefix+"daily-2026-12-05T01-00-00.db.zst", b.snap, backupformat.Encryption{},
		backupformat.Meta{Revision: b.anchor})
	return b
}

func (b *bench) rev(t *testing.T) int64 {
	t.Helper()
	resp, err := b.c.Get(t.Context(), "probe")
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

// write makes revisions from to to of puts and deletions, each its own revision.
func (b *bench) write(t *testing.T, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		k := fmt.Sprintf("/registry/configmaps/ns/cm-%d", i%17)
		var err error
		if i%7 == 6 {
			_, err = b.c.Delete(t.Context(), k)
		} else {
			_, err = b.c.Put(t.Context(), k, fmt.Sprintf("value %d", i))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// start follows the config until the returned stop is called (a replica that dies: nothing
// is sealed or released on the way out).
func (b *bench) start(t *testing.T) (stop func()) {
	t.Helper()
	return b.startSealingEvery(t, 100*time.Millisecond)
}

func (b *bench) startSealingEvery(t *testing.T, interval time.Duration) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	log, _ := logtest.New()
	go func() {
		done <- follow.Follow(ctx, follow.Options{
			JS: b.js, Bucket: b.bucket, Prefix: prefix, Namespace: "cluster-c1", ConfigUID: "uid-1",
			Etcd: b.c, Member: b.etcd.Endpoint, SegmentInterval: interval, SegmentBytes: 4 << 10,
			HashEvery: 300 * time.Millisecond, MaxChainRevisions: 1 << 20, Log: log, Metrics: b.metrics,
			FullBackup: func(_ context.Context, reason string) error {
				b.mu.Lock()
				defer b.mu.Unlock()
				b.asked = append(b.asked, reason)
				return nil
			},
		})
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("follow ended with %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitSealed polls until segments hold revision rev.
func (b *bench) waitSealed(t *testing.T, rev int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		last, err := journal.LastSealed(t.Context(), b.bucket, prefix)
		if err == nil && last >= rev {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("segments hold revisions up to %d after 30 s (%v), want %d", last, err, rev)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// chain reads every segment and checks them gapless and without overlap from the anchor's next
// revision; it returns the revisions and the hashes they carry.
func (b *bench) chain(t *testing.T) ([]int64, []journal.Hash, *journal.Replay) {
	t.Helper()
	segs, err := journal.Segments(t.Context(), b.bucket, prefix)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "db")
	if err := os.WriteFile(path, b.snap, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := journal.StripHash(path); err != nil {
		t.Fatal(err)
	}
	r, err := journal.OpenReplay(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	var revs []int64
	var hashes []journal.Hash
	next := b.anchor + 1
	for _, s := range segs {
		if s.First != next {
			t.Fatalf("segment %s follows revision %d: revisions lost or doubled", s.Key, next-1)
		}
		m, got, err := journal.Fetch(t.Context(), b.bucket, s.Key, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, rev := range got {
			revs = append(revs, rev.GetRevision())
			if err := r.Apply(rev); err != nil {
				t.Fatal(err)
			}
		}
		if m.Hash != nil {
			if err := r.Check(*m.Hash); err != nil {
				t.Fatal(err)
			}
			hashes = append(hashes, *m.Hash)
		}
		next = s.Last + 1
	}
	return revs, hashes, r
}

// onBus polls until the bus holds n revisions.
func (b *bench) onBus(t *testing.T, n int64) {
	t.Helper()
	st, err := b.js.Stream(t.Context(), bus.StreamJournal)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := st.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if int64(info.State.Msgs) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d revisions on the bus, want %d", info.State.Msgs, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestAReplacedReplicaLosesAndDoublesNoRevision(t *testing.T) {
	b := newBench(t)
	// A replica that publishes, and seals only what passes 4 KiB, dies with revisions on the bus;
	// etcd compacts them away before the next replica comes: they are on the bus only.
	stop := b.startSealingEvery(t, time.Hour)
	b.write(t, 50, 300)
	b.write(t, 300, 301) // the 4 KiB seal runs only on a new revision: one that follows it
	published := b.rev(t)
	sealed, err := journal.LastSealed(t.Context(), b.bucket, prefix)
	if err != nil {
		t.Fatal(err)
	}
	b.onBus(t, published-sealed)
	stop()
	if published == sealed {
		t.Fatal("nothing left on the bus: the test shows nothing")
	}
	if _, err := b.c.Compact(t.Context(), published); err != nil {
		t.Fatal(err)
	}
	b.write(t, 301, 400)
	b.start(t)
	b.write(t, 400, 600)
	last := b.rev(t)
	b.waitSealed(t, last)

	revs, hashes, r := b.chain(t)
	if int64(len(revs)) != last-b.anchor {
		t.Fatalf("%d revisions in segments, want %d (%d to %d)", len(revs), last-b.anchor, b.anchor+1, last)
	}
	if len(hashes) < 2 {
		t.Fatalf("%d segments carry a HashKV, want one per run at least", len(hashes))
	}
	src, err := b.c.HashKV(t.Context(), b.etcd.Endpoint, last)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Check(journal.Hash{Revision: last, CompactRevision: src.CompactRevision, Hash: src.Hash}); err != nil {
		t.Fatalf("the replayed journal is not the source: %v", err)
	}
	// Sealed revisions leave the bus.
	b.onBus(t, 0)
}

func TestRevisionsWaitOnTheBusWhileTheBucketRefuses(t *testing.T) {
	b := newBench(t)
	b.start(t)
	b.write(t, 50, 100)
	before := b.rev(t)
	b.waitSealed(t, before)
	b.s3.Allow(s3test.AccessKey)
	b.write(t, 100, 200)
	last := b.rev(t)
	b.onBus(t, last-before)
	if sealed, _ := journal.LastSealed(t.Context(), b.s3.Bucket(t, "backups"), prefix); sealed != before {
		t.Fatalf("segments up to %d though the bucket refused the journal's key since %d", sealed, before)
	}
	b.s3.Allow("journal")
	b.waitSealed(t, last)
	if revs, _, _ := b.chain(t); int64(len(revs)) != last-b.anchor {
		t.Fatalf("%d revisions in segments, want %d", len(revs), last-b.anchor)
	}
}

func TestCompactionPastTheResumePointStartsANewChain(t *testing.T) {
	b := newBench(t)
	stop := b.start(t)
	b.write(t, 50, 100)
	sealed := b.rev(t)
	b.waitSealed(t, sealed)
	stop()
	// While nobody follows: writes, then a compaction past them.
	b.write(t, 100, 200)
	compacted := b.rev(t)
	if _, err := b.c.Compact(t.Context(), compacted); err != nil {
		t.Fatal(err)
	}
	b.start(t)
	b.write(t, 200, 250)
	last := b.rev(t)
	b.waitSealed(t, last)

	segs, err := journal.Segments(t.Context(), b.bucket, prefix)
	if err != nil {
		t.Fatal(err)
	}
	var gapAt int64
	for i := 1; i < len(segs); i++ {
		if segs[i].First != segs[i-1].Last+1 {
			gapAt = segs[i].First
		}
	}
	if gapAt != compacted+1 {
		t.Fatalf("the new chain starts at %d, want %d, after the compact revision (the old ended at %d)", gapAt,
			compacted+1, sealed)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.asked) != 1 {
		t.Fatalf("full backups asked for: %q, want one", b.asked)
	}
}
