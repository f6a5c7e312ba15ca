package journal

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/destination"
)

// Timeline is one history of a cluster's etcd. A restore rebuilds etcd at an earlier revision,
// after which the same revisions are made again with other changes: each restore starts a
// timeline, named by the time it ended (the restorer writes it on the Cluster, annotation
// etcdbackup.k8c.io/etcd-timeline, which a tenant cannot write), and the journal keeps each
// timeline's segments in a folder of their own. The first timeline is InitialTimeline.
type Timeline struct {
	Name  string
	Start time.Time
}

// InitialTimeline names a cluster's history before any restore.
const InitialTimeline = "0"

// TimelineLayout is how a timeline after a restore is named: the restore's end, UTC.
const TimelineLayout = "20060102T150405.000Z"

// NewTimeline is the timeline a restore that ended at t starts.
func NewTimeline(t time.Time) Timeline {
	name := t.UTC().Format(TimelineLayout)
	start, _ := time.Parse(TimelineLayout, name)
	return Timeline{Name: name, Start: start}
}

// ParseTimeline reads a timeline's name ("" is InitialTimeline).
func ParseTimeline(name string) (Timeline, error) {
	if name == "" || name == InitialTimeline {
		return Timeline{Name: InitialTimeline}, nil
	}
	t, err := time.Parse(TimelineLayout, name)
	if err != nil {
		return Timeline{}, fmt.Errorf("timeline %q is not %s or a time like %s", name, InitialTimeline, TimelineLayout)
	}
	return Timeline{Name: name, Start: t}, nil
}

// Dir is the timeline's folder of segments under a config's prefix.
func (tl Timeline) Dir(prefix string) string { return prefix + Dir + tl.Name + "/" }

// Holds says whether bk is a full backup of the timeline, next the timeline after it (nil:
// none): scheduled and stored after the timeline started, and stored before the next began. A
// backup scheduled before a restore and stored after it anchors neither. Times compare to the
// second: a bucket reports when an object was stored to the second (HTTP's Last-Modified).
func (tl Timeline) Holds(bk Backup, next *Timeline) bool {
	start := tl.Start.Truncate(time.Second)
	if bk.Scheduled.Before(start) || bk.Stored.Before(start) {
		return false
	}
	return next == nil || bk.Stored.Before(next.Start.Truncate(time.Second))
}

// Timelines lists the timelines a config's journal has folders of, oldest first. A folder
// whose name is no timeline's is left out.
func Timelines(ctx context.Context, b destination.Bucket, prefix string) ([]Timeline, error) {
	seen := map[string]bool{}
	var out []Timeline
	// One level: the folders, not every segment in them.
	err := b.ListWith(ctx, prefix+Dir, destination.ListOptions{Shallow: true}, func(o destination.ObjectInfo) error {
		name, _, ok := strings.Cut(strings.TrimPrefix(o.Key, prefix+Dir), "/")
		if !ok || seen[name] {
			return nil
		}
		seen[name] = true
		if tl, err := ParseTimeline(name); err == nil {
			out = append(out, tl)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list journal timelines under %s: %w", prefix+Dir, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Start.Before(out[j].Start) })
	return out, nil
}
