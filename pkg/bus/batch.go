package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// BatchHandler processes messages fetched together. It returns one error per message, in
// their order, with Handler's meaning: nil acks, Permanent terminates, anything else naks with
// a backoff. Like every handler it must be idempotent.
type BatchHandler func(ctx context.Context, msgs []jetstream.Msg) []error

// NewBatchWorker returns a Worker that hands h every message waiting on c, up to size at a
// time: it waits for one message, then takes what else is already there, waiting at most
// BatchGather for more. A quiet consumer so adds little delay, and a busy one is drained in
// batches whose size follows its backlog — for handlers where many messages cost little more than one (status events
// of one
// object merged into one write). A batch's messages are acked without waiting for the
// server's confirmation: a lost ack delivers the message again.
func NewBatchWorker(c jetstream.Consumer, h BatchHandler, size int, opts ...WorkerOption) (*Worker, error) {
	if h == nil {
		return nil, errors.New("batch handler is nil")
	}
	if size < 1 {
		return nil, fmt.Errorf("batch size must be at least 1, got %d", size)
	}
	w, err := NewWorker(c, nil, opts...)
	if err != nil {
		return nil, err
	}
	w.batch, w.batchSize = h, size
	return w, nil
}

func (w *Worker) loopBatch(ctx, handlerCtx context.Context) {
	for ctx.Err() == nil {
		msgs, err := w.fetchBatch(ctx)
		if err != nil {
			if ctx.Err() == nil {
				w.log.Warn("fetch", "err", err)
				sleepCtx(ctx, time.Second)
			}
			continue
		}
		if len(msgs) == 0 {
			continue
		}
		stop := w.keepInProgress(msgs)
		errs := w.batch(handlerCtx, msgs)
		stop()
		if len(errs) != len(msgs) {
			// A handler bug: settle nothing rather than ack what was not handled; the
			// messages come again after their AckWait.
			w.log.Error("batch handler returned the wrong number of results", "messages", len(msgs), "results", len(errs))
			continue
		}
		for i, msg := range msgs {
			w.settle(handlerCtx, msg, errs[i], false)
		}
	}
}

// fetchBatch waits up to the fetch wait for one message, then takes up to batchSize-1 more
// that are already waiting or arrive within BatchGather.
func (w *Worker) fetchBatch(ctx context.Context) ([]jetstream.Msg, error) {
	fetchCtx, cancel := context.WithTimeout(ctx, w.fetchWait)
	defer cancel()
	first, err := w.consumer.Fetch(1, jetstream.FetchContext(fetchCtx))
	if err != nil {
		return nil, err
	}
	var msgs []jetstream.Msg
	for m := range first.Messages() {
		msgs = append(msgs, m)
	}
	if err := first.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err,
		context.DeadlineExceeded) && ctx.Err() == nil {
		return msgs, err
	}
	if len(msgs) == 0 || w.batchSize == 1 {
		return msgs, nil
	}
	// A short wait rather than no_wait: under load the server answered a no_wait request with
	// nothing while messages were waiting (batches of 1 in a backlog of 50, in tests).
	more, err := w.consumer.Fetch(w.batchSize-1, jetstream.FetchMaxWait(BatchGather))
	if err != nil {
		return msgs, nil // the first is handled; the rest waits for the next fetch
	}
	for m := range more.Messages() {
		msgs = append(msgs, m)
	}
	return msgs, nil
}

// BatchGather is how long a batch worker waits for more messages after the first: what is
// already waiting arrives at once; a quiet stream adds this much delay.
const BatchGather = 20 * time.Millisecond

// Item is one decoded, valid message of a batch with its delivery.
type Item[M any] struct {
	Msg      M
	Delivery Delivery
}

// TypedBatch adapts a handler of decoded messages of one type to a BatchHandler, as Typed does
// for one message: invalid messages are terminated without reaching handle, and on a
// message's last delivery a transient error makes it a dead letter. handle returns one error
// per item, in order.
func TypedBatch[T any, M Message[T]](maxDeliver int, handle func(ctx context.Context,
	items []Item[M]) []error) BatchHandler {
	return func(ctx context.Context, msgs []jetstream.Msg) []error {
		errs := make([]error, len(msgs))
		items := make([]Item[M], 0, len(msgs))
		index := make([]int, 0, len(msgs))
		for i, msg := range msgs {
			m, d, err := decodeTyped[T, M](msg, maxDeliver)
			if err != nil {
				errs[i] = err
				continue
			}
			items = append(items, Item[M]{Msg: m, Delivery: d})
			index = append(index, i)
		}
		if len(items) == 0 {
			return errs
		}
		results := handle(ctx, items)
		for j, i := range index {
			var err error
			if j < len(results) {
				err = results[j]
			} else {
				err = errors.New("no result from the batch handler")
			}
			errs[i] = lastDelivery(ctx, items[j].Delivery, err)
		}
		return errs
	}
}
