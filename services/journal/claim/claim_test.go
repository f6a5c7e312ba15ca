package claim_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

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

// Two replicas share ten continuous configs, one each, and none of the two not continuous; one
// replica dies without releasing its leases: the other follows all ten within the lease's TTL
// and a claim interval.
func TestReplicasShareConfigsAndReplaceADeadOne(t *testing.T) {
	srv := natstest.RunJetStream(t)
	connect := func() jetstream.JetStream {
		nc, err := nats.Connect(srv.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, err := bus.NewJetStream(nc)
		if err != nil {
			t.Fatal(err)
		}
		return js
	}
	topo := bus.DefaultTopology()
	topo.Storage, topo.StagingMaxBytes, topo.StreamMaxBytes, topo.JournalMaxBytes = jetstream.MemoryStorage, 1<<20,
		1<<20, 1<<20
	if err := bus.Ensure(t.Context(), connect(), topo); err != nil {
		t.Fatal(err)
	}
	scheme, err := kube.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	var objs []client.Object
	// Enough configs that a replica taking over half of them one by one, or waiting a little
	// longer for each it already holds, would not be done within 15 s.
	const n = 300
	for i := range n {
		objs = append(objs, config(i, kubermaticv1.ContinuousOn))
	}
	objs = append(objs, config(n, kubermaticv1.ContinuousOff), config(n+1, ""))
	reader := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).Build()
	f := &followers{by: map[string]string{}}
	log, _ := logtest.New()
	// Each replica has its own connection: a replica killed is its connection gone.
	start := func(name string) (stop func()) {
		nc, err := nats.Connect(srv.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		js, err := bus.NewJetStream(nc)
		if err != nil {
			t.Fatal(err)
		}
		leases, err := bus.OpenJournalLeases(t.Context(), js)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		c := &claim.Claimer{Reader: reader, Leases: leases, Holder: name, Interval: 200 * time.Millisecond,
			RetryDelay: 100 * time.Millisecond, Follow: f.follow(name), Log: log}
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = c.Start(ctx)
		}()
		return func() { nc.Close(); cancel(); <-done }
	}
	stopA := start("a")
	stopB := start("b")
	defer stopB()
	deadline := time.Now().Add(10 * time.Second)
	for {
		a, all := f.count("a")
		if all == n && a > 0 && a < n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica a follows %d of %d configs followed, want %d shared by both", a, all, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// a is killed: its connection goes first, so its leases are not given back and stay until
	// their TTL.
	held := map[string]bool{}
	f.mu.Lock()
	for k, r := range f.by {
		if r == "a" {
			held[k] = true
		}
	}
	f.mu.Unlock()
	stopA()
	killed := time.Now()
	for {
		b, all := f.count("b")
		if b == n && all == n {
			break
		}
		if time.Since(killed) > 15*time.Second {
			t.Fatalf("%d of %d configs followed by b %s after a stopped", b, n, time.Since(killed))
		}
		time.Sleep(50 * time.Millisecond)
	}
	f.mu.Lock()
	if len(f.twice) > 0 {
		t.Errorf("configs followed twice at once: %q", f.twice)
	}
	f.mu.Unlock()
	took := time.Since(killed)
	t.Logf("b followed a's %d configs %s after a was killed", len(held), took.Round(time.Millisecond))
	if took < bus.JournalLeaseTTL/2 {
		t.Fatalf("b took a's configs %s after a was killed: before a's leases could have ended", took)
	}
}
