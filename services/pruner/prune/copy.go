package prune

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/services/pruner/retention"
)

// Copy is what one pass did in the destination a config's destination copies to.
type Copy struct {
	Destination string
	// Copied this pass; InCopy are the objects the copy holds after it.
	Copied, InCopy int
	// Missing are the objects not copied yet, the oldest stored at Oldest; Err why the pass
	// stopped copying (nil: it did not).
	Missing int
	Oldest  time.Time
	Err     error
	// Graced are the copies a config being deleted keeps for the grace period.
	Graced []retention.Object
}

// copyOut copies cfg's objects (backups and journal segments) from its destination to the
// one it copies to (copyTo), each verified there by sha256, oldest first; applies cfg's
// retention to the copies on their own; and deletes the journal segments the destination no
// longer holds (the journal's pruning decided them). A copy destination that fails stops the
// copying, not the pass: its error and what is left go to Copy, which the condition
// BackupsCopied and etcdbackup_copy_lag_seconds show. A config being deleted copies nothing.
func (p *Planner) copyOut(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig, l Listing) (Copy, error) {
	c := Copy{Destination: l.Current.CopyTo}
	prefix := backupname.Prefix(cfg.Spec.Cluster.Name, cfg.Namespace, cfg.Name)
	to, err := p.Destinations.Lookup(ctx, c.Destination)
	if err != nil {
		return c, err
	}
	from, err := p.Destinations.Bucket(ctx, l.Current)
	if err != nil {
		return c, err
	}
	src, err := listAll(ctx, from, prefix)
	if err != nil {
		return c, err
	}
	tb, err := p.Destinations.Bucket(ctx, to)
	var dst map[string]destination.ObjectInfo
	if err == nil {
		dst, err = listAll(ctx, tb, prefix)
	}
	if err != nil {
		if cfg.DeletionTimestamp != nil {
			return c, err // the copies must go (or be kept) before the config does
		}
		c.Err, c.Missing, c.Oldest = err, len(src), oldest(src, nil)
		p.Metrics.copyLag(cfg.Namespace, cfg.Name, c.Oldest, p.now())
		return c, nil
	}
	if cfg.DeletionTimestamp == nil {
		c.copyMissing(ctx, from, tb, src, dst, l.Decision)
	}
	// Segments the destination pruned go from the copy too.
	for key := range dst {
		if _, ok := src[key]; !ok && strings.Contains(key, "/journal/") {
			if err := tb.Delete(ctx, key); err != nil {
				return c, fmt.Errorf("delete journal segment %s from destination %q: %w", key, to.Name, err)
			}
			delete(dst, key)
		}
	}
	if err := p.retainCopies(ctx, cfg, l, to, tb, dst, &c); err != nil {
		return c, err
	}
	if c.Err == nil {
		c.Missing, c.Oldest = 0, time.Time{}
	}
	p.Metrics.copyLag(cfg.Namespace, cfg.Name, c.Oldest, p.now())
	if c.Copied > 0 {
		p.Log.Info("copied", "config", cfg.Namespace+"/"+cfg.Name, "destination", to.Name, "count", c.Copied)
	}
	return c, nil
}

// copyMissing copies the objects of src that dst lacks, oldest first, but those d deletes;
// the first failure stops it, recorded in c with what is left.
func (c *Copy) copyMissing(ctx context.Context, from, to destination.Bucket, src,
	dst map[string]destination.ObjectInfo, d retention.Decision) {
	going := map[string]bool{}
	for _, del := range d.Delete {
		going[del.Key] = true
	}
	missing := make([]destination.ObjectInfo, 0)
	for key, o := range src {
		if _, ok := dst[key]; !ok && !going[key] {
			missing = append(missing, o)
		}
	}
	slices.SortFunc(missing, func(a, b destination.ObjectInfo) int { return a.LastModified.Compare(b.LastModified) })
	for i, o := range missing {
		if _, err := destination.Copy(ctx, from, to, o.Key); err != nil {
			c.Err, c.Missing, c.Oldest = fmt.Errorf("copy %s: %w", o.Key, err), len(missing)-i, o.LastModified
			return
		}
		dst[o.Key] = o
		c.Copied++
	}
}

// retainCopies applies cfg's retention to its backups in the copy destination (dst, to),
// ranked among themselves: what it deletes goes now; what a config being deleted keeps for
// the grace period goes to c.Graced.
func (p *Planner) retainCopies(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig, l Listing,
	to destination.Destination, tb destination.Bucket, dst map[string]destination.ObjectInfo, c *Copy) error {
	var objects []retention.Object
	for key, o := range dst {
		if parsed, ok := retention.ParseKey(cfg.Name, key); ok {
			parsed.Destination, parsed.Size, parsed.Stored = to.Name, o.Size, o.LastModified
			objects = append(objects, parsed)
		}
	}
	d := retention.Plan(cfg, objects, retention.Scope{Current: to.Name, Listed: map[string]bool{to.Name: true},
		Held: l.Held, Now: p.now(), Grace: p.Grace > 0})
	for _, del := range d.Delete {
		if del.Key == "" || del.Destination != to.Name {
			continue
		}
		if err := tb.Delete(ctx, del.Key); err != nil {
			return fmt.Errorf("delete copy %s from destination %q: %w", del.Key, to.Name, err)
		}
		delete(dst, del.Key)
	}
	c.Graced, c.InCopy = d.Graced, len(dst)
	return nil
}

// listAll lists every object under prefix in b, by key.
func listAll(ctx context.Context, b destination.Bucket, prefix string) (map[string]destination.ObjectInfo, error) {
	all := map[string]destination.ObjectInfo{}
	err := b.List(ctx, prefix, func(o destination.ObjectInfo) error {
		all[o.Key] = o
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %s in bucket %s: %w", prefix, b.Name(), err)
	}
	return all, nil
}

// oldest is the earliest LastModified of the objects of src not in dst.
func oldest(src, dst map[string]destination.ObjectInfo) time.Time {
	var t time.Time
	for key, o := range src {
		if _, ok := dst[key]; !ok && (t.IsZero() || o.LastModified.Before(t)) {
			t = o.LastModified
		}
	}
	return t
}

// copyCondition is the condition BackupsCopied for what c found.
func copyCondition(c *Copy, now time.Time) (status bool, reason, message string) {
	if c.Missing == 0 {
		return true, "Copied", fmt.Sprintf("every backup and journal segment is also in destination %q, verified by "+
			"sha256 (%d objects there)", c.Destination, c.InCopy)
	}
	msg := fmt.Sprintf("%d objects not copied to destination %q yet, the oldest stored %s ago", c.Missing,
		c.Destination, now.Sub(c.Oldest).Round(time.Second))
	if c.Err != nil {
		msg += ": " + c.Err.Error()
	}
	return false, "CopyPending", msg
}
