// Package schedule turns spec.schedule into backup slots. Slot times depend only on the
// schedule and the config's creation time, never on when a scheduler looks, so every replica
// derives the same slots and therefore the same backup names.
package schedule

import (
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// parser accepts what KKP accepts: 5 fields and descriptors (@every, @hourly, @daily, ...).
var parser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Schedule is a parsed spec.schedule.
type Schedule struct {
	every time.Duration // set for "@every <duration>"
	cron  cron.Schedule
}

// Parse parses a cron expression or descriptor. "@every d" needs d of at least one second.
func Parse(spec string) (Schedule, error) {
	spec = strings.TrimSpace(spec)
	if rest, ok := strings.CutPrefix(spec, "@every "); ok {
		d, err := time.ParseDuration(strings.TrimSpace(rest))
		if err != nil {
			return Schedule{}, fmt.Errorf("schedule %q: %w", spec, err)
		}
		if d < time.Second {
			return Schedule{}, fmt.Errorf("schedule %q: interval must be at least 1s", spec)
		}
		return Schedule{every: d}, nil
	}
	s, err := parser.Parse(spec)
	if err != nil {
		return Schedule{}, fmt.Errorf("schedule %q: %w", spec, err)
	}
	return Schedule{cron: s}, nil
}

// Next returns the first slot after t, for a config created at anchor (zero if a cron
// expression names no time in the next five years, like "0 0 30 2 *"). "@every d" slots are
// anchor+k*d (k >= 1); cron slots are the wall-clock times the expression names (UTC).
func (s Schedule) Next(anchor, t time.Time) time.Time {
	if s.every > 0 {
		if t.Before(anchor) {
			return anchor.Add(s.every)
		}
		k := t.Sub(anchor)/s.every + 1
		return anchor.Add(k * s.every)
	}
	if t.Before(anchor) {
		t = anchor
	}
	return s.cron.Next(t.UTC())
}

// Latest returns the latest slot in (anchor, now], if there is one. Only this slot is ever
// due: slots missed while no scheduler ran are not caught up.
func (s Schedule) Latest(anchor, now time.Time) (time.Time, bool) {
	if !now.After(anchor) {
		return time.Time{}, false
	}
	if s.every > 0 {
		k := now.Sub(anchor) / s.every
		if k < 1 {
			return time.Time{}, false
		}
		return anchor.Add(k * s.every), true
	}
	// Widen a window back from now until it holds a slot, then walk it forward: the cost is
	// bounded by the slots in the window, not by the config's age.
	for w := time.Minute; ; w *= 2 {
		start := now.Add(-w)
		if !start.After(anchor) {
			start = anchor
		}
		if first := s.Next(anchor, start); !first.IsZero() && !first.After(now) {
			latest := first
			for n := s.Next(anchor, latest); !n.IsZero() && !n.After(now); n = s.Next(anchor, n) {
				latest = n
			}
			return latest, true
		}
		if start.Equal(anchor) {
			return time.Time{}, false
		}
	}
}

// scanFrom and scanFor are the window Shortest looks at: a year and a month of a cron
// expression's slots, enough for every pattern of minutes, hours, days of the month and of the
// week to occur (a leap day's only lengthens a gap).
var (
	scanFrom = time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	scanFor  = 396 * 24 * time.Hour
)

// Shortest returns the shortest time between two consecutive slots, or the first one found
// shorter than floor: whether the schedule asks for backups more often than floor is all a
// caller needs, and the search stops there. A schedule naming no time returns 0.
func (s Schedule) Shortest(floor time.Duration) time.Duration {
	if s.every > 0 {
		return s.every
	}
	prev := s.cron.Next(scanFrom.Add(-time.Second))
	if prev.IsZero() {
		return 0
	}
	shortest := time.Duration(0)
	end := scanFrom.Add(scanFor)
	for next := s.cron.Next(prev); !next.IsZero() && next.Before(end); prev, next = next, s.cron.Next(next) {
		if gap := next.Sub(prev); shortest == 0 || gap < shortest {
			shortest = gap
			if shortest < floor {
				break
			}
		}
	}
	return shortest
}
