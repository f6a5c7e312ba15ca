package trigger_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/logtest"
	"github.com/etcd-backup/etcdbackup/pkg/natstest"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/etcd-backup/etcdbackup/services/scheduler/trigger"
	"github.com/nats-io/nats.go"
)

// blocking holds every Manual call until release is closed, counting the calls in flight.
type blocking struct {
	mu       sync.Mutex
	inFlight int
	most     int
	release  chan struct{}
}

func (b *blocking) Manual(ctx context.Context, namespace, name string,
	_ time.Time) (*etcdbackupv1.BackupRequested, error) {
	b.mu.Lock()
	b.inFlight++
	b.most = max(b.most, b.inFlight)
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		b.inFlight--
		b.mu.Unlock()
	}()
	select {
	case <-b.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &etcdbackupv1.BackupRequested{Cluster: namespace, BackupName: name + "-now"}, nil
}

func (b *blocking) peak() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.most
}

// A slow config does not hold the others' answers: a replica serves up to Concurrent requests
// at once (the journals of a thousand configs ask together), and answers every one.
func TestTriggersAreServedSideBySide(t *testing.T) {
	srv := natstest.RunJetStream(t)
	nc, _ := natstest.Connect(t, srv)
	m := &blocking{release: make(chan struct{})}
	log, _ := logtest.New()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- trigger.New(nc, m, time.Now, log).Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("the trigger server ended with %v", err)
		}
	})

	client, _ := natstest.Connect(t, srv)
	const n = trigger.Concurrent + 4
	replies := make(chan *etcdbackupv1.TriggerBackupReply, n)
	errs := make(chan error, n)
	for i := range n {
		go func() {
			data, ct, err := bus.Encode(&etcdbackupv1.TriggerBackupRequest{Namespace: "cluster-a",
				Config: "c" + string(rune('a'+i))}, false)
			if err != nil {
				errs <- err
				return
			}
			req := nats.NewMsg(bus.SubjectTriggerBackup)
			req.Data = data
			req.Header.Set(bus.HeaderContentType, ct)
			for {
				msg, err := client.RequestMsgWithContext(t.Context(), req)
				if errors.Is(err, nats.ErrNoResponders) { // the server has not subscribed yet
					time.Sleep(10 * time.Millisecond)
					continue
				}
				if err != nil {
					errs <- err
					return
				}
				reply := &etcdbackupv1.TriggerBackupReply{}
				if err := bus.Decode(msg.Data, msg.Header.Get(bus.HeaderContentType), reply); err != nil {
					errs <- err
					return
				}
				replies <- reply
				return
			}
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for m.peak() < trigger.Concurrent {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests served at once, want %d", m.peak(), trigger.Concurrent)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if m.peak() > trigger.Concurrent {
		t.Fatalf("%d requests served at once, more than %d", m.peak(), trigger.Concurrent)
	}
	close(m.release)
	for range n {
		select {
		case err := <-errs:
			t.Fatal(err)
		case r := <-replies:
			if r.GetError() != "" || r.GetBackupName() == "" {
				t.Fatalf("reply %v, want a backup name", r)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("not every request was answered")
		}
	}
}
