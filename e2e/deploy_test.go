package e2e

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/etcd-backup/etcdbackup/e2e/sandbox"
)

// The kustomize base holds no CRDs; the standalone overlay adds this project's, the kkp overlay
// only its own group's (KKP's stay) and names the Seed once per Deployment. The standalone overlay and the
// samples apply to a real API server (server-side dry run), with every Deployment, RBAC, NATS
// and its policy; TestKKPSchema applies the kkp overlay on KKP-shaped CRDs.
func TestDeployManifestsApply(t *testing.T) {
	root, err := sandbox.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(root, "deploy", "k8s")
	if out := mustKubectl(t, nil, "kustomize", base); strings.Contains(out, "kind: CustomResourceDefinition") {
		t.Error("the base deploy/k8s holds CRDs")
	}
	kkp := filepath.Join(root, "deploy", "overlays", "kkp")
	rendered := mustKubectl(t, nil, "kustomize", kkp)
	if n := strings.Count(rendered, "kind: CustomResourceDefinition"); n != 1 ||
		!strings.Contains(rendered, "name: deletedbackupsets.etcdbackup.k8c.io") {
		t.Errorf("the kkp overlay holds %d CRDs, want only this project's own group's (DeletedBackupSet): any other "+
			"would replace KKP's", n)
	}
	if n := strings.Count(rendered, "name: ETCDBACKUP_SEED_NAME\n"); n != 7 {
		t.Errorf("the kkp overlay sets ETCDBACKUP_SEED_NAME %d times, want once in each of 7 Deployments", n)
	}
	if n := strings.Count(rendered, "name: ETCDBACKUP_DESTINATIONS_CONFIGMAP\n"); n != 6 {
		t.Errorf("the kkp overlay sets ETCDBACKUP_DESTINATIONS_CONFIGMAP %d times, want once in each of the 6 Deployments "+
			"that read destinations", n)
	}
	services := []string{
		"deployment.apps/etcdbackup-scheduler",
		"deployment.apps/etcdbackup-snapshotter",
		"deployment.apps/etcdbackup-uploader",
		"deployment.apps/etcdbackup-pruner",
		"deployment.apps/etcdbackup-restorer",
		"deployment.apps/etcdbackup-console",
		"job.batch/etcdbackup-setup",
		"service/etcdbackup-console",
		"clusterrole.rbac.authorization.k8s.io/etcdbackup-console",
		"clusterrole.rbac.authorization.k8s.io/etcdbackup-restorer",
		"role.rbac.authorization.k8s.io/etcdbackup-restorer-leader-election",
		"statefulset.apps/etcdbackup-nats",
		"networkpolicy.networking.k8s.io/etcdbackup-nats",
		"clusterrole.rbac.authorization.k8s.io/etcdbackup-snapshotter",
		"role.rbac.authorization.k8s.io/etcdbackup-uploader",
	}
	crds := []string{
		"customresourcedefinition.apiextensions.k8s.io/etcdbackupconfigs.kubermatic.k8c.io",
		"customresourcedefinition.apiextensions.k8s.io/etcdrestores.kubermatic.k8c.io",
		"customresourcedefinition.apiextensions.k8s.io/deletedbackupsets.etcdbackup.k8c.io",
	}
	standalone := mustKubectl(t, nil, "apply", "--dry-run=server", "-k", filepath.Join(root, "deploy", "overlays",
		"standalone"))
	for _, want := range append(services, crds...) {
		if !strings.Contains(standalone, want) {
			t.Errorf("dry run of the standalone overlay lacks %s:\n%s", want, standalone)
		}
	}
	// The kkp overlay's dry run is on KKP-shaped CRDs: TestKKPSchema.
	samples := mustKubectl(t, nil, "apply", "--dry-run=server", "-k", filepath.Join(base, "samples"))
	for _, want := range []string{"seed.kubermatic.k8c.io/kubermatic",
		"etcdbackupconfig.kubermatic.k8c.io/daily-backup", "secret/s3-credentials"} {
		if !strings.Contains(samples, want) {
			t.Errorf("dry run of samples lacks %s:\n%s", want, samples)
		}
	}
}
