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

// credentials gives the member pods their download credentials: a Secret named SavedName in
// the cluster namespace, controlled by this restore, copied from
// spec.backupDownloadCredentialsSecret (a Secret in the cluster's namespace, as KKP means it)
// or else from the destination's own. It returns the Secret's name and the keys it holds in
// the API, which are exactly what the pods' environment will get.
func (r *Reconciler) credentials(ctx context.Context, rs *kubermaticv1.EtcdRestore, cluster *kubermaticv1.Cluster,
	d destination.Destination, ids backupformat.Identities) (name, id, key string, podIDs backupformat.Identities,
	err error) {
	copied := &corev1.Secret{}
	err = r.API.Get(ctx, types.NamespacedName{Namespace: rs.Namespace, Name: SavedName(rs)}, copied)
	if apierrors.IsNotFound(err) {
		copied, err = r.copyCredentials(ctx, rs, cluster, d, ids)
	}
	if err != nil {
		return "", "", "", podIDs, err
	}
	// A Secret of that name someone else made would hand the pods keys nobody chose.
	if !metav1.IsControlledBy(copied, rs) {
		return "", "", "", podIDs,
			fmt.Errorf("%w: Secret %s/%s has no controller ownerReference to this EtcdRestore (uid %s); delete it or rename "+
				"the EtcdRestore",
				ErrCredentials, copied.Namespace, copied.Name, rs.UID)
	}
	id, key = string(copied.Data[kubermaticv1.SecretAccessKeyID]), string(copied.Data[kubermaticv1.SecretSecretAccessKey])
	if id == "" || key == "" {
		return "", "", "", podIDs, fmt.Errorf("%w: Secret %s/%s lacks %s or %s", ErrCredentials, copied.Namespace,
			copied.Name, kubermaticv1.SecretAccessKeyID, kubermaticv1.SecretSecretAccessKey)
	}
	if text := copied.Data[IdentityEnv]; len(text) > 0 {
		if podIDs, err = backupformat.ParseIdentities(string(text)); err != nil {
			return "", "", "", podIDs, fmt.Errorf("%w: Secret %s/%s, key %s: %w", ErrCredentials, copied.Namespace,
				copied.Name, IdentityEnv, err)
		}
	}
	return copied.Name, id, key, podIDs, nil
}

func (r *Reconciler) copyCredentials(ctx context.Context, rs *kubermaticv1.EtcdRestore,
	cluster *kubermaticv1.Cluster, d destination.Destination, ids backupformat.Identities) (*corev1.Secret, error) {
	src := types.NamespacedName{Namespace: cluster.NamespaceName(), Name: rs.Spec.BackupDownloadCredentialsSecret}
	what := "spec.backupDownloadCredentialsSecret"
	if src.Name == "" {
		if d.Credentials == nil || d.Credentials.Name == "" {
			return nil, fmt.Errorf("%w: destination %q references no credentials secret", ErrCredentials, d.Name)
		}
		src, what = types.NamespacedName{Namespace: d.Credentials.Namespace, Name: d.Credentials.Name},
			fmt.Sprintf("destination %q's credentials", d.Name)
	}
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
	copied := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: SavedName(rs), Namespace: rs.Namespace,
			Labels: map[string]string{"app.kubernetes.io/managed-by": "etcdbackup-restorer"}},
		Data: map[string][]byte{kubermaticv1.SecretAccessKeyID: id, kubermaticv1.SecretSecretAccessKey: key},
	}
	if ids.Text != "" {
		copied.Data[IdentityEnv] = []byte(ids.Text)
	}
	if err := controllerutil.SetControllerReference(rs, copied, r.Client.Scheme()); err != nil {
		return nil, err
	}
	if err := r.Client.Create(ctx, copied); err != nil {
		if !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("create download credentials secret: %w", err)
		}
		// Made meanwhile by an earlier attempt, or by someone else: the caller checks whose.
		if err := r.API.Get(ctx, client.ObjectKeyFromObject(copied), copied); err != nil {
			return nil, err
		}
	}
	return copied, nil
}

// proveCredentials makes the member pods' credentials (credentials) and reads the backup's
// metadata with exactly them, against the destination the pods will download from. It
// returns the Secret's name; an error wrapping ErrCredentials, member.ErrNotFound or
// member.ErrCorrupt needs a person, any other is transient.
func (r *Reconciler) proveCredentials(ctx context.Context, rs *kubermaticv1.EtcdRestore,
	cluster *kubermaticv1.Cluster, d destination.Destination, objectKey, sha string,
	ids backupformat.Identities) (string, error) {
	name, id, key, podIDs, err := r.credentials(ctx, rs, cluster, d, ids)
	if err != nil {
		return "", err
	}
	b, err := d.Open(id, key)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrCredentials, err)
	}
	vctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	err = member.Visible(vctx, b, objectKey, sha, podIDs)
	switch {
	case errors.Is(err, member.ErrDecrypt):
		return "", fmt.Errorf("with the member pods' identities (Secret %s/%s): %w", rs.Namespace, name, err)
	case errors.Is(err, member.ErrRefused):
		return "", fmt.Errorf("%w: destination %q refused the member pods' credentials (Secret %s/%s): %w", ErrCredentials,
			d.Name, rs.Namespace, name, err)
	case errors.Is(err, member.ErrNotFound), errors.Is(err, member.ErrCorrupt):
		return "", fmt.Errorf("%w: with the member pods' credentials (Secret %s/%s) destination %q shows another object "+
			"than the verified backup: %v", ErrCredentials, rs.Namespace, name, d.Name, err)
	}
	return name, err
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
