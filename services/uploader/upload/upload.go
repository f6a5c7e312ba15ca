// Package upload stores staged backups in their S3 destination.
//
// The snapshotter stages each backup already compressed (backupformat), with its size and
// sha256: the uploader streams the staged bytes into a multipart upload of known size, with
// memory flat at about one part whatever the backup's size, and the object's record
// (backupformat.Meta) as metadata. The staged object's own digest is checked as it is read, so
// a damaged staged copy aborts the upload. A retry (S3 down) starts from the staged copy, not
// from a second etcd snapshot. Keys are deterministic, so a retry finds its own object, never
// duplicates it; a failed upload leaves no object. A raw snapshot staged by an earlier snapshotter
// (no stored sha256 in its message) is compressed into a temporary file first. A stored
// backup is never replaced: the put is a create (destination.PutOptions.IfAbsent), and a
// message for a key that holds another backup is rejected.
package upload

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/kube"
	"github.com/etcd-backup/etcdbackup/pkg/progress"
	"github.com/etcd-backup/etcdbackup/pkg/trust"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Staging is the staging object store, as the uploader uses it besides reading.
type Staging interface {
	Delete(ctx context.Context, name string) error
}

// Destinations resolves Seed destinations, their buckets and what their backups are
// encrypted to (destination.Resolver).
type Destinations interface {
	Lookup(ctx context.Context, name string) (destination.Destination, error)
	Bucket(ctx context.Context, d destination.Destination) (destination.Bucket, error)
	Encryption(ctx context.Context, d destination.Destination) (backupformat.Encryption, error)
}

// Options are what a Handler works with.
type Options struct {
	// Reader reads the backup's EtcdBackupConfig: a config deleted meanwhile gets no backup,
	// and where the backup goes comes from it.
	Reader client.Reader
	// Events records a Warning on a config whose message was rejected (nil: none).
	Events       events.EventRecorder
	JS           jetstream.JetStream
	Staging      Staging
	Destinations Destinations
	// Bus counts failures, with the Worker's other bus metrics.
	Bus *bus.Metrics
	// WorkDir holds the compressed file of a raw staged snapshot while it uploads.
	WorkDir string
	// StagingReadBytes bounds the staged chunks in flight to this process.
	StagingReadBytes int
	// StagingIdle is how long a staged chunk may take to arrive.
	StagingIdle time.Duration
	Log         *slog.Logger
	// ProgressEvery is how often a running upload reports its bytes (0: progress.Interval).
	ProgressEvery time.Duration
	// StagingTTL is how long a staged copy lives: a transient failure is retried until the
	// copy is about to expire (Window), then the backup is Failed. 0: no bound but the
	// consumer's MaxDeliver.
	StagingTTL time.Duration
}

// Handler handles snapshot-ready messages.
type Handler struct {
	Options
	metrics *metrics
}

// New returns a Handler whose metrics are registered on reg.
func New(o Options, reg prometheus.Registerer) *Handler {
	return &Handler{Options: o, metrics: newMetrics(reg)}
}

func (h *Handler) trust() trust.Checker { return trust.Checker{Reader: h.Reader, Events: h.Events} }

// Handler is the uploader consumer's handler, whose messages are delivered at most
// maxDeliver times: Handle with the uploader's epilogue (Report).
func (h *Handler) Handler(maxDeliver int) bus.Handler {
	return bus.Typed(maxDeliver, h.Handle, bus.Report(h.JS, h.Bus, h.outcome()))
}

// outcome is how the uploader tells of its failures: the backup Failed ("upload: ...") and
// its staged copy dropped, or Running while an upload is retried.
func (h *Handler) outcome() bus.Outcome[*etcdbackupv1.SnapshotReady] {
	return bus.Outcome[*etcdbackupv1.SnapshotReady]{
		Stage:   "upload",
		Classes: failures,
		Event: func(ready *etcdbackupv1.SnapshotReady, phase etcdbackupv1.Phase, msg string) *etcdbackupv1.StatusEvent {
			return bus.StatusFor(ready.GetRequest(), etcdbackupv1.Stage_STAGE_UPLOADER, phase, msg)
		},
		Retrying:   func(_ bus.Delivery, err error) string { return "upload failed, retrying: " + err.Error() },
		Window:     h.window,
		Failed:     func(err error) string { return "upload: " + err.Error() },
		Rejections: true,
		Cleanup:    func(ctx context.Context, ready *etcdbackupv1.SnapshotReady) { h.dropStaged(ctx, ready) },
		Attrs: func(ready *etcdbackupv1.SnapshotReady) []any {
			req := ready.GetRequest()
			return []any{"backup", req.GetBackupName(), "cluster", req.GetCluster(), "job", req.GetJobName()}
		},
	}
}

// window is how long a staged backup's upload is retried: from the snapshot's start until its
// staged copy is about to expire (StagingTTL less a tenth, at most an hour less). A long S3
// outage loses no backup the staging still holds.
func (h *Handler) window(ready *etcdbackupv1.SnapshotReady) (since, until time.Time) {
	since = ready.GetStartedTime().AsTime()
	if h.StagingTTL <= 0 {
		return since, time.Time{}
	}
	return since, since.Add(h.StagingTTL - min(h.StagingTTL/10, time.Hour))
}

// failures are the uploader's reasons (etcdbackup_failures_total{stage="upload"}).
var failures = bus.Classes{Rows: []bus.Class{
	{Match: destination.IsConfigError, ReasonOf: destination.Reason, Permanent: true},
	{Err: errStaging, Reason: "staging"},
	{Err: errSealing, Reason: "encryption", Permanent: true},
	{Match: kube.IsAPIError, Reason: "kubernetes"},
}, Else: "s3"}

// errStaging marks failures to read the staged snapshot; errSealing a staged backup not
// encrypted as its destination requires.
var (
	errStaging = errors.New("staged snapshot")
	errSealing = errors.New("backup encryption")
)

// Handle stores one staged snapshot. The message says which backup; where it goes comes from
// the config: the config must exist under the message's uid, and a message naming another
// cluster, object key or destination than the config's is rejected.
func (h *Handler) Handle(ctx context.Context, ready *etcdbackupv1.SnapshotReady, d bus.Delivery) error {
	req := ready.GetRequest()
	start := time.Now()
	cfg, err := h.trust().Config(ctx, d.Subject, trust.ClaimOf(req))
	if err != nil {
		return err
	}
	if cfg == nil || cfg.DeletionTimestamp != nil {
		// Its backups are being deleted (or were): storing this one would orphan it.
		h.Log.Info("config deleted or re-created, not storing the backup", "backup", req.GetBackupName())
		return h.void(ctx, ready, cfg != nil, "not stored: the config is being deleted")
	}
	dest, err := h.Destinations.Lookup(ctx, cfg.Spec.Destination)
	if err != nil {
		return err
	}
	if err := h.trust().Destination(cfg, d.Subject, req.GetDestination(), dest.Name); err != nil {
		return err
	}
	stored, record, err := h.store(ctx, ready, dest, d)
	if err != nil {
		h.metrics.uploads.WithLabelValues("failed").Inc()
		if rej := (*bus.RejectError)(nil); errors.As(err, &rej) {
			trust.Record(h.Events, cfg, d.Subject, err) // the key holds another backup
		}
		return err
	}
	// The config may have gone while the upload ran, and the pruner, which deletes a deleted
	// config's backups, may have listed the prefix before this object was there: the object
	// is this upload's to delete, or nobody's.
	if now, err := trust.Config(ctx, h.Reader, req.GetConfig()); err != nil {
		return err
	} else if now == nil || now.DeletionTimestamp != nil {
		return h.unstore(ctx, ready, dest, now != nil)
	}
	return h.complete(ctx, ready, stored, record, start)
}

// complete announces a stored backup: to the pruner, and Completed in status.
func (h *Handler) complete(ctx context.Context, ready *etcdbackupv1.SnapshotReady, stored *etcdbackupv1.BackupStored,
	record *etcdbackupv1.StoredObject, start time.Time) error {
	req := ready.GetRequest()
	if _, err := bus.Publish(ctx, h.JS, bus.SubjectBackupStored, bus.MsgID(req), stored); err != nil {
		return err
	}
	// Not the key: status lists it (objectKey), derived from the names, and a status keeping a
	// thousand backups holds a thousand of these messages.
	msg := fmt.Sprintf("stored %d bytes (snapshot %d bytes, revision %d) in bucket %s",
		stored.GetSize(), stored.GetSnapshotSize(), stored.GetRevision(), stored.GetBucket())
	ev := bus.StatusFor(req, etcdbackupv1.Stage_STAGE_UPLOADER, etcdbackupv1.Phase_PHASE_COMPLETED, msg)
	ev.Size, ev.Sha256, ev.Revision, ev.ObjectKey = stored.GetSize(), stored.GetSha256(), stored.GetRevision(),
		stored.GetObjectKey()
	ev.Object = record
	ev.Time = stored.GetFinishedTime()
	if err := bus.PublishStatus(ctx, h.JS, ev); err != nil {
		return err
	}
	h.dropStaged(ctx, ready)
	h.metrics.uploads.WithLabelValues("ok").Inc()
	h.metrics.duration.Observe(time.Since(start).Seconds())
	h.Log.Info("backup stored", "backup", req.GetBackupName(), "cluster", req.GetCluster(), "job", req.GetJobName(),
		"bytes", stored.GetSize(), "sha256", stored.GetSha256(), "seconds", time.Since(start).Seconds())
	return nil
}

// void ends a backup whose config is gone or going: Failed in status when the config is
// still there (so that its deletion does not wait for the backup), and its staged copy
// dropped.
func (h *Handler) void(ctx context.Context, ready *etcdbackupv1.SnapshotReady, report bool, msg string) error {
	if report {
		ev := bus.StatusFor(ready.GetRequest(), etcdbackupv1.Stage_STAGE_UPLOADER, etcdbackupv1.Phase_PHASE_FAILED, msg)
		if err := bus.PublishStatus(ctx, h.JS, ev); err != nil {
			return err
		}
	}
	h.dropStaged(ctx, ready)
	return nil
}

// unstore deletes the object an upload stored after its config was deleted.
func (h *Handler) unstore(ctx context.Context, ready *etcdbackupv1.SnapshotReady, dest destination.Destination,
	report bool) error {
	key := ready.GetRequest().GetObjectKey()
	h.Log.Info("config deleted during the upload, deleting the stored backup", "backup",
		ready.GetRequest().GetBackupName())
	b, err := h.Destinations.Bucket(ctx, dest)
	if err != nil {
		return err
	}
	if err := b.Delete(ctx, key); err != nil {
		return fmt.Errorf("delete %s, stored after its config was deleted: %w", key, err)
	}
	h.metrics.uploads.WithLabelValues("config-deleted").Inc()
	return h.void(ctx, ready, report, "stored, then deleted again: the config is being deleted")
}

// dropStaged deletes the staged copy; one already gone is fine.
func (h *Handler) dropStaged(ctx context.Context, ready *etcdbackupv1.SnapshotReady) {
	if err := h.Staging.Delete(ctx, ready.GetStagedObject()); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		h.Log.Warn("delete staged snapshot", "backup", ready.GetRequest().GetBackupName(), "err", err)
	}
}

// store puts the staged backup into its destination, or finds it already there, and returns
// it with the object's record.
func (h *Handler) store(ctx context.Context, ready *etcdbackupv1.SnapshotReady, dest destination.Destination,
	d bus.Delivery) (*etcdbackupv1.BackupStored, *etcdbackupv1.StoredObject, error) {
	req := ready.GetRequest()
	b, err := h.Destinations.Bucket(ctx, dest)
	if err != nil {
		return nil, nil, err
	}
	key := req.GetObjectKey()
	stored := &etcdbackupv1.BackupStored{
		Request: req, Bucket: dest.BucketName, ObjectKey: key,
		SnapshotSize: ready.GetSnapshotSize(), SnapshotSha256: ready.GetSnapshotSha256(), Revision: ready.GetRevision(),
	}
	if record, err := h.alreadyStored(ctx, b, ready, stored); err != nil || record != nil {
		return stored, record, err
	}
	if d.Attempt > 1 {
		// An earlier delivery may have been killed mid-upload: its parts go.
		if err := b.AbortUploads(ctx, key); err != nil {
			h.Log.Warn("abort an earlier attempt's upload", "backup", req.GetBackupName(), "err", err)
		}
	}
	// What the destination requires: a staged backup must be sealed to exactly its recipients
	// (never plaintext to a destination that encrypts); a raw one is sealed here.
	seal, err := h.Destinations.Encryption(ctx, dest)
	if err != nil {
		return nil, nil, err
	}
	body, err := h.open(ctx, ready, dest, seal)
	if err != nil {
		return nil, nil, err
	}
	defer body.Close()
	meta := backupformat.Meta{
		SHA256: body.sum, Codec: seal.Codec(), Recipients: seal.RecipientList(),
		SnapshotSHA256: ready.GetSnapshotSha256(), SnapshotSize: int64(ready.GetSnapshotSize()),
		Revision: ready.GetRevision(),
		KeyCount: ready.GetKeyCount(), BackupName: req.GetBackupName(), Cluster: req.GetCluster(),
	}
	uploaded := &progress.Counter{}
	stop := bus.ReportProgress(ctx, h.JS, h.Log, req, etcdbackupv1.Stage_STAGE_UPLOADER, "uploading", h.ProgressEvery,
		uploaded.N, body.size)
	err = b.Put(ctx, key, body, body.size, destination.PutOptions{ContentType: backupformat.ContentType,
		Metadata: meta.Map(), Uploaded: uploaded.Add, IfAbsent: true})
	stop()
	if errors.Is(err, destination.ErrObjectExists) {
		// Another upload committed first: this backup's own (done), or another's (refused).
		record, err := h.alreadyStored(ctx, b, ready, stored)
		if err == nil && record == nil {
			err = errors.New("an object appeared at the key during the upload and was kept")
		}
		return stored, record, err
	}
	if err != nil {
		if cause := body.err(); cause != nil {
			// The client may not keep the reader's error in its chain: name the cause.
			return nil, nil, fmt.Errorf("put %s to destination %q: %w", key, dest.Name, cause)
		}
		return nil, nil, err
	}
	h.metrics.bytes.Add(float64(body.size))
	h.metrics.stored.WithLabelValues(req.GetCluster(), dest.Name).Inc()
	stored.Size, stored.Sha256, stored.FinishedTime = uint64(body.size), body.sum, timestamppb.Now()
	return stored, trust.Recorded(meta, destination.ObjectInfo{}), nil
}

// alreadyStored reports whether an earlier delivery (whose ack was lost) stored this backup:
// then it fills stored from the object's record and returns that record (nil: not stored).
// An object at the key that is not this backup (another snapshot, or no record of one) is
// never replaced: a restore point stays what it was, and the message is rejected (reason
// "exists").
func (h *Handler) alreadyStored(ctx context.Context, b destination.Bucket, ready *etcdbackupv1.SnapshotReady,
	stored *etcdbackupv1.BackupStored) (*etcdbackupv1.StoredObject, error) {
	info, err := b.Stat(ctx, stored.GetObjectKey())
	if errors.Is(err, destination.ErrObjectNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	meta, err := backupformat.ParseMeta(info.Metadata)
	if err != nil || meta.SnapshotSHA256 != ready.GetSnapshotSha256() || meta.SHA256 == "" {
		what := "an object with no readable backup record"
		if err == nil {
			what = fmt.Sprintf("the backup of snapshot sha256 %s", meta.SnapshotSHA256)
		}
		return nil, bus.Reject(ReasonExists, fmt.Errorf("%s already holds %s, not this one's (snapshot sha256 %s): a "+
			"stored backup is never replaced, it is kept", stored.GetObjectKey(), what, ready.GetSnapshotSha256()))
	}
	h.Log.Info("backup already stored, not uploading again", "backup", ready.GetRequest().GetBackupName())
	stored.Size, stored.Sha256, stored.FinishedTime = uint64(info.Size), meta.SHA256, timestamppb.New(info.LastModified)
	return trust.Recorded(meta, info), nil
}

// ReasonExists is the rejection of a backup whose key already holds another object
// (etcdbackup_rejected_messages_total{reason="exists"}).
const ReasonExists = "exists"
