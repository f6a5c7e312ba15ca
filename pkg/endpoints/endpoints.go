// Package endpoints finds a cluster's etcd members and the client TLS to reach them.
//
// KKP's convention: the StatefulSet "etcd" (3 members) in namespace "cluster-<name>", members
// at https://etcd-<i>.etcd.cluster-<name>.svc.cluster.local:2379, the CA in Secret "ca"
// (ca.crt) and the client certificate in Secret "apiserver-etcd-client-certificate"
// (apiserver-etcd-client.crt, apiserver-etcd-client.key). Clusters that do not follow it set
// the annotations etcdbackup.k8c.io/etcd-endpoints and etcdbackup.k8c.io/etcd-client-secret.
package endpoints

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// KKP's names.
const (
	DefaultMembers          = 3
	CASecret                = "ca"
	CAKey                   = "ca.crt"
	ClientCertSecret        = "apiserver-etcd-client-certificate"
	ClientCertKey           = "apiserver-etcd-client.crt"
	ClientKeyKey            = "apiserver-etcd-client.key"
	OverrideSecretCAKey     = "ca.crt"
	OverrideSecretCertKey   = "tls.crt"
	OverrideSecretKeyKey    = "tls.key"
	OverrideSecretPlainHTTP = "none"
)

// ErrConfig marks a cluster whose etcd cannot be addressed until someone fixes its objects.
var ErrConfig = errors.New("etcd endpoint configuration")

// Target is how to reach a cluster's etcd.
type Target struct {
	Endpoints []string
	// TLS is nil for plain HTTP endpoints.
	TLS *tls.Config
}

// Resolve returns the etcd target of cluster, whose control plane lives in namespace.
func Resolve(ctx context.Context, r client.Reader, cluster *kubermaticv1.Cluster, namespace string) (Target, error) {
	var t Target
	if v := cluster.Annotations[kubermaticv1.AnnotationEtcdEndpoints]; v != "" {
		for _, e := range strings.Split(v, ",") {
			if e = strings.TrimSpace(e); e != "" {
				t.Endpoints = append(t.Endpoints, e)
			}
		}
	} else {
		for i := range DefaultMembers {
			t.Endpoints = append(t.Endpoints, fmt.Sprintf("https://etcd-%d.etcd.%s.svc.cluster.local:2379", i, namespace))
		}
	}
	if len(t.Endpoints) == 0 {
		return Target{}, fmt.Errorf("%w: annotation %s lists no endpoint", ErrConfig, kubermaticv1.AnnotationEtcdEndpoints)
	}
	secret := cluster.Annotations[kubermaticv1.AnnotationEtcdClientSecret]
	if secret == OverrideSecretPlainHTTP {
		return t, nil
	}
	if secret == "" && !strings.HasPrefix(t.Endpoints[0], "https://") {
		return t, nil
	}
	var err error
	if secret != "" {
		t.TLS, err = tlsFrom(ctx, r, namespace, secret, OverrideSecretCAKey, secret, OverrideSecretCertKey,
			OverrideSecretKeyKey)
	} else {
		t.TLS, err = tlsFrom(ctx, r, namespace, CASecret, CAKey, ClientCertSecret, ClientCertKey, ClientKeyKey)
	}
	return t, err
}

func tlsFrom(ctx context.Context, r client.Reader, ns, caSecret, caKey, certSecret, certKey,
	keyKey string) (*tls.Config, error) {
	ca, err := secretValue(ctx, r, ns, caSecret, caKey)
	if err != nil {
		return nil, err
	}
	cert, err := secretValue(ctx, r, ns, certSecret, certKey)
	if err != nil {
		return nil, err
	}
	key, err := secretValue(ctx, r, ns, certSecret, keyKey)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("%w: %s/%s[%s] holds no PEM certificate", ErrConfig, ns, caSecret, caKey)
	}
	pair, err := tls.X509KeyPair(cert, key)
	if err != nil {
		return nil, fmt.Errorf("%w: client certificate in %s/%s: %w", ErrConfig, ns, certSecret, err)
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
}

func secretValue(ctx context.Context, r client.Reader, ns, name, key string) ([]byte, error) {
	var s corev1.Secret
	if err := r.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &s); err != nil {
		if client.IgnoreNotFound(err) == nil {
			return nil, fmt.Errorf("%w: secret %s/%s does not exist", ErrConfig, ns, name)
		}
		if apierrors.IsForbidden(err) {
			// RBAC grants the Secrets by name (deploy/k8s/rbac.yaml): another name is a grant to add.
			return nil, fmt.Errorf("%w: reading secret %s/%s is forbidden: the ClusterRole grants etcd's Secrets by name (%s, "+
				"%s); add %q to its resourceNames to use it (docs/security.md)",
				ErrConfig, ns, name, CASecret, ClientCertSecret, name)
		}
		return nil, fmt.Errorf("get secret %s/%s: %w", ns, name, err)
	}
	v, ok := s.Data[key]
	if !ok || len(v) == 0 {
		return nil, fmt.Errorf("%w: secret %s/%s has no key %s", ErrConfig, ns, name, key)
	}
	return v, nil
}
