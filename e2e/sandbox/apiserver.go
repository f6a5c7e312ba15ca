package sandbox

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/etcdtest"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// APIServer is a real kube-apiserver process with its own embedded etcd, as envtest runs it.
type APIServer struct {
	URL        string
	Kubeconfig string
	Config     *rest.Config
	proc       *Process
	etcd       *etcdtest.Etcd
}

// StartAPIServer starts etcd and kube-apiserver (with extra flags) under dir and waits until
// it is ready. The admin identity is a bearer token in system:masters, written into
// dir/kubeconfig.
func StartAPIServer(ctx context.Context, dir, toolDir string, extra ...string) (*APIServer, error) {
	etcd, err := etcdtest.StartIn(filepath.Join(dir, "apiserver-etcd"), "apiserver-etcd", nil)
	if err != nil {
		return nil, err
	}
	a := &APIServer{etcd: etcd}
	ok := false
	defer func() {
		if !ok {
			a.Stop()
		}
	}()
	token, err := randomHex(16)
	if err != nil {
		return nil, err
	}
	args, port, err := apiServerArgs(dir, etcd.Endpoint, token)
	if err != nil {
		return nil, err
	}
	args = append(args, extra...)
	a.proc, err = StartProcess("kube-apiserver", filepath.Join(toolDir, "kube-apiserver"), args, nil, filepath.Join(dir,
		"logs"))
	if err != nil {
		return nil, err
	}
	a.URL = fmt.Sprintf("https://127.0.0.1:%d", port)
	a.Config = &rest.Config{Host: a.URL, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{Insecure: true}}
	if err := a.waitReady(ctx, token); err != nil {
		return nil, err
	}
	a.Kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := writeKubeconfig(a.Kubeconfig, a.URL, token); err != nil {
		return nil, err
	}
	ok = true
	return a, nil
}

// apiServerArgs writes the files kube-apiserver needs under dir (the token file with token
// for system:masters, the service account key) and returns its flags and port.
func apiServerArgs(dir, etcd, token string) ([]string, int, error) {
	if err := os.WriteFile(filepath.Join(dir, "tokens.csv"), []byte(token+",admin,admin,system:masters\n"),
		0o600); err != nil {
		return nil, 0, err
	}
	saKey := filepath.Join(dir, "sa.key")
	if err := writeRSAKey(saKey); err != nil {
		return nil, 0, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, 0, err
	}
	return []string{
		"--etcd-servers=" + etcd,
		"--cert-dir=" + filepath.Join(dir, "apiserver-certs"),
		fmt.Sprintf("--secure-port=%d", port),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--service-cluster-ip-range=10.0.0.0/24",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + saKey,
		"--service-account-signing-key-file=" + saKey,
		"--token-auth-file=" + filepath.Join(dir, "tokens.csv"),
		"--authorization-mode=RBAC",
		// No kube-controller-manager runs here to release PVCs from their protection finalizer.
		"--disable-admission-plugins=ServiceAccount",
		"--allow-privileged=true",
		"--endpoint-reconciler-type=none",
	}, port, nil
}

// waitReady polls /readyz until kube-apiserver answers ready, at most 90 s.
func (a *APIServer) waitReady(ctx context.Context, token string) error {
	hc := &http.Client{Timeout: 2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	err := Poll(ctx, 90*time.Second, 200*time.Millisecond, func() (bool, error) {
		if a.proc.Exited() {
			return false, Abort(fmt.Errorf("kube-apiserver exited:\n%s", a.proc.LogTail(5)))
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, a.URL+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := hc.Do(req)
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, fmt.Errorf("readyz: %s", resp.Status)
	})
	if err != nil {
		return fmt.Errorf("kube-apiserver not ready: %w", err)
	}
	return nil
}

// Stop stops kube-apiserver and its etcd.
func (a *APIServer) Stop() {
	if a.proc != nil {
		_ = a.proc.Stop()
	}
	if a.etcd != nil {
		a.etcd.Stop()
	}
}

func writeKubeconfig(path, server, token string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["sandbox"] = &clientcmdapi.Cluster{Server: server, InsecureSkipTLSVerify: true}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["sandbox"] = &clientcmdapi.Context{Cluster: "sandbox", AuthInfo: "admin"}
	cfg.CurrentContext = "sandbox"
	return clientcmd.WriteToFile(*cfg, path)
}

func writeRSAKey(path string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	b := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	return os.WriteFile(path, b, 0o600)
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}
