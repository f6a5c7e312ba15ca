package main

import (
	"context"
	"fmt"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/kube"
	"github.com/etcd-backup/etcdbackup/pkg/service"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/etcd-backup/etcdbackup/services/scheduler/scheduling"
	"github.com/etcd-backup/etcdbackup/services/scheduler/statuswriter"
	"github.com/etcd-backup/etcdbackup/services/scheduler/trigger"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

func run(ctx context.Context, args []string) error {
	cfg, err := parseConfig(args)
	if err != nil {
		return err
	}
	log, err := cfg.Logger("scheduler")
	if err != nil {
		return err
	}
	mgr, restCfg, err := cfg.NewManager("scheduler", log)
	if err != nil {
		return err
	}

	endpoint := service.NewEndpoint(cfg.MetricsAddr)
	m := newMetrics(endpoint.Registry())

	nc, js, err := service.ConnectNATS(ctx, cfg.NATS, bus.IdentityScheduler, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	if err := service.EnsureBus(ctx, js, cfg.Topology(), bus.IdentityScheduler, log); err != nil {
		return err
	}
	consumer, err := bus.Consumer(ctx, js, bus.ConsumerStatusWriter, cfg.MaxDeliver)
	if err != nil {
		return err
	}

	queue := scheduling.JetStreamQueue{JS: js, Queued: func(req *etcdbackupv1.BackupRequested) {
		m.queued.WithLabelValues(req.GetTrigger().String()).Inc()
	}}
	direct, err := kube.NewClient(restCfg)
	if err != nil {
		return err
	}
	dests := destination.NewResolver(mgr.GetClient(), destination.Source{Seed: cfg.Seed(), ConfigMap: cfg.DestinationsConfigMap})
	planner := &scheduling.Planner{
		Reader:         mgr.GetClient(),
		Destinations:   dests,
		Queue:          queue,
		API:            direct,
		ManualInterval: cfg.TriggerMinInterval,
	}
	rec := &scheduling.Reconciler{
		Client:   mgr.GetClient(),
		Planner:  planner,
		Recorder: mgr.GetEventRecorder("etcdbackup-scheduler"),
		Now:      time.Now,
		Log:      log,
		Observe:  m.observe,
		Forget:   m.forget,
	}
	if err := mgr.GetFieldIndexer().IndexField(ctx, &kubermaticv1.EtcdBackupConfig{}, clusterIndex, func(o client.Object) []string {
		return []string{o.(*kubermaticv1.EtcdBackupConfig).Spec.Cluster.Name}
	}); err != nil {
		return fmt.Errorf("index configs by cluster: %w", err)
	}
	configs := handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, obj client.Object) []reconcile.Request {
		return configsFor(ctx, mgr.GetClient(), obj)
	})
	// KKP updates a Cluster's status all the time; only its spec (pause) and annotations
	// (etcd endpoints) matter here.
	clusterChanged := builder.WithPredicates(predicate.Or(predicate.GenerationChangedPredicate{}, predicate.AnnotationChangedPredicate{}))
	b := ctrl.NewControllerManagedBy(mgr).
		Named("etcdbackupconfig-scheduler").
		For(&kubermaticv1.EtcdBackupConfig{}).
		Watches(&kubermaticv1.Cluster{}, configs, clusterChanged).
		Watches(&kubermaticv1.Seed{}, configs, builder.WithPredicates(predicate.GenerationChangedPredicate{}))
	if cfg.DestinationsConfigMap != "" {
		// The manager caches that one ConfigMap: a change to it wakes every config.
		b = b.Watches(&corev1.ConfigMap{}, configs)
	}
	if err := b.Complete(rec); err != nil {
		return fmt.Errorf("scheduler controller: %w", err)
	}

	writer := statuswriter.New(direct, log)
	writer.Destinations = dests
	writer.Events = mgr.GetEventRecorder("etcdbackup-scheduler")
	writer.Applied = func(phase string) { m.statusApplied.WithLabelValues(phase).Inc() }
	writer.Cache = mgr.GetClient()
	writer.Parallel = cfg.StatusWriters
	worker, err := bus.NewBatchWorker(consumer, bus.TypedBatch(cfg.MaxDeliver, writer.HandleBatch), cfg.StatusBatch,
		bus.WithLogger(log), bus.WithMetrics(bus.NewMetrics(endpoint.Registry())),
		bus.WithBackoff(bus.ExponentialBackoff(500*time.Millisecond, 30*time.Second)))
	if err != nil {
		return err
	}
	triggers := trigger.New(nc, planner, time.Now, log)

	return service.Run(ctx, endpoint, nc, log, mgr.GetCache().WaitForCacheSync, mgr.Start, worker.Start, triggers.Start)
}

// clusterIndex indexes EtcdBackupConfigs by spec.cluster.name.
const clusterIndex = "spec.cluster.name"

// configsFor maps a Cluster to the configs that back it up, and a Seed to every config.
func configsFor(ctx context.Context, c client.Reader, obj client.Object) []reconcile.Request {
	var list kubermaticv1.EtcdBackupConfigList
	var opts []client.ListOption
	if _, isCluster := obj.(*kubermaticv1.Cluster); isCluster {
		opts = append(opts, client.MatchingFields{clusterIndex: obj.GetName()})
	}
	if err := c.List(ctx, &list, opts...); err != nil {
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for _, cfg := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&cfg)})
	}
	return reqs
}

type metrics struct {
	queued        *prometheus.CounterVec
	statusApplied *prometheus.CounterVec
	interval      *prometheus.GaugeVec
	blocked       *prometheus.GaugeVec
}

// observe sets a config's schedule interval and which reason (if any) blocks it.
func (m *metrics) observe(ns, config string, interval time.Duration, reason string) {
	if interval > 0 {
		m.interval.WithLabelValues(ns, config).Set(interval.Seconds())
	} else {
		m.interval.DeleteLabelValues(ns, config)
	}
	m.blocked.DeletePartialMatch(prometheus.Labels{"namespace": ns, "config": config})
	if reason != "" {
		m.blocked.WithLabelValues(ns, config, reason).Set(1)
	}
}

// forget drops a config that is gone.
func (m *metrics) forget(ns, config string) {
	m.interval.DeleteLabelValues(ns, config)
	m.blocked.DeletePartialMatch(prometheus.Labels{"namespace": ns, "config": config})
}

func newMetrics(r prometheus.Registerer) *metrics {
	m := &metrics{
		queued: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etcdbackup_scheduler_backups_queued_total",
			Help: "Backup requests this replica queued that the stream accepted as new, by trigger.",
		}, []string{"trigger"}),
		statusApplied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "etcdbackup_status_events_applied_total",
			Help: "Status events that changed an EtcdBackupConfig's status, by backup phase.",
		}, []string{"phase"}),
		interval: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "etcdbackup_schedule_interval_seconds",
			Help: "Time between two scheduled backups of a config (absent for one-time backups): what an overdue backup is measured against.",
		}, []string{"namespace", "config"}),
		blocked: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "etcdbackup_scheduling_blocked",
			Help: "1 while a config takes no backups, with the reason of its SchedulingActive=False condition (TooManyBackups, ClusterPaused, InvalidSchedule, ...).",
		}, []string{"namespace", "config", "reason"}),
	}
	r.MustRegister(m.queued, m.statusApplied, m.interval, m.blocked)
	return m
}
