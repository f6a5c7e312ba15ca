// Package take takes an etcd snapshot for a backup request, verifies and compresses it while it
// streams, and stages the compressed backup in the JetStream object store for the uploader. etcd's read transaction stays
// open only while the snapshot streams into the local NATS server, never while S3 is slow.
package take

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/endpoints"
	"github.com/etcd-backup/etcdbackup/pkg/progress"
	"github.com/etcd-backup/etcdbackup/pkg/snapshot"
	"github.com/etcd-backup/etcdbackup/pkg/staging"
	"github.com/etcd-backup/etcdbackup/pkg/trust"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go/jetstream"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Metrics observes snapshots; any field may be nil.
type Metrics struct {
	Taken func(result string)
	// Failed counts a failed attempt by reason: config, etcd, corrupt.
	Failed   func(reason string)
	Bytes    func(n int64)
	Duration func(d time.Duration)
}

// Handler handles backup requests.
type Handler struct {
	Reader client.Reader
	JS     jetstream.JetStream
	// MaxAttempts is how many deliveries a request gets before its backup is Failed.
	MaxAttempts uint64
	// Events records a Warning on a config whose message was rejected (nil: none).
	Events events.EventRecorder
	// MemberTimeout bounds the health check of one etcd member.
	MemberTimeout time.Duration
	// StagingReserve is the room staging must have before a snapshot starts (0: no check).
	StagingReserve int64
	// Level and Concurrency are the zstd encoder's (backupformat.NewWriter).
	Level       zstd.EncoderLevel
	Concurrency int
	// ProgressEvery is how often a running snapshot reports its bytes (0: progress.Interval).
	ProgressEvery time.Duration
	// Destinations resolves the config's destination and what its backups are encrypted to
	// (nil: never encrypted).
	Destinations Sealer
	Log          *slog.Logger
	Metrics      Metrics
}

// Sealer tells what a destination's backups are encrypted to (destination.Resolver).
type Sealer interface {
	Lookup(ctx context.Context, name string) (destination.Destination, error)
	Encryption(ctx context.Context, d destination.Destination) (backupformat.Encryption, error)
}

// Handle takes one backup's snapshot (the typed handler of the snapshotter consumer: wrap it
// with bus.Typed). The config must exist under the request's uid and back up the cluster the
// request names; a request naming another cluster is rejected and its backup marked Failed.
func (h *Handler) Handle(ctx context.Context, req *etcdbackupv1.BackupRequested, d bus.Delivery) error {
	attempt := d.Attempt
	log := h.Log.With("backup", req.GetBackupName(), "cluster", req.GetCluster(), "job", req.GetJobName(), "attempt", attempt)

	cfg, err := trust.Config(ctx, h.Reader, req.GetConfig())
	if err != nil {
		return err
	}
	if cfg == nil {
		log.Info("config deleted or re-created, dropping request")
		return nil
	}
	if cfg.DeletionTimestamp != nil {
		// Ended in status, so that the config's deletion does not wait for it.
		log.Info("config being deleted, dropping request")
		return bus.PublishStatus(ctx, h.JS, bus.StatusFor(req, etcdbackupv1.Stage_STAGE_SNAPSHOTTER, etcdbackupv1.Phase_PHASE_FAILED, "not taken: the config is being deleted"))
	}
	want := trust.Derive(cfg, req.GetBackupName(), "")
	if err := trust.Check(want, req.GetCluster(), req.GetObjectKey(), ""); err != nil {
		trust.Record(h.Events, cfg, d.Subject, err)
		return h.fail(ctx, req, err)
	}
	h.status(ctx, req, etcdbackupv1.Phase_PHASE_RUNNING, fmt.Sprintf("taking snapshot (attempt %d of %d)", attempt, h.MaxAttempts))

	start := time.Now()
	ready, err := h.take(ctx, req, cfg.Spec.Destination)
	if err != nil {
		if ctx.Err() != nil {
			return err // shutting down: another replica takes it
		}
		h.count("failed")
		if h.Metrics.Failed != nil {
			h.Metrics.Failed(failureReason(err))
		}
		if !errors.Is(err, endpoints.ErrConfig) && attempt < h.MaxAttempts {
			log.Warn("snapshot failed, will retry", "err", err)
			h.status(ctx, req, etcdbackupv1.Phase_PHASE_RUNNING, fmt.Sprintf("snapshot attempt %d of %d failed, retrying: %v", attempt, h.MaxAttempts, err))
			return err
		}
		return h.fail(ctx, req, bus.Permanent(err))
	}
	ready.StartedTime = timestamppb.New(start)
	if _, err := bus.Publish(ctx, h.JS, bus.SubjectSnapshotReady, bus.MsgID(req), ready); err != nil {
		return err
	}
	h.count("ok")
	if h.Metrics.Bytes != nil {
		h.Metrics.Bytes(int64(ready.GetSnapshotSize()))
	}
	if h.Metrics.Duration != nil {
		h.Metrics.Duration(time.Since(start))
	}
	log.Info("snapshot staged", "bytes", ready.GetSnapshotSize(), "revision", ready.GetRevision(), "member", ready.GetMemberEndpoint(), "seconds", time.Since(start).Seconds())
	if time.Since(start) >= StagedProgressAfter {
		h.status(ctx, req, etcdbackupv1.Phase_PHASE_RUNNING, fmt.Sprintf("snapshot of %d bytes at revision %d staged from %s", ready.GetSnapshotSize(), ready.GetRevision(), ready.GetMemberEndpoint()))
	}
	return nil
}

// StagedProgressAfter is how long a snapshot must have taken for its "staged" progress event
// to be published. The uploader's Completed event follows a quick one within a second and
// carries the same facts; at a thousand backups a minute the "staged" events of quick
// snapshots were a quarter of the status writes. A slow one (a large database) still shows
// that it moved from the snapshot to the upload.
const StagedProgressAfter = 5 * time.Second

// MaxDeliver is the consumer's MaxDeliver for maxAttempts: two deliveries beyond the last
// attempt are kept for publishing its Failed event when NATS is briefly away.
func MaxDeliver(maxAttempts int) int { return maxAttempts + 2 }

// DeadLetter marks the backup Failed when even the deliveries kept for that ran out.
func (h *Handler) DeadLetter(ctx context.Context, req *etcdbackupv1.BackupRequested, err error) {
	_ = h.fail(ctx, req, fmt.Errorf("gave up after the last allowed delivery: %w", err))
}

// fail publishes the backup's Failed event and returns err. The Failed event must not be
// lost: if it cannot be published, the request is delivered again.
func (h *Handler) fail(ctx context.Context, req *etcdbackupv1.BackupRequested, err error) error {
	if perr := bus.PublishStatus(ctx, h.JS, bus.StatusFor(req, etcdbackupv1.Stage_STAGE_SNAPSHOTTER, etcdbackupv1.Phase_PHASE_FAILED, "snapshot: "+err.Error())); perr != nil {
		return perr
	}
	return err
}

func (h *Handler) take(ctx context.Context, req *etcdbackupv1.BackupRequested, dest string) (*etcdbackupv1.SnapshotReady, error) {
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
		return nil, fmt.Errorf("%w: %s: the config is in namespace %q, but cluster %q lives in %q", endpoints.ErrConfig, kubermaticv1.ReasonClusterNamespaceMismatch, req.GetConfig().GetNamespace(), cluster.Name, ns)
	}
	// A backup queued just before a restore began would capture etcd mid-rebuild.
	if holder := cluster.Annotations[kubermaticv1.AnnotationActiveRestore]; holder != "" {
		return nil, fmt.Errorf("%w: cluster %q is being restored by EtcdRestore %s; backup skipped", endpoints.ErrConfig, req.GetCluster(), holder)
	}
	// A full staging (the uploader down or behind) must not start a snapshot storm on etcd.
	if h.StagingReserve > 0 {
		free, err := staging.Free(ctx, h.JS, bus.StagingBucket)
		if err != nil {
			return nil, err
		}
		if free < h.StagingReserve {
			return nil, fmt.Errorf("%w: staging has %d MiB free, a snapshot starts with at least %d MiB (--staging-reserve-mib): the uploader is behind or down",
				ErrStagingFull, free>>20, h.StagingReserve>>20)
		}
	}
	// Encrypted before it is staged: the plaintext never leaves this process.
	seal, err := h.sealing(ctx, dest)
	if err != nil {
		return nil, err
	}
	target, err := endpoints.Resolve(ctx, h.Reader, &cluster, cluster.NamespaceName())
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
	if cnt, err := cli.Get(ctx, "\x00", clientv3.WithFromKey(), clientv3.WithCountOnly(), clientv3.WithRev(rev)); err == nil {
		keys = cnt.Count
	} else {
		h.Log.Warn("count keys for the backup's record", "backup", req.GetBackupName(), "err", err)
	}

	resp, err := cli.SnapshotWithVersion(ctx)
	if err != nil {
		return nil, fmt.Errorf("start snapshot from %s: %w", member, err)
	}
	defer resp.Snapshot.Close()
	v := snapshot.NewVerifier(resp.Snapshot)
	name := bus.MsgID(req)
	streamed := &progress.Reader{R: v}
	stop := bus.ReportProgress(ctx, h.JS, h.Log, req, etcdbackupv1.Stage_STAGE_SNAPSHOTTER, "taking snapshot", h.ProgressEvery, streamed.N, dbSize)
	enc, err := staging.PutCompressed(ctx, h.JS, bus.StagingBucket, name, "etcd snapshot of "+req.GetCluster()+", "+seal.Codec(), streamed, h.Level, h.Concurrency, seal)
	stop()
	if err != nil {
		return nil, fmt.Errorf("stream snapshot from %s to staging: %w", member, err)
	}
	if !v.Verified() {
		return nil, fmt.Errorf("snapshot from %s ended before etcd's trailing hash was checked", member)
	}
	return &etcdbackupv1.SnapshotReady{
		Request:        req,
		StagedObject:   name,
		SnapshotSize:   uint64(v.Size()),
		SnapshotSha256: v.SHA256(),
		Revision:       rev,
		EtcdVersion:    resp.Version,
		MemberEndpoint: member,
		StoredSize:     uint64(enc.Size()),
		StoredSha256:   enc.SHA256(),
		Codec:          enc.Codec(),
		Recipients:     seal.RecipientList(),
		KeyCount:       keys,
	}, nil
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
	if destination.IsConfigError(err) {
		return backupformat.Encryption{}, fmt.Errorf("%w: %v", endpoints.ErrConfig, err)
	}
	return backupformat.Encryption{}, err
}

// healthyMember returns a client of the first member that answers a status request, and the
// member's revision then: etcd's snapshot stream carries no revision, and the snapshot, which
// starts right after, holds at least this one. A snapshot is taken from exactly one member.
func (h *Handler) healthyMember(ctx context.Context, t endpoints.Target) (*clientv3.Client, string, int64, int64, error) {
	var errs []string
	for _, ep := range t.Endpoints {
		cli, err := clientv3.New(clientv3.Config{
			Endpoints:   []string{ep},
			TLS:         t.TLS,
			DialTimeout: h.MemberTimeout,
			Logger:      zap.NewNop(),
			// A fixed 1 MiB flow-control window: gRPC's dynamic one grows to 16 MiB, all of
			// it buffered here whenever compression falls behind etcd's stream.
			DialOptions: []grpc.DialOption{grpc.WithInitialWindowSize(1 << 20), grpc.WithInitialConnWindowSize(1 << 20)},
		})
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", ep, err))
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, h.MemberTimeout)
		st, err := cli.Status(sctx, ep)
		cancel()
		if err == nil && len(st.Errors) == 0 {
			return cli, ep, st.Header.GetRevision(), st.DbSize, nil
		}
		if err == nil {
			err = errors.New(strings.Join(st.Errors, "; "))
		}
		errs = append(errs, fmt.Sprintf("%s: %v", ep, err))
		_ = cli.Close()
	}
	return nil, "", 0, 0, fmt.Errorf("no healthy etcd member: %s", strings.Join(errs, "; "))
}

func (h *Handler) status(ctx context.Context, req *etcdbackupv1.BackupRequested, phase etcdbackupv1.Phase, message string) {
	if err := bus.PublishStatus(ctx, h.JS, bus.StatusFor(req, etcdbackupv1.Stage_STAGE_SNAPSHOTTER, phase, message)); err != nil {
		h.Log.Warn("publish status", "backup", req.GetBackupName(), "err", err)
	}
}

// ErrStagingFull: staging has no room for another snapshot; etcd was not contacted.
var ErrStagingFull = errors.New("staging full")

func failureReason(err error) string {
	switch {
	case errors.Is(err, ErrStagingFull):
		return "staging-full"
	case errors.Is(err, endpoints.ErrConfig):
		return "config"
	case errors.Is(err, snapshot.ErrCorrupt):
		return "corrupt"
	}
	return "etcd"
}

func (h *Handler) count(result string) {
	if h.Metrics.Taken != nil {
		h.Metrics.Taken(result)
	}
}
