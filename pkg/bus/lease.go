package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/progress"
	"github.com/nats-io/nats.go/jetstream"
)

// LeaseBucket is the JetStream key-value bucket of leases: one key per cluster whose snapshot
// is being taken, so that every snapshotter replica together takes one snapshot of a cluster
// at a time. The setup creates it (Topology.LeaseConfig); its TTL ends the lease of a holder
// that died.
const LeaseBucket = "ETCDBACKUP_LEASES"

// leaseStream is the stream behind the lease bucket.
const leaseStream = "KV_" + LeaseBucket

// LeaseTTL is how long a lease outlives its holder's last refresh; a holder refreshes it every
// third of it.
const LeaseTTL = 30 * time.Second

// LeaseConfig returns the configuration of the lease bucket: one revision per key, each key
// gone LeaseTTL after its last write.
func (t Topology) LeaseConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      LeaseBucket,
		Description: "one snapshot of a cluster at a time: the holder of each cluster's lease",
		History:     1,
		TTL:         LeaseTTL,
		Storage:     t.Storage,
		Replicas:    t.Replicas,
	}
}

// Leases hands out leases on names (a cluster's) from the lease bucket: one holder at a time
// across every replica, held while the holder refreshes it, and ended by the bucket's TTL when
// the holder dies without releasing it.
type Leases struct {
	kv  jetstream.KeyValue
	ttl time.Duration
}

// OpenLeases binds to the lease bucket, which the setup created; its TTL is the leases'.
func OpenLeases(ctx context.Context, js jetstream.JetStream) (*Leases, error) {
	return openLeases(ctx, js, LeaseBucket)
}

func openLeases(ctx context.Context, js jetstream.JetStream, bucket string) (*Leases, error) {
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("open lease bucket %s: %w", bucket, err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("lease bucket %s: %w", bucket, err)
	}
	if st.TTL() <= 0 {
		return nil, fmt.Errorf("%w: lease bucket %s has no TTL: a dead holder's lease would never end", ErrNotAsNeeded,
			bucket)
	}
	return &Leases{kv: kv, ttl: st.TTL()}, nil
}

// HeldError says a lease is another's: Holder is what that holder said it does.
type HeldError struct {
	Name, Holder string
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("%s is held by %s", e.Name, e.Holder)
}

// ErrLeaseLost ends the context of a lease its holder could not refresh within the TTL: another
// may hold it now.
var ErrLeaseLost = errors.New("lease lost")

// Acquire takes the lease on name (a valid key: letters, digits, '-', '_', '.', '/', '=') for
// holder, a description of what it is held for. It returns a context derived from ctx that
// ends (cause ErrLeaseLost) if the lease is lost, and release, which gives it back. A lease
// someone else holds is a *HeldError.
func (l *Leases) Acquire(ctx context.Context, name, holder string) (context.Context, func(), error) {
	held, release, err := l.TryAcquire(ctx, name, holder)
	if errors.Is(err, ErrHeld) {
		by := "another replica"
		if e, gerr := l.kv.Get(ctx, name); gerr == nil {
			by = string(e.Value())
		}
		return nil, nil, &HeldError{Name: name, Holder: by}
	}
	return held, release, err
}

// ErrHeld: TryAcquire found the lease held by another.
var ErrHeld = errors.New("lease held by another")

// TryAcquire is Acquire in one round trip: a lease someone else holds is ErrHeld, without
// reading who holds it.
func (l *Leases) TryAcquire(ctx context.Context, name, holder string) (context.Context, func(), error) {
	rev, err := l.kv.Create(ctx, name, []byte(holder))
	if errors.Is(err, jetstream.ErrKeyExists) {
		return nil, nil, fmt.Errorf("%w: %s", ErrHeld, name)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("take lease %s: %w", name, err)
	}
	held, lost := context.WithCancelCause(ctx)
	// Rewritten every third of the TTL; taken over, or not rewritten for a whole TTL, it is
	// lost, and so is the holder's context. rev and last change only in the refresh's
	// goroutine, which stop waits for.
	last := time.Now()
	stop := progress.Every(held, l.ttl/3, func() {
		next, err := l.kv.Update(held, name, []byte(holder), rev)
		switch {
		case err == nil:
			rev, last = next, time.Now()
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch), errors.Is(err, jetstream.ErrKeyNotFound):
			lost(fmt.Errorf("%w: %s was taken over: %w", ErrLeaseLost, name, err))
		case time.Since(last) >= l.ttl:
			lost(fmt.Errorf("%w: %s not refreshed for %s: %w", ErrLeaseLost, name, l.ttl, err))
		}
	})
	release := func() {
		stop()
		lost(nil)
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		// Only this holder's revision: a lease taken over meanwhile stays its new holder's.
		_ = l.kv.Delete(dctx, name, jetstream.LastRevision(rev))
	}
	return held, release, nil
}
