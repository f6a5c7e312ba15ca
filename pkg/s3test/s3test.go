// Package s3test runs an in-process S3 server (gofakes3) for fast tests.
package s3test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Credentials of the test server (gofakes3 accepts any).
const (
	AccessKey = "test-access-key"
	SecretKey = "test-secret-key"
)

// Server is a running in-process S3 server.
type Server struct {
	// Endpoint is "http://127.0.0.1:<port>".
	Endpoint string
	// Host is "127.0.0.1:<port>".
	Host string
	http *httptest.Server
	// allowed, when set, is the only access keys the server accepts (gofakes3 accepts any).
	allowed atomic.Pointer[[]string]
	heads   atomic.Int64
}

// Heads is how many HEAD requests (object metadata reads) the server has answered.
func (s *Server) Heads() int64 { return s.heads.Load() }

// Allow makes the server refuse (403 AccessDenied) every request signed with an access key
// other than keys, as a store does with keys it does not know or that lack the right.
func (s *Server) Allow(keys ...string) { s.allowed.Store(&keys) }

func (s *Server) refuse(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			s.heads.Add(1)
		}
		if keys := s.allowed.Load(); keys != nil {
			_, cred, _ := strings.Cut(r.Header.Get("Authorization"), "Credential=")
			key, _, _ := strings.Cut(cred, "/")
			if !slices.Contains(*keys, key) {
				w.Header().Set("Content-Type", "application/xml")
				w.WriteHeader(http.StatusForbidden)
				_, _ = w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>`))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// Run starts an S3 server holding the given buckets; it stops when the test ends.
func Run(t testing.TB, buckets ...string) *Server {
	t.Helper()
	backend := s3mem.New()
	faker := gofakes3.New(backend)
	s := &Server{}
	ts := httptest.NewServer(s.refuse(faker.Server()))
	t.Cleanup(ts.Close)
	s.Endpoint, s.Host, s.http = ts.URL, strings.TrimPrefix(ts.URL, "http://"), ts
	for _, b := range buckets {
		if err := s.Client(t).MakeBucket(context.Background(), b, minio.MakeBucketOptions{}); err != nil {
			t.Fatalf("make bucket %s: %v", b, err)
		}
	}
	return s
}

// Client returns a minio client for the server.
func (s *Server) Client(t testing.TB) *minio.Client {
	t.Helper()
	c, err := minio.New(s.Host, &minio.Options{Creds: credentials.NewStaticV4(AccessKey, SecretKey, "")})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Close stops the server (an S3 outage).
func (s *Server) Close() { s.http.Close() }
