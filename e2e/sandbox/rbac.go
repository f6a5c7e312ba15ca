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
	"sigs.k8s.io/controller-runtime/pkg/client"
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

// GrantClusterUser gives subject what KKP gives a project's members in one cluster: backup
// configs and restores in its namespace, and that one Cluster to read. name names the Role,
// the ClusterRole and their bindings.
func (e *Env) GrantClusterUser(ctx context.Context, name string, subject rbacv1.Subject, cluster string) error {
	subjects := []rbacv1.Subject{subject}
	for _, o := range []client.Object{
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-" + cluster, Name: name},
			Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{"kubermatic.k8c.io"}, Resources: []string{"etcdbackupconfigs", "etcdrestores"},
					Verbs: []string{"get", "list", "watch", "create", "update", "patch", "delete"}},
			}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-" + cluster, Name: name},
			Subjects: subjects, RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name}},
		&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name + "-" + cluster}, Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{"kubermatic.k8c.io"}, Resources: []string{"clusters"}, ResourceNames: []string{cluster},
				Verbs: []string{"get"}},
		}},
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name + "-" + cluster}, Subjects: subjects,
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name + "-" + cluster}},
	} {
		if err := e.Client.Create(ctx, o); err != nil {
			return fmt.Errorf("create %T %s: %w", o, o.GetName(), err)
		}
	}
	return nil
}

// OIDCGroupSubject is the demo user's group as RBAC names it.
func OIDCGroupSubject() rbacv1.Subject {
	return rbacv1.Subject{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: OIDCGroupPrefix + OIDCGroup}
}
