package plugin

import (
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"golang.org/x/term"
)

// progress shows what a followed object says as it changes: on a terminal one line redrawn
// with a bar, elsewhere (a pipe, a log) a line per change.
type progress struct {
	w    io.Writer
	tty  bool
	last string
}

func newProgress(w io.Writer) *progress {
	f, ok := w.(interface{ Fd() uintptr })
	return &progress{w: w, tty: ok && term.IsTerminal(int(f.Fd()))}
}

// show draws phase and message when they changed.
func (p *progress) show(phase, message string) {
	line := phase
	if message != "" {
		line += ": " + message
	}
	if line == p.last {
		return
	}
	p.last = line
	if frac, ok := fraction(message); ok {
		line = bar(frac) + " " + line
	}
	if p.tty {
		fmt.Fprintf(p.w, "\r\x1b[K%s", line)
		return
	}
	fmt.Fprintln(p.w, line)
}

// done ends a redrawn line.
func (p *progress) done() {
	if p.tty && p.last != "" {
		fmt.Fprintln(p.w)
	}
}

var (
	percent = regexp.MustCompile(`\((\d+(?:\.\d+)?)%\)`)
	counted = regexp.MustCompile(`(\d+)\s*/\s*(\d+)`)
)

// fraction reads how far a message says the work got: "(46%)" from a backup's progress,
// "members restored 1/3" from a restore's.
func fraction(message string) (float64, bool) {
	if m := percent.FindStringSubmatch(message); m != nil {
		v, err := strconv.ParseFloat(m[1], 64)
		return min(v/100, 1), err == nil
	}
	if m := counted.FindStringSubmatch(message); m != nil {
		n, err1 := strconv.Atoi(m[1])
		d, err2 := strconv.Atoi(m[2])
		if err1 == nil && err2 == nil && d > 0 && n <= d {
			return float64(n) / float64(d), true
		}
	}
	return 0, false
}

// bar is a 20-character bar of frac.
func bar(frac float64) string {
	n := int(frac*20 + 0.5)
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", 20-n) + "]"
}
