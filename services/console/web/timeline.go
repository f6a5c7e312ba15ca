package web

import (
	"fmt"
	"html/template"
	"regexp"
	"slices"
	"strings"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/progress"
)

// The config page's timeline: server-rendered SVG, no chart library. Each completed backup is
// a bar at the time it finished, as high as its stored size; its duration (start to finish) a
// point on a line; a failed backup a red cross on the axis; a drill's verdict a mark over its
// backup's bar; a continuous config's restorable windows a band along the top. Every mark has a
// <title> (the browser's tooltip, and what a screen reader reads) and data attributes the
// browser test reads.

// Geometry of the timeline, in SVG user units.
const (
	tlWidth, tlHeight = 720, 170
	tlLeft, tlRight   = 56, 56
	tlTop, tlBase     = 30, 140
	tlBar             = 6
)

// timelineMark is one thing the timeline draws at a time.
type timelineMark struct {
	at       time.Time
	backup   kubermaticv1.BackupStatus
	duration time.Duration
	verdict  string
}

// windowRE reads a ContinuousBackup message's windows ("from <RFC 3339> to <RFC 3339>").
var windowRE = regexp.MustCompile(`from (\d{4}-\d\d-\d\dT[0-9:.]+Z) to (\d{4}-\d\d-\d\dT[0-9:.]+Z)`)

// timeline draws cfg's backups (and windows) up to now; empty when there is nothing to draw.
func timeline(cfg *kubermaticv1.EtcdBackupConfig, backups []kubermaticv1.BackupStatus, now time.Time) template.HTML {
	marks, windows := marksOf(cfg, backups), windowsOf(cfg)
	if len(marks) == 0 && len(windows) == 0 {
		return ""
	}
	t0, t1 := now, now
	for _, m := range marks {
		t0 = minTime(t0, m.at.Add(-m.duration))
	}
	for _, w := range windows {
		t0 = minTime(t0, w[0])
	}
	if t1.Sub(t0) < time.Minute {
		t0 = t1.Add(-time.Minute)
	}
	d := &drawing{t0: t0, span: t1.Sub(t0)}
	for _, m := range marks {
		d.maxSize = max(d.maxSize, m.backup.Size)
		d.maxDur = max(d.maxDur, m.duration)
	}
	d.frame(cfg.Name, len(windows) > 0)
	for _, w := range windows {
		d.window(w)
	}
	for _, m := range marks {
		d.mark(m)
	}
	return d.end()
}

// drawing is a timeline being written.
type drawing struct {
	sb      strings.Builder
	t0      time.Time
	span    time.Duration
	maxSize int64
	maxDur  time.Duration
	line    []string
}

// x is where t falls.
func (d *drawing) x(t time.Time) float64 {
	return tlLeft + float64(t.Sub(d.t0))/float64(d.span)*(tlWidth-tlLeft-tlRight)
}

// frame opens the SVG: its title and description, the axis and the scales' labels.
func (d *drawing) frame(name string, windows bool) {
	sb, t1 := &d.sb, d.t0.Add(d.span)
	fmt.Fprintf(sb, `<svg id="timeline" class="timeline" viewBox="0 0 %d %d" role="img" `+
		`aria-labelledby="timeline-title timeline-desc" xmlns="http://www.w3.org/2000/svg">`, tlWidth, tlHeight)
	fmt.Fprintf(sb, `<title id="timeline-title">Backups of %s over time</title>`, esc(name))
	fmt.Fprintf(sb, `<desc id="timeline-desc">From %s to %s: bars are stored sizes (the tallest %s), dots `+
		`durations (the longest %s), crosses failures, marks above bars drill verdicts%s.</desc>`,
		esc(d.t0.UTC().Format(time.RFC3339)), esc(t1.UTC().Format(time.RFC3339)), esc(progress.Size(d.maxSize)),
		esc(d.maxDur.Round(time.Millisecond).String()), map[bool]string{true: ", the top band the restorable window",
			false: ""}[windows])
	fmt.Fprintf(sb, `<line class="axis" x1="%d" y1="%d" x2="%d" y2="%d"/>`, tlLeft, tlBase, tlWidth-tlRight, tlBase)
	fmt.Fprintf(sb, `<text class="label" x="4" y="%d">%s</text>`, tlTop+8, esc(progress.Size(d.maxSize)))
	fmt.Fprintf(sb, `<text class="label duration-label" x="%d" y="%d" text-anchor="end">%s</text>`, tlWidth-4, tlTop+8,
		esc(short(d.maxDur)))
	for i := range 4 {
		t := d.t0.Add(d.span * time.Duration(i) / 3)
		fmt.Fprintf(sb, `<text class="tick" x="%.1f" y="%d" text-anchor="middle">%s</text>`, d.x(t), tlBase+18,
			esc(tickLabel(t, d.span)))
	}
}

// window draws a restorable window as a band along the top.
func (d *drawing) window(w [2]time.Time) {
	from, to := esc(w[0].UTC().Format(time.RFC3339)), esc(w[1].UTC().Format(time.RFC3339))
	fmt.Fprintf(&d.sb, `<rect class="window" x="%.1f" y="6" width="%.1f" height="10" data-from="%s" data-to="%s">`+
		`<title>restorable to any point from %s to %s</title></rect>`, d.x(w[0]), max(d.x(w[1])-d.x(w[0]), 2), from, to,
		from, to)
}

// mark draws one backup: a cross when it failed; else its bar, its duration's dot and its
// drill's verdict.
func (d *drawing) mark(m timelineMark) {
	sb, b, cx := &d.sb, m.backup, d.x(m.at)
	if b.BackupPhase == kubermaticv1.PhaseFailed {
		fmt.Fprintf(sb, `<text class="failed" x="%.1f" y="%d" text-anchor="middle" data-backup="%s">✕`+
			`<title>%s failed: %s</title></text>`, cx, tlBase+5, esc(b.BackupName), esc(b.BackupName),
			esc(b.BackupMessage))
		return
	}
	h := 2.0
	if d.maxSize > 0 {
		h = max(2, float64(b.Size)/float64(d.maxSize)*(tlBase-tlTop))
	}
	took := esc(m.duration.Round(time.Millisecond).String())
	fmt.Fprintf(sb, `<rect class="backup" x="%.1f" y="%.1f" width="%d" height="%.1f" data-backup="%s" `+
		`data-size="%d"><title>%s: %s stored, took %s, revision %d</title></rect>`, cx-tlBar/2, tlBase-h, tlBar, h,
		esc(b.BackupName), b.Size, esc(b.BackupName), esc(progress.Size(b.Size)), took, b.EtcdRevision)
	if d.maxDur > 0 && m.duration > 0 {
		y := tlBase - float64(m.duration)/float64(d.maxDur)*(tlBase-tlTop)
		d.line = append(d.line, fmt.Sprintf("%.1f,%.1f", cx, y))
		fmt.Fprintf(sb, `<circle class="duration" cx="%.1f" cy="%.1f" r="2.5" data-backup="%s"><title>%s took %s`+
			`</title></circle>`, cx, y, esc(b.BackupName), esc(b.BackupName), took)
	}
	if m.verdict != "" {
		sign := map[string]string{kubermaticv1.DrillPassed: "✓", kubermaticv1.DrillFailed: "✗"}[m.verdict]
		if sign == "" {
			sign = "?"
		}
		fmt.Fprintf(sb, `<text class="drill drill-%s" x="%.1f" y="%.1f" text-anchor="middle" data-backup="%s" `+
			`data-verdict="%s">%s<title>drill of %s: %s</title></text>`, strings.ReplaceAll(m.verdict, " ", "-"), cx,
			tlBase-h-4, esc(b.BackupName), esc(m.verdict), sign, esc(b.BackupName), esc(m.verdict))
	}
}

// end closes the SVG, with the durations' line.
func (d *drawing) end() template.HTML {
	if len(d.line) > 1 {
		fmt.Fprintf(&d.sb, `<polyline class="duration-line" points="%s"/>`, strings.Join(d.line, " "))
	}
	d.sb.WriteString(`</svg>`)
	return template.HTML(d.sb.String()) //nolint:gosec // every text in it went through esc
}

// marksOf is what the timeline draws of backups: the completed and the failed ones, oldest first.
func marksOf(cfg *kubermaticv1.EtcdBackupConfig, backups []kubermaticv1.BackupStatus) []timelineMark {
	var marks []timelineMark
	for _, b := range backups {
		at := b.BackupFinishedTime.Time
		if at.IsZero() {
			at = b.ScheduledTime.Time
		}
		if at.IsZero() || (b.BackupPhase != kubermaticv1.PhaseCompleted && b.BackupPhase != kubermaticv1.PhaseFailed) {
			continue
		}
		m := timelineMark{at: at, backup: b, verdict: cfg.DrillVerdict(b.BackupName)}
		if start := b.BackupStartTime.Time; !start.IsZero() && !b.BackupFinishedTime.IsZero() {
			m.duration = b.BackupFinishedTime.Sub(start)
		}
		marks = append(marks, m)
	}
	slices.SortFunc(marks, func(a, b timelineMark) int { return a.at.Compare(b.at) })
	return marks
}

// windowsOf reads a continuous config's restorable windows from its condition.
func windowsOf(cfg *kubermaticv1.EtcdBackupConfig) [][2]time.Time {
	var windows [][2]time.Time
	if cond := pointInTime(cfg); cond != nil {
		for _, w := range windowRE.FindAllStringSubmatch(cond.Message, -1) {
			from, err1 := time.Parse(time.RFC3339, w[1])
			to, err2 := time.Parse(time.RFC3339, w[2])
			if err1 == nil && err2 == nil && !to.Before(from) {
				windows = append(windows, [2]time.Time{from, to})
			}
		}
	}
	return windows
}

func esc(s string) string { return template.HTMLEscapeString(s) }

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// tickLabel is t as the span calls for: seconds within ten minutes, a time of day within a
// day, a date beyond.
func tickLabel(t time.Time, span time.Duration) string {
	switch {
	case span <= 10*time.Minute:
		return t.UTC().Format("15:04:05")
	case span <= 24*time.Hour:
		return t.UTC().Format("15:04")
	}
	return t.UTC().Format("Jan 2 15:04")
}

// short is d rounded for a label: to milliseconds under a second, to seconds above.
func short(d time.Duration) string {
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// bar is a progress bar's value of max.
type bar struct{ Value, Max float64 }

// progressOf is the bar of what a status message says (progress.Of; nil: nothing countable).
func progressOf(msg string) *bar {
	if done, total, ok := progress.Of(msg); ok {
		return &bar{Value: done, Max: total}
	}
	return nil
}
