package bus_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/natstest"
	"github.com/nats-io/nats.go/jetstream"
)

// poll waits for cond until the deadline.
func pollFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
	}
}

// One holder of a name at a time: a lease is held while its holder lives (refreshed past the
// bucket's TTL), is free once released, ends by the TTL when its holder died without giving it
// back, and a holder whose lease was taken over is told (its context ends, ErrLeaseLost).
func TestLeases(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := natstest.JetStream(t)
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "LEASES", History: 1, TTL: time.Second,
		Storage: jetstream.MemoryStorage})
	if err != nil {
		t.Fatal(err)
	}
	l, err := bus.OpenLeasesIn(ctx, js, "LEASES")
	if err != nil {
		t.Fatal(err)
	}
	held, release, err := l.Acquire(ctx, "c1", "backup a")
	if err != nil {
		t.Fatal(err)
	}
	taken := func(name string) error {
		_, rel, err := l.Acquire(ctx, name, "backup b")
		if err == nil {
			rel()
		}
		return err
	}
	// Held for three TTLs: the holder refreshes it.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		var h *bus.HeldError
		if err := taken("c1"); !errors.As(err, &h) || h.Holder != "backup a" {
			t.Fatalf("a held lease, taken again: %v, want held by backup a", err)
		}
		if _, _, err := l.TryAcquire(ctx, "c1", "backup b"); !errors.Is(err, bus.ErrHeld) {
			t.Fatalf("a held lease, tried: %v, want ErrHeld", err)
		}
	}
	if held.Err() != nil {
		t.Fatalf("the holder's context ended while it held the lease: %v", context.Cause(held))
	}
	if err := taken("c2"); err != nil {
		t.Fatalf("another name's lease: %v", err)
	}
	release()
	if err := taken("c1"); err != nil {
		t.Fatalf("a released lease: %v", err)
	}

	// A holder that died (wrote its lease, never refreshes): free after the TTL.
	if _, err := kv.Create(ctx, "c3", []byte("a dead replica")); err != nil {
		t.Fatal(err)
	}
	if err := taken("c3"); err == nil {
		t.Fatal("a dead holder's lease was taken at once")
	}
	pollFor(t, 10*time.Second, "a dead holder's lease ends", func() bool { return taken("c3") == nil })

	// A lease taken over behind its holder's back: the holder's context ends.
	held, release, err = l.Acquire(ctx, "c4", "backup a")
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if _, err := kv.Put(ctx, "c4", []byte("an intruder")); err != nil {
		t.Fatal(err)
	}
	pollFor(t, 5*time.Second, "the holder learns its lease was taken over", func() bool {
		return errors.Is(context.Cause(held), bus.ErrLeaseLost)
	})
}
