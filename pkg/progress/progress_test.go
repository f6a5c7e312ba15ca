package progress

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"
)

func TestSay(t *testing.T) {
	for _, tc := range []struct {
		done, total int64
		want        string
	}{
		{512 << 20, 1174 << 20, "512 of 1174 MiB (43%)"},
		{1200 << 20, 1174 << 20, "1200 of 1174 MiB (100%)"}, // a snapshot a little larger than the db it was sized by
		{3 << 20, 0, "3 MiB"},
		{90 << 10, 300 << 10, "90 of 300 KiB (30%)"},
		{512 << 10, 0, "512 KiB"},
		{412, 412, "412 of 412 B (100%)"},
		{512 << 10, 2 << 20, "0 of 2 MiB (25%)"},
	} {
		if got := Say(tc.done, tc.total); got != tc.want {
			t.Errorf("Say(%d, %d) = %q, want %q", tc.done, tc.total, got, tc.want)
		}
	}
}

func TestReaderCounterAndEvery(t *testing.T) {
	r := &Reader{R: bytes.NewReader(make([]byte, 3<<20))}
	if n, err := io.Copy(io.Discard, r); err != nil || n != 3<<20 || r.N() != 3<<20 {
		t.Fatalf("copied %d (%v), counted %d", n, err, r.N())
	}
	c := &Counter{}
	c.Add(100)
	c.Add(23)
	if c.N() != 123 {
		t.Fatalf("counter %d, want 123", c.N())
	}
	var calls atomic.Int32
	stop := Every(context.Background(), time.Millisecond, func() { calls.Add(1) })
	deadline := time.Now().Add(10 * time.Second)
	for calls.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // polling the condition, not waiting for it to happen
	}
	stop()
	if n := calls.Load(); n < 3 {
		t.Fatalf("%d reports in 10 s at a 1 ms interval", n)
	}
}

// A stream that stops sending is cut off after the idle bound, with ErrIdle as the cause; one
// that keeps sending is not, however long it takes in all.
func TestIdleCutsOffAStalledStream(t *testing.T) {
	ctx, wrap, stop := Idle(context.Background(), 50*time.Millisecond)
	defer stop()
	pr, pw := io.Pipe()
	go func() {
		for range 6 { // 6 bytes, 20 ms apart: 120 ms in all, never 50 ms idle
			time.Sleep(20 * time.Millisecond)
			_, _ = pw.Write([]byte{1})
		}
		<-ctx.Done() // then it stalls, until the watchdog ends it
		pw.CloseWithError(context.Cause(ctx))
	}()
	got, err := io.ReadAll(wrap(pr))
	if len(got) != 6 || !errors.Is(err, ErrIdle) || !errors.Is(context.Cause(ctx), ErrIdle) {
		t.Fatalf("read %d bytes, err %v (cause %v); want 6 bytes, then ErrIdle", len(got), err, context.Cause(ctx))
	}
}
