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
		s, _ := putSegment(t, b, dir, first, last)
		return s.Key
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

// A fed catalog lists nothing between its whole listings: the segments its journal seals are
// told (Sealed), the backups are listed once a BackupsEvery, and what another writer stored is
// seen at the next whole listing.
func TestAFedCatalogListsNothingItWasTold(t *testing.T) {
	const prefix = "c1/cluster-c1/daily/"
	srv := s3test.Run(t, "backups")
	b := srv.Bucket(t, "backups")
	dir := journal.Timeline{Name: journal.InitialTimeline}.Dir(prefix)
	put := func(first, last int64) (journal.Segment, journal.Meta) {
		t.Helper()
		return putSegment(t, b, dir, first, last)
	}
	srv.PutBackup(t, "backups", prefix+"daily-2026-12-05T01-00-00.db.zst", []byte("snapshot"), backupformat.Encryption{},
		backupformat.Meta{Revision: 10})
	put(5, 10)
	put(11, 20)
	cat := &journal.Catalog{Bucket: b, Prefix: prefix, RelistEvery: time.Hour, BackupsEvery: time.Hour, Fed: true}
	to := func(want int64) {
		t.Helper()
		ws, err := cat.Windows(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if len(ws) != 1 || ws[0].ToRevision != want {
			t.Fatalf("windows %s, want one to revision %d", journal.Describe(ws), want)
		}
	}
	to(20)
	if rev, err := cat.NewestBackupRevision(t.Context(), journal.Timeline{Name: journal.InitialTimeline}); err != nil ||
		rev != 10 {
		t.Fatalf("newest backup revision %d (%v), want 10", rev, err)
	}
	lists, heads := srv.Lists(), srv.Heads()
	if lists == 0 {
		t.Fatal("the server counted no listing")
	}
	seg, m := put(21, 30)
	cat.Sealed(dir, seg, m)
	to(30)
	put(31, 40) // by another writer: not told
	to(30)
	srv.PutBackup(t, "backups", prefix+"daily-2026-12-05T02-00-00.db.zst", []byte("snapshot"), backupformat.Encryption{},
		backupformat.Meta{Revision: 35})
	if rev, err := cat.NewestBackupRevision(t.Context(), journal.Timeline{Name: journal.InitialTimeline}); err != nil ||
		rev != 10 {
		t.Fatalf("newest backup revision %d (%v) before the backups are listed again, want 10", rev, err)
	}
	if srv.Lists() != lists || srv.Heads() != heads {
		t.Fatalf("%d listings and %d HEADs between whole listings, want none", srv.Lists()-lists, srv.Heads()-heads)
	}
	cat.BackupsEvery = 0
	if rev, err := cat.NewestBackupRevision(t.Context(), journal.Timeline{Name: journal.InitialTimeline}); err != nil ||
		rev != 35 {
		t.Fatalf("newest backup revision %d (%v) once listed again, want 35", rev, err)
	}
	cat.RelistEvery = 0
	to(40)
}

// A backup the config's status lists as stored, which the catalog's last listing did not hold,
// has the backups listed again at the next read, however recent the listing; a key the bucket
// does not hold does so once while it is told, and a key already listed never.
func TestABackupToldStoredIsListedAtOnce(t *testing.T) {
	const prefix = "c1/cluster-c1/daily/"
	srv := s3test.Run(t, "backups")
	b := srv.Bucket(t, "backups")
	first := prefix + "daily-2026-12-05T01-00-00.db.zst"
	srv.PutBackup(t, "backups", first, []byte("snapshot"), backupformat.Encryption{}, backupformat.Meta{Revision: 10})
	cat := &journal.Catalog{Bucket: b, Prefix: prefix, RelistEvery: time.Hour, BackupsEvery: time.Hour, Fed: true}
	tl := journal.Timeline{Name: journal.InitialTimeline}
	newest := func(want, lists int64) {
		t.Helper()
		before := srv.Lists()
		if rev, err := cat.NewestBackupRevision(t.Context(), tl); err != nil || rev != want {
			t.Fatalf("newest backup revision %d (%v), want %d", rev, err, want)
		}
		if got := srv.Lists() - before; got != lists {
			t.Fatalf("%d listings for the read, want %d", got, lists)
		}
	}
	newest(10, 1)
	second := prefix + "daily-2026-12-05T02-00-00.db.zst"
	srv.PutBackup(t, "backups", second, []byte("snapshot"), backupformat.Encryption{}, backupformat.Meta{Revision: 35})
	cat.Stored(first)
	newest(10, 0)
	cat.Stored(first, second)
	newest(35, 1)
	cat.Stored(first, second, prefix+"daily-2026-12-05T03-00-00.db.zst", "other/prefix/daily.db.zst")
	newest(35, 1)
	cat.Stored(first, second, prefix+"daily-2026-12-05T03-00-00.db.zst")
	newest(35, 0)
	// What the catalog remembers is what it was last told: a key told again after a pass
	// without it lists once more.
	cat.Stored(first, second)
	newest(35, 0)
	cat.Stored(first, second, prefix+"daily-2026-12-05T03-00-00.db.zst")
	newest(35, 1)
}

// putSegment stores a segment of revisions first to last in the timeline folder dir of b.
func putSegment(t *testing.T, b destination.Bucket, dir string, first, last int64) (journal.Segment, journal.Meta) {
	t.Helper()
	data, m := sealed(t, revisions(first, last), backupformat.Encryption{})
	key := journal.Key(dir, first, last)
	if err := b.Put(t.Context(), key, bytes.NewReader(data), int64(len(data)),
		destination.PutOptions{Metadata: m.Map()}); err != nil {
		t.Fatal(err)
	}
	return journal.Segment{Key: key, First: first, Last: last, Size: int64(len(data))}, m
}
