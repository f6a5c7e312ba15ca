package follow_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/etcdtest"
	"github.com/etcd-backup/etcdbackup/pkg/journal"
	"github.com/etcd-backup/etcdbackup/pkg/journal/journaltest"
	"github.com/etcd-backup/etcdbackup/pkg/logtest"
	"github.com/etcd-backup/etcdbackup/pkg/natstest"
	"github.com/etcd-backup/etcdbackup/pkg/s3test"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/etcd-backup/etcdbackup/services/journal/follow"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const prefix = "c1/cluster-c1/daily/"

// initial is the folder of the first timeline's segments.
var initial = journal.Timeline{Name: journal.InitialTimeline}.Dir(prefix)

type bench struct {
	js     jetstream.JetStream
	s3     *s3test.Server
	bucket destination.Bucket
	// admin reads the bucket whatever it allows the journal's key.
	admin destination.Bucket
	etcd  *etcdtest.Etcd
	c     *clientv3.Client
	// snap is the full backup's snapshot, taken before any write of the test.
	snap    []byte
	anchor  int64
	metrics *follow.Metrics
	// timeline is what the next start follows.
	timeline journal.Timeline
	mu       sync.Mutex
	asked    []string
	// tune changes the options of the next start.
	tune func(*follow.Options)
}

func newBench(t *testing.T) *bench {
	t.Helper()
	return newBenchFor(t)
}

func newBenchFor(t testing.TB) *bench {
	t.Helper()
	b := &bench{js: natstest.Bus(t, 64<<20), s3: s3test.Run(t, "backups"), etcd: etcdtest.Start(t),
		timeline: journal.Timeline{Name: journal.InitialTimeline}}
	b.bucket = b.s3.BucketWithKeys(t, "backups", "journal", "journal-secret")
	b.admin = b.s3.Bucket(t, "backups")
	b.c = b.etcd.Client(t)
	b.metrics = follow.NewMetrics(prometheus.NewRegistry())
	b.write(t, 0, 50)
	b.snap = b.etcd.Snapshot(t)
	b.anchor = b.rev(t)
	b.s3.PutBackup(t, "backups", prefix+"daily-2026-12-05T01-00-00.db.zst", b.snap, backupformat.Encryption{},
		backupformat.Meta{Revision: b.anchor})
	return b
}

func (b *bench) rev(t testing.TB) int64 {
	t.Helper()
	resp, err := b.c.Get(t.Context(), "probe")
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

// write makes revisions from to to of puts and deletions, each its own revision.
func (b *bench) write(t testing.TB, from, to int) {
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
	o := follow.Options{
		JS: b.js, Bucket: b.bucket, Prefix: prefix, Namespace: "cluster-c1", ConfigUID: "uid-1", Timeline: b.timeline,
		Etcd: b.c, Member: b.etcd.Endpoint, SegmentInterval: interval, PublishLinger: 50 * time.Millisecond,
		SegmentBytes: 4 << 10,
		HashEvery:    300 * time.Millisecond, MaxChainRevisions: 1 << 20, Log: log, Metrics: b.metrics,
		FullBackup: func(_ context.Context, reason string) error {
			b.mu.Lock()
			defer b.mu.Unlock()
			b.asked = append(b.asked, reason)
			return nil
		},
	}
	if b.tune != nil {
		b.tune(&o)
	}
	go func() { done <- follow.Follow(ctx, o) }()
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
	b.waitSealedIn(t, initial, rev)
}

func (b *bench) waitSealedIn(t *testing.T, dir string, rev int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		last, err := journal.LastSealed(t.Context(), b.bucket, dir)
		if err == nil && last >= rev {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("segments hold revisions up to %d after 30 s (%v), want %d", last, err, rev)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// wholeChain waits until segments hold revision last, and returns the chain (see chain),
// which must hold every revision from the anchor's next to last once.
func (b *bench) wholeChain(t *testing.T, last int64) ([]int64, []journal.Hash, *journal.Replay) {
	t.Helper()
	b.waitSealed(t, last)
	revs, hashes, r := b.chain(t)
	if int64(len(revs)) != last-b.anchor {
		t.Fatalf("%d revisions in segments, want %d (%d to %d)", len(revs), last-b.anchor, b.anchor+1, last)
	}
	return revs, hashes, r
}

// chain reads every segment and checks them gapless and without overlap from the anchor's next
// revision; it returns the revisions and the hashes they carry.
func (b *bench) chain(t *testing.T) ([]int64, []journal.Hash, *journal.Replay) {
	t.Helper()
	return b.chainIn(t, initial, b.snap, b.anchor)
}

func (b *bench) chainIn(t *testing.T, dir string, snap []byte,
	anchor int64) ([]int64, []journal.Hash, *journal.Replay) {
	t.Helper()
	segs, err := journal.Segments(t.Context(), b.bucket, dir)
	if err != nil {
		t.Fatal(err)
	}
	r := journaltest.Replay(t, snap)
	var revs []int64
	var hashes []journal.Hash
	next := anchor + 1
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

// onBus polls until the bus holds n revisions that no segment holds, and when n is 0, no
// message at all (a message is purged once every revision it carries is sealed).
func (b *bench) onBus(t *testing.T, n int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		sealed, err := journal.LastSealed(t.Context(), b.admin, initial)
		if err != nil {
			t.Fatal(err)
		}
		unsealed, msgs := b.busRevisions(t, sealed)
		if unsealed == n && (n > 0 || msgs == 0) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d revisions after %d on the bus in %d messages, want %d", unsealed, sealed, msgs, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// busRevisions reads the journal stream: the revisions after sealed it holds, each counted once
// (and checked consecutive), and the messages that carry them.
func (b *bench) busRevisions(t *testing.T, sealed int64) (revisions int64, msgs uint64) {
	t.Helper()
	last, started := sealed, sealed > 0
	for _, revs := range b.busMessages(t) {
		msgs++
		for _, r := range revs {
			switch {
			case !started:
				started, last, revisions = true, r.GetRevision(), 1
			case r.GetRevision() <= last:
			case r.GetRevision() == last+1:
				last++
				revisions++
			default:
				t.Fatalf("revision %d on the bus follows %d: a gap", r.GetRevision(), last)
			}
		}
	}
	return revisions, msgs
}

// busMessages are the journal stream's messages, each its revisions, in stream order.
func (b *bench) busMessages(t *testing.T) [][]*etcdbackupv1.JournalRevision {
	t.Helper()
	st, err := b.js.Stream(t.Context(), bus.StreamJournal)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var out [][]*etcdbackupv1.JournalRevision
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(t.Context(), seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		revs, err := journal.DecodeBatch(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, revs)
	}
	return out
}

func TestAReplacedReplicaLosesAndDoublesNoRevision(t *testing.T) {
	b := newBench(t)
	// A replica that publishes, and seals only what passes 4 KiB, dies with revisions on the bus;
	// etcd compacts them away before the next replica comes: they are on the bus only.
	stop := b.startSealingEvery(t, time.Hour)
	b.write(t, 50, 300)
	b.write(t, 300, 301) // the 4 KiB seal runs only on a new revision: one that follows it
	published, sealed := b.settle(t)
	// Everything can be on the bus before the 4 KiB seal has run: wait for the first replica's
	// segment, or its run would leave none (and no HashKV) behind. etcd's watch may deliver
	// revision 301 with the others (a loaded machine), so each wait brings a new revision.
	for deadline := time.Now().Add(10 * time.Second); sealed == 0; published, sealed = b.settle(t) {
		if time.Now().After(deadline) {
			t.Fatalf("the first replica sealed nothing of %d revisions", published-b.anchor)
		}
		time.Sleep(50 * time.Millisecond)
		b.write(t, 301, 302) // a put: a revision each time
	}
	if sealed == published {
		b.write(t, 301, 302)
		published, sealed = b.settle(t)
	}
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
	_, hashes, r := b.wholeChain(t, last)
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

// The replica a config was taken from can have had a segment's put in flight as it stopped:
// the server stores it after the next replica listed the bucket at its start. The next
// replica's first segment starts after it, not over it.
func TestASegmentStoredLateByTheLastReplicaIsNotSealedAgain(t *testing.T) {
	b := newBench(t)
	stop := b.startSealingEvery(t, time.Hour)
	b.write(t, 50, 80)
	published, sealed := b.settle(t)
	stop()
	if sealed != 0 || published-b.anchor < 4 {
		t.Fatalf("the first replica sealed up to %d of revisions %d to %d: the test needs them all on the bus",
			sealed, b.anchor+1, published)
	}
	late := b.anchor + (published-b.anchor)/2
	var revs []*etcdbackupv1.JournalRevision
	for _, r := range slices.Concat(b.busMessages(t)...) {
		if r.GetRevision() > b.anchor && r.GetRevision() <= late {
			revs = append(revs, r)
		}
	}
	if int64(len(revs)) != late-b.anchor {
		t.Fatalf("%d revisions up to %d on the bus, want %d", len(revs), late, late-b.anchor)
	}
	b.tune = func(o *follow.Options) {
		// The next replica has read the bucket and the bus; the last one's segment lands now.
		o.Started = func() {
			var buf bytes.Buffer
			m, err := journal.Write(&buf, revs, backupformat.Encryption{})
			if err != nil {
				t.Error(err)
				return
			}
			if err := b.admin.Put(t.Context(), journal.Key(initial, m.First, m.Last), bytes.NewReader(buf.Bytes()),
				int64(buf.Len()), destination.PutOptions{Metadata: m.Map()}); err != nil {
				t.Error(err)
			}
		}
	}
	b.start(t)
	b.write(t, 80, 120)
	b.wholeChain(t, b.rev(t))
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
	// Revisions received within the linger share a message.
	if revs, msgs := b.busRevisions(t, before); msgs == 0 || uint64(revs) < 2*msgs {
		t.Fatalf("%d revisions in %d messages: the linger batched nothing", revs, msgs)
	}
	if sealed, _ := journal.LastSealed(t.Context(), b.s3.Bucket(t, "backups"), initial); sealed != before {
		t.Fatalf("segments up to %d though the bucket refused the journal's key since %d", sealed, before)
	}
	b.s3.Allow("journal")
	b.wholeChain(t, last)
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

	segs, err := journal.Segments(t.Context(), b.bucket, initial)
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
	// The journal asks while it goes on following: the ask may come after the seal.
	asked := func() []string {
		b.mu.Lock()
		defer b.mu.Unlock()
		return append([]string(nil), b.asked...)
	}
	for deadline := time.Now().Add(5 * time.Second); len(asked()) == 0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if got := asked(); len(got) != 1 {
		t.Fatalf("full backups asked for: %q, want one", got)
	}
}

// After a restore, etcd makes the same revisions again with other changes: the journal follows
// the cluster's new timeline into a folder of its own, anchored only by full backups of that
// timeline, and the revisions of the old one still on the bus are sealed into the old folder.
func TestARestoreStartsATimeline(t *testing.T) {
	b := newBench(t)
	stop := b.startSealingEvery(t, time.Hour)
	b.write(t, 50, 120)
	// Some revisions stay on the bus: one more write when every one was sealed.
	published, sealed := b.settle(t)
	if sealed == published {
		b.write(t, 120, 121)
		published, _ = b.settle(t)
	}
	stop()
	// A restore comes after the backups it follows were stored, which a bucket records to the
	// second: the restore ends in a later second than the old backup's.
	old, err := b.bucket.Stat(t.Context(), prefix+"daily-2026-12-05T01-00-00.db.zst")
	if err != nil {
		t.Fatal(err)
	}
	for !time.Now().Truncate(time.Second).After(old.LastModified) {
		if time.Since(old.LastModified) > 5*time.Second {
			t.Fatalf("the clock stays at %s", old.LastModified)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The restore: another etcd, from revision 1 again, and a timeline that starts now.
	b.etcd = etcdtest.Start(t)
	b.c = b.etcd.Client(t)
	b.timeline = journal.NewTimeline(time.Now())
	b.write(t, 0, 20)
	snap := b.etcd.Snapshot(t)
	anchor := b.rev(t)
	slot := b.timeline.Start.Truncate(time.Second).Add(time.Second)
	b.s3.PutBackup(t, "backups", prefix+"daily-"+slot.UTC().Format("2006-01-02T15-04-05")+".db.zst", snap,
		backupformat.Encryption{}, backupformat.Meta{Revision: anchor})
	b.start(t)
	b.write(t, 20, 60)
	last := b.rev(t)
	dir := b.timeline.Dir(prefix)
	b.waitSealedIn(t, dir, last)
	b.waitSealed(t, published)

	if revs, _, _ := b.chainIn(t, dir, snap, anchor); int64(len(revs)) != last-anchor {
		t.Fatalf("the new timeline's segments hold %d revisions, want %d", len(revs), last-anchor)
	}
	if revs, _, _ := b.chain(t); int64(len(revs)) != published-b.anchor {
		t.Fatalf("the old timeline's segments hold %d revisions, want %d", len(revs), published-b.anchor)
	}
	ws, err := journal.Windows(t.Context(), b.bucket, prefix)
	if err != nil {
		t.Fatal(err)
	}
	if len(ws) != 2 || ws[0].Timeline.Name != journal.InitialTimeline || ws[0].ToRevision != published ||
		ws[1].Timeline.Name != b.timeline.Name || ws[1].FromRevision != anchor || ws[1].ToRevision != last {
		t.Fatalf("windows %s, want the old timeline's to %d and the new one's from %d to %d", journal.Describe(ws),
			published, anchor, last)
	}
}

// settle waits until every revision written is sealed or on the bus (the replica has received
// them all), and returns the last written and the last sealed.
func (b *bench) settle(t *testing.T) (published, sealed int64) {
	t.Helper()
	published = b.rev(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		if sealed, err = journal.LastSealed(t.Context(), b.admin, initial); err != nil {
			t.Fatal(err)
		}
		onBus, _ := b.busRevisions(t, sealed)
		if onBus == published-max(sealed, b.anchor) {
			return published, sealed
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d revisions on the bus and %d sealed, want %d in all", onBus, sealed-b.anchor,
				published-b.anchor)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A chain past --max-chain-revisions or --max-chain-mib since the newest full backup asks for
// one; a chain under both does not.
func TestALongChainAsksForAFullBackup(t *testing.T) {
	for _, tc := range []struct {
		name string
		tune func(*follow.Options)
		want string
	}{
		{"revisions", func(o *follow.Options) { o.MaxChainRevisions = 100 },
			"revisions since the newest full backup, more than 100"},
		{"bytes", func(o *follow.Options) { o.MaxChainBytes = 256 },
			"MiB of segments since the newest full backup, more than 0.0 MiB"},
		{"neither", func(o *follow.Options) { o.MaxChainRevisions, o.MaxChainBytes = 1000, 1<<20 }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBench(t)
			b.tune = tc.tune
			b.start(t)
			b.write(t, 50, 200)
			b.waitSealed(t, b.rev(t))
			// The check runs after each seal, every 100 ms: 20 of them say a short chain asks nothing.
			deadline := time.Now().Add(2 * time.Second)
			for {
				b.mu.Lock()
				asked := append([]string(nil), b.asked...)
				b.mu.Unlock()
				switch {
				case tc.want == "" && len(asked) != 0:
					t.Fatalf("a short chain asked for a full backup: %q", asked)
				case tc.want == "" && time.Now().After(deadline):
					return
				case len(asked) > 0:
					if len(asked) != 1 || !strings.Contains(asked[0], tc.want) {
						t.Fatalf("asked for full backups: %q, want one saying %q", asked, tc.want)
					}
					return
				case tc.want != "" && time.Now().After(deadline):
					t.Fatal("a chain past its bound asked for no full backup")
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

// A scheduler slow to answer the ask for a full backup (a thousand journals ask together when
// they start) does not stop the journal: it goes on sealing while the ask waits.
func TestAnUnansweredAskForAFullBackupStopsNothing(t *testing.T) {
	b := newBench(t)
	asking := make(chan struct{}, 1)
	b.tune = func(o *follow.Options) {
		o.MaxChainRevisions = 10
		o.FullBackup = func(ctx context.Context, _ string) error {
			select {
			case asking <- struct{}{}:
			default:
			}
			<-ctx.Done() // never answered
			return ctx.Err()
		}
	}
	started := make(chan struct{})
	tune := b.tune
	b.tune = func(o *follow.Options) {
		tune(o)
		o.Started = func() { close(started) }
	}
	b.start(t)
	await(t, started, "the journal never said it started")
	b.write(t, 50, 100)
	b.waitSealed(t, b.rev(t))
	await(t, asking, "a chain past its bound asked for no full backup")
	b.write(t, 100, 150)
	b.waitSealed(t, b.rev(t))
}

// await waits up to 10 s for ch to deliver or close, failing with why when it does not.
func await(t *testing.T, ch <-chan struct{}, why string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal(why)
	}
}

// A revision larger than the NATS server's max_payload (natstest's default, 1 MiB) stops the
// journal with the reason and the fix, not a retry of an opaque publish error.
func TestARevisionLargerThanTheBusTakesStopsTheJournalClearly(t *testing.T) {
	b := newBench(t)
	log, _ := logtest.New()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- follow.Follow(ctx, follow.Options{JS: b.js, Bucket: b.bucket, Prefix: prefix, Namespace: "cluster-c1",
			ConfigUID: "uid-1", Timeline: b.timeline, Etcd: b.c, Member: b.etcd.Endpoint, SegmentInterval: time.Second,
			PublishLinger: 10 * time.Millisecond, SegmentBytes: 8 << 20, HashEvery: time.Hour, Log: log,
			Metrics: b.metrics})
	}()
	b.write(t, 50, 60)
	if _, err := b.c.Put(t.Context(), "/registry/configmaps/ns/big", strings.Repeat("b", 1100<<10)); err != nil {
		t.Fatal(err)
	}
	err := <-done
	if !errors.Is(err, follow.ErrRevisionTooLarge) || !strings.Contains(err.Error(), "max_payload") {
		t.Fatalf("the journal ended with %v, want ErrRevisionTooLarge naming max_payload", err)
	}
	// What came before it is on the bus, for the next try.
	if revs, _ := b.busRevisions(t, 0); revs == 0 {
		t.Fatal("no revision before the large one is on the bus")
	}
}
