package trust

import (
	"context"
	"errors"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/kube"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

// counting counts the Gets that reach a reader.
type counting struct {
	client.Reader
	gets int
}

func (c *counting) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	c.gets++
	return c.Reader.Get(ctx, key, obj, opts...)
}

func cfg(uid, dest string, deleting bool) *kubermaticv1.EtcdBackupConfig {
	c := &kubermaticv1.EtcdBackupConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-a", Name: "daily", UID: types.UID(uid)},
		Spec: kubermaticv1.EtcdBackupConfigSpec{Cluster: corev1.ObjectReference{Name: "a"}, Schedule: "@every 1h",
			Destination: dest},
	}
	if deleting {
		now := metav1.Now()
		c.DeletionTimestamp, c.Finalizers = &now, []string{"keep"}
	}
	return c
}

// A cache is read first, and trusted only when it confirms the claim: a config it lacks, holds
// under another uid, with another destination, or being deleted is read again from the API,
// which decides; a claim that the API's config refutes is rejected, never on the cache's word.
func TestCheckerTrustsACacheOnlyWhenItConfirms(t *testing.T) {
	scheme, err := kube.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	backup := backupname.Backup("daily", time.Date(2026, 12, 7, 1, 0, 0, 0, time.UTC))
	claim := Claim{Config: &etcdbackupv1.ConfigRef{Namespace: "cluster-a", Name: "daily", Uid: "u-2"}, Backup: backup,
		Cluster: "a", ObjectKey: backupname.ObjectKey("a", "cluster-a", "daily", backup), Destination: "s3"}
	for _, tc := range []struct {
		name      string
		cached    *kubermaticv1.EtcdBackupConfig // nil: not in the cache
		api       *kubermaticv1.EtcdBackupConfig
		apiReads  int
		wantUID   string // "": no config
		rejected  bool
		wantClaim func(Claim) Claim // the claim, changed
	}{
		{"the cache confirms", cfg("u-2", "s3", false), cfg("u-2", "s3", false), 0, "u-2", false, nil},
		{"the default destination", cfg("u-2", "", false), cfg("u-2", "", false), 0, "u-2", false, nil},
		{"not cached yet", nil, cfg("u-2", "s3", false), 1, "u-2", false, nil},
		{"cached before it was created again", cfg("u-1", "s3", false), cfg("u-2", "s3", false), 1, "u-2", false, nil},
		{"cached with its old destination", cfg("u-2", "old", false), cfg("u-2", "s3", false), 1, "u-2", false, nil},
		{"cached as being deleted", cfg("u-2", "s3", true), cfg("u-2", "s3", false), 1, "u-2", false, nil},
		{"gone from the API", cfg("u-2", "s3", true), nil, 1, "", false, nil},
		{"another cluster: rejected by the API's config", cfg("u-2", "s3", false), cfg("u-2", "s3", false), 1, "u-2",
			true, func(c Claim) Claim { c.Cluster = "b"; return c }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cached, api []client.Object
			if tc.cached != nil {
				cached = append(cached, tc.cached)
			}
			if tc.api != nil {
				api = append(api, tc.api)
			}
			cache := &counting{Reader: fake.NewClientBuilder().WithScheme(scheme).WithObjects(cached...).Build()}
			apiReader := &counting{Reader: fake.NewClientBuilder().WithScheme(scheme).WithObjects(api...).Build()}
			c := claim
			if tc.wantClaim != nil {
				c = tc.wantClaim(c)
			}
			got, err := Checker{Reader: apiReader, Cache: cache}.Config(context.Background(), "etcdbackup.x", c)
			var rej *bus.RejectError
			if tc.rejected != errors.As(err, &rej) || (!tc.rejected && err != nil) {
				t.Fatalf("Config: %v, want rejected %v", err, tc.rejected)
			}
			if cache.gets != 1 || apiReader.gets != tc.apiReads {
				t.Fatalf("%d cache reads and %d API reads, want 1 and %d", cache.gets, apiReader.gets, tc.apiReads)
			}
			var uid string
			if got != nil {
				uid = string(got.UID)
			}
			if uid != tc.wantUID {
				t.Fatalf("config of uid %q, want %q (\"\": none)", uid, tc.wantUID)
			}
		})
	}
}
