package scheduling

import (
	"context"
	"strings"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// A backup Running for longer than --running-timeout (no stage reported its end: an event
// lost, a request dropped) is reported Failed, saying why; one within the bound is left, and
// the config is looked at again when it would be stale.
func TestRunningBackupsEnd(t *testing.T) {
	created := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	keep := 5
	cfg := &kubermaticv1.EtcdBackupConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-c", Name: "daily", UID: "u-1",
			CreationTimestamp: metav1.NewTime(created)},
		Spec: kubermaticv1.EtcdBackupConfigSpec{Cluster: corev1.ObjectReference{Name: "c"}, Schedule: "@daily",
			Keep: &keep},
	}
	r, _, _ := refusalReconciler(t, cfg) // now: created + 1h
	now := r.Now()
	ago := func(h int) metav1.Time { return metav1.NewTime(now.Add(-time.Duration(h) * time.Hour)) }
	cfg.Status.SetBackups([]kubermaticv1.BackupStatus{
		{BackupName: "stale", BackupPhase: kubermaticv1.PhaseRunning, BackupStartTime: ago(4)},
		{BackupName: "never-started", BackupPhase: kubermaticv1.PhaseRunning, ScheduledTime: ago(5)},
		{BackupName: "fresh", BackupPhase: kubermaticv1.PhaseRunning, BackupStartTime: ago(1)},
		{BackupName: "done", BackupPhase: kubermaticv1.PhaseCompleted, BackupStartTime: ago(9)},
	})
	if err := r.Client.Status().Update(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	var reported []*etcdbackupv1.StatusEvent
	r.RunningTimeout = 3 * time.Hour
	r.Report = func(_ context.Context, ev *etcdbackupv1.StatusEvent) error {
		reported = append(reported, ev)
		return nil
	}
	res, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(cfg)})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, ev := range reported {
		if ev.GetPhase() != etcdbackupv1.Phase_PHASE_FAILED || ev.GetStage() != etcdbackupv1.Stage_STAGE_SCHEDULER ||
			!strings.Contains(ev.GetMessage(), "--running-timeout") {
			t.Fatalf("reported %v, want Failed by the scheduler saying why", ev)
		}
		names = append(names, ev.GetBackupName())
	}
	if strings.Join(names, ",") != "stale,never-started" {
		t.Fatalf("reported Failed: %v, want stale and never-started", names)
	}
	if res.RequeueAfter <= 0 || res.RequeueAfter > 2*time.Hour {
		t.Fatalf("requeue after %s, want when fresh turns stale (2h)", res.RequeueAfter)
	}
}
