// Package destination resolves a backup destination named on the Seed (or in a ConfigMap of
// the Seed's shape, see Source) into a Bucket, the one interface every service stores, reads,
// lists and deletes backups through.
// Credentials are read from the Secret the destination references, by the service that needs
// them, at the moment it needs them: they never travel on the bus and are never logged.
package destination

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

var (
	// ErrNoDestinations: the Seed (or the destinations ConfigMap) configures no backup
	// destination, or is missing.
	ErrNoDestinations = errors.New("no backup destination is configured")
	// ErrNotFound: the named destination is not configured on the Seed.
	ErrNotFound = errors.New("backup destination not found")
	// ErrCredentials: the destination's credentials Secret is missing or incomplete.
	ErrCredentials = errors.New("backup destination credentials")
	// ErrEncryption: the destination's encryption or decryption Secret is missing, elsewhere
	// than the Seed's namespace, or holds no valid age key.
	ErrEncryption = errors.New("backup destination encryption")
	// ErrObjectLockInvalid: the destination's objectLock names no mode S3 knows, or a number
	// of days outside 1 to 36500.
	ErrObjectLockInvalid = errors.New("backup destination object lock")
	// ErrObjectLockNotEnabled: the destination sets objectLock, but its bucket does not have
	// Object Lock enabled (S3 enables it only when a bucket is created).
	ErrObjectLockNotEnabled = errors.New("object lock not enabled")
)

// Destination is one resolved Seed destination.
type Destination struct {
	Name       string
	Endpoint   string // host[:port]
	Secure     bool
	BucketName string
	// Credentials references the Secret with ACCESS_KEY_ID and SECRET_ACCESS_KEY.
	Credentials *corev1.SecretReference
	// Encryption references the Secret whose key RecipientsKey lists the age recipients
	// backups are encrypted to (nil: not encrypted); Decryption the one whose key IdentityKey
	// holds the identities they are decrypted with.
	Encryption, Decryption *corev1.SecretReference
	// Lock is the Object Lock retention every object is written with (nil: none).
	Lock *Lock
	// CopyTo names the destination every object stored here is copied to ("": none).
	CopyTo string
}

// Lock is a destination's S3 Object Lock retention.
type Lock struct {
	// Mode is LockGovernance or LockCompliance.
	Mode string
	Days int
}

// Object Lock retention modes.
const (
	LockGovernance = "GOVERNANCE"
	LockCompliance = "COMPLIANCE"
)

// Until is when an object written at t is no longer retained.
func (l Lock) Until(t time.Time) time.Time { return t.AddDate(0, 0, l.Days) }

func (l Lock) String() string { return fmt.Sprintf("%s for %d days", l.Mode, l.Days) }

// Keys of the encryption and decryption Secrets.
const (
	// RecipientsKey holds an age recipients file: age1… lines.
	RecipientsKey = "recipients"
	// IdentityKey holds an age identity file: AGE-SECRET-KEY-1… lines (age-keygen's output).
	IdentityKey = "identity"
)

// key identifies a destination by value: a changed endpoint, bucket or Secret is another key.
func (d Destination) key() string {
	secret := ""
	if d.Credentials != nil {
		secret = d.Credentials.Namespace + "/" + d.Credentials.Name
	}
	lock := ""
	if d.Lock != nil {
		lock = d.Lock.String()
	}
	return fmt.Sprintf("%s|%s|%t|%s|%s|%s", d.Name, d.Endpoint, d.Secure, d.BucketName, secret, lock)
}

// Source says where the destinations are configured: the Seed's spec.etcdBackupRestore, or,
// with ConfigMap set, the key ConfigMapKey of that ConfigMap in the Seed's namespace, in the
// same shape. The ConfigMap lets these services run on a KKP seed whose Seed configures no
// destinations, so that KKP's own etcd backup controller, which reads the Seed's, stays idle.
type Source struct {
	Seed      types.NamespacedName
	ConfigMap string
}

// ConfigMapKey is the key of a destinations ConfigMap: YAML of the Seed's etcdBackupRestore
// (destinations, defaultDestination).
const ConfigMapKey = "etcdBackupRestore"

func (s Source) String() string {
	if s.ConfigMap != "" {
		return fmt.Sprintf("configmap %s/%s", s.Seed.Namespace, s.ConfigMap)
	}
	return "seed " + s.Seed.String()
}

// Resolver looks destinations up in one Source. It keeps what it read of the Source for
// ConfigTTL and each destination's Bucket for ClientTTL, so a stream of uploads or deletions
// does not read the Seed and the credentials Secret from the API server every time; changed
// destinations are picked up within ConfigTTL, changed credentials within ClientTTL.
type Resolver struct {
	reader client.Reader
	src    Source
	now    func() time.Time
	opts   []S3Option

	mu      sync.Mutex
	buckets map[string]cachedBucket
	sealing map[string]cachedEncryption
	// read is the Source's content (or the configuration error) read until readUntil.
	read      *kubermaticv1.EtcdBackupRestore
	readErr   error
	readUntil time.Time
}

// ConfigTTL is how long what was read of a Source (its destinations, or that it has none) is
// reused. At a thousand backups a minute, reading the Seed for every upload, retention pass
// and status check was a third of the API server's requests.
const ConfigTTL = 2 * time.Second

type cachedBucket struct {
	bucket  Bucket
	expires time.Time
}

// ClientTTL is how long a destination's Bucket (its S3 client and credentials) is reused.
const ClientTTL = time.Minute

// NewResolver returns a Resolver for the destinations of src, reading through r; the buckets
// it opens take opts (WithPartSize, WithUploadThreads).
func NewResolver(r client.Reader, src Source, opts ...S3Option) *Resolver {
	return &Resolver{
		reader: r, src: src, now: time.Now, opts: opts,
		buckets: map[string]cachedBucket{}, sealing: map[string]cachedEncryption{},
	}
}

// config returns the destinations of the source, read less than ConfigTTL ago; nil when none
// are configured. An API error is not kept.
func (r *Resolver) config(ctx context.Context) (*kubermaticv1.EtcdBackupRestore, error) {
	r.mu.Lock()
	if r.now().Before(r.readUntil) {
		defer r.mu.Unlock()
		return r.read, r.readErr
	}
	r.mu.Unlock()
	cfg, err := r.readConfig(ctx)
	if err != nil && !IsConfigError(err) {
		return nil, err
	}
	r.mu.Lock()
	r.read, r.readErr, r.readUntil = cfg, err, r.now().Add(ConfigTTL)
	r.mu.Unlock()
	return cfg, err
}

// readConfig reads the destinations from the source; nil when none are configured.
func (r *Resolver) readConfig(ctx context.Context) (*kubermaticv1.EtcdBackupRestore, error) {
	if r.src.ConfigMap == "" {
		var seed kubermaticv1.Seed
		if err := r.reader.Get(ctx, r.src.Seed, &seed); err != nil {
			if client.IgnoreNotFound(err) == nil {
				return nil, fmt.Errorf("%w: seed %s does not exist", ErrNoDestinations, r.src.Seed)
			}
			return nil, fmt.Errorf("get seed %s: %w", r.src.Seed, err)
		}
		return seed.Spec.EtcdBackupRestore, nil
	}
	var cm corev1.ConfigMap
	key := types.NamespacedName{Namespace: r.src.Seed.Namespace, Name: r.src.ConfigMap}
	if err := r.reader.Get(ctx, key, &cm); err != nil {
		if client.IgnoreNotFound(err) == nil {
			return nil, fmt.Errorf("%w: %s does not exist", ErrNoDestinations, r.src)
		}
		return nil, fmt.Errorf("get configmap %s: %w", key, err)
	}
	raw, ok := cm.Data[ConfigMapKey]
	if !ok {
		return nil, fmt.Errorf("%w: %s has no key %s", ErrNoDestinations, r.src, ConfigMapKey)
	}
	var cfg kubermaticv1.EtcdBackupRestore
	if err := yaml.UnmarshalStrict([]byte(raw), &cfg); err != nil {
		return nil, fmt.Errorf("%w: %s, key %s: %w", ErrNotFound, r.src, ConfigMapKey, err)
	}
	return &cfg, nil
}

// Names returns the names of the configured destinations, sorted, and the default's name
// ("" if none): what a user may choose from, without anything else of a destination.
func (r *Resolver) Names(ctx context.Context) ([]string, string, error) {
	cfg, err := r.config(ctx)
	if err != nil {
		return nil, "", err
	}
	if cfg == nil || len(cfg.Destinations) == 0 {
		return nil, "", fmt.Errorf("%w (%s)", ErrNoDestinations, r.src)
	}
	names := make([]string, 0, len(cfg.Destinations))
	for k, d := range cfg.Destinations {
		if d != nil {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	def := cfg.DefaultDestination
	if !slices.Contains(names, def) {
		def = ""
	}
	return names, def, nil
}

// Lookup returns the destination called name, or the default destination when name is
// empty. Missing configuration yields ErrNoDestinations or ErrNotFound (permanent: retrying
// does not help until someone edits the Seed or ConfigMap); API errors are returned as they are.
func (r *Resolver) Lookup(ctx context.Context, name string) (Destination, error) {
	cfg, err := r.config(ctx)
	if err != nil {
		return Destination{}, err
	}
	name, d, err := r.named(cfg, name)
	if err != nil {
		return Destination{}, err
	}
	host, secure, err := ParseEndpoint(d.Endpoint)
	if err != nil {
		return Destination{}, fmt.Errorf("%w: destination %q: %w", ErrNotFound, name, err)
	}
	if d.BucketName == "" {
		return Destination{}, fmt.Errorf("%w: destination %q has no bucketName", ErrNotFound, name)
	}
	dest := Destination{Name: name, Endpoint: host, Secure: secure, BucketName: d.BucketName}
	if l := d.ObjectLock; l != nil {
		if (l.Mode != LockGovernance && l.Mode != LockCompliance) || l.Days < 1 || l.Days > 36500 {
			return Destination{}, fmt.Errorf("%w: destination %q: objectLock {mode: %q, days: %d}: mode must be %s or %s, "+
				"days from 1 to 36500", ErrObjectLockInvalid, name, l.Mode, l.Days, LockGovernance, LockCompliance)
		}
		dest.Lock = &Lock{Mode: l.Mode, Days: l.Days}
	}
	if c := d.CopyTo; c != "" {
		other, ok := cfg.Destinations[c]
		switch {
		case c == name, !ok || other == nil:
			return Destination{}, fmt.Errorf("%w: destination %q copies to %q, which is not another destination of %s",
				ErrNotFound, name, c, r.src)
		case other.CopyTo != "":
			return Destination{}, fmt.Errorf("%w: destination %q copies to %q, which copies on to %q: copies are one hop",
				ErrNotFound, name, c, other.CopyTo)
		}
		dest.CopyTo = c
	}
	// The services may read Secrets in the Seed's namespace only (deploy/k8s/rbac.yaml): a
	// reference elsewhere is a configuration error, not an API error to retry forever.
	for _, ref := range []struct {
		in   *corev1.SecretReference
		out  **corev1.SecretReference
		what string
		err  error
	}{
		{d.Credentials, &dest.Credentials, "credentials", ErrCredentials},
		{d.EncryptionSecret, &dest.Encryption, "encryptionSecret", ErrEncryption},
		{d.DecryptionSecret, &dest.Decryption, "decryptionSecret", ErrEncryption},
	} {
		if *ref.out, err = r.inSeedNamespace(ref.in); err != nil {
			return Destination{}, fmt.Errorf("%w: destination %q references %s %w; %s must be in the Seed's namespace %s",
				ref.err, name, ref.what, err, ref.what, r.src.Seed.Namespace)
		}
	}
	return dest, nil
}

// named returns the destination called name in cfg, or the default when name is empty.
func (r *Resolver) named(cfg *kubermaticv1.EtcdBackupRestore,
	name string) (string, *kubermaticv1.BackupDestination, error) {
	if cfg == nil || len(cfg.Destinations) == 0 {
		return "", nil, fmt.Errorf("%w (%s)", ErrNoDestinations, r.src)
	}
	if name == "" {
		name = cfg.DefaultDestination
		if name == "" {
			return "", nil, fmt.Errorf("%w: no destination named and %s has no defaultDestination", ErrNotFound, r.src)
		}
	}
	d, ok := cfg.Destinations[name]
	if !ok || d == nil {
		known := slices.Sorted(maps.Keys(cfg.Destinations))
		return "", nil, fmt.Errorf("%w: %q is not configured in %s (configured: %s)", ErrNotFound, name, r.src,
			strings.Join(known, ", "))
	}
	return name, d, nil
}

// inSeedNamespace returns ref with the Seed's namespace when it names none; nil when it names
// no Secret. A Secret in another namespace is an error.
func (r *Resolver) inSeedNamespace(ref *corev1.SecretReference) (*corev1.SecretReference, error) {
	if ref == nil || ref.Name == "" {
		return nil, nil
	}
	c := *ref
	if c.Namespace == "" {
		c.Namespace = r.src.Seed.Namespace
	}
	if c.Namespace != r.src.Seed.Namespace {
		return nil, fmt.Errorf("%s/%s", c.Namespace, c.Name)
	}
	return &c, nil
}

// Encryption returns what backups to d are encrypted to: the recipients in its encryption
// Secret, or none when d names no such Secret. A missing Secret, key or valid recipient is
// ErrEncryption: backups to d fail rather than go out unencrypted. What was read is kept for
// ConfigTTL.
func (r *Resolver) Encryption(ctx context.Context, d Destination) (backupformat.Encryption, error) {
	if d.Encryption == nil {
		return backupformat.Encryption{}, nil
	}
	key := "enc|" + d.Encryption.Namespace + "/" + d.Encryption.Name
	r.mu.Lock()
	if c, ok := r.sealing[key]; ok && r.now().Before(c.expires) {
		r.mu.Unlock()
		return c.enc, nil
	}
	r.mu.Unlock()
	text, err := r.secretKey(ctx, d.Name, "encryptionSecret", d.Encryption, RecipientsKey)
	if err != nil {
		return backupformat.Encryption{}, err
	}
	enc, err := backupformat.ParseRecipients(text)
	if err != nil {
		return backupformat.Encryption{}, fmt.Errorf("%w: destination %q: key %s of secret %s/%s: %w", ErrEncryption,
			d.Name, RecipientsKey, d.Encryption.Namespace, d.Encryption.Name, err)
	}
	r.mu.Lock()
	r.sealing[key] = cachedEncryption{enc: enc, expires: r.now().Add(ConfigTTL)}
	r.mu.Unlock()
	return enc, nil
}

// Identities returns the identities d's backups are decrypted with (its decryption Secret);
// none when d names no such Secret. Not cached: it is read once per restore or drill.
func (r *Resolver) Identities(ctx context.Context, d Destination) (backupformat.Identities, error) {
	if d.Decryption == nil {
		return backupformat.Identities{}, nil
	}
	text, err := r.secretKey(ctx, d.Name, "decryptionSecret", d.Decryption, IdentityKey)
	if err != nil {
		return backupformat.Identities{}, err
	}
	ids, err := backupformat.ParseIdentities(text)
	if err != nil {
		return backupformat.Identities{}, fmt.Errorf("%w: destination %q: key %s of secret %s/%s: %w", ErrEncryption,
			d.Name, IdentityKey, d.Decryption.Namespace, d.Decryption.Name, err)
	}
	return ids, nil
}

func (r *Resolver) secretKey(ctx context.Context, dest, what string, ref *corev1.SecretReference,
	key string) (string, error) {
	var s corev1.Secret
	if err := r.reader.Get(ctx, types.NamespacedName{Namespace: ref.Namespace, Name: ref.Name}, &s); err != nil {
		if client.IgnoreNotFound(err) == nil {
			return "", fmt.Errorf("%w: destination %q: %s %s/%s does not exist", ErrEncryption, dest, what, ref.Namespace,
				ref.Name)
		}
		if apierrors.IsForbidden(err) {
			return "", fmt.Errorf("%w: destination %q: reading %s %s/%s is forbidden: RBAC grants the Seed namespace's "+
				"Secrets by name (deploy/k8s/rbac.yaml, e.g. Role etcdbackup-snapshotter-encryption for an encryptionSecret); "+
				"add %q there", ErrEncryption, dest, what, ref.Namespace, ref.Name, ref.Name)
		}
		return "", fmt.Errorf("get %s %s/%s: %w", what, ref.Namespace, ref.Name, err)
	}
	v := s.Data[key]
	if len(v) == 0 {
		return "", fmt.Errorf("%w: destination %q: %s %s/%s has no key %s", ErrEncryption, dest, what, ref.Namespace,
			ref.Name, key)
	}
	return string(v), nil
}

type cachedEncryption struct {
	enc     backupformat.Encryption
	expires time.Time
}

// Bucket returns d's bucket, reached with the credentials of its Secret, reusing one opened
// less than ClientTTL ago for the same destination.
func (r *Resolver) Bucket(ctx context.Context, d Destination) (Bucket, error) {
	key := d.key()
	r.mu.Lock()
	c, ok := r.buckets[key]
	r.mu.Unlock()
	if ok && r.now().Before(c.expires) {
		return c.bucket, nil
	}
	fresh, err := r.open(ctx, d)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.buckets[key] = cachedBucket{bucket: fresh, expires: r.now().Add(ClientTTL)}
	r.mu.Unlock()
	return fresh, nil
}

func (r *Resolver) open(ctx context.Context, d Destination) (Bucket, error) {
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
		return nil, fmt.Errorf("%w: secret %s lacks %s or %s", ErrCredentials, key, kubermaticv1.SecretAccessKeyID,
			kubermaticv1.SecretSecretAccessKey)
	}
	b, err := d.Open(id, secret, r.opts...)
	if err != nil || d.Lock == nil {
		return b, err
	}
	// Checked once a ClientTTL with the bucket: a destination that promises immutable
	// backups and cannot keep the promise is refused, never written to without the lock.
	if lc, ok := b.(interface{ checkLock(context.Context) error }); ok {
		if err := lc.checkLock(ctx); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// Open opens d's bucket with the given keys (not necessarily those of d's Secret: the
// restorer proves the member pods' own).
func (d Destination) Open(accessKeyID, secretAccessKey string, opts ...S3Option) (Bucket, error) {
	opts = append(opts, withDestination(d.Name))
	if d.Lock != nil {
		opts = append(opts, withLock(*d.Lock))
	}
	b, err := OpenS3(d.Endpoint, d.Secure, accessKeyID, secretAccessKey, d.BucketName, opts...)
	if err != nil {
		return nil, fmt.Errorf("destination %q: %w", d.Name, err)
	}
	return b, nil
}

// IsConfigError reports whether err means the destination's configuration (the Seed, its
// Secrets, the bucket or the keys' rights) must be fixed by a person: retrying does not help.
// Every service treats such an error as permanent.
func IsConfigError(err error) bool {
	return Reason(err) != ""
}

// reasons are the configuration errors and the reason each is reported with: the same in
// every service (a Failed backup's or restore's reason, a condition's, an Event's).
var reasons = []struct {
	err    error
	reason string
}{
	{ErrNoDestinations, "NoDestinations"},
	{ErrNotFound, "DestinationNotFound"},
	{ErrCredentials, "CredentialsInvalid"},
	{ErrEncryption, "EncryptionInvalid"},
	{ErrObjectLockInvalid, "ObjectLockInvalid"},
	{ErrObjectLockNotEnabled, "ObjectLockNotEnabled"},
	{ErrBucketNotFound, "BucketNotFound"},
	{ErrAccessDenied, "AccessDenied"},
}

// Reason returns the reason of a configuration error ("BucketNotFound", "AccessDenied", ...),
// or "" when err is not one.
func Reason(err error) string {
	if err == nil {
		return ""
	}
	for _, r := range reasons {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	return ""
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
