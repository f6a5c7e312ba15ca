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
