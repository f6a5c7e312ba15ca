package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/e2e/sandbox"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/etcdtest"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/klauspost/compress/zstd"
	"github.com/minio/minio-go/v7"
	"github.com/nats-io/nats-server/v2/server"
	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
)

func corev1Ref(cluster string) corev1.ObjectReference {
	return corev1.ObjectReference{APIVersion: "kubermatic.k8c.io/v1", Kind: "Cluster", Name: cluster}
}

// The seed document's EtcdBackupConfig, applied with kubectl (schedule shortened), yields
// verified backups in the bucket, listed in status as the seed shows, each queued once by two
// schedulers, and a backup restores into an etcd that holds every key written before it.
func TestScheduledBackupsEndToEnd(t *testing.T) {
	dumpLogsOnFailure(t)
	ctx := testContext(t, 5*time.Minute)
	demo := env.DemoEtcd.Client(t)
	early := map[string]string{}
	for i := range 200 {
		k, v := fmt.Sprintf("/registry/demo/early-%03d", i), strings.Repeat(fmt.Sprintf("value-%03d;", i), 50)
		if _, err := demo.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
		early[k] = v
	}

	yaml := bytes.Replace(readTestdata(t, "seed-etcdbackupconfig.yaml"), []byte("'@every 20m'"), []byte("'@every 3s'"), 1)
	mustKubectl(t, yaml, "apply", "-f", "-")
	t.Cleanup(func() { _, _ = kubectl(t, yaml, "delete", "-f", "-") })
	const ns, name = "cluster-" + sandbox.DemoCluster, "daily-backup"

	first := waitConfig(t, ctx, ns, name, 90*time.Second, "a completed backup",
		func(c *kubermaticv1.EtcdBackupConfig) bool {
			return len(entries(c, kubermaticv1.PhaseCompleted)) >= 1
		})
	firstBackup := entries(first, kubermaticv1.PhaseCompleted)[0]
	// Keys written after the first backup completed cannot be in it.
	for i := range 20 {
		if _, err := demo.Put(ctx, fmt.Sprintf("/registry/demo/late-%03d", i), "late"); err != nil {
			t.Fatal(err)
		}
	}
	cfg := waitConfig(t, ctx, ns, name, 90*time.Second, "two completed backups",
		func(c *kubermaticv1.EtcdBackupConfig) bool {
			return len(entries(c, kubermaticv1.PhaseCompleted)) >= 2
		})

	t.Run("status lists backups as the seed shows", func(t *testing.T) {
		if c := condition(cfg); c == nil || c.Status != corev1.ConditionTrue || c.Reason != kubermaticv1.ReasonScheduled {
			t.Fatalf("SchedulingActive = %+v", c)
		}
		seen := map[string]bool{}
		for _, b := range cfg.Status.LastBackups {
			if seen[b.BackupName] {
				t.Fatalf("backup %s listed twice", b.BackupName)
			}
			seen[b.BackupName] = true
			if b.BackupName != backupname.Backup(name, b.ScheduledTime.Time) {
				t.Errorf("backup name %q does not match its scheduled time %s", b.BackupName, b.ScheduledTime)
			}
			// Slots are derived from the schedule: creation + k*3s, never from a timer.
			if off := b.ScheduledTime.Sub(cfg.CreationTimestamp.Time); off <= 0 || off%(3*time.Second) != 0 {
				t.Errorf("backup %s scheduled %s after creation, not a multiple of 3s", b.BackupName, off)
			}
			if !strings.HasPrefix(b.JobName, sandbox.DemoCluster+"-backup-"+name+"-create-") {
				t.Errorf("job name %q", b.JobName)
			}
			if b.BackupPhase != kubermaticv1.PhaseCompleted {
				continue
			}
			if b.BackupStartTime.IsZero() || b.BackupFinishedTime.Before(&b.BackupStartTime) || b.Size <= 0 ||
				len(b.SHA256) != 64 || b.EtcdRevision <= 0 {
				t.Errorf("completed entry incomplete: %+v", b)
			}
			if strings.Contains(b.ObjectKey, ":") || !strings.HasPrefix(b.ObjectKey, sandbox.DemoCluster+"/") {
				t.Errorf("object key %q", b.ObjectKey)
			}
		}
		out := mustKubectl(t, nil, "get", "etcdbackupconfigs", "-n", ns)
		for _, want := range []string{"CLUSTER", "SCHEDULE", "KEEP", "DESTINATION", "LAST BACKUP", "PHASE", name,
			"@every 3s", "20", "s3"} {
			if !strings.Contains(out, want) {
				t.Errorf("kubectl get lacks %q:\n%s", want, out)
			}
		}
		yamlOut := mustKubectl(t, nil, "get", "etcdbackupconfig", name, "-n", ns, "-o", "yaml")
		for _, field := range []string{"lastBackups:", "backupFinishedTime:", "backupName:", "backupPhase: Completed",
			"jobName:", "scheduledTime:"} {
			if !strings.Contains(yamlOut, field) {
				t.Errorf("status lacks %q", field)
			}
		}
	})

	t.Run("each slot is queued once by two schedulers", func(t *testing.T) {
		if n := len(env.ServicesOf("scheduler")); n != 2 {
			t.Fatalf("%d schedulers running, want 2", n)
		}
		queued := map[string]int{}
		for _, ev := range statusEvents(t, ctx, func(ev *etcdbackupv1.StatusEvent) bool {
			return ev.GetConfig().GetName() == name && ev.GetStage() == etcdbackupv1.Stage_STAGE_SCHEDULER
		}) {
			queued[ev.GetBackupName()]++
		}
		if len(queued) < 2 {
			t.Fatalf("queued events for %d backups, want at least 2", len(queued))
		}
		for b, n := range queued {
			if n != 1 {
				t.Errorf("backup %s queued %d times", b, n)
			}
		}
		var total float64
		for _, s := range env.ServicesOf("scheduler") {
			v, err := s.Metric(ctx, "etcdbackup_scheduler_backups_queued_total", nil)
			if err != nil {
				t.Fatal(err)
			}
			total += v
		}
		t.Logf("backups queued by both schedulers together: %v", total)
	})

	t.Run("stored objects match status", func(t *testing.T) {
		s3 := env.S3.Client()
		for _, b := range entries(cfg, kubermaticv1.PhaseCompleted) {
			obj, err := s3.GetObject(ctx, sandbox.Bucket, b.ObjectKey, minio.GetObjectOptions{})
			if err != nil {
				t.Fatal(err)
			}
			h := sha256.New()
			n, err := io.Copy(h, obj)
			obj.Close()
			if err != nil {
				t.Fatalf("read %s: %v", b.ObjectKey, err)
			}
			if n != b.Size || hex.EncodeToString(h.Sum(nil)) != b.SHA256 {
				t.Errorf("%s: %d bytes sha256 %x, status says %d bytes sha256 %s", b.ObjectKey, n, h.Sum(nil), b.Size, b.SHA256)
			}
			info, err := s3.StatObject(ctx, sandbox.Bucket, b.ObjectKey, minio.StatObjectOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if info.UserMetadata["Sha256"] != b.SHA256 {
				t.Errorf("%s: object metadata sha256 %q, status %q", b.ObjectKey, info.UserMetadata["Sha256"], b.SHA256)
			}
		}
	})

	t.Run("a backup restores with every key written before it", func(t *testing.T) {
		got := restoreAndRead(t, ctx, firstBackup.ObjectKey, firstBackup.SHA256)
		for k, v := range early {
			if got[k] != v {
				t.Fatalf("restored etcd: %s = %.20q, want %.20q", k, got[k], v)
			}
		}
		for k := range got {
			if strings.HasPrefix(k, "/registry/demo/late-") {
				t.Fatalf("restored etcd holds %s, written after the backup completed", k)
			}
		}
	})
}

// restoreAndRead downloads a backup, checks its sha256, decompresses it, restores it with the
// etcdutl snapshot API into a fresh data dir, starts etcd on it and returns every key.
func restoreAndRead(t *testing.T, ctx context.Context, key, wantSHA string) map[string]string {
	t.Helper()
	dir := t.TempDir()
	obj, err := env.S3.Client().GetObject(ctx, sandbox.Bucket, key, minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	h := sha256.New()
	dec, err := zstd.NewReader(io.TeeReader(obj, h))
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	dbPath := filepath.Join(dir, "snapshot.db")
	f, err := os.Create(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, dec); err != nil {
		t.Fatalf("decompress %s: %v", key, err)
	}
	f.Close()
	_, _ = io.Copy(io.Discard, obj)
	if got := hex.EncodeToString(h.Sum(nil)); got != wantSHA {
		t.Fatalf("downloaded %s has sha256 %s, status says %s", key, got, wantSHA)
	}

	port, err := sandbox.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	peer := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", port)}
	dataDir := filepath.Join(dir, "restored")
	err = snapshot.NewV3(zap.NewNop()).Restore(snapshot.RestoreConfig{
		SnapshotPath:        dbPath,
		Name:                "restored",
		OutputDataDir:       dataDir,
		PeerURLs:            []string{peer.String()},
		InitialCluster:      "restored=" + peer.String(),
		InitialClusterToken: "restored",
	})
	if err != nil {
		t.Fatalf("etcdutl restore (hash check on): %v", err)
	}
	restored, err := etcdtest.StartIn(dataDir, "restored", func(c *embed.Config) {
		c.ListenPeerUrls, c.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
		c.InitialCluster = "restored=" + peer.String()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer restored.Stop()
	return keyValues(t, ctx, restored.Client(t), "/registry/")
}

// triggerWithCLI sends a manual trigger with the real nats CLI and returns the decoded reply.
func triggerWithCLI(t *testing.T, ns, config string) *etcdbackupv1.TriggerBackupReply {
	t.Helper()
	body := fmt.Sprintf(`{"namespace":%q,"config":%q}`, ns, config)
	cmd := exec.Command(filepath.Join(env.Opts.ToolDir, "nats"), append(env.NATSCLIFlags(bus.IdentityTrigger),
		"request", "etcdbackup.trigger.backup", body, "--raw", "--timeout", "15s")...)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("nats request: %v\n%s", err, out)
	}
	var reply struct {
		BackupName string `json:"backupName"`
		JobName    string `json:"jobName"`
		Error      string `json:"error"`
	}
	if err := json.Unmarshal(bytes.TrimSpace(out), &reply); err != nil {
		t.Fatalf("trigger reply %q is not JSON: %v", out, err)
	}
	return &etcdbackupv1.TriggerBackupReply{BackupName: reply.BackupName, JobName: reply.JobName, Error: reply.Error}
}

// statusSubscribers counts the client connections (not JetStream's own stream capture) that
// subscribe to every status subject: the console's, and a nats CLI's sub once it is live.
func statusSubscribers(t *testing.T) int {
	t.Helper()
	connz, err := env.NATS.Connz(&server.ConnzOptions{Subscriptions: true})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range connz.Conns {
		for _, s := range c.Subs {
			if s == "etcdbackup.status.>" {
				n++
			}
		}
	}
	return n
}

// A manual trigger sent with the real nats CLI queues a backup and answers with its name.
func TestManualTriggerWithNatsCLI(t *testing.T) {
	dumpLogsOnFailure(t)
	ctx := testContext(t, 3*time.Minute)
	const cluster = "manual1"
	mustAddCluster(t, ctx, cluster, env.DemoEtcd.Endpoint)
	newConfig(t, ctx, cluster, "manual", "@every 1h", "", 5)
	waitConfig(t, ctx, "cluster-"+cluster, "manual", 30*time.Second, "scheduling active", schedulingActive)

	// A person watching with `nats sub` reads the status events as JSON: a quick backup's
	// two, the scheduler's "queued" and the uploader's Completed (the snapshotter says it
	// started only when it takes longer than --started-status-after).
	var subOut bytes.Buffer
	before := statusSubscribers(t) // the console's
	sub := exec.Command(filepath.Join(env.Opts.ToolDir, "nats"), append(env.NATSCLIFlags(bus.IdentityWatcher), "sub",
		"etcdbackup.status.>", "--raw", "--count", "2")...)
	sub.Stdout = &subOut
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Process.Kill() })
	// The subscription is live once the server counts it, besides those there before.
	err := sandbox.Poll(ctx, 10*time.Second, 50*time.Millisecond, func() (bool, error) {
		return statusSubscribers(t) > before, nil
	})
	if err != nil {
		t.Fatal(err)
	}

	reply := triggerWithCLI(t, "cluster-"+cluster, "manual")
	if reply.GetError() != "" || !strings.HasPrefix(reply.GetBackupName(), "manual-") {
		t.Fatalf("reply %+v", reply)
	}
	cfg := waitConfig(t, ctx, "cluster-"+cluster, "manual", 60*time.Second, "the triggered backup completed",
		func(c *kubermaticv1.EtcdBackupConfig) bool {
			b, ok := entry(c, reply.GetBackupName())
			return ok && b.BackupPhase == kubermaticv1.PhaseCompleted
		})
	if b, _ := entry(cfg, reply.GetBackupName()); b.JobName != reply.GetJobName() {
		t.Fatalf("job name in status %q, reply %q", b.JobName, reply.GetJobName())
	}
	waited := make(chan error, 1)
	go func() { waited <- sub.Wait() }()
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("nats sub: %v\n%s", err, subOut.String())
		}
	case <-ctx.Done():
		t.Fatalf("nats sub did not print 2 events:\n%s", subOut.String())
	}
	lines := strings.Split(strings.TrimSpace(subOut.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("nats sub printed %d lines, want 2:\n%s", len(lines), subOut.String())
	}
	for i, want := range []string{"PHASE_RUNNING", "PHASE_COMPLETED"} {
		var ev map[string]any
		if err := json.Unmarshal([]byte(lines[i]),
			&ev); err != nil || ev["backupName"] != reply.GetBackupName() || ev["phase"] != want {
			t.Fatalf("status event %d not readable JSON about %s, %s: %q (%v)", i+1, reply.GetBackupName(), want,
				lines[i], err)
		}
	}

	t.Run("unknown config is refused with the reason", func(t *testing.T) {
		r := triggerWithCLI(t, "cluster-"+cluster, "no-such-config")
		if r.GetBackupName() != "" || !strings.Contains(r.GetError(), "does not exist") {
			t.Fatalf("reply %+v", r)
		}
	})
}
