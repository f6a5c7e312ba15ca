// Package progress reports how far a long stage got: a Reader that counts the bytes through
// it, a ticker that calls a report at least every Interval while the stage runs, and the
// words of a report ("512 of 1,174 MiB (43%)").
package progress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"
)

// Interval is how often a running snapshot, upload or restore reports its progress.
const Interval = 5 * time.Second

// Reader counts the bytes read through it; N may be read from any goroutine.
type Reader struct {
	R io.Reader
	n atomic.Int64
}

func (r *Reader) Read(p []byte) (int, error) {
	n, err := r.R.Read(p)
	r.n.Add(int64(n))
	return n, err
}

// N is the number of bytes read so far.
func (r *Reader) N() int64 { return r.n.Load() }

// Counter counts bytes it is told of (destination.PutOptions.Uploaded takes its Add); Add and
// N may be called from any goroutine.
type Counter struct{ n atomic.Int64 }

// Add counts n more bytes.
func (c *Counter) Add(n int64) { c.n.Add(n) }

// N is the number of bytes counted so far.
func (c *Counter) N() int64 { return c.n.Load() }

// Every calls report every d until the returned stop is called (or ctx ends); stop waits for
// a report under way.
func Every(ctx context.Context, d time.Duration, report func()) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				report()
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

// Say words done of total bytes: "512 of 1174 MiB (43%)", or "512 MiB" when total is not known;
// in KiB below 1 MiB ("90 of 300 KiB (30%)"), in bytes below 1 KiB.
func Say(done, total int64) string {
	shift, unit := 20, "MiB"
	switch {
	case max(done, total) < 1<<10:
		shift, unit = 0, "B"
	case max(done, total) < 1<<20:
		shift, unit = 10, "KiB"
	}
	if total <= 0 {
		return fmt.Sprintf("%d %s", done>>shift, unit)
	}
	pct := min(100, done*100/total)
	return fmt.Sprintf("%d of %d %s (%d%%)", done>>shift, total>>shift, unit, pct)
}

// ErrIdle is the cause of a stream cut off by Idle: no byte arrived within its bound.
var ErrIdle = errors.New("no data within the idle timeout")

// Idle watches a stream for stalls: it returns a context derived from ctx for the call that
// opens the stream, and wrap, which wraps the stream's reader so that every read that returns
// bytes resets a timer of idle; when the timer fires first (a member or endpoint that stopped
// sending without closing the connection), the context is cancelled with ErrIdle as its cause,
// which ends the stream's next read. stop releases the timer.
func Idle(ctx context.Context, idle time.Duration) (sctx context.Context, wrap func(io.Reader) io.Reader,
	stop func()) {
	sctx, cancel := context.WithCancelCause(ctx)
	t := time.AfterFunc(idle, func() { cancel(fmt.Errorf("%w (%s)", ErrIdle, idle)) })
	wrap = func(r io.Reader) io.Reader { return &idleReader{r: r, t: t, idle: idle} }
	return sctx, wrap, func() { t.Stop(); cancel(nil) }
}

type idleReader struct {
	r    io.Reader
	t    *time.Timer
	idle time.Duration
}

func (r *idleReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.t.Reset(r.idle)
	}
	return n, err
}
