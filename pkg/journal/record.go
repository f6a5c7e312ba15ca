package journal

import (
	"context"
	"fmt"
	"time"

	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// LeaseTTL answers the TTL a lease was granted with: 0 when the lease is gone.
type LeaseTTL func(ctx context.Context, id int64) (int64, error)

// ClientLeaseTTL asks etcd through c (LeaseTimeToLive).
func ClientLeaseTTL(c clientv3.Lease) LeaseTTL {
	return func(ctx context.Context, id int64) (int64, error) {
		resp, err := c.TimeToLive(ctx, clientv3.LeaseID(id))
		if err != nil {
			return 0, fmt.Errorf("lease %x time to live: %w", id, err)
		}
		if resp.TTL < 0 {
			return 0, nil
		}
		return resp.GrantedTTL, nil
	}
}

// Recorder turns the events of an etcd watch on the whole keyspace into journal revisions: one
// per revision, its events in etcd's order, stamped with the time they were received, and the
// leases the chain had not named yet with their TTLs.
type Recorder struct {
	ttl   LeaseTTL
	named map[int64]bool
	now   func() time.Time
}

// NewRecorder returns a Recorder that asks ttl about leases.
func NewRecorder(ttl LeaseTTL) *Recorder {
	return &Recorder{ttl: ttl, named: map[int64]bool{}, now: time.Now}
}

// Revisions groups events (one watch response's, in order) into revisions. etcd never splits
// one revision's events over two responses of an unfragmented watch.
func (r *Recorder) Revisions(ctx context.Context, events []*clientv3.Event) ([]*etcdbackupv1.JournalRevision, error) {
	now := timestamppb.New(r.now())
	var out []*etcdbackupv1.JournalRevision
	for _, ev := range events {
		kv := ev.Kv
		if len(out) == 0 || out[len(out)-1].GetRevision() != kv.ModRevision {
			out = append(out, &etcdbackupv1.JournalRevision{Revision: kv.ModRevision, Time: now})
		}
		rev := out[len(out)-1]
		e := &etcdbackupv1.JournalEvent{Key: kv.Key}
		if ev.Type == mvccpb.Event_DELETE {
			e.Delete = true
		} else {
			e.Value, e.Lease, e.CreateRevision, e.Version = kv.Value, kv.Lease, kv.CreateRevision, kv.Version
		}
		if kv.Lease != 0 && !r.named[kv.Lease] {
			ttl, err := r.ttl(ctx, kv.Lease)
			if err != nil {
				return nil, err
			}
			r.named[kv.Lease] = true
			rev.Leases = append(rev.Leases, &etcdbackupv1.JournalLease{Id: kv.Lease, TtlSeconds: ttl})
		}
		rev.Events = append(rev.Events, e)
	}
	return out, nil
}
