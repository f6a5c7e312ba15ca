// Package s3test runs an in-process S3 server (gofakes3) for fast tests.
package s3test

import (
	"context"
	"net/http/httptest"
	"strings"
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
}

// Run starts an S3 server holding the given buckets; it stops when the test ends.
func Run(t testing.TB, buckets ...string) *Server {
	t.Helper()
	backend := s3mem.New()
	faker := gofakes3.New(backend)
	ts := httptest.NewServer(faker.Server())
	t.Cleanup(ts.Close)
	s := &Server{Endpoint: ts.URL, Host: strings.TrimPrefix(ts.URL, "http://"), http: ts}
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
