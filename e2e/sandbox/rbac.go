package sandbox

import (
	"context"
	"fmt"
	"path/filepath"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// ServiceAccountPrefix names each service's ServiceAccount in deploy/k8s/rbac.yaml.
const ServiceAccountPrefix = "etcdbackup-"

// ApplyRBAC creates the ServiceAccounts, Roles and bindings of deploy/k8s/rbac.yaml in the
// Seed's namespace, as the kustomize base deploys them, and the admission policy of
// deploy/k8s/admission.yaml.
func (e *Env) ApplyRBAC(ctx context.Context, root string) error {
	objs, err := ReadObjects(filepath.Join(root, "deploy", "k8s", "rbac.yaml"))
	if err != nil {
		return err
	}
	// The admission policy that keeps the restorer to the objects it owns.
	admission, err := ReadObjects(filepath.Join(root, "deploy", "k8s", "admission.yaml"))
	if err != nil {
		return err
	}
	for _, o := range append(objs, admission...) {
		switch o.GetKind() {
		case "ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding":
		default:
			o.SetNamespace(SeedNamespace)
		}
		if err := e.Client.Create(ctx, o); err != nil {
			return fmt.Errorf("create %s %s: %w", o.GetKind(), o.GetName(), err)
		}
	}
	return nil
}

// ServiceKubeconfig writes a kubeconfig that authenticates as the service's ServiceAccount,
// so the service runs with exactly the permissions the deployment grants it.
func (e *Env) ServiceKubeconfig(ctx context.Context, service string) (string, error) {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: SeedNamespace,
		Name: ServiceAccountPrefix + service}}
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(
		24 * 3600))}}
	if err := e.Client.SubResource("token").Create(ctx, sa, tr); err != nil {
		return "", fmt.Errorf("token for service account %s: %w", sa.Name, err)
	}
	path := filepath.Join(e.Opts.Dir, "kubeconfig-"+service)
	if err := writeKubeconfig(path, e.API.URL, tr.Status.Token); err != nil {
		return "", err
	}
	return path, nil
}

// ConsoleAdminToken returns a bearer token to sign in to the console with: ServiceAccount
// console-admin in the Seed's namespace, bound to cluster-admin. For the sandbox only.
func (e *Env) ConsoleAdminToken(ctx context.Context) (string, error) {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: SeedNamespace, Name: "console-admin"}}
	if err := e.Client.Create(ctx, sa); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", err
	}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "sandbox-console-admin"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: SeedNamespace, Name: sa.Name}},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "cluster-admin"}}
	if err := e.Client.Create(ctx, binding); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", err
	}
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(
		24 * 3600))}}
	if err := e.Client.SubResource("token").Create(ctx, sa, tr); err != nil {
		return "", fmt.Errorf("token for %s: %w", sa.Name, err)
	}
	return tr.Status.Token, nil
}
