package service

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"
)

// Go's profiles are served only when asked for (--debug-pprof): they show the process's
// command line and let anyone who reaches the port spend its CPU on profiling.
func TestEndpointServesProfilesOnlyWhenAsked(t *testing.T) {
	for _, profiling := range []bool{false, true} {
		addr := freeAddr(t)
		e := NewEndpoint(addr)
		e.Profiling = profiling
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- e.Start(ctx) }()
		get := func(path string) int { return statusOf(addr, path) }
		deadline := time.Now().Add(10 * time.Second)
		for get("/healthz") != http.StatusOK {
			if time.Now().After(deadline) {
				t.Fatal("the endpoint did not start")
			}
			time.Sleep(10 * time.Millisecond)
		}
		want := http.StatusNotFound
		if profiling {
			want = http.StatusOK
		}
		for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/cmdline"} {
			if code := get(path); code != want {
				t.Errorf("profiling %v: %s answered %d, want %d", profiling, path, code, want)
			}
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// freeAddr is a local address no one listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// statusOf is the status of a GET of path on addr; 0 when nothing answers.
func statusOf(addr, path string) int {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return 0
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}
