package bus

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// Ensure creates every stream of the topology and the staging bucket, or updates them to the
// topology's settings. Every service calls it at start-up; it is idempotent.
func Ensure(ctx context.Context, js jetstream.JetStream, t Topology) error {
	for _, cfg := range t.StreamConfigs() {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("ensure stream %s: %w", cfg.Name, err)
		}
	}
	if _, err := js.CreateOrUpdateObjectStore(ctx, t.StagingConfig()); err != nil {
		return fmt.Errorf("ensure object store %s: %w", StagingBucket, err)
	}
	return nil
}

// Consumer creates (or updates) and returns the durable consumer of a service.
func Consumer(ctx context.Context, js jetstream.JetStream, durable string) (jetstream.Consumer, error) {
	stream := StreamOf(durable)
	if stream == "" {
		return nil, fmt.Errorf("consumer %s: no stream is defined for it", durable)
	}
	c, err := js.CreateOrUpdateConsumer(ctx, stream, ConsumerConfig(durable))
	if err != nil {
		return nil, fmt.Errorf("ensure consumer %s on %s: %w", durable, stream, err)
	}
	return c, nil
}
