package main

import (
	"flag"
	"fmt"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/service"
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
	return c, nil
}

// SecureCookies reports whether session cookies are marked Secure: whenever browsers reach the
// pages over HTTPS, served here (--tls-cert) or by a proxy in front (--tls-proxy).
func (c Config) SecureCookies() bool { return c.TLSCert != "" || c.TLSProxy }
