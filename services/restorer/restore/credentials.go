// credentials: the member pods' download credentials, copied into a Secret the restore
// controls and proven against the destination before anything is touched.

package restore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/services/restorer/member"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
)

// ErrCredentials marks download credentials the member pods could not use: a Secret that is
// missing, lacks a key, is not this restore's, or keys the store refuses.
var ErrCredentials = errors.New("download credentials")

// download is how the member pods download the backup: the Secret their restore step reads,
// a Reader of exactly the same reach for the restorer to prove it with, and the identities
// the Secret gives them.
type download struct {
	secret string
	reader destination.Reader
	ids    backupformat.Identities
}

// credentials gives the member pods their download credentials in a Secret named SavedName
// in the cluster namespace, controlled by this restore. With
// spec.backupDownloadCredentialsSecret (a Secret in the cluster's namespace, as KKP means
// it) they are that Secret's keys, copied; without, they are a presigned GET URL of exactly
// the backup's object, valid until the restore's timeout: the destination's own keys never
// reach the tenant's namespace. The Reader returned reads with what the Secret holds in the
// API, which is exactly what the pods' environment will get.
func (r *Reconciler) credentials(ctx context.Context, rs *kubermaticv1.EtcdRestore, cluster *kubermaticv1.Cluster,
	d destination.Destination, objectKey string, ids backupformat.Identities) (download, error) {
	saved := &corev1.Secret{}
	err := r.API.Get(ctx, types.NamespacedName{Namespace: rs.Namespace, Name: SavedName(rs)}, saved)
	if apierrors.IsNotFound(err) {
		saved, err = r.makeCredentials(ctx, rs, cluster, d, objectKey, ids)
	}
	if err != nil {
		return download{}, err
	}
	// A Secret of that name someone else made would hand the pods keys nobody chose.
	if !metav1.IsControlledBy(saved, rs) {
		return download{}, fmt.Errorf("%w: Secret %s/%s has no controller ownerReference to this EtcdRestore (uid %s); "+
			"delete it or rename the EtcdRestore", ErrCredentials, saved.Namespace, saved.Name, rs.UID)
	}
	dl := download{secret: saved.Name}
	if text := saved.Data[IdentityEnv]; len(text) > 0 {
		if dl.ids, err = backupformat.ParseIdentities(string(text)); err != nil {
			return download{}, fmt.Errorf("%w: Secret %s/%s, key %s: %w", ErrCredentials, saved.Namespace, saved.Name,
				IdentityEnv, err)
		}
	}
	if u := string(saved.Data[URLEnv]); u != "" {
		if dl.reader, err = destination.OpenPresigned(u, objectKey); err != nil {
			return download{}, fmt.Errorf("%w: Secret %s/%s, key %s: %w", ErrCredentials, saved.Namespace, saved.Name,
				URLEnv, err)
		}
		return dl, nil
	}
	id, key := string(saved.Data[kubermaticv1.SecretAccessKeyID]), string(saved.Data[kubermaticv1.SecretSecretAccessKey])
	if id == "" || key == "" {
		return download{}, fmt.Errorf("%w: Secret %s/%s lacks %s or %s", ErrCredentials, saved.Namespace,
			saved.Name, kubermaticv1.SecretAccessKeyID, kubermaticv1.SecretSecretAccessKey)
	}
	if dl.reader, err = d.Open(id, key); err != nil {
		return download{}, fmt.Errorf("%w: %w", ErrCredentials, err)
	}
	return dl, nil
}

// URLEnv is the key, in the member pods' Secret, and the environment variable of the restore
// step, of the presigned GET URL of the backup.
const URLEnv = "BACKUP_URL"

// makeCredentials creates the member pods' Secret: the keys of
// spec.backupDownloadCredentialsSecret, or a presigned URL of the backup made with the
// destination's keys.
func (r *Reconciler) makeCredentials(ctx context.Context, rs *kubermaticv1.EtcdRestore,
	cluster *kubermaticv1.Cluster, d destination.Destination, objectKey string,
	ids backupformat.Identities) (*corev1.Secret, error) {
	data, err := r.downloadKeys(ctx, rs, cluster)
	if err == nil && data == nil {
		data, err = r.presign(ctx, rs, d, objectKey)
	}
	if err != nil {
		return nil, err
	}
	saved := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: SavedName(rs), Namespace: rs.Namespace,
			Labels: map[string]string{"app.kubernetes.io/managed-by": "etcdbackup-restorer"}},
		Data: data,
	}
	if ids.Text != "" {
		saved.Data[IdentityEnv] = []byte(ids.Text)
	}
	if err := controllerutil.SetControllerReference(rs, saved, r.Client.Scheme()); err != nil {
		return nil, err
	}
	if err := r.Client.Create(ctx, saved); err != nil {
		if !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("create download credentials secret: %w", err)
		}
		// Made meanwhile by an earlier attempt, or by someone else: the caller checks whose.
		if err := r.API.Get(ctx, client.ObjectKeyFromObject(saved), saved); err != nil {
			return nil, err
		}
	}
	return saved, nil
}

// downloadKeys returns the keys of spec.backupDownloadCredentialsSecret, in the cluster's
// namespace, or nil when the spec names none.
func (r *Reconciler) downloadKeys(ctx context.Context, rs *kubermaticv1.EtcdRestore,
	cluster *kubermaticv1.Cluster) (map[string][]byte, error) {
	if rs.Spec.BackupDownloadCredentialsSecret == "" {
		return nil, nil
	}
	src := types.NamespacedName{Namespace: cluster.NamespaceName(), Name: rs.Spec.BackupDownloadCredentialsSecret}
	const what = "spec.backupDownloadCredentialsSecret"
	var s corev1.Secret
	if err := r.API.Get(ctx, src, &s); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("%w: %s: Secret %s does not exist", ErrCredentials, what, src)
		}
		return nil, err
	}
	id, key := s.Data[kubermaticv1.SecretAccessKeyID], s.Data[kubermaticv1.SecretSecretAccessKey]
	if len(id) == 0 || len(key) == 0 {
		return nil, fmt.Errorf("%w: %s: Secret %s lacks %s or %s", ErrCredentials, what, src,
			kubermaticv1.SecretAccessKeyID, kubermaticv1.SecretSecretAccessKey)
	}
	return map[string][]byte{kubermaticv1.SecretAccessKeyID: id, kubermaticv1.SecretSecretAccessKey: key}, nil
}

// presign returns a presigned GET URL of the backup's object, made with the destination's
// keys and valid until the restore's timeout (with a minute's margin for the clocks), within
// S3's limit of 7 days.
func (r *Reconciler) presign(ctx context.Context, rs *kubermaticv1.EtcdRestore, d destination.Destination,
	objectKey string) (map[string][]byte, error) {
	b, err := r.Destinations.Bucket(ctx, d)
	if err != nil {
		return nil, err
	}
	valid := r.Opts.Timeout
	if rs.Status.StartTime != nil {
		valid = rs.Status.StartTime.Add(r.Opts.Timeout).Sub(r.now())
	}
	valid = min(max(valid+time.Minute, time.Minute), destination.MaxPresignExpiry)
	u, err := b.PresignGet(ctx, objectKey, valid)
	if err != nil {
		return nil, fmt.Errorf("presign the member pods' download: %w", err)
	}
	return map[string][]byte{URLEnv: []byte(u)}, nil
}

// proveCredentials makes the member pods' credentials (credentials) and reads the backup's
// metadata with exactly them, against the destination the pods will download from. It
// returns the Secret's name; an error wrapping ErrCredentials, member.ErrNotFound or
// member.ErrCorrupt needs a person, any other is transient.
func (r *Reconciler) proveCredentials(ctx context.Context, rs *kubermaticv1.EtcdRestore,
	cluster *kubermaticv1.Cluster, d destination.Destination, objectKey, sha string,
	ids backupformat.Identities) (string, error) {
	dl, err := r.credentials(ctx, rs, cluster, d, objectKey, ids)
	if err != nil {
		return "", err
	}
	vctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	err = member.Visible(vctx, dl.reader, objectKey, sha, dl.ids)
	switch {
	case errors.Is(err, member.ErrDecrypt):
		return "", fmt.Errorf("with the member pods' identities (Secret %s/%s): %w", rs.Namespace, dl.secret, err)
	case errors.Is(err, member.ErrRefused):
		return "", fmt.Errorf("%w: destination %q refused the member pods' credentials (Secret %s/%s): %w", ErrCredentials,
			d.Name, rs.Namespace, dl.secret, err)
	case errors.Is(err, member.ErrNotFound), errors.Is(err, member.ErrCorrupt):
		return "", fmt.Errorf("%w: with the member pods' credentials (Secret %s/%s) destination %q shows another object "+
			"than the verified backup: %v", ErrCredentials, rs.Namespace, dl.secret, d.Name, err)
	}
	return dl.secret, err
}

// IdentityEnv is the key, in the member pods' Secret, and the environment variable of the
// restore step, of the age identities an encrypted backup is decrypted with.
const IdentityEnv = "AGE_IDENTITY"

// ReasonDecryptionFailed: an encrypted backup cannot be decrypted with the identities given.
const ReasonDecryptionFailed = "DecryptionFailed"

// ErrIdentity marks identities that cannot be read: a Secret or key missing, no valid key.
var ErrIdentity = errors.New("decryption identity")

// identities returns the age identities the restore decrypts with: those in the Secret the
// annotation AnnotationDecryptionSecret names (in the cluster's namespace), else those of the
// destination's decryptionSecret, else none (an unencrypted backup needs none).
func (r *Reconciler) identities(ctx context.Context, rs *kubermaticv1.EtcdRestore, cluster *kubermaticv1.Cluster,
	d destination.Destination) (backupformat.Identities, error) {
	name := rs.Annotations[kubermaticv1.AnnotationDecryptionSecret]
	if name == "" {
		ids, err := r.Destinations.Identities(ctx, d)
		if destination.IsConfigError(err) {
			return ids, fmt.Errorf("%w: %w", ErrIdentity, err)
		}
		return ids, err
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return backupformat.Identities{}, fmt.Errorf("%w: annotation %s: %q is not a Secret name: %s", ErrIdentity,
			kubermaticv1.AnnotationDecryptionSecret, name, strings.Join(errs, "; "))
	}
	src := types.NamespacedName{Namespace: cluster.NamespaceName(), Name: name}
	var s corev1.Secret
	if err := r.API.Get(ctx, src, &s); err != nil {
		if apierrors.IsNotFound(err) {
			return backupformat.Identities{}, fmt.Errorf("%w: annotation %s: Secret %s does not exist", ErrIdentity,
				kubermaticv1.AnnotationDecryptionSecret, src)
		}
		return backupformat.Identities{}, err
	}
	text := s.Data[destination.IdentityKey]
	if len(text) == 0 {
		return backupformat.Identities{}, fmt.Errorf("%w: annotation %s: Secret %s has no key %s", ErrIdentity,
			kubermaticv1.AnnotationDecryptionSecret, src, destination.IdentityKey)
	}
	ids, err := backupformat.ParseIdentities(string(text))
	if err != nil {
		return backupformat.Identities{}, fmt.Errorf("%w: annotation %s: Secret %s, key %s: %w", ErrIdentity,
			kubermaticv1.AnnotationDecryptionSecret, src, destination.IdentityKey, err)
	}
	return ids, nil
}
