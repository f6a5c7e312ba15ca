package web

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/kube"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
)

// Listen binds addr and returns the part that serves h there (TLS with a certificate and key)
// until ctx ends, then closes the event streams, which never end by themselves, with it.
func Listen(addr, tlsCert, tlsKey string, h http.Handler, log *slog.Logger) (func(context.Context) error, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	return func(ctx context.Context) error {
		errc := make(chan error, 1)
		go func() {
			if tlsCert != "" {
				errc <- srv.ServeTLS(l, tlsCert, tlsKey)
			} else {
				errc <- srv.Serve(l)
			}
		}()
		log.Info("console listening", "addr", l.Addr().String(), "tls", tlsCert != "")
		select {
		case err := <-errc:
			return err
		case <-ctx.Done():
		}
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			_ = srv.Close()
		}
		if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}, nil
}

// SessionKey reads the key that seals session cookies from file, or makes a random one when
// file is empty. A key shorter than 32 bytes is refused.
func SessionKey(file string) ([]byte, error) {
	if file == "" {
		key := make([]byte, 32)
		_, err := rand.Read(key)
		return key, err
	}
	key, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("--session-key-file: %w", err)
	}
	if len(key) < 32 {
		return nil, fmt.Errorf("--session-key-file %s holds %d bytes, want at least 32", file, len(key))
	}
	return key, nil
}

// UserClientsOf returns clients that authenticate with the user's bearer token only: the
// console's own credentials (own) are stripped (rest.AnonymousClientConfig), the TLS transport
// to the API server is shared, and the REST mapper comes from discovery with the console's
// own identity (the mapping of kinds to resources is the same for everyone).
func UserClientsOf(own *rest.Config) (UserClients, error) {
	anon := rest.AnonymousClientConfig(own)
	anon.UserAgent = "etcdbackup-console"
	hc, err := rest.HTTPClientFor(anon)
	if err != nil {
		return nil, err
	}
	scheme, err := kube.NewScheme()
	if err != nil {
		return nil, err
	}
	ownHTTP, err := rest.HTTPClientFor(own)
	if err != nil {
		return nil, err
	}
	mapper, err := apiutil.NewDynamicRESTMapper(own, ownHTTP)
	if err != nil {
		return nil, err
	}
	return func(token string) (client.Client, error) {
		userHTTP := &http.Client{Transport: bearer{token: token, next: hc.Transport}, Timeout: 30 * time.Second}
		return client.New(anon, client.Options{Scheme: scheme, Mapper: mapper, HTTPClient: userHTTP})
	}, nil
}

// bearer adds the user's token to each request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}
