package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/e2e/sandbox"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/natstest"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

func testContext(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// dumpLogsOnFailure prints the tail of every service log when the test fails.
func dumpLogsOnFailure(t *testing.T) {
	t.Helper()
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, s := range env.Services {
			t.Logf("---- %s (last 40 lines of %s)\n%s", s.Name, s.LogPath, s.LogTail(40))
		}
	})
}

// kubectl runs the real kubectl against the sandbox and returns its combined output.
func kubectl(t *testing.T, stdin []byte, args ...string) (string, error) {
	t.Helper()
	return kubectlIn(env.API.Kubeconfig, stdin, args...)
}

// kubectlIn runs the real kubectl against the API server of kubeconfig.
func kubectlIn(kubeconfig string, stdin []byte, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(env.Opts.ToolDir, "kubectl"), append([]string{"--kubeconfig", kubeconfig},
		args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustKubectl(t *testing.T, stdin []byte, args ...string) string {
	t.Helper()
	out, err := kubectl(t, stdin, args...)
	if err != nil {
		t.Fatalf("kubectl %v: %v\n%s", args, err, out)
	}
	return out
}

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// waitConfig polls the config until cond holds and returns it.
func waitConfig(t *testing.T, ctx context.Context, ns, name string, timeout time.Duration, what string,
	cond func(*kubermaticv1.EtcdBackupConfig) bool) *kubermaticv1.EtcdBackupConfig {
	t.Helper()
	var cfg kubermaticv1.EtcdBackupConfig
	err := sandbox.Poll(ctx, timeout, 100*time.Millisecond, func() (bool, error) {
		if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &cfg); err != nil {
			return false, err
		}
		return cond(&cfg), nil
	})
	if err != nil {
		t.Fatalf("config %s/%s: waiting for %s: %v\nstatus: %+v", ns, name, what, err, cfg.Status)
	}
	return &cfg
}

func entries(cfg *kubermaticv1.EtcdBackupConfig, phase string) []kubermaticv1.BackupStatus {
	var out []kubermaticv1.BackupStatus
	for _, b := range cfg.Status.LastBackups {
		if b.BackupPhase == phase {
			out = append(out, b)
		}
	}
	return out
}

func entry(cfg *kubermaticv1.EtcdBackupConfig, backup string) (kubermaticv1.BackupStatus, bool) {
	for _, b := range cfg.Status.LastBackups {
		if b.BackupName == backup {
			return b, true
		}
	}
	return kubermaticv1.BackupStatus{}, false
}

func condition(cfg *kubermaticv1.EtcdBackupConfig) *kubermaticv1.EtcdBackupConfigCondition {
	return cfg.Status.Condition(kubermaticv1.ConditionSchedulingActive)
}

// newConfig creates an EtcdBackupConfig in the cluster's namespace and deletes it when the
// test ends, so its schedule stops.
func newConfig(t *testing.T, ctx context.Context, cluster, name, schedule, destination string,
	keep int) *kubermaticv1.EtcdBackupConfig {
	t.Helper()
	cfg := &kubermaticv1.EtcdBackupConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-" + cluster, Name: name},
		Spec: kubermaticv1.EtcdBackupConfigSpec{
			Cluster:     corev1Ref(cluster),
			Schedule:    schedule,
			Keep:        &keep,
			Destination: destination,
		},
	}
	if err := env.Client.Create(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.WithoutCancel(ctx), cfg) })
	return cfg
}

// statusEvents returns every status event on the bus that match keeps, oldest first.
func statusEvents(t *testing.T, ctx context.Context,
	keep func(*etcdbackupv1.StatusEvent) bool) []*etcdbackupv1.StatusEvent {
	t.Helper()
	return natstest.StatusEvents(t, ctx, jetStream(t), keep)
}

// waitEvent waits for a Kubernetes Event about the named object with the given type and reason.
func waitEvent(t *testing.T, ctx context.Context, ns, name, eventType, reason string) eventsv1.Event {
	t.Helper()
	return waitEventIn(t, ctx, env.Client, ns, name, eventType, reason)
}

// waitEventIn is waitEvent on the API server c talks to.
func waitEventIn(t *testing.T, ctx context.Context, c client.Client, ns, name, eventType,
	reason string) eventsv1.Event {
	t.Helper()
	return waitEventWithin(t, ctx, c, 30*time.Second, ns, name, eventType, reason)
}

// waitEventWithin is waitEventIn with its own timeout.
func waitEventWithin(t *testing.T, ctx context.Context, c client.Client, timeout time.Duration, ns, name, eventType,
	reason string) eventsv1.Event {
	t.Helper()
	var found eventsv1.Event
	err := sandbox.Poll(ctx, timeout, 200*time.Millisecond, func() (bool, error) {
		var list eventsv1.EventList
		if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
			return false, err
		}
		for _, e := range list.Items {
			if e.Regarding.Name == name && e.Type == eventType && e.Reason == reason {
				found = e
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no %s event %s about %s/%s: %v", eventType, reason, ns, name, err)
	}
	return found
}

// metricSum sums a metric over every running replica of a service.
func metricSum(t *testing.T, ctx context.Context, service, name string, labels map[string]string) float64 {
	t.Helper()
	var sum float64
	for _, s := range env.ServicesOf(service) {
		v, err := s.Metric(ctx, name, labels)
		if err != nil {
			t.Fatal(err)
		}
		sum += v
	}
	return sum
}

// mustAddCluster adds a Cluster whose etcd is at endpoints, and its namespace.
func mustAddCluster(t *testing.T, ctx context.Context, name, endpoints string) {
	t.Helper()
	if err := env.AddCluster(ctx, name, endpoints); err != nil {
		t.Fatal(err)
	}
}

// nextSecond waits until the clock is past the second of after: backup names have second
// precision, so a trigger within that second would name the same backup.
func nextSecond(t *testing.T, ctx context.Context, after time.Time) {
	t.Helper()
	err := sandbox.Poll(ctx, 5*time.Second, 20*time.Millisecond, func() (bool, error) {
		return time.Now().UTC().Truncate(time.Second).After(after.UTC().Truncate(time.Second)), nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// triggerWithProtobuf sends a manual trigger as binary protobuf with nats.go and returns the
// decoded reply; the CLI path (JSON) is triggerWithCLI.
func triggerWithProtobuf(t *testing.T, ns, config string) *etcdbackupv1.TriggerBackupReply {
	t.Helper()
	reply, err := trigger(ns, config)
	if err != nil {
		t.Fatal(err)
	}
	return reply
}

// trigger sends a manual trigger as binary protobuf as the trigger identity and returns the
// decoded reply; safe to call from any goroutine.
func trigger(ns, config string) (*etcdbackupv1.TriggerBackupReply, error) {
	nc, err := env.NATSClient(bus.IdentityTrigger)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	data, ct, err := bus.Encode(&etcdbackupv1.TriggerBackupRequest{Namespace: ns, Config: config}, false)
	if err != nil {
		return nil, err
	}
	msg := nats.NewMsg(bus.SubjectTriggerBackup)
	msg.Data = data
	msg.Header.Set(bus.HeaderContentType, ct)
	resp, err := nc.RequestMsg(msg, 15*time.Second)
	if err != nil {
		return nil, err
	}
	if got := resp.Header.Get(bus.HeaderContentType); got != bus.ContentTypeProtobuf {
		return nil, fmt.Errorf("reply to a protobuf request has content type %q", got)
	}
	var reply etcdbackupv1.TriggerBackupReply
	if err := bus.Decode(resp.Data, bus.ContentTypeProtobuf, &reply); err != nil {
		return nil, err
	}
	return &reply, nil
}

// keyValues returns the keys under prefix ("": every key) and their values.
func keyValues(t *testing.T, ctx context.Context, cli *clientv3.Client, prefix string) map[string]string {
	t.Helper()
	opt := clientv3.WithPrefix()
	if prefix == "" {
		prefix, opt = "\x00", clientv3.WithFromKey()
	}
	resp, err := cli.Get(ctx, prefix, opt)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = string(kv.Value)
	}
	return out
}

// jetStream returns a JetStream client of the sandbox's NATS as the watcher, closed when the
// test ends.
func jetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	return jetStreamAs(t, bus.IdentityWatcher)
}

// jetStreamAs returns a JetStream client of the sandbox's NATS connected as id.
func jetStreamAs(t *testing.T, id bus.Identity) jetstream.JetStream {
	t.Helper()
	nc, err := env.NATSClient(id)
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

// schedulingActive is a waitConfig condition: the config's SchedulingActive is True.
func schedulingActive(c *kubermaticv1.EtcdBackupConfig) bool {
	cond := condition(c)
	return cond != nil && cond.Status == corev1.ConditionTrue
}

// blockedBy is a waitConfig condition: SchedulingActive is False with reason.
func blockedBy(reason string) func(*kubermaticv1.EtcdBackupConfig) bool {
	return func(c *kubermaticv1.EtcdBackupConfig) bool {
		cond := condition(c)
		return cond != nil && cond.Status == corev1.ConditionFalse && cond.Reason == reason
	}
}

// completedSince is a waitConfig condition: a backup scheduled at or after the second of since
// has completed.
func completedSince(since time.Time) func(*kubermaticv1.EtcdBackupConfig) bool {
	return func(c *kubermaticv1.EtcdBackupConfig) bool {
		for _, b := range entries(c, kubermaticv1.PhaseCompleted) {
			if !b.ScheduledTime.Time.Before(since.Truncate(time.Second)) {
				return true
			}
		}
		return false
	}
}

// triggerWhenAllowed triggers a manual backup of the config, asking again while the trigger
// refuses for --trigger-min-interval (the sandbox runs it at 2s); any other refusal fails.
func triggerWhenAllowed(t *testing.T, ctx context.Context, ns, config string) *etcdbackupv1.TriggerBackupReply {
	t.Helper()
	var reply *etcdbackupv1.TriggerBackupReply
	err := sandbox.Poll(ctx, 30*time.Second, 200*time.Millisecond, func() (bool, error) {
		reply = triggerWithProtobuf(t, ns, config)
		switch {
		case reply.GetError() == "":
			return true, nil
		case strings.Contains(reply.GetError(), "trigger-min-interval"), strings.Contains(reply.GetError(), "is running"):
			return false, errors.New(reply.GetError())
		}
		return false, sandbox.Abort(errors.New(reply.GetError()))
	})
	if err != nil {
		t.Fatalf("trigger %s/%s: %v", ns, config, err)
	}
	return reply
}

// completedBackup makes a config with keep 5 and returns it with its first completed backup.
func completedBackup(t *testing.T, ctx context.Context,
	cluster string) (*kubermaticv1.EtcdBackupConfig, kubermaticv1.BackupStatus) {
	t.Helper()
	mustAddCluster(t, ctx, cluster, env.DemoEtcd.Endpoint)
	cfg := newConfig(t, ctx, cluster, "probe", "@every 24h", "", 5)
	reply := triggerWhenAllowed(t, ctx, cfg.Namespace, cfg.Name)
	got := waitConfig(t, ctx, cfg.Namespace, cfg.Name, 60*time.Second, "the backup completed",
		func(c *kubermaticv1.EtcdBackupConfig) bool {
			b, ok := entry(c, reply.GetBackupName())
			return ok && b.BackupPhase == kubermaticv1.PhaseCompleted
		})
	b, _ := entry(got, reply.GetBackupName())
	return got, b
}
