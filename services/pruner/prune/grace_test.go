package prune

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	backupv1 "github.com/etcd-backup/etcdbackup/api/etcdbackup/v1"
	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/natstest"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

const grace = 7 * 24 * time.Hour

// deleteConfig creates cfg (with its status and the finalizer) and deletes it.
func deleteConfig(t *testing.T, c client.Client, cfg *kubermaticv1.EtcdBackupConfig) {
	t.Helper()
	ctx := context.Background()
	cfg.Finalizers = []string{kubermaticv1.DeleteAllBackupsFinalizer}
	status := cfg.Status
	if err := c.Create(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	cfg.Status = status
	if err := c.Status().Update(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(cfg), cfg); err != nil || cfg.DeletionTimestamp == nil {
		t.Fatalf("config %s not being deleted: %v", cfg.Name, err)
	}
}

func exists(t *testing.T, b destination.Bucket, key string) bool {
	t.Helper()
	_, err := b.Stat(context.Background(), key)
	if err != nil && !errors.Is(err, destination.ErrObjectNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

// A deleted config with a grace period: the backups retention would delete go at once, the
// ones it keeps are recorded in a DeletedBackupSet (newest first, expiring grace after the
// deletion) and the config is released. The set keeps them until it expires; then it waits
// for a restore that reads one of them, and deletes them when the restore has ended.
func TestDeletedConfigKeepsItsBackupsForTheGrace(t *testing.T) {
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "cluster-c", UID: "ns-uid"}}
	p, cfg, s3 := fixture(t, ns)
	p.Grace, p.JS = grace, natstest.Bus(t, 8<<20)
	var names []string
	for i := range 4 {
		names = append(names, backup(t, s3, cfg, i, "new", "new-bucket"))
	}
	c := p.Reader.(client.Client)
	deleteConfig(t, c, cfg)
	rec := events.NewFakeRecorder(10)
	r := &Reconciler{Client: c, API: c, Planner: p, Recorder: rec, Interval: time.Minute, Log: p.Log}
	req := ctrl.Request{NamespacedName: client.ObjectKeyFromObject(cfg)}
	if _, err := r.Reconcile(ctx, req); err != nil {
		t.Fatal(err)
	}
	var sets backupv1.DeletedBackupSetList
	if err := c.List(ctx, &sets); err != nil || len(sets.Items) != 0 {
		t.Fatalf("a set was recorded (%v) before the backups retention deletes were gone", err)
	}
	b := s3.Bucket(t, "new-bucket")
	l, err := p.Decide(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(l.Decision.Delete); got != 2 {
		t.Fatalf("deletions %+v, want the two oldest", l.Decision.Delete)
	}
	for _, d := range l.Decision.Delete { // what the Deleter does
		if err := b.Delete(ctx, d.Key); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Reconcile(ctx, req); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, req.NamespacedName, &kubermaticv1.EtcdBackupConfig{}); !apierrors.IsNotFound(err) {
		t.Fatalf("config not released: %v", err)
	}
	var set backupv1.DeletedBackupSet
	name := types.NamespacedName{Name: backupv1.DeletedBackupSetName(cfg.Namespace, cfg.Name, cfg.UID)}
	if err := c.Get(ctx, name, &set); err != nil {
		t.Fatal(err)
	}
	s := set.Spec
	if len(s.Backups) != 2 || s.Backups[0].Name != names[3] || s.Backups[1].Name != names[2] ||
		s.Backups[0].Destination != "new" || s.NamespaceUID != "ns-uid" || s.ConfigUID != cfg.UID || s.Cluster != "c" ||
		!s.Expires.Time.Equal(s.DeletedAt.Add(grace)) || len(set.Finalizers) != 1 {
		t.Fatalf("set %+v (finalizers %v), want backups %s and %s of namespace uid ns-uid, expiring 7 days after the "+
			"deletion", s, set.Finalizers, names[3], names[2])
	}
	if !strings.Contains(<-rec.Events, "BackupsKept") {
		t.Error("no BackupsKept event on the config")
	}

	now := s.DeletedAt.Add(time.Hour)
	g := &Grace{Client: c, Destinations: p.Destinations, Recorder: rec, Metrics: p.Metrics, Log: p.Log,
		Now: func() time.Time { return now }}
	greq := ctrl.Request{NamespacedName: name}
	res, err := g.Reconcile(ctx, greq)
	if err != nil {
		t.Fatal(err)
	}
	if res.RequeueAfter != grace-time.Hour {
		t.Errorf("requeued after %s, want at the expiry, %s", res.RequeueAfter, grace-time.Hour)
	}
	if err := c.Get(ctx, name, &set); err != nil || set.Status.Phase != backupv1.DeletedPhaseKept ||
		set.Status.Backups != 2 || set.Status.Newest != names[3] {
		t.Fatalf("status %+v (%v), want Kept, 2 backups, newest %s", set.Status, err, names[3])
	}
	inGrace := p.Metrics.grace.WithLabelValues("cluster-c", "cfg")
	if v := testutil.ToFloat64(inGrace); v != 2 {
		t.Errorf("etcdbackup_backups_in_grace %v, want 2", v)
	}
	for _, k := range []string{s.Backups[0].ObjectKey, s.Backups[1].ObjectKey} {
		if !exists(t, b, k) {
			t.Fatalf("%s deleted during the grace", k)
		}
	}

	// A restore elsewhere reads the newest of them: expired, the set waits for it.
	rs := &kubermaticv1.EtcdRestore{ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-d", Name: "undo",
		Annotations: map[string]string{backupv1.AnnotationDeletedBackups: set.Name}},
		Spec: kubermaticv1.EtcdRestoreSpec{BackupName: names[3]}}
	if err := c.Create(ctx, rs); err != nil {
		t.Fatal(err)
	}
	now = s.Expires.Time
	for range 2 { // the expiry deletes the set; its finalizer then waits
		if _, err := g.Reconcile(ctx, greq); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Get(ctx, name, &set); err != nil || set.DeletionTimestamp == nil ||
		!strings.Contains(set.Status.Message, "cluster-d/undo") {
		t.Fatalf("expired set %+v (%v), want it deleted and waiting for restore cluster-d/undo", set.Status, err)
	}
	if !exists(t, b, s.Backups[0].ObjectKey) {
		t.Fatal("the backup a restore reads was deleted")
	}
	rs.Status.Phase = kubermaticv1.RestorePhaseCompleted
	if err := c.Update(ctx, rs); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Reconcile(ctx, greq); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{s.Backups[0].ObjectKey, s.Backups[1].ObjectKey} {
		if exists(t, b, k) {
			t.Errorf("%s still there after the grace", k)
		}
	}
	if err := c.Get(ctx, name, &set); !apierrors.IsNotFound(err) {
		t.Errorf("set still there: %v", err)
	}
	if n := testutil.CollectAndCount(p.Metrics.grace); n != 0 {
		t.Errorf("etcdbackup_backups_in_grace still has %d series", n)
	}
}

// Without a grace period a config's deletion deletes every backup (KKP's way): no set.
func TestNoGraceDeletesEveryBackup(t *testing.T) {
	ctx := context.Background()
	p, cfg, s3 := fixture(t)
	p.JS = natstest.Bus(t, 8<<20)
	for i := range 3 {
		backup(t, s3, cfg, i, "new", "new-bucket")
	}
	c := p.Reader.(client.Client)
	deleteConfig(t, c, cfg)
	l, err := p.Decide(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Decision.Delete) != 3 || len(l.Decision.Graced) != 0 {
		t.Fatalf("delete %d, graced %d; want all 3 deleted", len(l.Decision.Delete), len(l.Decision.Graced))
	}
}

// A config re-created with the same name and cluster takes its predecessor's backups back:
// the set goes, the backups stay (its retention lists them).
func TestARecreatedConfigAdoptsItsBackups(t *testing.T) {
	ctx := context.Background()
	p, cfg, s3 := fixture(t)
	name := backup(t, s3, cfg, 0, "new", "new-bucket")
	set := &backupv1.DeletedBackupSet{
		ObjectMeta: metav1.ObjectMeta{Name: backupv1.DeletedBackupSetName(cfg.Namespace, cfg.Name, "old-uid"),
			Finalizers: []string{backupv1.DeletedBackupSetFinalizer}},
		Spec: backupv1.DeletedBackupSetSpec{Namespace: cfg.Namespace, Config: cfg.Name, ConfigUID: "old-uid", Cluster: "c",
			DeletedAt: metav1.NewTime(t0), Expires: metav1.NewTime(t0.Add(grace)),
			Backups: []backupv1.DeletedBackup{{Name: name, Destination: "new", ObjectKey: cfg.Status.LastBackups[0].ObjectKey}}},
	}
	c := p.Reader.(client.Client)
	if err := c.Create(ctx, set); err != nil {
		t.Fatal(err)
	}
	rec := events.NewFakeRecorder(10)
	g := &Grace{Client: c, Destinations: p.Destinations, Recorder: rec, Metrics: p.Metrics, Log: p.Log,
		Now: func() time.Time { return t0 }}
	greq := ctrl.Request{NamespacedName: client.ObjectKeyFromObject(set)}
	// Another cluster's config of the same name does not adopt them.
	other := cfg.DeepCopy()
	other.Spec.Cluster.Name = "other"
	if err := c.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Reconcile(ctx, greq); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, greq.NamespacedName, set); err != nil {
		t.Fatalf("a config of another cluster took the set: %v", err)
	}
	if err := c.Delete(ctx, other); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, cfg.DeepCopy()); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Reconcile(ctx, greq); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, greq.NamespacedName, set); !apierrors.IsNotFound(err) {
		t.Fatalf("set still there after its config was re-created: %v", err)
	}
	if !exists(t, s3.Bucket(t, "new-bucket"), cfg.Status.LastBackups[0].ObjectKey) {
		t.Fatal("the adopted backup was deleted")
	}
	if ev := <-rec.Events; !strings.Contains(ev, "BackupsAdopted") {
		t.Errorf("event %q, want BackupsAdopted", ev)
	}
}

// A set whose recorded key is not its config's (written by hand) deletes nothing there: the
// key is derived from the set's config, and that backup is left, with a Warning Event.
func TestASetDeletesOnlyItsConfigsKeys(t *testing.T) {
	ctx := context.Background()
	p, cfg, s3 := fixture(t)
	name := backup(t, s3, cfg, 0, "new", "new-bucket")
	victim := backupname.ObjectKey("victim", "cluster-victim", "daily", "daily-2026-11-29T02:00:00")
	if err := s3.Bucket(t, "new-bucket").Put(ctx, victim, strings.NewReader("theirs"), 6,
		destination.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	set := &backupv1.DeletedBackupSet{
		ObjectMeta: metav1.ObjectMeta{Name: "forged", Finalizers: []string{backupv1.DeletedBackupSetFinalizer}},
		Spec: backupv1.DeletedBackupSetSpec{Namespace: cfg.Namespace, Config: cfg.Name, ConfigUID: "old-uid", Cluster: "c",
			Expires: metav1.NewTime(t0), Backups: []backupv1.DeletedBackup{{Name: name, Destination: "new",
				ObjectKey: victim}}},
	}
	c := p.Reader.(client.Client)
	if err := c.Create(ctx, set); err != nil {
		t.Fatal(err)
	}
	rec := events.NewFakeRecorder(10)
	g := &Grace{Client: c, Destinations: p.Destinations, Recorder: rec, Metrics: p.Metrics, Log: p.Log,
		Now: func() time.Time { return t0.Add(time.Hour) }}
	req := ctrl.Request{NamespacedName: client.ObjectKeyFromObject(set)}
	for range 2 { // expired: deleted, then its finalizer
		if _, err := g.Reconcile(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	if !exists(t, s3.Bucket(t, "new-bucket"), victim) {
		t.Fatal("a forged set deleted another config's backup")
	}
	if ev := <-rec.Events; !strings.Contains(ev, "BackupNotTheConfigs") {
		t.Errorf("event %q, want BackupNotTheConfigs", ev)
	}
}
