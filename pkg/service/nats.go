package service

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATS is how a service reaches the bus: its identity's nkey seed file, the CA that signed the
// server's certificate, and optionally a client certificate. Secrets are files, never flag
// values: a flag names a file mounted from a Secret.
type NATS struct {
	URL   string
	Creds string
	CA    string
	Cert  string
	Key   string
	// Plaintext allows a connection without TLS, for local development only.
	Plaintext bool
}

// Register adds the NATS flags to fs.
func (n *NATS) Register(fs *flag.FlagSet) {
	StringVar(fs, &n.URL, "nats-url", "tls://127.0.0.1:4222",
		"NATS server URL(s), comma-separated; must not hold a user or password")
	StringVar(fs, &n.Creds, "nats-creds", "", "file holding this service's NATS nkey seed (mounted from a Secret)")
	StringVar(fs, &n.CA, "nats-tls-ca", "",
		"CA certificate file that signed the NATS server's certificate; empty: the system's roots")
	StringVar(fs, &n.Cert, "nats-tls-cert", "",
		"client certificate file, when the NATS server verifies clients (with --nats-tls-key)")
	StringVar(fs, &n.Key, "nats-tls-key", "", "client key file for --nats-tls-cert")
	BoolVar(fs, &n.Plaintext, "nats-insecure-plaintext", false,
		"connect without TLS and without credentials when none are given: local development only, logged loudly")
}

// ErrInvalidOption is wrapped by every error about a bad flag or environment value.
var ErrInvalidOption = errors.New("invalid option")

// Validate refuses settings that would connect insecurely without saying so.
func (n *NATS) Validate() error {
	if n.URL == "" {
		return fmt.Errorf("%w: --nats-url is empty", ErrInvalidOption)
	}
	for u := range strings.SplitSeq(n.URL, ",") {
		if strings.Contains(u, "@") {
			return fmt.Errorf("%w: --nats-url must not hold credentials; use --nats-creds", ErrInvalidOption)
		}
	}
	if (n.Cert == "") != (n.Key == "") {
		return fmt.Errorf("%w: --nats-tls-cert and --nats-tls-key go together", ErrInvalidOption)
	}
	if n.Creds == "" && !n.Plaintext {
		return fmt.Errorf("%w: --nats-creds is required (or --nats-insecure-plaintext for local development)",
			ErrInvalidOption)
	}
	for _, f := range []string{n.Creds, n.CA, n.Cert, n.Key} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidOption, err)
		}
	}
	return nil
}

// Options returns the nats.go options that connect as id: its nkey, its own inbox prefix, and
// TLS unless Plaintext is set and no CA is given.
func (n *NATS) Options(id bus.Identity) ([]nats.Option, error) {
	opts := []nats.Option{nats.CustomInboxPrefix(bus.InboxPrefix(id))}
	if n.Creds != "" {
		o, err := nats.NkeyOptionFromSeed(n.Creds)
		if err != nil {
			return nil, fmt.Errorf("nats credentials %s: %w", n.Creds, err)
		}
		opts = append(opts, o)
	}
	if n.Plaintext && n.CA == "" && n.Cert == "" {
		return opts, nil
	}
	opts = append(opts, nats.Secure(&tls.Config{MinVersion: tls.VersionTLS12}))
	if n.CA != "" {
		opts = append(opts, nats.RootCAs(n.CA))
	}
	if n.Cert != "" {
		opts = append(opts, nats.ClientCert(n.Cert, n.Key))
	}
	return opts, nil
}

// ConnectNATS connects as id, retrying until ctx is done, reconnecting forever after.
func ConnectNATS(ctx context.Context, n NATS, id bus.Identity,
	log *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	if err := n.Validate(); err != nil {
		return nil, nil, err
	}
	if n.Plaintext {
		log.Warn("INSECURE: --nats-insecure-plaintext is set; NATS traffic may be unencrypted and unauthenticated. Never " +
			"use it outside local development")
	}
	opts, err := n.Options(id)
	if err != nil {
		return nil, nil, err
	}
	opts = append(opts,
		nats.Name("etcdbackup-"+string(id)),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted()) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { log.Warn("nats", "err", err) }),
	)
	nc, err := nats.Connect(n.URL, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to nats %s: %w", n.URL, err)
	}
	js, err := bus.NewJetStream(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}

// CheckBus checks the streams (and staging bucket) id works with (bus.CheckFor): it waits,
// retrying, while NATS is unreachable or the setup has not created them yet, until ctx is
// done; a stream that is not as this version needs fails the start.
func CheckBus(ctx context.Context, js jetstream.JetStream, t bus.Topology, id bus.Identity, log *slog.Logger) error {
	var said time.Time
	for {
		err := bus.CheckFor(ctx, js, t, id)
		if err == nil || errors.Is(err, bus.ErrNotAsNeeded) {
			return err
		}
		if time.Since(said) > 30*time.Second {
			log.Warn("waiting for the bus", "err", err)
			said = time.Now()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %w)", ctx.Err(), err)
		case <-time.After(time.Second):
		}
	}
}
