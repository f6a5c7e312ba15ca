package bench

import (
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
)

// target is one of issue 24's figures as a benchmark measured it: a ratio or a time against
// its limit (lower is better), and what it was measured against.
type target struct {
	name     string
	value    float64
	limit    float64
	unit     string
	measured string
}

var (
	targetsMu sync.Mutex
	targets   []target
)

// reportTarget records a target's figure for the summary TestMain prints after the run, so
// that the figures of one `make bench` (or go test -bench) run stand side by side.
func reportTarget(name string, value, limit float64, unit, measured string) {
	targetsMu.Lock()
	defer targetsMu.Unlock()
	targets = append(targets, target{name, value, limit, unit, measured})
}

// TestMain runs the package's benchmarks, then prints the targets they measured.
func TestMain(m *testing.M) {
	code := m.Run()
	targetsMu.Lock()
	printTargets(os.Stdout, targets)
	targetsMu.Unlock()
	os.Exit(code)
}

// printTargets writes ts sorted by name, each with its verdict; nothing when there are none.
func printTargets(w io.Writer, ts []target) {
	if len(ts) == 0 {
		return
	}
	ts = slices.Clone(ts)
	sort.SliceStable(ts, func(i, j int) bool { return ts[i].name < ts[j].name })
	fmt.Fprintln(w, "targets measured in this run (lower is better):")
	for _, t := range ts {
		verdict := "met"
		if t.value > t.limit {
			verdict = "NOT met"
		}
		fmt.Fprintf(w, "  %-9s %8.3f%s (target ≤ %g%s) %-7s %s\n", t.name, t.value, t.unit, t.limit, t.unit, verdict,
			t.measured)
	}
}

func TestPrintTargetsSaysWhichAreMet(t *testing.T) {
	var out strings.Builder
	printTargets(&out, nil)
	if out.Len() != 0 {
		t.Fatalf("no targets printed %q", out.String())
	}
	printTargets(&out, []target{
		{name: "B2", value: 2.74, limit: 1.5, unit: "×", measured: "12.98s against 4.73s"},
		{name: "B1", value: 0.189, limit: 0.2, unit: "×", measured: "12.98s against 68.69s"},
	})
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("want a heading and two targets, got:\n%s", out.String())
	}
	for i, want := range []string{"B1", "B2"} {
		if !strings.HasPrefix(strings.TrimSpace(lines[i+1]), want+" ") {
			t.Errorf("line %d is %q, want target %s (sorted by name)", i+1, lines[i+1], want)
		}
	}
	if !strings.Contains(lines[1], " met ") || !strings.Contains(lines[1], "0.189×") {
		t.Errorf("B1 0.189 against 0.2: %q, want it met", lines[1])
	}
	if !strings.Contains(lines[2], "NOT met") || !strings.Contains(lines[2], "(target ≤ 1.5×)") {
		t.Errorf("B2 2.74 against 1.5: %q, want it not met", lines[2])
	}
}
