package endpoints

import (
	"context"
	"errors"
	"strings"
	"testing"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/kube"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

// RBAC grants the snapshotter etcd's Secrets by name only. A Cluster whose annotation names
// another Secret gets a configuration error that says what to grant, not a retried failure.
func TestForbiddenSecretIsAConfigurationError(t *testing.T) {
	scheme, err := kube.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithInterceptorFuncs(interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object,
			opts ...client.GetOption) error {
			return apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, key.Name, errors.New("RBAC: not granted"))
		},
	}).Build()
	cluster := &kubermaticv1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: "c", Annotations: map[string]string{
		kubermaticv1.AnnotationEtcdEndpoints:    "https://127.0.0.1:2379",
		kubermaticv1.AnnotationEtcdClientSecret: "my-etcd-client"}}}
	_, err = Resolve(context.Background(), c, cluster, "cluster-c")
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), `add "my-etcd-client" to its resourceNames`) {
		t.Fatalf("Resolve with a forbidden Secret = %v, want a configuration error naming the grant", err)
	}
}
