package restore

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/etcdtest"
	"github.com/etcd-backup/etcdbackup/pkg/journal"
	"github.com/etcd-backup/etcdbackup/pkg/journal/journaltest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// A point-in-time restore builds its database before it checks the rest of what it needs;
// one refused after the build (no StatefulSet to rebuild) leaves no database in the bucket.
func TestPointInTimeRefusedAfterTheBuildLeavesNothing(t *testing.T) {
	ctx := context.Background()
	put := func(from, to int) func(c *clientv3.Client) {
		return func(c *clientv3.Client) {
			for i := from; i < to; i++ {
				if _, err := c.Put(ctx, fmt.Sprintf("/registry/k%d", i%10), strconv.Itoa(i)); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	rec := journaltest.Record(t, etcdtest.Start(t), put(0, 20), put(20, 60))
	f := newPhaseFixture(t)
	f.sts = nil
	config, _ := ConfigOf(f.rs.Spec.BackupName)
	prefix := backupname.Prefix("a", f.rs.Namespace, config)
	f.s3.PutBackup(t, "backups", backupname.ObjectKey("a", f.rs.Namespace, config, f.rs.Spec.BackupName),
		rec.Snapshot, backupformat.Encryption{}, backupformat.Meta{SnapshotSize: int64(len(rec.Snapshot)),
			Revision: rec.Anchor})
	rec.Seal(t, f.s3.Bucket(t, "backups"), journal.Timeline{Name: journal.InitialTimeline}.Dir(prefix), rec.Hash)
	f.rs.Annotations = map[string]string{kubermaticv1.AnnotationRestoreTo: "revision:" + strconv.FormatInt(rec.Last-5,
		10)}
	r, _ := f.build()
	reconcile(t, r, f.rs)
	if o := observe(t, r, f.rs); o.phase != kubermaticv1.RestorePhaseFailed || !strings.Contains(o.message,
		"no StatefulSet") {
		t.Fatalf("restore %s: %s; want Failed, no StatefulSet", o.phase, o.message)
	}
	var left []string
	err := f.s3.Bucket(t, "backups").List(ctx, prefix+"pitr/", func(o destination.ObjectInfo) error {
		left = append(left, o.Key)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Fatalf("a refused point-in-time restore left %v in the bucket", left)
	}
}
