// Package claim shares the continuous configs among the journal's replicas: each replica joins
// with a session (bus.Claims), and every claim interval lists the configs that want a journal
// (Continuous), claims those nobody's live session claims, and runs a follower for each claim
// it holds. A replica that dies stops refreshing its session, which ends after
// bus.JournalReplicaTTL; the others then take its claims over. A replica that holds more than
// its share of the configs waits longer into each interval before it claims, and gives back
// what it holds beyond its share, so that the configs spread over the replicas.
package claim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Continuous says whether cfg wants a journal: its annotation ("on" or "off"), else the
// operator's default; a config without a schedule has no full backups to anchor one, and a
// config being deleted has none to come.
func Continuous(cfg *kubermaticv1.EtcdBackupConfig, byDefault bool) bool {
	if cfg.DeletionTimestamp != nil || cfg.Spec.Schedule == "" {
		return false
	}
	switch cfg.Annotations[kubermaticv1.AnnotationContinuous] {
	case kubermaticv1.ContinuousOn:
		return true
	case kubermaticv1.ContinuousOff:
		return false
	}
	return byDefault
}

// Follower journals one config while ctx lasts: the caller holds its claim.
type Follower func(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig) error

// Claimer runs the followers of the configs this replica claims.
type Claimer struct {
	// Reader lists the EtcdBackupConfigs (the manager's cache).
	Reader client.Reader
	Claims *bus.Claims
	// Holder names this replica (its host name) in its session.
	Holder string
	// Interval is how often configs are claimed; RetryDelay how long a follower that failed waits.
	Interval, RetryDelay time.Duration
	// ByDefault: configs without the annotation are continuous.
	ByDefault bool
	Follow    Follower
	Log       *slog.Logger

	mu      sync.Mutex
	running map[string]*running
	// offered are the configs this replica gave back to even the replicas out, and when: it
	// leaves them to the others for two intervals.
	offered map[string]time.Time
}

// running is a follower this replica runs.
type running struct{ stop context.CancelCauseFunc }

// Start claims every Interval until ctx ends, then stops every follower and gives its claims
// back. A session lost (not refreshed in time: the bus was out of reach) stops every follower
// too; the replica then joins again with a new session.
func (c *Claimer) Start(ctx context.Context) error {
	for ctx.Err() == nil {
		err := c.session(ctx)
		if ctx.Err() != nil {
			break
		}
		c.Log.Warn("journal session ended; every config this replica followed is free, joining again",
			"retry_in", c.RetryDelay, "err", err)
		if !sleep(ctx, c.RetryDelay) {
			break
		}
	}
	return nil
}

func (c *Claimer) session(ctx context.Context) error {
	s, err := c.Claims.Join(ctx, c.Holder)
	if err != nil {
		return err
	}
	defer s.Leave(ctx)
	c.mu.Lock()
	c.running, c.offered = map[string]*running{}, map[string]time.Time{}
	c.mu.Unlock()
	var wg sync.WaitGroup
	// Followers end before the session is left, each giving its claim back.
	defer wg.Wait()
	c.Log.Info("journal session joined", "session", s.ID())
	t := time.NewTicker(c.Interval)
	defer t.Stop()
	for {
		if err := c.claim(ctx, s, &wg); err != nil && s.Err() == nil {
			c.Log.Warn("claim continuous configs", "err", err)
		}
		select {
		case <-s.Done():
			return s.Err()
		case <-t.C:
		}
	}
}

// rebalanceStep bounds how many configs a replica gives back in one interval: each moved
// config's journal starts anew on the other replica (it reads what waits on the bus).
const rebalanceStep = 32

// claim is one pass: the configs that want a journal, what this replica gives back, and the
// claims it takes.
func (c *Claimer) claim(ctx context.Context, s *bus.Session, wg *sync.WaitGroup) error {
	var list kubermaticv1.EtcdBackupConfigList
	if err := c.Reader.List(ctx, &list); err != nil {
		return err
	}
	want := map[string]*kubermaticv1.EtcdBackupConfig{}
	for i := range list.Items {
		cfg := &list.Items[i]
		if Continuous(cfg, c.ByDefault) {
			want[bus.JournalClaimKey(cfg.Namespace, string(cfg.UID))] = cfg
		}
	}
	claims := s.Claims()
	held, free := c.rebalance(want, s.Replicas())
	alive := aliveCache{s: s, known: map[string]bool{}}
	// Claims of sessions that ended, on configs nobody wants any more: deleted.
	for key, cl := range claims {
		if want[key] == nil && cl.Session != s.ID() {
			if a, err := alive.is(ctx, cl.Session); err == nil && !a {
				s.Forget(ctx, key, cl)
			}
		}
	}
	// What this replica may claim: unclaimed, or claimed by a session that ended.
	takeable := free[:0]
	for _, key := range free {
		if cl, claimed := claims[key]; claimed && cl.Session != s.ID() {
			a, err := alive.is(ctx, cl.Session)
			if err != nil {
				return err
			}
			if a {
				continue
			}
		}
		takeable = append(takeable, key)
	}
	if len(takeable) == 0 {
		return nil
	}
	// The larger the share this replica holds, the later in the interval it claims: a lighter
	// replica takes the free configs first. The wait is once a pass, so a replica that must take
	// over hundreds of configs from a dead one takes them all in one pass.
	if !sleep(ctx, time.Duration(float64(c.Interval)*float64(held)/float64(len(want)))) {
		return nil
	}
	for _, key := range takeable {
		if err := c.take(ctx, s, wg, key, claims[key], want[key]); err != nil {
			return err
		}
	}
	return nil
}

// rebalance stops the followers of configs that no longer want a journal, gives back what this
// replica holds beyond its fair share (the configs over the live replicas, rounded up) and one
// more, a few an interval, and says how many it holds and which wanted configs it does not
// run: the configs it gave back in the last two intervals only while it holds less than its
// share, so that the others take them first.
func (c *Claimer) rebalance(want map[string]*kubermaticv1.EtcdBackupConfig, replicas int) (int, []string) {
	share := (len(want) + replicas - 1) / replicas
	c.mu.Lock()
	defer c.mu.Unlock()
	for key, r := range c.running {
		if want[key] == nil {
			r.stop(errors.New("the config no longer wants a journal"))
			delete(c.running, key)
		}
	}
	held := len(c.running)
	for key, r := range c.running {
		if len(c.running) <= min(held, share+1) || held-len(c.running) >= rebalanceStep {
			break
		}
		r.stop(fmt.Errorf("given back: this replica holds %d configs, more than its share of %d", held, share))
		delete(c.running, key)
		c.offered[key] = time.Now()
	}
	held = len(c.running)
	for key, at := range c.offered {
		if time.Since(at) > 2*c.Interval {
			delete(c.offered, key)
		}
	}
	var free []string
	for _, key := range shuffled(want) {
		if _, have := c.running[key]; !have {
			if _, gave := c.offered[key]; !gave || held < share {
				free = append(free, key)
			}
		}
	}
	return held, free
}

// take claims key (was: its claim as last seen) and runs its follower while the claim lasts.
func (c *Claimer) take(ctx context.Context, s *bus.Session, wg *sync.WaitGroup, key string, was bus.Claim,
	cfg *kubermaticv1.EtcdBackupConfig) error {
	claimed, release, err := s.Take(ctx, key, was)
	if errors.Is(err, bus.ErrHeld) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("claim the journal of %s/%s: %w", cfg.Namespace, cfg.Name, err)
	}
	fctx, stop := context.WithCancelCause(claimed)
	r := &running{stop: stop}
	c.mu.Lock()
	c.running[key] = r
	c.mu.Unlock()
	wg.Go(func() {
		defer release()
		c.run(fctx, cfg)
		c.mu.Lock()
		if c.running[key] == r {
			delete(c.running, key)
		}
		c.mu.Unlock()
	})
	return nil
}

// aliveCache asks whether a session lives once a pass.
type aliveCache struct {
	s     *bus.Session
	known map[string]bool
}

func (a aliveCache) is(ctx context.Context, id string) (bool, error) {
	if v, ok := a.known[id]; ok {
		return v, nil
	}
	v, err := a.s.Alive(ctx, id)
	if err == nil {
		a.known[id] = v
	}
	return v, err
}

// MaxRetryDelay bounds the doubling delay before a failed journal resumes: after an outage of
// NATS, etcd or the bucket, every journal is back within it.
const MaxRetryDelay = 10 * time.Second

// run follows cfg until its context ends (lease lost, config no longer continuous, shutdown),
// again after each failure.
func (c *Claimer) run(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig) {
	c.Log.Info("journal started", "config", cfg.Namespace+"/"+cfg.Name)
	delay := c.RetryDelay
	for ctx.Err() == nil {
		began := time.Now()
		err := c.Follow(ctx, cfg)
		if ctx.Err() != nil {
			break
		}
		// A journal that ran a while failed anew: its retries start over.
		if time.Since(began) > MaxRetryDelay {
			delay = c.RetryDelay
		}
		c.Log.Warn("journal failed; it resumes from the bus and the bucket", "config", cfg.Namespace+"/"+cfg.Name,
			"retry_in", delay, "err", err)
		if !sleep(ctx, delay) {
			break
		}
		delay = min(2*delay, MaxRetryDelay)
	}
	c.Log.Info("journal stopped", "config", cfg.Namespace+"/"+cfg.Name, "cause", context.Cause(ctx))
}

func shuffled(m map[string]*kubermaticv1.EtcdBackupConfig) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	rand.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	return keys
}

func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
