// Package take takes an etcd snapshot for a backup request, verifies and compresses it while it
// streams, and stages the compressed backup in the JetStream object store for the uploader. etcd's read transaction
// stays
// open only while the snapshot streams into the local NATS server, never while S3 is slow.
package take

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/endpoints"
	"github.com/etcd-backup/etcdbackup/pkg/kube"
	"github.com/etcd-backup/etcdbackup/pkg/progress"
	"github.com/etcd-backup/etcdbackup/pkg/snapshot"
	"github.com/etcd-backup/etcdbackup/pkg/staging"
	"github.com/etcd-backup/etcdbackup/pkg/trust"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Options are what a Handler works with.
type Options struct {
	Reader client.Reader
	JS     jetstream.JetStream
	// MaxAttempts is how many deliveries try a request's snapshot before its backup is Failed.
	MaxAttempts uint64
	// Events records a Warning on a config whose message was rejected (nil: none).
	Events events.EventRecorder
	// Bus counts failures, with the Worker's other bus metrics.
	Bus *bus.Metrics
	// MemberTimeout bounds the health check of one etcd member, and its gRPC keepalive's
	// answer: a member whose connection went dead is noticed within it.
	MemberTimeout time.Duration
	// SnapshotIdle bounds how long the snapshot stream may send nothing (0: a minute): a member
	// that stops sending without closing the stream fails the attempt, which is retried.
	SnapshotIdle time.Duration
	// StagingReserve is the room staging must have before a snapshot starts (0: no check).
	StagingReserve int64
	// Level and Concurrency are the zstd encoder's (backupformat.NewWriter).
	Level       zstd.EncoderLevel
	Concurrency int
	// ProgressEvery is how often a running snapshot reports its bytes (0: progress.Interval).
	ProgressEvery time.Duration
	// StartedAfter is how long a first attempt runs before its "taking snapshot" event is
	// published (0: at once); a retry's is published at once.
	StartedAfter time.Duration
	// Destinations resolves the config's destination and what its backups are encrypted to
	// (nil: never encrypted).
	Destinations Sealer
	// Leases, when set, hold each cluster to one snapshot at a time across every replica: a
	// request whose cluster's lease is held comes again after BusyRetry (0: bus.LeaseTTL).
	Leases    *bus.Leases
	BusyRetry time.Duration
	// Holder names this replica in the leases it takes (the pod's name).
	Holder string
	Log    *slog.Logger
}

// ErrClusterBusy: another snapshot of the request's cluster is being taken (its lease is
// held); the request comes again.
var ErrClusterBusy = errors.New("cluster busy")

// Handler handles backup requests.
type Handler struct {
	Options
	metrics *metrics
}

// New returns a Handler whose metrics are registered on reg.
func New(o Options, reg prometheus.Registerer) *Handler {
	return &Handler{Options: o, metrics: newMetrics(reg)}
}

// Sealer tells what a destination's backups are encrypted to (destination.Resolver).
type Sealer interface {
	Lookup(ctx context.Context, name string) (destination.Destination, error)
	Encryption(ctx context.Context, d destination.Destination) (backupformat.Encryption, error)
}

// Handler is the snapshotter consumer's handler, whose messages are delivered at most
// maxDeliver times (the setup's default is 5: --max-attempts 3 and two more deliveries to
// report a failure while NATS is briefly away): Handle with the snapshotter's epilogue
// (Report).
func (h *Handler) Handler(maxDeliver int) bus.Handler {
	return bus.Typed(maxDeliver, h.Handle, bus.Report(h.JS, h.Bus, h.outcome()))
}

// outcome is how the snapshotter tells of its failures: each attempt but the last as
// Running, retried; the last, a configuration error or a rejection as Failed.
func (h *Handler) outcome() bus.Outcome[*etcdbackupv1.BackupRequested] {
	return bus.Outcome[*etcdbackupv1.BackupRequested]{
		Stage:    "snapshot",
		Classes:  failures,
		Attempts: h.MaxAttempts,
		Event: func(req *etcdbackupv1.BackupRequested, phase etcdbackupv1.Phase, msg string) *etcdbackupv1.StatusEvent {
			return bus.StatusFor(req, etcdbackupv1.Stage_STAGE_SNAPSHOTTER, phase, msg)
		},
		Retrying: func(d bus.Delivery, err error) string {
			return fmt.Sprintf("snapshot attempt %d of %d failed, retrying: %v", d.Attempt, h.MaxAttempts, err)
		},
		Failed:     func(err error) string { return "snapshot: " + err.Error() },
		Rejections: true,
		Attrs: func(req *etcdbackupv1.BackupRequested) []any {
			return []any{"backup", req.GetBackupName(), "cluster", req.GetCluster(), "job", req.GetJobName()}
		},
	}
}

// failures are the snapshotter's reasons (etcdbackup_failures_total{stage="snapshot"}).
var failures = bus.Classes{Rows: []bus.Class{
	{Err: ErrStagingFull, Reason: "staging-full"},
	{Err: ErrClusterBusy, Reason: "cluster-busy"},
	{Match: destination.IsConfigError, ReasonOf: destination.Reason, Permanent: true},
	{Err: endpoints.ErrConfig, Reason: "config", Permanent: true},
	{Err: snapshot.ErrCorrupt, Reason: "corrupt"},
	{Match: kube.IsAPIError, Reason: "kubernetes"},
}, Else: "etcd"}

// Handle takes one backup's snapshot. The config must exist under the request's uid and back
// up the cluster the request names; a request naming another cluster is rejected.
func (h *Handler) Handle(ctx context.Context, req *etcdbackupv1.BackupRequested, d bus.Delivery) error {
	cfg, err := trust.Checker{Reader: h.Reader, Events: h.Events}.Config(ctx, d.Subject, trust.ClaimOf(req))
	if err != nil {
		return err
	}
	if cfg == nil {
		h.Log.Info("config deleted or re-created, dropping request", "backup", req.GetBackupName())
		return nil
	}
	if cfg.DeletionTimestamp != nil {
		// Ended in status, so that the config's deletion does not wait for it.
		h.Log.Info("config being deleted, dropping request", "backup", req.GetBackupName())
		return bus.PublishStatus(ctx, h.JS, bus.StatusFor(req, etcdbackupv1.Stage_STAGE_SNAPSHOTTER,
			etcdbackupv1.Phase_PHASE_FAILED,
			"not taken: the config is being deleted"))
	}
	// A whole staged object of this request, from a delivery whose acknowledgement was lost:
	// the uploader may be reading it, so it is offered again, never replaced.
	if ready, err := h.staged(ctx, req); err != nil || ready != nil {
		if err != nil {
			return err
		}
		h.metrics.taken.WithLabelValues("reused").Inc()
		h.Log.Info("snapshot already staged by an earlier delivery, offered again", "backup", req.GetBackupName(),
			"cluster", req.GetCluster(), "revision", ready.GetRevision())
		_, err := bus.Publish(ctx, h.JS, bus.SubjectSnapshotReady, bus.MsgID(req), ready)
		return err
	}
	start := time.Now()
	ready, err := h.take(ctx, req, d, cfg.Spec.Destination, start)
	if err != nil {
		h.metrics.taken.WithLabelValues("failed").Inc()
		return err
	}
	if _, err := bus.Publish(ctx, h.JS, bus.SubjectSnapshotReady, bus.MsgID(req), ready); err != nil {
		return err
	}
	took := time.Since(start)
	h.metrics.taken.WithLabelValues("ok").Inc()
	h.metrics.bytes.Add(float64(ready.GetSnapshotSize()))
	h.metrics.duration.Observe(took.Seconds())
	h.Log.Info("snapshot staged", "backup", req.GetBackupName(), "cluster", req.GetCluster(), "job", req.GetJobName(),
		"bytes", ready.GetSnapshotSize(),
		"revision", ready.GetRevision(), "member", ready.GetMemberEndpoint(), "seconds", took.Seconds())
	if took >= StagedProgressAfter {
		h.status(ctx, req, fmt.Sprintf("snapshot of %d bytes at revision %d staged from %s", ready.GetSnapshotSize(),
			ready.GetRevision(), ready.GetMemberEndpoint()))
	}
	return nil
}

// StagedProgressAfter is how long a snapshot must have taken for its "staged" progress event
// to be published. The uploader's Completed event follows a quick one within a second and
// carries the same facts; at a thousand backups a minute the "staged" events of quick
// snapshots were a quarter of the status writes. A slow one (a large database) still shows
// that it moved from the snapshot to the upload.
const StagedProgressAfter = 5 * time.Second

// lease takes the lease of cluster (one the API server holds, which the request may back up)
// for req's snapshot: the context it returns ends if the lease is lost. A held lease is
// ErrClusterBusy, retried after BusyRetry.
func (h *Handler) lease(ctx context.Context, cluster *kubermaticv1.Cluster,
	req *etcdbackupv1.BackupRequested) (context.Context, func(), error) {
	if h.Leases == nil {
		return ctx, func() {}, nil
	}
	held, release, err := h.Leases.Acquire(ctx, cluster.Name, fmt.Sprintf("%s, backup %s/%s since %s", h.Holder,
		req.GetConfig().GetNamespace(), req.GetBackupName(), time.Now().UTC().Format(time.RFC3339)))
	var busy *bus.HeldError
	if errors.As(err, &busy) {
		h.metrics.taken.WithLabelValues("busy").Inc()
		retry := h.BusyRetry
		if retry <= 0 {
			retry = bus.LeaseTTL
		}
		return nil, nil, bus.RetrySoon(retry, fmt.Errorf("%w: a snapshot of cluster %s is being taken (%s); one at a time "+
			"per cluster, tried again in %s", ErrClusterBusy, cluster.Name, busy.Holder, retry))
	}
	if err != nil {
		return nil, nil, err
	}
	return held, release, nil
}

// ReadyMeta is the staged object's metadata key holding its SnapshotReady (protobuf, base64):
// written as the object appears, so that an object is staged whole with its record or not at
// all.
const ReadyMeta = "snapshot-ready"

// staged returns the SnapshotReady recorded with the whole staged object of req, or nil when
// there is none (none staged, or one without a record of req, which no SnapshotReady offered).
func (h *Handler) staged(ctx context.Context, req *etcdbackupv1.BackupRequested) (*etcdbackupv1.SnapshotReady, error) {
	meta, err := staging.Metadata(ctx, h.JS, bus.StagingBucket, bus.MsgID(req))
	if err != nil || meta == nil {
		return nil, err
	}
	raw, err := base64.StdEncoding.DecodeString(meta[ReadyMeta])
	var ready etcdbackupv1.SnapshotReady
	if err != nil || len(raw) == 0 || proto.Unmarshal(raw, &ready) != nil ||
		bus.MsgID(ready.GetRequest()) != bus.MsgID(req) || ready.GetStagedObject() != bus.MsgID(req) {
		return nil, nil
	}
	return &ready, nil
}

// take takes d's attempt at req's snapshot, to be stored at dest: once the request's cluster
// may be backed up (cluster), and its lease is this attempt's, until the snapshot is staged.
func (h *Handler) take(ctx context.Context, req *etcdbackupv1.BackupRequested, d bus.Delivery,
	dest string, start time.Time) (*etcdbackupv1.SnapshotReady, error) {
	cluster, err := h.cluster(ctx, req)
	if err != nil {
		return nil, err
	}
	ctx, release, err := h.lease(ctx, cluster, req)
	if err != nil {
		return nil, err
	}
	defer release()
	defer h.started(ctx, req, d.Attempt)()
	if err := h.roomInStaging(ctx); err != nil {
		return nil, err
	}
	// Encrypted before it is staged: the plaintext never leaves this process.
	seal, err := h.sealing(ctx, dest)
	if err != nil {
		return nil, err
	}
	target, err := endpoints.Resolve(ctx, h.Reader, cluster, cluster.NamespaceName())
	if err != nil {
		return nil, err
	}
	cli, member, rev, dbSize, err := h.healthyMember(ctx, target)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	// What the backup holds at rev, for restore drills to check; a failure here costs the
	// drill its key check, not the backup.
	var keys int64
	if cnt, err := cli.Get(ctx, "\x00", clientv3.WithFromKey(), clientv3.WithCountOnly(),
		clientv3.WithRev(rev)); err == nil {
		keys = cnt.Count
	} else {
		h.Log.Warn("count keys for the backup's record", "backup", req.GetBackupName(), "err", err)
	}
	return h.stream(ctx, cli, member, dbSize, seal, &etcdbackupv1.SnapshotReady{
		Request: req, Revision: rev, KeyCount: keys, StartedTime: timestamppb.New(start)})
}

// cluster returns the request's Cluster once it may be backed up: it exists, lives in the
// config's namespace and is not being restored.
func (h *Handler) cluster(ctx context.Context, req *etcdbackupv1.BackupRequested) (*kubermaticv1.Cluster, error) {
	var cluster kubermaticv1.Cluster
	if err := h.Reader.Get(ctx, types.NamespacedName{Name: req.GetCluster()}, &cluster); err != nil {
		if client.IgnoreNotFound(err) == nil {
			return nil, fmt.Errorf("%w: cluster %q does not exist", endpoints.ErrConfig, req.GetCluster())
		}
		return nil, fmt.Errorf("get cluster %s: %w", req.GetCluster(), err)
	}
	// etcd's endpoints and certificates come from the cluster's own namespace; a config in
	// another that names the cluster gets nothing from it (refused before anything else is asked).
	if ns := cluster.NamespaceName(); req.GetConfig().GetNamespace() != ns {
		return nil, fmt.Errorf("%w: %s: the config is in namespace %q, but cluster %q lives in %q",
			endpoints.ErrConfig, kubermaticv1.ReasonClusterNamespaceMismatch, req.GetConfig().GetNamespace(), cluster.Name, ns)
	}
	// A backup queued just before a restore began would capture etcd mid-rebuild; but the
	// restore's own pre-restore backup, before it has paused the cluster.
	if holder := cluster.Annotations[kubermaticv1.AnnotationActiveRestore]; holder != "" &&
		!cluster.PreRestoreBackupDue(req.GetConfig().GetNamespace(), req.GetConfig().GetName()) {
		return nil, fmt.Errorf("%w: cluster %q is being restored by EtcdRestore %s; backup skipped", endpoints.ErrConfig,
			req.GetCluster(), holder)
	}
	return &cluster, nil
}

// roomInStaging refuses a snapshot while staging has less than StagingReserve free: a full
// staging (the uploader down or behind) must not start a snapshot storm on etcd.
func (h *Handler) roomInStaging(ctx context.Context) error {
	if h.StagingReserve <= 0 {
		return nil
	}
	free, err := staging.Free(ctx, h.JS, bus.StagingBucket)
	if err != nil {
		return err
	}
	if free < h.StagingReserve {
		return fmt.Errorf("%w: staging has %d MiB free, a snapshot starts with at least %d MiB (--staging-reserve-mib): "+
			"the uploader is behind or down",
			ErrStagingFull, free>>20, h.StagingReserve>>20)
	}
	return nil
}

// stream streams a snapshot from member through etcd's own check, compressed (and sealed)
// into staging, reporting its progress against the database's size. The staged object
// appears only once etcd's check passed, with ready, completed, as its record (ReadyMeta).
func (h *Handler) stream(ctx context.Context, cli *clientv3.Client, member string, dbSize int64,
	seal backupformat.Encryption, ready *etcdbackupv1.SnapshotReady) (*etcdbackupv1.SnapshotReady, error) {
	req := ready.GetRequest()
	idle := h.SnapshotIdle
	if idle <= 0 {
		idle = time.Minute
	}
	sctx, watch, stop := progress.Idle(ctx, idle)
	defer stop()
	resp, err := cli.SnapshotWithVersion(sctx)
	if err != nil {
		return nil, fmt.Errorf("start snapshot from %s: %w", member, err)
	}
	defer resp.Snapshot.Close()
	v := snapshot.NewVerifier(watch(resp.Snapshot))
	name := bus.MsgID(req)
	streamed := &progress.Reader{R: v}
	stopReport := bus.ReportProgress(ctx, h.JS, h.Log, req, etcdbackupv1.Stage_STAGE_SNAPSHOTTER, "taking snapshot",
		h.ProgressEvery, streamed.N, dbSize)
	_, err = staging.PutCompressed(ctx, h.JS, bus.StagingBucket, name,
		"etcd snapshot of "+req.GetCluster()+", "+seal.Codec(),
		streamed, dbSize, h.Level, h.Concurrency, seal, func(enc *backupformat.Writer) (map[string]string, error) {
			if !v.Verified() {
				return nil, fmt.Errorf("snapshot from %s ended before etcd's trailing hash was checked", member)
			}
			ready.StagedObject, ready.SnapshotSize, ready.SnapshotSha256 = name, uint64(v.Size()), v.SHA256()
			ready.EtcdVersion, ready.MemberEndpoint = resp.Version, member
			ready.StoredSize, ready.StoredSha256, ready.Codec = uint64(enc.Size()), enc.SHA256(), enc.Codec()
			ready.Recipients = seal.RecipientList()
			raw, err := proto.Marshal(ready)
			return map[string]string{ReadyMeta: base64.StdEncoding.EncodeToString(raw)}, err
		})
	stopReport()
	if cause := context.Cause(sctx); errors.Is(cause, progress.ErrIdle) {
		return nil, fmt.Errorf("stream snapshot from %s: the member sent nothing for %s: %w", member, idle, cause)
	}
	if err != nil {
		return nil, fmt.Errorf("stream snapshot from %s to staging: %w", member, err)
	}
	return ready, nil
}

// sealing returns what the backups of destination dest (the config's) are encrypted to.
func (h *Handler) sealing(ctx context.Context, dest string) (backupformat.Encryption, error) {
	if h.Destinations == nil {
		return backupformat.Encryption{}, nil
	}
	d, err := h.Destinations.Lookup(ctx, dest)
	if err == nil {
		var seal backupformat.Encryption
		if seal, err = h.Destinations.Encryption(ctx, d); err == nil {
			return seal, nil
		}
	}
	return backupformat.Encryption{}, err
}

// healthyMember returns a client of the first member that answers a status request, and the
// member's revision then: etcd's snapshot stream carries no revision, and the snapshot, which
// starts right after, holds at least this one. A snapshot is taken from exactly one member.
func (h *Handler) healthyMember(ctx context.Context,
	t endpoints.Target) (*clientv3.Client, string, int64, int64, error) {
	// A fixed 1 MiB flow-control window: gRPC's dynamic one grows to 16 MiB, all of it
	// buffered here whenever compression falls behind etcd's stream. Receive buffers reused
	// as they are, not cleared first (endpoints.ReusedBuffers).
	m, err := endpoints.Healthy(ctx, t, h.MemberTimeout, append(endpoints.ReusedBuffers(),
		grpc.WithInitialWindowSize(1<<20), grpc.WithInitialConnWindowSize(1<<20))...)
	if err != nil {
		return nil, "", 0, 0, err
	}
	return m.Client, m.Endpoint, m.Status.Header.GetRevision(), m.Status.DbSize, nil
}

// started publishes "taking snapshot (attempt n of m)", stamped with the attempt's start: at
// once for a retry, and for a first attempt once it has run StartedAfter. The status writer
// patches the config's status for every event; a quick snapshot goes from "queued" to the
// uploader's Completed without this one, a patch fewer for each of a burst's thousand backups.
// The returned stop ends the wait.
func (h *Handler) started(ctx context.Context, req *etcdbackupv1.BackupRequested, attempt uint64) (stop func()) {
	ev := bus.StatusFor(req, etcdbackupv1.Stage_STAGE_SNAPSHOTTER, etcdbackupv1.Phase_PHASE_RUNNING,
		fmt.Sprintf("taking snapshot (attempt %d of %d)", attempt, h.MaxAttempts))
	publish := func() {
		if err := bus.PublishStatus(ctx, h.JS, ev); err != nil {
			h.Log.Warn("publish status", "backup", req.GetBackupName(), "err", err)
		}
	}
	if attempt > 1 || h.StartedAfter <= 0 {
		publish()
		return func() {}
	}
	t := time.AfterFunc(h.StartedAfter, publish)
	return func() { t.Stop() }
}

// status publishes the snapshot's progress, best effort: the snapshot goes on without it.
func (h *Handler) status(ctx context.Context, req *etcdbackupv1.BackupRequested, message string) {
	if err := bus.PublishStatus(ctx, h.JS, bus.StatusFor(req, etcdbackupv1.Stage_STAGE_SNAPSHOTTER,
		etcdbackupv1.Phase_PHASE_RUNNING, message)); err != nil {
		h.Log.Warn("publish status", "backup", req.GetBackupName(), "err", err)
	}
}

// ErrStagingFull: staging has no room for another snapshot; etcd was not contacted.
var ErrStagingFull = errors.New("staging full")
