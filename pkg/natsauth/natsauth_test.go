package natsauth_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/natsauth"
	"github.com/etcd-backup/etcdbackup/pkg/service"
	"github.com/etcd-backup/etcdbackup/pkg/staging"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func deployConfig(t *testing.T) string {
	t.Helper()
	conf, err := natsauth.DeployConfig(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return conf
}

// The deploy's nats.conf grants each identity exactly pkg/bus's permission table, knows no
// anonymous user and requires TLS.
func TestDeployConfigGrantsExactlyThePermissionTable(t *testing.T) {
	creds, err := natsauth.NewCredentials(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(creds.Dir, "parsed.conf")
	writeFile(t, path, creds.ServerConfig(deployConfig(t)))
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if opts.TLSConfig == nil {
		t.Error("the deploy's NATS does not require TLS")
	}
	if opts.NoAuthUser != "" || len(opts.Users) > 0 || opts.Username != "" || opts.Authorization != "" {
		t.Error("the deploy's NATS has a password user, token or anonymous user besides the nkeys")
	}
	byKey := map[string]*server.NkeyUser{}
	for _, u := range opts.Nkeys {
		byKey[u.Nkey] = u
	}
	if len(byKey) != len(bus.Identities()) {
		t.Errorf("the deploy's NATS has %d nkey users, want %d", len(byKey), len(bus.Identities()))
	}
	for _, id := range bus.Identities() {
		want, _ := bus.PermissionsOf(id)
		u := byKey[creds.PublicKeys[id]]
		if u == nil || u.Permissions == nil || u.Permissions.Publish == nil || u.Permissions.Subscribe == nil {
			t.Errorf("%s: no user with permissions for its nkey", id)
			continue
		}
		p := u.Permissions
		if !slices.Equal(sorted(p.Publish.Allow), want.Publish) || len(p.Publish.Deny) > 0 {
			t.Errorf("%s may publish %v, the table says %v", id, p.Publish.Allow, want.Publish)
		}
		if !slices.Equal(sorted(p.Subscribe.Allow), want.Subscribe) || len(p.Subscribe.Deny) > 0 {
			t.Errorf("%s may subscribe %v, the table says %v", id, p.Subscribe.Allow, want.Subscribe)
		}
		if (p.Response != nil) != want.AllowResponses {
			t.Errorf("%s: allow_responses %v, the table says %v", id, p.Response != nil, want.AllowResponses)
		}
	}
	if t.Failed() {
		t.Logf("the users block pkg/bus renders:\n%s", bus.NATSUsers())
	}
}

// docs/bus.md lists exactly the permission table.
func TestBusDocListsThePermissionTable(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "bus.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), bus.PermissionTable()) {
		t.Fatalf("docs/bus.md does not hold the permission table; it should read:\n%s", bus.PermissionTable())
	}
}

// bench is a server from the deploy's configuration and a way to connect as each identity.
type bench struct {
	t     *testing.T
	creds *natsauth.Credentials
	srv   *server.Server
}

func startBench(t *testing.T) *bench {
	t.Helper()
	creds, err := natsauth.NewCredentials(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s, err := creds.Start(deployConfig(t), natsauth.Options{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return &bench{t: t, creds: creds, srv: s}
}

// conn is one identity's connection; violations collects the permission errors the server
// sent it.
type conn struct {
	nc *nats.Conn
	js jetstream.JetStream
	mu sync.Mutex
	vs []string
}

func (c *conn) violations() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.vs)
}

func (b *bench) connect(id bus.Identity) *conn {
	b.t.Helper()
	n := service.NATS{URL: b.srv.ClientURL(), Creds: b.creds.Seed(id), CA: b.creds.CA()}
	opts, err := n.Options(id)
	if err != nil {
		b.t.Fatal(err)
	}
	c := &conn{}
	opts = append(opts, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		c.mu.Lock()
		c.vs = append(c.vs, err.Error())
		c.mu.Unlock()
	}))
	if c.nc, err = nats.Connect(b.srv.ClientURL(), opts...); err != nil {
		b.t.Fatalf("connect as %s: %v", id, err)
	}
	b.t.Cleanup(c.nc.Close)
	if c.js, err = jetstream.New(c.nc); err != nil {
		b.t.Fatal(err)
	}
	return c
}

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Every identity does its whole job on the deploy's configuration without one permission
// violation: the streams it ensures, its consumer, what it publishes, staging for the two that
// stage, the trigger's request and reply, the watcher's live and past status events.
func TestEachIdentityDoesItsJob(t *testing.T) {
	b := startBench(t)
	ctx := ctxT(t)
	topo := bus.DefaultTopology()
	conns := map[bus.Identity]*conn{}
	for _, id := range bus.Identities() {
		conns[id] = b.connect(id)
	}
	if err := bus.Ensure(ctx, conns[bus.IdentitySetup].js, topo); err != nil {
		t.Fatalf("setup creates the streams and the staging bucket: %v", err)
	}
	if err := bus.EnsureDurables(ctx, conns[bus.IdentitySetup].js, nil); err != nil {
		t.Fatalf("setup creates the durables: %v", err)
	}
	for _, id := range []bus.Identity{bus.IdentityScheduler, bus.IdentitySnapshotter, bus.IdentityUploader,
		bus.IdentityPruner, bus.IdentityRestorer} {
		if err := bus.CheckFor(ctx, conns[id].js, topo, id); err != nil {
			t.Fatalf("%s checks its streams: %v", id, err)
		}
	}
	watcherSub, err := conns[bus.IdentityWatcher].nc.SubscribeSync(bus.SubjectStatusAll)
	if err != nil {
		t.Fatal(err)
	}
	if err := conns[bus.IdentityWatcher].nc.Flush(); err != nil {
		t.Fatal(err)
	}

	// scheduler: the trigger, a request, a status event, the status writer's consumer.
	sched := conns[bus.IdentityScheduler]
	triggerSub, err := sched.nc.QueueSubscribe(bus.SubjectTriggerBackup, bus.TriggerQueueGroup,
		func(m *nats.Msg) { _ = m.Respond([]byte("queued")) })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = triggerSub.Unsubscribe() }()
	_ = sched.nc.Flush()
	reply, err := conns[bus.IdentityTrigger].nc.Request(bus.SubjectTriggerBackup, []byte(`{}`), 5*time.Second)
	if err != nil || string(reply.Data) != "queued" {
		t.Fatalf("trigger request: %v", err)
	}
	mustPublish(t, ctx, sched.js, bus.SubjectBackupRequested, "ns/b1")
	mustPublish(t, ctx, sched.js, bus.StatusSubject(1), "")
	consumeOne(t, ctx, sched.js, bus.ConsumerStatusWriter)

	// snapshotter: takes the request and its cluster's lease, stages a snapshot, announces it,
	// gives the lease back; a second replica finds the lease held meanwhile.
	snap := conns[bus.IdentitySnapshotter]
	consumeOne(t, ctx, snap.js, bus.ConsumerSnapshotter)
	leases, err := bus.OpenLeases(ctx, snap.js)
	if err != nil {
		t.Fatalf("snapshotter opens the lease bucket: %v", err)
	}
	_, release, err := leases.Acquire(ctx, "cluster-x", "ns/b1")
	if err != nil {
		t.Fatalf("snapshotter takes a lease: %v", err)
	}
	var held *bus.HeldError
	if _, _, err := leases.Acquire(ctx, "cluster-x", "ns/b2"); !errors.As(err, &held) || held.Holder != "ns/b1" {
		t.Fatalf("a held lease taken again: %v, want held by ns/b1", err)
	}
	release()
	_, release, err = leases.Acquire(ctx, "cluster-x", "ns/b2")
	if err != nil {
		t.Fatalf("a released lease taken again: %v", err)
	}
	release()
	data := bytes.Repeat([]byte("etcd"), 300_000)
	if _, err := staging.Put(ctx, snap.js, bus.StagingBucket, "ns/b1", "test", bytes.NewReader(data)); err != nil {
		t.Fatalf("snapshotter stages: %v", err)
	}
	mustPublish(t, ctx, snap.js, bus.SubjectSnapshotReady, "ns/b1")
	mustPublish(t, ctx, snap.js, bus.StatusSubject(2), "")

	// uploader: reads and deletes the staged snapshot, announces the stored backup.
	up := conns[bus.IdentityUploader]
	consumeOne(t, ctx, up.js, bus.ConsumerUploader)
	r, err := staging.Open(ctx, up.js, bus.StagingBucket, "ns/b1", 1<<20, 5*time.Second)
	if err != nil {
		t.Fatalf("uploader opens the staged snapshot: %v", err)
	}
	var got bytes.Buffer
	if _, err := got.ReadFrom(r); err != nil || !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("uploader reads the staged snapshot: %v (%d of %d bytes)", err, got.Len(), len(data))
	}
	r.Close()
	upObs, err := up.js.ObjectStore(ctx, bus.StagingBucket)
	if err != nil {
		t.Fatal(err)
	}
	if err := upObs.Delete(ctx, "ns/b1"); err != nil {
		t.Fatalf("uploader deletes the staged snapshot: %v", err)
	}
	mustPublish(t, ctx, up.js, bus.SubjectBackupStored, "ns/b1")
	mustPublish(t, ctx, up.js, bus.StatusSubject(3), "")

	// pruner: retention after the store, a deletion queued and carried out.
	pr := conns[bus.IdentityPruner]
	consumeOne(t, ctx, pr.js, bus.ConsumerPruner)
	mustPublish(t, ctx, pr.js, bus.SubjectDeleteRequested, "ns/b1/delete")
	consumeOne(t, ctx, pr.js, bus.ConsumerDeleter)
	mustPublish(t, ctx, pr.js, bus.StatusSubject(4), "")

	mustPublish(t, ctx, conns[bus.IdentityRestorer].js, bus.StatusSubject(5), "")

	// journal: its streams and buckets, two replicas' sessions, a config claimed by one, seen
	// by the other (the watches), given back, and taken by the other.
	jr := conns[bus.IdentityJournal]
	if err := bus.CheckFor(ctx, jr.js, topo, bus.IdentityJournal); err != nil {
		t.Fatalf("journal checks its stream and buckets: %v", err)
	}
	claims, err := bus.OpenJournalClaims(ctx, jr.js)
	if err != nil {
		t.Fatalf("journal opens its claim buckets: %v", err)
	}
	// Enough claims that the watch's first read meets the server's flow control.
	claimKV, err := jr.js.KeyValue(ctx, bus.JournalClaimsBucket)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3000 {
		if _, err := claimKV.Put(ctx, fmt.Sprintf("cluster-%d.uid", i), bytes.Repeat([]byte("s"), 4000)); err != nil {
			t.Fatal(err)
		}
	}
	one, err := claims.Join(ctx, "journal-1")
	if err != nil {
		t.Fatalf("journal joins: %v", err)
	}
	if n := len(one.Claims()); n != 3000 {
		t.Fatalf("journal: the watch read %d claims, want 3000", n)
	}
	two, err := claims.Join(ctx, "journal-2")
	if err != nil {
		t.Fatalf("journal joins: %v", err)
	}
	key := bus.JournalClaimKey("cluster-x", "uid-1")
	_, release, err = one.Take(ctx, key, bus.Claim{})
	if err != nil {
		t.Fatalf("journal claims a config: %v", err)
	}
	for two.Claims()[key].Session != one.ID() {
		if ctx.Err() != nil {
			t.Fatal("journal: a claim is not seen by the other replica")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if alive, err := two.Alive(ctx, one.ID()); err != nil || !alive {
		t.Fatalf("journal: is the other replica alive: %v, %v", alive, err)
	}
	release()
	for _, there := two.Claims()[key]; there; _, there = two.Claims()[key] {
		if ctx.Err() != nil {
			t.Fatal("journal: a claim given back is still seen")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, release, err = two.Take(ctx, key, bus.Claim{}); err != nil {
		t.Fatalf("journal claims a config given back: %v", err)
	}
	release()
	one.Leave(ctx)
	two.Leave(ctx)
	mustPublish(t, ctx, jr.js, bus.JournalSubject("cluster-x", "uid-1"), "")

	// watcher: live events and the history.
	for range 5 {
		if _, err := watcherSub.NextMsg(5 * time.Second); err != nil {
			t.Fatalf("watcher: live status events: %v", err)
		}
	}
	w := conns[bus.IdentityWatcher]
	st, err := w.js.Stream(ctx, bus.StreamStatus)
	if err != nil {
		t.Fatalf("watcher: status stream info: %v", err)
	}
	if _, err := st.GetMsg(ctx, 1); err != nil {
		t.Fatalf("watcher: status event by sequence: %v", err)
	}
	if _, err := st.GetLastMsgForSubject(ctx, bus.StatusSubject(3)); err != nil {
		t.Fatalf("watcher: last status event of a stage: %v", err)
	}

	for id, c := range conns {
		if err := c.nc.Flush(); err != nil {
			t.Errorf("%s: %v", id, err)
		}
		if vs := c.violations(); len(vs) > 0 {
			t.Errorf("%s hit permission errors doing its job: %v", id, vs)
		}
	}
}

// What no identity but the owner may do is refused: reading staging, publishing a deletion,
// forging another stage's status event, taking the status writer's messages; and a client
// without a key, or without TLS, is not let in at all.
func TestIdentitiesAreRefusedWhatIsNotTheirs(t *testing.T) {
	b := startBench(t)
	ctx := ctxT(t)
	owner := b.connect(bus.IdentitySnapshotter)
	if err := bus.Ensure(ctx, b.connect(bus.IdentitySetup).js, bus.DefaultTopology()); err != nil {
		t.Fatal(err)
	}
	if _, err := staging.Put(ctx, owner.js, bus.StagingBucket, "ns/secret", "test",
		strings.NewReader(strings.Repeat("x", 4096))); err != nil {
		t.Fatal(err)
	}

	type probe struct {
		name string
		id   bus.Identity
		try  func(ctx context.Context, c *conn) error
	}
	publish := func(subject string) func(ctx context.Context, c *conn) error {
		return func(ctx context.Context, c *conn) error {
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			_, err := c.js.Publish(pctx, subject, []byte(`{}`))
			return err
		}
	}
	subscribe := func(subject string) func(ctx context.Context, c *conn) error {
		return func(ctx context.Context, c *conn) error {
			sub, err := c.nc.SubscribeSync(subject)
			if err != nil {
				return err
			}
			defer func() { _ = sub.Unsubscribe() }()
			_ = c.nc.Flush()
			_, err = sub.NextMsg(500 * time.Millisecond)
			return err
		}
	}
	readStaging := func(ctx context.Context, c *conn) error {
		_, err := staging.Open(ctx, c.js, bus.StagingBucket, "ns/secret", 1<<20, time.Second)
		return err
	}
	var probes []probe
	for _, id := range []bus.Identity{bus.IdentityTrigger, bus.IdentityWatcher, bus.IdentityScheduler,
		bus.IdentityPruner, bus.IdentityRestorer} {
		probes = append(probes,
			probe{"read staged snapshots", id, readStaging},
			probe{"subscribe to staging chunks", id, subscribe("$O." + bus.StagingBucket + ".C.>")},
		)
	}
	for _, id := range []bus.Identity{bus.IdentityTrigger, bus.IdentityWatcher, bus.IdentitySnapshotter,
		bus.IdentityUploader, bus.IdentityScheduler} {
		probes = append(probes, probe{"publish a deletion", id, publish(bus.SubjectDeleteRequested)})
	}
	for _, id := range []bus.Identity{bus.IdentityTrigger, bus.IdentityWatcher, bus.IdentitySnapshotter,
		bus.IdentityPruner} {
		probes = append(probes, probe{"publish an uploader status event", id, publish(bus.StatusSubject(3))})
	}
	probes = append(probes,
		probe{"publish a backup request", bus.IdentityTrigger, publish(bus.SubjectBackupRequested)},
		probe{"publish a backup request", bus.IdentityWatcher, publish(bus.SubjectBackupRequested)},
		probe{"read another's inbox", bus.IdentityWatcher, subscribe("_INBOX_uploader.>")},
		probe{"read every inbox", bus.IdentityTrigger, subscribe("_INBOX.>")},
		probe{"serve the trigger", bus.IdentityWatcher, subscribe(bus.SubjectTriggerBackup)},
		probe{"take the status writer's messages", bus.IdentityWatcher, func(ctx context.Context, c *conn) error {
			_, err := c.js.Consumer(ctx, bus.StreamStatus, bus.ConsumerStatusWriter)
			return err
		}},
		probe{"create a consumer on the status stream", bus.IdentityWatcher, func(ctx context.Context, c *conn) error {
			_, err := c.js.OrderedConsumer(ctx, bus.StreamStatus, jetstream.OrderedConsumerConfig{})
			return err
		}},
		probe{"create its own durable", bus.IdentityUploader, func(ctx context.Context, c *conn) error {
			_, err := bus.Consumer(ctx, c.js, bus.ConsumerUploader, 1)
			return err
		}},
		probe{"delete a stream", bus.IdentitySetup, func(ctx context.Context, c *conn) error {
			return c.js.DeleteStream(ctx, bus.StreamStatus)
		}},
		probe{"publish a backup request", bus.IdentitySetup, publish(bus.SubjectBackupRequested)},
		probe{"delete a stream", bus.IdentityPruner, func(ctx context.Context,
			c *conn) error {
			return c.js.DeleteStream(ctx, bus.StreamRequests)
		}},
	)
	// No service key may change a stream: "nats stream edit ETCDBACKUP_STATUS --max-msgs 7"
	// with a stolen service key stopped every status publish in the seed.
	update := func(cfg jetstream.StreamConfig) func(ctx context.Context, c *conn) error {
		return func(ctx context.Context, c *conn) error {
			cfg.MaxMsgs = 7
			_, err := c.js.UpdateStream(ctx, cfg)
			return err
		}
	}
	streams := bus.DefaultTopology().StreamConfigs()
	for _, id := range []bus.Identity{bus.IdentityScheduler, bus.IdentitySnapshotter, bus.IdentityUploader,
		bus.IdentityPruner, bus.IdentityTrigger, bus.IdentityWatcher} {
		probes = append(probes, probe{"update stream " + bus.StreamStatus, id, update(streams[len(streams)-1])})
	}
	for _, cfg := range streams { // the restorer's key, on every stream
		probes = append(probes, probe{"update stream " + cfg.Name, bus.IdentityRestorer, update(cfg)})
	}
	// Every probe at once, each on a connection of its own (a refused publish waits out its
	// timeout: one after the other they took 40 s), then one subtest each for the verdict.
	type result struct {
		c   *conn
		err error
	}
	results := make([]result, len(probes))
	var wg sync.WaitGroup
	for i, p := range probes {
		c := b.connect(p.id)
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			err := p.try(pctx, c)
			_ = c.nc.Flush()
			results[i] = result{c, err}
		})
	}
	wg.Wait()
	for i, p := range probes {
		t.Run(string(p.id)+" may not "+p.name, func(t *testing.T) {
			c, err := results[i].c, results[i].err
			if err == nil {
				t.Fatalf("%s could %s", p.id, p.name)
			}
			if !isPermissionError(c, err) {
				t.Fatalf("%s: %s failed, but not for permissions: %v (violations %v)", p.id, p.name, err, c.violations())
			}
		})
	}

	t.Run("a client without a key is refused", func(t *testing.T) {
		n := service.NATS{URL: b.srv.ClientURL(), CA: b.creds.CA(), Plaintext: true}
		opts, _ := n.Options(bus.IdentityWatcher)
		nc, err := nats.Connect(b.srv.ClientURL(), opts...)
		if err == nil {
			nc.Close()
			t.Fatal("anonymous client connected")
		}
		if !strings.Contains(err.Error(), "Authorization Violation") {
			t.Fatalf("anonymous client refused for another reason: %v", err)
		}
	})
	t.Run("a client without TLS is refused", func(t *testing.T) {
		n := service.NATS{URL: b.srv.ClientURL(), Creds: b.creds.Seed(bus.IdentityWatcher), Plaintext: true}
		opts, _ := n.Options(bus.IdentityWatcher)
		nc, err := nats.Connect(b.srv.ClientURL(), opts...)
		if err == nil {
			nc.Close()
			t.Fatal("plaintext client connected")
		}
	})
	t.Run("a server certificate from another CA is refused", func(t *testing.T) {
		other, err := natsauth.NewCredentials(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		n := service.NATS{URL: b.srv.ClientURL(), Creds: b.creds.Seed(bus.IdentityWatcher), CA: other.CA()}
		opts, _ := n.Options(bus.IdentityWatcher)
		nc, err := nats.Connect(b.srv.ClientURL(), opts...)
		if err == nil {
			nc.Close()
			t.Fatal("connected to a server whose certificate the CA did not sign")
		}
	})
}

// With the server verifying clients (verify: true added to the deploy's tls block), a service
// connects with --nats-tls-cert and --nats-tls-key, and one without a client certificate is
// refused.
func TestClientCertificates(t *testing.T) {
	creds, err := natsauth.NewCredentials(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	conf := deployConfig(t)
	if !strings.Contains(conf, "tls {\n") {
		t.Fatal("the deploy's nats.conf has no tls block")
	}
	conf = strings.Replace(conf, "tls {\n", "tls {\n  verify: true\n", 1)
	s, err := creds.Start(conf, natsauth.Options{Port: -1, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	connect := func(n service.NATS) error {
		if err := n.Validate(); err != nil {
			return err
		}
		opts, err := n.Options(bus.IdentityWatcher)
		if err != nil {
			return err
		}
		nc, err := nats.Connect(s.ClientURL(), opts...)
		if err == nil {
			nc.Close()
		}
		return err
	}
	n := service.NATS{URL: s.ClientURL(), Creds: creds.Seed(bus.IdentityWatcher), CA: creds.CA(),
		Cert: filepath.Join(creds.Dir, "client.crt"), Key: filepath.Join(creds.Dir, "client.key")}
	if err := connect(n); err != nil {
		t.Fatalf("with a client certificate: %v", err)
	}
	n.Cert, n.Key = "", ""
	if err := connect(n); err == nil {
		t.Fatal("a client without a certificate connected to a server that verifies clients")
	}
}

// isPermissionError reports whether the attempt failed because the server refused it: the
// error says so, or the server sent the connection a permissions violation.
func isPermissionError(c *conn, err error) bool {
	if errors.Is(err, nats.ErrPermissionViolation) || strings.Contains(strings.ToLower(err.Error()), "permission") {
		return true
	}
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		for _, v := range c.violations() {
			if strings.Contains(strings.ToLower(v), "permission") {
				return true
			}
		}
		_ = c.nc.Flush()
	}
	return false
}

func mustPublish(t *testing.T, ctx context.Context, js jetstream.JetStream, subject, msgID string) {
	t.Helper()
	var opts []jetstream.PublishOpt
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	if _, err := js.Publish(ctx, subject, []byte(`{}`), opts...); err != nil {
		t.Fatalf("publish %s: %v", subject, err)
	}
}

func consumeOne(t *testing.T, ctx context.Context, js jetstream.JetStream, durable string) {
	t.Helper()
	c, _, err := bus.Durable(ctx, js, durable)
	if err != nil {
		t.Fatalf("%s: %v", durable, err)
	}
	batch, err := c.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatalf("%s: fetch: %v", durable, err)
	}
	n := 0
	for m := range batch.Messages() {
		n++
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatalf("%s: ack: %v", durable, err)
		}
	}
	if n != 1 || batch.Error() != nil {
		t.Fatalf("%s: fetched %d messages: %v", durable, n, batch.Error())
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
