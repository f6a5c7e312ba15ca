package e2e

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/etcd-backup/etcdbackup/e2e/sandbox"
)

// The kustomize base and the samples apply to a real API server (server-side dry run), and the
// base holds what a deployment needs: every CRD, a Deployment per service and NATS.
func TestDeployManifestsApply(t *testing.T) {
	root, err := sandbox.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(root, "deploy", "k8s")
	out := mustKubectl(t, nil, "apply", "--dry-run=server", "-k", base)
	for _, want := range []string{
		"customresourcedefinition.apiextensions.k8s.io/etcdbackupconfigs.kubermatic.k8c.io",
		"customresourcedefinition.apiextensions.k8s.io/etcdrestores.kubermatic.k8c.io",
		"deployment.apps/etcdbackup-scheduler",
		"deployment.apps/etcdbackup-snapshotter",
		"deployment.apps/etcdbackup-uploader",
		"deployment.apps/etcdbackup-pruner",
		"deployment.apps/etcdbackup-restorer",
		"clusterrole.rbac.authorization.k8s.io/etcdbackup-restorer",
		"role.rbac.authorization.k8s.io/etcdbackup-restorer-leader-election",
		"statefulset.apps/etcdbackup-nats",
		"networkpolicy.networking.k8s.io/etcdbackup-nats",
		"clusterrole.rbac.authorization.k8s.io/etcdbackup-snapshotter",
		"role.rbac.authorization.k8s.io/etcdbackup-uploader",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run of deploy/k8s lacks %s:\n%s", want, out)
		}
	}
	samples := mustKubectl(t, nil, "apply", "--dry-run=server", "-k", filepath.Join(base, "samples"))
	for _, want := range []string{"seed.kubermatic.k8c.io/kubermatic", "etcdbackupconfig.kubermatic.k8c.io/daily-backup", "secret/s3-credentials"} {
		if !strings.Contains(samples, want) {
			t.Errorf("dry run of samples lacks %s:\n%s", want, samples)
		}
	}
}
