package drill

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"filippo.io/age"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/journal"
	"github.com/etcd-backup/etcdbackup/services/restorer/member"
)

// JournalResult is what a drill of a continuous config's newest window found.
type JournalResult struct {
	// Window is the window drilled; Anchor the full backup the replay started from.
	Window journal.Window
	Anchor string
	// Revisions replayed, Segments read, Hashes (the journal's HashKVs) reproduced.
	Revisions      int64
	Segments, Hash int
	Took           time.Duration
}

func (r JournalResult) String() string {
	return fmt.Sprintf("point-in-time window %s drilled: %d revisions replayed from %s over %d segments, %d HashKV "+
		"reproduced, in %s", r.Window, r.Revisions, r.Anchor, r.Segments, r.Hash, r.Took.Round(time.Millisecond))
}

// RunJournal drills the newest restorable window of the config whose backups are under prefix
// in b: its newest full backup, then every segment after it to the window's end, replayed as a
// point-in-time restore replays them, each recorded HashKV reproduced. ok is false when the
// config has no window (not continuous, or no full backup anchors its journal yet). A segment
// that fails its checks, or a replay that diverges, wraps ErrFailed.
func RunJournal(ctx context.Context, b destination.Bucket, prefix string, ids []age.Identity, scratch string,
	maxSnapshot int64) (res JournalResult, ok bool, err error) {
	start := time.Now()
	windows, err := journal.Windows(ctx, b, prefix)
	if err != nil || len(windows) == 0 {
		return JournalResult{}, false, err
	}
	w := windows[len(windows)-1]
	anchor := w.Anchors[len(w.Anchors)-1]
	if err := os.MkdirAll(scratch, 0o700); err != nil {
		return JournalResult{}, true, err
	}
	dir, err := os.MkdirTemp(scratch, "drill-journal-")
	if err != nil {
		return JournalResult{}, true, err
	}
	defer os.RemoveAll(dir)
	replay, err := member.Replay(ctx, b, anchor.Key, ids, filepath.Join(dir, "db"), maxSnapshot)
	if err != nil {
		return JournalResult{}, true, failed(err)
	}
	defer replay.Close()
	base := replay.Revision()
	res = JournalResult{Window: w, Anchor: anchor.Key}
	res.Segments, res.Hash, err = journal.ReplayWindow(ctx, b, replay, w, ids, nil)
	if err != nil {
		return res, true, failed(err)
	}
	if replay.Revision() != w.ToRevision {
		return res, true, fmt.Errorf("%w: the replay reached revision %d, the window ends at %d", ErrFailed,
			replay.Revision(), w.ToRevision)
	}
	res.Revisions, res.Took = replay.Revision()-base, time.Since(start)
	return res, true, nil
}

// failed says what is the journal's or the backup's fault as ErrFailed; anything else (the
// bucket down) is the drill's, which says nothing of them.
func failed(err error) error {
	if errors.Is(err, journal.ErrCorrupt) || errors.Is(err, journal.ErrDiverged) || errors.Is(err, member.ErrCorrupt) ||
		errors.Is(err, destination.ErrObjectNotFound) {
		return fmt.Errorf("%w: %w", ErrFailed, err)
	}
	return err
}
