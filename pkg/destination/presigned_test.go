package destination_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/destination"
)

// A presigned URL is a credential for its object: no error of its reader repeats it, whether
// the URL does not parse or its endpoint does not answer; and the reader reads its own key only.
func TestPresignedURLNeverReachesAnError(t *testing.T) {
	const sig = "X-Amz-Signature=0123456789abcdef"
	if _, err := destination.OpenPresigned("http://127.0.0.1:1/b/k\x7f?"+sig, "k"); err == nil ||
		strings.Contains(err.Error(), sig) {
		t.Fatalf("a URL that does not parse: %v; want an error without the URL", err)
	}
	r, err := destination.OpenPresigned("http://127.0.0.1:1/b/k?X-Amz-Expires=60&"+sig, "k")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for op, call := range map[string]func() error{
		"stat": func() error { _, err := r.Stat(ctx, "k"); return err },
		"get":  func() error { _, _, err := r.Get(ctx, "k"); return err },
	} {
		if err := call(); err == nil || strings.Contains(err.Error(), sig) || !strings.Contains(err.Error(), "127.0.0.1:1") {
			t.Errorf("%s at an endpoint that does not answer: %v; want an error naming the host, not the URL", op, err)
		}
	}
	if _, _, err := r.Get(ctx, "other"); err == nil || !strings.Contains(err.Error(), "reads k only") {
		t.Errorf("get of another key: %v, want refused", err)
	}
}
