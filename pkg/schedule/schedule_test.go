package schedule

import (
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		spec string
		ok   bool
	}{
		{"@every 20m", true},
		{"@every 3s", true},
		{"@hourly", true},
		{"@daily", true},
		{"@weekly", true},
		{"@monthly", true},
		{"0 1 * * *", true},
		{"*/5 * * * *", true},
		{"@every 500ms", false},
		{"@every soon", false},
		{"0 1 * *", false},
		{"* * * * * *", false},
		{"61 * * * *", false},
		{"not a schedule", false},
		{"", false},
	}
	for _, tc := range tests {
		t.Run(tc.spec, func(t *testing.T) {
			_, err := Parse(tc.spec)
			if (err == nil) != tc.ok {
				t.Fatalf("Parse(%q) err = %v, want ok=%v", tc.spec, err, tc.ok)
			}
		})
	}
}

func mustParse(t *testing.T, spec string) Schedule {
	t.Helper()
	s, err := Parse(spec)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestLatest(t *testing.T) {
	created := time.Date(2021, 3, 16, 1, 47, 13, 0, time.UTC)
	tests := []struct {
		name   string
		spec   string
		now    time.Time
		want   time.Time
		wantOK bool
	}{
		{"every: before first tick", "@every 20m", created.Add(19 * time.Minute), time.Time{}, false},
		{"every: first tick after creation", "@every 20m", created.Add(20 * time.Minute), created.Add(20 * time.Minute),
			true},
		{"every: only the latest missed slot", "@every 20m", created.Add(5*time.Hour + time.Minute),
			created.Add(5 * time.Hour), true},
		{"cron: first tick after creation", "*/3 * * * *", time.Date(2021, 3, 16, 1, 48, 30, 0, time.UTC), time.Date(2021,
			3, 16, 1, 48, 0, 0, time.UTC), true},
		{"cron: nothing yet", "0 3 * * *", time.Date(2021, 3, 16, 2, 59, 0, 0, time.UTC), time.Time{}, false},
		{"cron: daily after a week of downtime", "@daily", time.Date(2021, 3, 23, 12, 0, 0, 0, time.UTC), time.Date(2021,
			3, 23, 0, 0, 0, 0, time.UTC), true},
		{"cron: minutely after a year of downtime", "* * * * *", time.Date(2022, 3, 16, 1, 47, 40, 0, time.UTC),
			time.Date(2022, 3, 16, 1, 47, 0, 0, time.UTC), true},
		{"cron: sparse schedule", "0 0 29 2 *", time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2028, 2, 29, 0, 0,
			0, 0, time.UTC), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := mustParse(t, tc.spec).Latest(created, tc.now)
			if ok != tc.wantOK || !got.Equal(tc.want) {
				t.Fatalf("Latest = %v, %v; want %v, %v", got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

func TestSlotsDoNotDependOnWhenReplicasLook(t *testing.T) {
	created := time.Date(2021, 3, 16, 1, 47, 13, 0, time.UTC)
	for _, spec := range []string{"@every 7m", "*/5 * * * *"} {
		s := mustParse(t, spec)
		// Two replicas whose timers fire at different moments within the same slot agree.
		a, okA := s.Latest(created, created.Add(61*time.Minute+100*time.Millisecond))
		b, okB := s.Latest(created, created.Add(61*time.Minute+2*time.Second))
		if !okA || !okB || !a.Equal(b) {
			t.Fatalf("%s: replicas disagree: %v vs %v", spec, a, b)
		}
		// Next after a slot is the following slot, and Latest at that moment returns it.
		n := s.Next(created, a)
		if l, ok := s.Latest(created, n); !ok || !l.Equal(n) || !n.After(a) {
			t.Fatalf("%s: next %v, latest at next %v", spec, n, l)
		}
	}
}

// Shortest finds the shortest gap between slots wherever in the year it falls, including
// across midnight and between days of the month or week, and stops below the floor.
func TestShortest(t *testing.T) {
	for _, tc := range []struct {
		spec  string
		floor time.Duration
		want  time.Duration
	}{
		{"@every 1s", 10 * time.Minute, time.Second},
		{"@every 20m", 10 * time.Minute, 20 * time.Minute},
		{"* * * * *", 10 * time.Minute, time.Minute},
		{"*/10 * * * *", 10 * time.Minute, 10 * time.Minute},
		{"@hourly", 10 * time.Minute, time.Hour},
		{"0 1 * * *", 10 * time.Minute, 24 * time.Hour},
		{"0,5 0 * * *", time.Minute, 5 * time.Minute},
		{"0,59 0,23 * * *", 0, time.Minute}, // 23:59 to 00:00 the next day
		{"0 0 1,2 * *", 0, 24 * time.Hour},
		{"0 0 * * 1,2", 0, 24 * time.Hour},
		{"0 12 29 2 *", 0, 0}, // a leap day: one slot in four years, no gap in the window
		{"0 0 30 2 *", 0, 0},  // never
	} {
		s, err := Parse(tc.spec)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Shortest(tc.floor); got != tc.want {
			t.Errorf("Shortest(%q, floor %s) = %s, want %s", tc.spec, tc.floor, got, tc.want)
		}
	}
}

// The longest search: a schedule exactly at the floor is read for its whole window.
func BenchmarkShortestAtTheFloor(b *testing.B) {
	s, err := Parse("*/10 * * * *")
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if got := s.Shortest(10 * time.Minute); got != 10*time.Minute {
			b.Fatalf("Shortest = %s", got)
		}
	}
}
