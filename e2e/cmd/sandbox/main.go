// Command sandbox runs the whole system on one machine — kube-apiserver and its etcd, NATS
// JetStream, a versitygw S3 server, a demo etcd holding data, and every service — applies the
// seed document's EtcdBackupConfig with a short schedule, and prints what to try with
// kubectl and nats. Ctrl-C stops it all. Started by `make run`.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/e2e/sandbox"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "sandbox:", err)
		os.Exit(1)
	}
}

func run() error {
	root, err := sandbox.RepoRoot()
	if err != nil {
		return err
	}
	dir := flag.String("dir", filepath.Join(root, ".sandbox"), "state and logs (emptied at start)")
	schedule := flag.String("schedule", "@every 1m", "schedule of the sample EtcdBackupConfig")
	buildOnly := flag.String("build-services", "",
		"only build the service binaries into this directory, and exit (make test builds them once for its shards)")
	flag.Parse()
	if *buildOnly != "" {
		return sandbox.BuildServices(context.Background(), root, *buildOnly)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tools := sandbox.ToolDir()
	env, err := start(ctx, root, tools, *dir)
	if err != nil {
		return err
	}
	defer env.Close()
	if err := writeDemoData(ctx, env); err != nil {
		return err
	}
	if err := applySample(ctx, env, root, *schedule); err != nil {
		return err
	}
	kubelet, err := restoreDemo(ctx, env)
	if err != nil {
		return err
	}
	defer kubelet.Stop()
	token, err := env.ConsoleAdminToken(ctx)
	if err != nil {
		return err
	}
	// Dex's demo user manages the backups of the two demo clusters, by its OIDC group.
	for _, c := range []string{sandbox.DemoCluster, RestoreCluster} {
		if err := env.GrantClusterUser(ctx, "demo-operators", sandbox.OIDCGroupSubject(), c); err != nil {
			return err
		}
	}
	printGuide(env, kubelet, tools, *dir, *schedule, token)
	<-ctx.Done()
	fmt.Println("\nstopping ...")
	return nil
}

// start builds the services into dir (emptied first) and starts the sandbox with them.
func start(ctx context.Context, root, tools, dir string) (*sandbox.Env, error) {
	if err := sandbox.CheckTools(tools); err != nil {
		return nil, err
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	fmt.Println("building the services ...")
	svcDir := filepath.Join(dir, "bin")
	if err := sandbox.BuildServices(ctx, root, svcDir); err != nil {
		return nil, err
	}
	fmt.Println("starting kube-apiserver, NATS, S3, a demo etcd and the services ...")
	startCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	return sandbox.Start(startCtx, sandbox.Options{Dir: dir, ToolDir: tools, ServiceDir: svcDir})
}

// applySample applies the seed document's EtcdBackupConfig (deploy/k8s/samples), on schedule.
func applySample(ctx context.Context, env *sandbox.Env, root, schedule string) error {
	sample, err := os.ReadFile(filepath.Join(root, "deploy", "k8s", "samples", "daily-backup.yaml"))
	if err != nil {
		return err
	}
	sample = bytes.Replace(sample, []byte("'@every 20m'"), []byte(fmt.Sprintf("'%s'", schedule)), 1)
	objs, err := sandbox.DecodeObjects(sample)
	if err != nil {
		return err
	}
	for _, o := range objs {
		if err := env.Client.Create(ctx, o); err != nil {
			return fmt.Errorf("apply sample %s: %w", o.GetName(), err)
		}
	}
	return nil
}

func writeDemoData(ctx context.Context, env *sandbox.Env) error {
	cli, err := env.DemoEtcdClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	for i := range 1000 {
		if _, err := cli.Put(ctx, fmt.Sprintf("/registry/demo/key-%04d", i), fmt.Sprintf("value %d", i)); err != nil {
			return fmt.Errorf("write demo data: %w", err)
		}
	}
	return nil
}

// RestoreCluster is a 3-member etcd whose StatefulSet, pods and volumes the sandbox's kubelet
// plays, so that restores can be tried.
const RestoreCluster = "restore-demo"

func restoreDemo(ctx context.Context, env *sandbox.Env) (*sandbox.Kubelet, error) {
	k, err := env.StartEtcdCluster(ctx, RestoreCluster, 3, nil)
	if err != nil {
		return nil, err
	}
	cli, err := k.Client()
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	if _, err := cli.Put(ctx, "/registry/demo/written-before-the-backup", "yes"); err != nil {
		return nil, err
	}
	cfg := &kubermaticv1.EtcdBackupConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-" + RestoreCluster, Name: "before-restore"},
		Spec: kubermaticv1.EtcdBackupConfigSpec{
			Cluster: corev1.ObjectReference{APIVersion: kubermaticv1.GroupVersion.String(), Kind: "Cluster",
				Name: RestoreCluster},
		},
	}
	if err := env.Client.Create(ctx, cfg); err != nil {
		return nil, err
	}
	// A continuous config: the journal asks for its first full backup at once, and a clock
	// written every 2 s gives it revisions to restore to.
	continuous := &kubermaticv1.EtcdBackupConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-" + RestoreCluster, Name: ContinuousConfig,
			Annotations: map[string]string{kubermaticv1.AnnotationContinuous: kubermaticv1.ContinuousOn}},
		Spec: kubermaticv1.EtcdBackupConfigSpec{
			Cluster: corev1.ObjectReference{APIVersion: kubermaticv1.GroupVersion.String(), Kind: "Cluster",
				Name: RestoreCluster},
			Schedule: "@every 1h",
		},
	}
	if err := env.Client.Create(ctx, continuous); err != nil {
		return nil, err
	}
	go writeClock(ctx, k)
	return k, nil
}

// ContinuousConfig is the restore demo's continuous config.
const ContinuousConfig = "continuous"

// writeClock writes the time to /registry/demo/clock every 2 s until ctx ends; a write that
// fails (the cluster being restored) is skipped.
func writeClock(ctx context.Context, k *sandbox.Kubelet) {
	cli, err := k.Client()
	if err != nil {
		return
	}
	defer cli.Close()
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, _ = cli.Put(wctx, "/registry/demo/clock", now.UTC().Format(time.RFC3339))
			cancel()
		}
	}
}

// guide is what printGuide prints, its blanks filled in.
const guide = `
The sandbox is up. The seed document's EtcdBackupConfig "daily-backup" runs %s against
the demo etcd of cluster %s (1000 keys). In another shell:

  export KUBECONFIG=%s PATH=%s:$PATH

  kubectl get etcdbackupconfigs -A                       # last backup and its phase
  kubectl get etcdbackupconfig daily-backup -n %s -o yaml   # status.lastBackups
  kubectl get events -n %s

  # NATS needs TLS and an nkey; each identity may do only its job (docs/security.md).
  WATCHER="%s"
  TRIGGER="%s"
  nats $WATCHER sub 'etcdbackup.status.>'          # every stage's status events
  nats $TRIGGER req etcdbackup.trigger.backup '{"namespace":"%s","config":"daily-backup"}'
  nats $WATCHER stream get ETCDBACKUP_STATUS 1     # the status history, by sequence

Restore: cluster %s has a 3-member etcd (client URLs %s) whose pods this sandbox
plays, and a one-time backup by EtcdBackupConfig "before-restore". Restore from it:

  B=$(kubectl -n %s get etcdbackupconfig before-restore -o jsonpath='{.status.lastBackups[0].backupName}')
  kubectl apply -f - <<EOF
  apiVersion: kubermatic.k8c.io/v1
  kind: EtcdRestore
  metadata: {name: demo-restore, namespace: %s}
  spec:
    cluster: {apiVersion: kubermatic.k8c.io/v1, kind: Cluster, name: %s}
    backupName: $B
EOF
  kubectl -n %s get etcdrestores -w          # Started, StsRebuilding, Completed
  kubectl -n %s get etcdrestore demo-restore -o yaml
  nats $WATCHER sub 'etcdbackup.status.restorer'

Point-in-time restore (docs/restore.md): EtcdBackupConfig "%s" of %s is continuous; the
sandbox writes the time to /registry/demo/clock every 2 s. Restore to 30 s ago:

  kubectl -n %s get etcdbackupconfig %s     # POINT IN TIME: restorable from ... to ...
  T=$(date -u -d '-30 seconds' +%%Y-%%m-%%dT%%H:%%M:%%SZ)
  kubectl apply -f - <<EOF
  apiVersion: kubermatic.k8c.io/v1
  kind: EtcdRestore
  metadata: {name: to-a-second, namespace: %s, annotations: {etcdbackup.k8c.io/restore-to: "$T"}}
  spec:
    cluster: {apiVersion: kubermatic.k8c.io/v1, kind: Cluster, name: %s}
    backupName: %s
EOF
  kubectl -n %s get etcdrestore to-a-second -w
  kubectl -n %s get events --field-selector involvedObject.name=to-a-second   # the revision built, hashes checked

Encryption and drills: destination %q encrypts backups with age (recipients in secret
%s/%s, the identity in %s/%s); a drill restores a config's newest backup on a schedule:

  kubectl -n %s patch etcdbackupconfig daily-backup --type merge -p '{"spec":{"destination":"%s"}}'
  kubectl -n %s annotate etcdbackupconfig daily-backup etcdbackup.k8c.io/drill-schedule='@every 5m'
  kubectl -n %s get etcdbackupconfig daily-backup -o jsonpath='{.status.conditions.BackupRestorable}'

Mistakes (docs/operations.md, "When someone makes a mistake"): every restore first backs the
cluster up (restore that backup to undo it), and a deleted config's backups stay 7 days:

  kubectl -n %s get etcdrestore demo-restore -o jsonpath='{.status.preRestoreBackup}'
  kubectl -n %s delete etcdbackupconfig before-restore
  kubectl get deletedbackupsets                   # its backups, kept until EXPIRES

The kubectl plugin (docs/cli.md), built with the services; with your kubeconfig and RBAC:

  export PATH=%s:$PATH
  kubectl etcdbackup ls -A                                  # every backup, its drill and window
  kubectl etcdbackup describe config daily-backup -n %s
  kubectl etcdbackup backup daily-backup -n %s %s
  kubectl etcdbackup restore %s --backup $B                 # shows what happens, asks first
  kubectl etcdbackup restore %s --to "$T"

S3 (versitygw) listens on %s, bucket %s; credentials are in secret %s/%s.
Logs: %s/logs. Ctrl-C stops everything.

The web console (docs/console.md): %s
  sign in with Dex (OIDC, %s; kube-apiserver trusts its ID tokens): user %s, password %s,
  in group %s, which manages the backups of clusters %s and %s only. Dex's certificate
  is the sandbox's own (%s): the browser asks once whether to trust it.
  Or sign in with this token (ServiceAccount kubermatic/console-admin, cluster-admin):
  %s
`

func printGuide(env *sandbox.Env, kubelet *sandbox.Kubelet, tools, dir, schedule, token string) {
	ns := "cluster-" + sandbox.DemoCluster
	rns := "cluster-" + RestoreCluster
	fmt.Printf(guide, schedule, sandbox.DemoCluster, env.API.Kubeconfig, tools, ns, ns,
		strings.Join(env.NATSCLIFlags(bus.IdentityWatcher), " "), strings.Join(env.NATSCLIFlags(bus.IdentityTrigger), " "),
		ns,
		RestoreCluster, strings.Join(kubelet.ClientURLs(), ","), rns, rns, RestoreCluster, rns, rns,
		ContinuousConfig, RestoreCluster, rns, ContinuousConfig, rns, RestoreCluster, ContinuousConfig, rns, rns,
		sandbox.SealedDestination, sandbox.SeedNamespace, sandbox.EncryptionSecret, sandbox.SeedNamespace,
		sandbox.DecryptionSecret, ns, sandbox.SealedDestination, ns, ns, rns, rns,
		filepath.Join(dir, "bin"), ns, ns, pluginNATSFlags(env), RestoreCluster, RestoreCluster,
		env.S3.Endpoint, sandbox.Bucket, sandbox.SeedNamespace, sandbox.CredentialsSecret, dir, consoleURL(env),
		env.Dex.Issuer, sandbox.OIDCUser, env.Dex.Password, sandbox.OIDCGroup, sandbox.DemoCluster, RestoreCluster,
		env.Dex.CA, token)
}

// pluginNATSFlags are the plugin's flags for the trigger identity's credentials.
func pluginNATSFlags(env *sandbox.Env) string {
	return fmt.Sprintf("--nats-server %s --nats-nkey %s --nats-ca %s", env.NATSURL,
		env.NATSCreds.Seed(bus.IdentityTrigger), env.NATSCreds.CA())
}

func consoleURL(env *sandbox.Env) string {
	for _, s := range env.ServicesOf("console") {
		return s.URL
	}
	return "(not running)"
}
