// Package claim shares the continuous configs among the journal's replicas: every claim
// interval each replica lists the configs that want a journal (Continuous), takes the journal
// lease of those nobody holds, and runs a follower for each lease it holds; a replica that dies
// stops refreshing its leases, which end after bus.JournalLeaseTTL and are taken by the others.
// A replica that holds a larger share of the configs waits longer into each interval before it
// claims, so that the configs spread over the replicas.
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

// Follower journals one config while ctx lasts: the caller holds its lease.
type Follower func(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig) error

// Claimer runs the followers of the configs this replica holds the lease of.
type Claimer struct {
	// Reader lists the EtcdBackupConfigs (the manager's cache).
	Reader client.Reader
	Leases *bus.Leases
	// Holder names this replica in the leases it holds.
	Holder string
	// Interval is how often configs are claimed; RetryDelay how long a follower that failed waits.
	Interval, RetryDelay time.Duration
	// ByDefault: configs without the annotation are continuous.
	ByDefault bool
	Follow    Follower
	Log       *slog.Logger

	mu      sync.Mutex
	running map[string]context.CancelFunc
}

// Held is the number of configs this replica follows.
func (c *Claimer) Held() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.running)
}

// Start claims every Interval until ctx ends, then stops every follower and releases its lease.
func (c *Claimer) Start(ctx context.Context) error {
	c.mu.Lock()
	c.running = map[string]context.CancelFunc{}
	c.mu.Unlock()
	var wg sync.WaitGroup
	defer wg.Wait()
	t := time.NewTicker(c.Interval)
	defer t.Stop()
	for {
		if err := c.claim(ctx, &wg); err != nil {
			c.Log.Warn("claim continuous configs", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (c *Claimer) claim(ctx context.Context, wg *sync.WaitGroup) error {
	var list kubermaticv1.EtcdBackupConfigList
	if err := c.Reader.List(ctx, &list); err != nil {
		return err
	}
	want := map[string]*kubermaticv1.EtcdBackupConfig{}
	for i := range list.Items {
		cfg := &list.Items[i]
		if Continuous(cfg, c.ByDefault) {
			want[bus.JournalLeaseKey(cfg.Namespace, string(cfg.UID))] = cfg
		}
	}
	c.mu.Lock()
	for key, cancel := range c.running {
		if want[key] == nil {
			cancel()
			delete(c.running, key)
		}
	}
	c.mu.Unlock()
	c.mu.Lock()
	held := len(c.running)
	var free []string
	for _, key := range shuffled(want) {
		if _, have := c.running[key]; !have {
			free = append(free, key)
		}
	}
	c.mu.Unlock()
	if len(free) == 0 {
		return nil
	}
	// The larger the share this replica holds, the later in the interval it tries: a lighter
	// replica takes the free configs first. The wait is once a pass, so a replica that must take
	// over hundreds of configs from a dead one takes them all in one pass.
	if !sleep(ctx, time.Duration(float64(c.Interval)*float64(held)/float64(len(want)))) {
		return nil
	}
	for _, key := range free {
		cfg := want[key]
		held2, release, err := c.Leases.TryAcquire(ctx, key, c.Holder+" journals "+cfg.Namespace+"/"+cfg.Name)
		if errors.Is(err, bus.ErrHeld) {
			continue
		}
		if err != nil {
			return fmt.Errorf("take the journal lease of %s/%s: %w", cfg.Namespace, cfg.Name, err)
		}
		fctx, cancel := context.WithCancel(held2)
		c.mu.Lock()
		c.running[key] = cancel
		c.mu.Unlock()
		wg.Go(func() {
			defer release()
			c.run(fctx, cfg)
			c.mu.Lock()
			delete(c.running, key)
			c.mu.Unlock()
		})
	}
	return nil
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
