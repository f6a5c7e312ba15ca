// Package s3test runs an in-process S3 server (gofakes3) for fast tests, reached through the
// same destination.Bucket the services use.
package s3test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/klauspost/compress/zstd"
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
	Host    string
	http    *httptest.Server
	backend *s3mem.Backend
	// allowed, when set, is the only access keys the server accepts (gofakes3 accepts any).
	allowed atomic.Pointer[[]string]
	heads   atomic.Int64
	lists   atomic.Int64
	// completing serializes conditional CompleteMultipartUploads (createOnce).
	completing sync.Mutex
}

// Heads is how many object metadata reads the server has answered: HEAD requests, and GETs
// of an object's first byte only (a presigned URL, signed for GET, cannot HEAD).
func (s *Server) Heads() int64 { return s.heads.Load() }

// Lists is how many object listings the server has answered (GETs of a bucket, not of an
// object in it; minio-go addresses buckets by path here).
func (s *Server) Lists() int64 { return s.lists.Load() }

// Allow makes the server refuse (403 AccessDenied) every request signed with an access key
// other than keys, as a store does with keys it does not know or that lack the right.
func (s *Server) Allow(keys ...string) { s.allowed.Store(&keys) }

func (s *Server) refuse(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead || (r.Method == http.MethodGet && r.Header.Get("Range") == "bytes=0-0") {
			s.heads.Add(1)
		}
		if r.Method == http.MethodGet && !strings.Contains(strings.Trim(r.URL.Path, "/"), "/") &&
			!r.URL.Query().Has("location") {
			s.lists.Add(1)
		}
		// A presigned request carries its credential and expiry in the query.
		cred := r.URL.Query().Get("X-Amz-Credential")
		if cred == "" {
			_, cred, _ = strings.Cut(r.Header.Get("Authorization"), "Credential=")
		}
		if keys := s.allowed.Load(); keys != nil {
			key, _, _ := strings.Cut(cred, "/")
			if !slices.Contains(*keys, key) {
				denied(w, "Access Denied")
				return
			}
		}
		if expired(r.URL.Query()) {
			denied(w, "Request has expired")
			return
		}
		if err := unchunkPart(r); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.createOnce(next, w, r)
	})
}

func denied(w http.ResponseWriter, msg string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(http.StatusForbidden)
	_, _ = w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?>` +
		`<Error><Code>AccessDenied</Code><Message>` + msg + `</Message></Error>`))
}

// expired reports whether a presigned request's query says it expired (gofakes3 checks no
// signature; S3 refuses a presigned URL after X-Amz-Date plus X-Amz-Expires seconds).
func expired(q url.Values) bool {
	if q.Get("X-Amz-Expires") == "" {
		return false
	}
	signed, err := time.Parse("20060102T150405Z", q.Get("X-Amz-Date"))
	secs, serr := strconv.Atoi(q.Get("X-Amz-Expires"))
	return err != nil || serr != nil || time.Now().After(signed.Add(time.Duration(secs)*time.Second))
}

// createOnce serves r, answering a CompleteMultipartUpload with If-None-Match: * as S3 does
// when an object is already at its key (412 PreconditionFailed, the object kept): gofakes3
// checks the header on single puts only.
func (s *Server) createOnce(next http.Handler, w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Query().Get("uploadId") == "" || r.Header.Get("If-None-Match") != "*" {
		next.ServeHTTP(w, r)
		return
	}
	s.completing.Lock()
	defer s.completing.Unlock()
	bucket, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if _, err := s.backend.HeadObject(bucket, key); err == nil {
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusPreconditionFailed)
		_, _ = w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?>` +
			`<Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold` +
			`</Message></Error>`))
		return
	}
	next.ServeHTTP(w, r)
}

// unchunkPart decodes the aws-chunked body of a multipart upload's part: S3 clients send one
// over plain HTTP, and gofakes3 decodes it for single puts but stores a part's as it came,
// signatures and all (an 11 MiB object read back 16 KB larger).
func unchunkPart(r *http.Request) error {
	if r.Method != http.MethodPut || r.URL.Query().Get("uploadId") == "" ||
		!strings.HasPrefix(r.Header.Get("X-Amz-Content-Sha256"), "STREAMING-") {
		return nil
	}
	in := bufio.NewReader(r.Body)
	var body bytes.Buffer
	for {
		line, err := in.ReadString('\n')
		if err != nil {
			return fmt.Errorf("aws-chunked part: %w", err)
		}
		hexSize, _, _ := strings.Cut(strings.TrimSpace(line), ";")
		n, err := strconv.ParseInt(hexSize, 16, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("aws-chunked part: chunk header %q", line)
		}
		if n == 0 {
			break
		}
		if _, err := io.CopyN(&body, in, n); err != nil {
			return fmt.Errorf("aws-chunked part: %w", err)
		}
		if _, err := in.Discard(2); err != nil { // the chunk's CRLF
			return fmt.Errorf("aws-chunked part: %w", err)
		}
	}
	r.Body = io.NopCloser(&body)
	r.ContentLength = int64(body.Len())
	r.Header.Set("Content-Length", strconv.Itoa(body.Len()))
	r.Header.Set("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD")
	r.Header.Del("Content-Encoding")
	return nil
}

// Run starts an S3 server holding the given buckets; it stops when the test ends.
func Run(t testing.TB, buckets ...string) *Server {
	t.Helper()
	s := &Server{backend: s3mem.New()}
	faker := gofakes3.New(s.backend)
	ts := httptest.NewServer(s.refuse(faker.Server()))
	t.Cleanup(ts.Close)
	s.Endpoint, s.Host, s.http = ts.URL, strings.TrimPrefix(ts.URL, "http://"), ts
	for _, b := range buckets {
		s.MakeBucket(t, b)
	}
	return s
}

// MakeBucket creates a bucket.
func (s *Server) MakeBucket(t testing.TB, name string) {
	t.Helper()
	if err := s.backend.CreateBucket(name); err != nil {
		t.Fatalf("make bucket %s: %v", name, err)
	}
}

// Bucket returns the bucket called name (which need not exist), reached with the test
// credentials through the services' own client.
func (s *Server) Bucket(t testing.TB, name string) destination.Bucket {
	t.Helper()
	return s.BucketWithKeys(t, name, AccessKey, SecretKey)
}

// BucketWithKeys is Bucket reached with other keys.
func (s *Server) BucketWithKeys(t testing.TB, name, accessKey, secretKey string) destination.Bucket {
	t.Helper()
	b, err := destination.OpenS3(s.Host, false, accessKey, secretKey, name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Close stops the server (an S3 outage).
func (s *Server) Close() { s.http.Close() }

// PutBackup stores snapshot at bucket/key as the uploader stores a backup: compressed
// (backupformat), sealed to seal when it has recipients, with its record (meta's, plus the
// stored bytes' sha256, codec and recipients). It returns that sha256.
func (s *Server) PutBackup(t testing.TB, bucket, key string, snapshot []byte, seal backupformat.Encryption,
	meta backupformat.Meta) string {
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
	written := w.Meta()
	meta.SHA256, meta.Codec, meta.Recipients = written.SHA256, written.Codec, written.Recipients
	err = s.Bucket(t, bucket).Put(t.Context(), key, bytes.NewReader(buf.Bytes()), int64(buf.Len()),
		destination.PutOptions{ContentType: backupformat.ContentType, Metadata: meta.Map()})
	if err != nil {
		t.Fatal(err)
	}
	return meta.SHA256
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
