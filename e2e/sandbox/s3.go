package sandbox

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3 is a versitygw S3 server process on a posix directory.
type S3 struct {
	// Endpoint is "http://127.0.0.1:<port>"; Host is "127.0.0.1:<port>".
	Endpoint, Host       string
	AccessKey, SecretKey string
	dir, bin, logDir     string
	proc                 *Process
}

// StartS3 starts versitygw storing under dir.
func StartS3(ctx context.Context, dir, toolDir string) (*S3, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	secret, err := randomHex(16)
	if err != nil {
		return nil, err
	}
	s := &S3{
		Host:      fmt.Sprintf("127.0.0.1:%d", port),
		AccessKey: "sandbox",
		SecretKey: secret,
		dir:       filepath.Join(dir, "s3"),
		bin:       filepath.Join(toolDir, "versitygw"),
		logDir:    filepath.Join(dir, "logs"),
	}
	s.Endpoint = "http://" + s.Host
	for _, d := range []string{s.dir, s.dir + "-versions"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	return s, s.Start(ctx)
}

// Start starts (or restarts) the server on its port and directory and waits until it answers.
func (s *S3) Start(ctx context.Context) error {
	var err error
	// --versioning-dir: buckets may be versioned, and so created with Object Lock, which
	// versitygw then enforces (a retained version's delete is refused).
	s.proc, err = StartProcess("versitygw", s.bin, []string{"--access", s.AccessKey, "--secret", s.SecretKey, "--port",
		s.Host, "posix", "--versioning-dir", s.dir + "-versions", s.dir}, nil, s.logDir)
	if err != nil {
		return err
	}
	c := s.Client()
	return Poll(ctx, 30*time.Second, 100*time.Millisecond, func() (bool, error) {
		if s.proc.Exited() {
			return false, Abort(fmt.Errorf("versitygw exited:\n%s", s.proc.LogTail(20)))
		}
		_, err := c.ListBuckets(ctx)
		return err == nil, err
	})
}

// Stop stops the server: an S3 outage until Start.
func (s *S3) Stop() {
	if s.proc != nil {
		s.proc.Kill()
	}
}

// Client returns an S3 client with the server's credentials.
func (s *S3) Client() *minio.Client {
	c, err := minio.New(s.Host, &minio.Options{Creds: credentials.NewStaticV4(s.AccessKey, s.SecretKey, "")})
	if err != nil {
		panic(err) // only for a malformed host, which FreePort never makes
	}
	return c
}

// MakeBucket creates a bucket.
func (s *S3) MakeBucket(ctx context.Context, name string) error {
	return s.Client().MakeBucket(ctx, name, minio.MakeBucketOptions{})
}

// MakeLockedBucket creates a bucket with Object Lock enabled (and so versioned).
func (s *S3) MakeLockedBucket(ctx context.Context, name string) error {
	return s.Client().MakeBucket(ctx, name, minio.MakeBucketOptions{ObjectLocking: true})
}
