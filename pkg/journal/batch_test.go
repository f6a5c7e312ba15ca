package journal_test

import (
	"errors"
	"testing"

	"github.com/etcd-backup/etcdbackup/pkg/journal"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"google.golang.org/protobuf/proto"
)

func TestBatchRoundTripAndTheSingleRevisionForm(t *testing.T) {
	revs := revisions(10, 14)
	data, err := journal.EncodeBatch(revs)
	if err != nil {
		t.Fatal(err)
	}
	got, err := journal.DecodeBatch(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(revs) {
		t.Fatalf("%d revisions decoded, want %d", len(got), len(revs))
	}
	for i := range revs {
		if !proto.Equal(got[i], revs[i]) {
			t.Fatalf("revision %d decoded as %v, want %v", i, got[i], revs[i])
		}
	}
	// A message of the bus before batches: one JournalRevision.
	one, err := proto.Marshal(revs[2])
	if err != nil {
		t.Fatal(err)
	}
	got, err = journal.DecodeBatch(one)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !proto.Equal(got[0], revs[2]) {
		t.Fatalf("a single revision decoded as %v", got)
	}
}

func TestBatchRefusesWhatEtcdCouldNotHaveMade(t *testing.T) {
	gap := revisions(10, 14)
	gap = append(gap[:2], gap[3:]...)
	timelines := revisions(10, 12)
	timelines[2].Timeline = "20261205T140300.000Z"
	for name, revs := range map[string][]*etcdbackupv1.JournalRevision{
		"a gap":         gap,
		"backwards":     {revisions(11, 11)[0], revisions(10, 10)[0]},
		"two timelines": timelines,
		"revision 0":    {{Events: revisions(1, 1)[0].Events}},
		"no events":     {{Revision: 5, Time: revisions(5, 5)[0].Time}},
	} {
		data, err := proto.Marshal(&etcdbackupv1.JournalBatch{Revisions: revs})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := journal.DecodeBatch(data); err == nil {
			t.Errorf("%s: decoded", name)
		} else if name != "revision 0" && name != "no events" && !errors.Is(err, journal.ErrCorrupt) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
	}
	if _, err := journal.DecodeBatch([]byte{0xff, 0xff, 0xff}); err == nil {
		t.Error("garbage decoded")
	}
}

// A message on the bus is untrusted: whatever it holds, the decoder returns consecutive,
// checked revisions of one timeline, or an error.
func FuzzDecodeBatch(f *testing.F) {
	for _, revs := range [][]*etcdbackupv1.JournalRevision{revisions(1, 3), revisions(7, 7)} {
		data, err := journal.EncodeBatch(revs)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	one, err := proto.Marshal(revisions(4, 4)[0])
	if err != nil {
		f.Fatal(err)
	}
	f.Add(one)
	f.Fuzz(func(t *testing.T, data []byte) {
		revs, err := journal.DecodeBatch(data)
		if err != nil {
			return
		}
		if len(revs) == 0 {
			t.Fatal("no revision and no error")
		}
		for i, r := range revs {
			if err := journal.CheckRevision(r); err != nil {
				t.Fatalf("revision %d passed unchecked: %v", r.GetRevision(), err)
			}
			if i > 0 && (r.GetRevision() != revs[i-1].GetRevision()+1 || r.GetTimeline() != revs[0].GetTimeline()) {
				t.Fatalf("revisions %d and %d of one message", revs[i-1].GetRevision(), r.GetRevision())
			}
		}
	})
}
