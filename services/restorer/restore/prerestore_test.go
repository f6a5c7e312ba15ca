package restore

import (
	"context"
	"strings"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/etcdtest"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// preRestoreFixture is a locked cluster whose etcd answers at endpoint.
func preRestoreFixture(t *testing.T, endpoint string) (*phaseFixture, *Reconciler) {
	t.Helper()
	f := newPhaseFixture(t)
	f.cluster.Annotations = map[string]string{kubermaticv1.AnnotationActiveRestore: Lock(f.rs)}
	f.etcd = endpoint
	start := metav1.NewTime(f.now)
	f.rs.Status.StartTime = &start
	r, _ := f.build()
	r.Opts.PreRestoreBackup, r.Opts.PreRestoreTimeout, r.Opts.Poll = true, time.Minute, time.Second
	return f, r
}

func preRestoreConfig(t *testing.T, r *Reconciler, f *phaseFixture) (*kubermaticv1.EtcdBackupConfig, error) {
	t.Helper()
	var cfg kubermaticv1.EtcdBackupConfig
	err := r.Client.Get(context.Background(), types.NamespacedName{Namespace: f.rs.Namespace,
		Name: kubermaticv1.PreRestoreConfig(f.rs.Name)}, &cfg)
	return &cfg, err
}

// With a healthy etcd the restore first creates its pre-restore config and waits (nothing
// verified, nothing paused); once the config's backup completed, it records the backup and
// goes on to verify and pause.
func TestPreRestoreBackupComesBeforeThePause(t *testing.T) {
	f, r := preRestoreFixture(t, etcdtest.Start(t).Endpoint)
	reconcile(t, r, f.rs)
	cfg, err := preRestoreConfig(t, r, f)
	if err != nil {
		t.Fatalf("no pre-restore config: %v", err)
	}
	if !metav1.IsControlledBy(cfg, f.rs) || cfg.Spec.Schedule != "" || cfg.Spec.Cluster.Name != "a" ||
		cfg.Spec.Destination != "s3" || cfg.Labels[LabelPreRestore] != f.rs.Name {
		t.Fatalf("pre-restore config %+v (owners %v, labels %v)", cfg.Spec, cfg.OwnerReferences, cfg.Labels)
	}
	if o := observe(t, r, f.rs); o.paused || o.phase != "" || o.progress != "pre-restore backup" {
		t.Fatalf("while the backup runs: %+v; want not paused, no phase, progress pre-restore backup", o)
	}
	reconcile(t, r, f.rs) // still running: nothing changes
	if o := observe(t, r, f.rs); o.paused {
		t.Fatal("paused before the pre-restore backup completed")
	}
	const backup = "pre-restore-r-2026-11-29T03:00:00"
	cfg.Status.LastBackups = []kubermaticv1.BackupStatus{{BackupName: backup, BackupPhase: kubermaticv1.PhaseCompleted}}
	if err := r.Client.Update(context.Background(), cfg); err != nil { // no status subresource here
		t.Fatal(err)
	}
	reconcile(t, r, f.rs)
	if st := get(t, r, f.rs).EffectiveStatus(); st.PreRestoreBackup != backup {
		t.Fatalf("status %+v, want the pre-restore backup %s recorded", st, backup)
	}
	reconcile(t, r, f.rs)
	if o := observe(t, r, f.rs); !o.paused || o.phase != kubermaticv1.RestorePhaseStarted {
		t.Fatalf("after the pre-restore backup: %+v; want verified, paused, Started", o)
	}
}

// Without a pre-restore backup the restore goes on, and says why: an etcd that does not
// answer (no config is created), a backup that failed, or one that cannot run.
func TestPreRestoreBackupSkipped(t *testing.T) {
	for _, tc := range []struct {
		name   string
		etcd   bool
		status kubermaticv1.EtcdBackupConfigStatus
		says   string
	}{
		{name: "etcd down", says: "etcd is not healthy"},
		{name: "the backup failed", etcd: true, says: "failed (snapshot: boom)",
			status: kubermaticv1.EtcdBackupConfigStatus{LastBackups: []kubermaticv1.BackupStatus{{
				BackupName: "pre-restore-r-2026-11-29T03:00:00", BackupPhase: kubermaticv1.PhaseFailed,
				BackupMessage: "snapshot: boom"}}}},
		{name: "the backup cannot run", etcd: true, says: "cannot run (ClusterPaused",
			status: kubermaticv1.EtcdBackupConfigStatus{Conditions: map[string]kubermaticv1.EtcdBackupConfigCondition{
				kubermaticv1.ConditionSchedulingActive: {Status: corev1.ConditionFalse, Reason: "ClusterPaused",
					Message: "paused"}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			endpoint := "http://127.0.0.1:1"
			if tc.etcd {
				endpoint = etcdtest.Start(t).Endpoint
			}
			f, r := preRestoreFixture(t, endpoint)
			reconcile(t, r, f.rs)
			if tc.etcd {
				cfg, err := preRestoreConfig(t, r, f)
				if err != nil {
					t.Fatalf("%v; status %+v", err, get(t, r, f.rs).EffectiveStatus())
				}
				cfg.Status = tc.status
				if err := r.Client.Update(context.Background(), cfg); err != nil { // no status subresource here
					t.Fatal(err)
				}
				reconcile(t, r, f.rs)
			} else if _, err := preRestoreConfig(t, r, f); !apierrors.IsNotFound(err) {
				t.Fatalf("a pre-restore config for an etcd that does not answer: %v", err)
			}
			st := get(t, r, f.rs).EffectiveStatus()
			if st.PreRestoreBackup != "" || !strings.Contains(st.PreRestoreSkipped, tc.says) {
				t.Fatalf("status %+v; want no backup, skipped saying %q", st, tc.says)
			}
			reconcile(t, r, f.rs)
			if o := observe(t, r, f.rs); !o.paused || o.phase != kubermaticv1.RestorePhaseStarted {
				t.Fatalf("after skipping: %+v; want the restore gone on to Started", o)
			}
		})
	}
}

// A pre-restore backup not done within PreRestoreTimeout of the lock is given up on.
func TestPreRestoreBackupTimesOut(t *testing.T) {
	f, r := preRestoreFixture(t, etcdtest.Start(t).Endpoint)
	reconcile(t, r, f.rs)
	if _, err := preRestoreConfig(t, r, f); err != nil {
		t.Fatal(err)
	}
	later := f.now.Add(2 * time.Minute)
	r.Now = func() time.Time { return later }
	reconcile(t, r, f.rs)
	if st := get(t, r, f.rs).EffectiveStatus(); !strings.Contains(st.PreRestoreSkipped, "did not complete within 1m0s") {
		t.Fatalf("status %+v, want the backup given up on", st)
	}
}
