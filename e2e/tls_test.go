package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/etcdtest"
	"go.etcd.io/etcd/server/v3/embed"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// An etcd that only speaks mutual TLS is backed up with the client certificate KKP keeps in
// the cluster namespace, found by KKP's Secret names.
func TestBackupOverMutualTLSWithKKPSecrets(t *testing.T) {
	dumpLogsOnFailure(t)
	ctx := testContext(t, 2*time.Minute)
	dir := t.TempDir()
	ca, caKey := newCert(t, nil, nil, "etcd-ca", true)
	server, serverKey := newCert(t, ca, caKey, "etcd-server", false)
	client, clientKey := newCert(t, ca, caKey, "apiserver-etcd-client", false)
	files := map[string][]byte{"ca.crt": ca.pem, "server.crt": server.pem, "server.key": serverKey}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tlsEtcd, err := etcdtest.StartIn(filepath.Join(dir, "data"), "tls", func(c *embed.Config) {
		c.ListenClientUrls[0].Scheme, c.AdvertiseClientUrls[0].Scheme = "https", "https"
		c.ClientTLSInfo.CertFile = filepath.Join(dir, "server.crt")
		c.ClientTLSInfo.KeyFile = filepath.Join(dir, "server.key")
		c.ClientTLSInfo.TrustedCAFile = filepath.Join(dir, "ca.crt")
		c.ClientTLSInfo.ClientCertAuth = true
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tlsEtcd.Stop()

	const cluster = "tls1"
	ns := "cluster-" + cluster
	// Only the endpoint is overridden; the TLS material is where KKP keeps it.
	mustAddCluster(t, ctx, cluster, tlsEtcd.Endpoint)
	var c kubermaticv1.Cluster
	if err := env.Client.Get(ctx, types.NamespacedName{Name: cluster}, &c); err != nil {
		t.Fatal(err)
	}
	delete(c.Annotations, kubermaticv1.AnnotationEtcdClientSecret)
	if err := env.Client.Update(ctx, &c); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*corev1.Secret{
		{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ca"}, Data: map[string][]byte{"ca.crt": ca.pem}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "apiserver-etcd-client-certificate"}, Data: map[string][]byte{
			"apiserver-etcd-client.crt": client.pem, "apiserver-etcd-client.key": clientKey,
		}},
	} {
		if err := env.Client.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	cfg := newConfig(t, ctx, cluster, "tls", "@every 2s", "", 5)
	got := waitConfig(t, ctx, cfg.Namespace, cfg.Name, 60*time.Second, "a completed backup over mTLS",
		func(c *kubermaticv1.EtcdBackupConfig) bool {
			return len(entries(c, kubermaticv1.PhaseCompleted)) > 0 || len(entries(c, kubermaticv1.PhaseFailed)) > 0
		})
	if f := entries(got, kubermaticv1.PhaseFailed); len(f) > 0 {
		t.Fatalf("backup over mTLS failed: %s", f[0].BackupMessage)
	}
}

type cert struct {
	x509 *x509.Certificate
	pem  []byte
}

// newCert makes a CA (parent nil) or a certificate for 127.0.0.1 signed by parent, valid for
// server and client use. It returns the certificate and its PEM key.
func newCert(t *testing.T, parent *cert, parentKey []byte, cn string, isCA bool) (*cert, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		IsCA:                  isCA,
		BasicConstraintsValid: true,
	}
	signer, signerCert := any(key), tmpl
	if parent != nil {
		block, _ := pem.Decode(parentKey)
		pk, err := x509.ParseECPrivateKey(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		signer, signerCert = pk, parent.x509
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	parsed, _ := x509.ParseCertificate(der)
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return &cert{x509: parsed, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})},
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}
