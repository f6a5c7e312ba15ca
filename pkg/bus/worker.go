package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Handler processes one message. It must be idempotent: JetStream delivers at least once.
// Returning nil acks the message; an error wrapped with Permanent terminates it (it is never
// delivered again); any other error naks it with a backoff delay, so it is delivered again.
type Handler func(ctx context.Context, msg jetstream.Msg) error

type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent marks err as not worth retrying (bad input, missing configuration).
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether err, or an error it wraps, was marked Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

// Worker runs a Handler over a durable pull consumer, fetching one message at a time per
// goroutine so that long jobs never sit in a client-side buffer while their AckWait runs out.
type Worker struct {
	consumer    jetstream.Consumer
	handler     Handler
	log         *slog.Logger
	concurrency int
	progress    time.Duration
	drain       time.Duration
	backoff     func(delivered uint64) time.Duration
	fetchWait   time.Duration
	metrics     *Metrics
	// batch, when set, handles up to batchSize messages at once instead of handler.
	batch     BatchHandler
	batchSize int
}

// WorkerOption configures a Worker.
type WorkerOption func(*Worker) error

// WithConcurrency sets how many messages one replica handles at once (default 1).
func WithConcurrency(n int) WorkerOption {
	return func(w *Worker) error {
		if n < 1 {
			return fmt.Errorf("concurrency must be at least 1, got %d", n)
		}
		w.concurrency = n
		return nil
	}
}

// WithProgressInterval sets how often a running handler's message is marked in progress,
// which extends its AckWait (default 10s; keep it well below the consumer's AckWait).
func WithProgressInterval(d time.Duration) WorkerOption {
	return func(w *Worker) error {
		if d <= 0 {
			return fmt.Errorf("progress interval must be positive, got %s", d)
		}
		w.progress = d
		return nil
	}
}

// WithDrainTimeout sets how long in-flight handlers may run on after shutdown begins
// (default 30s); a handler cut off then naks its message for another replica.
func WithDrainTimeout(d time.Duration) WorkerOption {
	return func(w *Worker) error {
		if d < 0 {
			return fmt.Errorf("drain timeout must not be negative, got %s", d)
		}
		w.drain = d
		return nil
	}
}

// WithBackoff sets the redelivery delay after a transient failure, by delivery count.
func WithBackoff(f func(delivered uint64) time.Duration) WorkerOption {
	return func(w *Worker) error {
		if f == nil {
			return errors.New("backoff function is nil")
		}
		w.backoff = f
		return nil
	}
}

// WithMetrics counts invalid, rejected and dead-lettered messages in m (shared by every
// Worker of a process).
func WithMetrics(m *Metrics) WorkerOption {
	return func(w *Worker) error {
		if m == nil {
			return errors.New("metrics are nil")
		}
		w.metrics = m
		return nil
	}
}

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) WorkerOption {
	return func(w *Worker) error {
		if l == nil {
			return errors.New("logger is nil")
		}
		w.log = l
		return nil
	}
}

// ExponentialBackoff doubles from base on every delivery, up to max.
func ExponentialBackoff(base, max time.Duration) func(uint64) time.Duration {
	return func(delivered uint64) time.Duration {
		d := base
		for i := uint64(1); i < delivered && d < max; i++ {
			d *= 2
		}
		return min(d, max)
	}
}

// NewWorker returns a Worker that runs h over c.
func NewWorker(c jetstream.Consumer, h Handler, opts ...WorkerOption) (*Worker, error) {
	w := &Worker{
		consumer:    c,
		handler:     h,
		log:         slog.Default(),
		concurrency: 1,
		progress:    10 * time.Second,
		drain:       30 * time.Second,
		backoff:     ExponentialBackoff(time.Second, time.Minute),
		fetchWait:   5 * time.Second,
	}
	for _, o := range opts {
		if err := o(w); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// Start handles messages until ctx is done, then stops fetching, lets in-flight handlers
// finish within the drain timeout, and returns nil.
func (w *Worker) Start(ctx context.Context) error {
	handlerCtx, cancelHandlers := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHandlers()
	stopDrain := context.AfterFunc(ctx, func() {
		t := time.NewTimer(w.drain)
		defer t.Stop()
		select {
		case <-t.C:
			cancelHandlers()
		case <-handlerCtx.Done():
		}
	})
	defer stopDrain()

	var wg sync.WaitGroup
	for range w.concurrency {
		if w.batch != nil {
			wg.Go(func() { w.loopBatch(ctx, handlerCtx) })
		} else {
			wg.Go(func() { w.loop(ctx, handlerCtx) })
		}
	}
	wg.Wait()
	return nil
}

func (w *Worker) loop(ctx, handlerCtx context.Context) {
	for ctx.Err() == nil {
		fetchCtx, cancel := context.WithTimeout(ctx, w.fetchWait)
		batch, err := w.consumer.Fetch(1, jetstream.FetchContext(fetchCtx))
		if err != nil {
			cancel()
			if ctx.Err() == nil {
				w.log.Warn("fetch", "err", err)
				sleepCtx(ctx, time.Second)
			}
			continue
		}
		for msg := range batch.Messages() {
			w.handle(handlerCtx, msg)
		}
		cancel()
		if err := batch.Error(); err != nil && ctx.Err() == nil && !errors.Is(err,
			jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) {
			w.log.Warn("fetch batch", "err", err)
			sleepCtx(ctx, time.Second)
		}
	}
}

func (w *Worker) handle(ctx context.Context, msg jetstream.Msg) {
	stop := w.keepInProgress([]jetstream.Msg{msg})
	err := w.handler(ctx, msg)
	stop()
	w.settle(ctx, msg, err, true)
}

// keepInProgress marks msgs in progress every progress interval until the returned func is
// called.
func (w *Worker) keepInProgress(msgs []jetstream.Msg) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(w.progress)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				for _, m := range msgs {
					_ = m.InProgress()
				}
			}
		}
	}()
	return func() { close(done) }
}

// settle acks, terminates or naks msg by the handler's err. A double ack waits for the
// server's confirmation; a plain one does not (the message may then come again, which an
// idempotent handler takes).
func (w *Worker) settle(ctx context.Context, msg jetstream.Msg, err error, double bool) {
	var delivered uint64 = 1
	if md, mdErr := msg.Metadata(); mdErr == nil {
		delivered = md.NumDelivered
	}
	switch {
	case err == nil:
		ack := msg.Ack
		if double {
			ack = func() error { return msg.DoubleAck(context.WithoutCancel(ctx)) }
		}
		if ackErr := ack(); ackErr != nil {
			w.log.Warn("ack", "subject", msg.Subject(), "err", ackErr)
		}
	case IsPermanent(err):
		kind := w.metrics.observe(msg.Subject(), err)
		if kind == "" {
			kind = "failed"
		}
		logger(w.log, err).Error("message terminated", "subject", msg.Subject(), "delivered", delivered, "kind", kind,
			"err", err)
		_ = msg.TermWithReason(truncate(err.Error(), 256))
	default:
		// The one line about a retry: handlers and their middleware do not log it.
		delay := w.backoff(delivered)
		var soon *retrySoonError
		if errors.As(err, &soon) {
			delay = soon.after
		}
		w.metrics.retry(msg.Subject())
		logger(w.log, err).Warn("job failed, will retry", "subject", msg.Subject(), "delivered", delivered, "retry_in",
			delay, "err", err)
		_ = msg.NakWithDelay(delay)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
