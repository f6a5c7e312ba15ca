package service

import (
	"context"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/sync/errgroup"
)

// Part is one long-lived part of a service (a bus.Worker's Start, a controller manager's
// Start, the manual trigger's server): it runs until ctx is done, then stops taking work,
// finishes what it has, and returns.
type Part func(ctx context.Context) error

// Run is the one wiring shape of every service (cerbos' server Start is the model). It serves
// e, runs the parts until ctx is done or one fails, and then stops in this order:
//
//  1. /readyz reports not ready at once, so no new work is routed here;
//  2. the parts drain (a worker finishes its in-flight messages, a manager its reconciles);
//  3. the endpoint stops: /metrics stayed up through the drain;
//  4. NATS is drained and closed last, after everything that publishes.
//
// ready, if not nil, is waited for (a cache sync) before /readyz reports ready. nc may be nil.
func Run(ctx context.Context, e *Endpoint, nc *nats.Conn, log *slog.Logger, ready func(ctx context.Context) bool,
	parts ...Part) error {
	if err := e.Listen(); err != nil {
		return err
	}
	endpointCtx, stopEndpoint := context.WithCancel(context.WithoutCancel(ctx))
	defer stopEndpoint()
	endpointDone := make(chan error, 1)
	go func() { endpointDone <- e.Start(endpointCtx) }()

	g, gctx := errgroup.WithContext(ctx)
	notReady := context.AfterFunc(gctx, func() { e.SetReady(false) })
	defer notReady()
	for _, p := range parts {
		g.Go(func() error { return p(gctx) })
	}
	g.Go(func() error {
		if ready != nil && !ready(gctx) {
			return nil
		}
		if gctx.Err() == nil {
			e.SetReady(true)
			if nc != nil {
				log.Info("ready", "nats", nc.ConnectedUrlRedacted())
			} else {
				log.Info("ready")
			}
		}
		return nil
	})
	err := g.Wait()
	e.SetReady(false)
	stopEndpoint()
	if eerr := <-endpointDone; err == nil {
		err = eerr
	}
	if nc != nil {
		closeNATS(nc, 10*time.Second)
	}
	return err
}

// closeNATS drains nc (pending publishes are flushed, subscriptions finish) and waits for it to
// close, at most timeout.
func closeNATS(nc *nats.Conn, timeout time.Duration) {
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err != nil {
		nc.Close()
		return
	}
	select {
	case <-closed:
	case <-time.After(timeout):
		nc.Close()
	}
}
