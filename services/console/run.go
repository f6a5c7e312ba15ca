package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/kube"
	"github.com/etcd-backup/etcdbackup/pkg/service"
	"github.com/etcd-backup/etcdbackup/services/console/web"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
)

func run(ctx context.Context, args []string) error {
	cfg, err := parseConfig(args)
	if err != nil {
		return err
	}
	log, err := cfg.Logger("console")
	if err != nil {
		return err
	}
	key, err := sessionKey(cfg.SessionKeyFile)
	if err != nil {
		return err
	}
	if cfg.SessionKeyFile == "" {
		log.Warn("no --session-key-file: sessions are sealed with a random key and end when this process does; replicas do not share them")
	}
	sessions, err := web.NewSessions(key, cfg.SessionTTL, cfg.TLSCert != "")
	if err != nil {
		return err
	}
	// The console's own identity reviews tokens and access and reads the destinations' names;
	// everything a user sees or changes goes through that user's token.
	own, err := kube.Config(cfg.Kubeconfig, "etcdbackup-console")
	if err != nil {
		return err
	}
	kc, err := kubernetes.NewForConfig(own)
	if err != nil {
		return err
	}
	ownClient, err := kube.NewClient(own)
	if err != nil {
		return err
	}
	users, err := userClients(own)
	if err != nil {
		return err
	}
	resolver := destination.NewResolver(ownClient, destination.Source{Seed: cfg.Seed(), ConfigMap: cfg.DestinationsConfigMap})

	nc, _, err := service.ConnectNATS(ctx, cfg.NATS, bus.IdentityWatcher, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	endpoint := service.NewEndpoint(cfg.MetricsAddr)
	hub := web.NewHub(cfg.EventBuffer)
	hub.Metrics = hubMetrics(endpoint.Registry())
	if _, err := hub.Subscribe(nc); err != nil {
		return fmt.Errorf("subscribe to status events: %w", err)
	}
	srv := &web.Server{
		Log: log, Sessions: sessions, Auth: web.NewAuthenticator(kc, cfg.AccessTTL), Users: users,
		Destinations: resolver.Names, Hub: hub, Metrics: requestMetrics(endpoint.Registry()),
	}
	h, err := srv.Handler()
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	httpSrv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	serve := func(ctx context.Context) error {
		errc := make(chan error, 1)
		go func() {
			if cfg.TLSCert != "" {
				errc <- httpSrv.ServeTLS(l, cfg.TLSCert, cfg.TLSKey)
			} else {
				errc <- httpSrv.Serve(l)
			}
		}()
		log.Info("console listening", "addr", l.Addr().String(), "tls", cfg.TLSCert != "")
		select {
		case err := <-errc:
			return err
		case <-ctx.Done():
		}
		// Event streams never end by themselves: close them with the listener.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := httpSrv.Shutdown(sctx); err != nil {
			_ = httpSrv.Close()
		}
		if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
	return service.Run(ctx, endpoint, nc, log, nil, serve)
}

// sessionKey reads the session key file, or makes a random key when there is none.
func sessionKey(file string) ([]byte, error) {
	if file == "" {
		key := make([]byte, 32)
		_, err := rand.Read(key)
		return key, err
	}
	key, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%w: --session-key-file: %v", service.ErrInvalidOption, err)
	}
	if len(key) < 32 {
		return nil, fmt.Errorf("%w: --session-key-file %s holds %d bytes, want at least 32", service.ErrInvalidOption, file, len(key))
	}
	return key, nil
}

// userClients returns clients that authenticate with the user's bearer token only: the
// console's own credentials are stripped (rest.AnonymousClientConfig), the TLS transport to
// the API server is shared, and the REST mapper comes from discovery, which every
// authenticated user may read.
func userClients(own *rest.Config) (web.UserClients, error) {
	anon := rest.AnonymousClientConfig(own)
	anon.UserAgent = "etcdbackup-console"
	hc, err := rest.HTTPClientFor(anon)
	if err != nil {
		return nil, err
	}
	scheme, err := kube.NewScheme()
	if err != nil {
		return nil, err
	}
	// Discovery with the console's own identity: the mapping of kinds to resources is the
	// same for everyone.
	ownHTTP, err := rest.HTTPClientFor(own)
	if err != nil {
		return nil, err
	}
	mapper, err := apiutil.NewDynamicRESTMapper(own, ownHTTP)
	if err != nil {
		return nil, err
	}
	return func(token string) (client.Client, error) {
		userHTTP := &http.Client{Transport: bearer{token: token, next: hc.Transport}, Timeout: 30 * time.Second}
		return client.New(anon, client.Options{Scheme: scheme, Mapper: mapper, HTTPClient: userHTTP})
	}, nil
}

// bearer adds the user's token to each request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

func hubMetrics(reg prometheus.Registerer) web.HubMetrics {
	clients := prometheus.NewGauge(prometheus.GaugeOpts{Name: "etcdbackup_console_sse_clients", Help: "Browsers connected to the console's status event stream."})
	dropped := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "etcdbackup_console_events_dropped_total",
		Help: "Status events not passed to a browser: slow-client (its buffer was full), undecodable, wrong-stage (not from its stage's subject), invalid."}, []string{"reason"})
	reg.MustRegister(clients, dropped)
	for _, r := range []string{"slow-client", "undecodable", "wrong-stage", "invalid"} {
		dropped.WithLabelValues(r)
	}
	return web.HubMetrics{Clients: func(n int) { clients.Set(float64(n)) }, Dropped: func(r string) { dropped.WithLabelValues(r).Inc() }}
}

func requestMetrics(reg prometheus.Registerer) web.Metrics {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "etcdbackup_console_requests_total",
		Help: "Requests to the console by route pattern and HTTP status code."}, []string{"route", "code"})
	reg.MustRegister(requests)
	return web.Metrics{Request: func(route string, code int) { requests.WithLabelValues(route, strconv.Itoa(code)).Inc() }}
}
