package service

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/pprof"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Endpoint serves /metrics from a registry, /healthz, and /readyz once marked ready.
type Endpoint struct {
	addr string
	// Profiling serves net/http/pprof's /debug/pprof/ beside the metrics (--debug-pprof).
	Profiling bool
	registry  *prometheus.Registry
	ready     atomic.Bool
	listener  net.Listener
}

// NewEndpoint returns an Endpoint on addr with a fresh registry holding the Go and process
// collectors; services register their own metrics on Registry().
func NewEndpoint(addr string) *Endpoint {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &Endpoint{addr: addr, registry: r}
}

// Registry is where the service registers its metrics.
func (e *Endpoint) Registry() *prometheus.Registry { return e.registry }

// SetReady marks the service ready or not.
func (e *Endpoint) SetReady(ready bool) { e.ready.Store(ready) }

// Listen binds the address; Start calls it if nobody did.
func (e *Endpoint) Listen() error {
	if e.addr == "" || e.listener != nil {
		return nil
	}
	l, err := net.Listen("tcp", e.addr)
	if err != nil {
		return err
	}
	e.listener = l
	return nil
}

// Start serves until ctx is done.
func (e *Endpoint) Start(ctx context.Context) error {
	if e.addr == "" {
		<-ctx.Done()
		return nil
	}
	if err := e.Listen(); err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(e.registry, promhttp.HandlerOpts{Registry: e.registry}))
	if e.Profiling {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !e.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
	}()
	if err := srv.Serve(e.listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
