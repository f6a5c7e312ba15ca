package v1

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// AnnotationRetention is a config's tiered retention (KKP's schema has no field for it):
// "hourly=24,daily=7,weekly=4,monthly=12", any of the four tiers, each once. The newest backup
// of each of the last N hours, days, weeks and months (UTC; weeks from Monday) is kept, on top
// of the newest spec.keep. A config whose annotation does not parse is refused
// (InvalidRetention), and retention deletes none of its backups until it does.
const AnnotationRetention = "etcdbackup.k8c.io/retention"

// ReasonInvalidRetention: the retention annotation does not parse.
const ReasonInvalidRetention = "InvalidRetention"

// Tier is one grain of tiered retention.
type Tier string

// The tiers, finest first.
const (
	TierHourly  Tier = "hourly"
	TierDaily   Tier = "daily"
	TierWeekly  Tier = "weekly"
	TierMonthly Tier = "monthly"
)

// Tiers lists the tiers finest first.
var Tiers = []Tier{TierHourly, TierDaily, TierWeekly, TierMonthly}

// Period is the start of the tier's period that t falls in (UTC).
func (tr Tier) Period(t time.Time) time.Time {
	t = t.UTC()
	switch tr {
	case TierHourly:
		return t.Truncate(time.Hour)
	case TierDaily:
		return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	case TierWeekly:
		d := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
		return d.AddDate(0, 0, -((int(d.Weekday()) + 6) % 7))
	default:
		return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
	}
}

// Back is the start of the period n periods before the one starting at period.
func (tr Tier) Back(period time.Time, n int) time.Time {
	switch tr {
	case TierHourly:
		return period.Add(-time.Duration(n) * time.Hour)
	case TierDaily:
		return period.AddDate(0, 0, -n)
	case TierWeekly:
		return period.AddDate(0, 0, -7*n)
	default:
		return period.AddDate(0, -n, 0)
	}
}

// Retention is a parsed tiered retention: how many periods of each tier keep their newest
// backup (0: the tier is not used).
//
// +kubebuilder:object:generate=false
type Retention map[Tier]int

// String is the annotation's form, finest tier first.
func (r Retention) String() string {
	var parts []string
	for _, t := range Tiers {
		if n := r[t]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", t, n))
		}
	}
	return strings.Join(parts, ",")
}

// ParseRetention reads a retention annotation. Its tiers together keep at most MaxKeep
// backups (the bound spec.keep has, for the same reason: one config's listing and retention
// pass stay bounded).
func ParseRetention(s string) (Retention, error) {
	r := Retention{}
	total := 0
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		name, count, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("%q is not <tier>=<count> (tiers: hourly, daily, weekly, monthly)", part)
		}
		tier := Tier(strings.TrimSpace(name))
		known := false
		for _, t := range Tiers {
			known = known || t == tier
		}
		if !known {
			return nil, fmt.Errorf("%q is not a tier: hourly, daily, weekly or monthly", name)
		}
		if _, twice := r[tier]; twice {
			return nil, fmt.Errorf("tier %s is given twice", tier)
		}
		n, err := strconv.Atoi(strings.TrimSpace(count))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%s=%s: the count is a whole number from 1", tier, count)
		}
		total += n
		if total > MaxKeep {
			return nil, fmt.Errorf("the tiers keep more than %d backups together", MaxKeep)
		}
		r[tier] = n
	}
	return r, nil
}

// Retention is the config's tiered retention: empty without the annotation; an error when it
// does not parse.
func (c *EtcdBackupConfig) Retention() (Retention, error) {
	s, ok := c.Annotations[AnnotationRetention]
	if !ok {
		return Retention{}, nil
	}
	r, err := ParseRetention(s)
	if err != nil {
		return nil, fmt.Errorf("annotation %s: %w", AnnotationRetention, err)
	}
	return r, nil
}

// Dated is a backup and the time retention ranks it by.
//
// +kubebuilder:object:generate=false
type Dated struct {
	Name string
	At   time.Time
}

// Keeps says which tiers keep which of backups at now: the newest backup of each of a tier's
// last N periods (the current one and N-1 before it). A backup dated after now counts in no
// period.
func (r Retention) Keeps(backups []Dated, now time.Time) map[string][]Tier {
	kept := map[string][]Tier{}
	for _, tier := range Tiers {
		n := r[tier]
		if n <= 0 {
			continue
		}
		current := tier.Period(now)
		oldest := tier.Back(current, n-1)
		newest := map[time.Time]Dated{}
		for _, b := range backups {
			p := tier.Period(b.At)
			if p.Before(oldest) || b.At.After(now) {
				continue
			}
			if cur, ok := newest[p]; !ok || b.At.After(cur.At) || b.At.Equal(cur.At) && b.Name > cur.Name {
				newest[p] = b
			}
		}
		for _, b := range newest {
			kept[b.Name] = append(kept[b.Name], tier)
		}
	}
	return kept
}
