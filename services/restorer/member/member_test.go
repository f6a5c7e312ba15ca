package member

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/progress"

	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/etcdtest"
	"github.com/etcd-backup/etcdbackup/pkg/s3test"
	"github.com/klauspost/compress/zstd"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
)

// backupOf snapshots a fresh etcd holding n keys and returns the raw snapshot stream.
func backupOf(t *testing.T, n int) []byte {
	t.Helper()
	e := etcdtest.Start(t)
	cli := e.Client(t)
	for i := range n {
		if _, err := cli.Put(context.Background(), fmt.Sprintf("/registry/k%03d", i), fmt.Sprint("v", i)); err != nil {
			t.Fatal(err)
		}
	}
	return e.Snapshot(t)
}

func compress(t *testing.T, raw []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc, _ := zstd.NewWriter(&buf)
	_, _ = enc.Write(raw)
	_ = enc.Close()
	return buf.Bytes()
}

func store(t *testing.T, s3 *s3test.Server, key string, body []byte, sha string) {
	t.Helper()
	meta := backupformat.Meta{SHA256: sha}.Map()
	if err := s3.Bucket(t, "backups").Put(t.Context(), key, bytes.NewReader(body), int64(len(body)),
		destination.PutOptions{Metadata: meta}); err != nil {
		t.Fatal(err)
	}
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestFetchAndRestoreOnce(t *testing.T) {
	ctx := context.Background()
	s3 := s3test.Run(t, "backups")
	obj := compress(t, backupOf(t, 50))
	store(t, s3, "c/ns/cfg/cfg-2021-03-02T15-24-00.db.zst", obj, sum(obj))
	dir := t.TempDir()
	snap := filepath.Join(dir, "snapshot.db")
	v, err := Verify(ctx, s3.Bucket(t, "backups"), "c/ns/cfg/cfg-2021-03-02T15-24-00.db.zst", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	if v.Size != int64(len(obj)) || v.SHA256 != sum(obj) || v.SnapshotSize%512 != 32 {
		t.Fatalf("verified %+v; stored %d bytes with sha256 %s", v, len(obj), sum(obj))
	}
	var p Progress
	if err := Fetch(ctx, s3.Bucket(t, "backups"), "c/ns/cfg/cfg-2021-03-02T15-24-00.db.zst", v.SHA256, nil, snap,
		&p, 0); err != nil {
		t.Fatal(err)
	}
	// The progress counts the stored bytes downloaded against the object's size.
	if done, total := p.Bytes(); done != int64(len(obj)) || total != int64(len(obj)) {
		t.Fatalf("progress after the fetch: %d of %d bytes; the object has %d", done, total, len(obj))
	}
	peer := freePeer(t)
	cfg := Config{
		RestoreID: "restore-1", Snapshot: snap, DataDir: filepath.Join(dir, "data"),
		Name: "etcd-0", PeerURLs: []string{peer.String()}, InitialCluster: "etcd-0=" + peer.String(), Token: "cluster-x",
	}
	// What a step killed in the middle of etcdutl leaves behind is cleared, not refused.
	if err := os.MkdirAll(filepath.Join(ScratchDir(cfg.DataDir), "member", "snap"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ScratchDir(cfg.DataDir), "member", "snap", "db"), []byte("half a db"),
		0o600); err != nil {
		t.Fatal(err)
	}
	if restored, err := Restore(cfg); err != nil || !restored {
		t.Fatalf("restore: %v %v", restored, err)
	}
	if _, err := os.Stat(ScratchDir(cfg.DataDir)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("scratch dir left after the restore: %v", err)
	}
	// A restart within the same restore does not restore again; another restore refuses.
	if restored, err := Restore(cfg); err != nil || restored {
		t.Fatalf("second run of the same restore: restored=%v err=%v", restored, err)
	}
	other := cfg
	other.RestoreID = "restore-2"
	if _, err := Restore(other); err == nil {
		t.Fatal("another restore overwrote a restored data dir")
	}
	e, err := etcdtest.StartIn(cfg.DataDir, "etcd-0", func(c *embed.Config) {
		c.ListenPeerUrls, c.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
		c.InitialCluster = cfg.InitialCluster
	})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	resp, err := e.Client(t).Get(ctx, "/registry/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != 50 {
		t.Fatalf("restored etcd holds %d keys, want 50", resp.Count)
	}
}

func TestFetchRefusesBadBackups(t *testing.T) {
	ctx := context.Background()
	raw := backupOf(t, 10)
	good := compress(t, raw)
	flipped := bytes.Clone(good)
	flipped[len(flipped)/2] ^= 1
	badSnapshot := bytes.Clone(raw)
	badSnapshot[100] ^= 1 // etcd's trailing hash no longer matches
	recompressed := compress(t, badSnapshot)
	tests := []struct {
		name    string
		body    []byte
		sha     string
		corrupt bool
	}{
		{"one byte flipped in the bucket", flipped, sum(good), true},
		{"no checksum to check against", good, "", true},
		{"snapshot fails etcd's hash check", recompressed, sum(recompressed), true},
		{"not zstd at all", []byte("not a backup"), sum([]byte("not a backup")), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s3 := s3test.Run(t, "backups")
			store(t, s3, "key.db.zst", tc.body, tc.sha)
			dst := filepath.Join(t.TempDir(), "snapshot.db")
			err := Fetch(t.Context(), s3.Bucket(t, "backups"), "key.db.zst", sum(good), nil, dst, nil, 0)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("err = %v, want ErrCorrupt", err)
			}
			if _, statErr := os.Stat(dst); !errors.Is(statErr, os.ErrNotExist) {
				t.Fatalf("a refused backup left %s behind", dst)
			}
			_, err = Verify(t.Context(), s3.Bucket(t, "backups"), "key.db.zst", nil, 0)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Verify: err = %v, want ErrCorrupt", err)
			}
			// Bytes changed in the bucket are reported as that, not as what zstd tripped on.
			if tc.sha != "" && tc.sha != sum(tc.body) && !strings.Contains(err.Error(), "sha256") {
				t.Fatalf("Verify of changed bytes: %v", err)
			}
		})
	}
	t.Run("missing backup is not called corrupt", func(t *testing.T) {
		s3 := s3test.Run(t, "backups")
		err := Fetch(ctx, s3.Bucket(t, "backups"), "nope.db.zst", sum(good), nil, filepath.Join(t.TempDir(), "s.db"), nil, 0)
		if !errors.Is(err, ErrNotFound) || errors.Is(err, ErrCorrupt) {
			t.Fatalf("err = %v", err)
		}
		if _, err := Verify(ctx, s3.Bucket(t, "backups"), "nope.db.zst", nil, 0); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Verify: err = %v", err)
		}
	})
}

// freePeer returns a peer URL on a free loopback port.
func freePeer(t *testing.T) url.URL {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return url.URL{Scheme: "http", Host: l.Addr().String()}
}

// The restore step takes only the object the restorer verified: a backup replaced in the
// bucket after verification, whole and consistent with its own metadata, is refused.
func TestFetchRefusesAnObjectOtherThanTheVerified(t *testing.T) {
	ctx := context.Background()
	s3 := s3test.Run(t, "backups")
	verified := compress(t, backupOf(t, 50))
	other := compress(t, backupOf(t, 60))
	store(t, s3, "key.db.zst", other, sum(other)) // replaced since verification
	dst := filepath.Join(t.TempDir(), "snapshot.db")
	err := Fetch(ctx, s3.Bucket(t, "backups"), "key.db.zst", sum(verified), nil, dst, nil, 0)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "not the backup the restorer verified") {
		t.Fatalf("Fetch of a replaced object = %v, want ErrCorrupt saying it is not the verified backup", err)
	}
	if _, statErr := os.Stat(dst); !errors.Is(statErr, os.ErrNotExist) {
		t.Fatalf("a refused backup left %s behind", dst)
	}
	if err := Fetch(ctx, s3.Bucket(t, "backups"), "key.db.zst", sum(other), nil, dst, nil, 0); err != nil {
		t.Fatalf("Fetch of the object with its own digest: %v", err)
	}
	if err := Fetch(ctx, s3.Bucket(t, "backups"), "key.db.zst", "", nil, dst, nil, 0); err == nil {
		t.Fatal("Fetch without a verified digest succeeded")
	}
}

func TestLastProgress(t *testing.T) {
	for _, tc := range []struct {
		name, tail  string
		done, total int64
		ok          bool
	}{
		{"the last of several", `{"msg":"fetching","bytes_done":10,"bytes_total":100}
{"msg":"fetching","bytes_done":70,"bytes_total":100}
`, 70, 100, true},
		{"a later line without progress", `{"msg":"fetched","bytes_done":100,"bytes_total":100}
{"msg":"member restored","restored":true}`, 100, 100, true},
		{"a first line cut by the tail", `g","bytes_done":5,"bytes_total":9}
{"msg":"fetching","bytes_done":6,"bytes_total":9}`, 6, 9, true},
		{"only a cut line", `ching","bytes_done":5,"bytes_total":9}`, 0, 0, false},
		{"no progress yet", `{"msg":"data dir already restored by this restore"}`, 0, 0, false},
		{"not JSON", "restore-step: --sha256 is required\n", 0, 0, false},
		{"a negative count", `{"bytes_done":-1,"bytes_total":9}`, 0, 0, false},
	} {
		done, total, ok := LastProgress([]byte(tc.tail))
		if done != tc.done || total != tc.total || ok != tc.ok {
			t.Errorf("%s: LastProgress = %d, %d, %v; want %d, %d, %v", tc.name, done, total, ok, tc.done, tc.total, tc.ok)
		}
	}
}

// An object whose metadata records no snapshot size (stored by hand, or by an old version)
// is decompressed no further than --max-snapshot-size onto a member's disk: past it the fetch
// fails as corrupt and leaves nothing behind. Within it, the backup restores as before.
func TestFetchOfAnUnsizedBackupIsBounded(t *testing.T) {
	ctx := context.Background()
	s3 := s3test.Run(t, "backups")
	raw := backupOf(t, 50)
	stored := compress(t, raw)
	store(t, s3, "key.db.zst", stored, sum(stored)) // no Snapshot-Size
	dst := filepath.Join(t.TempDir(), "snapshot.db")
	err := Fetch(ctx, s3.Bucket(t, "backups"), "key.db.zst", sum(stored), nil, dst, nil, int64(len(raw))/2)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "--max-snapshot-size") {
		t.Fatalf("Fetch beyond the bound = %v, want ErrCorrupt naming --max-snapshot-size", err)
	}
	if _, statErr := os.Stat(dst); !errors.Is(statErr, os.ErrNotExist) {
		t.Fatalf("a refused backup left %s behind", dst)
	}
	if err := Fetch(ctx, s3.Bucket(t, "backups"), "key.db.zst", sum(stored), nil, dst, nil,
		int64(len(raw))); err != nil {
		t.Fatalf("Fetch within the bound: %v", err)
	}
}

// A download from an endpoint that answers nothing (blackholed) fails within DownloadIdle,
// naming the stall, so the restore step retries instead of hanging.
func TestDownloadFromAStalledEndpointFailsWithinTheIdleBound(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			go func() { _, _ = io.Copy(io.Discard, c) }()
		}
	}()
	b, err := destination.OpenS3(l.Addr().String(), false, "k", "s", "backups")
	if err != nil {
		t.Fatal(err)
	}
	idle := DownloadIdle
	DownloadIdle = 300 * time.Millisecond
	defer func() { DownloadIdle = idle }()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	_, err = Verify(ctx, b, "key.db.zst", nil, 0)
	if !errors.Is(err, progress.ErrIdle) || time.Since(start) > 10*time.Second {
		t.Fatalf("Verify from a stalled endpoint = %v after %s, want the idle bound's error", err, time.Since(start))
	}
}
