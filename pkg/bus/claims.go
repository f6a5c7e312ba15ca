package bus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Claims shares names (the journal's continuous configs) among replicas, one holder at a time,
// at a cost that does not grow with the names held: a replica joins with one session key in a
// bucket with a TTL (JournalReplicasBucket), refreshed every fifth of it, and claims a name by
// writing its session's ID under the name in a bucket without one (JournalClaimsBucket). A
// claim lasts while its session does: a replica that dies stops refreshing its session key,
// which the bucket's TTL ends, and any other replica may then take its claims over, each with
// a compare-and-set on the claim's revision, so one replica wins. A replica holding a thousand
// names writes one key every two seconds, not a thousand.
//
// Both buckets are watched, so a replica knows who claims what and how many replicas live
// without asking the server each time.
type Claims struct {
	replicas, claims jetstream.KeyValue
	ttl              time.Duration
}

// OpenJournalClaims binds to the journal's two claim buckets, which the setup created.
func OpenJournalClaims(ctx context.Context, js jetstream.JetStream) (*Claims, error) {
	return OpenClaimsIn(ctx, js, JournalReplicasBucket, JournalClaimsBucket)
}

// OpenClaimsIn binds to the replica bucket (with a TTL) and the claim bucket (without) named.
func OpenClaimsIn(ctx context.Context, js jetstream.JetStream, replicas, claims string) (*Claims, error) {
	rkv, err := js.KeyValue(ctx, replicas)
	if err != nil {
		return nil, fmt.Errorf("open replica bucket %s: %w", replicas, err)
	}
	st, err := rkv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("replica bucket %s: %w", replicas, err)
	}
	if st.TTL() <= 0 {
		return nil, fmt.Errorf("%w: replica bucket %s has no TTL: a dead replica's claims would never end",
			ErrNotAsNeeded, replicas)
	}
	ckv, err := js.KeyValue(ctx, claims)
	if err != nil {
		return nil, fmt.Errorf("open claim bucket %s: %w", claims, err)
	}
	cst, err := ckv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("claim bucket %s: %w", claims, err)
	}
	if cst.TTL() > 0 {
		return nil, fmt.Errorf("%w: claim bucket %s has a TTL: a live replica's claims would end under it",
			ErrNotAsNeeded, claims)
	}
	return &Claims{replicas: rkv, claims: ckv, ttl: st.TTL()}, nil
}

// TTL is how long a session outlives its replica's last refresh.
func (c *Claims) TTL() time.Duration { return c.ttl }

// Claim is a name's claim: the session holding it, and the revision that wrote it.
type Claim struct {
	Session  string
	Revision uint64
}

// Session is one replica's membership. Its context ends (cause ErrLeaseLost) when the session
// is lost: not refreshed for three quarters of the TTL (before the bucket can end it and
// another replica take its claims), or its key gone or rewritten; the replica then stops
// everything it claimed and may join again with a new session.
type Session struct {
	c        *Claims
	id       string
	holder   string
	ctx      context.Context
	lost     context.CancelCauseFunc
	stopped  chan struct{}
	mu       sync.Mutex
	view     map[string]Claim
	seen     map[string]time.Time // replicas' sessions, when last written
	held     map[string]held
	watchers []jetstream.KeyWatcher
}

type held struct {
	rev    uint64
	cancel context.CancelCauseFunc
}

// ErrClaimLost ends the context of a claim another session wrote or deleted.
var ErrClaimLost = errors.New("claim lost")

// Join starts a session for holder (a description: the replica's host name; the session's ID
// is it and a random suffix, so a restarted replica never reuses a dead one's). It returns
// once both buckets have been read.
func (c *Claims) Join(ctx context.Context, holder string) (*Session, error) {
	var b [4]byte
	_, _ = rand.Read(b[:])
	id := holder + "-" + hex.EncodeToString(b[:])
	sent := time.Now()
	rev, err := c.replicas.Create(ctx, id, []byte(holder))
	if err != nil {
		return nil, fmt.Errorf("join as %s: %w", id, err)
	}
	sctx, lost := context.WithCancelCause(ctx)
	s := &Session{c: c, id: id, holder: holder, ctx: sctx, lost: lost, stopped: make(chan struct{}),
		view: map[string]Claim{}, seen: map[string]time.Time{}, held: map[string]held{}}
	go s.refresh(sctx, rev, sent)
	claims, err := c.claims.WatchAll(sctx)
	if err != nil {
		s.Leave(ctx)
		return nil, fmt.Errorf("watch the claims: %w", err)
	}
	replicas, err := c.replicas.WatchAll(sctx)
	if err != nil {
		_ = claims.Stop()
		s.Leave(ctx)
		return nil, fmt.Errorf("watch the replicas: %w", err)
	}
	s.watchers = []jetstream.KeyWatcher{claims, replicas}
	ready := make(chan struct{}, 2)
	go s.watch("claims", claims, ready, s.claimed)
	go s.watch("replicas", replicas, ready, s.replica)
	for range 2 {
		select {
		case <-ready:
		case <-sctx.Done():
			s.Leave(ctx)
			return nil, fmt.Errorf("read the claims: %w", context.Cause(sctx))
		}
	}
	return s, nil
}

// ID is the session's ID, what its claims hold.
func (s *Session) ID() string { return s.id }

// Done is closed when the session is lost or left; Err then says why.
func (s *Session) Done() <-chan struct{} { return s.ctx.Done() }

// Err is why the session ended (nil while it lasts).
func (s *Session) Err() error {
	if s.ctx.Err() == nil {
		return nil
	}
	return context.Cause(s.ctx)
}

// refresh rewrites the session key every fifth of the TTL. The session is lost when the key
// is gone, or when no rewrite succeeded for three quarters of the TTL, counted from when the
// last good one was sent (no later than the server wrote it): the replica knows before the
// TTL can end the key and another replica take its claims. A rewrite whose answer did not
// come in time may have been stored all the same: the next one then finds the key at a newer
// revision, which, as nobody else writes this session's key, it takes for its own.
func (s *Session) refresh(ctx context.Context, rev uint64, last time.Time) {
	defer close(s.stopped)
	every := s.c.ttl / 5
	t := time.NewTimer(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		deadline := last.Add(s.c.ttl * 3 / 4)
		if !time.Now().Before(deadline) {
			s.lost(fmt.Errorf("%w: session %s not refreshed for %s", ErrLeaseLost, s.id,
				time.Since(last).Round(time.Millisecond)))
			return
		}
		sent := time.Now()
		uctx, cancel := context.WithDeadline(ctx, deadline)
		next, err := s.c.replicas.Update(uctx, s.id, []byte(s.holder), rev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			var e jetstream.KeyValueEntry
			if e, err = s.c.replicas.Get(uctx, s.id); err == nil {
				rev = e.Revision()
				err = errRetry
			}
		}
		cancel()
		switch {
		case err == nil:
			rev, last = next, sent
			t.Reset(every)
		case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
			s.lost(fmt.Errorf("%w: session %s ended: %w", ErrLeaseLost, s.id, err))
			return
		default:
			// Retried at once after a revision was read, soon after a failure, and the deadline is
			// checked first.
			t.Reset(min(every/10, time.Until(deadline)))
			if errors.Is(err, errRetry) {
				t.Reset(0)
			}
		}
	}
}

// errRetry: the session key was read again, and is rewritten at once.
var errRetry = errors.New("rewrite again")

// watch applies a watcher's entries to the session's view; the initial values read, it says
// so on ready. A watcher that stops loses the session: its view would go stale.
func (s *Session) watch(what string, w jetstream.KeyWatcher, ready chan<- struct{},
	apply func(jetstream.KeyValueEntry)) {
	for e := range w.Updates() {
		if e == nil {
			ready <- struct{}{}
			continue
		}
		apply(e)
	}
	s.lost(fmt.Errorf("%w: the watch of the %s ended", ErrLeaseLost, what))
}

func (s *Session) claimed(e jetstream.KeyValueEntry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := e.Key()
	if e.Operation() != jetstream.KeyValuePut {
		delete(s.view, key)
	} else {
		s.view[key] = Claim{Session: string(e.Value()), Revision: e.Revision()}
	}
	// A name this session holds, written or deleted by another since: its holder stops.
	if h, ok := s.held[key]; ok && e.Revision() > h.rev {
		delete(s.held, key)
		by := "deleted"
		if e.Operation() == jetstream.KeyValuePut {
			by = "taken by " + string(e.Value())
		}
		h.cancel(fmt.Errorf("%w: %s %s", ErrClaimLost, key, by))
	}
}

func (s *Session) replica(e jetstream.KeyValueEntry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		delete(s.seen, e.Key())
		return
	}
	s.seen[e.Key()] = time.Now()
}

// Claims is who claims what, as last watched.
func (s *Session) Claims() map[string]Claim {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.view)
}

// Replicas is how many sessions were written within the TTL: the live replicas, this one
// among them.
func (s *Session) Replicas() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for id, at := range s.seen {
		if id == s.id || time.Since(at) < s.c.ttl {
			n++
		}
	}
	return max(n, 1)
}

// Alive says whether session id lives: written within the TTL as watched, or else its key
// still there, as the server says (a claim is taken over only on the server's word).
func (s *Session) Alive(ctx context.Context, id string) (bool, error) {
	s.mu.Lock()
	at, seen := s.seen[id]
	s.mu.Unlock()
	if id == s.id || seen && time.Since(at) < s.c.ttl {
		return true, nil
	}
	_, err := s.c.replicas.Get(ctx, id)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted),
		// A claim naming no session that could exist (the bucket holds what it holds) is no one's.
		errors.Is(err, jetstream.ErrInvalidKey):
		return false, nil
	}
	return false, fmt.Errorf("is session %s alive: %w", id, err)
}

// Take claims name for the session: was is its claim as last seen (zero: none), which Take
// replaces only if it is still the one there. The caller takes another session's claim only
// once that session is dead (Alive). It returns a context that ends when the claim is lost
// (the session lost, or the claim written by another) and release, which gives the claim
// back; a claim that is no longer was is ErrHeld.
func (s *Session) Take(ctx context.Context, name string, was Claim) (context.Context, func(), error) {
	var rev uint64
	var err error
	if was.Revision == 0 {
		rev, err = s.c.claims.Create(ctx, name, []byte(s.id))
	} else {
		rev, err = s.c.claims.Update(ctx, name, []byte(s.id), was.Revision)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return nil, nil, fmt.Errorf("%w: %s", ErrHeld, name)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("claim %s: %w", name, err)
	}
	cctx, cancel := context.WithCancelCause(s.ctx)
	s.mu.Lock()
	s.held[name] = held{rev: rev, cancel: cancel}
	// Written by another between the write and now: the watch has told already.
	if c, ok := s.view[name]; ok && c.Revision > rev {
		delete(s.held, name)
		cancel(fmt.Errorf("%w: %s taken by %s", ErrClaimLost, name, c.Session))
	}
	s.mu.Unlock()
	release := func() {
		s.mu.Lock()
		if h, ok := s.held[name]; ok && h.rev == rev {
			delete(s.held, name)
		}
		s.mu.Unlock()
		cancel(nil)
		s.delete(ctx, name, rev)
	}
	return cctx, release, nil
}

// Forget deletes a claim of a dead session (for a name nobody wants any more).
func (s *Session) Forget(ctx context.Context, name string, c Claim) { s.delete(ctx, name, c.Revision) }

// delete deletes name's claim if it is still revision rev's: one taken over meanwhile stays.
// It goes on when ctx has ended (a claim given back as its holder stops), for 5 s at most.
func (s *Session) delete(ctx context.Context, name string, rev uint64) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = s.c.claims.Delete(dctx, name, jetstream.LastRevision(rev))
}

// Leave ends the session: its context, its watches and its refresh, and deletes its key, so
// that its claims (the caller released them first) are free at once; the deletion goes on
// when ctx has ended, for 5 s at most.
func (s *Session) Leave(ctx context.Context) {
	s.lost(nil)
	for _, w := range s.watchers {
		_ = w.Stop()
	}
	<-s.stopped
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_ = s.c.replicas.Delete(dctx, s.id)
}
