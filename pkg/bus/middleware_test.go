package bus_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/logtest"
	"github.com/etcd-backup/etcdbackup/pkg/natstest"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

var errConfig = errors.New("bucket not found")

// outcome is a stage's epilogue as the services declare theirs.
func outcome() bus.Outcome[*etcdbackupv1.BackupRequested] {
	return bus.Outcome[*etcdbackupv1.BackupRequested]{
		Stage: "upload",
		Classes: bus.Classes{Rows: []bus.Class{
			{Err: errConfig, Reason: "BucketNotFound", Permanent: true},
		}, Else: "s3"},
		Event: func(req *etcdbackupv1.BackupRequested, phase etcdbackupv1.Phase, msg string) *etcdbackupv1.StatusEvent {
			return bus.StatusFor(req, etcdbackupv1.Stage_STAGE_UPLOADER, phase, msg)
		},
		Retrying: func(d bus.Delivery, err error) string {
			return fmt.Sprintf("attempt %d failed, retrying: %v", d.Attempt, err)
		},
		Failed: func(err error) string { return "upload: " + err.Error() },
		Attrs:  func(req *etcdbackupv1.BackupRequested) []any { return []any{"backup", req.GetBackupName()} },
	}
}

// statusEvents collects the status events published while the test runs.
func statusEvents(t *testing.T, ctx context.Context, js jetstream.JetStream) func() []*etcdbackupv1.StatusEvent {
	t.Helper()
	c, err := js.OrderedConsumer(ctx, bus.StreamStatus, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var evs []*etcdbackupv1.StatusEvent
	cc, err := c.Consume(func(msg jetstream.Msg) {
		ev := &etcdbackupv1.StatusEvent{}
		if err := bus.Decode(msg.Data(), msg.Headers().Get(bus.HeaderContentType), ev); err != nil {
			t.Errorf("decode status event: %v", err)
			return
		}
		mu.Lock()
		evs = append(evs, ev)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
	return func() []*etcdbackupv1.StatusEvent {
		mu.Lock()
		defer mu.Unlock()
		return append([]*etcdbackupv1.StatusEvent(nil), evs...)
	}
}

// What a handler's error becomes, decided once for every stage: its reason and permanence
// from the stage's table, what the people waiting on the backup are told, and whether the
// message comes again.
func TestReport(t *testing.T) {
	tests := []struct {
		name        string
		errs        []error // the handler's result per delivery; nil after the last
		outcome     func(*bus.Outcome[*etcdbackupv1.BackupRequested])
		maxDeliver  int
		wantCalls   int
		wantPhases  []etcdbackupv1.Phase
		wantLast    string // the last event's message (its start, with wantWait)
		wantWait    string // in the last event's message, after wantLast
		wantFailure string // the reason counted (once per failed attempt)
		wantDead    bool
	}{
		{
			name: "transient, then done", errs: []error{errors.New("s3 down")}, maxDeliver: 5, wantCalls: 2,
			wantPhases: []etcdbackupv1.Phase{etcdbackupv1.Phase_PHASE_RUNNING},
			wantLast:   "attempt 1 failed, retrying: s3 down", wantFailure: "s3",
		},
		{
			name: "a row marks it permanent", errs: []error{fmt.Errorf("put: %w", errConfig)}, maxDeliver: 5, wantCalls: 1,
			wantPhases: []etcdbackupv1.Phase{etcdbackupv1.Phase_PHASE_FAILED}, wantLast: "upload: put: bucket not found",
			wantFailure: "BucketNotFound",
		},
		{
			name: "transient on every delivery: a dead letter", errs: []error{errors.New("s3 down"), errors.New("s3 down"),
				errors.New("s3 still down")}, maxDeliver: 3, wantCalls: 3,
			wantPhases: []etcdbackupv1.Phase{etcdbackupv1.Phase_PHASE_RUNNING, etcdbackupv1.Phase_PHASE_RUNNING,
				etcdbackupv1.Phase_PHASE_FAILED},
			wantLast: "upload: gave up after the last allowed delivery: s3 still down", wantFailure: "s3", wantDead: true,
		},
		{
			name: "an attempt budget ends in Failed before MaxDeliver", errs: []error{errors.New("etcd down"),
				errors.New("etcd down")}, maxDeliver: 4, wantCalls: 2,
			outcome:    func(o *bus.Outcome[*etcdbackupv1.BackupRequested]) { o.Attempts = 2 },
			wantPhases: []etcdbackupv1.Phase{etcdbackupv1.Phase_PHASE_RUNNING, etcdbackupv1.Phase_PHASE_FAILED},
			wantLast:   "upload: etcd down", wantFailure: "s3",
		},
		{
			name: "within its window: retried, saying how long it has waited", errs: []error{errors.New("s3 down")},
			maxDeliver: bus.Unlimited, wantCalls: 2,
			outcome: func(o *bus.Outcome[*etcdbackupv1.BackupRequested]) {
				o.Window = func(*etcdbackupv1.BackupRequested) (time.Time, time.Time) {
					return time.Now().Add(-90 * time.Minute), time.Now().Add(time.Hour)
				}
			},
			wantPhases: []etcdbackupv1.Phase{etcdbackupv1.Phase_PHASE_RUNNING},
			wantLast:   "attempt 1 failed, retrying: s3 down (waiting 1h30m", wantWait: "; retried until ",
			wantFailure: "s3",
		},
		{
			name: "past its window: Failed, whatever the consumer would still deliver",
			errs: []error{errors.New("s3 down")}, maxDeliver: bus.Unlimited, wantCalls: 1,
			outcome: func(o *bus.Outcome[*etcdbackupv1.BackupRequested]) {
				o.Window = func(*etcdbackupv1.BackupRequested) (time.Time, time.Time) {
					return time.Now().Add(-25 * time.Hour), time.Now().Add(-time.Hour)
				}
			},
			wantPhases: []etcdbackupv1.Phase{etcdbackupv1.Phase_PHASE_FAILED},
			wantLast:   "upload: gave up after retrying for 25h0m", wantWait: ": s3 down", wantFailure: "s3",
		},
		{
			name: "a rejection is not a failure of the work", errs: []error{bus.Reject("cluster",
				errors.New("another cluster"))}, maxDeliver: 5, wantCalls: 1,
		},
		{
			name: "a rejection reported as Failed where the stage says so", errs: []error{bus.Reject("cluster",
				errors.New("another cluster"))}, maxDeliver: 5, wantCalls: 1,
			outcome:    func(o *bus.Outcome[*etcdbackupv1.BackupRequested]) { o.Rejections = true },
			wantPhases: []etcdbackupv1.Phase{etcdbackupv1.Phase_PHASE_FAILED},
			wantLast:   "upload: rejected (cluster): another cluster",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			js := natstest.JetStream(t)
			c := consumerWithMaxDeliver(t, ctx, js, tc.maxDeliver)
			events := statusEvents(t, ctx, js)
			m := bus.NewMetrics(prometheus.NewRegistry())
			o := outcome()
			var cleaned atomic.Int32
			o.Cleanup = func(context.Context, *etcdbackupv1.BackupRequested) { cleaned.Add(1) }
			if tc.outcome != nil {
				tc.outcome(&o)
			}
			var calls atomic.Int32
			h := bus.Typed(tc.maxDeliver, func(ctx context.Context, req *etcdbackupv1.BackupRequested, d bus.Delivery) error {
				n := int(calls.Add(1))
				if n <= len(tc.errs) {
					return tc.errs[n-1]
				}
				return nil
			}, bus.Report(js, m, o))
			startWorker(t, ctx, c, h, bus.WithMetrics(m))
			if _, err := js.Publish(ctx, bus.SubjectBackupRequested, mustEncode(t, validRequest())); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the message to leave the stream", func() bool {
				return streamEmpty(t, ctx,
					js) && len(events()) >= len(tc.wantPhases)
			})
			if n := int(calls.Load()); n != tc.wantCalls {
				t.Fatalf("handled %d times, want %d", n, tc.wantCalls)
			}
			evs := events()
			var phases []etcdbackupv1.Phase
			for _, ev := range evs {
				phases = append(phases, ev.GetPhase())
			}
			if fmt.Sprint(phases) != fmt.Sprint(tc.wantPhases) {
				t.Fatalf("status events %v, want %v", phases, tc.wantPhases)
			}
			last := ""
			if len(evs) > 0 {
				last = evs[len(evs)-1].GetMessage()
			}
			if tc.wantWait == "" && tc.wantLast != "" && last != tc.wantLast ||
				tc.wantWait != "" && (!strings.HasPrefix(last, tc.wantLast) || !strings.Contains(last, tc.wantWait)) {
				t.Fatalf("last status event %q, want %q (then %q)", last, tc.wantLast, tc.wantWait)
			}
			failed := len(tc.errs)
			if tc.wantFailure == "" {
				failed = 0
			}
			if got := testutil.ToFloat64(m.Failures("upload", tc.wantFailure)); tc.wantFailure != "" && int(got) != failed {
				t.Fatalf("failures{upload,%s} = %v, want %d", tc.wantFailure, got, failed)
			}
			if dead := testutil.ToFloat64(m.DeadLetters(bus.SubjectBackupRequested)); (dead == 1) != tc.wantDead {
				t.Fatalf("dead letters %v, want dead=%v", dead, tc.wantDead)
			}
			wantCleaned := 0
			if len(tc.wantPhases) > 0 && tc.wantPhases[len(tc.wantPhases)-1] == etcdbackupv1.Phase_PHASE_FAILED {
				wantCleaned = 1
			}
			if int(cleaned.Load()) != wantCleaned {
				t.Fatalf("cleaned up %d times, want %d", cleaned.Load(), wantCleaned)
			}
		})
	}
}

// A Failed event that cannot be published is not lost: the message comes again, and the
// next delivery reports it.
func TestReportRetriesAFailedEventItCouldNotPublish(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := natstest.JetStream(t)
	c := consumerWithMaxDeliver(t, ctx, js, 5)
	o := outcome()
	var reported atomic.Int32
	event := o.Event
	o.Event = func(req *etcdbackupv1.BackupRequested, phase etcdbackupv1.Phase, msg string) *etcdbackupv1.StatusEvent {
		// The status stream is away for the first report, back for the second.
		if reported.Add(1) == 1 {
			if err := js.DeleteStream(ctx, bus.StreamStatus); err != nil {
				t.Error(err)
			}
		} else if err := bus.Ensure(ctx, js, testTopology()); err != nil {
			t.Error(err)
		}
		return event(req, phase, msg)
	}
	var calls atomic.Int32
	h := bus.Typed(5, func(context.Context, *etcdbackupv1.BackupRequested, bus.Delivery) error {
		calls.Add(1)
		return errConfig
	}, bus.Report(js, bus.NewMetrics(prometheus.NewRegistry()), o))
	startWorker(t, ctx, c, h)
	if _, err := js.Publish(ctx, bus.SubjectBackupRequested, mustEncode(t, validRequest())); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the message to be done", func() bool { return streamEmpty(t, ctx, js) && reported.Load() == 2 })
	s, err := js.Stream(ctx, bus.StreamStatus)
	if err != nil {
		t.Fatal(err)
	}
	last, err := s.GetLastMsgForSubject(ctx, bus.StatusSubject(etcdbackupv1.Stage_STAGE_UPLOADER))
	if err != nil {
		t.Fatal(err)
	}
	ev := &etcdbackupv1.StatusEvent{}
	if err := bus.Decode(last.Data, last.Header.Get(bus.HeaderContentType), ev); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 2 || ev.GetPhase() != etcdbackupv1.Phase_PHASE_FAILED {
		t.Fatalf("handled %d times, last event %v; want 2 and Failed", n, ev)
	}
}

// Each retry is logged once, by the Worker, with the message's attributes; the handler and
// the middleware log nothing of it.
func TestARetryIsLoggedOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := natstest.JetStream(t)
	c := consumerWithMaxDeliver(t, ctx, js, 10)
	log, buf := logtest.New()
	var calls atomic.Int32
	h := bus.Typed(10, func(context.Context, *etcdbackupv1.BackupRequested, bus.Delivery) error {
		if calls.Add(1) <= 3 {
			return errors.New("s3 down")
		}
		return nil
	}, bus.Report(js, bus.NewMetrics(prometheus.NewRegistry()), outcome()))
	startWorker(t, ctx, c, h, bus.WithLogger(log))
	if _, err := js.Publish(ctx, bus.SubjectBackupRequested, mustEncode(t, validRequest())); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the message to be done", func() bool { return calls.Load() == 4 && streamEmpty(t, ctx, js) })
	var retries int
	for _, line := range buf.Lines() {
		if strings.Contains(line, "s3 down") {
			retries++
			if !strings.Contains(line, `"backup":"`+validRequest().GetBackupName()) || !strings.Contains(line, "will retry") {
				t.Errorf("retry line without the backup: %s", line)
			}
		}
	}
	if retries != 3 {
		t.Fatalf("%d log lines about the 3 retries, want 3:\n%s", retries, buf.String())
	}
}

func consumerWithMaxDeliver(t *testing.T, ctx context.Context, js jetstream.JetStream,
	maxDeliver int) jetstream.Consumer {
	t.Helper()
	if err := bus.Ensure(ctx, js, testTopology()); err != nil {
		t.Fatal(err)
	}
	c, err := bus.Consumer(ctx, js, bus.ConsumerSnapshotter, maxDeliver)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
