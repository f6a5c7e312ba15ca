package scheduling

import (
	"context"
	"log/slog"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/kube"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

// The configs of one cluster share its one place in the queue: a due backup waits while
// another backup of the cluster (another config's, or an earlier one of its own) is queued or
// running, and is queued once that one ended. A config of another cluster never waits for it,
// nor does the due backup wait for itself (listed as queued, it is queued again).
func TestOneBackupOfAClusterAtATime(t *testing.T) {
	created := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	cfgOf := func(ns, name, cluster string) *kubermaticv1.EtcdBackupConfig {
		return &kubermaticv1.EtcdBackupConfig{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name),
				CreationTimestamp: metav1.NewTime(created)},
			Spec: kubermaticv1.EtcdBackupConfigSpec{Cluster: corev1.ObjectReference{Name: cluster}, Schedule: "@hourly"},
		}
	}
	daily, hourly, other := cfgOf("cluster-c", "daily", "c"), cfgOf("cluster-c", "hourly", "c"),
		cfgOf("cluster-d", "hourly", "d")
	weekly := cfgOf("cluster-c", "weekly", "c")
	running := func(cfg *kubermaticv1.EtcdBackupConfig, backup string) {
		cfg.Status.SetBackups([]kubermaticv1.BackupStatus{{BackupName: backup, BackupPhase: kubermaticv1.PhaseRunning,
			ScheduledTime: metav1.NewTime(created)}})
	}
	scheme, err := kube.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	running(daily, "daily-2026-12-01T00:30:00")
	running(other, "hourly-2026-12-01T00:30:00")
	c := fake.NewClientBuilder().WithScheme(scheme).WithStatusSubresource(daily, hourly, other, weekly).
		WithObjects(daily, hourly, other, weekly, &kubermaticv1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: "c"}},
			&kubermaticv1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: "d"}}).
		WithIndex(&kubermaticv1.EtcdBackupConfig{}, clusterIndex, func(o client.Object) []string {
			return []string{o.(*kubermaticv1.EtcdBackupConfig).Spec.Cluster.Name}
		}).Build()
	q := &queue{}
	now := created.Add(90 * time.Minute) // the 01:00 slot is due
	m := NewMetrics(prometheus.NewRegistry())
	r := &Reconciler{Client: c, Recorder: events.NewFakeRecorder(10), Now: func() time.Time { return now },
		Log: slog.New(slog.DiscardHandler), Metrics: m,
		Planner: &Planner{Reader: c, Destinations: oneDestination{}, Queue: q, OnePerCluster: true}}
	reconcile := func(cfg *kubermaticv1.EtcdBackupConfig) ctrl.Result {
		t.Helper()
		res, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(cfg)})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	queued := func() []string {
		var names []string
		for _, req := range q.reqs {
			names = append(names, req.GetConfig().GetNamespace()+"/"+req.GetBackupName())
		}
		return names
	}

	if res := reconcile(hourly); len(q.reqs) != 0 || res.RequeueAfter != waitForCluster {
		t.Fatalf("with daily's backup running, hourly queued %v and looks again in %s; want nothing queued, again in %s",
			queued(), res.RequeueAfter, waitForCluster)
	}
	if n := testutil.ToFloat64(m.waited); n != 1 {
		t.Fatalf("slots waiting counted %v, want 1", n)
	}
	var got kubermaticv1.EtcdBackupConfig
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(hourly), &got); err != nil {
		t.Fatal(err)
	}
	if cond := got.Status.Condition(kubermaticv1.ConditionSchedulingActive); cond == nil ||
		cond.Status != corev1.ConditionTrue {
		t.Fatalf("a config waiting its turn: condition %+v, want SchedulingActive True", cond)
	}
	// d's config waits for its own earlier backup (one backup of a cluster at a time), never
	// for c's.
	if reconcile(other); len(q.reqs) != 0 {
		t.Fatalf("with its own earlier backup running, d's config queued %v", queued())
	}
	setStatus := func(cfg *kubermaticv1.EtcdBackupConfig, b kubermaticv1.BackupStatus) {
		t.Helper()
		if err := c.Get(context.Background(), client.ObjectKeyFromObject(cfg), cfg); err != nil {
			t.Fatal(err)
		}
		cfg.Status.SetBackups([]kubermaticv1.BackupStatus{b})
		if err := c.Status().Update(context.Background(), cfg); err != nil {
			t.Fatal(err)
		}
	}
	// listed as queued: itself
	setStatus(other, kubermaticv1.BackupStatus{BackupName: "hourly-2026-12-01T01:00:00",
		BackupPhase: kubermaticv1.PhaseRunning})
	if reconcile(other); len(q.reqs) != 1 || q.reqs[0].GetCluster() != "d" {
		t.Fatalf("d's config, its due backup listed as queued, queued %v; want it queued again", queued())
	}

	// daily's backup ends: hourly is woken (siblingsOf) and queued.
	setStatus(daily, kubermaticv1.BackupStatus{BackupName: "daily-2026-12-01T00:30:00",
		BackupPhase: kubermaticv1.PhaseCompleted})
	if woken := siblingsOf(context.Background(), c, daily); len(woken) != 2 {
		t.Fatalf("woken when daily's backup ended: %v, want hourly and weekly", woken)
	}
	reconcile(hourly)
	if names := queued(); len(names) != 2 || names[1] != "cluster-c/hourly-2026-12-01T01:00:00" {
		t.Fatalf("queued %v, want hourly's 01:00 backup once daily's ended", names)
	}
	// Woken with it, weekly finds no backup of c in status yet (the status writer lags the
	// queue): the place is hourly's all the same.
	if res := reconcile(weekly); len(q.reqs) != 2 || res.RequeueAfter != waitForCluster {
		t.Fatalf("weekly, woken with hourly, queued %v; want it to wait for hourly's backup", queued())
	}
	setStatus(hourly, kubermaticv1.BackupStatus{BackupName: "hourly-2026-12-01T01:00:00",
		BackupPhase: kubermaticv1.PhaseRunning})
	if reconcile(weekly); len(q.reqs) != 2 {
		t.Fatalf("with hourly's backup running, weekly queued %v", queued())
	}
	setStatus(hourly, kubermaticv1.BackupStatus{BackupName: "hourly-2026-12-01T01:00:00",
		BackupPhase: kubermaticv1.PhaseCompleted})
	if reconcile(weekly); len(q.reqs) != 3 || q.reqs[2].GetConfig().GetName() != "weekly" {
		t.Fatalf("once hourly's backup ended, queued %v; want weekly's", queued())
	}
}
