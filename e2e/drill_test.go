package e2e

import (
	"strings"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/e2e/sandbox"
	"github.com/etcd-backup/etcdbackup/services/restorer/drill"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// A config annotated with a drill schedule gets its newest backup restored in a drill by the
// restorer: BackupRestorable=True naming the backup and its key count, the backup marked as
// the last restorable one, an Event, and the drill metrics.
func TestRestoreDrill(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	dumpLogsOnFailure(t)
	const cluster = "drilled"
	mustAddCluster(t, ctx, cluster, env.DemoEtcd.Endpoint)
	cfg := newConfig(t, ctx, cluster, "drilled", "", sandbox.SealedDestination, 5)
	patch := []byte(`{"metadata":{"annotations":{"` + kubermaticv1.AnnotationDrillSchedule + `":"@every 1h"}}}`)
	if err := env.Client.Patch(ctx, cfg, client.RawPatch(types.MergePatchType, patch)); err != nil {
		t.Fatal(err)
	}
	done := waitConfig(t, ctx, cfg.Namespace, cfg.Name, 2*time.Minute, "a drill of the backup",
		func(c *kubermaticv1.EtcdBackupConfig) bool {
			cond := c.Status.Condition(kubermaticv1.ConditionBackupRestorable)
			return cond != nil && cond.Reason != ""
		})
	b := entries(done, kubermaticv1.PhaseCompleted)[0]
	cond := done.Status.Condition(kubermaticv1.ConditionBackupRestorable)
	if cond.Status != corev1.ConditionTrue || cond.Reason != drill.ReasonPassed || !strings.Contains(cond.Message,
		b.BackupName) || !strings.Contains(cond.Message, " keys at revision ") {
		t.Fatalf("BackupRestorable %+v, want True, %s, naming %s and its keys", cond, drill.ReasonPassed, b.BackupName)
	}
	if got := done.Annotations[kubermaticv1.AnnotationLastRestorable]; got != b.BackupName {
		waitConfig(t, ctx, cfg.Namespace, cfg.Name, 10*time.Second, "the restorable mark",
			func(c *kubermaticv1.EtcdBackupConfig) bool {
				return c.Annotations[kubermaticv1.AnnotationLastRestorable] == b.BackupName
			})
	}
	waitEvent(t, ctx, cfg.Namespace, cfg.Name, corev1.EventTypeNormal, drill.ReasonPassed)
	passed := 0.0
	for _, r := range env.ServicesOf("restorer") {
		v, err := r.Metric(ctx, "etcdbackup_drills_total", map[string]string{"result": "passed"})
		if err != nil {
			t.Fatal(err)
		}
		passed += v
	}
	if passed < 1 {
		t.Fatalf("etcdbackup_drills_total{result=passed} = %v over the restorers, want at least 1", passed)
	}
}
