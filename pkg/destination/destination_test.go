package destination

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

func TestParseEndpoint(t *testing.T) {
	tests := []struct {
		in         string
		host       string
		secure, ok bool
	}{
		{"s3.amazonaws.com", "s3.amazonaws.com", true, true},
		{"https://s3.example.com:9000", "s3.example.com:9000", true, true},
		{"http://127.0.0.1:9000", "127.0.0.1:9000", false, true},
		{"http://127.0.0.1:9000/", "127.0.0.1:9000", false, true},
		{"ftp://x", "", false, false},
		{"http://host/bucket", "", false, false},
		{"", "", false, false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			host, secure, err := ParseEndpoint(tc.in)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			if tc.ok && (host != tc.host || secure != tc.secure) {
				t.Fatalf("got %q secure=%v, want %q secure=%v", host, secure, tc.host, tc.secure)
			}
		})
	}
}

func TestClientIsReusedForTTL(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "kubermatic", Name: "creds"},
		Data:       map[string][]byte{"ACCESS_KEY_ID": []byte("id"), "SECRET_ACCESS_KEY": []byte("secret")},
	}
	gets := 0
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(secret).WithInterceptorFuncs(interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			gets++
			return c.Get(ctx, key, obj, opts...)
		},
	}).Build()
	now := time.Date(2021, 3, 16, 0, 0, 0, 0, time.UTC)
	r := NewResolver(c, types.NamespacedName{Namespace: "kubermatic", Name: "kubermatic"})
	r.now = func() time.Time { return now }
	lookup := func() Destination {
		// Each Lookup returns a fresh SecretReference pointer, as reading the Seed does.
		return Destination{Name: "s3", Endpoint: "127.0.0.1:9000", BucketName: "b", Credentials: &corev1.SecretReference{Namespace: "kubermatic", Name: "creds"}}
	}
	first, err := r.Client(context.Background(), lookup())
	if err != nil {
		t.Fatal(err)
	}
	second, err := r.Client(context.Background(), lookup())
	if err != nil {
		t.Fatal(err)
	}
	if first != second || gets != 1 {
		t.Fatalf("second client reused=%v, secret read %d times, want 1", first == second, gets)
	}
	now = now.Add(ClientTTL + time.Second)
	if third, err := r.Client(context.Background(), lookup()); err != nil || third == first || gets != 2 {
		t.Fatalf("after the TTL: err %v, reused %v, secret read %d times", err, third == first, gets)
	}
	other := lookup()
	other.BucketName = "other"
	if _, err := r.Client(context.Background(), other); err != nil || gets != 3 {
		t.Fatalf("another destination shared a client (secret read %d times)", gets)
	}
}
