package plugin

import (
	"fmt"
	"io"
	"strings"

	"github.com/etcd-backup/etcdbackup/pkg/progress"
	"golang.org/x/term"
)

// progressLine shows what a followed object says as it changes: on a terminal one line redrawn
// with a bar, elsewhere (a pipe, a log) a line per change.
type progressLine struct {
	w    io.Writer
	tty  bool
	last string
}

func newProgress(w io.Writer) *progressLine {
	f, ok := w.(interface{ Fd() uintptr })
	return &progressLine{w: w, tty: ok && term.IsTerminal(int(f.Fd()))}
}

// show draws phase and message when they changed.
func (p *progressLine) show(phase, message string) {
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
func (p *progressLine) done() {
	if p.tty && p.last != "" {
		fmt.Fprintln(p.w)
	}
}

// fraction reads how far a message says the work got (progress.Of).
func fraction(message string) (float64, bool) {
	done, total, ok := progress.Of(message)
	if !ok || total <= 0 {
		return 0, false
	}
	return done / total, true
}

// bar is a 20-character bar of frac.
func bar(frac float64) string {
	n := int(frac*20 + 0.5)
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", 20-n) + "]"
}
