package journal_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/journal"
	"github.com/etcd-backup/etcdbackup/pkg/s3test"
)

// A catalog kept between reads sees the segments sealed since, without listing the folder
// again, and what retention deleted once RelistEvery has passed; its windows are always
// those a fresh read finds then.
func TestCatalogFollowsNewSegmentsAndRetention(t *testing.T) {
	const prefix = "c1/cluster-c1/daily/"
	srv := s3test.Run(t, "backups")
	b := srv.Bucket(t, "backups")
	dir := journal.Timeline{Name: journal.InitialTimeline}.Dir(prefix)
	put := func(first, last int64) string {
		t.Helper()
		data, m := sealed(t, revisions(first, last), backupformat.Encryption{})
		key := journal.Key(dir, first, last)
		if err := b.Put(t.Context(), key, bytes.NewReader(data), int64(len(data)),
			destination.PutOptions{Metadata: m.Map()}); err != nil {
			t.Fatal(err)
		}
		return key
	}
	srv.PutBackup(t, "backups", prefix+"daily-2026-12-05T01-00-00.db.zst", []byte("snapshot"), backupformat.Encryption{},
		backupformat.Meta{Revision: 10})
	put(5, 10)
	put(11, 20)
	cat := &journal.Catalog{Bucket: b, Prefix: prefix, RelistEvery: time.Hour}
	same := func(want string) {
		t.Helper()
		got, err := cat.Windows(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		fresh, err := journal.Windows(t.Context(), b, prefix)
		if err != nil {
			t.Fatal(err)
		}
		if journal.Describe(got) != journal.Describe(fresh) || len(got) != 1 ||
			len(got[0].Segments) != len(fresh[0].Segments) || got[0].String() != want {
			t.Fatalf("the catalog's windows %s (%d segments), a fresh read's %s; want %s", journal.Describe(got),
				len(got[0].Segments), journal.Describe(fresh), want)
		}
	}
	at := func(rev int64) string {
		return time.Date(2026, 12, 5, 14, 3, 0, 0, time.UTC).Add(time.Duration(rev) * time.Millisecond).
			Format(time.RFC3339)
	}
	stored, err := b.Stat(t.Context(), prefix+"daily-2026-12-05T01-00-00.db.zst")
	if err != nil {
		t.Fatal(err)
	}
	from := stored.LastModified.UTC().Format(time.RFC3339)
	same("from " + from + " to " + at(20) + " (revisions 10 to 20)")
	tail := put(21, 30)
	same("from " + from + " to " + at(30) + " (revisions 10 to 30)")
	// A deleted segment is seen at the next whole listing.
	if err := b.Delete(t.Context(), tail); err != nil {
		t.Fatal(err)
	}
	cat.RelistEvery = 0
	same("from " + from + " to " + at(20) + " (revisions 10 to 20)")
}
