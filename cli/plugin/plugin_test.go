package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

var now = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

// fixture is the plugin with a fake API holding objs, in namespace ns, and what it printed.
func fixture(t *testing.T, ns string, objs ...client.Object) (*Options, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := kubermaticv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := corev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	flags := genericclioptions.NewConfigFlags(false)
	flags.Namespace = &ns
	o := &Options{Flags: flags, Streams: genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out,
		ErrOut: &errOut}, Now: func() time.Time { return now }, Poll: time.Millisecond,
		c: fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).Build()}
	return o, &out, &errOut
}

func config(ns, name, cluster string, backups ...kubermaticv1.BackupStatus) *kubermaticv1.EtcdBackupConfig {
	return &kubermaticv1.EtcdBackupConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: kubermaticv1.EtcdBackupConfigSpec{Cluster: corev1.ObjectReference{Name: cluster}, Schedule: "@every 20m",
			Destination: "s3"},
		Status: kubermaticv1.EtcdBackupConfigStatus{CurrentBackups: backups},
	}
}

func entry(name, phase string, finished time.Time, size, rev int64) kubermaticv1.BackupStatus {
	return kubermaticv1.BackupStatus{BackupName: name, BackupPhase: phase, BackupFinishedTime: metav1.NewTime(finished),
		ScheduledTime: metav1.NewTime(finished.Add(-time.Minute)), Size: size, EtcdRevision: rev,
		ObjectKey: "k/" + name}
}

func TestLsShowsEveryBackupNewestFirstWithTheDrillsVerdict(t *testing.T) {
	cfg := config("cluster-a", "daily", "a",
		entry("daily-1", kubermaticv1.PhaseCompleted, now.Add(-2*time.Hour), 3<<20, 100),
		entry("daily-2", kubermaticv1.PhaseCompleted, now.Add(-time.Hour), 5<<20, 200),
		kubermaticv1.BackupStatus{BackupName: "daily-3", BackupPhase: kubermaticv1.PhaseRunning,
			BackupMessage: "taking snapshot: 5 of 10 MiB (50%)", ScheduledTime: metav1.NewTime(now.Add(-time.Minute))})
	cfg.Annotations = map[string]string{kubermaticv1.AnnotationLastRestorable: "daily-1",
		kubermaticv1.AnnotationContinuous: kubermaticv1.ContinuousOn}
	cfg.Status.Conditions = map[string]kubermaticv1.EtcdBackupConfigCondition{
		kubermaticv1.ConditionBackupRestorable: {Status: corev1.ConditionFalse,
			Message: "backup daily-2 failed its restore drill at 2026-12-06T11:30:00Z: corrupt"},
		kubermaticv1.ConditionContinuousBackup: {Status: corev1.ConditionTrue,
			Message: "restorable from 10:00:00 to 11:59:57 (3s ago)"},
	}
	other := config("cluster-b", "daily", "b", entry("daily-9", kubermaticv1.PhaseCompleted, now, 1, 1))
	o, out, _ := fixture(t, "cluster-a", cfg, other)
	if err := run(o, "ls"); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 5 {
		t.Fatalf("want a header, 3 backups and the window, got:\n%s", out)
	}
	for i, want := range []string{
		"CONFIG BACKUP PHASE SIZE AGE REVISION DESTINATION DRILL",
		"daily daily-3 Running - 60s - s3 -",
		"daily daily-2 Completed 5.0 MiB 60m 200 s3 failed",
		"daily daily-1 Completed 3.0 MiB 120m 100 s3 passed",
	} {
		if got := strings.Join(strings.Fields(lines[i]), " "); got != want {
			t.Errorf("line %d: %q, want %q", i, got, want)
		}
	}
	if !strings.Contains(lines[4], "cluster-a/daily restorable from 10:00:00 to 11:59:57") {
		t.Errorf("window line %q", lines[4])
	}
	if strings.Contains(out.String(), "daily-9") {
		t.Error("a backup of another namespace was listed")
	}

	out.Reset()
	if err := run(o, "ls", "daily", "-o", "json"); err != nil {
		t.Fatal(err)
	}
	var list List
	if err := json.Unmarshal(out.Bytes(), &list); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if len(list.Items) != 1 || len(list.Items[0].Backups) != 3 || list.Items[0].Backups[1].Size != 5<<20 ||
		list.Items[0].Backups[1].Drill != "failed" || list.Items[0].RestorableWindow == "" {
		t.Fatalf("json: %+v", list)
	}

	if err := run(o, "ls", "-o", "xml"); err == nil || !strings.Contains(err.Error(), "want json, yaml or wide") {
		t.Fatalf("-o xml: %v", err)
	}
}

func TestRestoreRefusesWhatWouldNotRestore(t *testing.T) {
	cfg := config("cluster-a", "daily", "a",
		entry("daily-1", kubermaticv1.PhaseCompleted, now.Add(-time.Hour), 3<<20, 100),
		entry("daily-2", kubermaticv1.PhaseFailed, now, 0, 0))
	gone := entry("daily-0", kubermaticv1.PhaseCompleted, now.Add(-3*time.Hour), 1, 1)
	gone.DeletePhase = kubermaticv1.PhaseRunning
	cfg.Status.CurrentBackups = append(cfg.Status.CurrentBackups, gone)
	for _, tc := range []struct {
		name  string
		args  []string
		stdin string
		want  string
	}{
		{"nothing named", []string{"a"}, "", "--backup NAME or --to TIME"},
		{"both named", []string{"a", "--backup", "daily-1", "--to", "revision:5"}, "", "--backup NAME or --to TIME"},
		{"no such backup", []string{"a", "--backup", "nope", "--yes"}, "", `backup "nope" does not exist in namespace`},
		{"a failed backup", []string{"a", "--backup", "daily-2", "--yes"}, "", "daily-2 is Failed"},
		{"a backup being deleted", []string{"a", "--backup", "daily-0", "--yes"}, "", "its deletion Running"},
		{"another cluster's backup", []string{"b", "-n", "cluster-a", "--backup", "daily-1", "--yes"}, "",
			"is of cluster a"},
		{"a bad time", []string{"a", "--to", "yesterday", "--yes"}, "", `--to "yesterday"`},
		{"no continuous config", []string{"a", "--to", "revision:5", "--yes"}, "", "backs up cluster a continuously"},
		{"the wrong answer", []string{"a", "--backup", "daily-1"}, "b\n", "not restored"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, out, _ := fixture(t, "", cfg)
			o.Streams.In = strings.NewReader(tc.stdin)
			err := run(o, append([]string{"restore"}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			var l kubermaticv1.EtcdRestoreList
			if err := o.c.List(context.Background(), &l); err != nil || len(l.Items) != 0 {
				t.Fatalf("restores %v (err %v), want none\n%s", l.Items, err, out)
			}
		})
	}
}

func TestRestoreAsksThenCreatesAndFollows(t *testing.T) {
	cfg := config("cluster-a", "daily", "a", entry("daily-1", kubermaticv1.PhaseCompleted, now.Add(-time.Hour), 3<<20,
		100))
	o, out, _ := fixture(t, "", cfg)
	o.Streams.In = strings.NewReader("a\n")
	// What the restorer would say: the restore's second read finds it restoring, the third done.
	reads := 0
	o.c = interceptor.NewClient(o.c.(client.WithWatch), interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object,
			opts ...client.GetOption) error {
			err := c.Get(ctx, key, obj, opts...)
			if rs, ok := obj.(*kubermaticv1.EtcdRestore); ok && err == nil {
				reads++
				switch reads {
				case 2:
					rs.Status = kubermaticv1.EtcdRestoreStatus{Phase: kubermaticv1.RestorePhaseStsRebuilding,
						Progress: "members restored 1/3"}
				case 3:
					rs.Status = kubermaticv1.EtcdRestoreStatus{Phase: kubermaticv1.RestorePhaseCompleted, Progress: "done"}
				}
			}
			return err
		},
	})
	if err := run(o, "restore", "a", "--backup", "daily-1", "--name", "r1", "--timeout", "10s"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var rs kubermaticv1.EtcdRestore
	if err := o.c.Get(context.Background(), client.ObjectKey{Namespace: "cluster-a", Name: "r1"}, &rs); err != nil {
		t.Fatal(err)
	}
	if rs.Spec.BackupName != "daily-1" || rs.Spec.Cluster.Name != "a" || rs.Spec.Destination != "s3" {
		t.Fatalf("restore spec %+v", rs.Spec)
	}
	for _, want := range []string{"from backup daily-1 of config daily", "etcd revision 100, 3.0 MiB",
		"Type the cluster's name (a)", "EtcdRestore cluster-a/r1 created\nPending\n",
		"[#######.............] StsRebuilding: members restored 1/3\n", "Completed: done"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// A follow that does not see its object end in time says what it still waited for.
func TestRestoreFollowEndsAtItsTimeout(t *testing.T) {
	cfg := config("cluster-a", "daily", "a", entry("daily-1", kubermaticv1.PhaseCompleted, now.Add(-time.Hour), 3<<20,
		100))
	o, out, _ := fixture(t, "", cfg)
	err := run(o, "restore", "a", "--backup", "daily-1", "--name", "r1", "--yes", "--timeout", "20ms")
	if err == nil || !strings.Contains(err.Error(), "restore cluster-a/r1: still Pending when the wait ended") ||
		!strings.Contains(err.Error(), "deadline exceeded") {
		t.Fatalf("err = %v, want the restore still Pending at the deadline\n%s", err, out)
	}
}

// Shell completion offers the names the user may list, in the namespace.
func TestCompletionOffersNamesInTheNamespace(t *testing.T) {
	a := config("cluster-a", "daily", "a", entry("daily-1", kubermaticv1.PhaseCompleted, now, 1, 1))
	b := config("cluster-a", "hourly", "a")
	other := config("cluster-b", "weekly", "b")
	o, out, _ := fixture(t, "cluster-a", a, b, other)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"__complete", "describe", "config", ""}, "daily\nhourly\n:4\n"},
		{[]string{"__complete", "ls", "h"}, "hourly\n:4\n"},
		{[]string{"__complete", "describe", "backup", ""}, "daily-1\n:4\n"},
		{[]string{"__complete", "restore", ""}, "a\n:4\n"},
		{[]string{"__complete", "restore", "a", "--backup", "d"}, "daily-1\n:4\n"},
	} {
		out.Reset()
		if err := run(o, tc.args...); err != nil {
			t.Fatal(err)
		}
		if got := out.String(); !strings.HasPrefix(got, tc.want) {
			t.Errorf("%v: %q, want %q first", tc.args, got, tc.want)
		}
	}
}

// drill asks with the annotation (the request's time) and reports the verdict written after it;
// a config without a completed backup is refused before anything is asked.
func TestDrillAsksAndReportsTheVerdict(t *testing.T) {
	cfg := config("cluster-a", "daily", "a", entry("daily-1", kubermaticv1.PhaseCompleted, now.Add(-time.Hour), 1, 1))
	empty := config("cluster-a", "empty", "a", entry("empty-1", kubermaticv1.PhaseFailed, now, 0, 0))
	o, out, _ := fixture(t, "cluster-a", cfg, empty)
	// What the restorer would do: the config's second read after the request carries the verdict.
	reads := 0
	o.c = interceptor.NewClient(o.c.(client.WithWatch), interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object,
			opts ...client.GetOption) error {
			err := c.Get(ctx, key, obj, opts...)
			if cfg, ok := obj.(*kubermaticv1.EtcdBackupConfig); ok && err == nil &&
				cfg.Annotations[kubermaticv1.AnnotationDrillRequested] != "" {
				if reads++; reads >= 2 {
					cfg.Status.Conditions = map[string]kubermaticv1.EtcdBackupConfigCondition{
						kubermaticv1.ConditionBackupRestorable: {Status: corev1.ConditionTrue, Reason: "DrillPassed",
							LastHeartbeatTime: metav1.NewTime(now.Add(time.Second)),
							Message:           "backup daily-1 restored in a drill"}}
				}
			}
			return err
		},
	})
	if err := run(o, "drill", "daily", "--timeout", "10s"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var got kubermaticv1.EtcdBackupConfig
	if err := o.c.Get(context.Background(), client.ObjectKey{Namespace: "cluster-a", Name: "daily"}, &got); err != nil {
		t.Fatal(err)
	}
	if got.Annotations[kubermaticv1.AnnotationDrillRequested] != now.Format(time.RFC3339) {
		t.Fatalf("annotations %v, want the request at %s", got.Annotations, now.Format(time.RFC3339))
	}
	for _, want := range []string{"drill of cluster-a/daily (newest backup daily-1) requested",
		"DrillPassed (True): backup daily-1 restored in a drill"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	err := run(o, "drill", "empty")
	if err == nil || !strings.Contains(err.Error(), "has no completed backup to drill") {
		t.Fatalf("drill of a config without a completed backup: %v", err)
	}
	if err := o.c.Get(context.Background(), client.ObjectKey{Namespace: "cluster-a", Name: "empty"}, &got); err != nil ||
		got.Annotations[kubermaticv1.AnnotationDrillRequested] != "" {
		t.Fatalf("a refused drill was asked for: %v %v", got.Annotations, err)
	}
}

// run runs the plugin's command line args with o.
func run(o *Options, args ...string) error {
	return Execute(o.root(), args)
}

func TestProgressReadsHowFarAMessageSays(t *testing.T) {
	for msg, want := range map[string]float64{
		"taking snapshot: 514 of 1100 MiB (46%)": 0.46,
		"members restored 1/3":                   1.0 / 3,
		"uploading: 12 of 12 MiB (100%)":         1,
	} {
		got, ok := fraction(msg)
		if !ok || got < want-0.001 || got > want+0.001 {
			t.Errorf("fraction(%q) = %v, %v, want %v", msg, got, ok, want)
		}
	}
	if _, ok := fraction("queued"); ok {
		t.Error("a message without a count has a fraction")
	}
	if got := bar(0.5); got != "[##########..........]" {
		t.Errorf("bar(0.5) = %q", got)
	}
	var w bytes.Buffer
	p := newProgress(&w)
	p.show("Running", "taking snapshot: 5 of 10 MiB (50%)")
	p.show("Running", "taking snapshot: 5 of 10 MiB (50%)")
	p.show("Completed", "stored")
	want := "[##########..........] Running: taking snapshot: 5 of 10 MiB (50%)\nCompleted: stored\n"
	if w.String() != want {
		t.Errorf("progress wrote %q, want %q", w.String(), want)
	}
}

// A Secret's credentials are checked before the bus is dialled, and a bad seed is not echoed.
func TestTriggerCredentialsFromASecret(t *testing.T) {
	seed := "SUAIBDPBAUTWCWBKIO6XHQNINK5FWJW4OHLXC3HQ2KFE4PEJUA44CNHTC4" // a well-formed user seed
	for _, tc := range []struct {
		name string
		data map[string][]byte
		want string
	}{
		{"a seed that is not one", map[string][]byte{SecretNATSNkey: []byte("SUnotaseed"), SecretNATSURL: []byte("x")},
			`no nkey seed of the trigger identity in "nkey"`},
		{"no url", map[string][]byte{SecretNATSNkey: []byte(seed)}, `has no "url"`},
		{"a CA that is not PEM", map[string][]byte{SecretNATSNkey: []byte(seed), SecretNATSURL: []byte("tls://x"),
			SecretNATSCA: []byte("not pem")}, "holds no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, _, _ := fixture(t, "cluster-a", &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-a",
				Name: "trigger"}, Data: tc.data})
			_, err := (&natsFlags{secret: "trigger"}).options(context.Background(), o.c, "cluster-a")
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "SUnotaseed") {
				t.Fatalf("err = %v, want %q without the seed", err, tc.want)
			}
		})
	}
	o, _, _ := fixture(t, "cluster-a", &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-a",
		Name: "trigger"}, Data: map[string][]byte{SecretNATSNkey: []byte(seed), SecretNATSURL: []byte("tls://x")}})
	nf := &natsFlags{secret: "cluster-a/trigger"}
	opts, err := nf.options(context.Background(), o.c, "elsewhere")
	if err != nil || len(opts) != 3 || nf.url != "tls://x" {
		t.Fatalf("options %d, url %q, err %v; want the inbox, the nkey and TLS, and the Secret's url", len(opts), nf.url,
			err)
	}
}

// describe backup shows the object as the bucket records it (status carries the record, so a
// user who cannot read the destination's credentials sees it): the codec and the recipients'
// fingerprints, the snapshot inside, and until when Object Lock retains it; a completed backup
// without a record says so.
func TestDescribeBackupShowsTheObjectInTheBucket(t *testing.T) {
	until := metav1.NewTime(now.Add(30 * time.Hour))
	sealed := entry("daily-2", kubermaticv1.PhaseCompleted, now.Add(-time.Hour), 5<<20, 200)
	sealed.Object = &kubermaticv1.StoredObject{Codec: "zstd+age", Recipients: []string{"0123456789abcdef",
		"fedcba9876543210"}, SnapshotSize: 12 << 20, SnapshotSHA256: strings.Repeat("ab", 32), KeyCount: 1234,
		RetainUntil: &until, LockMode: "COMPLIANCE"}
	plain := entry("daily-1", kubermaticv1.PhaseCompleted, now.Add(-2*time.Hour), 3<<20, 100)
	o, out, _ := fixture(t, "cluster-a", config("cluster-a", "daily", "a", plain, sealed))
	if err := run(o, "describe", "backup", "daily-2"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Object:             zstd+age, encrypted to 0123456789abcdef, fedcba9876543210\n",
		"Snapshot:           12.0 MiB, 1234 keys, sha256 " + strings.Repeat("ab", 32) + "\n",
		"Retained until:     2026-12-07T18:00:00Z (in 30h) (Object Lock, COMPLIANCE)\n",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("describe backup daily-2 does not say %q:\n%s", want, out)
		}
	}
	out.Reset()
	if err := run(o, "describe", "backup", "daily-1"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "Object:             not recorded") ||
		strings.Contains(out.String(), "Retained until") {
		t.Errorf("describe backup daily-1, stored without a record:\n%s", out)
	}
}
