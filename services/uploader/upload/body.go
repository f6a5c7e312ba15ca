package upload

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/staging"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/nats-io/nats.go/jetstream"
)

// body is what an upload puts: the staged backup as it is, or a raw staged snapshot
// compressed (and sealed) into a temporary file. size and sum are the stored bytes'.
type body struct {
	io.Reader
	size  int64
	sum   string
	close func()
}

func (b *body) Close() { b.close() }

// err is the staged copy's failure that broke the put (nil: none).
func (b *body) err() error {
	if sr, ok := b.Reader.(*stagedReader); ok {
		return sr.err
	}
	return nil
}

// open returns the body of ready's backup to dest, sealed to seal.
func (h *Handler) open(ctx context.Context, ready *etcdbackupv1.SnapshotReady, dest destination.Destination,
	seal backupformat.Encryption) (*body, error) {
	if ready.GetStoredSha256() == "" {
		return h.compress(ctx, ready, seal)
	}
	codec, recipients := seal.Codec(), seal.RecipientList()
	staged := ready.GetCodec()
	if staged == "" {
		staged = backupformat.CodecZstd
	}
	if staged != codec || ready.GetRecipients() != recipients {
		return nil, bus.Permanent(fmt.Errorf("%w: the staged backup is %s to recipients [%s]; destination %q requires %s "+
			"to [%s] "+
			"(its encryption Secret changed while the backup was taken, or the snapshotter does not encrypt): not stored",
			errSealing, staged, ready.GetRecipients(), dest.Name, codec, recipients))
	}
	obj, err := h.openStaged(ctx, ready)
	if err != nil {
		return nil, err
	}
	if got := obj.Info().Size; got != ready.GetStoredSize() {
		obj.Close() //nolint:contextcheck // an io.Closer: the reader keeps the context it was opened with
		return nil, bus.Permanent(fmt.Errorf("%w %s holds %d bytes, the snapshotter staged %d", errStaging,
			ready.GetStagedObject(), got, ready.GetStoredSize()))
	}
	// The staged object's own digest is the sha256 the Reader checks its bytes against at the
	// end: it must be the one the snapshotter sent, which becomes the object's metadata. The
	// bytes are hashed once.
	if got, err := stagedSHA256(obj.Info().Digest); err != nil || got != ready.GetStoredSha256() {
		obj.Close() //nolint:contextcheck // as above
		return nil, bus.Permanent(fmt.Errorf("%w %s has digest %q, the snapshotter sent %s", errStaging,
			ready.GetStagedObject(), obj.Info().Digest, ready.GetStoredSha256()))
	}
	r := &stagedReader{r: obj}
	return &body{Reader: r, size: int64(ready.GetStoredSize()), sum: ready.GetStoredSha256(),
		close: func() { obj.Close() }}, nil //nolint:contextcheck // as above
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

// stagedSHA256 is the hex sha256 of a staged object's digest ("SHA-256=<base64url>", NATS
// ADR-20).
func stagedSHA256(digest string) (string, error) {
	raw, err := jetstream.DecodeObjectDigest(digest)
	if err == nil && (!strings.HasPrefix(digest, "SHA-256=") || len(raw) != sha256.Size) {
		err = errors.New("not a SHA-256 digest")
	}
	if err != nil {
		return "", fmt.Errorf("staged digest %q: %w", digest, err)
	}
	return hex.EncodeToString(raw), nil
}

// stagedReader reads the staged backup into the upload and marks read errors as staging's (not
// S3's). The staged Reader fails at the end unless the bytes' sha256 is the object's digest,
// checked at open against the one the snapshotter sent, which becomes the object's metadata:
// failing at the end aborts the multipart upload, so no object is stored whose metadata does
// not describe its bytes.
type stagedReader struct {
	r   io.Reader
	err error
}

func (s *stagedReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	switch {
	case err == io.EOF:
	case errors.Is(err, staging.ErrCorrupt):
		s.err = bus.Permanent(fmt.Errorf("%w: %w", errStaging, err))
		err = s.err
	case err != nil:
		s.err = fmt.Errorf("read %w: %w", errStaging, err)
		err = s.err
	}
	return n, err
}

// compress reads a raw staged snapshot (staged by an earlier snapshotter) into a compressed
// temporary file and returns it rewound. The staged object's own size is checked as it is
// read, so a damaged staged copy fails here.
func (h *Handler) compress(ctx context.Context, ready *etcdbackupv1.SnapshotReady,
	seal backupformat.Encryption) (*body, error) {
	obj, err := h.openStaged(ctx, ready)
	if err != nil {
		return nil, err
	}
	defer obj.Close() //nolint:contextcheck // an io.Closer: the reader keeps the context it was opened with
	f, err := os.CreateTemp(h.WorkDir, "backup-*"+backupformat.Suffix)
	if err != nil {
		return nil, fmt.Errorf("temporary file: %w", err)
	}
	done := func() {
		f.Close()
		os.Remove(f.Name())
	}
	enc, err := backupformat.NewSealingWriter(f, backupformat.Level, 1, seal)
	if err != nil {
		done()
		return nil, err
	}
	n, err := enc.ReadFrom(obj)
	cerr := enc.Close()
	switch {
	case err != nil:
		err = fmt.Errorf("compress %w: %w", errStaging, err)
	case uint64(n) != ready.GetSnapshotSize():
		err = fmt.Errorf("staged snapshot has %d bytes, the snapshotter staged %d", n, ready.GetSnapshotSize())
	case cerr != nil:
		err = fmt.Errorf("compress staged snapshot: %w", cerr)
	default:
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		done()
		return nil, err
	}
	return &body{Reader: f, size: enc.Size(), sum: enc.SHA256(), close: done}, nil
}
