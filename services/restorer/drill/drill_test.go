package drill

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/etcdtest"
	"github.com/etcd-backup/etcdbackup/pkg/s3test"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// snapshotOf returns a real etcd snapshot of n keys, the revision they were written at, and
// the key count there, as the snapshotter records them.
func snapshotOf(t *testing.T, n int) (raw []byte, rev, keys int64) {
	t.Helper()
	ctx := context.Background()
	e := etcdtest.Start(t)
	cli := e.Client(t)
	for i := range n {
		if _, err := cli.Put(ctx, fmt.Sprintf("/registry/k%03d", i), strings.Repeat("v", 100)); err != nil {
			t.Fatal(err)
		}
	}
	cnt, err := cli.Get(ctx, "\x00", clientv3.WithFromKey(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	raw = e.Snapshot(t)
	return raw, cnt.Header.Revision, cnt.Count
}

// store compresses raw and stores it at key with the metadata the uploader writes, its
// sha256 computed from what is stored.
func store(t *testing.T, s3 *s3test.Server, key string, raw []byte, rev, keys int64) {
	t.Helper()
	s3.PutBackup(t, "backups", key, raw, backupformat.Encryption{}, backupformat.Meta{SnapshotSize: int64(len(raw)),
		Revision: rev, KeyCount: keys})
}

func TestDrillPassesOnAGoodBackup(t *testing.T) {
	raw, rev, keys := snapshotOf(t, 120)
	s3 := s3test.Run(t, "backups")
	store(t, s3, "good.db.zst", raw, rev, keys)
	scratch := t.TempDir()
	res, err := Run(context.Background(), s3.Bucket(t, "backups"), "good.db.zst", nil, scratch, 0)
	if err != nil {
		t.Fatal(err)
	}
	if res.Keys != keys || res.Revision < rev || res.SnapshotSize != int64(len(raw)) {
		t.Fatalf("drill %+v; want %d keys, revision at least %d, snapshot %d bytes", res, keys, rev, len(raw))
	}
	if left, _ := os.ReadDir(scratch); len(left) != 0 {
		t.Fatalf("the drill left %d entries in its scratch dir", len(left))
	}
}

// Stored bytes changed after upload, with the object's sha256 metadata rewritten to match:
// the byte check passes, zstd decodes, and etcd's own trailing hash fails the drill. A
// backup whose restored key count differs from its record fails too.
func TestDrillFailsOnAChangedBackup(t *testing.T) {
	raw, rev, keys := snapshotOf(t, 120)
	s3 := s3test.Run(t, "backups")
	changed := append([]byte(nil), raw...)
	i := bytes.Index(changed, []byte("/registry/k050"))
	if i < 0 {
		t.Fatal("no key in the snapshot to change")
	}
	changed[i+len("/registry/k05")] = '9' // k050 becomes k059's twin: a plausible edit
	store(t, s3, "changed.db.zst", changed, rev, keys)
	_, err := Run(context.Background(), s3.Bucket(t, "backups"), "changed.db.zst", nil, t.TempDir(), 0)
	if !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), "trailer") && !strings.Contains(err.Error(), "hash") {
		t.Fatalf("drill of changed bytes with matching sha256 metadata: %v, want it failed on etcd's hash", err)
	}

	store(t, s3, "miscounted.db.zst", raw, rev, keys+7)
	if _, err := Run(context.Background(), s3.Bucket(t, "backups"), "miscounted.db.zst", nil,
		t.TempDir(), 0); !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), "keys") {
		t.Fatalf("drill of a backup recorded with other key count: %v, want it failed on the count", err)
	}
}
