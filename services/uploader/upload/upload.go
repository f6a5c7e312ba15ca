// Package upload stores staged backups in their S3 destination.
//
// The snapshotter stages each backup already compressed (backupformat), with its size and
// sha256: the uploader streams the staged bytes into a multipart upload of known size, with
// memory flat at about one part whatever the backup's size, and the object's sha256 as
// metadata. The staged object's own digest is checked as it is read, so a damaged staged
// copy aborts the upload. A retry (S3 down) starts from the staged copy, not from a second
// etcd snapshot. Keys are deterministic, so a retry overwrites, never duplicates; a failed
// multipart upload is aborted and leaves no object. A raw snapshot staged by an earlier
// snapshotter (no stored sha256 in its message) is compressed into a temporary file first.
package upload

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/progress"
	"github.com/etcd-backup/etcdbackup/pkg/staging"
	"github.com/etcd-backup/etcdbackup/pkg/trust"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/minio/minio-go/v7"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Staging is the staging object store, as the uploader uses it besides reading.
type Staging interface {
	Delete(ctx context.Context, name string) error
}

// Destinations resolves Seed destinations, their S3 clients and what their backups are
// encrypted to.
type Destinations interface {
	Lookup(ctx context.Context, name string) (destination.Destination, error)
	Client(ctx context.Context, d destination.Destination) (*minio.Client, error)
	Encryption(ctx context.Context, d destination.Destination) (backupformat.Encryption, error)
}

// Metrics observes uploads; any field may be nil.
type Metrics struct {
	Uploaded func(result string)
	// Stored counts a backup stored (not one found already stored).
	Stored func(cluster, destination string)
	// Failed counts a failed attempt by reason: config, staging, s3.
	Failed   func(reason string)
	Bytes    func(n int64)
	Duration func(d time.Duration)
}

// Handler handles snapshot-ready messages.
type Handler struct {
	// Reader reads the backup's EtcdBackupConfig: a config deleted meanwhile gets no backup,
	// and where the backup goes comes from it.
	Reader client.Reader
	// Events records a Warning on a config whose message was rejected (nil: none).
	Events       events.EventRecorder
	JS           jetstream.JetStream
	Staging      Staging
	Destinations Destinations
	// WorkDir holds the compressed file of a raw staged snapshot while it uploads.
	WorkDir string
	// StagingReadBytes bounds the staged chunks in flight to this process.
	StagingReadBytes int
	// StagingIdle is how long a staged chunk may take to arrive.
	StagingIdle time.Duration
	// PartSize and Threads bound the multipart upload: memory is about PartSize*Threads.
	PartSize uint64
	Threads  uint
	Log      *slog.Logger
	Metrics  Metrics
	// ProgressEvery is how often a running upload reports its bytes (0: progress.Interval).
	ProgressEvery time.Duration
}

// Handle stores one staged snapshot (the typed handler of the uploader consumer: wrap it with
// bus.Typed). The message says which backup; where it goes comes from the config: the config
// must exist under the message's uid, and a message naming another cluster, object key or
// destination than the config's is rejected, its backup marked Failed.
func (h *Handler) Handle(ctx context.Context, ready *etcdbackupv1.SnapshotReady, d bus.Delivery) error {
	req := ready.GetRequest()
	log := h.Log.With("backup", req.GetBackupName(), "cluster", req.GetCluster(), "job", req.GetJobName(), "key", req.GetObjectKey())
	start := time.Now()
	cfg, err := trust.Config(ctx, h.Reader, req.GetConfig())
	if err != nil {
		return err
	}
	if cfg == nil || cfg.DeletionTimestamp != nil {
		// Its backups are being deleted (or were): storing this one would orphan it.
		log.Info("config deleted or re-created, not storing the backup")
		if cfg != nil {
			// Ended in status, so that the config's deletion does not wait for it.
			if err := h.status(ctx, req, etcdbackupv1.Phase_PHASE_FAILED, "not stored: the config is being deleted", nil); err != nil {
				return err
			}
		}
		_ = h.Staging.Delete(ctx, ready.GetStagedObject())
		return nil
	}
	dest, err := h.Destinations.Lookup(ctx, cfg.Spec.Destination)
	if err != nil {
		if destination.IsConfigError(err) {
			return h.fail(ctx, req, ready, bus.Permanent(err))
		}
		return err
	}
	if err := trust.Check(trust.Derive(cfg, req.GetBackupName(), dest.Name), req.GetCluster(), req.GetObjectKey(), req.GetDestination()); err != nil {
		trust.Record(h.Events, cfg, d.Subject, err)
		return h.fail(ctx, req, ready, err)
	}

	stored, err := h.store(ctx, ready, dest, log)
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		h.count("failed")
		if h.Metrics.Failed != nil {
			h.Metrics.Failed(failureReason(err))
		}
		if bus.IsPermanent(err) {
			return h.fail(ctx, req, ready, err)
		}
		log.Warn("upload failed, will retry", "err", err, "attempt", d.Attempt)
		_ = h.status(ctx, req, etcdbackupv1.Phase_PHASE_RUNNING, "upload failed, retrying: "+err.Error(), nil)
		return err
	}
	// The config may have gone while the upload ran, and the pruner, which deletes a deleted
	// config's backups, may have listed the prefix before this object was there: the object
	// is this upload's to delete, or nobody's.
	if now, err := trust.Config(ctx, h.Reader, req.GetConfig()); err != nil {
		return err
	} else if now == nil || now.DeletionTimestamp != nil {
		log.Info("config deleted during the upload, deleting the stored backup")
		if err := h.unstore(ctx, dest, stored.GetObjectKey()); err != nil {
			return err
		}
		if now != nil {
			if err := h.status(ctx, req, etcdbackupv1.Phase_PHASE_FAILED, "stored, then deleted again: the config is being deleted", nil); err != nil {
				return err
			}
		}
		_ = h.Staging.Delete(ctx, ready.GetStagedObject())
		h.count("config-deleted")
		return nil
	}
	if _, err := bus.Publish(ctx, h.JS, bus.SubjectBackupStored, bus.MsgID(req), stored); err != nil {
		return err
	}
	msg2 := fmt.Sprintf("stored %d bytes (snapshot %d bytes, revision %d) at %s/%s", stored.GetSize(), stored.GetSnapshotSize(), stored.GetRevision(), stored.GetBucket(), stored.GetObjectKey())
	if err := h.status(ctx, req, etcdbackupv1.Phase_PHASE_COMPLETED, msg2, stored); err != nil {
		return err
	}
	if err := h.Staging.Delete(ctx, ready.GetStagedObject()); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		log.Warn("delete staged snapshot", "err", err)
	}
	h.count("ok")
	if h.Metrics.Duration != nil {
		h.Metrics.Duration(time.Since(start))
	}
	log.Info("backup stored", "bytes", stored.GetSize(), "sha256", stored.GetSha256(), "seconds", time.Since(start).Seconds())
	return nil
}

// DeadLetter marks the backup of a snapshot that failed its last allowed delivery Failed
// with the last error, and drops the staged copy.
func (h *Handler) DeadLetter(ctx context.Context, ready *etcdbackupv1.SnapshotReady, err error) {
	_ = h.fail(ctx, ready.GetRequest(), ready, fmt.Errorf("gave up after the last allowed delivery: %w", err))
}

// fail reports the backup Failed with err, drops the staged copy and returns err (which the
// Worker logs once). If the Failed event cannot be published, the message is retried.
func (h *Handler) fail(ctx context.Context, req *etcdbackupv1.BackupRequested, ready *etcdbackupv1.SnapshotReady, err error) error {
	if perr := h.status(ctx, req, etcdbackupv1.Phase_PHASE_FAILED, "upload: "+err.Error(), nil); perr != nil {
		return perr
	}
	_ = h.Staging.Delete(ctx, ready.GetStagedObject())
	return err
}

// store puts the staged snapshot into its destination, or finds it already there.
func (h *Handler) store(ctx context.Context, ready *etcdbackupv1.SnapshotReady, dest destination.Destination, log *slog.Logger) (*etcdbackupv1.BackupStored, error) {
	req := ready.GetRequest()
	s3, err := h.Destinations.Client(ctx, dest)
	if err != nil {
		if destination.IsConfigError(err) {
			return nil, bus.Permanent(err)
		}
		return nil, err
	}
	key := req.GetObjectKey()
	stored := &etcdbackupv1.BackupStored{
		Request:        req,
		Bucket:         dest.BucketName,
		ObjectKey:      key,
		SnapshotSize:   ready.GetSnapshotSize(),
		SnapshotSha256: ready.GetSnapshotSha256(),
		Revision:       ready.GetRevision(),
	}

	// Already stored by an earlier delivery whose ack was lost?
	if info, err := s3.StatObject(ctx, dest.BucketName, key, minio.StatObjectOptions{}); err == nil {
		if info.UserMetadata[backupformat.MetaSnapshotSHA256] == ready.GetSnapshotSha256() && info.UserMetadata[backupformat.MetaSHA256] != "" {
			log.Info("backup already stored, not uploading again")
			stored.Size, stored.Sha256 = uint64(info.Size), info.UserMetadata[backupformat.MetaSHA256]
			stored.FinishedTime = timestamppb.New(info.LastModified)
			return stored, nil
		}
	} else if code := minio.ToErrorResponse(err).Code; code == "NoSuchBucket" {
		return nil, bus.Permanent(fmt.Errorf("bucket %q of destination %q does not exist", dest.BucketName, dest.Name))
	} else if code != "NoSuchKey" && code != "NotFound" {
		return nil, fmt.Errorf("check %s in destination %q: %w", key, dest.Name, err)
	}

	// What the destination requires: a staged backup must be sealed to exactly its recipients
	// (never plaintext to a destination that encrypts); a raw one is sealed here.
	seal, err := h.Destinations.Encryption(ctx, dest)
	if err != nil {
		if destination.IsConfigError(err) {
			return nil, bus.Permanent(err)
		}
		return nil, err
	}
	codec, recipients := seal.Codec(), seal.RecipientList()
	var (
		body io.Reader
		size int64
		sum  string
	)
	if ready.GetStoredSha256() != "" {
		staged := ready.GetCodec()
		if staged == "" {
			staged = backupformat.CodecZstd
		}
		if staged != codec || ready.GetRecipients() != recipients {
			return nil, bus.Permanent(fmt.Errorf("%w: the staged backup is %s to recipients [%s]; destination %q requires %s to [%s] (its encryption Secret changed while the backup was taken, or the snapshotter does not encrypt): not stored",
				errSealing, staged, ready.GetRecipients(), dest.Name, codec, recipients))
		}
		obj, err := h.openStaged(ctx, ready)
		if err != nil {
			return nil, err
		}
		defer obj.Close()
		if got := obj.Info().Size; got != ready.GetStoredSize() {
			return nil, bus.Permanent(fmt.Errorf("%w %s holds %d bytes, the snapshotter staged %d", errStaging, ready.GetStagedObject(), got, ready.GetStoredSize()))
		}
		body, size, sum = &stagedReader{r: obj, hash: sha256.New(), want: ready.GetStoredSha256()}, int64(ready.GetStoredSize()), ready.GetStoredSha256()
	} else {
		file, fsize, fsum, err := h.compress(ctx, ready, seal)
		if err != nil {
			return nil, err
		}
		defer os.Remove(file.Name())
		defer file.Close()
		body, size, sum = file, fsize, fsum
	}

	meta := map[string]string{
		backupformat.MetaCodec:          codec,
		backupformat.MetaRecipients:     recipients,
		backupformat.MetaSHA256:         sum,
		backupformat.MetaSnapshotSHA256: ready.GetSnapshotSha256(),
		backupformat.MetaSnapshotSize:   strconv.FormatUint(ready.GetSnapshotSize(), 10),
		backupformat.MetaRevision:       strconv.FormatInt(ready.GetRevision(), 10),
		backupformat.MetaBackupName:     req.GetBackupName(),
		backupformat.MetaCluster:        req.GetCluster(),
	}
	if n := ready.GetKeyCount(); n > 0 {
		meta[backupformat.MetaKeyCount] = strconv.FormatInt(n, 10)
	}
	uploaded := &progress.Counter{}
	stop := bus.ReportProgress(ctx, h.JS, log, req, etcdbackupv1.Stage_STAGE_UPLOADER, "uploading", h.ProgressEvery, uploaded.N, size)
	_, err = s3.PutObject(ctx, dest.BucketName, key, body, size, minio.PutObjectOptions{
		ContentType:  backupformat.ContentType,
		PartSize:     h.PartSize,
		NumThreads:   h.Threads,
		UserMetadata: meta,
		Progress:     uploaded,
	})
	stop()
	if err != nil {
		if code := minio.ToErrorResponse(err).Code; code == "NoSuchBucket" {
			return nil, bus.Permanent(fmt.Errorf("bucket %q of destination %q does not exist", dest.BucketName, dest.Name))
		}
		if sr, ok := body.(*stagedReader); ok && sr.err != nil {
			// minio-go may not keep the reader's error in its chain: name the cause.
			return nil, fmt.Errorf("put %s to destination %q: %w", key, dest.Name, sr.err)
		}
		return nil, fmt.Errorf("put %s to destination %q: %w", key, dest.Name, err)
	}
	if h.Metrics.Bytes != nil {
		h.Metrics.Bytes(size)
	}
	if h.Metrics.Stored != nil {
		h.Metrics.Stored(req.GetCluster(), dest.Name)
	}
	stored.Size, stored.Sha256, stored.FinishedTime = uint64(size), sum, timestamppb.Now()
	return stored, nil
}

// unstore deletes an object this upload stored; one already gone is fine.
func (h *Handler) unstore(ctx context.Context, dest destination.Destination, key string) error {
	s3, err := h.Destinations.Client(ctx, dest)
	if err != nil {
		return err
	}
	if err := s3.RemoveObject(ctx, dest.BucketName, key, minio.RemoveObjectOptions{}); err != nil && minio.ToErrorResponse(err).Code != "NoSuchKey" {
		return fmt.Errorf("delete %s, stored after its config was deleted, from destination %q: %w", key, dest.Name, err)
	}
	return nil
}

// openStaged opens the staged object of ready for reading.
func (h *Handler) openStaged(ctx context.Context, ready *etcdbackupv1.SnapshotReady) (*staging.Reader, error) {
	obj, err := staging.Open(ctx, h.JS, bus.StagingBucket, ready.GetStagedObject(), h.StagingReadBytes, h.StagingIdle)
	if err != nil {
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			return nil, bus.Permanent(fmt.Errorf("%w %s is gone (expired or deleted)", errStaging, ready.GetStagedObject()))
		}
		return nil, fmt.Errorf("open %w: %w", errStaging, err)
	}
	return obj, nil
}

// stagedReader reads the staged backup into the upload: it marks read errors as staging's (not
// S3's), and at the end it fails unless the bytes' sha256 is the one the snapshotter sent, which
// becomes the object's metadata. Failing at the end aborts the multipart upload, so no object
// is stored whose metadata does not describe its bytes.
type stagedReader struct {
	r    io.Reader
	hash hash.Hash
	want string
	err  error
}

func (s *stagedReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.hash.Write(p[:n])
	switch {
	case err == io.EOF:
		if got := hex.EncodeToString(s.hash.Sum(nil)); got != s.want {
			s.err = bus.Permanent(fmt.Errorf("%w: its sha256 is %s, the snapshotter sent %s", errStaging, got, s.want))
			return n, s.err
		}
	case err != nil:
		s.err = fmt.Errorf("read %w: %w", errStaging, err)
		err = s.err
	}
	return n, err
}

// compress reads a raw staged snapshot (staged by an earlier snapshotter) into a compressed
// temporary file and returns it rewound, with its size and sha256 (hex). The staged object's
// own size and digest are checked as it is read, so a damaged staged copy fails here.
func (h *Handler) compress(ctx context.Context, ready *etcdbackupv1.SnapshotReady, seal backupformat.Encryption) (*os.File, int64, string, error) {
	obj, err := h.openStaged(ctx, ready)
	if err != nil {
		return nil, 0, "", err
	}
	defer obj.Close()

	f, err := os.CreateTemp(h.WorkDir, "backup-*"+backupformat.Suffix)
	if err != nil {
		return nil, 0, "", fmt.Errorf("temporary file: %w", err)
	}
	fail := func(err error) (*os.File, int64, string, error) {
		f.Close()
		os.Remove(f.Name())
		return nil, 0, "", err
	}
	enc, err := backupformat.NewSealingWriter(f, backupformat.Level, 1, seal)
	if err != nil {
		return fail(err)
	}
	n, err := enc.ReadFrom(obj)
	if err != nil {
		enc.Close()
		return fail(fmt.Errorf("compress %w: %w", errStaging, err))
	}
	if uint64(n) != ready.GetSnapshotSize() {
		enc.Close()
		return fail(fmt.Errorf("staged snapshot has %d bytes, the snapshotter staged %d", n, ready.GetSnapshotSize()))
	}
	if err := enc.Close(); err != nil {
		return fail(fmt.Errorf("compress staged snapshot: %w", err))
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fail(err)
	}
	return f, enc.Size(), enc.SHA256(), nil
}

func (h *Handler) status(ctx context.Context, req *etcdbackupv1.BackupRequested, phase etcdbackupv1.Phase, message string, stored *etcdbackupv1.BackupStored) error {
	ev := bus.StatusFor(req, etcdbackupv1.Stage_STAGE_UPLOADER, phase, message)
	if stored != nil {
		ev.Size, ev.Sha256, ev.Revision, ev.ObjectKey = stored.GetSize(), stored.GetSha256(), stored.GetRevision(), stored.GetObjectKey()
		ev.Time = stored.GetFinishedTime()
	}
	err := bus.PublishStatus(ctx, h.JS, ev)
	if err != nil {
		h.Log.Warn("publish status", "backup", req.GetBackupName(), "err", err)
	}
	return err
}

func failureReason(err error) string {
	switch {
	case destination.IsConfigError(err):
		return "config"
	case errors.Is(err, errStaging):
		return "staging"
	case errors.Is(err, errSealing):
		return "encryption"
	}
	return "s3"
}

// errStaging marks failures to read the staged snapshot; errSealing a staged backup not
// encrypted as its destination requires.
var (
	errStaging = errors.New("staged snapshot")
	errSealing = errors.New("backup encryption")
)

func (h *Handler) count(result string) {
	if h.Metrics.Uploaded != nil {
		h.Metrics.Uploaded(result)
	}
}
