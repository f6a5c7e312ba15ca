package follow

import (
	"strings"
	"testing"

	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/journal"
	"github.com/etcd-backup/etcdbackup/pkg/logtest"
	"github.com/etcd-backup/etcdbackup/pkg/natstest"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// A message carries consecutive revisions of at most batchBytes: a gap (a new chain after a
// compaction) or a full message starts the next, and every revision is on the bus once, with
// the sequence of the message that carries it.
func TestPublishSplitsAtGapsAndSize(t *testing.T) {
	js := natstest.Bus(t, 64<<20)
	f := &follower{o: Options{JS: js, ConfigUID: "uid-1", Timeline: journal.Timeline{Name: journal.InitialTimeline},
		Metrics: NewMetrics(prometheus.NewRegistry())}, subject: bus.JournalSubject("cluster-c1", "uid-1")}
	var revs []*etcdbackupv1.JournalRevision
	add := func(from, to int64, size int) {
		for r := from; r <= to; r++ {
			revs = append(revs, &etcdbackupv1.JournalRevision{Revision: r, Timeline: journal.InitialTimeline,
				Time: timestamppb.Now(), Events: []*etcdbackupv1.JournalEvent{{Key: []byte("/registry/k"),
					Value: []byte(strings.Repeat("v", size)), CreateRevision: 1, Version: r}}})
		}
	}
	add(10, 12, 10)
	add(20, 25, 100<<10) // after a gap; 100 KiB each: two a message
	f.receive(revs)
	if err := f.flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(t.Context(), bus.StreamJournal)
	if err != nil {
		t.Fatal(err)
	}
	var got [][2]int64
	for seq := uint64(1); ; seq++ {
		m, err := st.GetMsg(t.Context(), seq)
		if err != nil {
			break
		}
		batch, err := journal.DecodeBatch(m.Data)
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		got = append(got, [2]int64{batch[0].GetRevision(), batch[len(batch)-1].GetRevision()})
		for _, r := range batch {
			for _, p := range f.pending {
				if p.rev.GetRevision() == r.GetRevision() && p.seq != seq {
					t.Fatalf("revision %d pending with sequence %d, carried by %d", r.GetRevision(), p.seq, seq)
				}
			}
		}
	}
	want := [][2]int64{{10, 12}, {20, 21}, {22, 23}, {24, 25}}
	if len(got) != len(want) {
		t.Fatalf("messages %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("messages %v, want %v", got, want)
		}
	}
	if len(f.pending) != len(revs) {
		t.Fatalf("%d revisions pending, want %d", len(f.pending), len(revs))
	}
}

// The bus is purged up to the oldest message that still carries an unsealed revision: a
// message whose revisions are sealed only in part stays, whole, for the next holder.
func TestPurgeKeepsAMessageSealedInPart(t *testing.T) {
	js := natstest.Bus(t, 64<<20)
	st, err := js.Stream(t.Context(), bus.StreamJournal)
	if err != nil {
		t.Fatal(err)
	}
	log, _ := logtest.New()
	f := &follower{o: Options{JS: js, ConfigUID: "uid-1", Timeline: journal.Timeline{Name: journal.InitialTimeline},
		Metrics: NewMetrics(prometheus.NewRegistry()), Log: log}, subject: bus.JournalSubject("cluster-c1", "uid-1"),
		stream: st}
	for _, r := range [][2]int64{{10, 11}, {12, 13}, {14, 15}} {
		var revs []*etcdbackupv1.JournalRevision
		for rev := r[0]; rev <= r[1]; rev++ {
			revs = append(revs, &etcdbackupv1.JournalRevision{Revision: rev, Timeline: journal.InitialTimeline,
				Time: timestamppb.Now(), Events: []*etcdbackupv1.JournalEvent{{Key: []byte("/registry/k"),
					Value: []byte("v"), CreateRevision: 1, Version: rev}}})
		}
		f.receive(revs)
		if err := f.flush(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	first := func() uint64 {
		t.Helper()
		info, err := st.Info(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == 0 {
			return 0
		}
		return info.State.FirstSeq
	}
	// Revisions 10 to 12 sealed: message 2 still carries 13.
	f.pending, f.sealedSeq = f.pending[3:], f.pending[2].seq
	f.purge(t.Context())
	if got := first(); got != 2 {
		t.Fatalf("the bus begins at message %d, want 2 (revision 13 is in no segment)", got)
	}
	// Everything sealed: the bus is empty.
	f.sealedSeq, f.pending = f.pending[len(f.pending)-1].seq, nil
	f.purge(t.Context())
	if got := first(); got != 0 {
		t.Fatalf("the bus begins at message %d after everything was sealed, want it empty", got)
	}
}
