package bus_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/natstest"
)

// A service checks, and never changes, the streams it works with: missing ones (the setup has
// not run) are ErrNotSetUp, which it waits out; a stream changed behind its back — the status
// stream limited to 7 messages, or sealed, as a stolen key could once do — is ErrNotAsNeeded,
// which stops its start with the reason. After the setup, every service's check passes.
func TestServicesCheckWhatTheSetupCreated(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := natstest.JetStream(t)
	topo := testTopology()
	if err := bus.CheckFor(ctx, js, topo, bus.IdentityScheduler); !errors.Is(err, bus.ErrNotSetUp) {
		t.Fatalf("check before the setup = %v, want ErrNotSetUp", err)
	}
	if err := bus.Ensure(ctx, js, topo); err != nil {
		t.Fatal(err)
	}
	if err := bus.CheckFor(ctx, js, topo, bus.IdentityUploader); !errors.Is(err, bus.ErrNotSetUp) {
		t.Fatalf("check before the durables exist = %v, want ErrNotSetUp", err)
	}
	if err := bus.EnsureDurables(ctx, js, nil); err != nil {
		t.Fatal(err)
	}
	if _, n, err := bus.Durable(ctx, js, bus.ConsumerUploader); err != nil || n != bus.Unlimited {
		t.Fatalf("the uploader's durable: max deliver %d, %v; want Unlimited", n, err)
	}
	if _, n, err := bus.Durable(ctx, js, bus.ConsumerStatusWriter); err != nil || n != 50 {
		t.Fatalf("the status writer's durable: max deliver %d, %v; want 50", n, err)
	}
	for _, id := range []bus.Identity{bus.IdentityScheduler, bus.IdentitySnapshotter, bus.IdentityUploader,
		bus.IdentityPruner, bus.IdentityRestorer, bus.IdentityJournal} {
		if err := bus.CheckFor(ctx, js, topo, id); err != nil {
			t.Fatalf("%s checks after the setup: %v", id, err)
		}
	}
	var status jetstream.StreamConfig
	for _, cfg := range topo.StreamConfigs() {
		if cfg.Name == bus.StreamStatus {
			status = cfg
		}
	}
	status.MaxMsgs = 7
	if _, err := js.UpdateStream(ctx, status); err != nil {
		t.Fatal(err)
	}
	if err := bus.CheckFor(ctx, js, topo, bus.IdentityRestorer); !errors.Is(err, bus.ErrNotAsNeeded) {
		t.Fatalf("check of a status stream limited to 7 messages = %v, want ErrNotAsNeeded", err)
	}
	if err := bus.Ensure(ctx, js, topo); err != nil { // the setup puts it right
		t.Fatal(err)
	}
	if err := bus.CheckFor(ctx, js, topo, bus.IdentityRestorer); err != nil {
		t.Fatalf("check after the setup ran again: %v", err)
	}
	status.MaxMsgs, status.Sealed = 0, true
	if _, err := js.UpdateStream(ctx, status); err != nil {
		t.Fatal(err)
	}
	if err := bus.CheckFor(ctx, js, topo, bus.IdentityScheduler); !errors.Is(err, bus.ErrNotAsNeeded) {
		t.Fatalf("check of a sealed status stream = %v, want ErrNotAsNeeded", err)
	}
}
