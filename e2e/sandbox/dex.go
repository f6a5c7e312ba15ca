package sandbox

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/crypto/bcrypt"
	"sigs.k8s.io/yaml"
)

// The sandbox's OIDC provider: Dex (tools/dex), with one client (the console) and one user.
const (
	// OIDCClientID is the console's client at Dex, and kube-apiserver's --oidc-client-id.
	OIDCClientID = "etcdbackup-console"
	// OIDCUser is the demo user's email, which kube-apiserver takes as the user's name
	// (--oidc-username-claim=email); OIDCUserID is Dex's id of the user.
	OIDCUser   = "operator@example.com"
	OIDCUserID = "08a8684b-db88-4b73-90a9-3cd1661f5466"
	// OIDCGroup is the demo user's group at Dex; kube-apiserver prefixes it (OIDCGroupPrefix),
	// so RBAC binds OIDCGroupPrefix + OIDCGroup.
	OIDCGroup       = "etcd-operators"
	OIDCGroupPrefix = "oidc:"
)

// Dex is a running Dex: issuer on HTTPS with its own certificate, static passwords, in-memory
// storage, and its gRPC API (plain, on 127.0.0.1) to revoke refresh tokens with.
type Dex struct {
	Issuer string
	// CA is the certificate the issuer's TLS is verified with (kube-apiserver's --oidc-ca-file).
	CA string
	// ClientIDFile and ClientSecretFile are the console's --oidc-client-id-file and
	// --oidc-client-secret-file.
	ClientIDFile     string
	ClientSecretFile string
	// Password is OIDCUser's password, made for this sandbox.
	Password string
	// GRPC is the address of Dex's gRPC API.
	GRPC string
	proc *Process
}

// DexOptions shape the sandbox's Dex.
type DexOptions struct {
	// RedirectURL is the console's /oidc/callback.
	RedirectURL string
	// IDTokenTTL is how long an ID token lasts (Dex's default, 24h, when zero).
	IDTokenTTL time.Duration
}

// StartDex starts Dex under dir/dex and waits until its discovery document is served.
func StartDex(ctx context.Context, dir, toolDir string, o DexOptions) (*Dex, error) {
	d := &Dex{}
	cf, err := d.configure(filepath.Join(dir, "dex"), o)
	if err != nil {
		return nil, err
	}
	if d.proc, err = StartProcess("dex", filepath.Join(toolDir, "dex"), []string{"serve", cf}, nil,
		filepath.Join(dir, "logs")); err != nil {
		return nil, err
	}
	if err := d.waitReady(ctx); err != nil {
		d.Stop()
		return nil, err
	}
	return d, nil
}

// configure writes Dex's certificate, the client's id and secret, and its configuration into
// dd, and returns the configuration's path.
func (d *Dex) configure(dd string, o DexOptions) (string, error) {
	if err := os.MkdirAll(dd, 0o700); err != nil {
		return "", err
	}
	ports := make([]int, 2)
	for i := range ports {
		p, err := FreePort()
		if err != nil {
			return "", err
		}
		ports[i] = p
	}
	d.Issuer = fmt.Sprintf("https://127.0.0.1:%d/dex", ports[0])
	d.GRPC = fmt.Sprintf("127.0.0.1:%d", ports[1])
	d.CA = filepath.Join(dd, "tls.crt")
	key := filepath.Join(dd, "tls.key")
	if err := selfSignedCert(d.CA, key); err != nil {
		return "", err
	}
	secret, err := randomHex(24)
	if err != nil {
		return "", err
	}
	if d.Password, err = randomHex(8); err != nil {
		return "", err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(d.Password), bcrypt.DefaultCost)
	if err != nil {
		return "", err
	}
	d.ClientIDFile, d.ClientSecretFile = filepath.Join(dd, "client-id"), filepath.Join(dd, "client-secret")
	for f, v := range map[string]string{d.ClientIDFile: OIDCClientID, d.ClientSecretFile: secret} {
		if err := os.WriteFile(f, []byte(v+"\n"), 0o600); err != nil {
			return "", err
		}
	}
	b, err := yaml.Marshal(d.config(o, ports[0], key, secret, string(hash)))
	if err != nil {
		return "", err
	}
	cf := filepath.Join(dd, "config.yaml")
	return cf, os.WriteFile(cf, b, 0o600)
}

// config is Dex's configuration: HTTPS on port, memory storage, the console's client and
// OIDCUser with the password of hash.
func (d *Dex) config(o DexOptions, port int, key, secret, hash string) map[string]any {
	expiry := map[string]any{"refreshTokens": map[string]any{"reuseInterval": "3s"}}
	if o.IDTokenTTL > 0 {
		expiry["idTokens"] = o.IDTokenTTL.String()
	}
	return map[string]any{
		"issuer":  d.Issuer,
		"storage": map[string]any{"type": "memory"},
		"web":     map[string]any{"https": fmt.Sprintf("127.0.0.1:%d", port), "tlsCert": d.CA, "tlsKey": key},
		"grpc":    map[string]any{"addr": d.GRPC},
		"logger":  map[string]any{"level": "info", "format": "text"},
		"oauth2":  map[string]any{"skipApprovalScreen": true, "responseTypes": []string{"code"}},
		"expiry":  expiry,
		"staticClients": []any{map[string]any{
			"id": OIDCClientID, "secret": secret, "name": "etcd backups console",
			"redirectURIs": []string{o.RedirectURL},
		}},
		"enablePasswordDB": true,
		"staticPasswords": []any{map[string]any{
			"email": OIDCUser, "hash": hash, "username": "operator", "userID": OIDCUserID,
			"groups": []string{OIDCGroup},
		}},
	}
}

// KubeAPIServerArgs are the flags that make kube-apiserver accept Dex's ID tokens for the
// console's client: the user is the email, the groups prefixed with OIDCGroupPrefix.
func (d *Dex) KubeAPIServerArgs() []string {
	return []string{
		"--oidc-issuer-url=" + d.Issuer,
		"--oidc-client-id=" + OIDCClientID,
		"--oidc-ca-file=" + d.CA,
		"--oidc-username-claim=email",
		"--oidc-groups-claim=groups",
		"--oidc-groups-prefix=" + OIDCGroupPrefix,
	}
}

// ConsoleArgs are the console's --oidc-* flags for Dex.
func (d *Dex) ConsoleArgs(redirectURL string) []string {
	return []string{
		"--oidc-issuer-url=" + d.Issuer,
		"--oidc-client-id-file=" + d.ClientIDFile,
		"--oidc-client-secret-file=" + d.ClientSecretFile,
		"--oidc-redirect-url=" + redirectURL,
		"--oidc-ca-file=" + d.CA,
		"--oidc-name=Dex",
	}
}

func (d *Dex) waitReady(ctx context.Context) error {
	pem, err := os.ReadFile(d.CA)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	url := d.Issuer + "/.well-known/openid-configuration"
	err = Poll(ctx, 30*time.Second, 100*time.Millisecond, func() (bool, error) {
		if d.proc.Exited() {
			return false, Abort(fmt.Errorf("dex exited:\n%s", d.proc.LogTail(20)))
		}
		resp, err := hc.Get(url)
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, fmt.Errorf("%s: %s", url, resp.Status)
	})
	if err != nil {
		return fmt.Errorf("dex not ready: %w", err)
	}
	return nil
}

// Stop stops Dex.
func (d *Dex) Stop() {
	if d != nil && d.proc != nil {
		_ = d.proc.Stop()
	}
}

// selfSignedCert writes a P-256 certificate for 127.0.0.1 and localhost that is its own CA.
func selfSignedCert(certFile, keyFile string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: "sandbox-dex"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(30 * 24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
}
