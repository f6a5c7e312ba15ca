package drill

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/kube"
	"github.com/etcd-backup/etcdbackup/pkg/s3test"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

// The controller drills a config's newest completed backup when its schedule says so, and
// records the result: the BackupRestorable condition, an Event, a status event on the bus,
// the metrics, and on success the annotation that keeps the backup from retention. Until the
// schedule's next time it drills nothing.
func TestDrillController(t *testing.T) {
	for _, good := range []bool{true, false} {
		t.Run(map[bool]string{true: "a good backup", false: "a changed backup"}[good], func(t *testing.T) {
			ctx := context.Background()
			s3 := s3test.Run(t, "backups")
			raw, rev, keys := snapshotOf(t, 40)
			at := time.Date(2026, 11, 29, 2, 0, 0, 0, time.UTC)
			name := backupname.Backup("daily", at)
			key := backupname.ObjectKey("c", "cluster-c", "daily", name)
			if !good {
				raw = append([]byte(nil), raw...)
				raw[len(raw)/2] ^= 0x40
			}
			store(t, s3, key, raw, rev, keys)
			cfg := &kubermaticv1.EtcdBackupConfig{
				ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-c", Name: "daily", UID: "daily-uid",
					Annotations: map[string]string{kubermaticv1.AnnotationDrillSchedule: "@every 1h"}},
				Spec: kubermaticv1.EtcdBackupConfigSpec{Cluster: corev1.ObjectReference{Name: "c"}, Schedule: "@every 1h"},
			}
			cfg.Status.SetBackups([]kubermaticv1.BackupStatus{
				{BackupName: backupname.Backup("daily", at.Add(-time.Hour)), BackupPhase: kubermaticv1.PhaseCompleted,
					DeletePhase: kubermaticv1.PhaseCompleted},
				{BackupName: name, BackupPhase: kubermaticv1.PhaseCompleted, Destination: "s3"},
			})
			now := at.Add(10 * time.Minute)
			ctl, c, rec := newController(t, s3, "backups", cfg, func() time.Time { return now })
			var published []*etcdbackupv1.StatusEvent
			ctl.Publish = func(_ context.Context, ev *etcdbackupv1.StatusEvent) { published = append(published, ev) }
			req := ctrl.Request{NamespacedName: client.ObjectKeyFromObject(cfg)}
			res, got := reconcileOnce(t, ctl, c, cfg)
			cond := got.Status.Condition(kubermaticv1.ConditionBackupRestorable)
			wantStatus, wantReason, wantPhase := corev1.ConditionTrue, ReasonPassed, etcdbackupv1.Phase_PHASE_COMPLETED
			if !good {
				wantStatus, wantReason, wantPhase = corev1.ConditionFalse, ReasonFailed, etcdbackupv1.Phase_PHASE_FAILED
			}
			if cond == nil || cond.Status != wantStatus || cond.Reason != wantReason || !strings.Contains(cond.Message, name) {
				t.Fatalf("condition %+v, want %s %s naming %s", cond, wantStatus, wantReason, name)
			}
			if good && (!strings.Contains(cond.Message,
				"40 keys") || got.Annotations[kubermaticv1.AnnotationLastRestorable] != name) {
				t.Fatalf("a passed drill: condition %q, annotations %v", cond.Message, got.Annotations)
			}
			if !good && got.Annotations[kubermaticv1.AnnotationLastRestorable] != "" {
				t.Fatalf("a failed drill marked %q restorable", got.Annotations[kubermaticv1.AnnotationLastRestorable])
			}
			if len(published) != 1 || published[0].GetPhase() != wantPhase ||
				published[0].GetOperation() != etcdbackupv1.Operation_OPERATION_DRILL || published[0].GetBackupName() != name {
				t.Fatalf("published %v", published)
			}
			if ev := <-rec.Events; !strings.Contains(ev, wantReason) {
				t.Fatalf("event %q, want %s", ev, wantReason)
			}
			if res.RequeueAfter <= 0 || res.RequeueAfter > time.Hour {
				t.Fatalf("requeue after %s, want the schedule's next time", res.RequeueAfter)
			}
			// Not due yet: no second drill.
			now = now.Add(30 * time.Minute)
			if res, err := ctl.Reconcile(ctx, req); err != nil || res.RequeueAfter <= 0 {
				t.Fatalf("reconcile before the next drill: %v, %v", res, err)
			}
			if n := drills(ctl); n != 1 {
				t.Fatalf("%d drills ran, want 1 before the schedule's next time", n)
			}
			now = now.Add(31 * time.Minute)
			if _, err := ctl.Reconcile(ctx, req); err != nil {
				t.Fatal(err)
			}
			if n := drills(ctl); n != 2 {
				t.Fatalf("%d drills ran, want 2 once the next time came", n)
			}
		})
	}
}

// A drill asked for by annotation runs once, whatever the schedule (here off), and a config
// is drilled on request at most once every DrillRequestEvery: a later request waits for it.
func TestARequestedDrillRunsOnceAndAtMostEveryTenMinutes(t *testing.T) {
	ctx := context.Background()
	s3 := s3test.Run(t, "backups")
	raw, rev, keys := snapshotOf(t, 10)
	at := time.Date(2026, 11, 29, 2, 0, 0, 0, time.UTC)
	name := backupname.Backup("daily", at)
	store(t, s3, backupname.ObjectKey("c", "cluster-c", "daily", name), raw, rev, keys)
	now := at.Add(10 * time.Minute)
	cfg := &kubermaticv1.EtcdBackupConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-c", Name: "daily", UID: "daily-uid",
			Annotations: map[string]string{kubermaticv1.AnnotationDrillSchedule: "off",
				kubermaticv1.AnnotationDrillRequested: now.Add(-time.Minute).Format(time.RFC3339)}},
		Spec: kubermaticv1.EtcdBackupConfigSpec{Cluster: corev1.ObjectReference{Name: "c"}, Schedule: "@every 1h"},
	}
	cfg.Status.SetBackups([]kubermaticv1.BackupStatus{{BackupName: name, BackupPhase: kubermaticv1.PhaseCompleted,
		Destination: "s3"}})
	ctl, c, _ := newController(t, s3, "backups", cfg, func() time.Time { return now })
	req := ctrl.Request{NamespacedName: client.ObjectKeyFromObject(cfg)}
	ask := func(when time.Time) {
		t.Helper()
		var got kubermaticv1.EtcdBackupConfig
		if err := c.Get(ctx, req.NamespacedName, &got); err != nil {
			t.Fatal(err)
		}
		got.Annotations[kubermaticv1.AnnotationDrillRequested] = when.Format(time.RFC3339)
		if err := c.Update(ctx, &got); err != nil {
			t.Fatal(err)
		}
	}
	reconcile := func() ctrl.Result {
		t.Helper()
		res, err := ctl.Reconcile(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	reconcile()
	if n := drills(ctl); n != 1 {
		t.Fatalf("%d drills after a request with the schedule off, want 1", n)
	}
	// A cache behind the drill's own condition (the update's event comes first) drills nothing again.
	var stale kubermaticv1.EtcdBackupConfig
	if err := c.Get(ctx, req.NamespacedName, &stale); err != nil {
		t.Fatal(err)
	}
	stale.Status.Conditions = nil
	if err := c.Status().Update(ctx, &stale); err != nil {
		t.Fatal(err)
	}
	reconcile()
	if n := drills(ctl); n != 1 {
		t.Fatalf("%d drills after a reconcile that read no condition yet, want 1", n)
	}
	now = now.Add(time.Minute)
	reconcile()
	if n := drills(ctl); n != 1 {
		t.Fatalf("%d drills, want the request answered once", n)
	}
	// Asked again 2 minutes after the last drill: it waits the rest of the 10 minutes.
	ask(now)
	now = now.Add(time.Minute)
	if res := reconcile(); drills(ctl) != 1 || res.RequeueAfter != 8*time.Minute {
		t.Fatalf("%d drills, requeue after %s; want 1 and 8m", drills(ctl), res.RequeueAfter)
	}
	now = now.Add(8 * time.Minute)
	reconcile()
	if n := drills(ctl); n != 2 {
		t.Fatalf("%d drills once 10 minutes passed, want 2", n)
	}
	// A request that is not a time asks for nothing.
	ask(now.Add(time.Hour))
	var got kubermaticv1.EtcdBackupConfig
	if err := c.Get(ctx, req.NamespacedName, &got); err != nil {
		t.Fatal(err)
	}
	got.Annotations[kubermaticv1.AnnotationDrillRequested] = "now please"
	if err := c.Update(ctx, &got); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Hour)
	reconcile()
	if n := drills(ctl); n != 2 {
		t.Fatalf("%d drills after an unreadable request, want 2", n)
	}
}

// drills is how many drills ran to a verdict.
func drills(c *Controller) int {
	return int(testutil.ToFloat64(c.Metrics.drills.WithLabelValues("passed")) + testutil.ToFloat64(
		c.Metrics.drills.WithLabelValues("failed")))
}

// newController returns a Controller of cfg whose destination "s3" is bucket of s3, with the
// client it reads and writes through and its Event recorder.
func newController(t *testing.T, s3 *s3test.Server, bucket string, cfg *kubermaticv1.EtcdBackupConfig,
	now func() time.Time) (*Controller, client.Client, *events.FakeRecorder) {
	t.Helper()
	scheme, err := kube.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithStatusSubresource(&kubermaticv1.EtcdBackupConfig{}).WithObjects(
		cfg,
		&kubermaticv1.Seed{ObjectMeta: metav1.ObjectMeta{Namespace: "kubermatic", Name: "kubermatic"},
			Spec: kubermaticv1.SeedSpec{EtcdBackupRestore: &kubermaticv1.EtcdBackupRestore{
				Destinations: map[string]*kubermaticv1.BackupDestination{"s3": {Endpoint: s3.Endpoint, BucketName: bucket,
					Credentials: &corev1.SecretReference{Name: "s3"}}}}}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "kubermatic", Name: "s3"}, Data: map[string][]byte{
			kubermaticv1.SecretAccessKeyID:     []byte(s3test.AccessKey),
			kubermaticv1.SecretSecretAccessKey: []byte(s3test.SecretKey)}},
	).Build()
	rec := events.NewFakeRecorder(10)
	return &Controller{
		Client: c, Recorder: rec, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Scratch: t.TempDir(),
		Destinations: destination.NewResolver(c, destination.Source{Seed: types.NamespacedName{Namespace: "kubermatic",
			Name: "kubermatic"}}),
		Metrics: NewMetrics(prometheus.NewRegistry()),
		Now:     now,
	}, c, rec
}

// A destination whose bucket does not exist says nothing of the backup: the drill did not
// run (BackupRestorable Unknown, DrillNotRun, naming BucketNotFound as the uploader, pruner
// and restorer do), and it is a configuration error, not tried again before the schedule's
// next time.
func TestDrillOfAMissingBucketDoesNotRun(t *testing.T) {
	s3 := s3test.Run(t)
	at := time.Date(2026, 11, 29, 2, 0, 0, 0, time.UTC)
	name := backupname.Backup("daily", at)
	cfg := &kubermaticv1.EtcdBackupConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-c", Name: "daily", UID: "daily-uid",
			Annotations: map[string]string{kubermaticv1.AnnotationDrillSchedule: "@every 24h"}},
		Spec: kubermaticv1.EtcdBackupConfigSpec{Cluster: corev1.ObjectReference{Name: "c"}, Schedule: "@every 1h"},
	}
	cfg.Status.SetBackups([]kubermaticv1.BackupStatus{{BackupName: name, BackupPhase: kubermaticv1.PhaseCompleted,
		Destination: "s3"}})
	ctl, c, _ := newController(t, s3, "missing-bucket", cfg, func() time.Time { return at.Add(time.Minute) })
	res, got := reconcileOnce(t, ctl, c, cfg)
	cond := got.Status.Condition(kubermaticv1.ConditionBackupRestorable)
	if cond == nil || cond.Status != corev1.ConditionUnknown || cond.Reason != ReasonNotRun ||
		!strings.Contains(cond.Message, "BucketNotFound") ||
		!strings.Contains(cond.Message, `bucket "missing-bucket" of destination "s3" does not exist`) {
		t.Fatalf("condition %+v, want Unknown DrillNotRun naming BucketNotFound", cond)
	}
	if res.RequeueAfter != 24*time.Hour {
		t.Fatalf("requeue after %s, want the schedule's next time (24h), not a retry", res.RequeueAfter)
	}
	if n := testutil.ToFloat64(ctl.Metrics.drills.WithLabelValues("error")); n != 1 {
		t.Fatalf("drills{error} = %v, want 1", n)
	}
}

// reconcileOnce reconciles cfg once and returns the result and the config as it is after.
func reconcileOnce(t *testing.T, ctl *Controller, c client.Client, cfg *kubermaticv1.EtcdBackupConfig) (ctrl.Result,
	*kubermaticv1.EtcdBackupConfig) {
	t.Helper()
	req := ctrl.Request{NamespacedName: client.ObjectKeyFromObject(cfg)}
	res, err := ctl.Reconcile(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	var got kubermaticv1.EtcdBackupConfig
	if err := c.Get(t.Context(), req.NamespacedName, &got); err != nil {
		t.Fatal(err)
	}
	return res, &got
}
