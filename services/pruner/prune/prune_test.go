package prune

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	backupv1 "github.com/etcd-backup/etcdbackup/api/etcdbackup/v1"
	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/kube"
	"github.com/etcd-backup/etcdbackup/pkg/natstest"
	"github.com/etcd-backup/etcdbackup/pkg/s3test"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

var t0 = time.Date(2026, 11, 29, 2, 0, 0, 0, time.UTC)

// fixture: config cluster-c/cfg of cluster c, keep 2, now in destination "new"; the Seed
// also configures "old" (another bucket), where its first backups went.
func fixture(t *testing.T, objs ...client.Object) (*Planner, *kubermaticv1.EtcdBackupConfig, *s3test.Server) {
	t.Helper()
	s3 := s3test.Run(t, "old-bucket", "new-bucket")
	keep := 2
	cfg := &kubermaticv1.EtcdBackupConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-c", Name: "cfg", UID: "cfg-uid"},
		Spec: kubermaticv1.EtcdBackupConfigSpec{Cluster: corev1.ObjectReference{Name: "c"}, Schedule: "@every 1m",
			Keep: &keep, Destination: "new"},
	}
	creds := &corev1.SecretReference{Namespace: "kubermatic", Name: "s3"}
	scheme, err := kube.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithStatusSubresource(&kubermaticv1.EtcdBackupConfig{},
		&backupv1.DeletedBackupSet{}).WithObjects(
		append([]client.Object{
			&kubermaticv1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: "c"}},
			&kubermaticv1.Seed{ObjectMeta: metav1.ObjectMeta{Namespace: "kubermatic", Name: "kubermatic"},
				Spec: kubermaticv1.SeedSpec{EtcdBackupRestore: &kubermaticv1.EtcdBackupRestore{
					Destinations: map[string]*kubermaticv1.BackupDestination{
						"old": {Endpoint: s3.Endpoint, BucketName: "old-bucket", Credentials: creds},
						"new": {Endpoint: s3.Endpoint, BucketName: "new-bucket", Credentials: creds},
					},
				}}},
			&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "kubermatic", Name: "s3"}, Data: map[string][]byte{
				kubermaticv1.SecretAccessKeyID:     []byte(s3test.AccessKey),
				kubermaticv1.SecretSecretAccessKey: []byte(s3test.SecretKey)}},
		}, objs...)...).Build()
	p := &Planner{
		Destinations: destination.NewResolver(c, destination.Source{Seed: types.NamespacedName{Namespace: "kubermatic",
			Name: "kubermatic"}}),
		Reader: c, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: func() time.Time { return t0 },
		Metrics: NewMetrics(prometheus.NewRegistry()),
	}
	return p, cfg, s3
}

// backup stores backup i (scheduled t0+i min) of cfg in bucket, and lists it in status as
// Completed in destination dest.
func backup(t *testing.T, s3 *s3test.Server, cfg *kubermaticv1.EtcdBackupConfig, i int, dest, bucket string) string {
	t.Helper()
	at := t0.Add(time.Duration(i) * time.Minute)
	name := backupname.Backup(cfg.Name, at)
	key := backupname.ObjectKey("c", cfg.Namespace, cfg.Name, name)
	if err := s3.Bucket(t, bucket).Put(context.Background(), key, bytes.NewReader([]byte("x")), 1,
		destination.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg.Status.LastBackups = append(cfg.Status.LastBackups, kubermaticv1.BackupStatus{
		BackupName: name, ScheduledTime: metav1.NewTime(at), BackupPhase: kubermaticv1.PhaseCompleted, Destination: dest,
		ObjectKey: key})
	return name
}

// After spec.destination changed from old to new, the planner lists both: nothing in old is
// "vanished", retention deletes the oldest from old, where they are.
func TestDecideListsEveryDestinationStatusRecords(t *testing.T) {
	p, cfg, s3 := fixture(t)
	b0 := backup(t, s3, cfg, 0, "old", "old-bucket")
	b1 := backup(t, s3, cfg, 1, "old", "old-bucket")
	backup(t, s3, cfg, 2, "new", "new-bucket")
	backup(t, s3, cfg, 3, "new", "new-bucket")
	l, err := p.Decide(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Objects) != 4 || len(l.Destinations) != 2 || len(l.Decision.Vanished) != 0 {
		t.Fatalf("listed %d objects in %d destinations, %d vanished; want 4 in 2, none vanished", len(l.Objects),
			len(l.Destinations), len(l.Decision.Vanished))
	}
	d := l.Decision.Delete
	if len(d) != 2 || d[0].Backup != b0 || d[1].Backup != b1 || d[0].Destination != "old" || d[1].Destination != "old" {
		t.Fatalf("delete %+v, want %s and %s from old", d, b0, b1)
	}
}

// A destination status records that the Seed no longer configures is reported, not listed,
// and its backups are not "vanished".
func TestDecideReportsADestinationNoLongerConfigured(t *testing.T) {
	p, cfg, s3 := fixture(t)
	backup(t, s3, cfg, 0, "gone", "old-bucket")
	backup(t, s3, cfg, 1, "new", "new-bucket")
	l, err := p.Decide(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := l.Unreachable["gone"]; !ok || len(l.Decision.Vanished) != 0 {
		t.Fatalf("unreachable %v, vanished %v; want gone unreachable, nothing vanished", l.Unreachable, l.Decision.Vanished)
	}
}

// A backup an unfinished EtcdRestore names, or that the restore holding the cluster's lock
// names, is held; a finished restore holds nothing; a restore in another namespace holds
// nothing of this config.
func TestRestoresHoldTheirBackups(t *testing.T) {
	restoreOf := func(ns, name, backup, phase string) *kubermaticv1.EtcdRestore {
		return &kubermaticv1.EtcdRestore{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec:   kubermaticv1.EtcdRestoreSpec{Cluster: corev1.ObjectReference{Name: "c"}, BackupName: backup},
			Status: kubermaticv1.EtcdRestoreStatus{Phase: phase}}
	}
	b := func(i int) string { return backupname.Backup("cfg", t0.Add(time.Duration(i)*time.Minute)) }
	for _, tc := range []struct {
		name string
		objs []client.Object
		lock string
		want []string
	}{
		{"an unfinished restore", []client.Object{restoreOf("cluster-c", "r", b(0), kubermaticv1.RestorePhaseStarted)}, "",
			[]string{b(0)}},
		{"one not started yet", []client.Object{restoreOf("cluster-c", "r", b(0), "")}, "", []string{b(0)}},
		{"a completed restore", []client.Object{restoreOf("cluster-c", "r", b(0), kubermaticv1.RestorePhaseCompleted)}, "",
			nil},
		{"a failed restore", []client.Object{restoreOf("cluster-c", "r", b(0), kubermaticv1.RestorePhaseFailed)}, "", nil},
		{"another namespace", []client.Object{restoreOf("cluster-x", "r", b(0), kubermaticv1.RestorePhaseStarted)}, "", nil},
		{"another config's backup", []client.Object{restoreOf("cluster-c", "r", backupname.Backup("other", t0),
			kubermaticv1.RestorePhaseStarted)}, "", nil},
		// The restore that holds the cluster's lock writes Completed after it unlocks; while
		// the lock is there its backup is held, whatever its status says.
		{"the lock holder's", []client.Object{restoreOf("cluster-c", "r", b(0), kubermaticv1.RestorePhaseCompleted)},
			"cluster-c/r", []string{b(0)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, cfg, s3 := fixture(t, tc.objs...)
			for i := range 4 {
				backup(t, s3, cfg, i, "new", "new-bucket")
			}
			if tc.lock != "" {
				patch := []byte(`{"metadata":{"annotations":{"` + kubermaticv1.AnnotationActiveRestore + `":"` + tc.lock + `"}}}`)
				if err := p.Reader.(client.Client).Patch(context.Background(),
					&kubermaticv1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: "c"}}, client.RawPatch(types.MergePatchType,
						patch)); err != nil {
					t.Fatal(err)
				}
			}
			l, err := p.Decide(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			var held []string
			for _, h := range l.Decision.Held {
				held = append(held, h.Backup)
			}
			if len(held) != len(tc.want) || len(tc.want) == 1 && held[0] != tc.want[0] {
				t.Fatalf("held %v, want %v", held, tc.want)
			}
			if want := 2 - len(tc.want); len(l.Decision.Delete) != want {
				t.Fatalf("deletes %d, want %d", len(l.Decision.Delete), want)
			}
		})
	}
}

// A config being deleted keeps its finalizer while status records backups in a destination
// the Seed no longer configures (they cannot be listed, so their prefix cannot be shown
// empty), and says why; once that destination is configured again and empty, it goes.
func TestDeletionWaitsForEveryDestinationStatusRecords(t *testing.T) {
	ctx := context.Background()
	p, cfg, s3 := fixture(t)
	backup(t, s3, cfg, 0, "gone", "old-bucket")
	if err := s3.Bucket(t, "old-bucket").Delete(ctx, cfg.Status.LastBackups[0].ObjectKey); err != nil {
		t.Fatal(err)
	}
	c := p.Reader.(client.Client)
	deleteConfig(t, c, cfg)
	js := natstest.Bus(t, 8<<20)
	p.JS = js
	r := &Reconciler{Client: c, Planner: p, Recorder: events.NewFakeRecorder(10), Interval: time.Minute, Log: p.Log}
	req := ctrl.Request{NamespacedName: client.ObjectKeyFromObject(cfg)}
	if _, err := r.Reconcile(ctx, req); err != nil {
		t.Fatal(err)
	}
	var got kubermaticv1.EtcdBackupConfig
	if err := c.Get(ctx, req.NamespacedName, &got); err != nil {
		t.Fatalf("the config went while a destination of its backups is not configured: %v", err)
	}
	cond := got.Status.Condition(kubermaticv1.ConditionBackupsDeleted)
	if cond == nil || cond.Reason != "DestinationUnreachable" || !strings.Contains(cond.Message, "[gone]") {
		t.Fatalf("condition %+v, want DestinationUnreachable naming destination gone", cond)
	}
	// Configured again (and empty there): the config goes.
	var seed kubermaticv1.Seed
	if err := c.Get(ctx, types.NamespacedName{Namespace: "kubermatic", Name: "kubermatic"}, &seed); err != nil {
		t.Fatal(err)
	}
	seed.Spec.EtcdBackupRestore.Destinations["gone"] = seed.Spec.EtcdBackupRestore.Destinations["old"]
	if err := c.Update(ctx, &seed); err != nil {
		t.Fatal(err)
	}
	p.Destinations = destination.NewResolver(c, destination.Source{Seed: types.NamespacedName{Namespace: "kubermatic",
		Name: "kubermatic"}})
	if _, err := r.Reconcile(ctx, req); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, req.NamespacedName, &got); !apierrors.IsNotFound(err) {
		t.Fatalf("after its destinations are empty the config is still there: %v", err)
	}
}

// A destination whose bucket does not exist is a configuration error, with the reason the
// uploader, restorer and drill give it: a deletion there is Failed for good, a stored-backup
// message is not retried, and the reconciler waits for its next pass instead of retrying.
func TestMissingBucketIsAConfigurationError(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, cfg, s3 := fixture(t)
	c := p.Reader.(client.Client)
	var seed kubermaticv1.Seed
	if err := c.Get(ctx, types.NamespacedName{Namespace: "kubermatic", Name: "kubermatic"}, &seed); err != nil {
		t.Fatal(err)
	}
	missing := *seed.Spec.EtcdBackupRestore.Destinations["new"]
	missing.BucketName = "missing-bucket"
	seed.Spec.EtcdBackupRestore.Destinations["missing"] = &missing
	if err := c.Update(ctx, &seed); err != nil {
		t.Fatal(err)
	}
	name := backup(t, s3, cfg, 0, "new", "new-bucket")
	cfg.Spec.Destination = "missing"
	if err := c.Create(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	js := natstest.Bus(t, 8<<20)
	p.JS = js
	m := bus.NewMetrics(prometheus.NewRegistry())
	want := `bucket "missing-bucket" of destination "missing" does not exist`

	t.Run("reconciler", func(t *testing.T) {
		r := &Reconciler{Client: c, Planner: p, Recorder: events.NewFakeRecorder(10), Interval: time.Minute, Log: p.Log}
		res, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(cfg)})
		if err != nil || res.RequeueAfter != time.Minute {
			t.Fatalf("reconcile: %+v, %v; want the next pass in a minute and no error to retry", res, err)
		}
	})
	t.Run("stored backup", func(t *testing.T) {
		stored := &etcdbackupv1.BackupStored{
			Request: request(cfg, name), ObjectKey: backupname.ObjectKey("c", cfg.Namespace, cfg.Name, name),
			Bucket: "missing-bucket",
			Size:   1, Sha256: strings.Repeat("ab", 32), SnapshotSize: 544, SnapshotSha256: strings.Repeat("cd", 32),
		}
		err := (&Stored{Reader: c, Planner: p}).Handler(5)(ctx, deliver(t, ctx, js, bus.SubjectBackupStored,
			bus.ConsumerPruner, stored))
		if !bus.IsPermanent(err) || destination.Reason(err) != "BucketNotFound" || !strings.Contains(err.Error(), want) {
			t.Fatalf("err = %v, want a permanent BucketNotFound", err)
		}
	})
	t.Run("deletion", func(t *testing.T) {
		del := &etcdbackupv1.DeleteRequested{
			Config: configRef(cfg), Cluster: "c", BackupName: name, DeleteJobName: backupname.DeleteJob("c", cfg.Name, name),
			Destination: "missing", ObjectKey: backupname.ObjectKey("c", cfg.Namespace, cfg.Name, name),
			Reason:        bus.DeleteReasonRetention,
			ScheduledTime: timestamppb.New(t0),
		}
		d := &Deleter{Reader: c, Planner: p, JS: js, Destinations: p.Destinations, Bus: m, Log: p.Log, Metrics: p.Metrics}
		err := d.Handler(5)(ctx, deliver(t, ctx, js, bus.SubjectDeleteRequested, bus.ConsumerDeleter, del))
		if !bus.IsPermanent(err) || destination.Reason(err) != "BucketNotFound" {
			t.Fatalf("err = %v, want a permanent BucketNotFound", err)
		}
		if n := testutil.ToFloat64(m.Failures("delete", "BucketNotFound")); n != 1 {
			t.Fatalf("failures{delete,BucketNotFound} = %v, want 1", n)
		}
		s, err := js.Stream(ctx, bus.StreamStatus)
		if err != nil {
			t.Fatal(err)
		}
		last, err := s.GetLastMsgForSubject(ctx, bus.StatusSubject(etcdbackupv1.Stage_STAGE_PRUNER))
		if err != nil {
			t.Fatal(err)
		}
		var ev etcdbackupv1.StatusEvent
		if err := bus.Decode(last.Data, last.Header.Get(bus.HeaderContentType), &ev); err != nil {
			t.Fatal(err)
		}
		if ev.GetPhase() != etcdbackupv1.Phase_PHASE_FAILED ||
			ev.GetMessage() != "delete: list c/cluster-c/cfg/ in destination \"missing\": "+want {
			t.Fatalf("status %v, want the deletion Failed because the bucket does not exist", &ev)
		}
	})
}

func request(cfg *kubermaticv1.EtcdBackupConfig, backup string) *etcdbackupv1.BackupRequested {
	return &etcdbackupv1.BackupRequested{
		Config: configRef(cfg), Cluster: cfg.Spec.Cluster.Name, BackupName: backup, JobName: backupname.Job("c", cfg.Name,
			backup),
		ObjectKey: backupname.ObjectKey("c", cfg.Namespace, cfg.Name, backup), ScheduledTime: timestamppb.New(t0),
		Trigger: etcdbackupv1.Trigger_TRIGGER_SCHEDULE, Destination: "missing",
	}
}

// deliver publishes m on subject and returns it as the durable consumer delivers it.
func deliver(t *testing.T, ctx context.Context, js jetstream.JetStream, subject, durable string,
	m proto.Message) jetstream.Msg {
	t.Helper()
	if _, err := bus.Publish(ctx, js, subject, "", m); err != nil {
		t.Fatal(err)
	}
	c, err := bus.Consumer(ctx, js, durable, 5)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := c.Fetch(1)
	if err != nil {
		t.Fatal(err)
	}
	msg := <-batch.Messages()
	if msg == nil {
		t.Fatal("no message")
	}
	return msg
}

// Status is patched about three times a backup, and every status interval by the journal: no
// retention pass (a listing of the config's prefix) follows a change of status alone, and one
// follows a change of the spec, the annotations or the deletion.
func TestRetentionIgnoresStatusOnlyUpdates(t *testing.T) {
	old := &kubermaticv1.EtcdBackupConfig{ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-a", Name: "daily",
		ResourceVersion: "1"}, Spec: kubermaticv1.EtcdBackupConfigSpec{Schedule: "@every 20m"}}
	window := old.DeepCopy()
	window.ResourceVersion = "2"
	window.Status.SetCondition(kubermaticv1.ConditionContinuousBackup, corev1.ConditionTrue,
		kubermaticv1.ReasonRestorable, "restorable from … to …", metav1.Now())
	stored := window.DeepCopy()
	stored.ResourceVersion = "3"
	stored.Status.LastBackups = append(stored.Status.LastBackups, kubermaticv1.BackupStatus{BackupName: "daily-1",
		BackupPhase: kubermaticv1.PhaseCompleted})
	for name, n := range map[string]*kubermaticv1.EtcdBackupConfig{"a new window": window, "a stored backup": stored} {
		if !OnlyStatusChanged(old, n) {
			t.Errorf("%s made a retention pass", name)
		}
	}
	keep := window.DeepCopy()
	three := 3
	keep.Spec.Keep = &three
	annotated := window.DeepCopy()
	annotated.Annotations = map[string]string{"etcdbackup.k8c.io/retention": "daily=7"}
	deleted := window.DeepCopy()
	now := metav1.Now()
	deleted.DeletionTimestamp = &now
	for name, n := range map[string]*kubermaticv1.EtcdBackupConfig{"keep": keep, "an annotation": annotated,
		"the deletion": deleted} {
		if OnlyStatusChanged(window, n) {
			t.Errorf("%s changed, yet retention would not look", name)
		}
	}
}
