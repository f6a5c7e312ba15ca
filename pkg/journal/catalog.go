package journal

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"filippo.io/age"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"

	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
)

// Segment is a segment as the bucket lists it: its key and the revisions its key names.
type Segment struct {
	Key         string
	First, Last int64
	// Size is the object's size in bytes.
	Size int64
}

// Segments lists the segments in a timeline's folder dir (Timeline.Dir), in key order
// (revision order). Other objects there are ignored.
func Segments(ctx context.Context, b destination.Bucket, dir string) ([]Segment, error) {
	return SegmentsAfter(ctx, b, dir, "")
}

// SegmentsAfter is Segments of the keys after key after ("": all): what a listing that saw up
// to after has not seen.
func SegmentsAfter(ctx context.Context, b destination.Bucket, dir, after string) ([]Segment, error) {
	var out []Segment
	err := b.ListWith(ctx, dir, destination.ListOptions{StartAfter: after}, func(o destination.ObjectInfo) error {
		if first, last, ok := ParseKey(dir, o.Key); ok {
			out = append(out, Segment{Key: o.Key, First: first, Last: last, Size: o.Size})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list journal segments under %s: %w", dir, err)
	}
	return out, nil
}

// LastSealed is the last revision a segment in the timeline folder dir holds (0: none).
func LastSealed(ctx context.Context, b destination.Bucket, dir string) (int64, error) {
	segs, err := Segments(ctx, b, dir)
	if err != nil {
		return 0, err
	}
	last := int64(0)
	for _, s := range segs {
		last = max(last, s.Last)
	}
	return last, nil
}

// ChainBytes is the size of the segments in the timeline folder dir after revision anchor: the
// chain a restore to its end replays from the full backup at anchor.
func ChainBytes(ctx context.Context, b destination.Bucket, dir string, anchor int64) (int64, error) {
	segs, err := Segments(ctx, b, dir)
	if err != nil {
		return 0, err
	}
	n := int64(0)
	for _, s := range segs {
		if s.First > anchor {
			n += s.Size
		}
	}
	return n, nil
}

// Tail follows the last revision sealed in a timeline folder, listing only the keys after the
// last segment it saw: what watching a journal costs one short listing however long it is.
type Tail struct {
	Bucket destination.Bucket
	Dir    string
	last   Segment
}

// Last is the last revision a segment in the folder holds (0: none yet).
func (t *Tail) Last(ctx context.Context) (int64, error) {
	added, err := SegmentsAfter(ctx, t.Bucket, t.Dir, t.last.Key)
	if err != nil {
		return 0, err
	}
	for _, s := range added {
		if s.Last > t.last.Last {
			t.last = s
		}
	}
	return t.last.Last, nil
}

// Backup is a full backup of the config, as its object records it.
type Backup struct {
	Key string
	// Revision is the revision the snapshot holds at least (its metadata's).
	Revision int64
	// Scheduled is its slot (from its key), Stored when it was stored: its snapshot was taken
	// between the two.
	Scheduled, Stored time.Time
}

// Backups lists the config's full backups directly under prefix, in key order (the order of
// their scheduled times), with their recorded revisions; an object whose record has none is
// left out (it anchors no chain).
func Backups(ctx context.Context, b destination.Bucket, prefix string) ([]Backup, error) {
	return (&Catalog{Bucket: b, Prefix: prefix}).Backups(ctx)
}

// NewestBackupRevision is the recorded revision of the config's newest full backup of timeline
// tl, the newest timeline (0: none).
func NewestBackupRevision(ctx context.Context, b destination.Bucket, prefix string, tl Timeline) (int64, error) {
	return (&Catalog{Bucket: b, Prefix: prefix}).NewestBackupRevision(ctx, tl)
}

// scheduledLayout is a backup key's time (backupname.ObjectKey: the name's time, ':' as '-').
const scheduledLayout = "2006-01-02T15-04-05"

// scheduledOf reads the slot from a backup's key ("<prefix><config>-2021-03-02T15-24-00.db.zst").
func scheduledOf(key string) time.Time {
	base := strings.TrimSuffix(key, backupformat.Suffix)
	if len(base) < len(scheduledLayout) {
		return time.Time{}
	}
	t, _ := time.Parse(scheduledLayout, base[len(base)-len(scheduledLayout):])
	return t
}

func backupKeys(ctx context.Context, b destination.Bucket, prefix string) ([]string, error) {
	var keys []string
	// One level: the backups, not the journal's folder of segments under the same prefix.
	err := b.ListWith(ctx, prefix, destination.ListOptions{Shallow: true}, func(o destination.ObjectInfo) error {
		rest := strings.TrimPrefix(o.Key, prefix)
		if strings.HasSuffix(rest, backupformat.Suffix) && !strings.Contains(rest, "/") {
			keys = append(keys, o.Key)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list backups under %s: %w", prefix, err)
	}
	return keys, nil
}

// record is a backup as its metadata records it (Revision 0: none, or a record it cannot read).
func record(ctx context.Context, b destination.Bucket, key string) (Backup, error) {
	st, err := b.Stat(ctx, key)
	if err != nil {
		return Backup{}, fmt.Errorf("stat backup %s: %w", key, err)
	}
	bk := Backup{Key: key, Scheduled: scheduledOf(key), Stored: st.LastModified}
	if m, err := backupformat.ParseMeta(st.Metadata); err == nil {
		bk.Revision = m.Revision
	}
	return bk, nil
}

// Fetch reads the segment at key and proves it against its record (Read).
func Fetch(ctx context.Context, b destination.Bucket, key string,
	identities []age.Identity) (Meta, []*etcdbackupv1.JournalRevision, error) {
	rc, info, err := b.Get(ctx, key)
	if err != nil {
		return Meta{}, nil, fmt.Errorf("get segment %s: %w", key, err)
	}
	defer rc.Close()
	m, err := ParseMeta(info.Metadata)
	if err != nil {
		return Meta{}, nil, fmt.Errorf("segment %s: %w", key, err)
	}
	dir := key[:strings.LastIndex(key, "/")+1]
	if first, last, ok := ParseKey(dir, key); !ok || first != m.First || last != m.Last {
		return Meta{}, nil, fmt.Errorf("%w: segment %s records revisions %d to %d", ErrCorrupt, key, m.First, m.Last)
	}
	if info.Size > MaxSegmentBytes {
		return Meta{}, nil, fmt.Errorf("%w: segment %s is %d bytes, more than %d", ErrCorrupt, key, info.Size,
			MaxSegmentBytes)
	}
	stored, err := io.ReadAll(io.LimitReader(rc, MaxSegmentBytes+1))
	if err != nil {
		return Meta{}, nil, fmt.Errorf("read segment %s: %w", key, err)
	}
	revs, err := Read(stored, m, identities)
	if err != nil {
		return Meta{}, nil, fmt.Errorf("segment %s: %w", key, err)
	}
	return m, revs, nil
}
