package take

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/natstest"
	"github.com/etcd-backup/etcdbackup/pkg/progress"
)

// stallingProxy forwards TCP to target and, once it has sent after bytes towards the client,
// stops forwarding that way without closing anything: a member that hangs mid-stream, or a
// path to it that was blackholed.
func stallingProxy(t *testing.T, target string, after int64) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var sent atomic.Int64
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			t.Cleanup(func() { in.Close(); out.Close() })
			go func() { _, _ = io.Copy(out, in) }()
			go func() {
				buf := make([]byte, 32<<10)
				for sent.Load() < after {
					n, err := out.Read(buf)
					if n > 0 {
						sent.Add(int64(n))
						if _, werr := in.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
				// Stalled: nothing more goes to the client, and nothing is closed.
			}()
		}
	}()
	return "http://" + l.Addr().String()
}

// A member that stops sending mid-snapshot fails the attempt within --snapshot-idle-timeout,
// naming the stall, instead of pinning the message until the process dies.
func TestStalledSnapshotFailsWithinTheIdleBound(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	e := filledEtcd(t, ctx, 100) // about 3 MiB
	u, err := url.Parse(e.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	h, req := silentEtcd(t)
	h.JS, h.SnapshotIdle, h.Level = natstest.Bus(t, 64<<20), 500*time.Millisecond, backupformat.Level
	pointAt(t, ctx, h, stallingProxy(t, u.Host, 1<<20))
	start := time.Now()
	_, err = h.take(ctx, req, bus.Delivery{Attempt: 1}, "", start)
	if !errors.Is(err, progress.ErrIdle) || !strings.Contains(err.Error(), "sent nothing for 500ms") {
		t.Fatalf("take from a member that stalls = %v, want the idle bound's error", err)
	}
	// Well before gRPC's keepalive (10 s) would notice the dead stream.
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the stalled attempt took %s to fail, want about the idle bound", took)
	}
}
