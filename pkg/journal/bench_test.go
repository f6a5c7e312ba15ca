package journal_test

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/etcdtest"
	"github.com/etcd-backup/etcdbackup/pkg/journal/journaltest"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// BenchmarkReplay replays revisions that look like a busy Kubernetes cluster's (objects of
// about 1 KiB rewritten over 20,000 keys, one in ten a deletion and re-creation, one in five
// an event attached to a lease) onto a snapshot, and reports revisions replayed a second.
// The target: at least 50,000 (an hour at 500 a second in under a minute).
func BenchmarkReplay(b *testing.B) {
	e := etcdtest.Start(b)
	snap := e.Snapshot(b)
	base := int64(1)
	const keys = 20_000
	value := make([]byte, 1024)
	for i := range value {
		value[i] = byte('a' + i%26)
	}
	const n = 200_000
	revs := make([]*etcdbackupv1.JournalRevision, 0, n)
	now := timestamppb.New(time.Now())
	exists := make([]bool, keys)
	for i := 0; i < n; i++ {
		rev := base + 1 + int64(i)
		k := i % keys
		ev := &etcdbackupv1.JournalEvent{Key: fmt.Appendf(nil, "/registry/pods/ns-%d/pod-%d", k%50, k), Value: value}
		r := &etcdbackupv1.JournalRevision{Revision: rev, Time: now, Events: []*etcdbackupv1.JournalEvent{ev}}
		switch {
		case exists[k] && i%10 == 0:
			ev.Value, ev.Delete, exists[k] = nil, true, false
		case i%5 == 0:
			ev.Key = fmt.Appendf(nil, "/registry/events/ns-%d/ev-%d", k%50, i)
			ev.Lease = 1 + int64(i/60_000)
			r.Leases = []*etcdbackupv1.JournalLease{{Id: ev.Lease, TtlSeconds: 3600}}
		default:
			exists[k] = true
		}
		revs = append(revs, r)
	}
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		r := journaltest.Replay(b, snap)
		if r.Base() != base {
			b.Fatalf("snapshot at %d, want %d", r.Base(), base)
		}
		b.StartTimer()
		t0 := time.Now()
		for _, rev := range revs {
			if err := r.Apply(rev); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(revs))/time.Since(t0).Seconds(), "revisions/s")
		b.StopTimer()
		_ = r.Close()
	}
}

// BenchmarkHashKV measures what a recorded hash costs the source member: etcd's HashKV over a
// database of ETCDBACKUP_BENCH_MIB MiB (default 256; 1100 is issue 10's 1.1 GB), written as
// objects of 4 KiB. HashKV reads every revision from the compact revision on, so its cost grows
// with the database: --hash-every is chosen from it (docs/operations.md).
func BenchmarkHashKV(b *testing.B) {
	mib := 256
	if v := os.Getenv("ETCDBACKUP_BENCH_MIB"); v != "" {
		if _, err := fmt.Sscan(v, &mib); err != nil {
			b.Fatal(err)
		}
	}
	e := etcdtest.Start(b)
	c := e.Client(b)
	etcdtest.Fill(b, c, mib)
	st, err := c.Status(b.Context(), e.Endpoint)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		if _, err := c.HashKV(b.Context(), e.Endpoint, st.Header.Revision); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(time.Since(t0).Seconds(), "hashkv-s")
	}
	b.ReportMetric(float64(st.DbSize)/(1<<20), "db-MiB")
}
