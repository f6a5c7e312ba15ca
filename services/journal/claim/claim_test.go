package claim_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/kube"
	"github.com/etcd-backup/etcdbackup/pkg/logtest"
	"github.com/etcd-backup/etcdbackup/pkg/natstest"
	"github.com/etcd-backup/etcdbackup/services/journal/claim"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

func config(i int, annotation string) *kubermaticv1.EtcdBackupConfig {
	cfg := &kubermaticv1.EtcdBackupConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("cluster-c%d", i), Name: "daily",
			UID: types.UID(fmt.Sprintf("uid-%d", i))},
		Spec: kubermaticv1.EtcdBackupConfigSpec{Schedule: "@every 20m"},
	}
	if annotation != "" {
		cfg.Annotations = map[string]string{kubermaticv1.AnnotationContinuous: annotation}
	}
	return cfg
}

func TestContinuous(t *testing.T) {
	once := config(1, kubermaticv1.ContinuousOn)
	once.Spec.Schedule = ""
	deleted := config(2, kubermaticv1.ContinuousOn)
	deleted.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	for _, c := range []struct {
		cfg             *kubermaticv1.EtcdBackupConfig
		byDefault, want bool
	}{
		{config(1, kubermaticv1.ContinuousOn), false, true},
		{config(1, kubermaticv1.ContinuousOff), true, false},
		{config(1, ""), true, true},
		{config(1, ""), false, false},
		{once, true, false},
		{deleted, true, false},
	} {
		if got := claim.Continuous(c.cfg, c.byDefault); got != c.want {
			t.Errorf("Continuous(%v, default %v) = %v, want %v", c.cfg.Annotations, c.byDefault, got, c.want)
		}
	}
}

// followers records which replica follows which config.
type followers struct {
	mu sync.Mutex
	by map[string]string
	// twice lists every time a config was followed by two replicas at once.
	twice []string
	// started counts the followers started.
	started atomic.Int64
}

func (f *followers) follow(replica string) claim.Follower {
	return func(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig) error {
		key := cfg.Namespace
		f.mu.Lock()
		if other, ok := f.by[key]; ok {
			f.twice = append(f.twice, fmt.Sprintf("%s by %s and %s", key, other, replica))
			f.mu.Unlock()
			return fmt.Errorf("%s followed by %s and %s at once", key, other, replica)
		}
		f.by[key] = replica
		f.mu.Unlock()
		f.started.Add(1)
		<-ctx.Done()
		f.mu.Lock()
		delete(f.by, key)
		f.mu.Unlock()
		return ctx.Err()
	}
}

func (f *followers) count(replica string) (n, all int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.by {
		if r == replica {
			n++
		}
	}
	return n, len(f.by)
}

// replicas are journal replicas on one NATS server, sharing n continuous configs (and two
// that are not); every replica has its own connection, so a replica killed is its connection
// gone.
type replicas struct {
	t   *testing.T
	srv *server.Server
	f   *followers
	cfg client.Reader
	n   int
}

func newReplicas(t *testing.T, n int) *replicas {
	t.Helper()
	srv := natstest.RunJetStream(t)
	_, js := natstest.Connect(t, srv)
	topo := bus.DefaultTopology()
	topo.Storage, topo.StagingMaxBytes, topo.StreamMaxBytes, topo.JournalMaxBytes = jetstream.MemoryStorage, 1<<20,
		1<<20, 1<<20
	if err := bus.Ensure(t.Context(), js, topo); err != nil {
		t.Fatal(err)
	}
	scheme, err := kube.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	var objs []client.Object
	for i := range n {
		objs = append(objs, config(i, kubermaticv1.ContinuousOn))
	}
	objs = append(objs, config(n, kubermaticv1.ContinuousOff), config(n+1, ""))
	reader := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).Build()
	return &replicas{t: t, srv: srv, f: &followers{by: map[string]string{}}, cfg: reader, n: n}
}

// start runs replica name; kill closes its connection first, so its claims are not given back.
func (r *replicas) start(name string) (kill func()) {
	t := r.t
	nc, js := natstest.Connect(t, r.srv)
	claims, err := bus.OpenJournalClaims(t.Context(), js)
	if err != nil {
		t.Fatal(err)
	}
	log, _ := logtest.New()
	ctx, cancel := context.WithCancel(t.Context())
	c := &claim.Claimer{Reader: r.cfg, Claims: claims, Holder: name, Interval: 200 * time.Millisecond,
		RetryDelay: 100 * time.Millisecond, Follow: r.f.follow(name), Log: log}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.Start(ctx)
	}()
	var once sync.Once
	kill = func() { once.Do(func() { nc.Close(); cancel(); <-done }) }
	t.Cleanup(kill)
	return kill
}

// await polls until cond holds, failing after within.
func await(t *testing.T, within time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *replicas) noneTwice() {
	r.f.mu.Lock()
	defer r.f.mu.Unlock()
	if len(r.f.twice) > 0 {
		r.t.Errorf("configs followed twice at once: %q", r.f.twice)
	}
}

// Two replicas share the continuous configs, and none of the two not continuous; one replica
// dies without giving its claims back: the other follows them all within the session's TTL
// and a claim interval, not before the dead one's session ended.
func TestReplicasShareConfigsAndReplaceADeadOne(t *testing.T) {
	// Enough configs that a replica taking over half of them one by one, or waiting a little
	// longer for each it already holds, would not be done within 15 s.
	const n = 300
	r := newReplicas(t, n)
	killA := r.start("a")
	r.start("b")
	await(t, 10*time.Second, func() (bool, string) {
		a, all := r.f.count("a")
		return all == n && a > 0 && a < n, fmt.Sprintf("a follows %d of %d configs followed, want %d shared", a, all, n)
	})
	killA()
	killed := time.Now()
	await(t, 15*time.Second, func() (bool, string) {
		b, all := r.f.count("b")
		return b == n && all == n, fmt.Sprintf("%d of %d configs followed by b %s after a was killed", b, n,
			time.Since(killed).Round(time.Millisecond))
	})
	r.noneTwice()
	took := time.Since(killed)
	t.Logf("b followed all %d configs %s after a was killed", n, took.Round(time.Millisecond))
	if took < bus.JournalReplicaTTL/2 {
		t.Fatalf("b took a's configs %s after a was killed: before a's session could have ended", took)
	}
}

// A replica that joins a seed where another follows every config gets its share: the other
// gives configs back, a few an interval, until each holds about half, and none is followed
// twice on the way.
func TestConfigsSpreadOverAReplicaThatJoins(t *testing.T) {
	const n = 120
	r := newReplicas(t, n)
	r.start("a")
	await(t, 10*time.Second, func() (bool, string) {
		a, _ := r.f.count("a")
		return a == n, fmt.Sprintf("a alone follows %d of %d", a, n)
	})
	r.start("b")
	await(t, 15*time.Second, func() (bool, string) {
		a, all := r.f.count("a")
		b, _ := r.f.count("b")
		return all == n && a <= n/2+1 && b <= n/2+1, fmt.Sprintf("a follows %d, b %d, of %d configs", a, b, n)
	})
	r.noneTwice()
}

// Claiming costs the bus nothing per config once the configs are shared: with 300 configs and
// two replicas, a few seconds see the sessions' refreshes and no claim written or tried.
func TestSharedConfigsCostTheBusNothingPerConfig(t *testing.T) {
	const n = 300
	r := newReplicas(t, n)
	r.start("a")
	r.start("b")
	await(t, 10*time.Second, func() (bool, string) {
		a, all := r.f.count("a")
		return all == n && a >= n/2-1 && a <= n/2+1, fmt.Sprintf("a follows %d of %d configs followed", a, all)
	})
	nc, _ := natstest.Connect(t, r.srv)
	var mu sync.Mutex
	seen := map[string]int{}
	sub, err := nc.Subscribe(">", func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case strings.HasPrefix(m.Reply, "$JS.ACK."): // a watch's delivery, not a request
		case strings.HasPrefix(m.Subject, "$KV."+bus.JournalClaimsBucket+"."):
			seen["claims written"]++
		case strings.HasPrefix(m.Subject, "$KV."+bus.JournalReplicasBucket+"."):
			seen["sessions refreshed"]++
		case strings.HasPrefix(m.Subject, "$JS.API."):
			seen["JetStream API requests"]++
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	// Ten claim intervals of each replica; each session is refreshed every 2 s (a fifth of 10 s).
	// A window to count in, not a wait for a condition. The share may still be settling when
	// the counts first balance (a replica giving back one, the other taking it) on a busy
	// machine: the steady state is any of three windows in a row, and a cost per config shows
	// in every one.
	clean := func() bool {
		mu.Lock()
		clear(seen)
		mu.Unlock()
		time.Sleep(2 * time.Second)
		mu.Lock()
		defer mu.Unlock()
		t.Logf("in 2 s with %d configs shared by 2 replicas: %v", n, seen)
		return seen["claims written"] == 0 && seen["JetStream API requests"] == 0 && seen["sessions refreshed"] <= 2*2
	}
	steady := false
	for range 3 {
		if steady = clean(); steady {
			break
		}
	}
	if !steady {
		t.Fatalf("in each of three 2-s windows with %d configs shared by 2 replicas the bus saw more than the "+
			"sessions' refreshes (2 each); the last: %v", n, seen)
	}
	r.noneTwice()
}

// A replica whose session ends under it (its key deleted: as when NATS lost it) stops every
// follower at once, joins again with a new session, and the configs are all followed again,
// none twice.
func TestALostSessionStopsItsFollowersAndJoinsAgain(t *testing.T) {
	const n = 40
	r := newReplicas(t, n)
	r.start("a")
	await(t, 10*time.Second, func() (bool, string) {
		a, _ := r.f.count("a")
		return a == n, fmt.Sprintf("a follows %d of %d", a, n)
	})
	_, js := natstest.Connect(t, r.srv)
	kv, err := js.KeyValue(t.Context(), bus.JournalReplicasBucket)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.Keys(t.Context())
	if err != nil || len(keys) != 1 {
		t.Fatalf("sessions: %q, %v; want a's", keys, err)
	}
	started, old := r.f.started.Load(), keys[0]
	if err := kv.Purge(t.Context(), old); err != nil {
		t.Fatal(err)
	}
	await(t, 10*time.Second, func() (bool, string) {
		a, _ := r.f.count("a")
		restarted := r.f.started.Load() - started
		return a == n && restarted >= n, fmt.Sprintf("a follows %d of %d, %d followers started since", a, n, restarted)
	})
	if keys, err := kv.Keys(t.Context()); err != nil || len(keys) != 1 || keys[0] == old {
		t.Fatalf("sessions after a joined again: %q, %v; want one, not the ended %s", keys, err, old)
	}
	r.noneTwice()
}
