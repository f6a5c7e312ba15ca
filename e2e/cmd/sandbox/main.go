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
	"syscall"
	"time"

	"github.com/etcd-backup/etcdbackup/e2e/sandbox"
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
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tools := sandbox.ToolDir()
	if err := sandbox.CheckTools(tools); err != nil {
		return err
	}
	if err := os.RemoveAll(*dir); err != nil {
		return err
	}
	fmt.Println("building the services ...")
	svcDir := filepath.Join(*dir, "bin")
	if err := sandbox.BuildServices(ctx, root, svcDir); err != nil {
		return err
	}
	fmt.Println("starting kube-apiserver, NATS, S3, a demo etcd and the services ...")
	startCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	env, err := sandbox.Start(startCtx, sandbox.Options{Dir: *dir, ToolDir: tools, ServiceDir: svcDir})
	cancel()
	if err != nil {
		return err
	}
	defer env.Close()

	if err := writeDemoData(ctx, env); err != nil {
		return err
	}
	sample, err := os.ReadFile(filepath.Join(root, "deploy", "k8s", "samples", "daily-backup.yaml"))
	if err != nil {
		return err
	}
	sample = bytes.Replace(sample, []byte("'@every 20m'"), []byte(fmt.Sprintf("'%s'", *schedule)), 1)
	objs, err := sandbox.DecodeObjects(sample)
	if err != nil {
		return err
	}
	for _, o := range objs {
		if err := env.Client.Create(ctx, o); err != nil {
			return fmt.Errorf("apply sample %s: %w", o.GetName(), err)
		}
	}
	printGuide(env, tools, *dir, *schedule)
	<-ctx.Done()
	fmt.Println("\nstopping ...")
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

func printGuide(env *sandbox.Env, tools, dir, schedule string) {
	ns := "cluster-" + sandbox.DemoCluster
	fmt.Printf(`
The sandbox is up. The seed document's EtcdBackupConfig "daily-backup" runs %s against
the demo etcd of cluster %s (1000 keys). In another shell:

  export KUBECONFIG=%s PATH=%s:$PATH

  kubectl get etcdbackupconfigs -A                       # last backup and its phase
  kubectl get etcdbackupconfig daily-backup -n %s -o yaml   # status.lastBackups
  kubectl get events -n %s

  nats --server %s sub 'etcdbackup.status.>'        # every stage's status events
  nats --server %s req etcdbackup.trigger.backup '{"namespace":"%s","config":"daily-backup"}'
  nats --server %s stream ls

S3 (versitygw) listens on %s, bucket %s; credentials are in secret %s/%s.
Logs: %s/logs. Ctrl-C stops everything.
`, schedule, sandbox.DemoCluster, env.API.Kubeconfig, tools, ns, ns,
		env.NATSURL, env.NATSURL, ns, env.NATSURL,
		env.S3.Endpoint, sandbox.Bucket, sandbox.SeedNamespace, sandbox.CredentialsSecret, dir)
}
