package restore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"

	"filippo.io/age"
	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/journal"
	"github.com/etcd-backup/etcdbackup/services/restorer/member"
)

// ErrTarget: a point-in-time target that is not a time or revision, or outside every
// restorable window. Nothing is touched.
var ErrTarget = errors.New("point-in-time target")

// Target is where a point-in-time restore goes: a revision, or the last revision the journal
// received at or before a time.
type Target struct {
	Revision int64
	Time     time.Time
}

func (t Target) String() string {
	if t.Revision > 0 {
		return "revision " + strconv.FormatInt(t.Revision, 10)
	}
	return t.Time.UTC().Format(time.RFC3339Nano)
}

// ParseTarget reads AnnotationRestoreTo.
func ParseTarget(s string) (Target, error) {
	rev, t, err := kubermaticv1.ParseRestoreTo(s)
	if err != nil {
		return Target{}, fmt.Errorf("%w: %w", ErrTarget, err)
	}
	return Target{Revision: rev, Time: t}, nil
}

// in says whether the target falls in w.
func (t Target) in(w journal.Window) bool {
	if t.Revision > 0 {
		return t.Revision >= w.FromRevision && t.Revision <= w.ToRevision
	}
	return !t.Time.Before(w.From) && !t.Time.After(w.To)
}

// PointInTime is a database built for a target and stored for the restore.
type PointInTime struct {
	// Key is where it is stored; Anchor the full backup it was built from.
	Key, Anchor string
	// Revision is the database's; Hashes how many of the journal's HashKVs it reproduced.
	Revision int64
	Hashes   int
	Segments int
}

// PointInTimeKey is where a restore's database is stored: under the config's prefix, in a
// folder retention does not read, with a name no backup has.
func PointInTimeKey(prefix string, rs *kubermaticv1.EtcdRestore) string {
	return prefix + "pitr/" + rs.Name + "-" + string(rs.UID) + ".pitr" + backupformat.Suffix
}

// pointInTime builds the database of rs's target from the config's newest full backup at or
// before it and the journal after that backup, checks it (its revision is the target's, and
// every HashKV the journal recorded on the way is reproduced), and stores it in b, sealed to
// ids' recipients, for the member pods to restore like a backup. Nothing of the cluster is
// touched; a target outside every window fails with the windows in the message.
func (r *Reconciler) pointInTime(ctx context.Context, rs *kubermaticv1.EtcdRestore, b destination.Bucket,
	ids backupformat.Identities, target Target) (PointInTime, error) {
	config, _ := configOf(rs)
	prefix := backupname.Prefix(rs.Spec.Cluster.Name, rs.Namespace, config)
	windows, err := journal.Windows(ctx, b, prefix)
	if err != nil {
		return PointInTime{}, err
	}
	var w *journal.Window
	for i := range windows {
		if target.in(windows[i]) {
			w = &windows[i]
		}
	}
	if w == nil {
		return PointInTime{}, fmt.Errorf("%w: %s is outside what config %s can be restored to: %s", ErrTarget, target,
			config, journal.Describe(windows))
	}
	anchor := newestAnchor(*w, target)
	dir, err := os.MkdirTemp(r.Opts.WorkDir, "pitr-")
	if err != nil {
		return PointInTime{}, err
	}
	defer os.RemoveAll(dir)
	out := PointInTime{Key: PointInTimeKey(prefix, rs), Anchor: anchor.Key}
	// A point-in-time database built by an earlier attempt is built again: the journal may
	// have grown since, and the object must be this attempt's.
	if err := b.Delete(ctx, out.Key); err != nil {
		return PointInTime{}, err
	}
	replay, err := member.Replay(ctx, b, anchor.Key, ids.List, filepath.Join(dir, "db"), r.Opts.Step.MaxSnapshotSize)
	if err != nil {
		return PointInTime{}, err
	}
	defer replay.Close()
	out.Segments, out.Hashes, err = journal.ReplayWindow(ctx, b, replay, *w, ids.List,
		func(rev *etcdbackupv1.JournalRevision) bool {
			if target.Revision > 0 {
				return rev.GetRevision() > target.Revision
			}
			return rev.GetTime().AsTime().After(target.Time)
		})
	if err != nil {
		return PointInTime{}, err
	}
	if target.Revision > 0 && replay.Revision() != target.Revision {
		return PointInTime{}, fmt.Errorf("%w: the replay reached revision %d, not %d", journal.ErrDiverged,
			replay.Revision(), target.Revision)
	}
	out.Revision = replay.Revision()
	return out, r.storePointInTime(ctx, b, replay, ids, out, rs)
}

// newestAnchor is the newest full backup of w at or before target (w's own anchor at least).
func newestAnchor(w journal.Window, target Target) journal.Backup {
	best := w.Anchor
	for _, bk := range w.Anchors {
		if (target.Revision > 0 && bk.Revision <= target.Revision) ||
			(target.Revision == 0 && !bk.Stored.After(target.Time)) {
			best = bk
		}
	}
	return best
}

// storePointInTime writes the replayed database as a backup (zstd, sealed to the identities'
// recipients when the destination's backups are encrypted) at out.Key.
func (r *Reconciler) storePointInTime(ctx context.Context, b destination.Bucket, replay *journal.Replay,
	ids backupformat.Identities, out PointInTime, rs *kubermaticv1.EtcdRestore) error {
	var seal backupformat.Encryption
	for _, id := range ids.List {
		if x, ok := id.(*age.X25519Identity); ok {
			seal.Recipients = append(seal.Recipients, x.Recipient())
			seal.Fingerprints = append(seal.Fingerprints, backupformat.Fingerprint(x.Recipient().String()))
		}
	}
	f, err := os.CreateTemp(r.Opts.WorkDir, "pitr-*.db.zst")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	w, err := backupformat.NewSealingWriter(f, backupformat.Level, 1, seal)
	if err != nil {
		return err
	}
	size, trailer, err := replay.WriteSnapshot(w)
	if err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	meta := w.Meta()
	meta.SnapshotSize, meta.SnapshotSHA256, meta.Revision = size, trailer, out.Revision
	meta.BackupName, meta.Cluster = rs.Name, rs.Spec.Cluster.Name
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	// Scratch: deleted when the restore ends, so never under the destination's Object Lock.
	return b.Put(ctx, out.Key, f, w.Size(), destination.PutOptions{ContentType: backupformat.ContentType,
		Metadata: meta.Map(), Unlocked: true})
}

// buildPointInTime builds rs's target's database (pointInTime), reading the target from to.
func (r *Reconciler) buildPointInTime(ctx context.Context, rs *kubermaticv1.EtcdRestore, b destination.Bucket,
	ids backupformat.Identities, to string) (*PointInTime, error) {
	target, err := ParseTarget(to)
	if err != nil {
		return nil, err
	}
	r.Log.Info("building point-in-time database", "restore", Lock(rs), "target", target.String())
	p, err := r.pointInTime(ctx, rs, b, ids, target)
	if err != nil {
		return nil, err
	}
	return &p, nil
}

// deletePointInTime deletes the database built for a point-in-time restore, once the restore
// ended: it is the restore's, not a backup.
func (r *Reconciler) deletePointInTime(ctx context.Context, rs *kubermaticv1.EtcdRestore) {
	if rs.Status.Destination != "" {
		r.deletePointInTimeIn(ctx, rs, rs.Status.Destination)
	}
}

// deletePointInTimeIn deletes rs's point-in-time database from destination dest.
func (r *Reconciler) deletePointInTimeIn(ctx context.Context, rs *kubermaticv1.EtcdRestore, dest string) {
	if _, ok := rs.Annotations[kubermaticv1.AnnotationRestoreTo]; !ok {
		return
	}
	key, ok := ObjectKeyOf(rs)
	if !ok {
		return
	}
	d, err := r.Destinations.Lookup(ctx, dest)
	if err == nil {
		var b destination.Bucket
		if b, err = r.Destinations.Bucket(ctx, d); err == nil {
			err = b.Delete(ctx, key)
		}
		// In a versioned (Object Lock) bucket the delete only hid it: the scratch database was
		// written unlocked, its versions go now.
		if v, ok := b.(destination.Versions); ok && err == nil && d.Lock != nil {
			err = v.ListVersions(ctx, key, func(ver destination.Version) error {
				if ver.Key != key {
					return nil
				}
				return v.DeleteVersion(ctx, key, ver.VersionID)
			})
		}
	}
	if err != nil {
		r.Log.Warn("delete the point-in-time database", "restore", Lock(rs), "key", key, "err", err)
	}
}
