package web

import (
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// svgElement is an element of the timeline, with the attributes the test reads.
type svgElement struct {
	Name    string
	Attrs   map[string]string
	Content string
}

// parseSVG reads every element of svg (which must be well-formed XML).
func parseSVG(t *testing.T, svg string) []svgElement {
	t.Helper()
	dec := xml.NewDecoder(strings.NewReader(svg))
	var out []svgElement
	var open []int
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("the timeline is not well-formed: %v\n%s", err, svg)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			e := svgElement{Name: tok.Name.Local, Attrs: map[string]string{}}
			for _, a := range tok.Attr {
				e.Attrs[a.Name.Local] = a.Value
			}
			out = append(out, e)
			open = append(open, len(out)-1)
		case xml.CharData:
			if len(open) > 0 {
				out[open[len(open)-1]].Content += string(tok)
			}
		case xml.EndElement:
			open = open[:len(open)-1]
		}
	}
}

func TestTimelineDrawsSizesDurationsFailuresDrillsAndTheWindow(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	done := func(name string, finished time.Time, took time.Duration, size int64) kubermaticv1.BackupStatus {
		return kubermaticv1.BackupStatus{BackupName: name, BackupPhase: kubermaticv1.PhaseCompleted, Size: size,
			BackupStartTime: metav1.NewTime(finished.Add(-took)), BackupFinishedTime: metav1.NewTime(finished),
			ScheduledTime: metav1.NewTime(finished.Add(-took)), EtcdRevision: 7}
	}
	backups := []kubermaticv1.BackupStatus{
		done("d-1", now.Add(-3*time.Hour), 2*time.Second, 100<<20),
		done("d-2", now.Add(-2*time.Hour), 4*time.Second, 50<<20),
		{BackupName: "d-3", BackupPhase: kubermaticv1.PhaseFailed, BackupMessage: "snapshot: <script>x</script>",
			ScheduledTime: metav1.NewTime(now.Add(-time.Hour))},
		{BackupName: "d-4", BackupPhase: kubermaticv1.PhaseRunning, ScheduledTime: metav1.NewTime(now)},
	}
	cfg := &kubermaticv1.EtcdBackupConfig{ObjectMeta: metav1.ObjectMeta{Name: "daily",
		Annotations: map[string]string{kubermaticv1.AnnotationLastRestorable: "d-1",
			kubermaticv1.AnnotationContinuous: kubermaticv1.ContinuousOn}}}
	cfg.Status.Conditions = map[string]kubermaticv1.EtcdBackupConfigCondition{
		kubermaticv1.ConditionBackupRestorable: {Status: corev1.ConditionFalse,
			Message: "backup d-2 failed its restore drill at 2026-12-06T11:00:00Z: corrupt"},
		kubermaticv1.ConditionContinuousBackup: {Status: corev1.ConditionTrue, Message: "restorable from " +
			"2026-12-06T09:00:00Z to 2026-12-06T11:59:57Z (revisions 7 to 900)"},
	}
	svg := string(timeline(cfg, backups, now))
	if strings.Contains(svg, "<script>") {
		t.Fatal("a message reached the SVG unescaped")
	}
	bars := map[string]svgElement{}
	marks := map[string]svgElement{}
	var failed, windows, dots []svgElement
	for _, e := range parseSVG(t, svg) {
		switch cls := e.Attrs["class"]; {
		case e.Name == "rect" && cls == "backup":
			bars[e.Attrs["data-backup"]] = e
		case e.Name == "rect" && cls == "window":
			windows = append(windows, e)
		case e.Name == "text" && cls == "failed":
			failed = append(failed, e)
		case e.Name == "circle" && cls == "duration":
			dots = append(dots, e)
		case e.Name == "text" && strings.HasPrefix(cls, "drill"):
			marks[e.Attrs["data-backup"]] = e
		}
	}
	if len(bars) != 2 || bars["d-1"].Attrs["height"] != "110.0" || bars["d-2"].Attrs["height"] != "55.0" {
		t.Errorf("bars %v, want d-1 the tallest (110) and d-2 half of it", bars)
	}
	if len(dots) != 2 || dots[1].Attrs["cy"] != "30.0" {
		t.Errorf("duration dots %v, want two, d-2's (the longest) at the top", dots)
	}
	if len(failed) != 1 || failed[0].Attrs["data-backup"] != "d-3" {
		t.Errorf("failures %v, want d-3", failed)
	}
	if marks["d-1"].Attrs["data-verdict"] != "passed" || marks["d-2"].Attrs["data-verdict"] != "failed" ||
		len(marks) != 2 {
		t.Errorf("drill marks %v, want d-1 passed and d-2 failed", marks)
	}
	if len(windows) != 1 || windows[0].Attrs["data-from"] != "2026-12-06T09:00:00Z" ||
		windows[0].Attrs["data-to"] != "2026-12-06T11:59:57Z" {
		t.Errorf("windows %v", windows)
	}
	if got := timeline(&kubermaticv1.EtcdBackupConfig{}, nil, now); got != "" {
		t.Errorf("a config with nothing to draw drew %q", got)
	}
}

func TestProgressOfAMessage(t *testing.T) {
	for msg, want := range map[string]*bar{
		"taking snapshot: 514 of 1100 MiB (46%)":           {46, 100},
		"members restored 1/3":                             {1, 3},
		"fetched etcd-0 10 of 40 KiB, etcd-1 30 of 40 KiB": {40, 80},
		"queued": nil,
	} {
		got := progressOf(msg)
		if (got == nil) != (want == nil) || (got != nil && *got != *want) {
			t.Errorf("progressOf(%q) = %v, want %v", msg, got, want)
		}
	}
}
