package restore

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/etcdtest"
	"github.com/etcd-backup/etcdbackup/pkg/journal"
	"github.com/etcd-backup/etcdbackup/pkg/procstat"
	"github.com/etcd-backup/etcdbackup/pkg/s3test"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
)

// benchEnv reads a positive integer from the environment, def when unset.
func benchEnv(b *testing.B, name string, def int) int {
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

// BenchmarkPointInTimeBuild is a point-in-time restore's own step: the database of a target an
// hour after a full backup. A real etcd is filled with ETCDBACKUP_BENCH_MIB MiB of objects
// (default 256; 1100 is issue 10's 1.1 GB) and snapshotted as the full backup; then
// ETCDBACKUP_BENCH_PITR_REVISIONS writes (default 180,000: 6 minutes at 500 a second; an hour,
// 1,800,000, takes here more than 20 minutes to write and record before the timed part) of
// objects of about 1 KiB are made by 64 writers (a tenth of them deletions, which make no
// revision when the key is absent), then recorded by a watch as the journal records them and
// sealed into 10-second segments of 5,000 revisions, each thirtieth carrying etcd's HashKV
// (every 5 minutes at that rate, the default --hash-every). The timed part is
// what the restorer does before it pauses the cluster: download and check the full backup,
// replay every segment onto it, reproduce every HashKV, and store the database in the bucket.
// The member pods then restore it like any backup (BenchmarkRestore in e2e/bench).
func BenchmarkPointInTimeBuild(b *testing.B) {
	mib := benchEnv(b, "ETCDBACKUP_BENCH_MIB", 256)
	total := benchEnv(b, "ETCDBACKUP_BENCH_PITR_REVISIONS", 180_000)
	const perSegment, hashEvery = 5000, 30
	ctx := b.Context()
	// An hour of history on top of the objects passes etcd's default 2 GiB quota.
	// The source etcd skips fsync: its writes are the set-up, not what is measured, and an hour
	// of them fsynced takes longer to write than the benchmark's budget.
	e, err := etcdtest.StartIn(b.TempDir(), "default", func(c *embed.Config) {
		c.QuotaBackendBytes = 32 << 30
		c.UnsafeNoFsync = true
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.Stop)
	c := e.Client(b)
	etcdtest.Fill(b, c, mib)
	s3 := s3test.Run(b, "backups")
	bucket := s3.Bucket(b, "backups")
	rs := &kubermaticv1.EtcdRestore{}
	rs.Namespace, rs.Name, rs.UID = "cluster-a", "bench", "uid-bench"
	rs.Spec.Cluster.Name, rs.Spec.BackupName = "a", "daily"
	prefix := backupname.Prefix("a", rs.Namespace, "daily")
	dir := journal.Timeline{Name: journal.InitialTimeline}.Dir(prefix)
	head, err := c.Get(ctx, "probe")
	if err != nil {
		b.Fatal(err)
	}
	anchor := head.Header.Revision
	snapMiB := storeFullBackup(b, e, s3, backupname.ObjectKey("a", rs.Namespace, "daily", "daily-2026-11-29T02:00:00"),
		anchor)

	// The hour after it, and its journal recorded by a watch while it is written, as the
	// journal does. (A watch started afterwards from the anchor catches up through etcd's
	// unsynced-watcher path, which rereads the whole remaining history for every 1,000
	// revisions it sends: hours for an hour of history.)
	wctx, cancelWriters := context.WithCancel(ctx)
	defer cancelWriters()
	var next atomic.Int64
	var wg sync.WaitGroup
	setup := time.Now()
	w := c.Watch(ctx, "\x00", clientv3.WithFromKey(), clientv3.WithRev(anchor+1))
	lastCh, recorded := make(chan int64, 1), make(chan error, 1)
	go func() { recorded <- recordSegments(ctx, c, e.Endpoint, bucket, dir, w, lastCh, perSegment, hashEvery) }()
	for g := range 64 {
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(g), 7))
			value := make([]byte, 1024)
			for next.Add(1) <= int64(total) && wctx.Err() == nil {
				for j := range value {
					value[j] = byte('a' + rnd.IntN(26))
				}
				k := fmt.Sprintf("/registry/pods/ns-%d/pod-%d", rnd.IntN(50), rnd.IntN(20_000))
				var err error
				if rnd.IntN(10) == 0 {
					_, err = c.Delete(wctx, k)
				} else {
					_, err = c.Put(wctx, k, string(value))
				}
				if err != nil {
					b.Error(err)
					cancelWriters()
					return
				}
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	head, err = c.Get(ctx, "probe")
	if err != nil {
		b.Fatal(err)
	}
	last := head.Header.Revision
	fmt.Printf("BenchmarkPointInTimeBuild: %d revisions written in %s\n", last-anchor,
		time.Since(setup).Round(time.Second))
	setup = time.Now()
	lastCh <- last
	if err := <-recorded; err != nil {
		b.Fatal(err)
	}
	fmt.Printf("BenchmarkPointInTimeBuild: the rest recorded into segments %s later\n",
		time.Since(setup).Round(time.Second))
	revisions := last - anchor
	rs.Annotations = map[string]string{kubermaticv1.AnnotationRestoreTo: "revision:" + strconv.FormatInt(last, 10)}
	r := &Reconciler{Opts: Options{WorkDir: b.TempDir()}}
	r.Opts.Step.MaxSnapshotSize = 64 << 30
	b.ResetTimer()
	for range b.N {
		cpu0, err := procstat.CPU(0)
		if err != nil {
			b.Fatal(err)
		}
		mem0, err := procstat.Read(0)
		if err != nil {
			b.Fatal(err)
		}
		sampler := procstat.Sample(50 * time.Millisecond)
		t0 := time.Now()
		p, err := r.pointInTime(ctx, rs, bucket, backupformat.Identities{}, Target{Revision: last})
		if err != nil {
			b.Fatal(err)
		}
		took := time.Since(t0)
		anon, _ := sampler.Stop()
		cpu1, err := procstat.CPU(0)
		if err != nil {
			b.Fatal(err)
		}
		if p.Revision != last || p.Hashes == 0 {
			b.Fatalf("built revision %d with %d hashes, want %d with the journal's", p.Revision, p.Hashes, last)
		}
		b.ReportMetric(took.Seconds(), "build-s")
		b.ReportMetric(float64(revisions)/took.Seconds(), "revisions/s")
		b.ReportMetric(float64(p.Hashes), "hashkv-reproduced")
		b.ReportMetric(float64(p.Segments), "segments")
		// The process holds the source etcd and the S3 server too: CPU and memory are the
		// build's and the S3 server's, memory as the growth of anonymous memory over the build.
		b.ReportMetric((cpu1 - cpu0).Seconds(), "cpu-s")
		b.ReportMetric(float64(anon-mem0.RssAnon)/(1<<20), "anon-growth-MiB")
	}
	b.ReportMetric(snapMiB, "full-backup-MiB")
}

// storeFullBackup stores e's snapshot as the full backup at key, of revision anchor, and
// returns its size in MiB.
func storeFullBackup(b *testing.B, e *etcdtest.Etcd, s3 *s3test.Server, key string, anchor int64) float64 {
	b.Helper()
	snap := e.Snapshot(b)
	s3.PutBackup(b, "backups", key, snap, backupformat.Encryption{},
		backupformat.Meta{SnapshotSize: int64(len(snap)), Revision: anchor})
	return float64(len(snap)) / (1 << 20)
}

// recordSegments seals what w reports into segments of perSegment revisions in dir, every
// hashEvery-th and the last carrying the member's HashKV at its last revision, until the
// revision lastCh gives (once the writes are done) is sealed.
func recordSegments(ctx context.Context, c *clientv3.Client, member string, b destination.Bucket, dir string,
	w clientv3.WatchChan, lastCh <-chan int64, perSegment, hashEvery int) error {
	rec := journal.NewRecorder(journal.ClientLeaseTTL(c))
	var batch []*etcdbackupv1.JournalRevision
	var last, got int64
	sealed := 0
	seal := func() error {
		var buf bytes.Buffer
		m, err := journal.Write(&buf, batch, backupformat.Encryption{})
		if err != nil {
			return err
		}
		if sealed%hashEvery == 0 || m.Last == last {
			h, err := c.HashKV(ctx, member, m.Last)
			if err != nil {
				return err
			}
			m.Hash = &journal.Hash{Revision: m.Last, CompactRevision: h.CompactRevision, Hash: h.Hash}
		}
		sealed++
		batch = batch[:0]
		return b.Put(ctx, journal.Key(dir, m.First, m.Last), bytes.NewReader(buf.Bytes()), int64(buf.Len()),
			destination.PutOptions{ContentType: backupformat.ContentType, Metadata: m.Map()})
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case last = <-lastCh:
			lastCh = nil
			if got == last {
				if len(batch) > 0 {
					return seal()
				}
				return nil
			}
		case resp, ok := <-w:
			if !ok {
				return fmt.Errorf("the watch ended at revision %d", got)
			}
			if err := resp.Err(); err != nil {
				return err
			}
			revs, err := rec.Revisions(ctx, resp.Events)
			if err != nil {
				return err
			}
			for _, rev := range revs {
				batch = append(batch, rev)
				got = rev.GetRevision()
				if len(batch) == perSegment || got == last {
					if err := seal(); err != nil {
						return err
					}
				}
				if got == last {
					return nil
				}
			}
		}
	}
}
