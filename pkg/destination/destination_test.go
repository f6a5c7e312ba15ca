package destination

import (
	"context"
	"errors"
	"slices"
	"strings"
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

func TestBucketIsReusedForTTL(t *testing.T) {
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
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object,
			opts ...client.GetOption) error {
			gets++
			return c.Get(ctx, key, obj, opts...)
		},
	}).Build()
	now := time.Date(2021, 3, 16, 0, 0, 0, 0, time.UTC)
	r := NewResolver(c, Source{Seed: types.NamespacedName{Namespace: "kubermatic", Name: "kubermatic"}})
	r.now = func() time.Time { return now }
	lookup := func() Destination {
		// Each Lookup returns a fresh SecretReference pointer, as reading the Seed does.
		return Destination{Name: "s3", Endpoint: "127.0.0.1:9000", BucketName: "b",
			Credentials: &corev1.SecretReference{Namespace: "kubermatic", Name: "creds"}}
	}
	first, err := r.Bucket(context.Background(), lookup())
	if err != nil {
		t.Fatal(err)
	}
	second, err := r.Bucket(context.Background(), lookup())
	if err != nil {
		t.Fatal(err)
	}
	if first != second || gets != 1 {
		t.Fatalf("second bucket reused=%v, secret read %d times, want 1", first == second, gets)
	}
	now = now.Add(ClientTTL + time.Second)
	if third, err := r.Bucket(context.Background(), lookup()); err != nil || third == first || gets != 2 {
		t.Fatalf("after the TTL: err %v, reused %v, secret read %d times", err, third == first, gets)
	}
	other := lookup()
	other.BucketName = "other"
	if _, err := r.Bucket(context.Background(), other); err != nil || gets != 3 {
		t.Fatalf("another destination shared a bucket (secret read %d times)", gets)
	}
}

// With Source.ConfigMap the destinations come from that ConfigMap in the Seed's namespace, in
// the Seed's shape, and the Seed's own are not read (KKP's backup controller idles on a Seed
// without them).
func TestLookupFromConfigMap(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	cm := func(data string) *corev1.ConfigMap {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "kubermatic", Name: "etcdbackup-destinations"},
			Data: map[string]string{ConfigMapKey: data}}
	}
	src := Source{Seed: types.NamespacedName{Namespace: "kubermatic", Name: "kubermatic"},
		ConfigMap: "etcdbackup-destinations"}
	good := `
defaultDestination: s3
destinations:
  s3:
    endpoint: http://127.0.0.1:9000
    bucketName: backups
    credentials: {name: creds, namespace: kubermatic}
  other:
    endpoint: s3.example.com
    bucketName: b2
`
	for _, tc := range []struct {
		name, data, lookup string
		objs               bool
		want               string // bucket, or the error's text
		err                error
	}{
		{"the default", good, "", true, "backups", nil},
		{"by name", good, "other", true, "b2", nil},
		{"an unknown name", good, "nope", true,
			`"nope" is not configured in configmap kubermatic/etcdbackup-destinations (configured: other, s3)`, ErrNotFound},
		{"no destinations", "destinations: {}", "", true, "configmap kubermatic/etcdbackup-destinations", ErrNoDestinations},
		{"a misspelt field", "destinatons: {}", "", true, "unknown field", ErrNotFound},
		{"no configmap", "", "", false, "configmap kubermatic/etcdbackup-destinations does not exist", ErrNoDestinations},
		{"credentials outside the Seed's namespace",
			"destinations: {s3: {endpoint: s3.example.com, bucketName: b, credentials: {name: creds, namespace: other}}}",
			"s3", true, "credentials must be in the Seed's namespace kubermatic", ErrCredentials},
		{"credentials without a namespace are the Seed's",
			"destinations: {s3: {endpoint: s3.example.com, bucketName: nsless, credentials: {name: creds}}}", "s3", true,
			"nsless", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := fake.NewClientBuilder().WithScheme(scheme)
			if tc.objs {
				b = b.WithObjects(cm(tc.data))
			}
			d, err := NewResolver(b.Build(), src).Lookup(context.Background(), tc.lookup)
			if tc.err == nil {
				if err != nil || d.BucketName != tc.want {
					t.Fatalf("Lookup = %+v, %v; want bucket %s", d, err, tc.want)
				}
				if (d.Credentials == nil && tc.want != "b2") || (d.Credentials != nil && d.Credentials.Namespace != "kubermatic") {
					t.Fatalf("credentials %+v, want a Secret in the Seed's namespace", d.Credentials)
				}
				return
			}
			if !errors.Is(err, tc.err) || !IsConfigError(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Lookup error = %v, want %v saying %q", err, tc.err, tc.want)
			}
		})
	}
}

// What was read of the Source is reused for ConfigTTL, a configuration error included; an
// API error is not kept, and a change shows after the TTL.
func TestSourceIsReadOncePerTTL(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	src := Source{Seed: types.NamespacedName{Namespace: "kubermatic", Name: "kubermatic"},
		ConfigMap: "etcdbackup-destinations"}
	gets := 0
	var failGet error
	c := fake.NewClientBuilder().WithScheme(scheme).WithInterceptorFuncs(interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object,
			opts ...client.GetOption) error {
			gets++
			if failGet != nil {
				return failGet
			}
			return c.Get(ctx, key, obj, opts...)
		},
	}).Build()
	now := time.Date(2021, 3, 16, 0, 0, 0, 0, time.UTC)
	r := NewResolver(c, src)
	r.now = func() time.Time { return now }
	ctx := context.Background()
	// No ConfigMap yet: a configuration error, kept for the TTL.
	for range 3 {
		if _, err := r.Lookup(ctx, ""); !errors.Is(err, ErrNoDestinations) {
			t.Fatalf("Lookup without the ConfigMap: %v", err)
		}
	}
	if gets != 1 {
		t.Fatalf("%d reads for three lookups within the TTL, want 1", gets)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "kubermatic", Name: "etcdbackup-destinations"},
		Data: map[string]string{ConfigMapKey: "defaultDestination: s3\ndestinations: {s3: {endpoint: s3.example.com, " +
			"bucketName: b1}}"}}
	if err := c.Create(ctx, cm); err != nil {
		t.Fatal(err)
	}
	now = now.Add(ConfigTTL)
	if d, err := r.Lookup(ctx, ""); err != nil || d.BucketName != "b1" || gets != 2 {
		t.Fatalf("after the TTL: %+v, %v, %d reads; want bucket b1 read anew", d, err, gets)
	}
	// An API error is returned, not kept: the next lookup reads again.
	now = now.Add(ConfigTTL)
	failGet = errors.New("connection refused")
	if _, err := r.Lookup(ctx, ""); err == nil || IsConfigError(err) {
		t.Fatalf("Lookup during an API outage: %v, want the API error", err)
	}
	failGet = nil
	if d, err := r.Lookup(ctx, ""); err != nil || d.BucketName != "b1" || gets != 4 {
		t.Fatalf("after the outage: %+v, %v, %d reads; want b1 read again", d, err, gets)
	}
}

// Names lists the destinations a user may pick, sorted, with the default; nothing when none
// are configured.
func TestNames(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	src := Source{Seed: types.NamespacedName{Namespace: "kubermatic", Name: "kubermatic"},
		ConfigMap: "etcdbackup-destinations"}
	for _, tc := range []struct {
		name, data string
		want       []string
		def        string
		err        error
	}{
		{"sorted with the default",
			"defaultDestination: s3\ndestinations: {s3: {endpoint: a, bucketName: b}, archive: {endpoint: c, bucketName: d}}",
			[]string{"archive", "s3"}, "s3", nil},
		{"a default that is not configured", "defaultDestination: gone\ndestinations: {s3: {endpoint: a, bucketName: b}}",
			[]string{"s3"}, "", nil},
		{"none", "destinations: {}", nil, "", ErrNoDestinations},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "kubermatic", Name: "etcdbackup-destinations"},
				Data: map[string]string{ConfigMapKey: tc.data}}
			names, def, err := NewResolver(fake.NewClientBuilder().WithScheme(scheme).WithObjects(cm).Build(),
				src).Names(context.Background())
			if !errors.Is(err, tc.err) || !slices.Equal(names, tc.want) || def != tc.def {
				t.Fatalf("Names = %v, %q, %v; want %v, %q, %v", names, def, err, tc.want, tc.def, tc.err)
			}
		})
	}
}
