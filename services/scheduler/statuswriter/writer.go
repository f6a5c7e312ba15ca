package statuswriter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/trust"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Writer applies status events to EtcdBackupConfig status. Replicas may run side by side:
// every write is a merge patch of the status subresource guarded by resourceVersion, retried
// on conflict, and applying an event twice or out of order leaves the same status.
//
// An event is believed only as far as its stage may speak: it must arrive on its own stage's
// subject (which only that stage's NATS identity may publish on), only the uploader completes
// a backup with its object key, destination and size (the pruner confirms or corrects from
// the bucket), only the pruner reports deletions, and the key, cluster and destination must
// be the config's own.
type Writer struct {
	client client.Client
	log    *slog.Logger
	// Destinations resolves the config's destination to check the one an event names (nil:
	// not checked).
	Destinations Destinations
	// Events records a Warning on a config whose event was rejected (nil: none).
	Events events.EventRecorder
	// Applied counts events by phase that changed a status (nil: not counted).
	Applied func(phase string)
}

// Destinations resolves a Seed destination name ("" for the default).
type Destinations interface {
	Lookup(ctx context.Context, name string) (destination.Destination, error)
}

// New returns a Writer that reads and patches through c (uncached reads keep conflicts rare).
func New(c client.Client, log *slog.Logger) *Writer {
	return &Writer{client: c, log: log}
}

// Handle is the typed handler of the status-writer consumer (wrap it with bus.Typed).
func (w *Writer) Handle(ctx context.Context, ev *etcdbackupv1.StatusEvent, d bus.Delivery) error {
	if ev.GetOperation() == etcdbackupv1.Operation_OPERATION_RESTORE {
		return nil // for subscribers: the restorer writes its EtcdRestore's status itself
	}
	if err := Allowed(d.Subject, ev); err != nil {
		return err
	}
	cfg, err := trust.Config(ctx, w.client, ev.GetConfig())
	if err != nil || cfg == nil {
		return err
	}
	dest := ""
	if ev.GetDestination() != "" && w.Destinations != nil {
		resolved, err := w.Destinations.Lookup(ctx, cfg.Spec.Destination)
		if err != nil && !destination.IsConfigError(err) {
			return err
		}
		dest = resolved.Name
		if err != nil {
			dest = ev.GetDestination() // nothing to compare with: the scheduler's condition says why
		}
	} else {
		dest = ev.GetDestination()
	}
	if err := trust.Check(trust.Derive(cfg, ev.GetBackupName(), dest), ev.GetCluster(), ev.GetObjectKey(), ev.GetDestination()); err != nil {
		trust.Record(w.Events, cfg, d.Subject, err)
		return err
	}
	return w.apply(ctx, ev, cfg)
}

// Allowed checks that the stage an event names published it (the subject's stage), and that
// the stage may say what it says. Stages other than the uploader and the pruner cannot set a
// backup's object key, destination, size or digest: those fields are cleared.
func Allowed(subject string, ev *etcdbackupv1.StatusEvent) error {
	stage := bus.StatusStage(subject)
	own := strings.ToLower(strings.TrimPrefix(ev.GetStage().String(), "STAGE_"))
	if stage == "" || stage != own {
		return bus.Reject(trust.ReasonStage, fmt.Errorf("an event of stage %s arrived on %s", ev.GetStage(), subject))
	}
	deleting := ev.GetOperation() == etcdbackupv1.Operation_OPERATION_DELETE
	switch ev.GetStage() {
	case etcdbackupv1.Stage_STAGE_PRUNER:
		// Deletions, and backups it found in the bucket.
		if !deleting && ev.GetPhase() != etcdbackupv1.Phase_PHASE_COMPLETED {
			return bus.Reject(trust.ReasonStage, errors.New("the pruner reports deletions and backups found in the bucket only"))
		}
		return nil
	case etcdbackupv1.Stage_STAGE_UPLOADER:
	case etcdbackupv1.Stage_STAGE_SCHEDULER, etcdbackupv1.Stage_STAGE_SNAPSHOTTER:
		if ev.GetPhase() == etcdbackupv1.Phase_PHASE_COMPLETED {
			return bus.Reject(trust.ReasonStage, fmt.Errorf("stage %s cannot complete a backup; only the uploader stores one", ev.GetStage()))
		}
		ev.ObjectKey, ev.Destination, ev.Size, ev.Sha256, ev.Revision = "", "", 0, "", 0
	default:
		return bus.Reject(trust.ReasonStage, fmt.Errorf("stage %s does not report backups", ev.GetStage()))
	}
	if deleting {
		return bus.Reject(trust.ReasonStage, fmt.Errorf("stage %s cannot report deletions; only the pruner deletes", ev.GetStage()))
	}
	return nil
}

// apply merges ev into cfg's status, which the caller has just read and checked (one read per
// event), and reads the config afresh after a conflict. A config gone or re-created meanwhile
// (another uid) is skipped.
func (w *Writer) apply(ctx context.Context, ev *etcdbackupv1.StatusEvent, cfg *kubermaticv1.EtcdBackupConfig) error {
	key := types.NamespacedName{Namespace: ev.GetConfig().GetNamespace(), Name: ev.GetConfig().GetName()}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if cfg == nil {
			cfg = &kubermaticv1.EtcdBackupConfig{}
			if err := w.client.Get(ctx, key, cfg); err != nil {
				if apierrors.IsNotFound(err) {
					return nil
				}
				return fmt.Errorf("get etcdbackupconfig %s: %w", key, err)
			}
		}
		current := cfg
		cfg = nil // a conflict reads afresh
		if uid := ev.GetConfig().GetUid(); uid != string(current.UID) {
			return nil
		}
		updated := current.DeepCopy()
		Merge(&updated.Status, ev)
		if apiequality.Semantic.DeepEqual(current.Status, updated.Status) {
			return nil
		}
		if err := w.client.Status().Patch(ctx, updated, client.MergeFromWithOptions(current, client.MergeFromWithOptimisticLock{})); err != nil {
			return err
		}
		w.log.Debug("status applied", "config", key.String(), "backup", ev.GetBackupName(), "phase", ev.GetPhase().String(), "stage", ev.GetStage().String())
		if w.Applied != nil {
			w.Applied(phaseOf(ev.GetPhase()))
		}
		return nil
	})
}
