// Package destination resolves a backup destination named on the Seed into an S3 client.
// Credentials are read from the Secret the destination references, by the service that needs
// them, at the moment it needs them: they never travel on the bus and are never logged.
package destination

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

var (
	// ErrNoDestinations: the Seed configures no backup destination (or the Seed is missing).
	ErrNoDestinations = errors.New("no backup destination is configured on the seed")
	// ErrNotFound: the named destination is not configured on the Seed.
	ErrNotFound = errors.New("backup destination not found")
	// ErrCredentials: the destination's credentials Secret is missing or incomplete.
	ErrCredentials = errors.New("backup destination credentials")
)

// Destination is one resolved Seed destination.
type Destination struct {
	Name       string
	Endpoint   string // host[:port]
	Secure     bool
	BucketName string
	// Credentials references the Secret with ACCESS_KEY_ID and SECRET_ACCESS_KEY.
	Credentials *corev1.SecretReference
}

// key identifies a destination by value: a changed endpoint, bucket or Secret is another key.
func (d Destination) key() string {
	secret := ""
	if d.Credentials != nil {
		secret = d.Credentials.Namespace + "/" + d.Credentials.Name
	}
	return fmt.Sprintf("%s|%s|%t|%s|%s", d.Name, d.Endpoint, d.Secure, d.BucketName, secret)
}

// Resolver looks destinations up on one Seed. It keeps each destination's S3 client for
// ClientTTL, so a stream of uploads or deletions does not read the Seed and the credentials
// Secret from the API server every time; changed credentials are picked up within ClientTTL.
type Resolver struct {
	reader client.Reader
	seed   types.NamespacedName
	now    func() time.Time

	mu      sync.Mutex
	clients map[string]cachedClient
}

type cachedClient struct {
	client  *minio.Client
	expires time.Time
}

// ClientTTL is how long a destination's S3 client is reused.
const ClientTTL = time.Minute

// NewResolver returns a Resolver for the Seed seed, reading through r.
func NewResolver(r client.Reader, seed types.NamespacedName) *Resolver {
	return &Resolver{reader: r, seed: seed, now: time.Now, clients: map[string]cachedClient{}}
}

// Lookup returns the destination called name, or the Seed's default destination when name is
// empty. Missing configuration yields ErrNoDestinations or ErrNotFound (permanent: retrying
// does not help until someone edits the Seed); API errors are returned as they are.
func (r *Resolver) Lookup(ctx context.Context, name string) (Destination, error) {
	var seed kubermaticv1.Seed
	if err := r.reader.Get(ctx, r.seed, &seed); err != nil {
		if client.IgnoreNotFound(err) == nil {
			return Destination{}, fmt.Errorf("%w: seed %s does not exist", ErrNoDestinations, r.seed)
		}
		return Destination{}, fmt.Errorf("get seed %s: %w", r.seed, err)
	}
	cfg := seed.Spec.EtcdBackupRestore
	if cfg == nil || len(cfg.Destinations) == 0 {
		return Destination{}, fmt.Errorf("%w (seed %s)", ErrNoDestinations, r.seed)
	}
	if name == "" {
		name = cfg.DefaultDestination
		if name == "" {
			return Destination{}, fmt.Errorf("%w: no destination named and seed %s has no defaultDestination", ErrNotFound, r.seed)
		}
	}
	d, ok := cfg.Destinations[name]
	if !ok || d == nil {
		known := make([]string, 0, len(cfg.Destinations))
		for k := range cfg.Destinations {
			known = append(known, k)
		}
		sort.Strings(known)
		return Destination{}, fmt.Errorf("%w: %q is not configured on seed %s (configured: %s)", ErrNotFound, name, r.seed, strings.Join(known, ", "))
	}
	host, secure, err := ParseEndpoint(d.Endpoint)
	if err != nil {
		return Destination{}, fmt.Errorf("%w: destination %q: %v", ErrNotFound, name, err)
	}
	if d.BucketName == "" {
		return Destination{}, fmt.Errorf("%w: destination %q has no bucketName", ErrNotFound, name)
	}
	return Destination{Name: name, Endpoint: host, Secure: secure, BucketName: d.BucketName, Credentials: d.Credentials}, nil
}

// Client returns an S3 client for d, with the credentials of its Secret, reusing one made
// less than ClientTTL ago for the same destination.
func (r *Resolver) Client(ctx context.Context, d Destination) (*minio.Client, error) {
	key := d.key()
	r.mu.Lock()
	c, ok := r.clients[key]
	r.mu.Unlock()
	if ok && r.now().Before(c.expires) {
		return c.client, nil
	}
	fresh, err := r.newClient(ctx, d)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.clients[key] = cachedClient{client: fresh, expires: r.now().Add(ClientTTL)}
	r.mu.Unlock()
	return fresh, nil
}

func (r *Resolver) newClient(ctx context.Context, d Destination) (*minio.Client, error) {
	if d.Credentials == nil || d.Credentials.Name == "" {
		return nil, fmt.Errorf("%w: destination %q references no credentials secret", ErrCredentials, d.Name)
	}
	var s corev1.Secret
	key := types.NamespacedName{Namespace: d.Credentials.Namespace, Name: d.Credentials.Name}
	if err := r.reader.Get(ctx, key, &s); err != nil {
		if client.IgnoreNotFound(err) == nil {
			return nil, fmt.Errorf("%w: secret %s of destination %q does not exist", ErrCredentials, key, d.Name)
		}
		return nil, fmt.Errorf("get credentials secret %s: %w", key, err)
	}
	id, secret := string(s.Data[kubermaticv1.SecretAccessKeyID]), string(s.Data[kubermaticv1.SecretSecretAccessKey])
	if id == "" || secret == "" {
		return nil, fmt.Errorf("%w: secret %s lacks %s or %s", ErrCredentials, key, kubermaticv1.SecretAccessKeyID, kubermaticv1.SecretSecretAccessKey)
	}
	c, err := minio.New(d.Endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(id, secret, ""),
		Secure: d.Secure,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 client for destination %q: %w", d.Name, err)
	}
	return c, nil
}

// IsConfigError reports whether err means the Seed or its Secret must be fixed by a person.
func IsConfigError(err error) bool {
	return errors.Is(err, ErrNoDestinations) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrCredentials)
}

// ParseEndpoint splits a Seed endpoint into host[:port] and whether to use TLS. It accepts
// "host[:port]" (TLS), "https://host[:port]" and "http://host[:port]".
func ParseEndpoint(endpoint string) (host string, secure bool, err error) {
	if endpoint == "" {
		return "", false, errors.New("endpoint is empty")
	}
	if !strings.Contains(endpoint, "://") {
		return endpoint, true, nil
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		return "", false, fmt.Errorf("endpoint %q: %w", endpoint, err)
	}
	switch u.Scheme {
	case "https":
		secure = true
	case "http":
	default:
		return "", false, fmt.Errorf("endpoint %q: scheme must be http or https", endpoint)
	}
	if u.Host == "" || (u.Path != "" && u.Path != "/") {
		return "", false, fmt.Errorf("endpoint %q: want scheme://host[:port]", endpoint)
	}
	return u.Host, secure, nil
}
