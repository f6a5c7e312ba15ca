// Package bench measures the backup pipeline against real components: `make bench`.
//
// ETCDBACKUP_BENCH_MIB sets the etcd database size to back up (default 256), and
// ETCDBACKUP_BENCH_DATA its data (BenchmarkBackup: kube, the default, or configmaps). Reported per
// run: etcd's raw snapshot stream rate (read to /dev/null, the ceiling), the pipeline's
// snapshot and upload times, and the peak RSS of the snapshotter and uploader processes.
package bench

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/e2e/sandbox"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/procstat"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/minio/minio-go/v7"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	clientv3 "go.etcd.io/etcd/client/v3"
	etcdsnapshot "go.etcd.io/etcd/client/v3/snapshot"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// benchMiB is ETCDBACKUP_BENCH_MIB, the etcd database size to back up, default 256.
func benchMiB(b *testing.B) int {
	b.Helper()
	v := os.Getenv("ETCDBACKUP_BENCH_MIB")
	if v == "" {
		return 256
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		b.Fatalf("ETCDBACKUP_BENCH_MIB: %v", err)
	}
	return n
}

func BenchmarkBackup(b *testing.B) {
	mib := benchMiB(b)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	// ETCDBACKUP_BENCH_SNAPSHOTTER_ARGS adds flags to the snapshotter (e.g. --zstd-level=fastest),
	// to measure a setting before it becomes a default.
	var args map[string][]string
	if extra := strings.Fields(os.Getenv("ETCDBACKUP_BENCH_SNAPSHOTTER_ARGS")); len(extra) > 0 {
		args = map[string][]string{"snapshotter": extra}
		b.Logf("snapshotter flags added: %s", strings.Join(extra, " "))
	}
	if args == nil {
		args = map[string][]string{}
	}
	profiles := profiledArgs(args, "snapshotter", "uploader")
	env := startEnv(b, ctx, nil, args)

	cli, err := env.DemoEtcdClient()
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	dbSize := fillData(b, ctx, cli, env.DemoEtcd.Endpoint, mib)
	raw := rawStream(b, ctx, env)

	cfg := &kubermaticv1.EtcdBackupConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-" + sandbox.DemoCluster, Name: "bench"},
		Spec: kubermaticv1.EtcdBackupConfigSpec{
			Cluster:  corev1.ObjectReference{APIVersion: "kubermatic.k8c.io/v1", Kind: "Cluster", Name: sandbox.DemoCluster},
			Schedule: "@every 24h",
		},
	}
	if err := env.Client.Create(ctx, cfg); err != nil {
		b.Fatal(err)
	}
	idle := map[string]procstat.Memory{}
	for _, svc := range []string{"snapshotter", "uploader"} {
		m, err := procstat.Read(env.ServicesOf(svc)[0].Pid())
		if err != nil {
			b.Fatal(err)
		}
		idle[svc] = m
	}
	b.ResetTimer()
	for range b.N {
		samplers := map[string]*procstat.Sampler{}
		for _, svc := range []string{"snapshotter", "uploader"} {
			samplers[svc] = procstat.SampleProcess(env.ServicesOf(svc)[0].Pid(), 20*time.Millisecond)
		}
		// With ETCDBACKUP_BENCH_PROFILE_DIR, a CPU profile of each stage across the whole backup.
		var profiled errgroup.Group
		if profiles != "" {
			for _, svc := range []string{"snapshotter", "uploader"} {
				s := env.ServicesOf(svc)[0]
				profiled.Go(func() error {
					return fetchProfile(ctx, s, "profile?seconds=20", filepath.Join(profiles, s.Name+".cpu.pprof"))
				})
			}
		}
		entry := backupOnce(b, ctx, env, "cluster-"+sandbox.DemoCluster, "bench")
		if err := profiled.Wait(); err != nil {
			b.Error(err)
		}
		total := entry.BackupFinishedTime.Sub(entry.BackupStartTime.Time)
		b.ReportMetric(float64(dbSize)/(1<<20), "db-MiB")
		b.ReportMetric(float64(entry.Size)/(1<<20), "stored-MiB")
		b.ReportMetric(raw.Seconds(), "etcd-raw-stream-s")
		b.ReportMetric(float64(dbSize)/(1<<20)/raw.Seconds(), "etcd-raw-MiB/s")
		b.ReportMetric(total.Seconds(), "backup-s")
		for _, svc := range []string{"snapshotter", "uploader"} {
			rss, err := env.ServicesOf(svc)[0].PeakRSS()
			if err != nil {
				b.Fatal(err)
			}
			anon, file := samplers[svc].Stop()
			b.ReportMetric(float64(rss)/(1<<20), svc+"-peak-RSS-MiB")
			b.ReportMetric(float64(anon)/(1<<20), svc+"-peak-anon-MiB")
			b.Logf("B3 %s peak RSS %.1f MiB (target ≤ 64): sampled peaks %.1f MiB anonymous (heap, stacks), %.1f MiB "+
				"file-backed (its binary's pages); before the backup %.1f MiB (%.1f anonymous, %.1f file)",
				svc, float64(rss)/(1<<20), float64(anon)/(1<<20), float64(file)/(1<<20), float64(idle[svc].RSS)/(1<<20),
				float64(idle[svc].RssAnon)/(1<<20), float64(idle[svc].RssFile)/(1<<20))
			reportTarget("B3-"+svc, float64(rss)/(1<<20), 64, " MiB", fmt.Sprintf(
				"peak RSS during the backup: %.1f MiB anonymous, %.1f MiB its binary's pages", float64(anon)/(1<<20),
				float64(file)/(1<<20)))
		}
		lines, snap, upload, triggered := stageTimes(b, ctx, env, entry.BackupName)
		b.ReportMetric(snap.Seconds(), "snapshot-s")
		b.ReportMetric(float64(dbSize)/(1<<20)/snap.Seconds(), "snapshot-MiB/s")
		b.ReportMetric(upload.Seconds(), "upload-s")
		b.ReportMetric(triggered.Seconds(), "trigger-to-completed-s")
		for _, l := range lines {
			b.Logf("%s", l)
		}

		// KKP's path on the same data and S3 server: etcd's snapshot to a file, gzip -9, and
		// an upload of the .gz by an S3 client that is not ours.
		kkp := kkpPath(b, ctx, env)
		b.ReportMetric(kkp.save.Seconds(), "kkp-save-s")
		b.ReportMetric(kkp.gzip.Seconds(), "kkp-gzip9-s")
		b.ReportMetric(kkp.put.Seconds(), "kkp-put-s")
		b.ReportMetric(kkp.total().Seconds(), "kkp-total-s")
		b.ReportMetric(triggered.Seconds()/kkp.total().Seconds(), "B1-ours/kkp")
		b.ReportMetric(triggered.Seconds()/kkp.save.Seconds(), "B2-ours/save")
		b.ReportMetric(float64(entry.Size)/float64(kkp.gzSize), "B4-stored/gzip9")
		b.Logf("B1 trigger→Completed %.2fs vs KKP's path %.2fs (save %.2fs + gzip -9 %.2fs + put %.2fs): "+
			"%.3f× (target ≤ 0.2)",
			triggered.Seconds(), kkp.total().Seconds(), kkp.save.Seconds(), kkp.gzip.Seconds(), kkp.put.Seconds(),
			triggered.Seconds()/kkp.total().Seconds())
		b.Logf("B2 %.2fs vs etcd's snapshot to a file %.2fs: %.2f× (target ≤ 1.5)", triggered.Seconds(),
			kkp.save.Seconds(), triggered.Seconds()/kkp.save.Seconds())
		b.Logf("B4 stored %d bytes vs gzip -9 %d bytes: %.3f (target ≤ 0.9)", entry.Size, kkp.gzSize,
			float64(entry.Size)/float64(kkp.gzSize))
		on := fmt.Sprintf("%.0f MiB database", float64(dbSize)/(1<<20))
		reportTarget("B1", triggered.Seconds()/kkp.total().Seconds(), 0.2, "×", fmt.Sprintf(
			"trigger → Completed %.2fs against KKP's path %.2fs, %s", triggered.Seconds(), kkp.total().Seconds(), on))
		reportTarget("B2", triggered.Seconds()/kkp.save.Seconds(), 1.5, "×", fmt.Sprintf(
			"trigger → Completed %.2fs against etcd's snapshot to a file %.2fs, %s", triggered.Seconds(),
			kkp.save.Seconds(), on))
		reportTarget("B4", float64(entry.Size)/float64(kkp.gzSize), 0.9, "×", fmt.Sprintf(
			"stored %d bytes against gzip -9's %d", entry.Size, kkp.gzSize))
	}
}

type kkpTimes struct {
	save, gzip, put time.Duration
	gzSize          int64
}

func (k kkpTimes) total() time.Duration { return k.save + k.gzip + k.put }

// kkpPath runs KKP's backup path: etcd's own snapshot-to-file (what `etcdctl snapshot save`
// calls), `gzip -9` (the gzip binary, as KKP's backup container runs it), and a put of the .gz
// with minio-go's defaults (an S3 client, not this project's uploader).
func kkpPath(b *testing.B, ctx context.Context, env *sandbox.Env) kkpTimes {
	b.Helper()
	dir := b.TempDir()
	db := filepath.Join(dir, "snapshot.db")
	var k kkpTimes
	start := time.Now()
	if _, err := etcdsnapshot.SaveWithVersion(ctx, zap.NewNop(),
		clientv3.Config{Endpoints: []string{env.DemoEtcd.Endpoint}}, db); err != nil {
		b.Fatal(err)
	}
	k.save = time.Since(start)
	start = time.Now()
	if out, err := exec.CommandContext(ctx, "gzip", "-9", db).CombinedOutput(); err != nil {
		b.Fatalf("gzip -9: %v\n%s", err, out)
	}
	k.gzip = time.Since(start)
	fi, err := os.Stat(db + ".gz")
	if err != nil {
		b.Fatal(err)
	}
	k.gzSize = fi.Size()
	start = time.Now()
	if _, err := env.S3.Client().FPutObject(ctx, sandbox.Bucket, "kkp-path/snapshot.db.gz", db+".gz",
		minio.PutObjectOptions{}); err != nil {
		b.Fatal(err)
	}
	k.put = time.Since(start)
	return k
}

// fill writes about mib MiB of Kubernetes-like objects into an etcd (cli, one of its members
// at endpoint) and returns the database size. Each value is a 32 KiB JSON ConfigMap: metadata with a random uid, 8
// KiB of
// random base64 (incompressible, like secrets and certificates) and 24 KiB of structured
// lines (repetitive, like most of what the API server stores).
// fillData fills etcd as ETCDBACKUP_BENCH_DATA says: "kube" (the default), what
// kube-apiserver writes (kubeFill); "configmaps", 32 KiB JSON configmaps (fill), the data of
// the figures before 2026-12-06.
func fillData(b *testing.B, ctx context.Context, cli *clientv3.Client, endpoint string, mib int) int64 {
	b.Helper()
	switch data := os.Getenv("ETCDBACKUP_BENCH_DATA"); data {
	case "", "kube":
		b.Logf("data: kube-apiserver's (ETCDBACKUP_BENCH_DATA=kube)")
		return kubeFill(b, ctx, cli, endpoint, mib)
	case "configmaps":
		b.Logf("data: 32 KiB JSON configmaps (ETCDBACKUP_BENCH_DATA=configmaps)")
		return fill(b, ctx, cli, endpoint, mib)
	default:
		b.Fatalf("ETCDBACKUP_BENCH_DATA=%q: kube or configmaps", data)
		return 0
	}
}

func fill(b *testing.B, ctx context.Context, cli *clientv3.Client, endpoint string, mib int) int64 {
	b.Helper()
	const valueSize = 32 << 10
	n := mib << 20 / valueSize
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i := range n {
		g.Go(func() error {
			_, err := cli.Put(gctx, fmt.Sprintf("/registry/configmaps/ns-%03d/cm-%06d", i%100, i), configMap(i))
			return err
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	st, err := cli.Status(ctx, endpoint)
	if err != nil {
		b.Fatal(err)
	}
	return st.DbSize
}

func configMap(i int) string {
	uid := make([]byte, 16)
	secret := make([]byte, 6<<10)
	_, _ = rand.Read(uid)
	_, _ = rand.Read(secret)
	var lines strings.Builder
	for j := 0; lines.Len() < 24<<10; j++ {
		fmt.Fprintf(&lines, "setting-%d=value-%d-of-configmap-%d\\n", j, j*7%13, i%50)
	}
	return fmt.Sprintf(`{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"cm-%06d","namespace":"ns-%03d",`+
		`"uid":"%s","resourceVersion":"%d",`+
		`"labels":{"app.kubernetes.io/name":"bench","app.kubernetes.io/part-of":"etcdbackup"}},`+
		`"data":{"config":"%s","certificate":"%s"}}`,
		i, i%100, hex.EncodeToString(uid), 1000+i, lines.String(), base64.StdEncoding.EncodeToString(secret))
}

// rawStream times etcd's snapshot stream read straight to io.Discard: the rate etcd serves at.
func rawStream(b *testing.B, ctx context.Context, env *sandbox.Env) time.Duration {
	b.Helper()
	cli, err := env.DemoEtcdClient()
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	start := time.Now()
	resp, err := cli.SnapshotWithVersion(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Snapshot.Close()
	if _, err := io.Copy(io.Discard, resp.Snapshot); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

// backupOnce triggers a backup of the config ns/config and waits until it is stored.
func backupOnce(b *testing.B, ctx context.Context, env *sandbox.Env, ns, config string) kubermaticv1.BackupStatus {
	b.Helper()
	nc, err := env.NATSClient(bus.IdentityTrigger)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	data, ct, _ := bus.Encode(&etcdbackupv1.TriggerBackupRequest{Namespace: ns, Config: config}, true)
	msg := nats.NewMsg(bus.SubjectTriggerBackup)
	msg.Data = data
	msg.Header.Set(bus.HeaderContentType, ct)
	var reply etcdbackupv1.TriggerBackupReply
	err = sandbox.Poll(ctx, 30*time.Second, 200*time.Millisecond, func() (bool, error) {
		resp, err := nc.RequestMsg(msg, 10*time.Second)
		if err != nil {
			return false, err
		}
		if err := bus.Decode(resp.Data, resp.Header.Get(bus.HeaderContentType), &reply); err != nil {
			return false, err
		}
		return reply.GetError() == "", fmt.Errorf("trigger: %s", reply.GetError())
	})
	if err != nil {
		b.Fatal(err)
	}
	var out kubermaticv1.BackupStatus
	err = sandbox.Poll(ctx, 30*time.Minute, 250*time.Millisecond, func() (bool, error) {
		var cfg kubermaticv1.EtcdBackupConfig
		if err := env.Client.Get(ctx, types.NamespacedName{Namespace: ns, Name: config}, &cfg); err != nil {
			return false, err
		}
		for _, e := range cfg.Status.LastBackups {
			if e.BackupName == reply.GetBackupName() {
				out = e
				if e.BackupPhase == kubermaticv1.PhaseFailed {
					return false, sandbox.Abort(fmt.Errorf("backup failed: %s", e.BackupMessage))
				}
				return e.BackupPhase == kubermaticv1.PhaseCompleted, nil
			}
		}
		return false, nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return out
}

// stageTimes lists each status event of the backup with its offset from the first, and
// returns how long the snapshot (taking to staged) and the upload (staged to stored) took,
// and the whole: from the first event (the scheduler queued the triggered backup) to stored.
func stageTimes(b *testing.B, ctx context.Context, env *sandbox.Env,
	backup string) (out []string, snapshot, upload, total time.Duration) {
	b.Helper()
	nc, err := env.NATSClient(bus.IdentityWatcher)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	s, err := js.Stream(ctx, bus.StreamStatus)
	if err != nil {
		b.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		b.Fatal(err)
	}
	var first, taking, staged, stored time.Time
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && seq > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			b.Fatal(err)
		}
		var ev etcdbackupv1.StatusEvent
		if bus.Decode(m.Data, m.Header.Get(bus.HeaderContentType), &ev) != nil || ev.GetBackupName() != backup {
			continue
		}
		at := ev.GetTime().AsTime()
		if first.IsZero() {
			first = at
		}
		switch msg := ev.GetMessage(); {
		case strings.HasPrefix(msg, "taking snapshot"):
			// The first: progress events ("taking snapshot: 553 of 1105 MiB") follow it.
			if taking.IsZero() {
				taking = at
			}
		case strings.HasPrefix(msg, "snapshot of "):
			staged = at
		case ev.GetPhase() == etcdbackupv1.Phase_PHASE_COMPLETED:
			stored = at
		}
		out = append(out, fmt.Sprintf("+%6.2fs %-18s %-15s %s", at.Sub(first).Seconds(), ev.GetStage(), ev.GetPhase(),
			ev.GetMessage()))
	}
	return out, staged.Sub(taking), stored.Sub(staged), stored.Sub(first)
}
