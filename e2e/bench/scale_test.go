package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/e2e/sandbox"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/procstat"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func envInt(b *testing.B, name string, def int) int {
	b.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// BenchmarkScale is B5 and the soak mode: ETCDBACKUP_BENCH_CONFIGS clusters (default 1000),
// each with one config "@every 1m", for ETCDBACKUP_BENCH_MINUTES (default 10), with the
// replica counts deploy/k8s ships. All clusters' etcd is the demo etcd holding about 1 MiB.
// Each minute it prints the slots due (by their scheduled time), the backups completed, p50,
// p99 and max of slot → Completed (the uploader's event), the backlog of every stream, and
// the RSS and goroutines of every service process. At the end it reports the minute's
// figures over the whole run and fails if a slot due before the last minute did not complete.
// With ETCDBACKUP_BENCH_PROFILE_DIR it stores a 30-second CPU profile and a heap profile of every
// scheduler, snapshotter, uploader and pruner replica there at the end of the second minute, and
// CPU profiles of kube-apiserver and of this process (NATS, both etcds, the harness) over the
// same 30 seconds.
func BenchmarkScale(b *testing.B) {
	// The report goes to stdout as it is made: the testing package cuts a benchmark's log
	// short, and a 10-minute soak should show its minutes as they pass.
	logf := func(format string, args ...any) { fmt.Printf("BenchmarkScale: "+format+"\n", args...) }
	configs := envInt(b, "ETCDBACKUP_BENCH_CONFIGS", 1000)
	minutes := envInt(b, "ETCDBACKUP_BENCH_MINUTES", 10)
	// Spread: the configs are created over this many seconds, so their @every slots are
	// spread as configs created over time would be; 0 creates them at once and every slot of a
	// minute falls within the few seconds creation takes (the burst a cron schedule such as
	// "0 * * * *" gives).
	spread := time.Duration(envInt(b, "ETCDBACKUP_BENCH_SPREAD_SECONDS", 0)) * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(minutes+30)*time.Minute)
	defer cancel()
	root, err := sandbox.RepoRoot()
	if err != nil {
		b.Fatal(err)
	}
	replicas := map[string]int{}
	for _, svc := range sandbox.Services {
		n, err := deployReplicas(root, svc)
		if err != nil {
			b.Fatal(err)
		}
		replicas[svc] = n
	}
	args := map[string][]string{}
	// ETCDBACKUP_BENCH_SCHEDULER_ARGS adds flags to the scheduler (e.g. --status-last-backups=false),
	// to measure a setting before it becomes a default.
	if extra := strings.Fields(os.Getenv("ETCDBACKUP_BENCH_SCHEDULER_ARGS")); len(extra) > 0 {
		args["scheduler"] = extra
		b.Logf("scheduler flags added: %s", strings.Join(extra, " "))
	}
	profiled := []string{"scheduler", "snapshotter", "uploader", "pruner"}
	profiles := profiledArgs(args, profiled...)
	env := startEnv(b, ctx, replicas, args)
	cli, err := env.DemoEtcdClient()
	if err != nil {
		b.Fatal(err)
	}
	fill(b, ctx, cli, env.DemoEtcd.Endpoint, 1)
	cli.Close()

	// Latency of every completed backup, from the uploader's status events.
	nc, err := env.NATSClient(bus.IdentityWatcher)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	var mu sync.Mutex
	done := map[string]time.Duration{} // backup name (cluster-qualified) -> slot → Completed
	failed := map[string]string{}
	sub, err := nc.Subscribe("etcdbackup.status.>", func(m *nats.Msg) {
		var ev etcdbackupv1.StatusEvent
		if bus.Decode(m.Data, m.Header.Get(bus.HeaderContentType),
			&ev) != nil || ev.GetOperation() == etcdbackupv1.Operation_OPERATION_RESTORE {
			return
		}
		key := ev.GetCluster() + "/" + ev.GetBackupName()
		mu.Lock()
		defer mu.Unlock()
		switch ev.GetPhase() {
		case etcdbackupv1.Phase_PHASE_COMPLETED:
			if ev.GetStage() == etcdbackupv1.Stage_STAGE_UPLOADER {
				done[key] = ev.GetTime().AsTime().Sub(ev.GetScheduledTime().AsTime())
			}
		case etcdbackupv1.Phase_PHASE_FAILED:
			failed[key] = ev.GetMessage()
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()

	b.ResetTimer()
	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	type slotOf struct {
		cluster string
		anchor  time.Time
	}
	var anchors []slotOf
	var amu sync.Mutex
	for i := range configs {
		if spread > 0 {
			// Config i is created at start + i/configs × spread.
			at := start.Add(spread * time.Duration(i) / time.Duration(configs))
			if d := time.Until(at); d > 0 {
				select {
				case <-time.After(d):
				case <-gctx.Done():
				}
			}
		}
		g.Go(func() error {
			name := fmt.Sprintf("scale-%04d", i)
			if err := env.AddCluster(gctx, name, env.DemoEtcd.Endpoint); err != nil {
				return err
			}
			cfg := &kubermaticv1.EtcdBackupConfig{
				ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-" + name, Name: "every-minute"},
				Spec: kubermaticv1.EtcdBackupConfigSpec{
					Cluster:  corev1.ObjectReference{APIVersion: kubermaticv1.GroupVersion.String(), Kind: "Cluster", Name: name},
					Schedule: "@every 1m",
				},
			}
			if err := env.Client.Create(gctx, cfg); err != nil {
				return err
			}
			amu.Lock()
			anchors = append(anchors, slotOf{name, cfg.CreationTimestamp.Time})
			amu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	logf("%d clusters and configs created in %s (spread over %s); the demo etcd holds 1 MiB of objects", configs,
		time.Since(start).Round(time.Second), spread)

	// due lists the slots (cluster/backup) scheduled in [from, to).
	due := func(from, to time.Time) []string {
		var out []string
		for _, a := range anchors {
			for at := a.anchor.Add(time.Minute); at.Before(to); at = at.Add(time.Minute) {
				if !at.Before(from) {
					out = append(out, a.cluster+"/"+backupname.Backup("every-minute", at))
				}
			}
		}
		return out
	}
	logf("%-6s %6s %9s %8s %8s %8s  %s", "minute", "due", "completed", "p50", "p99", "max",
		"backlog; RSS MiB/goroutines per service; CPU seconds in the minute")
	cpu := newCPUMeter(env)
	var worst struct{ p99, max time.Duration }
	var missing []string
	t0 := start.Add(time.Minute + spread).Truncate(time.Second)
	for m := range minutes {
		from, to := t0.Add(time.Duration(m)*time.Minute), t0.Add(time.Duration(m+1)*time.Minute)
		// Wait until the minute's slots had a minute to complete (the next minute's end).
		wait := time.NewTimer(time.Until(to.Add(time.Minute)))
		select {
		case <-wait.C:
		case <-ctx.Done():
			b.Fatal(ctx.Err())
		}
		if m == 0 && profiles != "" {
			var seed errgroup.Group
			seed.Go(func() error { return profileSeed(ctx, env, profiles, 30*time.Second) })
			profileServices(ctx, b, env, profiles, profiled...)
			if err := seed.Wait(); err != nil {
				b.Error(err)
			}
		}
		slots := due(from, to)
		var lat []time.Duration
		mu.Lock()
		for _, s := range slots {
			if d, ok := done[s]; ok {
				lat = append(lat, d)
			} else if m < minutes-1 {
				missing = append(missing, s)
			}
		}
		mu.Unlock()
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		p50, p99, mx := pct(lat, 50), pct(lat, 99), pct(lat, 100)
		worst.p99, worst.max = max(worst.p99, p99), max(worst.max, mx)
		logf("%-6d %6d %9d %8s %8s %8s  %s; %s; %s", m+1, len(slots), len(lat), p50.Round(10*time.Millisecond),
			p99.Round(10*time.Millisecond), mx.Round(10*time.Millisecond), backlog(b, env), soak(ctx, env), cpu.minute())
	}
	mu.Lock()
	nfailed := len(failed)
	logf("failed backups: %d", nfailed)
	for k, v := range failed {
		logf("  %s: %s", k, v)
		break
	}
	mu.Unlock()
	name := "B5-burst"
	if spread > 0 {
		name = "B5-spread"
	}
	reportTarget(name, worst.p99.Seconds(), 30, "s", fmt.Sprintf(
		"the worst minute's p99 slot → Completed, %d configs every minute for %d minutes (created over %s), "+
			"%d slots not completed within a minute after theirs, %d failed", configs, minutes, spread, len(missing),
		nfailed))
	b.ReportMetric(float64(configs), "configs")
	b.ReportMetric(worst.p99.Seconds(), "worst-minute-p99-s")
	b.ReportMetric(worst.max.Seconds(), "worst-minute-max-s")
	b.ReportMetric(float64(len(missing)), "slots-not-completed")
	if len(missing) > 0 {
		b.Errorf("%d slots did not complete within a minute after theirs, e.g. %s", len(missing), missing[0])
	}
}

func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (len(sorted)*p + 99) / 100
	return sorted[min(max(i-1, 0), len(sorted)-1)]
}

// backlog is what waits in each stream: messages in the work queues, unprocessed messages of
// the status writer's and the planner's consumers.
func backlog(b *testing.B, env *sandbox.Env) string {
	b.Helper()
	jsz, err := env.NATS.Jsz(&server.JSzOptions{Accounts: true, Streams: true, Consumer: true})
	if err != nil {
		b.Fatal(err)
	}
	var parts []string
	for _, a := range jsz.AccountDetails {
		for _, s := range a.Streams {
			switch s.Name {
			case bus.StreamRequests, bus.StreamSnapshots, bus.StreamDeletes:
				parts = append(parts, fmt.Sprintf("%s %d", strings.TrimPrefix(s.Name, "ETCDBACKUP_"), s.State.Msgs))
			case "OBJ_" + bus.StagingBucket:
				parts = append(parts, fmt.Sprintf("staging %d consumers", s.State.Consumers))
			default:
				for _, c := range s.Consumer {
					parts = append(parts, fmt.Sprintf("%s/%s %d", strings.TrimPrefix(s.Name, "ETCDBACKUP_"), c.Name,
						c.NumPending+uint64(c.NumAckPending)))
				}
			}
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// soak is each service replica's RSS and goroutines now.
func soak(ctx context.Context, env *sandbox.Env) string {
	var parts []string
	for _, s := range env.Services {
		m, err := procstat.Read(s.Pid())
		if err != nil {
			parts = append(parts, s.Name+" ?")
			continue
		}
		g, _ := s.Metric(ctx, "go_goroutines", nil)
		parts = append(parts, fmt.Sprintf("%s %.0f/%.0f", s.Name, float64(m.RSS)/(1<<20), g))
	}
	return strings.Join(parts, " ")
}

// deployReplicas reads the replica count deploy/k8s ships for service svc.
func deployReplicas(root, svc string) (int, error) {
	objs, err := sandbox.ReadObjects(filepath.Join(root, "deploy", "k8s", svc+".yaml"))
	if err != nil {
		return 0, err
	}
	for _, o := range objs {
		if o.GetKind() == "Deployment" {
			// YAML numbers decode as float64 here.
			if n, ok, _ := unstructured.NestedFieldNoCopy(o.Object, "spec", "replicas"); ok {
				if f, isNum := n.(float64); isNum {
					return int(f), nil
				}
				if i, isInt := n.(int64); isInt {
					return int(i), nil
				}
			}
		}
	}
	return 1, nil
}

// cpuMeter reports the CPU time each component used since its last report: every service
// (replicas summed), kube-apiserver, kube-controller-manager, the S3 server, and this process
// (the embedded NATS server, both etcds and the harness).
type cpuMeter struct {
	env      *sandbox.Env
	last     map[string]time.Duration
	lastReqs map[string]float64
}

func newCPUMeter(env *sandbox.Env) *cpuMeter {
	m := &cpuMeter{env: env, last: map[string]time.Duration{}}
	m.minute()
	return m
}

func (m *cpuMeter) minute() string {
	now := map[string]time.Duration{}
	add := func(name string, pid int) {
		if d, err := procstat.CPU(pid); err == nil {
			now[name] += d
		}
	}
	for _, s := range m.env.Services {
		add(s.Kind, s.Pid())
	}
	add("kube-apiserver", m.env.API.Pid())
	if m.env.ControllerManager != nil {
		add("kube-controller-manager", m.env.ControllerManager.Pid())
	}
	add("s3", m.env.S3.Pid())
	add("nats+etcd+harness", 0)
	names := make([]string, 0, len(now))
	var total time.Duration
	for n := range now {
		names = append(names, n)
		total += now[n] - m.last[n]
	}
	sort.Strings(names)
	parts := []string{fmt.Sprintf("total %.0f", total.Seconds())}
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s %.1f", n, (now[n]-m.last[n]).Seconds()))
	}
	m.last = now
	return strings.Join(parts, " ") + "; " + m.requests()
}

// requests is kube-apiserver's busiest request kinds since the last report.
func (m *cpuMeter) requests() string {
	now, err := m.env.API.Requests(context.Background())
	if err != nil {
		return "API requests: " + err.Error()
	}
	type kind struct {
		name string
		n    float64
	}
	var kinds []kind
	var total float64
	for k, v := range now {
		if d := v - m.lastReqs[k]; d > 0 {
			kinds = append(kinds, kind{k, d})
			total += d
		}
	}
	m.lastReqs = now
	sort.Slice(kinds, func(i, j int) bool { return kinds[i].n > kinds[j].n })
	parts := []string{fmt.Sprintf("API requests %.0f", total)}
	for _, k := range kinds[:min(len(kinds), 8)] {
		parts = append(parts, fmt.Sprintf("%s %.0f", k.name, k.n))
	}
	return strings.Join(parts, " ")
}

// profileSeed stores CPU profiles over the next d of kube-apiserver (kube-apiserver.cpu.pprof)
// and of this process, which embeds NATS and both etcds (harness.cpu.pprof), in dir.
func profileSeed(ctx context.Context, env *sandbox.Env, dir string, d time.Duration) error {
	var g errgroup.Group
	g.Go(func() error {
		data, err := env.API.CPUProfile(ctx, d)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, "kube-apiserver.cpu.pprof"), data, 0o600)
	})
	g.Go(func() error {
		f, err := os.Create(filepath.Join(dir, "harness.cpu.pprof"))
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return err
		}
		window := time.NewTimer(d)
		defer window.Stop()
		select {
		case <-window.C:
		case <-ctx.Done():
		}
		pprof.StopCPUProfile()
		return errors.Join(f.Close(), ctx.Err())
	})
	return g.Wait()
}
