// Package drill restores a backup where it harms nothing, to prove it restorable: it streams
// the backup through every check (sha256, decryption, zstd, etcd's own hash), restores it with
// etcdutl into a scratch directory, starts etcd on the result (loopback only, nothing joins
// it) and checks the revision and the key count against what the backup recorded, then
// removes everything. A backup no one has restored is a hope; a drilled one is a fact.
package drill

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"filippo.io/age"
	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/services/restorer/member"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// ErrFailed wraps what makes a backup fail its drill: it is not restorable as it is (corrupt,
// not decryptable, restored data that differs from its record). Any other error (S3 away, no
// disk) says nothing of the backup: the drill is tried again.
var ErrFailed = errors.New("backup failed its drill")

// ErrNoRoom: the scratch directory has less free space than the drill needs.
var ErrNoRoom = errors.New("no room for the drill")

// Result is what a passed drill found.
type Result struct {
	// Keys and Revision are the restored etcd's: the key count at the backup's recorded
	// revision, and its own revision.
	Keys, Revision int64
	// SnapshotSize is the snapshot's size in bytes; Took the drill's duration.
	SnapshotSize int64
	Took         time.Duration
	// Journal is the drill of the config's newest point-in-time window (nil: none).
	Journal *JournalResult
}

// Run drills the backup at key in b in a fresh directory under scratch, which it removes
// after. ids decrypt an encrypted backup. A missing object or a record that cannot be read
// fail the drill; a missing bucket or refused keys are the destination's configuration
// errors, which say nothing of the backup. maxSnapshot bounds the snapshot written to scratch
// (backupformat.Open).
func Run(ctx context.Context, b destination.Bucket, key string, ids []age.Identity, scratch string,
	maxSnapshot int64) (Result, error) {
	start := time.Now()
	meta, size, err := record(ctx, b, key)
	if err != nil {
		return Result{}, err
	}
	dir, err := room(scratch, size)
	if err != nil {
		return Result{}, err
	}
	defer os.RemoveAll(dir)
	peer, client, err := freeURLs()
	if err != nil {
		return Result{}, err
	}
	data := filepath.Join(dir, "data")
	if err := restore(ctx, b, key, meta.SHA256, ids, dir, data, peer, maxSnapshot); err != nil {
		return Result{}, err
	}
	want := meta.KeyCount
	if want == 0 {
		want = -1 // not recorded
	}
	res, err := check(ctx, data, peer, client, meta.Revision, want)
	if err != nil {
		return Result{}, err
	}
	res.SnapshotSize, res.Took = size, time.Since(start)
	return res, nil
}

// record reads the backup's record and the snapshot's size it gives (estimated from the
// stored size when not recorded).
func record(ctx context.Context, b destination.Bucket, key string) (backupformat.Meta, int64, error) {
	info, err := b.Stat(ctx, key)
	if errors.Is(err, destination.ErrObjectNotFound) {
		return backupformat.Meta{}, 0, fmt.Errorf("%w: %w", ErrFailed, err)
	}
	if err != nil {
		return backupformat.Meta{}, 0, err
	}
	meta, err := backupformat.ParseMeta(info.Metadata)
	if err != nil {
		return backupformat.Meta{}, 0, fmt.Errorf("%w: %s: %w", ErrFailed, key, err)
	}
	size := meta.SnapshotSize
	if size <= 0 {
		size = info.Size * 4 // not recorded: assume zstd's usual ratio on etcd data
	}
	return meta, size, nil
}

// room makes a fresh directory under scratch for a drill of a snapshot of size bytes, when
// scratch has room for the snapshot file and the restored data dir, each about that size.
func room(scratch string, size int64) (string, error) {
	if err := os.MkdirAll(scratch, 0o700); err != nil {
		return "", err
	}
	if free, err := freeBytes(scratch); err == nil && free < 2*size+64<<20 {
		return "", fmt.Errorf("%w: %s has %d MiB free, the drill of a %d MiB snapshot needs %d MiB",
			ErrNoRoom, scratch, free>>20, size>>20, (2*size+64<<20)>>20)
	}
	return os.MkdirTemp(scratch, "drill-")
}

// restore fetches the backup into dir, proving it as a restore step does, and restores it
// with etcdutl into data as a one-member cluster whose peer is peer.
func restore(ctx context.Context, b destination.Bucket, key, sha string, ids []age.Identity, dir, data string,
	peer url.URL, maxSnapshot int64) error {
	snap := filepath.Join(dir, "snapshot.db")
	if err := member.Fetch(ctx, b, key, sha, ids, snap, nil, maxSnapshot); err != nil {
		if errors.Is(err, member.ErrCorrupt) || errors.Is(err, member.ErrDecrypt) || errors.Is(err, member.ErrNotFound) {
			return fmt.Errorf("%w: %w", ErrFailed, err)
		}
		return err
	}
	if _, err := member.Restore(member.Config{
		RestoreID: "drill", Snapshot: snap, DataDir: data, Name: "drill",
		PeerURLs: []string{peer.String()}, InitialCluster: "drill=" + peer.String(), Token: "drill",
	}); err != nil {
		return fmt.Errorf("%w: etcdutl restore: %w", ErrFailed, err)
	}
	return os.Remove(snap)
}

// check starts etcd on the restored data dir, loopback only, and compares what it holds with
// the backup's record: a revision at least rev, and want keys at rev (want < 0: not recorded).
func check(ctx context.Context, data string, peer, client url.URL, rev, want int64) (Result, error) {
	cfg := embed.NewConfig()
	cfg.Name, cfg.Dir = "drill", data
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.InitialCluster = "drill=" + peer.String()
	cfg.LogLevel, cfg.Logger = "error", "zap"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return Result{}, fmt.Errorf("%w: etcd does not start on the restored data: %w", ErrFailed, err)
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		return Result{}, fmt.Errorf("%w: etcd on the restored data: %w", ErrFailed, err)
	case <-time.After(time.Minute):
		return Result{}, fmt.Errorf("%w: etcd on the restored data was not ready within a minute", ErrFailed)
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{client.String()}, DialTimeout: 10 * time.Second,
		Logger: zap.NewNop()})
	if err != nil {
		return Result{}, err
	}
	defer cli.Close()
	st, err := cli.Status(ctx, client.String())
	if err != nil {
		return Result{}, fmt.Errorf("%w: status of the restored etcd: %w", ErrFailed, err)
	}
	res := Result{Revision: st.Header.GetRevision()}
	if res.Revision < rev {
		return Result{}, fmt.Errorf("%w: the restored etcd is at revision %d, the backup recorded %d", ErrFailed,
			res.Revision, rev)
	}
	at := []clientv3.OpOption{clientv3.WithFromKey(), clientv3.WithCountOnly()}
	if rev > 0 {
		at = append(at, clientv3.WithRev(rev))
	}
	cnt, err := cli.Get(ctx, "\x00", at...)
	if err != nil {
		return Result{}, fmt.Errorf("%w: count the restored keys at revision %d: %w", ErrFailed, rev, err)
	}
	res.Keys = cnt.Count
	if want >= 0 && res.Keys != want {
		return Result{}, fmt.Errorf("%w: the restored etcd holds %d keys at revision %d, the backup recorded %d",
			ErrFailed, res.Keys, rev, want)
	}
	return res, nil
}

func freeBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * st.Bsize, nil
}

// freeURLs returns two loopback URLs on ports free now.
func freeURLs() (peer, client url.URL, err error) {
	var urls [2]url.URL
	for i := range urls {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return url.URL{}, url.URL{}, err
		}
		urls[i] = url.URL{Scheme: "http", Host: l.Addr().String()}
		l.Close()
	}
	return urls[0], urls[1], nil
}
