package journal

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"filippo.io/age"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"

	"github.com/etcd-backup/etcdbackup/pkg/destination"
)

// Window is a span a config can be restored to any revision of: a full backup (Anchor), then
// consecutive segments up to To.
type Window struct {
	// Timeline is the history the window is of.
	Timeline Timeline
	// Anchor is the oldest full backup the window starts from; Anchors every one of the
	// timeline's full backups in it, in revision order.
	Anchor  Backup
	Anchors []Backup
	// FromRevision is the anchor's recorded revision; ToRevision the last revision sealed.
	FromRevision, ToRevision int64
	// From is when the anchor was stored (its snapshot was taken before); To is when the
	// journal received the window's last revision.
	From, To time.Time
	// Segments are the window's segments, in order.
	Segments []Segment
}

func (w Window) String() string {
	return fmt.Sprintf("from %s to %s (revisions %d to %d)", w.From.UTC().Format(time.RFC3339),
		w.To.UTC().Format(time.RFC3339), w.FromRevision, w.ToRevision)
}

// Windows lists the config's restorable windows, oldest timeline first: in each timeline, each
// run of consecutive segments that one of the timeline's full backups anchors (its recorded
// revision inside the run, or just before it), from its oldest anchor.
func Windows(ctx context.Context, b destination.Bucket, prefix string) ([]Window, error) {
	return (&Catalog{Bucket: b, Prefix: prefix}).Windows(ctx)
}

// Catalog reads a config's windows again and again (the journal's condition, every status
// interval) without reading again what it has read: a backup's or a segment's record is read
// once (neither is ever rewritten), the backups are listed at most every BackupsEvery, and a
// timeline's segments are listed from after the last key it saw, or, Fed, not at all: the
// journal that seals them tells the catalog (Sealed). The timelines and every timeline's
// segments are listed whole every RelistEvery, which sees what retention deleted (0: every
// time). The zero Catalog of a bucket and prefix reads everything once. A Catalog is safe for
// the journal and its condition's writer at once.
type Catalog struct {
	Bucket       destination.Bucket
	Prefix       string
	RelistEvery  time.Duration
	BackupsEvery time.Duration
	Fed          bool

	mu              sync.Mutex
	timelines       []Timeline
	timelinesListed time.Time
	keys            []string // the backups' keys, as last listed
	keysListed      time.Time
	segments        map[string][]Segment // by timeline folder
	listed          map[string]time.Time // when each folder was last listed whole
	backups         map[string]Backup    // records by key
	metas           map[string]Meta      // segments' records by key

	fedMu sync.Mutex
	fed   []sealedSegment // told by Sealed, not yet taken in
	told  []string        // told by Stored, not yet taken in
	// forced are the keys of the last Stored that its listing did not hold and that had the
	// backups listed again: each does it once while it is told, so a key the bucket does not
	// hold costs one listing, not one a read; the set is never larger than what was told.
	forced map[string]bool
}

// Stored tells the catalog of backups the config's status lists as stored (their keys). A key
// under the catalog's prefix that its last listing did not hold has the backups listed again
// at the next read, however recent that listing: a new full backup anchors the windows at
// once, not up to BackupsEvery later. It never waits for the catalog's reads.
func (c *Catalog) Stored(keys ...string) {
	c.fedMu.Lock()
	defer c.fedMu.Unlock()
	c.told = append(c.told[:0], keys...)
}

// relistBackups says whether a key told by Stored is new to the last listing.
func (c *Catalog) relistBackups() bool {
	c.fedMu.Lock()
	told := c.told
	c.told = nil
	c.fedMu.Unlock()
	if told == nil {
		return false
	}
	forced, relist := map[string]bool{}, false
	for _, k := range told {
		if _, listed := c.backups[k]; listed || !strings.HasPrefix(k, c.Prefix) {
			continue
		}
		relist = relist || !c.forced[k]
		forced[k] = true
	}
	c.forced = forced
	return relist
}

type sealedSegment struct {
	dir string
	seg Segment
	m   Meta
}

// Sealed tells a Fed catalog of a segment just stored in the timeline folder dir, with its
// record. It never waits for the catalog's reads.
func (c *Catalog) Sealed(dir string, s Segment, m Meta) {
	c.fedMu.Lock()
	defer c.fedMu.Unlock()
	c.fed = append(c.fed, sealedSegment{dir: dir, seg: s, m: m})
}

// takeFed adds the segments told by Sealed to the folders already listed (one not listed yet
// is listed whole, which sees them).
func (c *Catalog) takeFed() {
	c.fedMu.Lock()
	fed := c.fed
	c.fed = nil
	c.fedMu.Unlock()
	for _, f := range fed {
		have := c.segments[f.dir]
		if len(have) == 0 || f.seg.Key <= have[len(have)-1].Key {
			continue
		}
		c.segments[f.dir] = append(have, f.seg)
		c.remember(f.seg.Key, f.m)
	}
}

// Windows is the package's Windows, from what the catalog has read and what is new.
func (c *Catalog) Windows(ctx context.Context) ([]Window, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.segments == nil {
		c.segments, c.listed = map[string][]Segment{}, map[string]time.Time{}
	}
	c.takeFed()
	if len(c.timelines) == 0 || time.Since(c.timelinesListed) >= c.RelistEvery {
		timelines, err := Timelines(ctx, c.Bucket, c.Prefix)
		if err != nil {
			return nil, err
		}
		c.timelines, c.timelinesListed = timelines, time.Now()
	}
	if len(c.timelines) == 0 {
		return nil, nil
	}
	backups, err := c.readBackups(ctx)
	if err != nil {
		return nil, err
	}
	sort.Slice(backups, func(i, j int) bool { return backups[i].Revision < backups[j].Revision })
	var out []Window
	for i, tl := range c.timelines {
		var next *Timeline
		if i+1 < len(c.timelines) {
			next = &c.timelines[i+1]
		}
		var anchors []Backup
		for _, bk := range backups {
			if tl.Holds(bk, next) {
				anchors = append(anchors, bk)
			}
		}
		ws, err := c.timelineWindows(ctx, tl, anchors)
		if err != nil {
			return nil, err
		}
		out = append(out, ws...)
	}
	return out, nil
}

// Backups is the package's Backups, from the records the catalog has read and what is new.
func (c *Catalog) Backups(ctx context.Context) ([]Backup, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readBackups(ctx)
}

// NewestBackupRevision is the package's NewestBackupRevision, from the backups the catalog has
// read and what is new.
func (c *Catalog) NewestBackupRevision(ctx context.Context, tl Timeline) (int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	backups, err := c.readBackups(ctx)
	if err != nil {
		return 0, err
	}
	for i := len(backups) - 1; i >= 0; i-- {
		bk := backups[i]
		if tl.Holds(bk, nil) {
			return bk.Revision, nil
		}
		if bk.Scheduled.Before(tl.Start) {
			return 0, nil
		}
	}
	return 0, nil
}

// readBackups is Backups in key order, with the records read before kept and the keys listed
// again once BackupsEvery has passed.
func (c *Catalog) readBackups(ctx context.Context) ([]Backup, error) {
	if c.keys == nil || time.Since(c.keysListed) >= c.BackupsEvery || c.relistBackups() {
		keys, err := backupKeys(ctx, c.Bucket, c.Prefix)
		if err != nil {
			return nil, err
		}
		c.keys, c.keysListed = keys, time.Now()
		if c.keys == nil {
			c.keys = []string{}
		}
	}
	known := c.backups
	c.backups = make(map[string]Backup, len(c.keys))
	out := make([]Backup, 0, len(c.keys))
	for _, k := range c.keys {
		bk, ok := known[k]
		if !ok {
			var err error
			if bk, err = record(ctx, c.Bucket, k); err != nil {
				return nil, err
			}
		}
		c.backups[k] = bk
		if bk.Revision > 0 {
			out = append(out, bk)
		}
	}
	return out, nil
}

// segmentsIn is Segments of a timeline folder: the keys after the last one seen (none, Fed),
// or all of them when RelistEvery has passed since they were last listed whole.
func (c *Catalog) segmentsIn(ctx context.Context, dir string) ([]Segment, error) {
	have := c.segments[dir]
	if len(have) == 0 || time.Since(c.listed[dir]) >= c.RelistEvery {
		segs, err := Segments(ctx, c.Bucket, dir)
		if err != nil {
			return nil, err
		}
		c.segments[dir], c.listed[dir] = segs, time.Now()
		return segs, nil
	}
	if c.Fed {
		return have, nil
	}
	added, err := SegmentsAfter(ctx, c.Bucket, dir, have[len(have)-1].Key)
	if err != nil {
		return nil, err
	}
	c.segments[dir] = append(have, added...)
	return c.segments[dir], nil
}

// remember keeps a segment's record; a few are enough (the windows' last segments).
func (c *Catalog) remember(key string, m Meta) {
	if c.metas == nil || len(c.metas) > 64 {
		c.metas = map[string]Meta{}
	}
	c.metas[key] = m
}

// meta is a segment's record, read once.
func (c *Catalog) meta(ctx context.Context, key string) (Meta, error) {
	if m, ok := c.metas[key]; ok {
		return m, nil
	}
	m, err := stat(ctx, c.Bucket, key)
	if err != nil {
		return Meta{}, err
	}
	c.remember(key, m)
	return m, nil
}

// timelineWindows is Windows of one timeline, anchors its backups in revision order.
func (c *Catalog) timelineWindows(ctx context.Context, tl Timeline, anchors []Backup) ([]Window, error) {
	segs, err := c.segmentsIn(ctx, tl.Dir(c.Prefix))
	if err != nil {
		return nil, err
	}
	var out []Window
	for _, run := range runs(segs) {
		first, last := run[0].First, run[len(run)-1].Last
		i := sort.Search(len(anchors), func(i int) bool { return anchors[i].Revision >= first-1 })
		if i == len(anchors) || anchors[i].Revision > last {
			continue
		}
		w := Window{Timeline: tl, Anchor: anchors[i], FromRevision: anchors[i].Revision, ToRevision: last}
		for _, a := range anchors[i:] {
			if a.Revision <= last {
				w.Anchors = append(w.Anchors, a)
			}
		}
		for _, s := range run {
			if s.Last > w.FromRevision {
				w.Segments = append(w.Segments, s)
			}
		}
		if len(w.Segments) == 0 {
			continue
		}
		lastMeta, err := c.meta(ctx, w.Segments[len(w.Segments)-1].Key)
		if err != nil {
			return nil, err
		}
		w.From, w.To = w.Anchor.Stored, lastMeta.LastTime
		out = append(out, w)
	}
	return out, nil
}

// Describe says what windows say, for a condition or an error: "restorable from … to …".
func Describe(ws []Window) string {
	if len(ws) == 0 {
		return "not restorable to a point in time: no full backup anchors the journal yet"
	}
	parts := make([]string, len(ws))
	for i, w := range ws {
		parts[i] = w.String()
	}
	return "restorable " + strings.Join(parts, "; ")
}

// runs splits segments (in key order) into runs of consecutive revisions. Segments that
// overlap (the same revisions sealed twice, by a replica whose put landed after the next one
// had listed the bucket) are kept when they reach past the run, whose replay skips the
// revisions it holds already, and skipped when they do not.
func runs(segs []Segment) [][]Segment {
	var out [][]Segment
	var cur []Segment
	for _, s := range segs {
		switch {
		case len(cur) == 0:
			cur = []Segment{s}
		case s.First <= cur[len(cur)-1].Last+1 && s.Last > cur[len(cur)-1].Last:
			cur = append(cur, s)
		case s.First <= cur[len(cur)-1].Last:
			continue
		default:
			out = append(out, cur)
			cur = []Segment{s}
		}
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

func stat(ctx context.Context, b destination.Bucket, key string) (Meta, error) {
	info, err := b.Stat(ctx, key)
	if err != nil {
		return Meta{}, fmt.Errorf("stat segment %s: %w", key, err)
	}
	m, err := ParseMeta(info.Metadata)
	if err != nil {
		return Meta{}, fmt.Errorf("segment %s: %w", key, err)
	}
	return m, nil
}

// ReplayWindow applies w's segments after r's revision onto r, each segment proven by Fetch,
// until stop says a revision is past the target (nil: to the window's end), and checks every
// hash the journal recorded at a revision the replay reaches. It returns how many segments it
// read and how many hashes it reproduced.
func ReplayWindow(ctx context.Context, b destination.Bucket, r *Replay, w Window, ids []age.Identity,
	stop func(*etcdbackupv1.JournalRevision) bool) (segments, hashes int, err error) {
	for _, s := range w.Segments {
		if s.Last <= r.Revision() {
			continue
		}
		m, revs, err := Fetch(ctx, b, s.Key, ids)
		if err != nil {
			return segments, hashes, err
		}
		segments++
		for _, rev := range revs {
			if stop != nil && stop(rev) {
				return segments, hashes, nil
			}
			if err := r.Apply(rev); err != nil {
				return segments, hashes, err
			}
		}
		if m.Hash != nil && m.Hash.Revision == r.Revision() {
			if err := r.Check(*m.Hash); err != nil {
				return segments, hashes, err
			}
			hashes++
		}
	}
	return segments, hashes, nil
}
