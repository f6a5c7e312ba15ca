package main

import (
	"os"
	"path/filepath"
	"testing"
)

// Session cookies are Secure whenever browsers reach the console over HTTPS: with its own
// certificate, or behind a TLS-terminating ingress (--tls-proxy); only plain local use leaves
// them without.
func TestCookiesAreSecureBehindATLSProxy(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"nkey", "ca.crt"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	base := []string{"--nats-url=tls://nats:4222", "--nats-tls-ca=" + filepath.Join(dir, "ca.crt"),
		"--nats-creds=" + filepath.Join(dir, "nkey")}
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{nil, false},
		{[]string{"--tls-proxy"}, true},
		{[]string{"--tls-cert=tls.crt", "--tls-key=tls.key"}, true},
	} {
		c, err := parseConfig(append(append([]string(nil), base...), tc.args...))
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if got := c.SecureCookies(); got != tc.want {
			t.Errorf("%v: Secure cookies %v, want %v", tc.args, got, tc.want)
		}
	}
}

// OIDC sign-in needs an https issuer (kube-apiserver accepts no other), the client's id and
// secret files, and a redirect to this console's /oidc/callback; the files are read whole and
// trimmed.
func TestOIDCFlags(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{"nkey": "x", "ca.crt": "x", "id": "console\n", "secret": " s3cret \n", "empty": "\n"}
	for f, v := range files {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	base := []string{"--nats-url=tls://nats:4222", "--nats-tls-ca=" + filepath.Join(dir, "ca.crt"),
		"--nats-creds=" + filepath.Join(dir, "nkey")}
	good := []string{"--oidc-issuer-url=https://dex.example/dex", "--oidc-client-id-file=" + filepath.Join(dir, "id"),
		"--oidc-client-secret-file=" + filepath.Join(dir, "secret"),
		"--oidc-redirect-url=https://console.example/oidc/callback"}
	c, err := parseConfig(append(append([]string(nil), base...), good...))
	if err != nil {
		t.Fatal(err)
	}
	oc, err := c.OIDC.Web()
	if err != nil || oc.ClientID != "console" || oc.ClientSecret != "s3cret" || len(oc.Scopes) != 5 {
		t.Fatalf("OIDC config %+v, %v", oc, err)
	}
	for name, bad := range map[string]string{
		"an http issuer":          "--oidc-issuer-url=http://dex.example/dex",
		"no secret file":          "--oidc-client-secret-file=",
		"a redirect elsewhere":    "--oidc-redirect-url=https://console.example/callback",
		"a redirect with no host": "--oidc-redirect-url=/oidc/callback",
	} {
		if _, err := parseConfig(append(append(append([]string(nil), base...), good...), bad)); err == nil {
			t.Errorf("%s (%s) was accepted", name, bad)
		}
	}
	c.OIDC.ClientSecretFile = filepath.Join(dir, "empty")
	if _, err := c.OIDC.Web(); err == nil {
		t.Error("an empty secret file was accepted")
	}
}
