package statuswriter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/trust"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/prometheus/client_golang/prometheus"
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
	// applied counts events by phase that changed a status.
	applied *prometheus.CounterVec
	// Cache, when set, serves each batch's first read of a config (the informer cache); the
	// API is read after a conflict. Without it every first read goes to the API.
	Cache client.Reader
	// Parallel is how many configs' writes of one batch run at once (at least 1).
	Parallel int
}

// Destinations resolves a Seed destination name ("" for the default) and opens its bucket.
type Destinations interface {
	Lookup(ctx context.Context, name string) (destination.Destination, error)
	Bucket(ctx context.Context, d destination.Destination) (destination.Bucket, error)
}

// UnlistedAttempts is how many deliveries an event of a backup its config's status does not
// list waits (redelivered with the consumer's backoff, a few seconds) for the scheduler's
// event that lists it, before it is rejected: the scheduler queues the request before it
// reports it, and replicas apply batches side by side.
const UnlistedAttempts = 8

// UnlistedDelay is how soon such an event comes again: the scheduler's event is usually being
// applied by another replica at that moment, and the status must not lag the events (a page
// that loaded the status between them shows it).
const UnlistedDelay = 150 * time.Millisecond

// New returns a Writer that reads and patches through c, one config at a time, whose metrics
// are registered on reg.
func New(c client.Client, log *slog.Logger, reg prometheus.Registerer) *Writer {
	applied := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "etcdbackup_status_events_applied_total",
		Help: "Status events that changed an EtcdBackupConfig's status, by backup phase.",
	}, []string{"phase"})
	reg.MustRegister(applied)
	return &Writer{client: c, log: log, applied: applied}
}

// HandleBatch is the batch handler of the status-writer consumer (wrap it with
// bus.TypedBatch). Events are grouped by config: each group costs one read of its config and
// at most one patch, whatever its size — a backup's events from queued to stored, and its
// deletions, become one write when they wait together. Groups are written Parallel at a time.
func (w *Writer) HandleBatch(ctx context.Context, items []bus.Item[*etcdbackupv1.StatusEvent]) []error {
	errs := make([]error, len(items))
	groups := map[types.NamespacedName][]int{}
	var order []types.NamespacedName
	for i, it := range items {
		ev := it.Msg
		if op := ev.GetOperation(); op == etcdbackupv1.Operation_OPERATION_RESTORE ||
			op == etcdbackupv1.Operation_OPERATION_DRILL {
			continue // for subscribers: the restorer writes its EtcdRestore's status, and a drill's condition, itself
		}
		if err := Allowed(it.Delivery.Subject, ev); err != nil {
			errs[i] = err
			continue
		}
		key := types.NamespacedName{Namespace: ev.GetConfig().GetNamespace(), Name: ev.GetConfig().GetName()}
		if _, ok := groups[key]; !ok {
			order = append(order, key)
		}
		groups[key] = append(groups[key], i)
	}
	sem := make(chan struct{}, max(w.Parallel, 1))
	var wg sync.WaitGroup
	for _, key := range order {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			w.applyGroup(ctx, key, items, groups[key], errs)
		})
	}
	wg.Wait()
	return errs
}

// applyGroup checks the events items[idx] of one config against it and merges those that
// pass into its status with one patch, setting errs[i] for each.
func (w *Writer) applyGroup(ctx context.Context, key types.NamespacedName,
	items []bus.Item[*etcdbackupv1.StatusEvent], idx []int, errs []error) {
	fail := func(err error) {
		for _, i := range idx {
			errs[i] = err
		}
	}
	cfg, err := w.read(ctx, key, w.reader())
	if err != nil {
		fail(err)
		return
	}
	v, err := w.check(ctx, cfg, items, idx)
	if w.Cache != nil && err == nil && (cfg == nil || len(v.accepted) < len(idx)) {
		// The cache may lag behind the API (a config just created again, a destination just
		// changed, a backup just listed): nothing is skipped, deferred or rejected on its word
		// alone.
		if cfg, err = w.read(ctx, key, w.client); err == nil {
			v, err = w.check(ctx, cfg, items, idx)
		}
	}
	if err != nil {
		fail(err)
		return
	}
	for i, rerr := range v.rejected {
		trust.Record(w.Events, cfg, items[i].Delivery.Subject, rerr)
		errs[i] = rerr
	}
	for i, derr := range v.deferred {
		errs[i] = derr
	}
	accepted := v.accepted
	if len(accepted) == 0 {
		return
	}
	err = w.apply(ctx, key, accepted, cfg)
	for _, i := range idx {
		if errs[i] == nil {
			errs[i] = err
		}
	}
}

// verdict is what check decided of a group's events: those accepted, and by index those
// rejected (terminated, counted, an Event) and those deferred (delivered again later).
type verdict struct {
	accepted []*etcdbackupv1.StatusEvent
	rejected map[int]error
	deferred map[int]error
}

// check sorts the events items[idx] against cfg (nil: gone): accepted, rejected or deferred;
// an event of another config of that name (deleted and created again) is none of them. An
// error is a lookup that may succeed later.
func (w *Writer) check(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig,
	items []bus.Item[*etcdbackupv1.StatusEvent], idx []int) (verdict, error) {
	v := verdict{rejected: map[int]error{}, deferred: map[int]error{}}
	if cfg == nil {
		return v, nil
	}
	dest := &groupDestination{w: w, cfg: cfg}
	listed := listedBackups(cfg, items, idx)
	for _, i := range idx {
		ev := items[i].Msg
		if ev.GetConfig().GetUid() != string(cfg.UID) {
			continue
		}
		claimed := ev.GetDestination()
		want, err := dest.name(ctx, claimed)
		if err != nil {
			return v, err
		}
		if err := trust.Check(trust.Derive(cfg, ev.GetBackupName(), want), ev.GetCluster(), ev.GetObjectKey(),
			claimed); err != nil {
			v.rejected[i] = err
			continue
		}
		if !listed[ev.GetBackupName()] {
			if items[i].Delivery.Attempt < UnlistedAttempts {
				v.deferred[i] = bus.RetrySoon(UnlistedDelay, fmt.Errorf("backup %s is not listed in the status of %s/%s yet: "+
					"waiting for the scheduler's event", ev.GetBackupName(), cfg.Namespace, cfg.Name))
				continue
			}
			v.rejected[i] = bus.Reject(trust.ReasonUnlisted, fmt.Errorf("the %s reported backup %s, which the scheduler "+
				"never queued for %s/%s", stageName(ev), ev.GetBackupName(), cfg.Namespace, cfg.Name))
			continue
		}
		if err := dest.confirm(ctx, ev); err != nil {
			if !bus.IsPermanent(err) {
				return v, err
			}
			v.rejected[i] = err
			continue
		}
		v.accepted = append(v.accepted, ev)
	}
	return v, nil
}

// listedBackups returns the backups of cfg's status, and those the events items[idx] may list:
// the scheduler's (it queued them) and the pruner's (it found them in the bucket, or deletes
// them). Other stages report only backups listed here.
func listedBackups(cfg *kubermaticv1.EtcdBackupConfig, items []bus.Item[*etcdbackupv1.StatusEvent],
	idx []int) map[string]bool {
	listed := map[string]bool{}
	for _, b := range cfg.Status.Backups() {
		listed[b.BackupName] = true
	}
	for _, i := range idx {
		ev := items[i].Msg
		if ev.GetConfig().GetUid() == string(cfg.UID) && (ev.GetStage() == etcdbackupv1.Stage_STAGE_SCHEDULER ||
			ev.GetStage() == etcdbackupv1.Stage_STAGE_PRUNER) {
			listed[ev.GetBackupName()] = true
		}
	}
	return listed
}

func stageName(ev *etcdbackupv1.StatusEvent) string {
	return strings.ToLower(strings.TrimPrefix(ev.GetStage().String(), "STAGE_"))
}

// groupDestination is the config's destination, resolved once for a group of events.
type groupDestination struct {
	w        *Writer
	cfg      *kubermaticv1.EtcdBackupConfig
	lookedUp bool
	dest     *destination.Destination // nil: not resolved (a configuration error, or no Destinations)
}

// name returns the destination an event claiming claimed must name: the config's, when it
// resolves, else claimed itself (a configuration error leaves nothing to compare with: the
// scheduler's condition says why).
func (g *groupDestination) name(ctx context.Context, claimed string) (string, error) {
	if claimed == "" || g.w.Destinations == nil {
		return claimed, nil
	}
	if err := g.resolve(ctx); err != nil {
		return "", err
	}
	if g.dest == nil {
		return claimed, nil
	}
	return g.dest.Name, nil
}

func (g *groupDestination) resolve(ctx context.Context) error {
	if g.lookedUp {
		return nil
	}
	d, err := g.w.Destinations.Lookup(ctx, g.cfg.Spec.Destination)
	if err != nil && !destination.IsConfigError(err) {
		return err
	}
	g.lookedUp = true
	if err == nil {
		g.dest = &d
	}
	return nil
}

// confirm checks an uploader's completion against the bucket: the object is at the event's
// key (already checked to be the derived one) with the reported sha256; the event's object
// becomes the bucket's record of it (trust.Recorded). One HEAD per
// completion; a completion the bucket does not confirm is rejected (unconfirmed), so a forged
// one never lists a backup that would be offered for a restore.
func (g *groupDestination) confirm(ctx context.Context, ev *etcdbackupv1.StatusEvent) error {
	ev.Object = nil // only a confirmed completion's, read from the bucket, reaches status
	if ev.GetStage() != etcdbackupv1.Stage_STAGE_UPLOADER || ev.GetPhase() != etcdbackupv1.Phase_PHASE_COMPLETED ||
		g.w.Destinations == nil {
		return nil
	}
	if err := g.resolve(ctx); err != nil {
		return err
	}
	unconfirmed := func(why string) error {
		return bus.Reject(trust.ReasonUnconfirmed, fmt.Errorf("completion of backup %s not confirmed by the bucket: %s",
			ev.GetBackupName(), why))
	}
	if g.dest == nil {
		return unconfirmed("the config's destination does not resolve")
	}
	b, err := g.w.Destinations.Bucket(ctx, *g.dest)
	if err != nil {
		return err
	}
	info, err := b.Stat(ctx, ev.GetObjectKey())
	switch {
	case errors.Is(err, destination.ErrObjectNotFound):
		return unconfirmed(fmt.Sprintf("no object at %s", ev.GetObjectKey()))
	case destination.IsConfigError(err):
		return unconfirmed(err.Error())
	case err != nil:
		return fmt.Errorf("confirm backup %s: %w", ev.GetBackupName(), err)
	}
	meta, err := backupformat.ParseMeta(info.Metadata)
	if err != nil || meta.SHA256 != ev.GetSha256() || uint64(info.Size) != ev.GetSize() {
		return unconfirmed(fmt.Sprintf("the object at %s is not the one reported (sha256 %s, %d bytes)",
			ev.GetObjectKey(), ev.GetSha256(), ev.GetSize()))
	}
	// Status shows the object as the bucket records it, whatever the event said of it.
	ev.Object = trust.Recorded(meta, info)
	return nil
}

// reader is where a group's first read goes: the cache when there is one (a stale copy costs
// a conflict and a read from the API), else the API.
func (w *Writer) reader() client.Reader {
	if w.Cache != nil {
		return w.Cache
	}
	return w.client
}

// read returns the config at key, or nil when it is gone.
func (w *Writer) read(ctx context.Context, key types.NamespacedName,
	r client.Reader) (*kubermaticv1.EtcdBackupConfig, error) {
	cfg := &kubermaticv1.EtcdBackupConfig{}
	if err := r.Get(ctx, key, cfg); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("get etcdbackupconfig %s: %w", key, err)
	}
	return cfg, nil
}

// Allowed checks that the stage an event names published it (the subject's stage), and that
// the stage may say what it says. Stages other than the uploader and the pruner cannot set a
// backup's object key, destination, size or digest: those fields are cleared.
func Allowed(subject string, ev *etcdbackupv1.StatusEvent) error {
	if err := bus.StatusFromItsStage(subject, ev); err != nil {
		return bus.Reject(trust.ReasonStage, err)
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
		ev.ObjectKey, ev.Destination, ev.Size, ev.Sha256, ev.Revision = "", "", 0, "", 0
	default:
		return bus.Reject(trust.ReasonStage, fmt.Errorf("stage %s does not report backups", ev.GetStage()))
	}
	if deleting {
		return bus.Reject(trust.ReasonStage, fmt.Errorf("stage %s cannot report deletions; only the pruner deletes",
			ev.GetStage()))
	}
	return nil
}

// apply merges evs, events of one config already checked against cfg, into cfg's status
// with one patch guarded by resourceVersion. After a conflict it reads the config afresh from
// the API; a config gone or created again meanwhile (another uid) is skipped.
func (w *Writer) apply(ctx context.Context, key types.NamespacedName, evs []*etcdbackupv1.StatusEvent,
	cfg *kubermaticv1.EtcdBackupConfig) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if cfg == nil {
			fresh, err := w.read(ctx, key, w.client)
			if err != nil || fresh == nil {
				return err
			}
			cfg = fresh
		}
		current := cfg
		cfg = nil // a conflict reads afresh
		updated := current.DeepCopy()
		var changed []string
		for _, ev := range evs {
			if ev.GetConfig().GetUid() != string(current.UID) {
				continue
			}
			before := updated.Status.DeepCopy()
			Merge(&updated.Status, ev)
			if !apiequality.Semantic.DeepEqual(*before, updated.Status) {
				changed = append(changed, phaseOf(ev.GetPhase()))
			}
		}
		if size := Fit(&updated.Status); size > StatusBudget {
			w.log.Warn("status over its budget with every old entry trimmed: etcd may refuse it", "config",
				key.String(), "bytes", size, "budget", StatusBudget)
		}
		if apiequality.Semantic.DeepEqual(current.Status, updated.Status) {
			return nil
		}
		if err := w.client.Status().Patch(ctx, updated, client.MergeFromWithOptions(current,
			client.MergeFromWithOptimisticLock{})); err != nil {
			return err
		}
		w.log.Debug("status applied", "config", key.String(), "events", len(evs))
		for _, phase := range changed {
			w.applied.WithLabelValues(phase).Inc()
		}
		return nil
	})
}
