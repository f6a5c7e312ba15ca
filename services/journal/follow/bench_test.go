package follow_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/journal"
	"github.com/etcd-backup/etcdbackup/pkg/logtest"
	"github.com/etcd-backup/etcdbackup/services/journal/follow"
	"github.com/nats-io/nats.go/jetstream"
)

// BenchmarkJournalRPO writes 500 revisions a second to one cluster for 20 s (objects of about
// 1 KiB rewritten over 2,000 keys) while the journal follows it with the default segment
// interval (10 s), and reports the RPO figures: p99 from etcd's commit (the put's
// return) to the revision stored on the bus, and to the revision in a segment in the bucket
// (polled every 100 ms); and the journal's bytes in segments per revision, and per cluster-day
// at 5 revisions a second, next to a full backup of the same etcd and what full backups
// @every 20m store a day.
func BenchmarkJournalRPO(b *testing.B) {
	// The default --segment-interval and --publish-linger.
	const rate, seconds, interval, linger = 500, 20, 10 * time.Second, 500 * time.Millisecond
	for range b.N {
		bn := newBenchFor(b)
		committed := map[int64]time.Time{}
		var mu sync.Mutex
		onBus := map[int64]time.Time{}
		ctx, cancel := context.WithCancel(b.Context())
		cons, err := bn.js.OrderedConsumer(ctx, bus.StreamJournal, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{bus.JournalSubject("cluster-c1", "uid-1")}})
		if err != nil {
			b.Fatal(err)
		}
		cc, err := cons.Consume(func(m jetstream.Msg) {
			if revs, err := journal.DecodeBatch(m.Data()); err == nil {
				now := time.Now()
				mu.Lock()
				for _, rev := range revs {
					onBus[rev.GetRevision()] = now
				}
				mu.Unlock()
			}
		})
		if err != nil {
			b.Fatal(err)
		}
		log, _ := logtest.New()
		done := make(chan error, 1)
		go func() {
			done <- follow.Follow(ctx, follow.Options{JS: bn.js, Bucket: bn.bucket, Prefix: prefix, Namespace: "cluster-c1",
				ConfigUID: "uid-1", Timeline: bn.timeline, Etcd: bn.c, Member: bn.etcd.Endpoint, SegmentInterval: interval,
				PublishLinger: linger,
				SegmentBytes:  8 << 20, HashEvery: 10 * time.Minute, Log: log, Metrics: bn.metrics})
		}()
		inSegment := map[int64]time.Time{}
		seen := int64(0)
		polled := make(chan struct{})
		go func() {
			defer close(polled)
			for ctx.Err() == nil {
				if last, err := journal.LastSealed(ctx, bn.bucket, initial); err == nil {
					now := time.Now()
					mu.Lock()
					for r := seen + 1; r <= last; r++ {
						inSegment[r] = now
					}
					seen = max(seen, last)
					mu.Unlock()
				}
				time.Sleep(100 * time.Millisecond)
			}
		}()
		value := make([]byte, 1024)
		rnd := rand.New(rand.NewPCG(3, 4))
		tick := time.NewTicker(time.Second / rate)
		var last int64
		for i := range rate * seconds {
			<-tick.C
			for j := range value {
				value[j] = byte('a' + rnd.IntN(26))
			}
			resp, err := bn.c.Put(ctx, fmt.Sprintf("/registry/pods/ns-%d/pod-%d", i%20, i%2000), string(value))
			if err != nil {
				b.Fatal(err)
			}
			committed[resp.Header.Revision] = time.Now()
			last = resp.Header.Revision
		}
		tick.Stop()
		deadline := time.Now().Add(interval + 30*time.Second)
		for {
			mu.Lock()
			done := seen >= last
			mu.Unlock()
			if done {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("revision %d not in a segment after %s", last, interval+30*time.Second)
			}
			time.Sleep(100 * time.Millisecond)
		}
		cancel()
		cc.Stop()
		if err := <-done; err != nil && ctx.Err() == nil {
			b.Fatal(err)
		}
		<-polled
		var busLag, segLag []time.Duration
		mu.Lock()
		for rev, at := range committed {
			if t, ok := onBus[rev]; ok {
				busLag = append(busLag, t.Sub(at))
			}
			if t, ok := inSegment[rev]; ok {
				segLag = append(segLag, t.Sub(at))
			}
		}
		mu.Unlock()
		if len(busLag) != len(committed) || len(segLag) != len(committed) {
			b.Fatalf("%d revisions written, %d seen on the bus, %d in segments", len(committed), len(busLag), len(segLag))
		}
		var segBytes int64
		segs, err := journal.Segments(b.Context(), bn.bucket, initial)
		if err != nil {
			b.Fatal(err)
		}
		for _, s := range segs {
			info, err := bn.bucket.Stat(b.Context(), s.Key)
			if err != nil {
				b.Fatal(err)
			}
			segBytes += info.Size
		}
		perRevision := float64(segBytes) / float64(len(committed))
		b.ReportMetric(p99(busLag).Seconds(), "bus-p99-s")
		b.ReportMetric(p99(segLag).Seconds(), "segment-p99-s")
		b.ReportMetric(perRevision, "segment-bytes/revision")
		b.ReportMetric(perRevision*5*86400/(1<<20), "MiB/cluster-day@5rev/s")
		// Side by side: a full backup of the same etcd now, compressed as the snapshotter does,
		// and what the seed document's schedule (@every 20m: 72 a day) and the daily preset
		// store a day.
		full := fullBackupBytes(b, bn.etcd.Snapshot(b))
		b.ReportMetric(float64(full)/(1<<20), "full-backup-MiB")
		b.ReportMetric(float64(full)*72/(1<<20), "full-MiB/day@every20m")
	}
}

// fullBackupBytes is the size of snap as a backup object: zstd at the snapshotter's default
// level (--zstd-level default).
func fullBackupBytes(b *testing.B, snap []byte) int64 {
	b.Helper()
	w, err := backupformat.NewWriter(io.Discard, backupformat.Level, 1)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := w.Write(snap); err != nil {
		b.Fatal(err)
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	return w.Size()
}

func p99(d []time.Duration) time.Duration {
	slices.Sort(d)
	return d[(len(d)*99)/100]
}
