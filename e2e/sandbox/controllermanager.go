package sandbox

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ControllerManagerControllers are the real Kubernetes controllers the sandbox runs: the
// StatefulSet controller (an etcd StatefulSet's PVCs and pods, and its rollouts), the garbage
// collector (a deleted StatefulSet's pods go), the namespace controller (a deleted namespace
// empties and goes) and PVC protection (a PVC goes once no pod uses it). The test Kubelet runs
// the pods.
var ControllerManagerControllers = []string{"statefulset", "garbagecollector", "namespace", "pvc-protection"}

// StartControllerManager runs kube-controller-manager against the API server and returns once
// its namespace controller has deleted a namespace (so its discovery and informers run).
func StartControllerManager(ctx context.Context, dir, toolDir string, api *APIServer,
	c client.Client) (*Process, error) {
	args := []string{
		"--kubeconfig=" + api.Kubeconfig,
		"--controllers=" + strings.Join(ControllerManagerControllers, ","),
		"--leader-elect=false",
		"--secure-port=0",
		"--concurrent-gc-syncs=5",
	}
	p, err := StartProcess("kube-controller-manager", filepath.Join(toolDir, "kube-controller-manager"), args, nil,
		filepath.Join(dir, "logs"))
	if err != nil {
		return nil, err
	}
	probe := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "kcm-probe"}}
	if err := c.Create(ctx, probe); err != nil {
		_ = p.Stop()
		return nil, err
	}
	if err := c.Delete(ctx, probe); err != nil {
		_ = p.Stop()
		return nil, err
	}
	err = Poll(ctx, 60*time.Second, 100*time.Millisecond, func() (bool, error) {
		if p.Exited() {
			return false, Abort(fmt.Errorf("kube-controller-manager exited:\n%s", p.LogTail(10)))
		}
		err := c.Get(ctx, client.ObjectKeyFromObject(probe), probe)
		return apierrors.IsNotFound(err), err
	})
	if err != nil {
		_ = p.Stop()
		return nil, fmt.Errorf("kube-controller-manager's namespace controller did not delete a namespace: %w", err)
	}
	return p, nil
}
