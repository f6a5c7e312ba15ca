package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/e2e/sandbox"
	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestKubectlPluginAsAClusterUser runs kubectl-etcdbackup as a user with rights in one
// cluster's namespace (a ServiceAccount's token in a kubeconfig): a backup taken through the
// trigger and followed to Completed, a drill of it, ls in every format, describe, and a restore that asks,
// creates the EtcdRestore with the user's rights and follows it to Completed; another
// namespace is refused with the API server's message.
func TestKubectlPluginAsAClusterUser(t *testing.T) {
	ctx := testContext(t, 6*time.Minute)
	dumpLogsOnFailure(t)
	const cluster = "plugin"
	ns := "cluster-" + cluster
	k, etcd := startEtcdCluster(t, ctx, cluster, nil)
	if _, err := etcd.Put(ctx, "/registry/plugin/before", "v1"); err != nil {
		t.Fatal(err)
	}
	// Encrypted: describe shows whom the backup is sealed to, which the user cannot read in the
	// encryption Secret.
	newConfig(t, ctx, cluster, "daily", "@every 24h", sandbox.SealedDestination, 5)
	kubeconfig := pluginUser(t, ctx, "plugin-user", cluster)
	run := func(stdin string, args ...string) (string, error) {
		return runPlugin(t, ctx, kubeconfig, stdin, args...)
	}
	trigger := []string{"--nats-server", env.NATSURL, "--nats-nkey", env.NATSCreds.Seed(bus.IdentityTrigger),
		"--nats-ca", env.NATSCreds.CA()}
	// The trigger identity's credentials in a Secret the user may read, as an operator hands
	// them out: the plugin takes them from the Secret without writing the seed to a file.
	seed, err := os.ReadFile(env.NATSCreds.Seed(bus.IdentityTrigger))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(env.NATSCreds.CA())
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "trigger"},
		Data: map[string][]byte{"url": []byte(env.NATSURL), "nkey": seed, // cli/plugin.SecretNATS*
			"ca.crt": ca}}); err != nil {
		t.Fatal(err)
	}
	tmpBefore := pluginTempDirs(t)

	// A backup now: queued through the trigger, followed to Completed. The scheduler refuses a
	// trigger while the config's first slot runs, so it is asked again until it queues one.
	var out string
	err = sandbox.Poll(ctx, time.Minute, time.Second, func() (bool, error) {
		var err error
		out, err = run("", "backup", "daily", "-n", ns, "--timeout", "2m", "--nats-secret", "trigger")
		if err != nil && (strings.Contains(out, "trigger-min-interval") || strings.Contains(out, "is running")) {
			return false, nil
		}
		return true, err
	})
	if err != nil || !strings.Contains(out, "queued") || !strings.Contains(out, "Completed: stored") {
		t.Fatalf("backup: %v\n%s", err, out)
	}
	backup := strings.Fields(out)[1] // "backup <name> of <ns>/daily queued"
	if after := pluginTempDirs(t); len(after) != len(tmpBefore) {
		t.Errorf("the plugin left files in the temporary directory: %v, before %v", after, tmpBefore)
	}

	// A drill now (the sandbox's restorer drills nothing on a schedule): restored and passed.
	out, err = run("", "drill", "daily", "-n", ns, "--timeout", "2m")
	if err != nil || !strings.Contains(out, "DrillPassed (True): backup "+backup+" restored in a drill") {
		t.Fatalf("drill: %v\n%s", err, out)
	}

	out, err = run("", "ls", "-n", ns, "-o", "json")
	// The shape of cli/plugin's List.
	var list struct {
		Items []struct {
			Backups []listedBackup `json:"backups"`
		} `json:"items"`
	}
	if err != nil || json.Unmarshal([]byte(out), &list) != nil {
		t.Fatalf("ls -o json: %v\n%s", err, out)
	}
	var listed *listedBackup
	for _, c := range list.Items {
		for i, b := range c.Backups {
			if b.Name == backup {
				listed = &c.Backups[i]
			}
		}
	}
	if listed == nil || listed.Phase != kubermaticv1.PhaseCompleted || listed.Size <= 0 || listed.Revision <= 0 ||
		listed.Destination != sandbox.SealedDestination || listed.ObjectKey == "" {
		t.Fatalf("ls -o json lists backup %s as %+v:\n%s", backup, listed, out)
	}
	out, err = run("", "ls", "-n", ns)
	if err != nil || !strings.Contains(out, "CONFIG") || !containsLine(out, "daily", backup, "Completed", "passed") {
		t.Fatalf("ls: %v\n%s", err, out)
	}
	out, err = run("", "ls", "-n", ns, "-o", "yaml")
	if err != nil || !strings.Contains(out, "name: "+backup) {
		t.Fatalf("ls -o yaml: %v\n%s", err, out)
	}
	out, err = run("", "describe", "config", "daily", "-n", ns)
	if err != nil || !strings.Contains(out, "Conditions:") || !strings.Contains(out, "SchedulingActive") ||
		!strings.Contains(out, backup) {
		t.Fatalf("describe config: %v\n%s", err, out)
	}
	out, err = run("", "describe", "backup", backup, "-n", ns)
	fingerprint := backupformat.Fingerprint(env.Identity.Recipient().String())
	if err != nil || !strings.Contains(out, "SHA-256:") || !strings.Contains(out, listed.ObjectKey) ||
		!containsLine(out, "Object:", "zstd+age, encrypted to "+fingerprint) || !containsLine(out, "Snapshot:", "keys") {
		t.Fatalf("describe backup: %v\n%s", err, out)
	}

	// Refusals: another namespace, every namespace, and a backup that does not exist.
	other := "cluster-" + sandbox.DemoCluster
	for _, args := range [][]string{
		{"ls", "-n", other},
		{"ls", "-A"},
		append([]string{"backup", "daily-backup", "-n", other}, trigger...),
	} {
		if out, err := run("", args...); err == nil || !strings.Contains(out, "forbidden") {
			t.Errorf("%v as a user of %s: %v, want the API server's refusal\n%s", args, ns, err, out)
		}
	}
	if out, err := run("", "restore", cluster, "--backup", "nope", "--yes"); err == nil ||
		!strings.Contains(out, `backup "nope" does not exist in namespace `+ns) {
		t.Errorf("restore of a missing backup: %v\n%s", err, out)
	}

	// A restore: shown, asked (the answer is the cluster's name), created, followed.
	if _, err := etcd.Put(ctx, "/registry/plugin/after", "v2"); err != nil {
		t.Fatal(err)
	}
	out, err = run(cluster+"\n", "restore", cluster, "--backup", backup, "--name", "by-plugin", "--timeout", "3m")
	if err != nil || !strings.Contains(out, "from backup "+backup+" of config daily") ||
		!strings.Contains(out, "Type the cluster's name") || !strings.Contains(out, "Completed") {
		t.Fatalf("restore: %v\n%s", err, out)
	}
	var rs kubermaticv1.EtcdRestore
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "by-plugin"}, &rs); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.WithoutCancel(ctx), &rs) })
	if kv := restoredKeys(t, ctx, k); kv["/registry/plugin/before"] != "v1" || kv["/registry/plugin/after"] != "" {
		t.Fatalf("after the restore etcd holds before=%q after=%q, want v1 and nothing",
			kv["/registry/plugin/before"], kv["/registry/plugin/after"])
	}
	out, err = run("", "describe", "restore", "by-plugin", "-n", ns)
	if err != nil || !containsLine(out, "Phase:", "Completed") || !strings.Contains(out, "Pre-restore backup:") {
		t.Fatalf("describe restore: %v\n%s", err, out)
	}
}

// pluginTempDirs lists what an earlier plugin wrote its credentials into (none since it keeps
// a Secret's seed in memory).
func pluginTempDirs(t *testing.T) []string {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join(os.TempDir(), "kubectl-etcdbackup-*"))
	if err != nil {
		t.Fatal(err)
	}
	return dirs
}

// runPlugin runs kubectl-etcdbackup with args as the user of kubeconfig, stdin its input, and
// returns what it printed (stdout and stderr), with the command in the transcript.
func runPlugin(t *testing.T, ctx context.Context, kubeconfig, stdin string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(ctx, filepath.Join(env.Opts.ServiceDir, sandbox.Plugin),
		append(args, "--kubeconfig", kubeconfig)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	transcript(t, args, out.String(), err)
	return out.String(), err
}

// transcript appends a command and what it printed to $ETCDBACKUP_CLI_TRANSCRIPT, when set:
// the real output docs/cli.md shows.
func transcript(t *testing.T, args []string, out string, err error) {
	t.Helper()
	path := os.Getenv("ETCDBACKUP_CLI_TRANSCRIPT")
	if path == "" {
		return
	}
	f, ferr := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if ferr != nil {
		t.Error(ferr)
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "$ kubectl etcdbackup %s\n%s", strings.Join(args, " "), out)
	if err != nil {
		fmt.Fprintf(f, "(exit: %v)\n", err)
	}
	fmt.Fprintln(f)
}

// listedBackup is a backup as kubectl etcdbackup ls -o json lists it.
type listedBackup struct {
	Name        string `json:"name"`
	Phase       string `json:"phase"`
	Size        int64  `json:"size"`
	Revision    int64  `json:"revision"`
	Destination string `json:"destination"`
	ObjectKey   string `json:"objectKey"`
}

// containsLine says whether a line of out holds every field, in order.
func containsLine(out string, fields ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		rest := line
		ok := true
		for _, f := range fields {
			i := strings.Index(rest, f)
			if i < 0 {
				ok = false
				break
			}
			rest = rest[i+len(f):]
		}
		if ok {
			return true
		}
	}
	return false
}

// pluginUser writes a kubeconfig of a user of cluster (consoleUser's rights, and reading the
// namespace's Events) and returns its path.
func pluginUser(t *testing.T, ctx context.Context, name, cluster string) string {
	t.Helper()
	token := consoleUser(t, ctx, name, cluster)
	ns := "cluster-" + cluster
	for _, o := range []client.Object{
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-events"},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"events"},
				Verbs: []string{"get", "list", "watch"}},
				{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{"trigger"},
					Verbs: []string{"get"}}}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name + "-events"},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: "console-users", Name: name}},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: name + "-events"}},
	} {
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["sandbox"] = &clientcmdapi.Cluster{Server: env.API.URL, InsecureSkipTLSVerify: true}
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["sandbox"] = &clientcmdapi.Context{Cluster: "sandbox", AuthInfo: name, Namespace: ns}
	cfg.CurrentContext = "sandbox"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}
