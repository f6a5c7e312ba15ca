package bus

import (
	"context"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Ensure creates every stream of the topology and the staging bucket, or updates them to the
// topology's settings. It is idempotent; tests and tools with full rights use it.
func Ensure(ctx context.Context, js jetstream.JetStream, t Topology) error {
	var all []string
	for _, cfg := range t.StreamConfigs() {
		all = append(all, cfg.Name)
	}
	return ensure(ctx, js, t, all, true)
}

// EnsureFor creates or updates the streams an identity works with (StreamsOf), and the
// staging bucket if it works with that. Every service calls it at start-up, so they may start
// in any order; its NATS permissions allow exactly these streams.
func EnsureFor(ctx context.Context, js jetstream.JetStream, t Topology, id Identity) error {
	streams, staging := StreamsOf(id)
	return ensure(ctx, js, t, streams, staging)
}

func ensure(ctx context.Context, js jetstream.JetStream, t Topology, streams []string, staging bool) error {
	for _, cfg := range t.StreamConfigs() {
		if !slices.Contains(streams, cfg.Name) {
			continue
		}
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("ensure stream %s: %w", cfg.Name, err)
		}
	}
	if staging {
		if _, err := js.CreateOrUpdateObjectStore(ctx, t.StagingConfig()); err != nil {
			return fmt.Errorf("ensure object store %s: %w", StagingBucket, err)
		}
	}
	return nil
}

// Consumer creates (or updates) and returns the durable consumer of a service. maxDeliver
// bounds its deliveries of one message (at least 1); the last one is a dead letter (Typed).
func Consumer(ctx context.Context, js jetstream.JetStream, durable string, maxDeliver int) (jetstream.Consumer, error) {
	stream := StreamOf(durable)
	if stream == "" {
		return nil, fmt.Errorf("consumer %s: no stream is defined for it", durable)
	}
	if maxDeliver < 1 {
		return nil, fmt.Errorf("consumer %s: max deliveries must be at least 1, got %d", durable, maxDeliver)
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
