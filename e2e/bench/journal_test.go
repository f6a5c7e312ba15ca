package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
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
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/journal"
	"github.com/etcd-backup/etcdbackup/pkg/procstat"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BenchmarkJournalScale is issue 22's scale figure: ETCDBACKUP_BENCH_JOURNAL_CLUSTERS
// continuous clusters (default 1,000, which this 2-core machine carries with everything else
// on it, measured in docs/operations.md) journaled for
// ETCDBACKUP_BENCH_JOURNAL_MINUTES (default 10) with the replica counts and journal flags
// deploy/k8s ships (segments every 10 s, the condition every minute). Every cluster's etcd is
// the demo etcd, written at 5 revisions a second: each config's journal watches it, publishes
// its 5 revisions a second and seals a segment of them every 10 s, as that many clusters at 5
// revisions a second each would make it do (the source etcd serves that many watchers instead
// of that many etcds serving one each).
// Each minute it prints the CPU seconds of every component, the RSS of every service
// replica, and the RPO of a sample of 20 configs: p99 from the put's return to the revision
// on the bus (the configs' journal subjects, read by an ordered consumer), and to the
// revision in a segment in the bucket (polled every 500 ms), sampled among the configs that
// have a segment 10 minutes after the first was created (configs-without-segment counts the
// others). It fails when none has, and when a sampled revision written before the last minute
// is in no segment.
func BenchmarkJournalScale(b *testing.B) {
	logf := func(format string, args ...any) { fmt.Printf("BenchmarkJournalScale: "+format+"\n", args...) }
	clusters := envInt(b, "ETCDBACKUP_BENCH_JOURNAL_CLUSTERS", 1000)
	minutes := envInt(b, "ETCDBACKUP_BENCH_JOURNAL_MINUTES", 10)
	const rate, sample = 5, 20
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(minutes+30)*time.Minute)
	defer cancel()
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
	// The deploy's journal flags, not the sandbox's faster pace.
	journalArgs := []string{"--segment-interval=10s", "--status-interval=1m", "--claim-interval=3s"}
	args := map[string][]string{"journal": journalArgs}
	profiles := profiledArgs(args, "journal")
	env := startEnv(b, ctx, replicas, args)
	cli, err := env.DemoEtcdClient()
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	bucket, err := destination.OpenS3(env.S3.Host, false, env.S3.AccessKey, env.S3.SecretKey, sandbox.Bucket)
	if err != nil {
		b.Fatal(err)
	}

	start := time.Now()
	type config struct{ ns, subject, dir string }
	configs := make([]config, clusters)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := range clusters {
		g.Go(func() error {
			name := fmt.Sprintf("journal-%04d", i)
			if err := env.AddCluster(gctx, name, env.DemoEtcd.Endpoint); err != nil {
				return err
			}
			cfg := &kubermaticv1.EtcdBackupConfig{
				ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-" + name, Name: "daily",
					Annotations: map[string]string{kubermaticv1.AnnotationContinuous: kubermaticv1.ContinuousOn}},
				Spec: kubermaticv1.EtcdBackupConfigSpec{
					Cluster:  corev1.ObjectReference{APIVersion: kubermaticv1.GroupVersion.String(), Kind: "Cluster", Name: name},
					Schedule: "0 1 * * *",
				},
			}
			if err := env.Client.Create(gctx, cfg); err != nil {
				return err
			}
			configs[i] = config{ns: cfg.Namespace, subject: bus.JournalSubject(cfg.Namespace, string(cfg.UID)),
				dir: journal.Timeline{Name: journal.InitialTimeline}.Dir(backupname.Prefix(name, cfg.Namespace, "daily"))}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	logf("%d clusters and continuous configs created in %s", clusters, time.Since(start).Round(time.Second))

	// The writer: rate revisions a second, each put's return time by its revision.
	var mu sync.Mutex
	committed := map[int64]time.Time{}
	wctx, stopWriter := context.WithCancel(ctx)
	defer stopWriter()
	var writer sync.WaitGroup
	writer.Go(func() {
		tick := time.NewTicker(time.Second / rate)
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-wctx.Done():
				return
			case <-tick.C:
			}
			resp, err := cli.Put(wctx, fmt.Sprintf("/registry/pods/scale/p%d", n%500), fmt.Sprintf("%0900d", n))
			if err == nil {
				mu.Lock()
				committed[resp.Header.Revision] = time.Now()
				mu.Unlock()
			}
		}
	})
	// Every config followed: a segment of each in the bucket.
	tails := make(map[string]*journal.Tail, len(configs))
	for _, c := range configs {
		tails[c.dir] = &journal.Tail{Bucket: bucket, Dir: c.dir}
	}
	// Past 10 minutes the benchmark measures with the configs that have one, and says how
	// many have none: what a machine too small for that many configs shows.
	journaled := map[string]bool{}
	err = sandbox.Poll(ctx, 10*time.Minute, 5*time.Second, func() (bool, error) {
		for _, c := range configs {
			if journaled[c.dir] {
				continue
			}
			if last, err := tails[c.dir].Last(ctx); err == nil && last > 0 {
				journaled[c.dir] = true
			}
		}
		return len(journaled) == len(configs), fmt.Errorf("%d of %d configs have no segment", len(configs)-len(journaled),
			len(configs))
	})
	var sampled []config
	for _, c := range configs {
		if journaled[c.dir] && len(sampled) < sample {
			sampled = append(sampled, c)
		}
	}
	if err != nil {
		journalLogSummary(b, env)
		if len(sampled) == 0 {
			b.Fatal(err)
		}
		logf("measuring anyway: %v", err)
	} else {
		logf("every config journaled %s after the first was created", time.Since(start).Round(time.Second))
	}
	b.ReportMetric(float64(len(configs)-len(journaled)), "configs-without-segment")

	// The sample's arrival on the bus, and in the bucket.
	onBus := map[string]map[int64]time.Time{}
	inBucket := map[string]map[int64]time.Time{}
	subjects := make([]string, 0, len(sampled))
	for _, c := range sampled {
		onBus[c.subject], inBucket[c.dir] = map[int64]time.Time{}, map[int64]time.Time{}
		subjects = append(subjects, c.subject)
	}
	nc, err := env.NATSClient(bus.IdentityJournal)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	cons, err := js.OrderedConsumer(ctx, bus.StreamJournal, jetstream.OrderedConsumerConfig{FilterSubjects: subjects,
		DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		b.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		if revs, err := journal.DecodeBatch(m.Data()); err == nil {
			now := time.Now()
			mu.Lock()
			for _, rev := range revs {
				if _, seen := onBus[m.Subject()][rev.GetRevision()]; !seen {
					onBus[m.Subject()][rev.GetRevision()] = now
				}
			}
			mu.Unlock()
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Stop()
	pctx, stopPolling := context.WithCancel(ctx)
	defer stopPolling()
	var poller sync.WaitGroup
	poller.Go(func() {
		sealed := map[string]int64{}
		for pctx.Err() == nil {
			for _, c := range sampled {
				last, err := tails[c.dir].Last(pctx)
				if err != nil {
					continue
				}
				now := time.Now()
				mu.Lock()
				for r := max(sealed[c.dir]+1, last-10_000); r <= last; r++ {
					inBucket[c.dir][r] = now
				}
				mu.Unlock()
				sealed[c.dir] = max(sealed[c.dir], last)
			}
			select {
			case <-pctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
	})

	logf("%-6s %9s %9s %12s  %s", "minute", "bus-p99", "seg-p99", "revisions", "RSS MiB/goroutines per service; "+
		"CPU seconds in the minute")
	cpu := newCPUMeter(env)
	b.ResetTimer()
	t0 := time.Now()
	var worstBus, worstSeg time.Duration
	var firstRSS, lastRSS float64
	missing := 0
	for m := range minutes {
		from, to := t0.Add(time.Duration(m)*time.Minute), t0.Add(time.Duration(m+1)*time.Minute)
		// The minute's revisions get 30 s to reach a segment (10 s interval, then the upload).
		wait := time.NewTimer(time.Until(to.Add(30 * time.Second)))
		select {
		case <-wait.C:
		case <-ctx.Done():
			b.Fatal(ctx.Err())
		}
		var busLag, segLag []time.Duration
		revs := 0
		mu.Lock()
		for rev, at := range committed {
			if at.Before(from) || !at.Before(to) {
				continue
			}
			revs++
			for _, c := range sampled {
				if t, ok := onBus[c.subject][rev]; ok {
					busLag = append(busLag, t.Sub(at))
				}
				if t, ok := inBucket[c.dir][rev]; ok {
					segLag = append(segLag, t.Sub(at))
				} else if m < minutes-1 {
					missing++
				}
			}
		}
		mu.Unlock()
		sort.Slice(busLag, func(i, j int) bool { return busLag[i] < busLag[j] })
		sort.Slice(segLag, func(i, j int) bool { return segLag[i] < segLag[j] })
		worstBus, worstSeg = max(worstBus, pct(busLag, 99)), max(worstSeg, pct(segLag, 99))
		rss := journalRSS(env)
		if m == 0 {
			firstRSS = rss
		}
		lastRSS = rss
		if m == 1 && profiles != "" {
			profileServices(ctx, b, env, profiles, "journal")
		}
		logf("%-6d %9s %9s %12d  %s; %s", m+1, pct(busLag, 99).Round(time.Millisecond),
			pct(segLag, 99).Round(10*time.Millisecond), revs, soak(ctx, env), cpu.minute())
	}
	stopWriter()
	writer.Wait()
	stopPolling()
	poller.Wait()
	b.ReportMetric(float64(clusters), "clusters")
	b.ReportMetric(worstBus.Seconds(), "worst-minute-bus-p99-s")
	b.ReportMetric(worstSeg.Seconds(), "worst-minute-segment-p99-s")
	b.ReportMetric(firstRSS, "journal-rss-first-minute-MiB")
	b.ReportMetric(lastRSS, "journal-rss-last-minute-MiB")
	if missing > 0 {
		b.Errorf("%d sampled revisions were in no segment 30 s after their minute", missing)
	}
}

// journalRSS is the RSS of the journal's replicas, summed, in MiB.
func journalRSS(env *sandbox.Env) float64 {
	var sum float64
	for _, s := range env.ServicesOf("journal") {
		if m, err := procstat.Read(s.Pid()); err == nil {
			sum += float64(m.RSS) / (1 << 20)
		}
	}
	return sum
}

// journalLogSummary prints, for each journal replica, how often its log says each thing, the
// warnings and errors by message and error (cut to 120 characters): why configs are not
// journaled, after the state directory is gone.
func journalLogSummary(b *testing.B, env *sandbox.Env) {
	b.Helper()
	for _, s := range env.Services {
		if s.Kind != "journal" {
			continue
		}
		data, err := os.ReadFile(s.LogPath)
		if err != nil {
			b.Log(err)
			continue
		}
		counts := map[string]int{}
		for line := range strings.SplitSeq(string(data), "\n") {
			msg, errText := logField(line, "msg"), logField(line, "err")
			if msg == "" {
				continue
			}
			key := msg
			if errText != "" {
				key += ": " + errText
			}
			if len(key) > 160 {
				key = key[:160]
			}
			counts[key]++
		}
		keys := make([]string, 0, len(counts))
		for k := range counts {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool { return counts[keys[i]] > counts[keys[j]] })
		fmt.Printf("BenchmarkJournalScale: %s's log:\n", s.Name)
		for _, k := range keys[:min(25, len(keys))] {
			fmt.Printf("  %6d  %s\n", counts[k], k)
		}
	}
}

// logField reads key=value (or key="quoted value") from a text log line.
func logField(line, key string) string {
	i := strings.Index(line, " "+key+"=")
	if i < 0 {
		return ""
	}
	v := line[i+len(key)+2:]
	if strings.HasPrefix(v, "\"") {
		if u, err := strconv.QuotedPrefix(v); err == nil {
			if s, err := strconv.Unquote(u); err == nil {
				return s
			}
		}
		return v
	}
	if j := strings.IndexByte(v, ' '); j >= 0 {
		return v[:j]
	}
	return v
}

// profileServices stores a 30-second CPU profile and a heap profile of every replica of each
// service in dir (ETCDBACKUP_BENCH_PROFILE_DIR: the replicas run with --debug-pprof), all
// taken at once.
func profileServices(ctx context.Context, b *testing.B, env *sandbox.Env, dir string, services ...string) {
	b.Helper()
	var g errgroup.Group
	for _, svc := range services {
		for _, s := range env.ServicesOf(svc) {
			for kind, path := range map[string]string{"cpu": "profile?seconds=30", "heap": "heap"} {
				g.Go(func() error { return fetchProfile(ctx, s, path, filepath.Join(dir, s.Name+"."+kind+".pprof")) })
			}
		}
	}
	if err := g.Wait(); err != nil {
		b.Error(err)
	}
}

// profiledArgs adds --debug-pprof to the arguments of each service when
// ETCDBACKUP_BENCH_PROFILE_DIR is set, and returns that directory ("" when not).
func profiledArgs(args map[string][]string, services ...string) string {
	dir := os.Getenv("ETCDBACKUP_BENCH_PROFILE_DIR")
	if dir != "" {
		for _, svc := range services {
			args[svc] = append(args[svc], "--debug-pprof")
		}
	}
	return dir
}

func fetchProfile(ctx context.Context, s *sandbox.Service, what, path string) error {
	url := strings.TrimSuffix(s.MetricsURL, "/metrics") + "/debug/pprof/" + what
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	fmt.Printf("bench: %s of %s in %s\n", what, s.Name, path)
	return os.WriteFile(path, data, 0o600)
}
