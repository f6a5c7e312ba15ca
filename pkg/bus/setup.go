package bus

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Ensure creates every stream of the topology and the staging and lease buckets, or updates
// them to the topology's settings. It is idempotent. It is the setup identity's job
// (IdentitySetup, the setup program in the scheduler's image, run as a Job by the deploy and
// by the sandbox): no service may create or change a stream.
func Ensure(ctx context.Context, js jetstream.JetStream, t Topology) error {
	for _, cfg := range t.StreamConfigs() {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("ensure stream %s: %w", cfg.Name, err)
		}
	}
	if _, err := js.CreateOrUpdateObjectStore(ctx, t.StagingConfig()); err != nil {
		return fmt.Errorf("ensure object store %s: %w", StagingBucket, err)
	}
	for _, kv := range []jetstream.KeyValueConfig{t.LeaseConfig(), t.JournalReplicasConfig(),
		t.JournalClaimsConfig()} {
		if _, err := js.CreateOrUpdateKeyValue(ctx, kv); err != nil {
			return fmt.Errorf("ensure key-value bucket %s: %w", kv.Bucket, err)
		}
	}
	return nil
}

var (
	// ErrNotSetUp: a stream or the staging bucket a service needs does not exist yet; the
	// setup has not run. A service waits for it.
	ErrNotSetUp = errors.New("the bus is not set up")
	// ErrNotAsNeeded: a stream exists, but not as this version's services need it (another
	// subject or retention, a message limit, sealed): run the setup of this version. A
	// service does not start.
	ErrNotAsNeeded = errors.New("the bus is not set up as this version needs")
)

// CheckFor checks that the streams id works with (StreamsOf), its durable consumers
// (DurablesOf), and the staging and lease buckets if it works with them, exist as the
// topology needs them: their subjects, retention, duplicate window and discard policy, no
// message limit, not sealed, deletes (but in the lease bucket) and purges allowed; a durable
// that acks every message explicitly. Replicas and sizes are the setup's to choose. It
// changes nothing.
func CheckFor(ctx context.Context, js jetstream.JetStream, t Topology, id Identity) error {
	streams, staging := StreamsOf(id)
	for _, want := range t.StreamConfigs() {
		if !slices.Contains(streams, want.Name) {
			continue
		}
		if err := checkStream(ctx, js, want); err != nil {
			return err
		}
	}
	for _, d := range DurablesOf(id) {
		if _, _, err := Durable(ctx, js, d); err != nil {
			return err
		}
	}
	if staging {
		if err := checkBucket(ctx, js, "staging", StagingBucket, jetstream.StreamConfig{Name: stagingStream, MaxMsgs: -1,
			MaxMsgsPerSubject: -1}); err != nil {
			return err
		}
	}
	if bucket := leaseBucketOf(id); bucket != "" {
		if err := checkBucket(ctx, js, "lease", bucket, jetstream.StreamConfig{Name: "KV_" + bucket, MaxMsgs: -1,
			MaxMsgsPerSubject: 1, DenyDelete: true}); err != nil {
			return err
		}
	}
	if id == IdentityJournal {
		for _, bucket := range []string{JournalReplicasBucket, JournalClaimsBucket} {
			if err := checkBucket(ctx, js, "claim", bucket, jetstream.StreamConfig{Name: "KV_" + bucket, MaxMsgs: -1,
				MaxMsgsPerSubject: 1, DenyDelete: true}); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkBucket checks the stream behind a bucket (an object store's or a key-value bucket's)
// as checkStream does, naming the bucket when it does not exist.
func checkBucket(ctx context.Context, js jetstream.JetStream, what, bucket string, want jetstream.StreamConfig) error {
	err := checkStream(ctx, js, want)
	if errors.Is(err, ErrNotSetUp) {
		return fmt.Errorf("%w: the %s bucket %s does not exist: run the setup (etcdbackup-setup)", ErrNotSetUp, what,
			bucket)
	}
	return err
}

// checkStream compares the stream called want.Name with want, in what the services rely on.
func checkStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig) error {
	s, err := js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("%w: stream %s does not exist: run the setup (etcdbackup-setup)", ErrNotSetUp, want.Name)
	}
	if err != nil {
		return fmt.Errorf("check stream %s: %w", want.Name, err)
	}
	got := s.CachedInfo().Config
	unlimited := func(n int64) int64 { // unset: NATS keeps -1
		if n == 0 {
			return -1
		}
		return n
	}
	want.MaxMsgs, want.MaxMsgsPerSubject = unlimited(want.MaxMsgs), unlimited(want.MaxMsgsPerSubject)
	for _, d := range []struct {
		what      string
		got, want any
		check     bool
	}{
		{"subjects", got.Subjects, want.Subjects, want.Subjects != nil},
		{"retention", got.Retention, want.Retention, want.Subjects != nil},
		{"discard policy", got.Discard, want.Discard, want.Subjects != nil},
		{"duplicate window", got.Duplicates, want.Duplicates, want.Subjects != nil},
		{"message limit", got.MaxMsgs, want.MaxMsgs, true},
		{"message limit per subject", got.MaxMsgsPerSubject, want.MaxMsgsPerSubject, true},
		{"sealed", got.Sealed, false, true},
		{"deny delete", got.DenyDelete, want.DenyDelete, true}, // a key-value bucket's stream denies it
		{"deny purge", got.DenyPurge, false, true},
	} {
		if d.check && fmt.Sprint(d.got) != fmt.Sprint(d.want) {
			return fmt.Errorf("%w: stream %s has %s %v, this version needs %v: run the setup (etcdbackup-setup) of this "+
				"version", ErrNotAsNeeded, want.Name, d.what, d.got, d.want)
		}
	}
	return nil
}

// Durables lists every service's durable consumer.
func Durables() []string {
	return []string{ConsumerStatusWriter, ConsumerSnapshotter, ConsumerUploader, ConsumerPruner, ConsumerDeleter}
}

// DefaultMaxDeliver is each durable's MaxDeliver when the setup is not told otherwise: the
// status writer 50; the snapshotter 5 (3 attempts and 2 more to report the failure); the
// uploader Unlimited (it gives up when the staged copy is about to expire); the pruner's two
// 100.
func DefaultMaxDeliver() map[string]int {
	return map[string]int{ConsumerStatusWriter: 50, ConsumerSnapshotter: 5, ConsumerUploader: Unlimited,
		ConsumerPruner: 100, ConsumerDeleter: 100}
}

// EnsureDurables creates or updates every service's durable consumer with its MaxDeliver
// (DefaultMaxDeliver for one maxDeliver does not name): the setup identity's job.
func EnsureDurables(ctx context.Context, js jetstream.JetStream, maxDeliver map[string]int) error {
	for _, d := range Durables() {
		n, ok := maxDeliver[d]
		if !ok {
			n = DefaultMaxDeliver()[d]
		}
		if _, err := Consumer(ctx, js, d, n); err != nil {
			return err
		}
	}
	return nil
}

// Durable binds to a service's durable consumer, which the setup created, and returns it with
// its MaxDeliver (Unlimited for none): a service reads its consumer, it never changes it.
func Durable(ctx context.Context, js jetstream.JetStream, durable string) (jetstream.Consumer, int, error) {
	stream := StreamOf(durable)
	if stream == "" {
		return nil, 0, fmt.Errorf("consumer %s: no stream is defined for it", durable)
	}
	c, err := js.Consumer(ctx, stream, durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, 0, fmt.Errorf("%w: consumer %s on %s does not exist: run the setup (etcdbackup-setup)", ErrNotSetUp,
			durable, stream)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("bind consumer %s on %s: %w", durable, stream, err)
	}
	cfg := c.CachedInfo().Config
	if cfg.AckPolicy != jetstream.AckExplicitPolicy || cfg.FilterSubject != "" || len(cfg.FilterSubjects) > 0 {
		return nil, 0, fmt.Errorf("%w: consumer %s on %s acks %v, filters %q %v; this version needs explicit acks of every "+
			"message: run the setup (etcdbackup-setup) of this version", ErrNotAsNeeded, durable, stream, cfg.AckPolicy,
			cfg.FilterSubject, cfg.FilterSubjects)
	}
	if cfg.MaxDeliver < 1 {
		return c, Unlimited, nil
	}
	return c, cfg.MaxDeliver, nil
}

// Unlimited is a consumer's maxDeliver that bounds nothing: the handler gives up itself
// (Outcome.Window).
const Unlimited = -1

// Consumer creates (or updates) and returns the durable consumer of a service. maxDeliver
// bounds its deliveries of one message (at least 1, or Unlimited); the last one is a dead
// letter (Typed).
func Consumer(ctx context.Context, js jetstream.JetStream, durable string, maxDeliver int) (jetstream.Consumer, error) {
	stream := StreamOf(durable)
	if stream == "" {
		return nil, fmt.Errorf("consumer %s: no stream is defined for it", durable)
	}
	if maxDeliver < 1 && maxDeliver != Unlimited {
		return nil, fmt.Errorf("consumer %s: max deliveries must be at least 1 (or Unlimited), got %d", durable,
			maxDeliver)
	}
	c, err := js.CreateOrUpdateConsumer(ctx, stream, ConsumerConfig(durable, maxDeliver))
	if err != nil {
		return nil, fmt.Errorf("ensure consumer %s on %s: %w", durable, stream, err)
	}
	return c, nil
}

// MaxPublishPending bounds the asynchronous publishes one connection has in flight. The
// object store puts a staged snapshot as asynchronous publishes of ChunkSize chunks; nats.go's
// default (4000 in flight, 2 GB of 512 KiB chunks) overflows a stream's 128 MiB ingest queue
// as soon as the server is slower than the client — as it is when it fsyncs every write
// (sync_interval: always) — and the put fails with "429 too many requests". 32 chunks, 16 MiB,
// keep a server busy while leaving room for several puts at once.
const MaxPublishPending = 32

// NewJetStream returns the JetStream client every service uses on nc.
func NewJetStream(nc *nats.Conn) (jetstream.JetStream, error) {
	return jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(MaxPublishPending))
}
