package bus_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// claimBuckets makes a replica bucket with a TTL of ttl and a claim bucket on srv, and returns
// a way to open them on a connection of its own (a replica).
func claimBuckets(t *testing.T, ttl time.Duration) func() (*bus.Claims, *nats.Conn) {
	t.Helper()
	srv := natstest.RunJetStream(t)
	open := func() (*bus.Claims, *nats.Conn) {
		nc, js := natstest.Connect(t, srv)
		c, err := bus.OpenClaimsIn(t.Context(), js, "REPLICAS", "CLAIMS")
		if err != nil {
			t.Fatal(err)
		}
		return c, nc
	}
	_, js := natstest.Connect(t, srv)
	for _, cfg := range []jetstream.KeyValueConfig{
		{Bucket: "REPLICAS", History: 1, TTL: ttl, Storage: jetstream.MemoryStorage},
		{Bucket: "CLAIMS", History: 1, Storage: jetstream.MemoryStorage},
	} {
		if _, err := js.CreateKeyValue(t.Context(), cfg); err != nil {
			t.Fatal(err)
		}
	}
	return open
}

// One session per name at a time: a claim is seen by the other replicas, refused to them while
// its session lives, given back by release, and taken over only once its session died; the
// dead replica knows before the others can take its claims.
func TestClaims(t *testing.T) {
	const ttl = 2 * time.Second
	open := claimBuckets(t, ttl)
	ca, ncA := open()
	cb, _ := open()
	a, err := ca.Join(t.Context(), "a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := cb.Join(t.Context(), "b")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Leave(t.Context())
	pollFor(t, 5*time.Second, "both replicas seen by each", func() bool { return a.Replicas() == 2 && b.Replicas() == 2 })

	held, release, err := a.Take(t.Context(), "c1", bus.Claim{})
	if err != nil {
		t.Fatal(err)
	}
	pollFor(t, 5*time.Second, "a's claim seen by b", func() bool { return b.Claims()["c1"].Session == a.ID() })
	if _, _, err := b.Take(t.Context(), "c1", bus.Claim{}); !errors.Is(err, bus.ErrHeld) {
		t.Fatalf("b creates a's claim: %v, want ErrHeld", err)
	}
	older := bus.Claim{Session: a.ID(), Revision: b.Claims()["c1"].Revision - 1}
	if _, _, err := b.Take(t.Context(), "c1", older); !errors.Is(err, bus.ErrHeld) {
		t.Fatalf("b replaces a claim it saw at an older revision: %v, want ErrHeld", err)
	}
	if alive, err := b.Alive(t.Context(), a.ID()); err != nil || !alive {
		t.Fatalf("a's session alive: %v, %v", alive, err)
	}
	// A claim's session comes from the bucket: one that is no key is no one's, not an error
	// that would stop every claim pass.
	if alive, err := b.Alive(t.Context(), "not a session *"); err != nil || alive {
		t.Fatalf("a session that is no key alive: %v, %v; want not, and no error", alive, err)
	}
	// Held past several TTLs: one refresh of the session keeps every claim.
	for end := time.Now().Add(2 * ttl); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if held.Err() != nil {
			t.Fatalf("a's claim ended while a lives: %v", context.Cause(held))
		}
	}
	release()
	if held.Err() == nil {
		t.Fatal("a released claim's context goes on")
	}
	pollFor(t, 5*time.Second, "c1 free after release", func() bool { _, ok := b.Claims()["c1"]; return !ok })
	bHeld, bRelease, err := b.Take(t.Context(), "c1", bus.Claim{})
	if err != nil {
		t.Fatalf("b claims a released name: %v", err)
	}

	// b's claim rewritten by another session: b's holder stops.
	pollFor(t, 5*time.Second, "b's claim seen by a", func() bool { return a.Claims()["c1"].Session == b.ID() })
	if _, _, err := a.Take(t.Context(), "c1", a.Claims()["c1"]); err != nil {
		t.Fatal(err)
	}
	pollFor(t, 5*time.Second, "b told its claim was taken", func() bool { return bHeld.Err() != nil })
	if cause := context.Cause(bHeld); !errors.Is(cause, bus.ErrClaimLost) {
		t.Fatalf("b's claim ended with %v, want ErrClaimLost", cause)
	}
	bRelease() // gives back nothing: the claim is a's now
	if got := a.Claims()["c1"].Session; got != a.ID() {
		t.Fatalf("b's release of a claim it lost deleted a's: claim held by %q", got)
	}

	// a dies: its connection goes, so nothing is given back. It knows within three quarters of
	// the TTL; b may take its claim only once its session key is gone, after the TTL.
	aClaim := b.Claims()["c1"]
	ncA.Close()
	died := time.Now()
	pollFor(t, ttl, "a knows it lost its session", func() bool { return a.Err() != nil })
	knew := time.Since(died)
	if cause := a.Err(); !errors.Is(cause, bus.ErrLeaseLost) {
		t.Fatalf("a's session ended with %v, want ErrLeaseLost", cause)
	}
	if alive, err := b.Alive(t.Context(), a.ID()); err != nil || !alive {
		t.Fatalf("a's session key gone %s after a died, when a knew it was lost: before a could know (%v, %v)", knew,
			alive, err)
	}
	pollFor(t, 3*ttl, "a's session ends", func() bool {
		alive, err := b.Alive(t.Context(), a.ID())
		return err == nil && !alive
	})
	gone := time.Since(died)
	if knew >= gone {
		t.Fatalf("a knew it was lost %s after it died, its session ended for the others at %s", knew, gone)
	}
	pollFor(t, 3*ttl, "b sees a gone", func() bool { return b.Replicas() == 1 })
	if _, release, err := b.Take(t.Context(), "c1", aClaim); err != nil {
		t.Fatalf("b takes a dead session's claim: %v", err)
	} else {
		release()
	}
	a.Leave(t.Context())
}

// A replica bucket without a TTL would keep a dead replica's claims forever, a claim bucket
// with one would end a live replica's: both are refused.
func TestClaimBucketsAreChecked(t *testing.T) {
	js := natstest.JetStream(t)
	for _, cfg := range []jetstream.KeyValueConfig{
		{Bucket: "NO_TTL", History: 1, Storage: jetstream.MemoryStorage},
		{Bucket: "TTL", History: 1, TTL: time.Second, Storage: jetstream.MemoryStorage},
	} {
		if _, err := js.CreateKeyValue(t.Context(), cfg); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bus.OpenClaimsIn(t.Context(), js, "NO_TTL", "NO_TTL"); !errors.Is(err, bus.ErrNotAsNeeded) {
		t.Errorf("a replica bucket without a TTL: %v, want ErrNotAsNeeded", err)
	}
	if _, err := bus.OpenClaimsIn(t.Context(), js, "TTL", "TTL"); !errors.Is(err, bus.ErrNotAsNeeded) {
		t.Errorf("a claim bucket with a TTL: %v, want ErrNotAsNeeded", err)
	}
	if _, err := bus.OpenClaimsIn(t.Context(), js, "TTL", "NO_TTL"); err != nil {
		t.Errorf("the buckets as they should be: %v", err)
	}
}

// A rewrite of the session key whose answer did not come in time may have been stored: the
// next rewrite then finds the key at a newer revision. That is no reason to end the session
// (under load every replica would end its own, and every journal stop); a key that is gone is.
func TestASessionRewriteStoredUnansweredKeepsTheSession(t *testing.T) {
	const ttl = 2 * time.Second
	open := claimBuckets(t, ttl)
	c, nc := open()
	s, err := c.Join(t.Context(), "a")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Leave(t.Context())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(t.Context(), "REPLICAS")
	if err != nil {
		t.Fatal(err)
	}
	// Stored behind the session's back, as a rewrite that timed out would be.
	for range 3 {
		if _, err := kv.Put(t.Context(), s.ID(), []byte("a")); err != nil {
			t.Fatal(err)
		}
	}
	stored, err := kv.Get(t.Context(), s.ID())
	if err != nil {
		t.Fatal(err)
	}
	pollFor(t, 2*ttl, "the session rewrites its key after the revisions it did not know", func() bool {
		e, err := kv.Get(t.Context(), s.ID())
		return err == nil && e.Revision() > stored.Revision()
	})
	if err := s.Err(); err != nil {
		t.Fatalf("the session ended: %v", err)
	}
	if err := kv.Purge(t.Context(), s.ID()); err != nil {
		t.Fatal(err)
	}
	pollFor(t, ttl, "a session whose key is gone ends", func() bool { return s.Err() != nil })
	if !errors.Is(s.Err(), bus.ErrLeaseLost) {
		t.Fatalf("ended with %v, want ErrLeaseLost", s.Err())
	}
}
