package journal

import (
	"fmt"

	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"google.golang.org/protobuf/proto"
)

// EncodeBatch is the bus message of revs, consecutive revisions of one config.
func EncodeBatch(revs []*etcdbackupv1.JournalRevision) ([]byte, error) {
	return proto.Marshal(&etcdbackupv1.JournalBatch{Revisions: revs})
}

// DecodeBatch reads a journal message from the bus: a JournalBatch, or a single
// JournalRevision (the bus's form before batches), which decodes as a batch without
// revisions. Every revision is checked (CheckRevision) and they must be consecutive: a
// message is untrusted input, and one that fails is refused whole.
func DecodeBatch(data []byte) ([]*etcdbackupv1.JournalRevision, error) {
	b := &etcdbackupv1.JournalBatch{}
	if err := proto.Unmarshal(data, b); err != nil {
		return nil, err
	}
	revs := b.GetRevisions()
	if len(revs) == 0 {
		one := &etcdbackupv1.JournalRevision{}
		if err := proto.Unmarshal(data, one); err != nil {
			return nil, err
		}
		revs = []*etcdbackupv1.JournalRevision{one}
	}
	for i, r := range revs {
		if err := CheckRevision(r); err != nil {
			return nil, err
		}
		if i > 0 && r.GetRevision() != revs[i-1].GetRevision()+1 {
			return nil, fmt.Errorf("%w: revision %d follows %d in one message", ErrCorrupt, r.GetRevision(),
				revs[i-1].GetRevision())
		}
		if i > 0 && r.GetTimeline() != revs[0].GetTimeline() {
			return nil, fmt.Errorf("%w: revisions of timelines %q and %q in one message", ErrCorrupt,
				revs[0].GetTimeline(), r.GetTimeline())
		}
	}
	return revs, nil
}
