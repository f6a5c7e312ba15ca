package journal

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"go.etcd.io/etcd/pkg/v3/traceutil"
	"go.etcd.io/etcd/server/v3/lease"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.uber.org/zap"
)

// UnknownLeaseTTL is the TTL a replay grants a lease the journal could not ask about (it was
// gone when asked; its keys' deletion follows in a later revision).
const UnknownLeaseTTL = 60

// ErrDiverged is returned (wrapped) when a replay does not do what the journal recorded: a
// revision that does not follow, a deletion of a key that is not there, or a HashKV that
// differs. The database it built is not the source's, and nothing may be restored from it.
var ErrDiverged = errors.New("replay diverged from the journal")

// Replay rebuilds etcd's database at a later revision from a snapshot's, in place: each
// journal revision becomes one write transaction of etcd's own storage (mvcc), so that every
// key's revision, create revision, version and lease are what the source's were, and
// HashKV, computed the way the etcd server computes it, proves it.
//
// Leases: the snapshot's leases stay as they were in it; a lease the journal saw keys attached
// to is granted with the TTL the journal recorded (UnknownLeaseTTL when none), so that the
// database holds what a snapshot taken at the target holds, and etcd restarts every lease's
// TTL when it starts from it, as after any snapshot restore. A lease the source revoked after
// the snapshot has no keys left (their deletion is in the journal) and ends its TTL after the
// restore. The replay's lessor never expires a lease: nothing but the journal changes the data.
type Replay struct {
	be backend.Backend
	le lease.Lessor
	kv mvcc.KV
	// base is the snapshot's revision.
	base int64
	// closed makes Close once; closeErr is what it returned.
	closed   sync.Once
	closeErr error
}

// OpenReplay opens the etcd database (a snapshot without etcd's trailing hash: StripHash)
// at path for a replay.
func OpenReplay(path string) (*Replay, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	lg := zap.NewNop()
	cfg := backend.DefaultBackendConfig(lg)
	cfg.Path = path
	// The database is written once, by Snapshot, when the replay is done and proven: nothing
	// needs to be on disk before that. Larger batches make fewer bbolt commits.
	cfg.UnsafeNoFsync = true
	cfg.BatchLimit = 100_000
	cfg.BatchInterval = time.Second
	be := backend.New(cfg)
	le := lease.NewLessor(lg, be, nil, lease.LessorConfig{})
	kv := mvcc.NewStore(lg, be, le, mvcc.StoreConfig{CompactionBatchLimit: 10_000,
		CompactionSleepInterval: time.Microsecond})
	return &Replay{be: be, le: le, kv: kv, base: kv.Rev()}, nil
}

// Base is the revision of the snapshot the replay started from.
func (r *Replay) Base() int64 { return r.base }

// Revision is the database's revision now.
func (r *Replay) Revision() int64 { return r.kv.Rev() }

// Apply makes rev, the revision that follows the database's, as one transaction. A revision
// the database already holds (the snapshot was taken after it) is skipped.
func (r *Replay) Apply(rev *etcdbackupv1.JournalRevision) error {
	cur := r.kv.Rev()
	if rev.GetRevision() <= cur {
		return nil
	}
	if rev.GetRevision() != cur+1 {
		return fmt.Errorf("%w: the database is at revision %d and the journal's next is %d: revisions %d to %d are "+
			"missing", ErrDiverged, cur, rev.GetRevision(), cur+1, rev.GetRevision()-1)
	}
	for _, l := range rev.GetLeases() {
		if err := r.grant(l.GetId(), l.GetTtlSeconds()); err != nil {
			return err
		}
	}
	for _, e := range rev.GetEvents() {
		if e.GetLease() != 0 {
			if err := r.grant(e.GetLease(), UnknownLeaseTTL); err != nil {
				return err
			}
		}
	}
	var missing []string
	txn := r.kv.Write(traceutil.TODO())
	for _, e := range rev.GetEvents() {
		if e.GetDelete() {
			if n, _ := txn.DeleteRange(e.GetKey(), nil); n != 1 {
				missing = append(missing, string(e.GetKey()))
			}
			continue
		}
		txn.Put(e.GetKey(), e.GetValue(), lease.LeaseID(e.GetLease()))
	}
	txn.End()
	if len(missing) > 0 {
		return fmt.Errorf("%w: revision %d deletes %q, which the database does not hold", ErrDiverged,
			rev.GetRevision(), missing)
	}
	if got := r.kv.Rev(); got != rev.GetRevision() {
		return fmt.Errorf("%w: revision %d made the database's revision %d", ErrDiverged, rev.GetRevision(), got)
	}
	return nil
}

// grant grants lease id unless the database holds it already. ttl 0: UnknownLeaseTTL.
func (r *Replay) grant(id, ttl int64) error {
	if r.le.Lookup(lease.LeaseID(id)) != nil {
		return nil
	}
	if ttl <= 0 {
		ttl = UnknownLeaseTTL
	}
	if _, err := r.le.Grant(lease.LeaseID(id), ttl); err != nil {
		return fmt.Errorf("grant lease %d: %w", id, err)
	}
	return nil
}

// Check compares the database with a HashKV the journal recorded at the database's revision: it
// compacts to the hash's compact revision first (HashKV covers history from it) and computes
// HashKV as the etcd server does. A difference wraps ErrDiverged.
func (r *Replay) Check(h Hash) error {
	if cur := r.kv.Rev(); cur != h.Revision {
		return fmt.Errorf("the database is at revision %d, the hash is at %d", cur, h.Revision)
	}
	done, err := r.kv.Compact(traceutil.TODO(), h.CompactRevision)
	switch {
	case errors.Is(err, mvcc.ErrCompacted):
		// Compacted that far already: by an earlier hash, or in the snapshot.
	case err != nil:
		return fmt.Errorf("compact to revision %d: %w", h.CompactRevision, err)
	default:
		<-done
	}
	got, _, err := r.kv.HashStorage().HashByRev(h.Revision)
	if err != nil {
		return fmt.Errorf("HashKV at revision %d: %w", h.Revision, err)
	}
	if got.Hash != h.Hash || got.CompactRevision != h.CompactRevision {
		return fmt.Errorf("%w: HashKV at revision %d is %d (compacted to %d); the source's was %d (compacted to %d)",
			ErrDiverged, h.Revision, got.Hash, got.CompactRevision, h.Hash, h.CompactRevision)
	}
	return nil
}

// WriteSnapshot writes the database as an etcd snapshot to w: the database, then its sha256,
// as etcd's own snapshots end, so that etcdutl restores it like any other. It returns the
// snapshot's size and that trailing hash, hex.
func (r *Replay) WriteSnapshot(w io.Writer) (int64, string, error) {
	r.kv.Commit()
	h := sha256.New()
	snap := r.be.Snapshot()
	n, err := snap.WriteTo(io.MultiWriter(w, h))
	if cerr := snap.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, "", err
	}
	sum := h.Sum(nil)
	if _, err := w.Write(sum); err != nil {
		return 0, "", err
	}
	return n + int64(len(sum)), hex.EncodeToString(sum), nil
}

// Close closes the database; a second Close returns the first one's error.
func (r *Replay) Close() error {
	r.closed.Do(func() {
		r.le.Stop()
		r.closeErr = errors.Join(r.kv.Close(), r.be.Close())
	})
	return r.closeErr
}

// StripHash removes etcd's trailing sha256 from the snapshot file at path, leaving the
// database bbolt opens. A snapshot without one (a database copied from a data directory) is
// left as it is.
func StripHash(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.Size()%512 != sha256.Size {
		return nil
	}
	return os.Truncate(path, st.Size()-sha256.Size)
}
