package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/service"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/etcd-backup/etcdbackup/services/restorer/drill"
	"github.com/etcd-backup/etcdbackup/services/restorer/restore"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

func run(ctx context.Context, args []string) error {
	cfg, err := parseConfig(args)
	if err != nil {
		return err
	}
	log, err := cfg.Logger("restorer")
	if err != nil {
		return err
	}
	nc, js, err := service.ConnectNATS(ctx, cfg.NATS, bus.IdentityRestorer, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	if err := service.EnsureBus(ctx, js, cfg.Topology(), bus.IdentityRestorer, log); err != nil {
		return err
	}
	mgr, _, err := cfg.NewManager("restorer", log, func(o *ctrl.Options) {
		o.LeaderElection = cfg.LeaderElect
		o.LeaderElectionID = "etcdbackup-restorer"
		o.LeaderElectionNamespace = cfg.SeedNamespace
		o.LeaderElectionReleaseOnCancel = true
	})
	if err != nil {
		return err
	}
	endpoint := service.NewEndpoint(cfg.MetricsAddr)
	kc, err := kubernetes.NewForConfig(mgr.GetConfig())
	if err != nil {
		return err
	}
	rec := &restore.Reconciler{
		Client:       mgr.GetClient(),
		API:          mgr.GetAPIReader(),
		Destinations: destination.NewResolver(mgr.GetAPIReader(), destination.Source{Seed: cfg.Seed(), ConfigMap: cfg.DestinationsConfigMap}),
		Recorder:     mgr.GetEventRecorder("etcdbackup-restorer"),
		Log:          log,
		Publish:      publisher(js, log),
		Logs:         podLogs(kc),
		Opts:         cfg.Options,
		Metrics:      newMetrics(endpoint.Registry()),
	}
	err = ctrl.NewControllerManagedBy(mgr).Named("etcdrestore").
		For(&kubermaticv1.EtcdRestore{}).
		Watches(&kubermaticv1.Cluster{}, handler.EnqueueRequestsFromMapFunc(restoresOf(mgr.GetClient()))).
		WithOptions(controller.Options{MaxConcurrentReconciles: cfg.Concurrency}).
		Complete(rec)
	if err != nil {
		return fmt.Errorf("restorer controller: %w", err)
	}
	// Drills run on the leader only, one at a time: each restores a whole backup.
	drills := &drill.Controller{
		Client:       mgr.GetClient(),
		Destinations: rec.Destinations,
		Recorder:     mgr.GetEventRecorder("etcdbackup-restorer"),
		Log:          log,
		Publish:      eventPublisher(js, log),
		Default:      cfg.DrillSchedule,
		Scratch:      cfg.DrillDir,
		Metrics:      newDrillMetrics(endpoint.Registry()),
	}
	err = ctrl.NewControllerManagedBy(mgr).Named("drill").
		For(&kubermaticv1.EtcdBackupConfig{}).
		WithOptions(controller.Options{MaxConcurrentReconciles: 1}).
		Complete(drills)
	if err != nil {
		return fmt.Errorf("drill controller: %w", err)
	}
	return service.Run(ctx, endpoint, nc, log, mgr.GetCache().WaitForCacheSync, mgr.Start)
}

// restoresOf maps a Cluster to the unfinished EtcdRestores of it: a lock released, a feature
// enabled or a pause changed lets them go on.
func restoresOf(c client.Client) handler.MapFunc {
	return func(ctx context.Context, obj client.Object) []reconcile.Request {
		var list kubermaticv1.EtcdRestoreList
		if err := c.List(ctx, &list); err != nil {
			return nil
		}
		var out []reconcile.Request
		for _, r := range list.Items {
			if st := r.EffectiveStatus(); r.Spec.Cluster.Name != obj.GetName() || st.Finished() {
				continue
			}
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&r)})
		}
		return out
	}
}

// publisher sends each phase change as a status event for subscribers; the restore does not
// wait for NATS: the EtcdRestore's status is the record.
func publisher(js jetstream.JetStream, log *slog.Logger) func(context.Context, *kubermaticv1.EtcdRestore) {
	return func(ctx context.Context, r *kubermaticv1.EtcdRestore) {
		phase := etcdbackupv1.Phase_PHASE_RUNNING
		switch r.Status.Phase {
		case kubermaticv1.RestorePhaseCompleted:
			phase = etcdbackupv1.Phase_PHASE_COMPLETED
		case kubermaticv1.RestorePhaseFailed:
			phase = etcdbackupv1.Phase_PHASE_FAILED
		}
		msg := r.Status.Message
		if r.Status.Phase != "" {
			msg = r.Status.Phase + ": " + msg
		}
		ev := &etcdbackupv1.StatusEvent{
			Config:     &etcdbackupv1.ConfigRef{Namespace: r.Namespace, Name: r.Name, Uid: string(r.UID)},
			Cluster:    r.Spec.Cluster.Name,
			BackupName: r.Spec.BackupName,
			Stage:      etcdbackupv1.Stage_STAGE_RESTORER,
			Operation:  etcdbackupv1.Operation_OPERATION_RESTORE,
			Phase:      phase,
			Message:    msg,
			ObjectKey:  r.Status.ObjectKey,
			Sha256:     r.Status.SHA256,
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if err := bus.PublishStatus(pctx, js, ev); err != nil {
			log.Warn("publish restore status", "restore", restore.Lock(r), "err", err)
		}
	}
}

// eventPublisher publishes a status event (a drill's result) for subscribers.
func eventPublisher(js jetstream.JetStream, log *slog.Logger) func(context.Context, *etcdbackupv1.StatusEvent) {
	return func(ctx context.Context, ev *etcdbackupv1.StatusEvent) {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if err := bus.PublishStatus(pctx, js, ev); err != nil {
			log.Warn("publish drill status", "config", ev.GetConfig().GetNamespace()+"/"+ev.GetConfig().GetName(), "err", err)
		}
	}
}

func newDrillMetrics(r prometheus.Registerer) drill.Metrics {
	total := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "etcdbackup_drills_total",
		Help: "Restore drills this replica ran, by result: passed, failed (the backup is not restorable), error (the drill could not run).",
	}, []string{"result"})
	last := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "etcdbackup_drill_last_success_timestamp_seconds",
		Help: "When a config's newest backup last passed a restore drill on this replica.",
	}, []string{"namespace", "config"})
	r.MustRegister(total, last)
	return drill.Metrics{
		Finished: func(result string) { total.WithLabelValues(result).Inc() },
		Passed:   func(ns, config string, at time.Time) { last.WithLabelValues(ns, config).Set(float64(at.Unix())) },
	}
}

func newMetrics(r prometheus.Registerer) restore.Metrics {
	steps := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "etcdbackup_restore_step_duration_seconds",
		Help:    "Time a restore spent in a step: verify (the backup, before anything is touched), teardown (old StatefulSet, PVCs and pods gone), rebuild (members restored and etcd healthy).",
		Buckets: prometheus.ExponentialBuckets(0.5, 2, 14),
	}, []string{"step"})
	finished := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "etcdbackup_restores_total",
		Help: "Restores this replica finished, by result (completed or failed).",
	}, []string{"result"})
	r.MustRegister(steps, finished)
	failed := service.Failures(r)
	return restore.Metrics{
		Step:     func(step string, d time.Duration) { steps.WithLabelValues(step).Observe(d.Seconds()) },
		Finished: func(result string) { finished.WithLabelValues(result).Inc() },
		Failed:   func(reason string) { failed("restore", reason) },
	}
}

// podLogs reads the last lines of a container's log through the API server (pods/log), at
// most 8 KiB: the restore step's progress is in its last lines.
func podLogs(kc kubernetes.Interface) restore.PodLogs {
	return func(ctx context.Context, namespace, pod, container string) ([]byte, error) {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return kc.CoreV1().Pods(namespace).GetLogs(pod, &corev1.PodLogOptions{
			Container: container, TailLines: ptr.To(int64(5)), LimitBytes: ptr.To(int64(8 << 10)),
		}).DoRaw(ctx)
	}
}
