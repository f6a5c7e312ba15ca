package follow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/endpoints"
	"github.com/etcd-backup/etcdbackup/pkg/journal"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ktypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Destinations resolves a config's destination, its bucket and what it encrypts to.
type Destinations interface {
	Lookup(ctx context.Context, name string) (destination.Destination, error)
	Bucket(ctx context.Context, d destination.Destination) (destination.Bucket, error)
	Encryption(ctx context.Context, d destination.Destination) (backupformat.Encryption, error)
}

// Source makes a config's journal from what the Kubernetes API says of it: its cluster's etcd
// (in the cluster's own namespace only), its destination, and the condition that shows its
// restorable window.
type Source struct {
	// Client reads Clusters and Secrets when a journal starts, and patches the config's
	// condition; Cache (the manager's) reads what every journal reads again and again: its
	// Cluster every segment interval, and its config every status interval before the patch
	// (a thousand configs would otherwise be a thousand reads a minute of kube-apiserver).
	Client       client.Client
	Cache        client.Reader
	Destinations Destinations
	JS           jetstream.JetStream
	NC           *nats.Conn
	Events       events.EventRecorder
	// Template holds the intervals and sizes every config's journal shares.
	Template       Options
	MemberTimeout  time.Duration
	StatusInterval time.Duration
	// Starting bounds the journals that start at once (nil: no bound): a channel whose
	// capacity is the bound (NewStarting). A start reads the Cluster, the destination, etcd's
	// status, the bucket and what waits on the bus; a replica that takes over hundreds of
	// configs at once (its peer died, or its own session was lost) would otherwise make all of
	// those requests together, and a NATS server or API server already busy would time them
	// out, each failed start retried, and the replica would not catch up.
	Starting chan struct{}
	Log      *slog.Logger
	Metrics  *Metrics
}

// MaxStarting is how many journals a replica starts at once.
const MaxStarting = 16

// NewStarting returns a Source.Starting that lets n journals start at once.
func NewStarting(n int) chan struct{} { return make(chan struct{}, n) }

// startSlot waits for a place among the journals starting; the returned func gives it back
// (once, however often it is called). It returns nil when ctx ends first.
func (s *Source) startSlot(ctx context.Context) func() {
	if s.Starting == nil {
		return func() {}
	}
	select {
	case s.Starting <- struct{}{}:
	case <-ctx.Done():
		return nil
	}
	var once sync.Once
	return func() { once.Do(func() { <-s.Starting }) }
}

// Follow journals cfg while ctx lasts (claim.Follower), and keeps its ContinuousBackup
// condition up to date.
func (s *Source) Follow(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig) error {
	started := s.startSlot(ctx)
	if started == nil {
		return ctx.Err()
	}
	defer started()
	o, closeEtcd, err := s.options(ctx, cfg, started)
	if err != nil {
		s.condition(ctx, cfg, corev1.ConditionFalse, kubermaticv1.ReasonNotRestorable, "journal: "+err.Error())
		return err
	}
	defer closeEtcd()
	defer s.Metrics.Forget(cfg.Namespace, string(cfg.UID))
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go s.report(fctx, cfg, o.Catalog)
	err = Follow(fctx, o)
	// What retrying does not mend is the operator's to see on the config.
	if (errors.Is(err, ErrRevisionTooLarge) || errors.Is(err, ErrWentBack)) && s.Events != nil {
		s.Events.Eventf(cfg, nil, corev1.EventTypeWarning, "JournalStopped", "Journal", "%v", err)
	}
	return err
}

func (s *Source) options(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig, started func()) (Options, func(),
	error) {
	var cluster kubermaticv1.Cluster
	if err := s.Client.Get(ctx, ktypes.NamespacedName{Name: cfg.Spec.Cluster.Name}, &cluster); err != nil {
		return Options{}, nil, fmt.Errorf("cluster %q: %w", cfg.Spec.Cluster.Name, err)
	}
	// etcd's endpoints and certificates come from the cluster's own namespace: a config in
	// another namespace gets nothing of it.
	if ns := cluster.NamespaceName(); ns != cfg.Namespace {
		return Options{}, nil, fmt.Errorf("%s: the config is in namespace %q, cluster %q lives in %q",
			kubermaticv1.ReasonClusterNamespaceMismatch, cfg.Namespace, cluster.Name, ns)
	}
	// A restore rebuilds etcd from another revision: the journal waits for it to end.
	if holder := cluster.Annotations[kubermaticv1.AnnotationActiveRestore]; holder != "" {
		return Options{}, nil, fmt.Errorf("%s: cluster %s is being restored by EtcdRestore %s",
			kubermaticv1.ReasonClusterRestoring, cluster.Name, holder)
	}
	timeline, err := journal.ParseTimeline(cluster.Annotations[kubermaticv1.AnnotationEtcdTimeline])
	if err != nil {
		return Options{}, nil, fmt.Errorf("cluster %s: annotation %s: %w", cluster.Name,
			kubermaticv1.AnnotationEtcdTimeline, err)
	}
	dest, err := s.Destinations.Lookup(ctx, cfg.Spec.Destination)
	if err != nil {
		return Options{}, nil, err
	}
	bucket, err := s.Destinations.Bucket(ctx, dest)
	if err != nil {
		return Options{}, nil, err
	}
	seal, err := s.Destinations.Encryption(ctx, dest)
	if err != nil {
		return Options{}, nil, err
	}
	target, err := endpoints.Resolve(ctx, s.Client, &cluster, cluster.NamespaceName())
	if err != nil {
		return Options{}, nil, err
	}
	// The watch and the hashes come from one member.
	// A fixed flow-control window: gRPC's dynamic one pings etcd after the watch's responses
	// to size itself, a write and a read on each of a thousand connections that carry a few
	// small responses a second.
	m, err := endpoints.Healthy(ctx, target, s.MemberTimeout, grpc.WithInitialWindowSize(1<<20),
		grpc.WithInitialConnWindowSize(1<<20))
	if err != nil {
		return Options{}, nil, err
	}
	cli, member := m.Client, m.Endpoint
	o := s.Template
	o.JS, o.Bucket, o.Seal, o.Etcd, o.Member = s.JS, bucket, seal, cli, member
	o.Prefix = backupname.Prefix(cluster.Name, cfg.Namespace, cfg.Name)
	o.Namespace, o.ConfigUID, o.Timeline = cfg.Namespace, string(cfg.UID), timeline
	o.Log, o.Metrics = s.Log, s.Metrics
	o.FullBackup = func(ctx context.Context, reason string) error { return s.fullBackup(ctx, cfg, reason) }
	o.Check = func(ctx context.Context) error { return s.check(ctx, cluster.Name, timeline) }
	o.Started = started
	o.Catalog = NewCatalog(bucket, o.Prefix)
	return o, func() { _ = cli.Close() }, nil
}

// fullBackup asks the scheduler for a backup of cfg now, through the manual trigger.
func (s *Source) fullBackup(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig, reason string) error {
	data, ct, err := bus.Encode(&etcdbackupv1.TriggerBackupRequest{Namespace: cfg.Namespace, Config: cfg.Name}, false)
	if err != nil {
		return err
	}
	req := nats.NewMsg(bus.SubjectTriggerBackup)
	req.Data = data
	req.Header.Set(bus.HeaderContentType, ct)
	msg, err := s.NC.RequestMsgWithContext(ctx, req)
	if err != nil {
		return fmt.Errorf("trigger a full backup: %w", err)
	}
	reply := &etcdbackupv1.TriggerBackupReply{}
	if err := bus.Decode(msg.Data, msg.Header.Get(bus.HeaderContentType), reply); err != nil {
		return err
	}
	if reply.GetError() != "" {
		return fmt.Errorf("trigger a full backup: %s", reply.GetError())
	}
	s.Log.Info("full backup asked for", "config", cfg.Namespace+"/"+cfg.Name, "backup", reply.GetBackupName(),
		"reason", reason)
	if s.Events != nil {
		s.Events.Eventf(cfg, nil, corev1.EventTypeNormal, "FullBackupRequested", "Journal", "%s: backup %s", reason,
			reply.GetBackupName())
	}
	return nil
}

// report writes the config's ContinuousBackup condition every StatusInterval, from cat, the
// journal's own catalog: a pass lists nothing the journal has told it or has just listed.
func (s *Source) report(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig, cat *journal.Catalog) {
	t := time.NewTicker(s.StatusInterval)
	defer t.Stop()
	for {
		s.reportOnce(ctx, cfg, cat)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// reportOnce is one pass of report. The cached config is read once: a backup its status lists
// as stored, which the catalog has not listed, has the catalog list the backups at once (a full
// backup that anchors the windows shows in this pass), and it is the condition's patch base.
func (s *Source) reportOnce(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig, cat *journal.Catalog) {
	cur, ok := s.cached(ctx, cfg)
	if !ok {
		return
	}
	cat.Stored(storedKeys(cur)...)
	ws, err := cat.Windows(ctx)
	switch {
	case err != nil:
		s.Log.Warn("list the journal's windows", "config", cfg.Namespace+"/"+cfg.Name, "err", err)
	case len(ws) == 0:
		s.setCondition(ctx, cur, corev1.ConditionFalse, kubermaticv1.ReasonNotRestorable, journal.Describe(ws))
	default:
		s.setCondition(ctx, cur, corev1.ConditionTrue, kubermaticv1.ReasonRestorable, journal.Describe(ws))
	}
}

// cached is cfg as the cache holds it (false: gone, or another object of its name).
func (s *Source) cached(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig) (*kubermaticv1.EtcdBackupConfig,
	bool) {
	var cur kubermaticv1.EtcdBackupConfig
	if err := s.Cache.Get(ctx, client.ObjectKeyFromObject(cfg), &cur); err != nil || cur.UID != cfg.UID {
		return nil, false
	}
	return &cur, true
}

// storedKeys are the keys of cfg's backups that its status lists as Completed and not deleted.
func storedKeys(cfg *kubermaticv1.EtcdBackupConfig) []string {
	var keys []string
	for _, b := range cfg.Status.Backups() {
		if b.BackupPhase == kubermaticv1.PhaseCompleted && b.DeletePhase == "" && b.ObjectKey != "" {
			keys = append(keys, b.ObjectKey)
		}
	}
	return keys
}

// condition sets the ContinuousBackup condition (a merge patch of it alone).
func (s *Source) condition(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig, status corev1.ConditionStatus,
	reason, msg string) {
	if cur, ok := s.cached(ctx, cfg); ok {
		s.setCondition(ctx, cur, status, reason, msg)
	}
}

// setCondition sets the ContinuousBackup condition on cur, the cached config: the merge patch
// holds this one condition alone (conditions is a map), so a cache a moment behind changes
// nothing else.
func (s *Source) setCondition(ctx context.Context, cur *kubermaticv1.EtcdBackupConfig, status corev1.ConditionStatus,
	reason, msg string) {
	patched := cur.DeepCopy()
	if !patched.Status.SetCondition(kubermaticv1.ConditionContinuousBackup, status, reason, msg, metav1.Now()) {
		return
	}
	if err := s.Client.Status().Patch(ctx, patched, client.MergeFrom(cur)); err != nil && ctx.Err() == nil {
		s.Log.Warn("set condition", "condition", kubermaticv1.ConditionContinuousBackup,
			"config", cur.Namespace+"/"+cur.Name, "err", err)
	}
}

// check says why a journal of cluster on timeline must stop: the cluster is being restored, or
// a restore started another timeline.
func (s *Source) check(ctx context.Context, name string, timeline journal.Timeline) error {
	var c kubermaticv1.Cluster
	if err := s.Cache.Get(ctx, ktypes.NamespacedName{Name: name}, &c); err != nil {
		return fmt.Errorf("cluster %q: %w", name, err)
	}
	if holder := c.Annotations[kubermaticv1.AnnotationActiveRestore]; holder != "" {
		return fmt.Errorf("%s: cluster %s is being restored by EtcdRestore %s", kubermaticv1.ReasonClusterRestoring, name,
			holder)
	}
	now, err := journal.ParseTimeline(c.Annotations[kubermaticv1.AnnotationEtcdTimeline])
	if err != nil {
		return fmt.Errorf("cluster %s: %w", name, err)
	}
	if now.Name != timeline.Name {
		return fmt.Errorf("cluster %s is on timeline %s now: the journal of %s ends", name, now.Name, timeline.Name)
	}
	return nil
}
