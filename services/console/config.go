package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/service"
	"github.com/etcd-backup/etcdbackup/services/console/web"
)

// Config is the console's configuration.
type Config struct {
	service.Common
	Listen  string
	TLSCert string
	TLSKey  string
	// TLSProxy: browsers reach the pages over HTTPS through a TLS-terminating proxy.
	TLSProxy       bool
	SessionKeyFile string
	SessionTTL     time.Duration
	AccessTTL      time.Duration
	EventBuffer    int
	OIDC           OIDCFlags
}

// OIDCFlags are the --oidc-* flags: sign-in through the seed's OpenID Connect provider.
type OIDCFlags struct {
	IssuerURL        string
	ClientIDFile     string
	ClientSecretFile string
	RedirectURL      string
	CAFile           string
	Scopes           string
	Name             string
}

func parseConfig(args []string) (Config, error) {
	var c Config
	fs := flag.NewFlagSet("console", flag.ContinueOnError)
	c.Register(fs)
	service.StringVar(fs, &c.Listen, "listen-addr", ":8443", "address the console's pages are served on")
	service.StringVar(fs, &c.TLSCert, "tls-cert", "",
		"TLS certificate file of the pages (with --tls-key); empty: plain HTTP, for a TLS-terminating proxy in front or "+
			"local use")
	service.StringVar(fs, &c.TLSKey, "tls-key", "", "TLS key file for --tls-cert")
	service.BoolVar(fs, &c.TLSProxy, "tls-proxy", false,
		"browsers reach the pages over HTTPS through a TLS-terminating proxy (an ingress): session cookies are marked "+
			"Secure, as they are with --tls-cert")
	service.StringVar(fs, &c.SessionKeyFile, "session-key-file", "",
		"file holding at least 32 random bytes that seal the session cookies; every replica needs the same (empty: a "+
			"random key, sessions end when the process does)")
	service.DurationVar(fs, &c.SessionTTL, "session-ttl", 8*time.Hour, "how long a sign-in lasts")
	service.DurationVar(fs, &c.AccessTTL, "access-cache-ttl", 30*time.Second,
		"how long a TokenReview or SubjectAccessReview answer is reused")
	service.IntVar(fs, &c.EventBuffer, "event-buffer", 64, "status events waiting for one browser before more are dropped")
	service.StringVar(fs, &c.OIDC.IssuerURL, "oidc-issuer-url", "",
		"issuer URL of the OpenID Connect provider users sign in with (Dex in KKP), the same as kube-apiserver's "+
			"--oidc-issuer-url; empty: bearer-token sign-in only")
	service.StringVar(fs, &c.OIDC.ClientIDFile, "oidc-client-id-file", "",
		"file holding the console's OIDC client id, the same as kube-apiserver's --oidc-client-id")
	service.StringVar(fs, &c.OIDC.ClientSecretFile, "oidc-client-secret-file", "", "file holding the OIDC client secret")
	service.StringVar(fs, &c.OIDC.RedirectURL, "oidc-redirect-url", "",
		"this console's /oidc/callback URL as browsers reach it, registered with the provider for the client")
	service.StringVar(fs, &c.OIDC.CAFile, "oidc-ca-file", "",
		"CA certificates the provider's TLS certificate is verified with (empty: the system's)")
	service.StringVar(fs, &c.OIDC.Scopes, "oidc-scopes", strings.Join(web.DefaultOIDCScopes, ","),
		"comma-separated scopes asked for; openid and offline_access (the refresh token) are needed")
	service.StringVar(fs, &c.OIDC.Name, "oidc-name", "single sign-on", "the provider's name on the sign-in button")
	if err := service.Parse(fs, args); err != nil {
		return Config{}, err
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return Config{}, fmt.Errorf("%w: --tls-cert and --tls-key go together", service.ErrInvalidOption)
	}
	if c.SessionTTL <= 0 || c.AccessTTL <= 0 || c.EventBuffer < 1 {
		return Config{}, fmt.Errorf("%w: --session-ttl, --access-cache-ttl and --event-buffer must be positive",
			service.ErrInvalidOption)
	}
	if c.OIDC.IssuerURL != "" {
		if err := c.OIDC.check(); err != nil {
			return Config{}, fmt.Errorf("%w: %w", service.ErrInvalidOption, err)
		}
	}
	return c, nil
}

func (o OIDCFlags) check() error {
	if u, err := url.Parse(o.IssuerURL); err != nil || u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("--oidc-issuer-url %q: want an https URL, as kube-apiserver does", o.IssuerURL)
	}
	if o.ClientIDFile == "" || o.ClientSecretFile == "" {
		return fmt.Errorf("--oidc-issuer-url needs --oidc-client-id-file and --oidc-client-secret-file")
	}
	u, err := url.Parse(o.RedirectURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Path != "/oidc/callback" {
		return fmt.Errorf("--oidc-redirect-url %q: want this console's URL ending in /oidc/callback", o.RedirectURL)
	}
	return nil
}

// Web is the OIDC configuration the console signs users in with: the flags, the client id and
// secret read from their files.
func (o OIDCFlags) Web() (web.OIDCConfig, error) {
	id, err := readTrimmed(o.ClientIDFile)
	if err != nil {
		return web.OIDCConfig{}, err
	}
	secret, err := readTrimmed(o.ClientSecretFile)
	if err != nil {
		return web.OIDCConfig{}, err
	}
	var scopes []string
	for sc := range strings.SplitSeq(o.Scopes, ",") {
		if sc = strings.TrimSpace(sc); sc != "" {
			scopes = append(scopes, sc)
		}
	}
	return web.OIDCConfig{IssuerURL: o.IssuerURL, ClientID: id, ClientSecret: secret, RedirectURL: o.RedirectURL,
		CAFile: o.CAFile, Scopes: scopes, Name: o.Name}, nil
}

func readTrimmed(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("%s is empty", file)
	}
	return v, nil
}

// SecureCookies reports whether session cookies are marked Secure: whenever browsers reach the
// pages over HTTPS, served here (--tls-cert) or by a proxy in front (--tls-proxy).
func (c Config) SecureCookies() bool { return c.TLSCert != "" || c.TLSProxy }
