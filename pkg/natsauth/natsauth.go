// Package natsauth makes what an authenticated, encrypted bus needs outside Kubernetes — a CA
// and a server certificate, one nkey per identity — and starts nats-server from the
// configuration deploy/k8s/nats.yaml ships, so tests and the sandbox run against that very
// configuration rather than a copy of it.
package natsauth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
	"sigs.k8s.io/yaml"
)

// MountDir is where the deploy's NATS pod mounts its TLS files (tls.crt, tls.key, ca.crt).
const MountDir = "/etc/nats/tls/"

// Credentials are files in Dir: ca.crt, the server's tls.crt and tls.key (for 127.0.0.1 and
// localhost), a client certificate client.crt and client.key (for a server that verifies
// clients), and <identity>.nk, each identity's nkey seed. PublicKeys holds each identity's
// public nkey, as the server's configuration names it.
type Credentials struct {
	Dir        string
	PublicKeys map[bus.Identity]string
}

// CA is the CA certificate file clients verify the server with.
func (c *Credentials) CA() string { return filepath.Join(c.Dir, "ca.crt") }

// Seed is the nkey seed file of an identity (the value of --nats-creds).
func (c *Credentials) Seed(id bus.Identity) string { return filepath.Join(c.Dir, string(id)+".nk") }

// NewCredentials makes a CA, a server certificate signed by it and an nkey per identity in
// dir. Private keys and seeds are written 0600.
func NewCredentials(dir string) (*Credentials, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	files, err := certificates()
	if err != nil {
		return nil, err
	}
	c := &Credentials{Dir: dir, PublicKeys: map[bus.Identity]string{}}
	for _, id := range bus.Identities() {
		kp, err := nkeys.CreateUser()
		if err != nil {
			return nil, err
		}
		seed, err := kp.Seed()
		if err != nil {
			return nil, err
		}
		if c.PublicKeys[id], err = kp.PublicKey(); err != nil {
			return nil, err
		}
		files[string(id)+".nk"] = seed
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// certificates makes a CA and, signed by it, the server's certificate (for localhost,
// etcdbackup-nats and 127.0.0.1) and a client certificate, valid for 30 days: PEM files by
// name (ca.crt, tls.crt, tls.key, client.crt, client.key).
func certificates() (map[string][]byte, error) {
	now := time.Now()
	tmpl := func(serial int64, cn string) *x509.Certificate {
		return &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(30 * 24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		}
	}
	caTmpl := tmpl(1, "etcdbackup-nats-ca")
	caTmpl.KeyUsage |= x509.KeyUsageCertSign
	caTmpl.IsCA, caTmpl.BasicConstraintsValid = true, true
	caDER, caKey, err := sign(caTmpl, nil, nil)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	srvTmpl := tmpl(2, "etcdbackup-nats")
	srvTmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	srvTmpl.DNSNames, srvTmpl.IPAddresses = []string{"localhost", "etcdbackup-nats"}, []net.IP{net.IPv4(127, 0, 0, 1)}
	srvDER, srvKey, err := sign(srvTmpl, ca, caKey)
	if err != nil {
		return nil, err
	}
	cliTmpl := tmpl(3, "etcdbackup-client")
	cliTmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	cliDER, cliKey, err := sign(cliTmpl, ca, caKey)
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{
		"ca.crt":     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		"tls.crt":    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER}),
		"client.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cliDER}),
	}
	for name, key := range map[string]*ecdsa.PrivateKey{"tls.key": srvKey, "client.key": cliKey} {
		der, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return nil, err
		}
		files[name] = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	}
	return files, nil
}

// sign makes a P-256 key and its certificate from tmpl, signed by parent's key (self-signed
// when parent is nil).
func sign(tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) ([]byte, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	return der, key, err
}

// DeployConfig returns nats.conf as deploy/k8s/nats.yaml ships it, from the repository at root.
func DeployConfig(root string) (string, error) {
	b, err := os.ReadFile(filepath.Join(root, "deploy", "k8s", "nats.yaml"))
	if err != nil {
		return "", err
	}
	for doc := range strings.SplitSeq(string(b), "\n---\n") {
		var cm struct {
			Kind     string `json:"kind"`
			Metadata struct{ Name string }
			Data     map[string]string `json:"data"`
		}
		if err := yaml.Unmarshal([]byte(doc), &cm); err != nil {
			return "", fmt.Errorf("deploy/k8s/nats.yaml: %w", err)
		}
		if cm.Kind == "ConfigMap" && cm.Data["nats.conf"] != "" {
			return cm.Data["nats.conf"], nil
		}
	}
	return "", errors.New("deploy/k8s/nats.yaml has no ConfigMap with nats.conf")
}

// ServerConfig is conf with the public nkeys defined as the variables it reads from the
// environment, and the TLS files taken from c's directory instead of the pod's mount.
func (c *Credentials) ServerConfig(conf string) string {
	var b strings.Builder
	for _, id := range bus.Identities() {
		fmt.Fprintf(&b, "%s: %q\n", bus.NKeyEnv(id), c.PublicKeys[id])
	}
	b.WriteString(strings.ReplaceAll(conf, MountDir, c.Dir+"/"))
	return b.String()
}

// Options are where a server started by Start listens and stores.
type Options struct {
	// Port to listen on (-1: random).
	Port int
	// StoreDir is JetStream's directory.
	StoreDir string
	// Log enables the server's log on stderr (permission violations are logged there).
	Log bool
}

// Start starts nats-server from conf (the deploy's configuration, see DeployConfig) with c's
// keys and certificates, listening on 127.0.0.1 without its monitoring port.
func (c *Credentials) Start(conf string, o Options) (*server.Server, error) {
	path := filepath.Join(c.Dir, "nats.conf")
	if err := os.WriteFile(path, []byte(c.ServerConfig(conf)), 0o600); err != nil {
		return nil, err
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		return nil, fmt.Errorf("nats config: %w", err)
	}
	opts.Host, opts.Port, opts.HTTPPort, opts.StoreDir = "127.0.0.1", o.Port, 0, o.StoreDir
	opts.NoSigs, opts.NoLog = true, !o.Log
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("nats server: %w", err)
	}
	if o.Log {
		s.ConfigureLogger()
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, errors.New("nats server not ready within 10s")
	}
	return s, nil
}
