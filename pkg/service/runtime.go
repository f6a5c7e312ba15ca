package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/kube"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// Runtime is what a service runs with, made by Connect: its logger, its Kubernetes clients
// (and controller manager, for services with controllers), the bus with the streams its
// identity works with in place, its metrics endpoint, and its Events. Close it when done.
type Runtime struct {
	Log *slog.Logger
	// Kube reads and writes uncached, as the service's own account.
	Kube client.Client
	// Clientset is for what the controller-runtime client does not do (pods/log, reviews).
	Clientset kubernetes.Interface
	// REST is the service's REST config.
	REST *rest.Config
	// Manager runs the service's controllers (WithManager; nil without).
	Manager manager.Manager
	NC      *nats.Conn
	JS      jetstream.JetStream
	// Staging is the staging object store, for identities that work with it (nil for others).
	Staging  jetstream.ObjectStore
	Endpoint *Endpoint
	// Bus counts what the bus layer refuses, retries and gives up on, and every stage's
	// failures; every Worker of the process shares it.
	Bus *bus.Metrics
	// Events records Kubernetes Events (events.k8s.io) as "etcdbackup-<service>".
	Events events.EventRecorder

	common      Common
	broadcaster events.EventBroadcaster
}

// Option configures Connect.
type Option func(*options) error

type options struct {
	name           string
	manager        bool
	managerOptions []func(*ctrl.Options)
}

// WithName names the service when it is not its NATS identity (the console connects as the
// watcher): its logs, user agent and Events say "etcdbackup-<name>".
func WithName(name string) Option {
	return func(o *options) error {
		if name == "" {
			return errors.New("empty service name")
		}
		o.name = name
		return nil
	}
}

// WithManager gives the service a controller manager (Runtime.Manager), which Run starts and
// whose cache sync makes the service ready. opts may change its options.
func WithManager(opts ...func(*ctrl.Options)) Option {
	return func(o *options) error {
		o.manager = true
		o.managerOptions = append(o.managerOptions, opts...)
		return nil
	}
}

// WithLeaderElection makes the manager's controllers run on one replica at a time: the
// holder of the Lease id in the Seed's namespace. Implies WithManager.
func WithLeaderElection(enabled bool, id string) Option {
	return func(o *options) error {
		if id == "" {
			return errors.New("leader election needs a lease name")
		}
		o.manager = true
		o.managerOptions = append(o.managerOptions, func(mo *ctrl.Options) {
			mo.LeaderElection = enabled
			mo.LeaderElectionID = id
			mo.LeaderElectionReleaseOnCancel = true
		})
		return nil
	}
}

// Connect makes the Runtime of the service whose NATS identity is id (also its name, user
// agent and NATS client name, prefixed "etcdbackup-"): it connects to the API server and to
// NATS, retrying NATS until ctx is done, and creates or updates the streams id works with.
func Connect(ctx context.Context, c Common, id bus.Identity, opts ...Option) (*Runtime, error) {
	var o options
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	name := string(id)
	if o.name != "" {
		name = o.name
	}
	log, err := c.Logger(name)
	if err != nil {
		return nil, err
	}
	rt := &Runtime{Log: log, Endpoint: NewEndpoint(c.MetricsAddr), common: c}
	rt.Endpoint.Profiling = c.DebugPprof
	if err := rt.connectKube(name, o); err != nil {
		return nil, err
	}
	if rt.NC, rt.JS, err = ConnectNATS(ctx, c.NATS, id, log); err != nil {
		return nil, err
	}
	rt.broadcaster = events.NewBroadcaster(&events.EventSinkImpl{Interface: rt.Clientset.EventsV1()})
	rt.broadcaster.StartRecordingToSink(ctx.Done())
	if rt.Events, err = rt.recorder(name); err != nil {
		rt.Close()
		return nil, err
	}
	rt.Bus = bus.NewMetrics(rt.Endpoint.Registry())
	if err := CheckBus(ctx, rt.JS, c.Topology(), id, log); err != nil {
		rt.Close()
		return nil, err
	}
	if _, staging := bus.StreamsOf(id); staging {
		if rt.Staging, err = rt.JS.ObjectStore(ctx, bus.StagingBucket); err != nil {
			rt.Close()
			return nil, fmt.Errorf("open staging bucket: %w", err)
		}
	}
	return rt, nil
}

func (rt *Runtime) connectKube(name string, o options) error {
	var err error
	if rt.REST, err = kube.Config(rt.common.Kubeconfig, "etcdbackup-"+name); err != nil {
		return err
	}
	if rt.Kube, err = kube.NewClient(rt.REST); err != nil {
		return err
	}
	if rt.Clientset, err = kubernetes.NewForConfig(rt.REST); err != nil {
		return err
	}
	if o.manager {
		rt.Manager, err = rt.common.newManager(rt.REST, rt.Log, o.managerOptions...)
	}
	return err
}

func (rt *Runtime) recorder(name string) (events.EventRecorder, error) {
	scheme, err := kube.NewScheme()
	if err != nil {
		return nil, err
	}
	return rt.broadcaster.NewRecorder(scheme, "etcdbackup-"+name), nil
}

// Destinations returns a resolver of the Seed's destinations that reads through r (the
// cache, or Kube for reads that must not wait for one), whose buckets take opts.
func (rt *Runtime) Destinations(r client.Reader, opts ...destination.S3Option) *destination.Resolver {
	return destination.NewResolver(r, rt.common.Destinations(), opts...)
}

// Worker returns the Start of a bus.Worker over the durable consumer the setup made, running
// the handler h builds for the consumer's MaxDeliver (bus.Unlimited for none), with the
// runtime's logger and bus metrics.
func (rt *Runtime) Worker(ctx context.Context, durable string, h func(maxDeliver int) bus.Handler,
	opts ...bus.WorkerOption) (Part, error) {
	c, maxDeliver, err := bus.Durable(ctx, rt.JS, durable)
	if err != nil {
		return nil, err
	}
	w, err := bus.NewWorker(c, h(maxDeliver), append([]bus.WorkerOption{bus.WithLogger(rt.Log), bus.WithMetrics(rt.Bus)},
		opts...)...)
	if err != nil {
		return nil, err
	}
	return w.Start, nil
}

// BatchWorker is Worker for a handler of up to size messages at once.
func (rt *Runtime) BatchWorker(ctx context.Context, durable string, h func(maxDeliver int) bus.BatchHandler, size int,
	opts ...bus.WorkerOption) (Part, error) {
	c, maxDeliver, err := bus.Durable(ctx, rt.JS, durable)
	if err != nil {
		return nil, err
	}
	base := []bus.WorkerOption{bus.WithLogger(rt.Log), bus.WithMetrics(rt.Bus)}
	w, err := bus.NewBatchWorker(c, h(maxDeliver), size, append(base, opts...)...)
	if err != nil {
		return nil, err
	}
	return w.Start, nil
}

// Run runs parts, and the manager when there is one, in the one lifecycle every service
// shares (see Run); with a manager the service is ready once its cache has synced.
func (rt *Runtime) Run(ctx context.Context, parts ...Part) error {
	var ready func(context.Context) bool
	if rt.Manager != nil {
		parts = append(parts, rt.Manager.Start)
		ready = rt.Manager.GetCache().WaitForCacheSync
	}
	return Run(ctx, rt.Endpoint, rt.NC, rt.Log, ready, parts...)
}

// Close closes the NATS connection and flushes pending Events.
func (rt *Runtime) Close() {
	if rt.NC != nil {
		rt.NC.Close()
	}
	if rt.broadcaster != nil {
		rt.broadcaster.Shutdown()
	}
}
