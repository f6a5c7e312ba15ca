package bus_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/natstest"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func startBatchWorker(t *testing.T, ctx context.Context, c jetstream.Consumer, h bus.BatchHandler, size int,
	opts ...bus.WorkerOption) {
	t.Helper()
	opts = append([]bus.WorkerOption{bus.WithBackoff(func(uint64) time.Duration { return 10 * time.Millisecond })},
		opts...)
	w, err := bus.NewBatchWorker(c, h, size, opts...)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = w.Start(wctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// A backlog is taken in batches of at most the batch size; every message is handled once.
func TestBatchWorkerTakesWhatIsWaiting(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := natstest.JetStream(t)
	c := consumer(t, ctx, js, 5*time.Second)
	for i := range 50 {
		publish(t, ctx, js, fmt.Sprintf("job-%02d", i))
	}
	var mu sync.Mutex
	var sizes []int
	seen := map[string]int{}
	startBatchWorker(t, ctx, c, func(ctx context.Context, msgs []jetstream.Msg) []error {
		mu.Lock()
		defer mu.Unlock()
		sizes = append(sizes, len(msgs))
		for _, m := range msgs {
			seen[string(m.Data())]++
		}
		return make([]error, len(msgs))
	}, 20)
	waitFor(t, "the backlog drained", func() bool { return streamEmpty(t, ctx, js) })
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 50 {
		t.Fatalf("%d distinct messages handled, want 50", len(seen))
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("%s handled %d times", id, n)
		}
	}
	largest := 0
	for _, n := range sizes {
		if n > 20 {
			t.Errorf("a batch of %d, more than the batch size 20", n)
		}
		largest = max(largest, n)
	}
	if largest < 10 || len(sizes) > 10 {
		t.Errorf("batches %v for a backlog of 50: want most in batches near 20", sizes)
	}
}

// Each message of a batch is settled by its own result: acked, terminated, or delivered again.
// A handler that returns the wrong number of results settles nothing: the batch comes again.
func TestBatchWorkerSettlesEachMessage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := natstest.JetStream(t)
	c := consumer(t, ctx, js, 300*time.Millisecond)
	for _, id := range []string{"ok", "bad", "retry"} {
		publish(t, ctx, js, id)
	}
	var mu sync.Mutex
	calls := map[string]int{}
	startBatchWorker(t, ctx, c, func(ctx context.Context, msgs []jetstream.Msg) []error {
		mu.Lock()
		defer mu.Unlock()
		errs := make([]error, len(msgs))
		for i, m := range msgs {
			id := string(m.Data())
			calls[id]++
			switch {
			case id == "bad":
				errs[i] = bus.Permanent(errors.New("bad input"))
			case id == "retry" && calls[id] < 3:
				errs[i] = errors.New("api down")
			case id == "short" && calls[id] == 1:
				return errs[:i] // one result short
			}
		}
		return errs
	}, 10)
	waitFor(t, "every message settled", func() bool { return streamEmpty(t, ctx, js) })
	mu.Lock()
	if calls["ok"] != 1 || calls["bad"] != 1 || calls["retry"] != 3 {
		t.Errorf("calls %v: want ok and bad once, retry 3 times", calls)
	}
	mu.Unlock()
	publish(t, ctx, js, "short")
	waitFor(t, "the short batch settled", func() bool { return streamEmpty(t, ctx, js) })
	mu.Lock()
	defer mu.Unlock()
	if calls["short"] != 2 {
		t.Fatalf("a batch whose handler returned too few results was handled %d times, want 2 (settled the second time)",
			calls["short"])
	}
}

// TypedBatch terminates invalid messages without handing them over, and makes a message that
// fails on its last delivery a dead letter.
func TestTypedBatch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := natstest.JetStream(t)
	if err := bus.Ensure(ctx, js, testTopology()); err != nil {
		t.Fatal(err)
	}
	c, err := bus.Consumer(ctx, js, bus.ConsumerSnapshotter, 2)
	if err != nil {
		t.Fatal(err)
	}
	m := bus.NewMetrics(prometheus.NewRegistry())
	var mu sync.Mutex
	var handled []string
	h := bus.TypedBatch(2, func(ctx context.Context, items []bus.Item[*etcdbackupv1.BackupRequested]) []error {
		mu.Lock()
		defer mu.Unlock()
		errs := make([]error, len(items))
		for i, it := range items {
			handled = append(handled, fmt.Sprintf("%s#%d", it.Msg.GetBackupName(), it.Delivery.Attempt))
			if it.Delivery.Subject != bus.SubjectBackupRequested {
				t.Errorf("delivery subject %q", it.Delivery.Subject)
			}
			errs[i] = errors.New("etcd unreachable")
		}
		return errs
	})
	startBatchWorker(t, ctx, c, h, 10, bus.WithMetrics(m))
	for i, body := range [][]byte{[]byte(`{}`), mustEncode(t, validRequest()), []byte("garbage")} {
		if _, err := js.Publish(ctx, bus.SubjectBackupRequested, body, jetstream.WithMsgID(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "two invalid messages, one redelivery and one dead letter counted", func() bool {
		return testutil.ToFloat64(m.Invalid(bus.SubjectBackupRequested)) == 2 &&
			testutil.ToFloat64(m.DeadLetters(bus.SubjectBackupRequested)) == 1 &&
			testutil.ToFloat64(m.Redeliveries(bus.SubjectBackupRequested)) == 1
	})
	waitFor(t, "the stream to drop them", func() bool { return streamEmpty(t, ctx, js) })
	mu.Lock()
	defer mu.Unlock()
	name := validRequest().GetBackupName()
	if got := strings.Join(handled, " "); got != name+"#1 "+name+"#2" {
		t.Fatalf("handled %q, want the valid request's two deliveries", got)
	}
}
