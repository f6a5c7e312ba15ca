package v1_test

import (
	"strings"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestParseRetention(t *testing.T) {
	r, err := kubermaticv1.ParseRetention(" monthly=12, hourly=24,daily=7 ,weekly=4")
	if err != nil {
		t.Fatal(err)
	}
	if got := r.String(); got != "hourly=24,daily=7,weekly=4,monthly=12" {
		t.Errorf("parsed %q", got)
	}
	for s, want := range map[string]string{
		"":                     "is not <tier>=<count>",
		"hourly":               "is not <tier>=<count>",
		"yearly=3":             "is not a tier",
		"daily=7,daily=3":      "given twice",
		"daily=0":              "whole number from 1",
		"daily=-1":             "whole number from 1",
		"daily=x":              "whole number from 1",
		"hourly=600,daily=500": "more than 1000",
	} {
		if _, err := kubermaticv1.ParseRetention(s); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseRetention(%q) = %v, want an error saying %q", s, err, want)
		}
	}
	cfg := &kubermaticv1.EtcdBackupConfig{}
	if r, err := cfg.Retention(); err != nil || len(r) != 0 {
		t.Errorf("no annotation: %v, %v; want no tier", r, err)
	}
	cfg.ObjectMeta = metav1.ObjectMeta{Annotations: map[string]string{kubermaticv1.AnnotationRetention: "daily=x"}}
	if _, err := cfg.Retention(); err == nil || !strings.Contains(err.Error(), kubermaticv1.AnnotationRetention) {
		t.Errorf("a bad annotation: %v, want an error naming it", err)
	}
}

func TestTierPeriods(t *testing.T) {
	// Wednesday 2026-12-02 13:45:10 UTC.
	at := time.Date(2026, 12, 2, 13, 45, 10, 0, time.UTC)
	for _, c := range []struct {
		tier         kubermaticv1.Tier
		period, back string
	}{
		{kubermaticv1.TierHourly, "2026-12-02T13:00:00Z", "2026-12-02T10:00:00Z"},
		{kubermaticv1.TierDaily, "2026-12-02T00:00:00Z", "2026-11-29T00:00:00Z"},
		{kubermaticv1.TierWeekly, "2026-11-30T00:00:00Z", "2026-11-09T00:00:00Z"},
		{kubermaticv1.TierMonthly, "2026-12-01T00:00:00Z", "2026-09-01T00:00:00Z"},
	} {
		p := c.tier.Period(at)
		if got := p.Format(time.RFC3339); got != c.period {
			t.Errorf("%s period of %s = %s, want %s", c.tier, at, got, c.period)
		}
		if got := c.tier.Back(p, 3).Format(time.RFC3339); got != c.back {
			t.Errorf("%s: three periods back from %s = %s, want %s", c.tier, p, got, c.back)
		}
	}
	// A Sunday's week began the Monday before; a Monday's on itself.
	if got := kubermaticv1.TierWeekly.Period(time.Date(2026, 12, 6, 23, 0, 0, 0, time.UTC)); got.Day() != 30 {
		t.Errorf("the week of Sunday 2026-12-06 began %s, want Monday 2026-11-30", got)
	}
	if got := kubermaticv1.TierWeekly.Period(time.Date(2026, 11, 30, 0, 0, 1, 0, time.UTC)); got.Day() != 30 {
		t.Errorf("the week of Monday 2026-11-30 began %s", got)
	}
}

// The newest backup of each of a tier's last N periods is kept, by every tier that keeps it;
// a period without a backup keeps none (it is not replaced by an older one).
func TestRetentionKeeps(t *testing.T) {
	now := time.Date(2026, 12, 2, 13, 45, 0, 0, time.UTC) // a Wednesday
	var backups []kubermaticv1.Dated
	// Every 20 minutes for 70 days, but none on 2026-11-30 (Monday).
	for at := now.Add(-70 * 24 * time.Hour); !at.After(now); at = at.Add(20 * time.Minute) {
		if at.Format("2006-01-02") == "2026-11-30" {
			continue
		}
		backups = append(backups, kubermaticv1.Dated{Name: at.Format(time.RFC3339), At: at})
	}
	// One from a clock ahead: in no period.
	backups = append(backups, kubermaticv1.Dated{Name: "future", At: now.Add(time.Hour)})
	r, err := kubermaticv1.ParseRetention("hourly=3,daily=4,weekly=2,monthly=3")
	if err != nil {
		t.Fatal(err)
	}
	got := r.Keeps(backups, now)
	want := map[string][]kubermaticv1.Tier{
		// hours 13, 12, 11: the newest of each (13:45 is the newest of its hour, and of its day,
		// week and month).
		"2026-12-02T13:45:00Z": {kubermaticv1.TierHourly, kubermaticv1.TierDaily, kubermaticv1.TierWeekly,
			kubermaticv1.TierMonthly},
		"2026-12-02T12:45:00Z": {kubermaticv1.TierHourly},
		"2026-12-02T11:45:00Z": {kubermaticv1.TierHourly},
		// Days 12-01 and 11-29 (11-30 has none); the week before (from Monday 11-23) and
		// November end on 11-29 too.
		"2026-12-01T23:45:00Z": {kubermaticv1.TierDaily},
		"2026-11-29T23:45:00Z": {kubermaticv1.TierDaily, kubermaticv1.TierWeekly, kubermaticv1.TierMonthly},
		// October.
		"2026-10-31T23:45:00Z": {kubermaticv1.TierMonthly},
	}
	if len(got) != len(want) {
		t.Errorf("kept %d backups, want %d: %v", len(got), len(want), got)
	}
	for name, tiers := range want {
		if g := got[name]; strings.Join(tierNames(g), ",") != strings.Join(tierNames(tiers), ",") {
			t.Errorf("%s kept by %v, want %v", name, g, tiers)
		}
	}
	if _, kept := got["future"]; kept {
		t.Error("a backup dated after now is kept by a tier")
	}
}

func tierNames(ts []kubermaticv1.Tier) []string {
	s := make([]string, len(ts))
	for i, t := range ts {
		s[i] = string(t)
	}
	return s
}
