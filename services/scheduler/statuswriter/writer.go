package statuswriter

import (
	"context"
	"fmt"
	"log/slog"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/nats-io/nats.go/jetstream"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Writer applies status events to EtcdBackupConfig status. Replicas may run side by side:
// every write is a merge patch of the status subresource guarded by resourceVersion, retried
// on conflict, and applying an event twice or out of order leaves the same status.
type Writer struct {
	client client.Client
	log    *slog.Logger
	// Applied counts events by phase that changed a status (nil: not counted).
	Applied func(phase string)
}

// New returns a Writer that reads and patches through c (uncached reads keep conflicts rare).
func New(c client.Client, log *slog.Logger) *Writer {
	return &Writer{client: c, log: log}
}

// Handle is the bus.Handler of the status-writer consumer.
func (w *Writer) Handle(ctx context.Context, msg jetstream.Msg) error {
	var ev etcdbackupv1.StatusEvent
	if err := bus.Decode(msg.Data(), msg.Headers().Get(bus.HeaderContentType), &ev); err != nil {
		return bus.Permanent(err)
	}
	return w.Apply(ctx, &ev)
}

// Apply merges one event into its config's status; restore events are not a config's. A config that no longer exists, or was
// re-created (other uid), is skipped.
func (w *Writer) Apply(ctx context.Context, ev *etcdbackupv1.StatusEvent) error {
	if ev.GetOperation() == etcdbackupv1.Operation_OPERATION_RESTORE {
		return nil // for subscribers: the restorer writes its EtcdRestore's status itself
	}
	key := types.NamespacedName{Namespace: ev.GetConfig().GetNamespace(), Name: ev.GetConfig().GetName()}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var cfg kubermaticv1.EtcdBackupConfig
		if err := w.client.Get(ctx, key, &cfg); err != nil {
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("get etcdbackupconfig %s: %w", key, err)
		}
		if uid := ev.GetConfig().GetUid(); uid != "" && uid != string(cfg.UID) {
			return nil
		}
		updated := cfg.DeepCopy()
		Merge(&updated.Status, ev)
		if apiequality.Semantic.DeepEqual(cfg.Status, updated.Status) {
			return nil
		}
		if err := w.client.Status().Patch(ctx, updated, client.MergeFromWithOptions(&cfg, client.MergeFromWithOptimisticLock{})); err != nil {
			return err
		}
		w.log.Debug("status applied", "config", key.String(), "backup", ev.GetBackupName(), "phase", ev.GetPhase().String(), "stage", ev.GetStage().String())
		if w.Applied != nil {
			w.Applied(phaseOf(ev.GetPhase()))
		}
		return nil
	})
}
