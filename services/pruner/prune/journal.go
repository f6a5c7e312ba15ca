package prune

import (
	"context"
	"fmt"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/journal"
)

// pruneJournal deletes the journal segments of cfg that no kept full backup can anchor any
// more: every segment of a config being deleted; of a live one, in each timeline but the
// newest, every segment when none of the timeline's full backups is kept, and in every
// timeline the segments that end at or before its oldest kept full backup. The newest
// timeline's segments stay while it has no full backup yet: the journal asked for one.
// Segments go with the backups they follow, never before: kept are the backups retention
// does not delete in this pass. It returns how many it deleted.
func (p *Planner) pruneJournal(ctx context.Context, cfg *kubermaticv1.EtcdBackupConfig, l Listing) (int, error) {
	b, err := p.Destinations.Bucket(ctx, l.Current)
	if err != nil {
		return 0, err
	}
	prefix := backupname.Prefix(cfg.Spec.Cluster.Name, cfg.Namespace, cfg.Name)
	timelines, err := journal.Timelines(ctx, b, prefix)
	if err != nil || len(timelines) == 0 {
		return 0, err
	}
	deleted := 0
	del := func(segs []journal.Segment) error {
		for _, s := range segs {
			if err := b.Delete(ctx, s.Key); err != nil {
				return fmt.Errorf("delete journal segment %s: %w", s.Key, err)
			}
			deleted++
		}
		return nil
	}
	kept, err := p.keptBackups(ctx, b, prefix, l)
	if err != nil {
		return 0, err
	}
	for i, tl := range timelines {
		segs, err := journal.Segments(ctx, b, tl.Dir(prefix))
		if err != nil {
			return deleted, err
		}
		if cfg.DeletionTimestamp != nil {
			if err := del(segs); err != nil {
				return deleted, err
			}
			continue
		}
		var next *journal.Timeline
		if i+1 < len(timelines) {
			next = &timelines[i+1]
		}
		oldest := int64(-1)
		for _, bk := range kept {
			if tl.Holds(bk, next) && (oldest < 0 || bk.Revision < oldest) {
				oldest = bk.Revision
			}
		}
		var gone []journal.Segment
		for _, s := range segs {
			if (oldest < 0 && next != nil) || (oldest >= 0 && s.Last <= oldest) {
				gone = append(gone, s)
			}
		}
		if err := del(gone); err != nil {
			return deleted, err
		}
	}
	return deleted, nil
}

// keptBackups are the backups of cfg in its current destination that this pass keeps, with
// their recorded revisions.
func (p *Planner) keptBackups(ctx context.Context, b destination.Bucket, prefix string,
	l Listing) ([]journal.Backup, error) {
	all, err := journal.Backups(ctx, b, prefix)
	if err != nil {
		return nil, err
	}
	going := map[string]bool{}
	for _, d := range l.Decision.Delete {
		if d.Destination == l.Current.Name {
			going[d.Key] = true
		}
	}
	kept := all[:0]
	for _, bk := range all {
		if !going[bk.Key] {
			kept = append(kept, bk)
		}
	}
	return kept, nil
}
