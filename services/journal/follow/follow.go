// Package follow is the journal of one continuous config: it watches the cluster's etcd from
// where the journal stands (the last segment in the bucket, the revisions on the bus not yet in
// one, or the newest full backup), publishes every revision onto the bus, and seals them into
// segments in the config's destination. Whatever the replica holding the config's lease
// knows is on the bus or in the bucket: a replica that dies is replaced by one that resumes
// from there, without a revision lost or doubled.
package follow

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/journal"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
)

// Options are one config's journal.
type Options struct {
	JS     jetstream.JetStream
	Bucket destination.Bucket
	// Prefix is the config's backup prefix in Bucket (backupname.Prefix).
	Prefix string
	// Timeline is the history of the cluster's etcd being journaled (the Cluster's annotation).
	Timeline journal.Timeline
	// Namespace and ConfigUID name the config on the bus.
	Namespace, ConfigUID string
	// Etcd is a client of the cluster's etcd; Member the endpoint HashKV is read from.
	Etcd   *clientv3.Client
	Member string
	// Seal is what the destination's backups are encrypted to.
	Seal backupformat.Encryption
	// PublishLinger is how long the revisions received wait for more before they go onto the
	// bus together, one message (and one fsync of a NATS server with sync_interval: always)
	// for all of them; 0 publishes each watch response at once.
	PublishLinger time.Duration
	// SegmentInterval is how often what arrived is sealed; SegmentBytes seals earlier when
	// that many bytes of revisions wait.
	SegmentInterval time.Duration
	SegmentBytes    int
	// PurgeEvery is how often sealed revisions are purged from the bus (0: after every seal):
	// each purge scans the stream's blocks, so a seed of many configs purges in batches.
	PurgeEvery time.Duration
	// HashEvery is how often a segment carries the member's HashKV (and the first of each run).
	HashEvery time.Duration
	// MaxChainRevisions: past that many revisions since the newest full backup, the journal
	// asks for one (0: never).
	MaxChainRevisions int64
	// MaxChainBytes: past that many bytes of segments since the newest full backup, the journal
	// asks for one (0: never).
	MaxChainBytes int64
	// FullBackup asks for a full backup of the config now, saying why.
	FullBackup func(ctx context.Context, reason string) error
	// Check, called every SegmentInterval, ends the journal with its error when it must stop:
	// the cluster is being restored, or a restore started another timeline (nil: never).
	Check func(ctx context.Context) error
	// Catalog reads the config's backups and windows, and is told of every segment sealed
	// (nil: one of the journal's own); the config's condition shares it.
	Catalog *journal.Catalog
	// Started, when set, is called once the journal has read where it stands (the stream, the
	// bucket, the bus and etcd) and begins to watch.
	Started func()
	Log     *slog.Logger
	Metrics *Metrics
}

// unsealed is a revision on the bus that is in no segment yet: seq is the stream sequence of
// the message that carries it (with the revisions next to it), size its encoded size.
type unsealed struct {
	rev  *etcdbackupv1.JournalRevision
	seq  uint64
	size int
}

type follower struct {
	o       Options
	subject string
	stream  jetstream.Stream
	rec     *journal.Recorder
	pending []unsealed
	bytes   int
	// outbox holds the revisions received and not yet published (at most PublishLinger), each
	// with its encoded size (seq unset); outboxBytes is their sum.
	outbox      []unsealed
	outboxBytes int
	// sealed is the last revision in a segment of each timeline (of the current one: in
	// Options.Timeline's folder); hashed when a segment last carried a hash.
	sealed map[string]int64
	// tails list each timeline's folder: whole the first time, then only the keys after the
	// last segment seen (relist).
	tails  map[string]*journal.Tail
	hashed time.Time
	// anchor is the newest full backup's revision, read from the bucket at anchorRead; asked
	// is when a full backup was last asked for.
	anchor     int64
	anchorRead time.Time
	asked      time.Time
	// chainBytes is the size of the current timeline's segments after the anchor.
	chainBytes int64
	// sealedSeq is the stream sequence of the message of the newest sealed revision (0: none
	// yet); purgedTo is where the bus was last purged to (exclusive), and purged when.
	sealedSeq, purgedTo uint64
	purged              time.Time
	// relisted: the bucket was listed again before this run's first seal; started: when the run
	// began (every seal of its first RelistFor lists again).
	relisted bool
	started  time.Time
}

// Follow journals the config until ctx ends or something fails (etcd, NATS, the bucket's
// listing); the caller calls it again, and it resumes where the bus and the bucket stand.
func Follow(ctx context.Context, o Options) error {
	stream, err := o.JS.Stream(ctx, bus.StreamJournal)
	if err != nil {
		return fmt.Errorf("journal stream: %w", err)
	}
	if o.Catalog == nil {
		o.Catalog = NewCatalog(o.Bucket, o.Prefix)
	}
	f := &follower{o: o, subject: bus.JournalSubject(o.Namespace, o.ConfigUID), stream: stream, started: time.Now(),
		rec: journal.NewRecorder(journal.ClientLeaseTTL(o.Etcd)), sealed: map[string]int64{},
		tails: map[string]*journal.Tail{}}
	if _, err := f.sealedIn(ctx, o.Timeline.Name); err != nil {
		return err
	}
	if f.anchor, err = o.Catalog.NewestBackupRevision(ctx, o.Timeline); err != nil {
		return err
	}
	f.anchorRead = time.Now()
	if f.chainBytes, err = journal.ChainBytes(ctx, o.Bucket, o.Timeline.Dir(o.Prefix), f.anchor); err != nil {
		return err
	}
	if err := f.load(ctx); err != nil {
		return err
	}
	// etcd behind the journal went back in time without a timeline of its own (restored by
	// something else than the restorer): its revisions would repeat the journal's.
	now, err := f.current(ctx)
	if err != nil {
		return err
	}
	if stands := max(f.sealed[o.Timeline.Name], f.last()); now-1 < stands {
		return fmt.Errorf("%w: etcd is at revision %d, the journal of timeline %s at %d: etcd was restored without "+
			"the restorer, which starts a timeline (annotation etcdbackup.k8c.io/etcd-timeline on the Cluster)",
			ErrWentBack, now-1, o.Timeline.Name, stands)
	}
	// Where the journal stands; else from the newest full backup (a chain's anchor); else a
	// new chain from now, anchored by the next full backup, asked for at once.
	from := max(f.sealed[o.Timeline.Name], f.last()) + 1
	switch {
	case from > 1:
	case f.anchor > 0:
		from = f.anchor + 1
	default:
		from = now
		f.askFullBackup(ctx, fmt.Sprintf("the journal of timeline %s starts without a full backup to anchor it",
			o.Timeline.Name))
	}
	if o.Started != nil {
		o.Started()
	}
	return f.follow(ctx, from)
}

// last is the newest revision of the current timeline on the bus (0: none).
func (f *follower) last() int64 { return f.lastOf(f.o.Timeline.Name) }

func (f *follower) lastOf(timeline string) int64 {
	for i := len(f.pending) - 1; i >= 0; i-- {
		if timelineOf(f.pending[i].rev) == timeline {
			return f.pending[i].rev.GetRevision()
		}
	}
	return 0
}

// timelineOf is a revision's timeline ("": the initial one, from a journal before timelines).
func timelineOf(rev *etcdbackupv1.JournalRevision) string {
	if rev.GetTimeline() == "" {
		return journal.InitialTimeline
	}
	return rev.GetTimeline()
}

// sealedIn is the last revision sealed in timeline name's folder, listed once.
func (f *follower) sealedIn(ctx context.Context, name string) (int64, error) {
	if last, ok := f.sealed[name]; ok {
		return last, nil
	}
	last, err := f.listSealed(ctx, name)
	if err != nil {
		return 0, err
	}
	f.sealed[name] = last
	return last, nil
}

// listSealed lists timeline name's folder for its last sealed revision: the keys after the last
// segment its previous listing saw.
func (f *follower) listSealed(ctx context.Context, name string) (int64, error) {
	t, ok := f.tails[name]
	if !ok {
		tl, err := journal.ParseTimeline(name)
		if err != nil {
			return 0, err
		}
		t = &journal.Tail{Bucket: f.o.Bucket, Dir: tl.Dir(f.o.Prefix)}
		f.tails[name] = t
	}
	return t.Last(ctx)
}

// current is the revision after etcd's current one: where a new chain starts.
func (f *follower) current(ctx context.Context) (int64, error) {
	resp, err := f.o.Etcd.Get(ctx, "\x00", clientv3.WithCountOnly())
	if err != nil {
		return 0, fmt.Errorf("read etcd's revision: %w", err)
	}
	return resp.Header.Revision + 1, nil
}

// load reads the config's revisions on the bus that no segment holds yet.
func (f *follower) load(ctx context.Context) error {
	cons, err := f.o.JS.OrderedConsumer(ctx, bus.StreamJournal, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{f.subject}, DeliverPolicy: jetstream.DeliverAllPolicy,
		InactiveThreshold: 10 * time.Second})
	if err != nil {
		return fmt.Errorf("read the journal stream: %w", err)
	}
	// Read once: deleted when done (and by the server after 10 s idle, should that fail).
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = f.o.JS.DeleteConsumer(dctx, bus.StreamJournal, cons.CachedInfo().Name)
	}()
	left := cons.CachedInfo().NumPending
	for left > 0 {
		batch, err := cons.Fetch(int(min(left, 1000)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return fmt.Errorf("read the journal stream: %w", err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			if err := f.loaded(ctx, msg); err != nil {
				f.o.Log.Warn("journal message ignored", "subject", f.subject, "err", err)
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return fmt.Errorf("read the journal stream: %w", err)
		}
		if n == 0 {
			return fmt.Errorf("read the journal stream: %d messages announced did not come", left)
		}
		left -= uint64(n)
	}
	return nil
}

// loaded takes one message read back from the bus: revisions already sealed, or already read
// (a duplicate past the dedup window, or an overlapping batch), are dropped. A revision of an
// earlier timeline (the journal had not sealed it when a restore began) is kept, and sealed in
// that timeline's folder.
func (f *follower) loaded(ctx context.Context, msg jetstream.Msg) error {
	meta, err := msg.Metadata()
	if err != nil {
		return err
	}
	revs, err := journal.DecodeBatch(msg.Data())
	if err != nil {
		return fmt.Errorf("sequence %d: %w", meta.Sequence.Stream, err)
	}
	for _, rev := range revs {
		sealed, err := f.sealedIn(ctx, timelineOf(rev))
		if err != nil {
			return err
		}
		if rev.GetRevision() <= max(sealed, f.lastOf(timelineOf(rev))) {
			continue
		}
		f.add(rev, meta.Sequence.Stream, proto.Size(rev))
	}
	return nil
}

func (f *follower) add(rev *etcdbackupv1.JournalRevision, seq uint64, size int) {
	f.pending = append(f.pending, unsealed{rev: rev, seq: seq, size: size})
	f.bytes += size
}

// receive takes a watch response's revisions: they wait in the outbox for PublishLinger, or
// until a message's worth (batchBytes) is there.
func (f *follower) receive(revs []*etcdbackupv1.JournalRevision) {
	for _, rev := range revs {
		rev.Timeline = f.o.Timeline.Name
		u := unsealed{rev: rev, size: proto.Size(rev)}
		f.outbox = append(f.outbox, u)
		f.outboxBytes += u.size
	}
}

// flush publishes the outbox.
func (f *follower) flush(ctx context.Context) error {
	if len(f.outbox) == 0 {
		return nil
	}
	if err := f.publish(ctx, f.outbox); err != nil {
		return err
	}
	clear(f.outbox)
	f.outbox, f.outboxBytes = f.outbox[:0], 0
	return nil
}

// batchBytes bounds one bus message's revisions (a revision larger than that goes alone):
// well under NATS's default max_payload of 1 MiB.
const batchBytes = 256 << 10

// publishInFlight is how many of a follower's messages wait for their acks at most.
const publishInFlight = 64

// MaxPublishPending is how many asynchronous publishes the journal's JetStream context lets be
// in flight: a few of every follower's.
const MaxPublishPending = 4096

// publish puts revs on the bus in messages of consecutive revisions of at most batchBytes, each
// once: a message published again with the same revisions (a replica that died after
// publishing, before it knew) is the stream's duplicate. The messages are sent without
// waiting for each one's ack, then every ack is awaited. A revision counts as on the bus only
// once acknowledged.
func (f *follower) publish(ctx context.Context, revs []unsealed) error {
	var batches [][]unsealed
	for start, size := 0, 0; start < len(revs); {
		n := 0
		for size = 0; start+n < len(revs); n++ {
			u := revs[start+n]
			// A message holds consecutive revisions only: after a gap (a new chain) one begins.
			if n > 0 && (size+u.size > batchBytes || u.rev.GetRevision() != revs[start+n-1].rev.GetRevision()+1) {
				break
			}
			size += u.size
		}
		batches = append(batches, revs[start:start+n])
		start += n
	}
	for len(batches) > 0 {
		n := min(len(batches), publishInFlight)
		if err := f.publishBatches(ctx, batches[:n]); err != nil {
			return err
		}
		batches = batches[n:]
	}
	return nil
}

func (f *follower) publishBatches(ctx context.Context, batches [][]unsealed) error {
	futures := make([]jetstream.PubAckFuture, 0, len(batches))
	for _, batch := range batches {
		revs := make([]*etcdbackupv1.JournalRevision, len(batch))
		for i, u := range batch {
			revs[i] = u.rev
		}
		data, err := journal.EncodeBatch(revs)
		if err != nil {
			return err
		}
		first, last := revs[0].GetRevision(), revs[len(revs)-1].GetRevision()
		if most := f.o.JS.Conn().MaxPayload(); most > 0 && int64(len(data)) > most {
			return fmt.Errorf("%w: revision %d is %d bytes, the NATS server takes messages of at most %d: raise "+
				"max_payload in its configuration above etcd's --max-request-bytes", ErrRevisionTooLarge, first,
				len(data), most)
		}
		msg := nats.NewMsg(f.subject)
		msg.Data = data
		msg.Header.Set(bus.HeaderContentType, bus.ContentTypeProtobuf)
		ack, err := f.o.JS.PublishMsgAsync(msg, jetstream.WithMsgID(bus.JournalMsgID(f.o.ConfigUID, first, last)))
		if err != nil {
			return fmt.Errorf("publish revisions %d to %d: %w", first, last, err)
		}
		futures = append(futures, ack)
	}
	timeout := time.NewTimer(publishTimeout)
	defer timeout.Stop()
	for i, fut := range futures {
		batch := batches[i]
		first, last := batch[0].rev.GetRevision(), batch[len(batch)-1].rev.GetRevision()
		select {
		case ack := <-fut.Ok():
			for _, u := range batch {
				f.add(u.rev, ack.Sequence, u.size)
			}
			f.o.Metrics.revisions.Add(float64(len(batch)))
			f.o.Metrics.messages.Inc()
		case err := <-fut.Err():
			return fmt.Errorf("publish revisions %d to %d: %w", first, last, err)
		case <-timeout.C:
			return fmt.Errorf("publish revisions %d to %d: no ack within %s", first, last, publishTimeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// publishTimeout bounds the wait for the acks of one flush's messages.
const publishTimeout = 30 * time.Second

// ErrRevisionTooLarge: a revision does not fit in one message of the NATS server.
var ErrRevisionTooLarge = errors.New("revision larger than the bus takes")

// ErrWentBack: etcd's revision is behind what the journal holds of its timeline.
var ErrWentBack = errors.New("etcd went back in time")

// errCompacted: etcd compacted past the revision the watch had to start from.
type errCompacted struct{ from, compacted int64 }

func (e *errCompacted) Error() string {
	return fmt.Sprintf("etcd compacted to revision %d, past %d where the journal resumes", e.compacted, e.from)
}

// follow watches from revision from, publishing and sealing, until ctx ends or it fails.
// A compaction past from starts a new chain after the compact revision, the oldest etcd still
// has, and asks for the full backup it needs (any full backup taken from now on anchors it).
func (f *follower) follow(ctx context.Context, from int64) error {
	tick := time.NewTicker(f.o.SegmentInterval)
	defer tick.Stop()
	for {
		err := f.watch(ctx, from, tick.C)
		var compacted *errCompacted
		if !errors.As(err, &compacted) {
			return err
		}
		f.o.Metrics.gaps.Inc()
		f.o.Log.Warn("journal gap: a new chain starts; asking for a full backup", "namespace", f.o.Namespace,
			"config_uid", f.o.ConfigUID, "err", err)
		f.askFullBackup(ctx, "the journal has a gap: "+err.Error())
		from = compacted.compacted + 1
		f.hashed = time.Time{}
	}
}

func (f *follower) watch(ctx context.Context, from int64, tick <-chan time.Time) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := f.o.Etcd.Watch(wctx, "\x00", clientv3.WithFromKey(), clientv3.WithRev(from), clientv3.WithProgressNotify())
	// linger fires when the outbox's oldest revision has waited PublishLinger.
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	defer linger.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-linger.C:
			if err := f.flush(ctx); err != nil {
				return err
			}
		case <-tick:
			f.sealAndReport(ctx)
			if f.o.Check != nil {
				if err := f.o.Check(ctx); err != nil {
					return err
				}
			}
		case resp, ok := <-wch:
			if !ok {
				return errors.New("etcd's watch ended")
			}
			if resp.CompactRevision != 0 {
				return &errCompacted{from: from, compacted: resp.CompactRevision}
			}
			if err := resp.Err(); err != nil {
				return fmt.Errorf("watch etcd: %w", err)
			}
			revs, err := f.rec.Revisions(ctx, resp.Events)
			if err != nil {
				return err
			}
			if len(revs) == 0 {
				continue
			}
			from = revs[len(revs)-1].GetRevision() + 1
			waiting := len(f.outbox) > 0
			f.receive(revs)
			switch {
			case f.o.PublishLinger <= 0 || f.outboxBytes >= batchBytes:
				linger.Stop()
				if err := f.flush(ctx); err != nil {
					return err
				}
			case !waiting:
				linger.Reset(f.o.PublishLinger)
			}
			if f.bytes >= f.o.SegmentBytes {
				f.sealAndReport(ctx)
			}
		}
	}
}

// sealAndReport seals what waits and updates the config's metrics; a bucket that fails keeps
// the revisions on the bus for the next try.
func (f *follower) sealAndReport(ctx context.Context) {
	if err := f.seal(ctx); err != nil && ctx.Err() == nil {
		f.o.Metrics.segments.WithLabelValues("failed").Inc()
		f.o.Log.Warn("seal a journal segment; the revisions wait on the bus", "namespace", f.o.Namespace,
			"config_uid", f.o.ConfigUID, "revisions", len(f.pending), "err", err)
	}
	behind := 0.0
	if len(f.pending) > 0 {
		behind = time.Since(f.pending[0].rev.GetTime().AsTime()).Seconds()
	}
	f.o.Metrics.behind(f.o.Namespace, f.o.ConfigUID, behind)
	f.refreshAnchor(ctx)
	if last := max(f.sealed[f.o.Timeline.Name], f.last()); f.anchor > 0 && last > f.anchor {
		f.o.Metrics.sinceFull(f.o.Namespace, f.o.ConfigUID, float64(last-f.anchor))
		if f.o.MaxChainRevisions > 0 && last-f.anchor > f.o.MaxChainRevisions {
			f.askFullBackup(ctx, fmt.Sprintf("the chain holds %d revisions since the newest full backup, more than %d",
				last-f.anchor, f.o.MaxChainRevisions))
		}
	}
	if f.o.MaxChainBytes > 0 && f.chainBytes > f.o.MaxChainBytes {
		f.askFullBackup(ctx, fmt.Sprintf("the chain holds %.1f MiB of segments since the newest full backup, "+
			"more than %.1f MiB", float64(f.chainBytes)/(1<<20), float64(f.o.MaxChainBytes)/(1<<20)))
	}
}

// refreshAnchor reads the newest full backup's revision again, at most once a minute (from the
// catalog: a listing, and a HEAD of a backup not seen before): scheduled backups move the
// anchor the chain's length counts from.
func (f *follower) refreshAnchor(ctx context.Context) {
	if time.Since(f.anchorRead) < time.Minute {
		return
	}
	f.anchorRead = time.Now()
	anchor, err := f.o.Catalog.NewestBackupRevision(ctx, f.o.Timeline)
	if err != nil || anchor <= f.anchor {
		return
	}
	f.anchor = anchor
	if n, err := journal.ChainBytes(ctx, f.o.Bucket, f.o.Timeline.Dir(f.o.Prefix), anchor); err == nil {
		f.chainBytes = n
	}
}

// NewCatalog is the catalog of a config's journal and condition: the backups listed at most
// once a minute (the anchor's refresh and the condition share the listing), the segments told
// by the journal, and everything listed whole every 8 to 12 minutes (what retention deleted),
// a time of its own so that the journals of a seed started together do not list together.
func NewCatalog(b destination.Bucket, prefix string) *journal.Catalog {
	relist := 8*time.Minute + rand.N(4*time.Minute)
	return &journal.Catalog{Bucket: b, Prefix: prefix, RelistEvery: relist, BackupsEvery: time.Minute, Fed: true}
}

// askTimeout bounds the wait for the scheduler's answer to a full backup asked for.
const askTimeout = time.Minute

// askFullBackup asks for a full backup, at most every 10 minutes, and goes on following while
// the scheduler answers: a thousand journals that start at once ask a thousand times, and a
// journal waiting for its answer would watch nothing meanwhile.
func (f *follower) askFullBackup(ctx context.Context, reason string) {
	if time.Since(f.asked) < 10*time.Minute || f.o.FullBackup == nil {
		return
	}
	f.asked = time.Now()
	go func() {
		actx, cancel := context.WithTimeout(ctx, askTimeout)
		defer cancel()
		if err := f.o.FullBackup(actx, reason); err != nil && ctx.Err() == nil {
			f.o.Log.Warn("ask for a full backup", "namespace", f.o.Namespace, "config_uid", f.o.ConfigUID, "err", err)
		}
	}()
}

// seal writes what waits into segments, each of consecutive revisions of one timeline and at
// most SegmentBytes (a revision larger than that alone), and purges them from the bus.
func (f *follower) seal(ctx context.Context) error {
	if (!f.relisted || time.Since(f.started) < RelistFor) && len(f.pending) > 0 {
		if err := f.relist(ctx); err != nil {
			return err
		}
	}
	for len(f.pending) > 0 {
		n, size := 1, f.pending[0].size
		for n < len(f.pending) && f.pending[n].rev.GetRevision() == f.pending[n-1].rev.GetRevision()+1 &&
			timelineOf(f.pending[n].rev) == timelineOf(f.pending[n-1].rev) &&
			size+f.pending[n].size <= f.o.SegmentBytes {
			size += f.pending[n].size
			n++
		}
		run := f.pending[:n]
		if err := f.put(ctx, run); err != nil {
			return err
		}
		last := run[n-1]
		f.sealed[timelineOf(last.rev)] = last.rev.GetRevision()
		f.pending = f.pending[n:]
		f.bytes -= size
		f.sealedSeq = last.seq
	}
	f.purge(ctx)
	return nil
}

// RelistFor is how long after a run starts each seal lists the bucket again first (relist): a
// put the replica before had in flight can land after this run's first seal too, when that
// replica lost its session rather than gave the config back.
const RelistFor = 30 * time.Second

// PutTimeout bounds a segment's put, which a stopping run does not cancel: a put cancelled
// mid-way can still be stored by the server after the next holder listed the bucket, and the
// claim is given back only once the run has returned.
const PutTimeout = 30 * time.Second

// relist reads again, before this run's first seal (and each seal of its first RelistFor),
// where each timeline of what waits is
// sealed to, and drops what a segment already holds. The replica that held the config before
// may have had a put in flight when it stopped (given back, or its session lost): the client
// gave up, but the server can still store the segment after this run listed the bucket at its
// start. Its revisions are on the bus too, so without this the first segment of this run
// would hold them again. A late segment starts after every segment listed at the start, so its
// key sorts after theirs: the listing is of the keys after the last one seen.
func (f *follower) relist(ctx context.Context) error {
	listed := map[string]bool{}
	for _, u := range f.pending {
		name := timelineOf(u.rev)
		if listed[name] {
			continue
		}
		listed[name] = true
		last, err := f.listSealed(ctx, name)
		if err != nil {
			return err
		}
		f.sealed[name] = max(f.sealed[name], last)
	}
	kept := f.pending[:0]
	for _, u := range f.pending {
		if u.rev.GetRevision() <= f.sealed[timelineOf(u.rev)] {
			f.bytes -= u.size
			f.sealedSeq = max(f.sealedSeq, u.seq)
			continue
		}
		kept = append(kept, u)
	}
	clear(f.pending[len(kept):])
	f.pending = kept
	f.relisted = true
	return nil
}

// purge removes the sealed revisions from the bus, at most every PurgeEvery: every message
// before the oldest one still carrying an unsealed revision (pending is in stream order), up
// to the last sealed one's. A purge that fails, or that has not come yet when the replica dies,
// leaves sealed revisions on the bus: the next holder drops them (load).
func (f *follower) purge(ctx context.Context) {
	to := f.sealedSeq + 1
	if len(f.pending) > 0 {
		to = min(to, f.pending[0].seq)
	}
	if f.sealedSeq == 0 || to <= f.purgedTo || time.Since(f.purged) < f.o.PurgeEvery {
		return
	}
	if err := f.stream.Purge(ctx, jetstream.WithPurgeSubject(f.subject), jetstream.WithPurgeSequence(to)); err != nil {
		f.o.Log.Warn("purge sealed revisions from the bus", "subject", f.subject, "err", err)
		return
	}
	f.purgedTo, f.purged = to, time.Now()
}

// put stores run as one segment, with the member's HashKV at its last revision when one is due.
func (f *follower) put(ctx context.Context, run []unsealed) error {
	revs := make([]*etcdbackupv1.JournalRevision, len(run))
	for i, u := range run {
		revs[i] = u.rev
	}
	tl, err := journal.ParseTimeline(timelineOf(revs[0]))
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	m, err := journal.Write(&buf, revs, f.o.Seal)
	if err != nil {
		return err
	}
	// The member's hash is the current timeline's: an earlier one's segment has none.
	if tl.Name == f.o.Timeline.Name && (f.hashed.IsZero() || time.Since(f.hashed) >= f.o.HashEvery) {
		resp, err := f.o.Etcd.HashKV(ctx, f.o.Member, m.Last)
		if err == nil {
			m.Hash = &journal.Hash{Revision: m.Last, CompactRevision: resp.CompactRevision, Hash: resp.Hash}
		} else {
			f.o.Log.Warn("HashKV for a journal segment; the next one carries it", "member", f.o.Member,
				"revision", m.Last, "err", err)
		}
	}
	key := journal.Key(tl.Dir(f.o.Prefix), m.First, m.Last)
	// Not cancelled when the run stops: the put ends (stored or failed) before the claim goes.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), PutTimeout)
	defer cancel()
	err = f.o.Bucket.Put(pctx, key, bytes.NewReader(buf.Bytes()), int64(buf.Len()), destination.PutOptions{
		ContentType: backupformat.ContentType, Metadata: m.Map(), IfAbsent: true})
	if err != nil && !errors.Is(err, destination.ErrObjectExists) {
		return fmt.Errorf("put segment %s: %w", key, err)
	}
	f.o.Catalog.Sealed(tl.Dir(f.o.Prefix), journal.Segment{Key: key, First: m.First, Last: m.Last,
		Size: int64(buf.Len())}, m)
	if m.Hash != nil {
		f.hashed = time.Now()
	}
	if tl.Name == f.o.Timeline.Name && m.First > f.anchor {
		f.chainBytes += int64(buf.Len())
	}
	f.o.Metrics.segments.WithLabelValues("ok").Inc()
	f.o.Metrics.segmentBytes.Add(float64(buf.Len()))
	return nil
}
