package bench

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/e2e/sandbox"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/etcdtest"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BenchmarkFairness: one busy tenant and ETCDBACKUP_BENCH_QUIET quiet ones (default 50) on the
// deploy's replica counts. The busy tenant's cluster has ETCDBACKUP_BENCH_BUSY configs (default
// 20) and 32 MiB in etcd; each quiet tenant has one config on the 1 MiB demo etcd. Every
// config is "@every 1m", all created at once, so all first slots fall in the same seconds.
// It runs twice, in a fresh sandbox each: with the scheduler's --one-per-cluster=false (the
// snapshotters' per-cluster lease alone) and with the default (one place in the queue per
// cluster), and prints side by side: the quiet tenants' slot → Completed p50, p99 and max, how
// many of the busy tenant's backups completed or failed, and the most of its backups in
// flight at once (from the snapshotter's "taking snapshot" to the uploader's Completed or a
// Failed).
func BenchmarkFairness(b *testing.B) {
	logf := func(format string, args ...any) { fmt.Printf("BenchmarkFairness: "+format+"\n", args...) }
	quiet := envInt(b, "ETCDBACKUP_BENCH_QUIET", 50)
	busy := envInt(b, "ETCDBACKUP_BENCH_BUSY", 20)
	root, err := sandbox.RepoRoot()
	if err != nil {
		b.Fatal(err)
	}
	replicas := map[string]int{}
	for _, svc := range sandbox.Services {
		if replicas[svc], err = deployReplicas(root, svc); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	var rows []string
	for _, onePerCluster := range []bool{false, true} {
		r := fairnessRound(b, replicas, quiet, busy, onePerCluster)
		mode := fmt.Sprintf("one-per-cluster=%v", onePerCluster)
		rows = append(rows, fmt.Sprintf("%-22s %8s %8s %8s %10d/%-3d %8d %12d", mode, r.p50.Round(10*time.Millisecond),
			r.p99.Round(10*time.Millisecond), r.max.Round(10*time.Millisecond), r.busyDone, busy, r.busyFailed, r.inFlight))
		suffix := map[bool]string{false: "-shared-queue", true: "-one-per-cluster"}[onePerCluster]
		b.ReportMetric(r.p99.Seconds(), "quiet-p99-s"+suffix)
		b.ReportMetric(float64(r.busyDone), "busy-completed"+suffix)
		b.ReportMetric(float64(r.inFlight), "busy-max-in-flight"+suffix)
		if onePerCluster && (r.inFlight > 1 || r.busyDone != busy || r.quietDone != quiet) {
			b.Errorf("with one backup per cluster: %d of the busy tenant's backups in flight at once, %d of %d completed, "+
				"%d of %d quiet tenants' completed", r.inFlight, r.busyDone, busy, r.quietDone, quiet)
		}
	}
	logf("1 busy tenant (%d configs, 32 MiB) and %d quiet tenants (1 config, 1 MiB), all due in the same seconds:",
		busy, quiet)
	logf("%-22s %8s %8s %8s %14s %8s %12s", "mode", "quiet p50", "p99", "max", "busy completed", "failed",
		"busy at once")
	for _, row := range rows {
		logf("%s", row)
	}
}

type fairness struct {
	p50, p99, max                             time.Duration
	quietDone, busyDone, busyFailed, inFlight int
}

// fairnessRound runs one round in a fresh sandbox and measures the first slot of every config.
func fairnessRound(b *testing.B, replicas map[string]int, quiet, busy int, onePerCluster bool) fairness {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	// Every attempt says when it starts ("taking snapshot"), however quick: what the most in
	// flight is counted from.
	env := startEnv(b, ctx, replicas, map[string][]string{
		"scheduler":   {fmt.Sprintf("--one-per-cluster=%v", onePerCluster)},
		"snapshotter": {"--started-status-after=0"}})
	defer env.Close()
	cli, err := env.DemoEtcdClient()
	if err != nil {
		b.Fatal(err)
	}
	fill(b, ctx, cli, env.DemoEtcd.Endpoint, 1)
	cli.Close()
	big := etcdtest.Start(b)
	bigCli := big.Client(b)
	fill(b, ctx, bigCli, big.Endpoint, 32)

	nc, err := env.NATSClient(bus.IdentityWatcher)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	var mu sync.Mutex
	done := map[string]time.Duration{} // cluster/backup -> slot → Completed
	failed := map[string]bool{}
	started := map[string]bool{}
	inFlight, most := 0, 0
	sub, err := nc.Subscribe(bus.SubjectStatusAll, func(m *nats.Msg) {
		var ev etcdbackupv1.StatusEvent
		if bus.Decode(m.Data, m.Header.Get(bus.HeaderContentType), &ev) != nil ||
			ev.GetOperation() != etcdbackupv1.Operation_OPERATION_UNSPECIFIED &&
				ev.GetOperation() != etcdbackupv1.Operation_OPERATION_BACKUP {
			return
		}
		key := ev.GetCluster() + "/" + ev.GetBackupName()
		mu.Lock()
		defer mu.Unlock()
		end := false
		switch {
		case ev.GetPhase() == etcdbackupv1.Phase_PHASE_COMPLETED && ev.GetStage() == etcdbackupv1.Stage_STAGE_UPLOADER:
			done[key] = ev.GetTime().AsTime().Sub(ev.GetScheduledTime().AsTime())
			end = true
		case ev.GetPhase() == etcdbackupv1.Phase_PHASE_FAILED:
			failed[key], end = true, true
		case ev.GetStage() == etcdbackupv1.Stage_STAGE_SNAPSHOTTER && ev.GetCluster() == "busy" && !started[key] &&
			strings.HasPrefix(ev.GetMessage(), "taking snapshot (attempt"):
			started[key] = true
			inFlight++
			most = max(most, inFlight)
		}
		if end && ev.GetCluster() == "busy" && started[key] {
			started[key] = false
			inFlight--
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	type config struct{ cluster, name string }
	var configs []config
	if err := env.AddCluster(ctx, "busy", big.Endpoint); err != nil {
		b.Fatal(err)
	}
	for i := range busy {
		configs = append(configs, config{"busy", fmt.Sprintf("busy-%02d", i)})
	}
	for i := range quiet {
		name := fmt.Sprintf("quiet-%02d", i)
		g.Go(func() error { return env.AddCluster(gctx, name, env.DemoEtcd.Endpoint) })
		configs = append(configs, config{name, "every-minute"})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	var amu sync.Mutex
	slots := map[string]time.Time{}     // cluster/backup of the first slot
	g, gctx = errgroup.WithContext(ctx) // the first group's context ended with its Wait
	g.SetLimit(8)
	for _, c := range configs {
		g.Go(func() error {
			cfg := &kubermaticv1.EtcdBackupConfig{
				ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-" + c.cluster, Name: c.name},
				Spec: kubermaticv1.EtcdBackupConfigSpec{Schedule: "@every 1m", Cluster: corev1.ObjectReference{
					APIVersion: kubermaticv1.GroupVersion.String(), Kind: "Cluster", Name: c.cluster}},
			}
			if err := env.Client.Create(gctx, cfg); err != nil {
				return err
			}
			slot := cfg.CreationTimestamp.Add(time.Minute)
			amu.Lock()
			slots[c.cluster+"/"+backupname.Backup(c.name, slot)] = slot
			amu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	var last time.Time
	for _, s := range slots {
		if s.After(last) {
			last = s
		}
	}
	// Every first slot had 100 s to end; the next minute's slots are not counted.
	err = sandbox.Poll(ctx, time.Until(last.Add(100*time.Second)), time.Second, func() (bool, error) {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for k := range slots {
			if _, ok := done[k]; ok || failed[k] {
				n++
			}
		}
		return n == len(slots), fmt.Errorf("%d of %d first slots ended", n, len(slots))
	})
	if err != nil {
		b.Logf("one-per-cluster=%v: %v", onePerCluster, err)
	}
	mu.Lock()
	defer mu.Unlock()
	var r fairness
	var lat []time.Duration
	for k := range slots {
		d, ok := done[k]
		switch {
		case strings.HasPrefix(k, "busy/") && ok:
			r.busyDone++
		case strings.HasPrefix(k, "busy/") && failed[k]:
			r.busyFailed++
		case ok:
			r.quietDone++
			lat = append(lat, d)
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	r.p50, r.p99, r.max, r.inFlight = pct(lat, 50), pct(lat, 99), pct(lat, 100), most
	return r
}
