// Package s3test runs an in-process S3 server (gofakes3) for fast tests.
package s3test

import (
	"bytes"
	"context"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"filippo.io/age"
	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/klauspost/compress/zstd"
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

// PutBackup stores snapshot at bucket/key as the uploader stores a backup: compressed
// (backupformat), sealed to seal when it has recipients, with the codec, the recipients'
// fingerprints and the stored bytes' sha256 in the metadata, plus meta. It returns that sha256.
func (s *Server) PutBackup(t testing.TB, bucket, key string, snapshot []byte, seal backupformat.Encryption, meta map[string]string) string {
	t.Helper()
	var buf bytes.Buffer
	w, err := backupformat.NewSealingWriter(&buf, zstd.SpeedFastest, 1, seal)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(snapshot); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	all := w.Metadata()
	all[backupformat.MetaSHA256] = w.SHA256()
	maps.Copy(all, meta)
	if _, err := s.Client(t).PutObject(context.Background(), bucket, key, bytes.NewReader(buf.Bytes()), int64(buf.Len()), minio.PutObjectOptions{UserMetadata: all}); err != nil {
		t.Fatal(err)
	}
	return w.SHA256()
}

// AgeKey makes an age X25519 identity and what a backup sealed to its recipient is encrypted
// to.
func AgeKey(t testing.TB) (*age.X25519Identity, backupformat.Encryption) {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	seal, err := backupformat.ParseRecipients(id.Recipient().String())
	if err != nil {
		t.Fatal(err)
	}
	return id, seal
}
