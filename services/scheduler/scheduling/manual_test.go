package scheduling

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/kube"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

type oneDestination struct{}

func (oneDestination) Lookup(context.Context, string) (destination.Destination, error) {
	return destination.Destination{Name: "s3", BucketName: "b"}, nil
}

type queue struct {
	reqs []*etcdbackupv1.BackupRequested
}

func (q *queue) Enqueue(_ context.Context, r *etcdbackupv1.BackupRequested) error {
	q.reqs = append(q.reqs, r)
	return nil
}

// The manual trigger refuses while a backup runs, within the minimum interval of the last
// manual backup (recorded on the config, so every replica sees it), and while the config is
// blocked by TooManyBackups; each refusal says why and queues nothing.
func TestManualRefusals(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	setup := func(t *testing.T, change func(*kubermaticv1.EtcdBackupConfig)) (*Planner, *queue, client.Client) {
		t.Helper()
		scheme, err := kube.NewScheme()
		if err != nil {
			t.Fatal(err)
		}
		keep := 2
		cfg := &kubermaticv1.EtcdBackupConfig{
			ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-c", Name: "daily"},
			Spec: kubermaticv1.EtcdBackupConfigSpec{Cluster: corev1.ObjectReference{Name: "c"}, Schedule: "@every 1h",
				Keep: &keep},
		}
		change(cfg)
		c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(cfg,
			&kubermaticv1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: "c"}}).Build()
		q := &queue{}
		return &Planner{Reader: c, API: c, Destinations: oneDestination{}, Queue: q, ManualInterval: time.Minute}, q, c
	}
	t.Run("a second trigger within the interval is refused, one after it queues", func(t *testing.T) {
		p, q, c := setup(t, func(*kubermaticv1.EtcdBackupConfig) {})
		if _, err := p.Manual(context.Background(), "cluster-c", "daily", now); err != nil {
			t.Fatal(err)
		}
		var cfg kubermaticv1.EtcdBackupConfig
		if err := c.Get(context.Background(), client.ObjectKey{Namespace: "cluster-c", Name: "daily"}, &cfg); err != nil {
			t.Fatal(err)
		}
		if got := cfg.Annotations[kubermaticv1.AnnotationLastManualBackup]; got != now.Format(time.RFC3339) {
			t.Fatalf("last manual backup recorded as %q", got)
		}
		_, err := p.Manual(context.Background(), "cluster-c", "daily", now.Add(59*time.Second))
		if err == nil || !strings.Contains(err.Error(), "trigger-min-interval") {
			t.Fatalf("second trigger within the interval: %v", err)
		}
		if _, err := p.Manual(context.Background(), "cluster-c", "daily", now.Add(61*time.Second)); err != nil {
			t.Fatalf("trigger after the interval: %v", err)
		}
		if len(q.reqs) != 2 {
			t.Fatalf("queued %d backups, want 2", len(q.reqs))
		}
	})
	t.Run("a backup of the same cluster by another config is queued or running", func(t *testing.T) {
		p, q, c := setup(t, func(*kubermaticv1.EtcdBackupConfig) {})
		p.OnePerCluster = true
		hourly := &kubermaticv1.EtcdBackupConfig{ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-c", Name: "hourly"},
			Spec: kubermaticv1.EtcdBackupConfigSpec{Cluster: corev1.ObjectReference{Name: "c"}, Schedule: "@hourly"},
			Status: kubermaticv1.EtcdBackupConfigStatus{LastBackups: []kubermaticv1.BackupStatus{{
				BackupName: "hourly-2026-11-28T12:00:00", BackupPhase: kubermaticv1.PhaseRunning}}}}
		if err := c.Create(context.Background(), hourly); err != nil {
			t.Fatal(err)
		}
		_, err := p.Manual(context.Background(), "cluster-c", "daily", now)
		if err == nil || !strings.Contains(err.Error(), "hourly/hourly-2026-11-28T12:00:00") ||
			!strings.Contains(err.Error(), "one backup of a cluster at a time") || len(q.reqs) != 0 {
			t.Fatalf("trigger while another config's backup of the cluster runs: %v, %d queued; want refused, naming it",
				err, len(q.reqs))
		}
		p.OnePerCluster = false
		if _, err := p.Manual(context.Background(), "cluster-c", "daily", now); err != nil {
			t.Fatalf("without --one-per-cluster: %v", err)
		}
	})
	for _, tc := range []struct {
		name   string
		change func(*kubermaticv1.EtcdBackupConfig)
		says   string
	}{
		{"a running backup", func(c *kubermaticv1.EtcdBackupConfig) {
			c.Status.LastBackups = []kubermaticv1.BackupStatus{{BackupName: "daily-2026-11-28T11:00:00",
				BackupPhase: kubermaticv1.PhaseRunning}}
		}, "is running"},
		{"too many backups", func(c *kubermaticv1.EtcdBackupConfig) {
			for i := range 5 {
				c.Status.LastBackups = append(c.Status.LastBackups, kubermaticv1.BackupStatus{BackupName: string(rune('a' + i)),
					BackupPhase: kubermaticv1.PhaseCompleted})
			}
		}, "TooManyBackups"},
		{"keep 0 (KKP's CRD takes it)", func(c *kubermaticv1.EtcdBackupConfig) {
			zero := 0
			c.Spec.Keep = &zero
		}, "spec.keep is 0"},
	} {
		t.Run("refused with "+tc.name, func(t *testing.T) {
			p, q, _ := setup(t, tc.change)
			_, err := p.Manual(context.Background(), "cluster-c", "daily", now)
			if err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("err = %v, want it to say %q", err, tc.says)
			}
			if len(q.reqs) != 0 {
				t.Fatal("a refused trigger queued a backup")
			}
		})
	}
}

// A config must be in its cluster's namespace: status.namespaceName as KKP's Cluster has it,
// else cluster-<name>. One elsewhere naming the cluster is blocked with
// ClusterNamespaceMismatch, a Warning; nothing is queued for it.
func TestCheckRefusesAConfigOutsideItsClusterNamespace(t *testing.T) {
	scheme, err := kube.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, configNS, clusterStatusNS string
		blocked                         bool
	}{
		{"in cluster-<name>", "cluster-c", "", false},
		{"in another cluster's namespace", "cluster-a", "", true},
		{"in the namespace the Cluster's status names", "kkp-c", "kkp-c", false},
		{"in cluster-<name> when the Cluster's status names another", "cluster-c", "kkp-c", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cluster := &kubermaticv1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: "c"}}
			cluster.Status.NamespaceName = tc.clusterStatusNS
			cfg := &kubermaticv1.EtcdBackupConfig{
				ObjectMeta: metav1.ObjectMeta{Namespace: tc.configNS, Name: "daily"},
				Spec:       kubermaticv1.EtcdBackupConfigSpec{Cluster: corev1.ObjectReference{Name: "c"}, Schedule: "@every 1h"},
			}
			c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(cfg, cluster).Build()
			p := &Planner{Reader: c, Destinations: oneDestination{}, Queue: &queue{}}
			_, err := p.Check(context.Background(), cfg)
			var b *Blocked
			if !tc.blocked {
				if err != nil {
					t.Fatalf("Check = %v, want no block", err)
				}
				return
			}
			if !errors.As(err, &b) || b.Reason != kubermaticv1.ReasonClusterNamespaceMismatch || !b.Warning ||
				!strings.Contains(b.Message, `cluster "c" lives in`) {
				t.Fatalf("Check = %#v, want a ClusterNamespaceMismatch warning", err)
			}
		})
	}
}
