package sandbox

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"filippo.io/age"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/etcdtest"
	"github.com/etcd-backup/etcdbackup/pkg/kube"
	"github.com/etcd-backup/etcdbackup/pkg/natsauth"
	"github.com/etcd-backup/etcdbackup/pkg/service"
	"github.com/go-logr/logr"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/yaml"
)

// Fixture names.
const (
	Bucket            = "etcd-backups"
	Destination       = "s3"
	SeedNamespace     = "kubermatic"
	SeedName          = "kubermatic"
	CredentialsSecret = "s3-credentials"
	// SealedDestination is the same bucket as Destination, with backups encrypted to
	// EncryptionSecret's age recipient and decrypted with DecryptionSecret's identity (Env.Identity).
	SealedDestination = "s3-sealed"
	EncryptionSecret  = "etcdbackup-encryption"
	DecryptionSecret  = "etcdbackup-decryption"
	// DemoCluster is the cluster of the seed document's examples; its etcd is DemoEtcd.
	DemoCluster = "zvc78xnnz7"
	// MinInterval is the sandbox scheduler's --min-interval: the tests' schedules run every
	// 2s; "@every 1s" is refused (ScheduleTooFrequent), as "@every 5m" is by the deploy's 10m.
	MinInterval = 2 * time.Second
)

// Options configures a sandbox.
type Options struct {
	// Dir holds all state and logs (Dir/logs).
	Dir string
	// ToolDir holds kube-apiserver, kubectl, versitygw and nats.
	ToolDir string
	// ServiceDir holds the service binaries.
	ServiceDir string
	// Replicas of each service (default 1).
	Replicas map[string]int
	// Args adds flags to a service.
	Args map[string][]string
	// CRDs is the directory of the CRDs to install (default: deploy/k8s/crds, this project's).
	CRDs string
	// KKP makes the fixtures KKP-valid: the Seed gets spec.kubeconfig, Clusters get the spec
	// fields KKP's CRD requires (KKPClusterSpec) and status.namespaceName. Use it with CRDs
	// that mirror KKP's schema (e2e/kkp/crds).
	KKP bool
	// DestinationsConfigMap moves the destinations from the Seed into a ConfigMap of this name
	// in the Seed's namespace, and starts the services with --destinations-configmap (as the
	// kkp overlay does).
	DestinationsConfigMap string
	// OIDCTokenTTL is how long Dex's ID tokens last (Dex's 24h when zero): a test of the
	// console's renewal makes it short.
	OIDCTokenTTL time.Duration
}

// Env is a running sandbox.
type Env struct {
	// closed makes Close once only.
	closed  sync.Once
	Opts    Options
	API     *APIServer
	NATS    *server.Server
	NATSURL string
	// natsConf and natsPort start NATS again after StopNATS.
	natsConf string
	natsPort int
	// NATSCreds holds the bus's CA and every identity's nkey seed (see NATSClient).
	NATSCreds *natsauth.Credentials
	S3        *S3
	// Identity is the age identity of SealedDestination's backups.
	Identity *age.X25519Identity
	DemoEtcd *etcdtest.Etcd
	Client   client.Client
	Services []*Service
	// ControllerManager is kube-controller-manager (see ControllerManagerControllers).
	ControllerManager *Process
	// Dex is the OIDC provider the console signs users in with, and kube-apiserver trusts.
	Dex *Dex
	// ConsoleURL is the first console's pages, registered with Dex as the client's redirect.
	ConsoleURL string
	node       *node
}

// Service is a running service process.
type Service struct {
	*Process
	// MetricsURL is its /metrics URL.
	MetricsURL string
	// URL is the console's pages (the console only).
	URL  string
	Kind string
}

// Start starts every component and the services, with the Seed destination, its credentials
// and the demo Cluster in place.
func Start(ctx context.Context, opts Options) (_ *Env, err error) {
	e := &Env{Opts: opts}
	// The harness talks to the API through controller-runtime's client; its log is not wanted.
	ctrllog.SetLogger(logr.Discard())
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	consolePort, err := FreePort()
	if err != nil {
		return nil, err
	}
	e.ConsoleURL = fmt.Sprintf("http://127.0.0.1:%d", consolePort)
	if e.Dex, err = StartDex(ctx, opts.Dir, opts.ToolDir, DexOptions{RedirectURL: e.ConsoleURL + "/oidc/callback",
		IDTokenTTL: opts.OIDCTokenTTL}); err != nil {
		return nil, err
	}
	if err := e.startKubernetes(ctx, root); err != nil {
		return nil, err
	}
	if err := e.startNATS(root); err != nil {
		return nil, err
	}
	if err := e.SetUpBus(ctx); err != nil {
		return nil, err
	}
	if e.S3, err = StartS3(ctx, opts.Dir, opts.ToolDir); err != nil {
		return nil, err
	}
	if err := e.S3.MakeBucket(ctx, Bucket); err != nil {
		return nil, fmt.Errorf("make bucket: %w", err)
	}
	// The demo etcd may grow past etcd's default 2 GiB quota in benchmarks.
	demoQuota := func(c *embed.Config) { c.QuotaBackendBytes = 16 << 30 }
	if e.DemoEtcd, err = etcdtest.StartIn(filepath.Join(opts.Dir, "demo-etcd"), "demo", demoQuota); err != nil {
		return nil, err
	}
	if err := e.seedFixtures(ctx); err != nil {
		return nil, err
	}
	if err := e.ApplyRBAC(ctx, root); err != nil {
		return nil, err
	}
	if err := e.AddCluster(ctx, DemoCluster, e.DemoEtcd.Endpoint); err != nil {
		return nil, err
	}
	for _, name := range Services {
		for range max(opts.Replicas[name], 1) {
			if _, err := e.StartService(ctx, name); err != nil {
				return nil, err
			}
		}
	}
	return e, nil
}

// startKubernetes starts kube-apiserver with the CRDs, the node its kubelet registers, and
// kube-controller-manager.
func (e *Env) startKubernetes(ctx context.Context, root string) error {
	var err error
	if e.API, err = StartAPIServer(ctx, e.Opts.Dir, e.Opts.ToolDir, e.Dex.KubeAPIServerArgs()...); err != nil {
		return err
	}
	// The harness creates hundreds of objects in benchmarks: no client-side throttling to speak of.
	e.API.Config.QPS, e.API.Config.Burst = 500, 1000
	if e.Client, err = kube.NewClient(e.API.Config); err != nil {
		return err
	}
	// KKP's CRDs (Options.CRDs) or this project's, and this project's own group's, which KKP's
	// do not hold.
	crds := e.Opts.CRDs
	if crds == "" {
		crds = filepath.Join(root, "deploy", "k8s", "crds")
	}
	if err := InstallCRDs(ctx, e.Client, crds, filepath.Join(root, "deploy", "k8s", "crds", "etcdbackup")); err != nil {
		return err
	}
	if err := e.startNode(ctx); err != nil {
		return err
	}
	e.ControllerManager, err = StartControllerManager(ctx, e.Opts.Dir, e.Opts.ToolDir, e.API, e.Client)
	return err
}

// startNATS runs nats-server from deploy/k8s/nats.yaml's own configuration — TLS, one nkey
// per identity, the permission table — with keys and certificates made for this sandbox.
func (e *Env) startNATS(root string) error {
	conf, err := natsauth.DeployConfig(root)
	if err != nil {
		return err
	}
	if e.NATSCreds, err = natsauth.NewCredentials(filepath.Join(e.Opts.Dir, "nats-creds")); err != nil {
		return err
	}
	port, err := FreePort()
	if err != nil {
		return err
	}
	e.natsConf, e.natsPort = conf, port
	if err := e.StartNATS(); err != nil {
		return err
	}
	e.NATSURL = fmt.Sprintf("tls://127.0.0.1:%d", port)
	return nil
}

// StopNATS shuts the bus down: a NATS outage until StartNATS. What JetStream stored stays
// in its directory.
func (e *Env) StopNATS() {
	if e.NATS != nil {
		e.NATS.Shutdown()
		e.NATS.WaitForShutdown()
	}
}

// StartNATS starts the bus (again) on its port and store directory, with the same
// configuration and keys: the services reconnect to it.
func (e *Env) StartNATS() error {
	s, err := e.NATSCreds.Start(e.natsConf, natsauth.Options{Port: e.natsPort,
		StoreDir: filepath.Join(e.Opts.Dir, "nats")})
	if err != nil {
		return err
	}
	e.NATS = s
	return nil
}

// SetUpBus runs the setup program with the setup identity: the streams and the staging
// bucket, which no service may create.
func (e *Env) SetUpBus(ctx context.Context) error {
	args := append(e.NATSFlags(bus.IdentitySetup), "--log-format=text", "--timeout=1m")
	cmd := exec.CommandContext(ctx, filepath.Join(e.Opts.ServiceDir, Setup), args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("set up the bus: %w\n%s", err, out)
	}
	return nil
}

// NATSFlags are the flags that connect a service or the nats CLI's equivalent as id.
func (e *Env) NATSFlags(id bus.Identity) []string {
	return []string{"--nats-url=" + e.NATSURL, "--nats-creds=" + e.NATSCreds.Seed(id), "--nats-tls-ca=" + e.NATSCreds.CA()}
}

// NATSCLIFlags are the nats CLI's flags that connect as id.
func (e *Env) NATSCLIFlags(id bus.Identity) []string {
	return []string{"--server", e.NATSURL, "--nkey", e.NATSCreds.Seed(id), "--tlsca", e.NATSCreds.CA(),
		"--inbox-prefix", bus.InboxPrefix(id)}
}

// NATSClient connects to the sandbox's NATS as id, over TLS with its nkey.
func (e *Env) NATSClient(id bus.Identity, opts ...nats.Option) (*nats.Conn, error) {
	n := service.NATS{URL: e.NATSURL, Creds: e.NATSCreds.Seed(id), CA: e.NATSCreds.CA()}
	base, err := n.Options(id)
	if err != nil {
		return nil, err
	}
	return nats.Connect(e.NATSURL, append(base, opts...)...)
}

func (e *Env) seedFixtures(ctx context.Context) error {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return err
	}
	e.Identity = id
	seed := e.seed()
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: SeedNamespace}},
		&corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: SeedNamespace, Name: CredentialsSecret},
			Data: map[string][]byte{
				kubermaticv1.SecretAccessKeyID:     []byte(e.S3.AccessKey),
				kubermaticv1.SecretSecretAccessKey: []byte(e.S3.SecretKey),
			},
		},
		&corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: SeedNamespace, Name: EncryptionSecret},
			Data: map[string][]byte{destination.RecipientsKey: []byte("# age recipients backups to " + SealedDestination +
				" are encrypted to\n" + e.Identity.Recipient().String() + "\n")},
		},
		&corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: SeedNamespace, Name: DecryptionSecret},
			Data:       map[string][]byte{destination.IdentityKey: []byte(e.Identity.String() + "\n")},
		},
	}
	if name := e.Opts.DestinationsConfigMap; name != "" {
		b, err := yaml.Marshal(seed.Spec.EtcdBackupRestore)
		if err != nil {
			return err
		}
		seed.Spec.EtcdBackupRestore = nil
		objs = append(objs, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: SeedNamespace, Name: name},
			Data:       map[string]string{destination.ConfigMapKey: string(b)},
		})
	}
	var seedObj client.Object = seed
	if e.Opts.KKP {
		if seedObj, err = kkpSeed(seed); err != nil {
			return err
		}
	}
	for _, o := range append(objs, seedObj) {
		if err := e.Client.Create(ctx, o); err != nil {
			return fmt.Errorf("create %T %s: %w", o, o.GetName(), err)
		}
	}
	return nil
}

// seed is the sandbox's Seed: destinations Destination and SealedDestination (encrypted) in
// the sandbox's bucket, the first the default.
func (e *Env) seed() *kubermaticv1.Seed {
	creds := &corev1.SecretReference{Namespace: SeedNamespace, Name: CredentialsSecret}
	return &kubermaticv1.Seed{
		ObjectMeta: metav1.ObjectMeta{Namespace: SeedNamespace, Name: SeedName},
		Spec: kubermaticv1.SeedSpec{EtcdBackupRestore: &kubermaticv1.EtcdBackupRestore{
			DefaultDestination: Destination,
			Destinations: map[string]*kubermaticv1.BackupDestination{
				Destination: {Endpoint: e.S3.Endpoint, BucketName: Bucket, Credentials: creds},
				SealedDestination: {
					Endpoint: e.S3.Endpoint, BucketName: Bucket, Credentials: creds,
					EncryptionSecret: &corev1.SecretReference{Namespace: SeedNamespace, Name: EncryptionSecret},
					DecryptionSecret: &corev1.SecretReference{Namespace: SeedNamespace, Name: DecryptionSecret},
				},
			},
		}},
	}
}

// kkpSeed is seed in KKP's schema, which requires spec.kubeconfig (the seed's own kubeconfig
// Secret).
func kkpSeed(seed *kubermaticv1.Seed) (client.Object, error) {
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(seed)
	if err != nil {
		return nil, err
	}
	u["apiVersion"], u["kind"] = kubermaticv1.GroupVersion.String(), "Seed"
	u["spec"].(map[string]any)["kubeconfig"] = map[string]any{"name": "kubeconfig", "namespace": SeedNamespace}
	delete(u, "status")
	if seed.Spec.EtcdBackupRestore == nil {
		delete(u["spec"].(map[string]any), "etcdBackupRestore")
	}
	return unstructuredOf(u), nil
}

// KKPClusterSpec holds the spec fields KKP's Cluster CRD requires, with plausible values.
func KKPClusterSpec() map[string]any {
	return map[string]any{
		"cloud": map[string]any{"providerName": "bringyourown", "dc": "byo-sandbox"},
		"clusterNetwork": map[string]any{"dnsDomain": "cluster.local", "proxyMode": "ipvs",
			"pods":     map[string]any{"cidrBlocks": []any{"172.25.0.0/16"}},
			"services": map[string]any{"cidrBlocks": []any{"10.240.16.0/20"}}},
		"exposeStrategy":    "Tunneling",
		"humanReadableName": "sandbox",
		"version":           "1.34.2",
	}
}

// createCluster creates the Cluster object (with KKP's required fields and status.namespaceName
// under Options.KKP).
func (e *Env) createCluster(ctx context.Context, cluster map[string]any) error {
	name := cluster["metadata"].(map[string]any)["name"].(string)
	if e.Opts.KKP {
		spec := cluster["spec"].(map[string]any)
		for k, v := range KKPClusterSpec() {
			if _, set := spec[k]; !set {
				spec[k] = v
			}
		}
	}
	u := unstructuredOf(cluster)
	if err := e.Client.Create(ctx, u); err != nil {
		return fmt.Errorf("create cluster %s: %w", name, err)
	}
	if e.Opts.KKP {
		u.Object["status"] = map[string]any{"namespaceName": "cluster-" + name}
		if err := e.Client.Status().Update(ctx, u); err != nil {
			return fmt.Errorf("set status.namespaceName of cluster %s: %w", name, err)
		}
	}
	return nil
}

// AddCluster creates a Cluster whose etcd is at endpoints (comma-separated, plain HTTP) and its
// namespace cluster-<name>.
func (e *Env) AddCluster(ctx context.Context, name, endpoints string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "cluster-" + name}}
	if err := e.Client.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return e.createCluster(ctx, map[string]any{
		"apiVersion": kubermaticv1.GroupVersion.String(), "kind": "Cluster",
		"metadata": map[string]any{"name": name, "annotations": map[string]any{
			kubermaticv1.AnnotationEtcdEndpoints:    endpoints,
			kubermaticv1.AnnotationEtcdClientSecret: "none",
		}},
		"spec": map[string]any{"features": map[string]any{kubermaticv1.FeatureEtcdLauncher: true}},
	})
}

// StartService starts one more replica of a service, wired to the sandbox.
func (e *Env) StartService(ctx context.Context, kind string) (*Service, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	replica := 0 // its name's number: every one started of its kind, exited ones too
	for _, s := range e.Services {
		if s.Kind == kind {
			replica++
		}
	}
	args, pages, err := e.serviceArgs(ctx, kind, port)
	if err != nil {
		return nil, err
	}
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	runtimeEnv, err := DeployRuntimeEnv(root, kind)
	if err != nil {
		return nil, err
	}
	p, err := StartProcess(fmt.Sprintf("%s-%d", kind, replica), filepath.Join(e.Opts.ServiceDir, kind), args,
		runtimeEnv, filepath.Join(e.Opts.Dir, "logs"))
	if err != nil {
		return nil, err
	}
	s := &Service{Process: p, Kind: kind, MetricsURL: fmt.Sprintf("http://127.0.0.1:%d/metrics", port), URL: pages}
	e.Services = append(e.Services, s)
	readyz := strings.TrimSuffix(s.MetricsURL, "/metrics") + "/readyz"
	err = Poll(ctx, 60*time.Second, 100*time.Millisecond, func() (bool, error) {
		if p.Exited() {
			return false, Abort(fmt.Errorf("%s exited:\n%s", p.Name, p.LogTail(20)))
		}
		return httpOK(ctx, readyz)
	})
	if err != nil {
		return nil, fmt.Errorf("%s not ready: %w", p.Name, err)
	}
	return s, nil
}

// serviceArgs are the flags a service of kind runs with in the sandbox, its metrics endpoint
// on port, and the console's pages' URL ("" for others).
func (e *Env) serviceArgs(ctx context.Context, kind string, port int) (args []string, pages string, err error) {
	kubeconfig, err := e.ServiceKubeconfig(ctx, kind)
	if err != nil {
		return nil, "", err
	}
	// The console reads status events with the watcher identity (deploy/k8s/console.yaml).
	id := bus.Identity(kind)
	if kind == "console" {
		id = bus.IdentityWatcher
	}
	args = append(e.NATSFlags(id),
		"--kubeconfig="+kubeconfig,
		fmt.Sprintf("--metrics-addr=127.0.0.1:%d", port),
		"--log-format=text",
		"--seed-namespace="+SeedNamespace,
		"--seed-name="+SeedName,
	)
	if e.Opts.DestinationsConfigMap != "" {
		args = append(args, "--destinations-configmap="+e.Opts.DestinationsConfigMap)
	}
	switch kind {
	case "console":
		// The first console serves at ConsoleURL, Dex's redirect; any more at ports of their own.
		pages = e.ConsoleURL
		if len(e.ServicesOf("console")) > 0 {
			port, err := FreePort()
			if err != nil {
				return nil, "", err
			}
			pages = fmt.Sprintf("http://127.0.0.1:%d", port)
		}
		args = append(args, "--listen-addr="+strings.TrimPrefix(pages, "http://"), "--access-cache-ttl=2s")
		args = append(args, e.Dex.ConsoleArgs(e.ConsoleURL+"/oidc/callback")...)
	case "scheduler":
		// Backups as often as every 2s (the tests' schedules), not the deploy's 10 minutes.
		args = append(args, "--min-interval="+MinInterval.String())
	case "journal":
		// Segments every second and the window's condition every 5 s: the tests' pace.
		args = append(args, "--segment-interval=1s", "--status-interval=5s", "--claim-interval=1s")
	case "restorer":
		// Drills only where a config's annotation asks for them (each restores a whole
		// backup), in the sandbox's own directory.
		args = append(args, "--drill-schedule=off", "--drill-dir="+filepath.Join(e.Opts.Dir, "drills"))
	}
	return append(args, e.Opts.Args[kind]...), pages, nil
}

// ServicesOf returns the running replicas of a service.
func (e *Env) ServicesOf(kind string) []*Service {
	var out []*Service
	for _, s := range e.Services {
		if s.Kind == kind && !s.Exited() {
			out = append(out, s)
		}
	}
	return out
}

// Close stops everything, services first; once, however often it is called.
func (e *Env) Close() { e.closed.Do(e.close) }

func (e *Env) close() {
	for _, s := range e.Services {
		_ = s.Stop()
	}
	if e.S3 != nil {
		e.S3.Stop()
	}
	if e.DemoEtcd != nil {
		e.DemoEtcd.Stop()
	}
	if e.NATS != nil {
		e.NATS.Shutdown()
		e.NATS.WaitForShutdown()
	}
	if e.ControllerManager != nil {
		_ = e.ControllerManager.Stop()
	}
	e.node.stop()
	if e.API != nil {
		e.API.Stop()
	}
	e.Dex.Stop()
}

// DemoEtcdClient returns a client of the demo etcd; the caller closes it.
func (e *Env) DemoEtcdClient() (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: []string{e.DemoEtcd.Endpoint}, DialTimeout: 5 * time.Second,
		Logger: zap.NewNop()})
}

// DeployRuntimeEnv returns the Go runtime settings (GOMEMLIMIT, GOGC, ...) that the deploy
// gives service kind's container (deploy/k8s/<kind>.yaml), as NAME=value: the sandbox and the
// benchmarks run the services with the memory settings they ship with.
func DeployRuntimeEnv(root, kind string) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(root, "deploy", "k8s", kind+".yaml"))
	if err != nil {
		return nil, err
	}
	objs, err := DecodeObjects(b)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, o := range objs {
		if o.GetKind() != "Deployment" {
			continue
		}
		var d appsv1.Deployment
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &d); err != nil {
			return nil, err
		}
		for _, c := range d.Spec.Template.Spec.Containers {
			for _, v := range c.Env {
				if strings.HasPrefix(v.Name, "GO") && v.ValueFrom == nil {
					out = append(out, v.Name+"="+v.Value)
				}
			}
		}
	}
	return out, nil
}
