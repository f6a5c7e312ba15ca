package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/e2e/sandbox"
	"github.com/minio/minio-go/v7"
	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestKKPSchema runs the services on a second sandbox whose CRDs mirror KKP's own schema
// (e2e/kkp: spec.name and spec.destination required, currentBackups, conditions as a map,
// EtcdRestore status a required phase of four and restoreTime, KKP's required Cluster and Seed
// fields), as on a KKP seed, with the destinations in a ConfigMap instead of the Seed: the kkp overlay applies; a
// scheduled backup completes and shows in
// currentBackups with the SchedulingActive condition in KKP's map; retention deletes beyond
// keep; a restore completes with KKP's phases; a failed restore ends (annotation, Event) without
// a status write loop.
func TestKKPSchema(t *testing.T) {
	ctx := testContext(t, 5*time.Minute)
	root, err := sandbox.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	// ETCDBACKUP_KKP_CRDS runs the same test on KKP's real CRDs: a checkout's pkg/crd/k8c.io.
	crds := filepath.Join(root, "e2e", "kkp", "crds")
	if d := os.Getenv("ETCDBACKUP_KKP_CRDS"); d != "" {
		crds = d
	}
	dir, err := os.MkdirTemp("", "etcdbackup-kkp-")
	if err != nil {
		t.Fatal(err)
	}
	kenv, err := sandbox.Start(ctx, sandbox.Options{
		Dir: dir, ToolDir: env.Opts.ToolDir, ServiceDir: env.Opts.ServiceDir,
		CRDs: crds, KKP: true,
		// As the kkp overlay runs them: the Seed configures no destinations (KKP's own backup
		// controller idles), a ConfigMap does.
		DestinationsConfigMap: "etcdbackup-destinations",
		Args: map[string][]string{
			"uploader": {"--retry-delay=200ms", "--retry-max-delay=1s"},
			"pruner":   {"--reconcile-interval=2s", "--retry-delay=200ms", "--retry-max-delay=1s"},
			"restorer": {"--poll-interval=200ms"},
		},
	})
	if err != nil {
		t.Fatalf("start the sandbox on KKP's schema: %v (state and logs in %s)", err, dir)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, s := range kenv.Services {
				t.Logf("---- %s (last 40 lines of %s)\n%s", s.Name, s.LogPath, s.LogTail(40))
			}
			t.Logf("state and logs kept in %s", dir)
			kenv.Close()
			return
		}
		kenv.Close()
		_ = os.RemoveAll(dir)
	})
	c := kenv.Client

	t.Run("the kkp overlay applies next to KKP's CRDs", func(t *testing.T) {
		out, err := kubectlIn(kenv.API.Kubeconfig, nil, "apply", "--dry-run=server", "-k", filepath.Join(root, "deploy",
			"overlays", "kkp"))
		if err != nil {
			t.Fatalf("server-side dry run of the kkp overlay: %v\n%s", err, out)
		}
		for _, want := range []string{"deployment.apps/etcdbackup-scheduler", "deployment.apps/etcdbackup-restorer",
			"statefulset.apps/etcdbackup-nats", "configmap/etcdbackup-destinations"} {
			if !strings.Contains(out, want) {
				t.Errorf("dry run of the kkp overlay lacks %s:\n%s", want, out)
			}
		}
		// Only this project's own group's CRD: none of KKP's.
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, "customresourcedefinition") &&
				!strings.HasPrefix(line, "customresourcedefinition.apiextensions.k8s.io/deletedbackupsets.etcdbackup.k8c.io ") {
				t.Errorf("the kkp overlay touches a CRD of KKP's: %s", line)
			}
		}
		if !strings.Contains(out, "customresourcedefinition.apiextensions.k8s.io/deletedbackupsets.etcdbackup.k8c.io") {
			t.Errorf("the kkp overlay lacks this project's DeletedBackupSet CRD:\n%s", out)
		}
		// The seed document's YAML has no spec.name: KKP's own CRD refuses it, as on a real seed.
		out, err = kubectlIn(kenv.API.Kubeconfig, readTestdata(t, "seed-etcdbackupconfig.yaml"), "apply",
			"--dry-run=server", "-f", "-")
		if err == nil || !strings.Contains(out, "spec.name: Required value") {
			t.Errorf("KKP's schema took the seed document's config (err %v):\n%s", err, out)
		}
	})

	t.Run("backups and retention write status in KKP's shape", func(t *testing.T) {
		keep := 1
		cfg := &kubermaticv1.EtcdBackupConfig{
			ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-" + sandbox.DemoCluster, Name: "kkp-every-2s"},
			Spec: kubermaticv1.EtcdBackupConfigSpec{
				Name: "kkp-every-2s",
				Cluster: corev1.ObjectReference{APIVersion: kubermaticv1.GroupVersion.String(), Kind: "Cluster",
					Name: sandbox.DemoCluster},
				Schedule:    "@every 2s",
				Keep:        &keep,
				Destination: sandbox.Destination,
			},
		}
		if err := c.Create(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		var got kubermaticv1.EtcdBackupConfig
		err := sandbox.Poll(ctx, 90*time.Second, 200*time.Millisecond, func() (bool, error) {
			if err := c.Get(ctx, client.ObjectKeyFromObject(cfg), &got); err != nil {
				return false, err
			}
			var done, deleted int
			for _, b := range got.Status.CurrentBackups {
				if b.BackupPhase == kubermaticv1.PhaseCompleted {
					done++
					if b.DeletePhase == kubermaticv1.PhaseCompleted {
						deleted++
					}
				}
			}
			return done >= 2 && deleted >= 1, nil
		})
		if err != nil {
			t.Fatalf("waiting for two completed backups, one deleted by retention: %v\nstatus: %+v", err, got.Status)
		}
		cond := got.Status.Condition(kubermaticv1.ConditionSchedulingActive)
		if cond == nil || cond.Status != corev1.ConditionTrue || cond.Reason != kubermaticv1.ReasonScheduled ||
			cond.LastHeartbeatTime.IsZero() {
			t.Errorf("conditions = %+v, want SchedulingActive True (Scheduled) with a heartbeat", got.Status.Conditions)
		}
		// What KKP's schema does not hold is pruned; what it holds is as the services wrote it.
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(kubermaticv1.GroupVersion.WithKind("EtcdBackupConfig"))
		if err := c.Get(ctx, client.ObjectKeyFromObject(cfg), u); err != nil {
			t.Fatal(err)
		}
		if _, ok, _ := unstructured.NestedSlice(u.Object, "status", "lastBackups"); ok {
			t.Error("status.lastBackups survived KKP's schema: these CRDs are not KKP's shape")
		}
		if _, ok, _ := unstructured.NestedMap(u.Object, "status", "conditions", kubermaticv1.ConditionSchedulingActive); !ok {
			t.Errorf("status.conditions is not a map keyed by type: %v", u.Object["status"])
		}
		// Retention holds the bucket to keep (+1 for the moment after a new backup is stored).
		err = sandbox.Poll(ctx, 30*time.Second, 200*time.Millisecond, func() (bool, error) {
			n := 0
			for o := range kenv.S3.Client().ListObjects(ctx, sandbox.Bucket,
				minio.ListObjectsOptions{Prefix: sandbox.DemoCluster + "/cluster-" + sandbox.DemoCluster + "/kkp-every-2s/",
					Recursive: true}) {
				if o.Err != nil {
					return false, o.Err
				}
				n++
			}
			return n >= 1 && n <= keep+1, nil
		})
		if err != nil {
			t.Errorf("the bucket holds more than keep+1 backups of the config: %v", err)
		}
		if err := c.Delete(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a restore runs under KKP's phases; a failed one ends without a write loop", func(t *testing.T) {
		const cluster = "kkp-restore"
		k, err := kenv.StartEtcdCluster(ctx, cluster, 3, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(k.Stop)
		cli, err := k.Client()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cli.Close() })
		put(t, ctx, cli, "/registry/before", "kept")

		cfg := &kubermaticv1.EtcdBackupConfig{
			ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-" + cluster, Name: "once"},
			Spec: kubermaticv1.EtcdBackupConfigSpec{
				Name:        "once",
				Cluster:     corev1.ObjectReference{APIVersion: kubermaticv1.GroupVersion.String(), Kind: "Cluster", Name: cluster},
				Destination: sandbox.Destination,
			},
		}
		if err := c.Create(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		var backup string
		err = sandbox.Poll(ctx, 60*time.Second, 200*time.Millisecond, func() (bool, error) {
			var got kubermaticv1.EtcdBackupConfig
			if err := c.Get(ctx, client.ObjectKeyFromObject(cfg), &got); err != nil {
				return false, err
			}
			for _, b := range got.Status.CurrentBackups {
				if b.BackupPhase == kubermaticv1.PhaseCompleted {
					backup = b.BackupName
				}
			}
			return backup != "", nil
		})
		if err != nil {
			t.Fatalf("the one-time backup: %v", err)
		}
		put(t, ctx, cli, "/registry/after", "lost by the restore")

		restoreOf := func(name, backup string) *kubermaticv1.EtcdRestore {
			rs := &kubermaticv1.EtcdRestore{
				ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-" + cluster, Name: name},
				Spec: kubermaticv1.EtcdRestoreSpec{
					Name: name,
					Cluster: corev1.ObjectReference{APIVersion: kubermaticv1.GroupVersion.String(), Kind: "Cluster",
						Name: cluster},
					BackupName:  backup,
					Destination: sandbox.Destination,
				},
			}
			if err := c.Create(ctx, rs); err != nil {
				t.Fatal(err)
			}
			return rs
		}
		// A backup that does not exist: KKP's enum has no Failed. The restore ends all the
		// same: the annotation says Failed and why, an Event too, and the finalizer goes.
		bad := restoreOf("missing", "once-2020-01-01T00:00:00")
		var failed kubermaticv1.EtcdRestore
		err = sandbox.Poll(ctx, 60*time.Second, 200*time.Millisecond, func() (bool, error) {
			if err := c.Get(ctx, client.ObjectKeyFromObject(bad), &failed); err != nil {
				return false, err
			}
			return failed.EffectiveStatus().Phase == kubermaticv1.RestorePhaseFailed && len(failed.Finalizers) == 0, nil
		})
		if err != nil {
			t.Fatalf("the restore of a missing backup did not end: %v\nannotations %v status %+v", err, failed.Annotations,
				failed.Status)
		}
		if st := failed.EffectiveStatus(); !strings.Contains(st.Message, "does not exist") {
			t.Errorf("failed restore's message = %q", st.Message)
		}
		if failed.Status.Phase != "" {
			t.Errorf("served phase = %q: KKP's schema has no phase for a failure before Started", failed.Status.Phase)
		}
		waitEventIn(t, ctx, c, bad.Namespace, bad.Name, corev1.EventTypeWarning, "BackupNotFound")

		good := restoreOf("from-once", backup)
		var done kubermaticv1.EtcdRestore
		err = sandbox.Poll(ctx, 90*time.Second, 200*time.Millisecond, func() (bool, error) {
			if err := c.Get(ctx, client.ObjectKeyFromObject(good), &done); err != nil {
				return false, err
			}
			return done.Status.Phase == kubermaticv1.RestorePhaseCompleted, nil
		})
		if err != nil {
			t.Fatalf("restore on KKP's schema: %v\nstatus %+v, restorer's: %+v", err, done.Status, done.EffectiveStatus())
		}
		if done.Status.RestoreTime.IsZero() {
			t.Error("status.restoreTime is not set")
		}
		if err := k.WaitMembers(ctx, 3); err != nil {
			t.Fatal(err)
		}
		cli2, err := k.Client()
		if err != nil {
			t.Fatal(err)
		}
		defer cli2.Close()
		kv := keyValues(t, ctx, cli2, "/registry/")
		if kv["/registry/before"] != "kept" || kv["/registry/after"] != "" {
			t.Errorf("etcd after the restore: %v, want /registry/before only", kv)
		}
		// The failed restore was not written to again while the other ran.
		var again kubermaticv1.EtcdRestore
		if err := c.Get(ctx, client.ObjectKeyFromObject(bad), &again); err != nil {
			t.Fatal(err)
		}
		if again.ResourceVersion != failed.ResourceVersion {
			t.Errorf("the failed restore was written to after it ended: resourceVersion %s, then %s", failed.ResourceVersion,
				again.ResourceVersion)
		}
	})
}

func put(t *testing.T, ctx context.Context, cli *clientv3.Client, k, v string) {
	t.Helper()
	if _, err := cli.Put(ctx, k, v); err != nil {
		t.Fatal(err)
	}
}
