package service

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/kube"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Worker is what a service that works off one durable consumer is wired from: its logger,
// a Kubernetes client, the NATS connection with the bus in place, its consumer, the staging
// bucket (for identities that work with it) and its metrics endpoint.
type Worker struct {
	Log      *slog.Logger
	Kube     client.Client
	NC       *nats.Conn
	JS       jetstream.JetStream
	Consumer jetstream.Consumer
	Staging  jetstream.ObjectStore
	Endpoint *Endpoint
	// Bus counts invalid, rejected and dead-lettered messages; give it to every bus.Worker.
	Bus *bus.Metrics
	// Events records Kubernetes Events (events.k8s.io) as "etcdbackup-<service>".
	Events      events.EventRecorder
	broadcaster events.EventBroadcaster
}

// ConnectWorker builds a Worker for the service whose NATS identity is id (also its user
// agent and NATS client name, prefixed "etcdbackup-") consuming durable, which delivers a
// message at most maxDeliver times. Close the Worker when done.
func (c *Common) ConnectWorker(ctx context.Context, id bus.Identity, durable string, maxDeliver int) (*Worker, error) {
	name := string(id)
	log, err := c.Logger(name)
	if err != nil {
		return nil, err
	}
	restCfg, err := kube.Config(c.Kubeconfig, "etcdbackup-"+name)
	if err != nil {
		return nil, err
	}
	kc, err := kube.NewClient(restCfg)
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return nil, err
	}
	scheme, err := kube.NewScheme()
	if err != nil {
		return nil, err
	}
	nc, js, err := ConnectNATS(ctx, c.NATS, id, log)
	if err != nil {
		return nil, err
	}
	w := &Worker{Log: log, Kube: kc, NC: nc, JS: js, Endpoint: NewEndpoint(c.MetricsAddr)}
	w.broadcaster = events.NewBroadcaster(&events.EventSinkImpl{Interface: cs.EventsV1()})
	w.broadcaster.StartRecordingToSink(ctx.Done())
	w.Events = w.broadcaster.NewRecorder(scheme, "etcdbackup-"+name)
	w.Bus = bus.NewMetrics(w.Endpoint.Registry())
	if err := EnsureBus(ctx, js, c.Topology(), id, log); err != nil {
		w.Close()
		return nil, err
	}
	if _, staging := bus.StreamsOf(id); staging {
		if w.Staging, err = js.ObjectStore(ctx, bus.StagingBucket); err != nil {
			w.Close()
			return nil, fmt.Errorf("open staging bucket: %w", err)
		}
	}
	if w.Consumer, err = bus.Consumer(ctx, js, durable, maxDeliver); err != nil {
		w.Close()
		return nil, err
	}
	return w, nil
}

// Run runs worker and the other parts in the service's wiring shape (see Run).
func (w *Worker) Run(ctx context.Context, ready func(context.Context) bool, worker *bus.Worker, parts ...Part) error {
	return Run(ctx, w.Endpoint, w.NC, w.Log, ready, append([]Part{worker.Start}, parts...)...)
}

// Close closes the NATS connection and flushes pending Events.
func (w *Worker) Close() {
	w.NC.Close()
	w.broadcaster.Shutdown()
}
