package prune

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/destination"
)

// lockedBucket is a versioned bucket under Object Lock, as S3 keeps one: DeleteVersion of a
// version still retained is refused.
type lockedBucket struct {
	lock     destination.Lock
	now      time.Time
	versions []destination.Version
	// extended are versions retained longer than lock says (a retention someone extended).
	extended map[string]bool
}

func (b *lockedBucket) Lock() destination.Lock { return b.lock }

func (b *lockedBucket) ListVersions(_ context.Context, _ string, f func(destination.Version) error) error {
	for _, v := range b.versions {
		if err := f(v); err != nil {
			return err
		}
	}
	return nil
}

func (b *lockedBucket) DeleteVersion(_ context.Context, key, id string) error {
	i := slices.IndexFunc(b.versions, func(v destination.Version) bool { return v.Key == key && v.VersionID == id })
	if i < 0 {
		return nil
	}
	v := b.versions[i]
	if !v.DeleteMarker && (b.lock.Until(v.LastModified).After(b.now) || b.extended[id]) {
		return fmt.Errorf("%w: %s", destination.ErrLocked, id)
	}
	b.versions = slices.Delete(b.versions, i, i+1)
	return nil
}

// The sweep destroys exactly the hidden versions whose lock ran out (and then their delete
// markers); a live object, a version still retained, or one whose retention was extended
// stays, and the newest live object's lock end is reported.
func TestSweepDestroysOnlyWhatTheLockLetsGo(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	b := &lockedBucket{lock: destination.Lock{Mode: destination.LockCompliance, Days: 7}, now: now,
		extended: map[string]bool{"c1": true},
		versions: []destination.Version{
			// a: deleted 2 days ago, written 10 days ago: past its lock
			{Key: "p/a", VersionID: "am", LastModified: now.Add(-2 * day), DeleteMarker: true, Latest: true},
			{Key: "p/a", VersionID: "a1", LastModified: now.Add(-10 * day)},
			// b: deleted, written 3 days ago: retained 4 more days
			{Key: "p/b", VersionID: "bm", LastModified: now.Add(-day), DeleteMarker: true, Latest: true},
			{Key: "p/b", VersionID: "b1", LastModified: now.Add(-3 * day)},
			// c: deleted, past this destination's lock but extended by hand
			{Key: "p/c", VersionID: "cm", LastModified: now.Add(-day), DeleteMarker: true, Latest: true},
			{Key: "p/c", VersionID: "c1", LastModified: now.Add(-30 * day)},
			// d: live, written twice: the old version is past its lock, the latest stays
			{Key: "p/d", VersionID: "d2", LastModified: now.Add(-day), Latest: true},
			{Key: "p/d", VersionID: "d1", LastModified: now.Add(-9 * day)},
		}}
	swept, retained, newest, err := sweep(context.Background(), b, "p/", now)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, v := range b.versions {
		left = append(left, v.VersionID)
	}
	if want := []string{"bm", "b1", "cm", "c1", "d2"}; !slices.Equal(left, want) {
		t.Errorf("left %v, want %v", left, want)
	}
	if swept != 3 || retained != 2 {
		t.Errorf("swept %d, retained %d; want 3 (a1, its marker, d1) and 2 (b1, c1)", swept, retained)
	}
	if want := now.Add(-day).Add(7 * day); !newest.Equal(want) {
		t.Errorf("newest live object locked until %s, want %s", newest, want)
	}
}
