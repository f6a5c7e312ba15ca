// Package member restores one etcd member's data dir from a stored backup: the step that runs
// in front of etcd in each member pod during a restore (the role KKP's etcd-launcher plays).
//
// Fetch downloads and decompresses the backup in one pass and proves it intact: the stored
// object's sha256 against its metadata, zstd, and etcd's own trailing hash and size; Verify
// makes the same checks keeping nothing. Restore runs the
// etcdutl snapshot API for the member and leaves a marker, so that a member restarting later
// within the same restore does not restore again.
package member

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/journal"

	"filippo.io/age"
	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/progress"
	etcdsnapshot "go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"
)

// MarkerFile, inside a restored data dir, holds the id of the restore that wrote it.
const MarkerFile = "etcdbackup-restore-id"

var (
	// ErrCorrupt is returned (wrapped) when a backup fails a check.
	ErrCorrupt = backupformat.ErrCorrupt
	// ErrNotFound is returned (wrapped) when the backup object does not exist.
	ErrNotFound = destination.ErrObjectNotFound
	// ErrDecrypt is returned (wrapped) when an encrypted backup cannot be decrypted with the
	// identities given.
	ErrDecrypt = backupformat.ErrDecrypt
	// ErrRefused is returned (wrapped) when the store refuses the credentials (401, 403).
	ErrRefused = destination.ErrAccessDenied
)

// record reads an object's record and requires the sha256 it is checked against.
func record(key string, info destination.ObjectInfo) (backupformat.Meta, error) {
	meta, err := backupformat.ParseMeta(info.Metadata)
	if err != nil {
		return meta, fmt.Errorf("%s: %w", key, err)
	}
	if meta.SHA256 == "" {
		return meta, fmt.Errorf("%w: %s carries no sha256 metadata to check it against", ErrCorrupt, key)
	}
	return meta, nil
}

// Verified describes a backup that passed every check.
type Verified struct {
	// Size is the stored (compressed) size, SnapshotSize the etcd snapshot's.
	Size, SnapshotSize int64
	// SHA256 is the stored object's digest.
	SHA256 string
}

// Verify streams the backup at key through every check, keeping nothing: the object's sha256
// against its record, zstd, and etcd's trailing hash and size rule. Memory stays flat
// whatever the backup's size. maxSnapshot bounds the snapshot (backupformat.Open).
func Verify(ctx context.Context, b destination.Reader, key string, ids []age.Identity,
	maxSnapshot int64) (Verified, error) {
	return check(ctx, b, key, "", ids, io.Discard, nil, maxSnapshot)
}

// Visible reads the backup's record, as Fetch does first, and requires it to describe the
// object the restorer verified (verified, its sha256). The restorer calls it with the member
// pods' own credentials before it touches the cluster: keys the store refuses (ErrRefused),
// an object those keys cannot see (ErrNotFound) or one that is not the verified backup
// (ErrCorrupt) end the restore with nothing changed, not after etcd is torn down.
func Visible(ctx context.Context, b destination.Reader, key, verified string, ids backupformat.Identities) error {
	info, err := b.Stat(ctx, key)
	if err != nil {
		return err
	}
	meta, err := record(key, info)
	if err != nil {
		return err
	}
	if meta.SHA256 != verified {
		return fmt.Errorf("%w: %s is described as sha256 %s, the verified backup is %s", ErrCorrupt, key, meta.SHA256,
			verified)
	}
	// An encrypted backup: one of the pods' identities must be for one of its recipients.
	if meta.Codec == backupformat.CodecZstdAge {
		for _, fp := range ids.Fingerprints {
			if slices.Contains(strings.Split(meta.Recipients, ","), fp) {
				return nil
			}
		}
		return fmt.Errorf("%w: %s is encrypted to recipients [%s]; the member pods' identities are for [%s]",
			ErrDecrypt, key, meta.Recipients, strings.Join(ids.Fingerprints, ","))
	}
	return nil
}

// Fetch makes the same checks as Verify while it writes the decompressed snapshot to the file
// dst, in one pass over the download, and requires the object to be the one the restorer
// verified: its sha256 must be verified (an object replaced in the bucket since, even with
// metadata to match itself, is refused as ErrCorrupt). On any error nothing is left at dst.
//
// p, when not nil, counts the stored bytes downloaded so far for a reporter running beside it.
// maxSnapshot bounds what is written to dst (backupformat.Open): the object's metadata can
// never make a restore fill its disk.
func Fetch(ctx context.Context, b destination.Reader, key, verified string, ids []age.Identity, dst string,
	p *Progress, maxSnapshot int64) error {
	if verified == "" {
		return errors.New("the verified sha256 of the backup is required")
	}
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	// No fsync: the file is read back at once, and a crash starts the fetch over.
	_, err = check(ctx, b, key, verified, ids, f, p, maxSnapshot)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(dst)
	}
	return err
}

// DownloadIdle bounds how long a backup's download may receive nothing.
var DownloadIdle = 2 * time.Minute

// check downloads the backup, decompresses it into out and proves it intact against the
// record that came with it (backupformat.Open, decrypting with ids), and, with verified set,
// that it is the object of that sha256. Errors of the download or of out are returned as they
// are; ErrCorrupt means the backup itself is bad.
func check(ctx context.Context, b destination.Reader, key, verified string, ids []age.Identity, out io.Writer,
	p *Progress, maxSnapshot int64) (Verified, error) {
	// A download that stalls (the endpoint blackholed mid-stream) fails within DownloadIdle
	// instead of hanging on TCP's timeouts: the restore step or the verification retries.
	ctx, watch, stop := progress.Idle(ctx, DownloadIdle)
	defer stop()
	obj, info, err := b.Get(ctx, key)
	if err != nil {
		if errors.Is(context.Cause(ctx), progress.ErrIdle) {
			return Verified{}, fmt.Errorf("download %s: %w", key, context.Cause(ctx))
		}
		return Verified{}, err
	}
	defer obj.Close()
	meta, err := record(key, info)
	if err != nil {
		return Verified{}, err
	}
	if verified != "" && meta.SHA256 != verified {
		return Verified{}, fmt.Errorf("%w: %s is not the backup the restorer verified (sha256 %s, the object says %s)",
			ErrCorrupt, key, verified, meta.SHA256)
	}
	in := watch(obj)
	if p != nil {
		r := &progress.Reader{R: in}
		p.total.Store(info.Size)
		p.read.Store(r)
		in = r
	}
	d, err := backupformat.Open(in, meta, ids, out, maxSnapshot)
	if ctx.Err() != nil {
		return Verified{}, fmt.Errorf("download %s: %w", key, context.Cause(ctx))
	}
	var source *backupformat.SourceError
	var sink *backupformat.SinkError
	switch {
	case errors.As(err, &sink):
		return Verified{}, fmt.Errorf("write snapshot of %s: %w", key, sink.Err)
	case errors.As(err, &source): // the download broke off: not the backup's fault
		return Verified{}, fmt.Errorf("download %s: %w", key, source.Err)
	case err != nil:
		return Verified{}, fmt.Errorf("%s: %w", key, err)
	}
	return Verified{Size: d.Size, SnapshotSize: d.SnapshotSize, SHA256: d.SHA256}, nil
}

// Progress counts what a Fetch has downloaded: read it from another goroutine while it runs.
type Progress struct {
	read  atomic.Pointer[progress.Reader]
	total atomic.Int64
}

// Bytes returns the stored bytes downloaded so far and the stored object's size (0 until the
// download starts).
func (p *Progress) Bytes() (done, total int64) {
	if r := p.read.Load(); r != nil {
		done = r.N()
	}
	return done, p.total.Load()
}

// The restore step logs its download as JSON lines with these keys, at least every
// --progress-interval and once when it is done; LastProgress reads them back.
const (
	LogBytesDone  = "bytes_done"
	LogBytesTotal = "bytes_total"
)

// LastProgress returns the last download progress in the tail of a restore step's log: the
// stored bytes fetched and the object's size. ok is false when the tail has none.
func LastProgress(tail []byte) (done, total int64, ok bool) {
	lines := bytes.Split(tail, []byte("\n"))
	for i := len(lines) - 1; i >= 0; i-- {
		var l map[string]any
		if json.Unmarshal(lines[i], &l) != nil {
			continue // a line cut by the tail's limit, or not ours
		}
		d, dok := l[LogBytesDone].(float64)
		t, tok := l[LogBytesTotal].(float64)
		if dok && tok && d >= 0 && t >= 0 {
			return int64(d), int64(t), true
		}
	}
	return 0, 0, false
}

// Config is one member's restore.
type Config struct {
	// RestoreID identifies the restore (the EtcdRestore's uid): a data dir restored by it is
	// left alone when the member restarts.
	RestoreID string
	// Snapshot is the file Fetch wrote.
	Snapshot string
	// DataDir is the member's data dir; it must not exist or be empty.
	DataDir string
	// Name is the member name (the pod name), PeerURLs its peer URLs.
	Name     string
	PeerURLs []string
	// InitialCluster lists every member: "etcd-0=https://...,etcd-1=...".
	InitialCluster string
	// Token is the cluster token (the cluster's name).
	Token string
}

// Restore restores cfg.DataDir from cfg.Snapshot with etcd's hash check on. It returns
// restored=false, and does nothing, when the data dir was restored by this restore already;
// it refuses a data dir that holds anything else.
func Restore(cfg Config) (restored bool, err error) {
	if cfg.RestoreID == "" || cfg.Name == "" || cfg.InitialCluster == "" || cfg.Token == "" {
		return false, errors.New("restore id, member name, initial cluster and token are required")
	}
	if by, err := RestoredBy(cfg.DataDir); err != nil {
		return false, err
	} else if by == cfg.RestoreID {
		return false, nil
	} else if by != "" {
		return false, fmt.Errorf("data dir %s was restored by restore %s, not %s", cfg.DataDir, by, cfg.RestoreID)
	}
	entries, err := os.ReadDir(cfg.DataDir)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return false, err
	case len(entries) > 0:
		return false, fmt.Errorf("data dir %s is not empty; refusing to restore over it", cfg.DataDir)
	default:
		if err := os.Remove(cfg.DataDir); err != nil { // the rename below wants it absent
			return false, err
		}
	}
	// etcdutl writes into a scratch dir beside the data dir, which gets the marker and is then
	// renamed into place: a step killed midway leaves only the scratch dir, which the next run
	// clears, never a half-restored data dir that a restart would refuse or, worse, start.
	scratch := ScratchDir(cfg.DataDir)
	if err := os.RemoveAll(scratch); err != nil {
		return false, err
	}
	err = etcdsnapshot.NewV3(zap.NewNop()).Restore(etcdsnapshot.RestoreConfig{
		SnapshotPath:        cfg.Snapshot,
		Name:                cfg.Name,
		OutputDataDir:       scratch,
		PeerURLs:            cfg.PeerURLs,
		InitialCluster:      cfg.InitialCluster,
		InitialClusterToken: cfg.Token,
	})
	if err != nil {
		return false, fmt.Errorf("restore member %s: %w", cfg.Name, err)
	}
	if err := writeSynced(filepath.Join(scratch, MarkerFile), []byte(cfg.RestoreID+"\n")); err != nil {
		return false, err
	}
	if err := os.Rename(scratch, cfg.DataDir); err != nil {
		return false, err
	}
	return true, syncDir(filepath.Dir(cfg.DataDir))
}

// ScratchDir is where Restore builds a data dir before renaming it into place.
func ScratchDir(dataDir string) string {
	return filepath.Clean(dataDir) + ".etcdbackup-restoring"
}

func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// RestoredBy returns the id of the restore that restored dataDir, or "" if none did.
func RestoredBy(dataDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, MarkerFile))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// Replay downloads the backup at key into the file db, proving it as Fetch does against its
// own record, and opens it for a journal replay (journal.OpenReplay). The caller closes it
// and removes db.
func Replay(ctx context.Context, b destination.Reader, key string, ids []age.Identity, db string,
	maxSnapshot int64) (*journal.Replay, error) {
	info, err := b.Stat(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("full backup %s: %w", key, err)
	}
	recorded, err := record(key, info)
	if err != nil {
		return nil, err
	}
	if err := Fetch(ctx, b, key, recorded.SHA256, ids, db, nil, maxSnapshot); err != nil {
		return nil, fmt.Errorf("full backup %s: %w", key, err)
	}
	if err := journal.StripHash(db); err != nil {
		return nil, err
	}
	return journal.OpenReplay(db)
}
