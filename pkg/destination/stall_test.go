package destination_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/destination"
)

// blackhole accepts connections and reads whatever comes, answering nothing: an S3 endpoint
// that stopped answering, or a path to it that was blackholed.
func blackhole(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			go func() { _, _ = io.Copy(io.Discard, c) }()
		}
	}()
	return l.Addr().String()
}

// A put to an endpoint that answers nothing fails within the part timeout, in one request and
// in a multipart upload alike, so the uploader retries instead of hanging on TCP's timeouts.
func TestPutToAStalledEndpointFailsWithinThePartTimeout(t *testing.T) {
	b, err := destination.OpenS3(blackhole(t), false, "k", "s", "backups",
		destination.WithPartTimeout(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{1 << 10, 11 << 20} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		start := time.Now()
		err := b.Put(ctx, "k", bytes.NewReader(make([]byte, size)), int64(size), destination.PutOptions{IfAbsent: true})
		took := time.Since(start)
		cancel()
		if err == nil || errors.Is(err, destination.ErrObjectExists) {
			t.Fatalf("%d bytes to a stalled endpoint: %v after %s, want a timeout", size, err, took)
		}
		if took > 10*time.Second {
			t.Fatalf("%d bytes to a stalled endpoint failed after %s, want about the part timeout", size, took)
		}
	}
}
