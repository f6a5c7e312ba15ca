package bus_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/natstest"
	"github.com/nats-io/nats.go/jetstream"
)

func testTopology() bus.Topology {
	t := bus.DefaultTopology()
	// In memory, with limits that fit in a test server's memory store.
	t.Storage, t.StagingMaxBytes, t.StreamMaxBytes = jetstream.MemoryStorage, 64<<20, 16<<20
	return t
}

// consumer returns the snapshotter's durable consumer with a short AckWait.
func consumer(t *testing.T, ctx context.Context, js jetstream.JetStream, ackWait time.Duration) jetstream.Consumer {
	t.Helper()
	if err := bus.Ensure(ctx, js, testTopology()); err != nil {
		t.Fatal(err)
	}
	cfg := bus.ConsumerConfig(bus.ConsumerSnapshotter, 100)
	cfg.AckWait = ackWait
	c, err := js.CreateOrUpdateConsumer(ctx, bus.StreamRequests, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func publish(t *testing.T, ctx context.Context, js jetstream.JetStream, id string) {
	t.Helper()
	if _, err := js.Publish(ctx, bus.SubjectBackupRequested, []byte(id), jetstream.WithMsgID(id)); err != nil {
		t.Fatal(err)
	}
}

func startWorker(t *testing.T, ctx context.Context, c jetstream.Consumer, h bus.Handler, opts ...bus.WorkerOption) {
	t.Helper()
	opts = append([]bus.WorkerOption{bus.WithBackoff(func(uint64) time.Duration { return 10 * time.Millisecond })},
		opts...)
	w, err := bus.NewWorker(c, h, opts...)
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = w.Start(wctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// streamEmpty reports whether the work-queue stream removed every message, i.e. each was
// acked or terminated.
func streamEmpty(t *testing.T, ctx context.Context, js jetstream.JetStream) bool {
	t.Helper()
	s, err := js.Stream(ctx, bus.StreamRequests)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs == 0
}

func TestWorkerOutcomes(t *testing.T) {
	tests := []struct {
		name      string
		handler   func(calls int32) error
		wantCalls int32
	}{
		{"success is acked once", func(int32) error { return nil }, 1},
		{"permanent failure is terminated, never redelivered",
			func(int32) error { return bus.Permanent(errors.New("bad input")) }, 1},
		{"transient failure is redelivered until it succeeds", func(calls int32) error {
			if calls < 3 {
				return errors.New("s3 down")
			}
			return nil
		}, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			js := natstest.JetStream(t)
			c := consumer(t, ctx, js, 5*time.Second)
			var calls atomic.Int32
			var finished atomic.Bool
			startWorker(t, ctx, c, func(ctx context.Context, msg jetstream.Msg) error {
				n := calls.Add(1)
				err := tc.handler(n)
				if err == nil || bus.IsPermanent(err) {
					finished.Store(true)
				}
				return err
			})
			publish(t, ctx, js, "job-1")
			waitFor(t, "the message to leave the stream", func() bool { return finished.Load() && streamEmpty(t, ctx, js) })
			// A second message proves the worker is past the first: no redelivery is pending.
			finished.Store(false)
			publish(t, ctx, js, "job-2")
			waitFor(t, "the next message", func() bool { return calls.Load() > tc.wantCalls })
			if got := calls.Load() - 1; got != tc.wantCalls {
				t.Fatalf("handler ran %d times for the first message, want %d", got, tc.wantCalls)
			}
		})
	}
}

// A job that runs for several AckWaits is not redelivered: the worker marks it in progress.
func TestWorkerExtendsAckWaitOfLongJobs(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := natstest.JetStream(t)
	c := consumer(t, ctx, js, 500*time.Millisecond)
	var calls atomic.Int32
	var done atomic.Bool
	startWorker(t, ctx, c, func(ctx context.Context, msg jetstream.Msg) error {
		calls.Add(1)
		job := time.NewTimer(2 * time.Second) // the job itself: four AckWaits long
		defer job.Stop()
		<-job.C
		done.Store(true)
		return nil
	}, bus.WithProgressInterval(100*time.Millisecond), bus.WithConcurrency(2))
	publish(t, ctx, js, "long-job")
	waitFor(t, "the long job to finish", func() bool { return done.Load() && streamEmpty(t, ctx, js) })
	if n := calls.Load(); n != 1 {
		t.Fatalf("long job ran %d times, want 1", n)
	}
}

// Several replicas share one durable consumer: every message is handled by exactly one.
func TestWorkerReplicasShareWork(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := natstest.JetStream(t)
	c := consumer(t, ctx, js, 5*time.Second)
	var mu sync.Mutex
	seen := map[string]int{}
	byReplica := map[int]int{}
	for replica := range 3 {
		startWorker(t, ctx, c, func(ctx context.Context, msg jetstream.Msg) error {
			mu.Lock()
			seen[string(msg.Data())]++
			byReplica[replica]++
			mu.Unlock()
			return nil
		})
	}
	const n = 60
	for i := range n {
		publish(t, ctx, js, fmt.Sprintf("job-%d", i))
	}
	waitFor(t, "all jobs", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == n && streamEmpty(t, ctx, js)
	})
	mu.Lock()
	defer mu.Unlock()
	for id, k := range seen {
		if k != 1 {
			t.Errorf("%s handled %d times", id, k)
		}
	}
	if len(byReplica) < 2 {
		t.Errorf("work went to %d replica(s), want it shared: %v", len(byReplica), byReplica)
	}
}

// Publishing the same Nats-Msg-Id twice within the window queues one message.
func TestPublishDeduplicates(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	js := natstest.JetStream(t)
	if err := bus.Ensure(ctx, js, testTopology()); err != nil {
		t.Fatal(err)
	}
	if err := bus.Ensure(ctx, js, testTopology()); err != nil {
		t.Fatalf("Ensure is not idempotent: %v", err)
	}
	msg := &emptyRequest
	dup1, err := bus.Publish(ctx, js, bus.SubjectBackupRequested, "ns/backup-1", msg)
	if err != nil || dup1 {
		t.Fatalf("first publish: dup=%v err=%v", dup1, err)
	}
	dup2, err := bus.Publish(ctx, js, bus.SubjectBackupRequested, "ns/backup-1", msg)
	if err != nil || !dup2 {
		t.Fatalf("second publish: dup=%v err=%v", dup2, err)
	}
	s, _ := js.Stream(ctx, bus.StreamRequests)
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("stream holds %d messages, want 1", info.State.Msgs)
	}
}

// A RetrySoon error brings its message back after its own delay, not the worker's backoff
// (a minute here).
func TestRetrySoonComesBackSoon(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := natstest.JetStream(t)
	c := consumerWithMaxDeliver(t, ctx, js, 5)
	var calls atomic.Int32
	h := bus.Handler(func(ctx context.Context, msg jetstream.Msg) error {
		if calls.Add(1) == 1 {
			return bus.RetrySoon(50*time.Millisecond, errors.New("not yet"))
		}
		return nil
	})
	startWorker(t, ctx, c, h, bus.WithBackoff(func(uint64) time.Duration { return time.Minute }))
	if _, err := js.Publish(ctx, bus.SubjectBackupRequested, mustEncode(t, validRequest())); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitFor(t, "the second delivery", func() bool { return calls.Load() >= 2 })
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("redelivered after %s, want about 50 ms", took)
	}
}
