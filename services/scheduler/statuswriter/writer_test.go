package statuswriter

import (
	"context"
	"log/slog"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/kube"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

// A status event costs one read of its config: the one it is checked against is the one it
// is merged into.
func TestHandleReadsTheConfigOnce(t *testing.T) {
	scheme, err := kube.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	cfg := &kubermaticv1.EtcdBackupConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-c", Name: "daily", UID: "u-1"},
		Spec:       kubermaticv1.EtcdBackupConfigSpec{Cluster: corev1.ObjectReference{Name: "c"}},
	}
	gets := 0
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(cfg).WithStatusSubresource(cfg).
		WithInterceptorFuncs(interceptor.Funcs{Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			gets++
			return c.Get(ctx, key, obj, opts...)
		}}).Build()
	w := New(c, slog.New(slog.DiscardHandler))
	at := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	backup := backupname.Backup("daily", at)
	ev := &etcdbackupv1.StatusEvent{
		Config: &etcdbackupv1.ConfigRef{Namespace: "cluster-c", Name: "daily", Uid: "u-1"}, Cluster: "c",
		BackupName: backup, ScheduledTime: timestamppb.New(at), Stage: etcdbackupv1.Stage_STAGE_SNAPSHOTTER,
		Phase: etcdbackupv1.Phase_PHASE_RUNNING, Message: "taking snapshot", Time: timestamppb.Now(),
	}
	if err := w.Handle(context.Background(), ev, bus.Delivery{Subject: "etcdbackup.status.snapshotter", Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	var got kubermaticv1.EtcdBackupConfig
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(cfg), &got); err != nil {
		t.Fatal(err)
	}
	if b := got.Status.Backups(); len(b) != 1 || b[0].BackupName != backup {
		t.Fatalf("status %+v, want the backup listed", got.Status)
	}
	if gets != 2 { // the Handle's read, and this test's own
		t.Fatalf("%d reads of the config for one event, want 1", gets-1)
	}
}
