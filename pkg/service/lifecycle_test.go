package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/natstest"
	"github.com/nats-io/nats.go"
)

// Shutdown goes in order: /readyz is not ready as soon as the context ends, /metrics answers
// while the parts drain, then the endpoint stops, and NATS is closed last.
func TestRunShutsDownInOrder(t *testing.T) {
	srv := natstest.RunJetStream(t)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	e := NewEndpoint(addr)
	get := func(path string) int { return statusOf(addr, path) }
	poll := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	draining, release := make(chan struct{}), make(chan struct{})
	part := func(ctx context.Context) error {
		<-ctx.Done()
		close(draining)
		<-release // in-flight work
		if nc.IsClosed() {
			return errors.New("NATS closed before the part drained")
		}
		return nil
	}
	done := make(chan error, 1)
	go func() { done <- Run(ctx, e, nc, slog.New(slog.DiscardHandler), nil, part) }()
	poll("ready", func() bool { return get("/readyz") == http.StatusOK })

	cancel()
	<-draining
	if code := get("/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz during the drain: %d, want 503", code)
	}
	if code := get("/metrics"); code != http.StatusOK {
		t.Fatalf("/metrics during the drain: %d, want 200", code)
	}
	if nc.IsClosed() {
		t.Fatal("NATS closed while the parts drain")
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if code := get("/metrics"); code != 0 {
		t.Fatalf("/metrics still answers %d after Run returned", code)
	}
	if !nc.IsClosed() {
		t.Fatal("NATS is not closed after Run returned")
	}
}

// A part that fails stops the others and Run returns its error.
func TestRunStopsWhenAPartFails(t *testing.T) {
	e := NewEndpoint("")
	boom := fmt.Errorf("controller failed")
	other := func(ctx context.Context) error { <-ctx.Done(); return nil }
	err := Run(context.Background(), e, nil, slog.New(slog.DiscardHandler), nil,
		func(context.Context) error { return boom }, other)
	if !errors.Is(err, boom) {
		t.Fatalf("Run = %v, want %v", err, boom)
	}
}
