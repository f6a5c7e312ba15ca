package destination

// This file is the only one that imports an S3 client library: every other package reaches a
// bucket through Bucket, and sees S3's errors only as ErrObjectNotFound, ErrBucketNotFound and
// ErrAccessDenied.

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"golang.org/x/sync/errgroup"
)

// S3Option configures a bucket opened with OpenS3.
type S3Option func(*s3Bucket) error

// WithPartSize sets the part size of multipart uploads (at least 5 MiB, S3's minimum; at most
// 10,000 parts make an object, so 8 MiB parts hold 78 GiB). A put holds about PartSize times
// its threads in memory.
func WithPartSize(bytes uint64) S3Option {
	return func(b *s3Bucket) error {
		if bytes < 5<<20 {
			return fmt.Errorf("part size %d is below S3's minimum of 5 MiB", bytes)
		}
		b.partSize = bytes
		return nil
	}
}

// WithUploadThreads sets how many parts of one put are uploaded at once (at least 1).
func WithUploadThreads(n uint) S3Option {
	return func(b *s3Bucket) error {
		if n < 1 {
			return fmt.Errorf("upload threads must be at least 1, got %d", n)
		}
		b.threads = n
		return nil
	}
}

// WithPartTimeout bounds each request of a put: a single PUT, each part of a multipart
// upload, and its completion (default DefaultPartTimeout). An endpoint that stops answering
// mid-upload (blackholed) fails the put within it, and the caller retries, instead of the
// put hanging on TCP's own timeouts.
func WithPartTimeout(d time.Duration) S3Option {
	return func(b *s3Bucket) error {
		if d <= 0 {
			return fmt.Errorf("part timeout must be positive, got %s", d)
		}
		b.partTimeout = d
		return nil
	}
}

// DefaultPartTimeout is a put's bound per request: an 8 MiB part at 30 KB/s.
const DefaultPartTimeout = 5 * time.Minute

// withLock writes every object with l's Object Lock retention (but those put Unlocked).
func withLock(l Lock) S3Option {
	return func(b *s3Bucket) error {
		b.lock = &l
		return nil
	}
}

// withDestination names the Seed destination in the bucket's errors.
func withDestination(name string) S3Option {
	return func(b *s3Bucket) error {
		b.dest = name
		return nil
	}
}

// OpenS3 returns the bucket called bucket of the S3-compatible store at host (host[:port],
// TLS when secure), reached with the given keys. It makes no request: a bucket that does not
// exist, or keys the store refuses, show in the first call's error. The services, the restore
// step in a member pod and the restorer's proof of the member pods' credentials all open
// buckets this way, so that what the restorer proves is what the pods will do.
func OpenS3(host string, secure bool, accessKeyID, secretAccessKey, bucket string, opts ...S3Option) (Bucket, error) {
	c, err := minio.New(host, &minio.Options{
		Creds:  credentials.NewStaticV4(accessKeyID, secretAccessKey, ""),
		Secure: secure,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 client for %s: %w", host, err)
	}
	b := &s3Bucket{c: c, name: bucket, partSize: 8 << 20, threads: 4, partTimeout: DefaultPartTimeout, now: time.Now}
	for _, o := range opts {
		if err := o(b); err != nil {
			return nil, err
		}
	}
	return b, nil
}

type s3Bucket struct {
	c        *minio.Client
	name     string
	dest     string
	partSize uint64
	threads  uint
	// partTimeout bounds each request of a put (WithPartTimeout).
	partTimeout time.Duration
	// lock is the Object Lock retention of every put (nil: none).
	lock *Lock
	now  func() time.Time
}

func (b *s3Bucket) Name() string { return b.name }

func (b *s3Bucket) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	info, err := b.c.StatObject(ctx, b.name, key, minio.StatObjectOptions{})
	if err != nil {
		return ObjectInfo{}, b.notFound(ctx, "stat "+key, key, err)
	}
	return objectInfo(info), nil
}

func (b *s3Bucket) Get(ctx context.Context, key string) (io.ReadCloser, ObjectInfo, error) {
	obj, err := b.c.GetObject(ctx, b.name, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, ObjectInfo{}, b.classify("get "+key, key, err)
	}
	// The first Stat of an object sends the GET and reads its headers: a missing object is
	// an error here, not at the first Read.
	info, err := obj.Stat()
	if err != nil {
		obj.Close()
		return nil, ObjectInfo{}, b.notFound(ctx, "get "+key, key, err)
	}
	return obj, objectInfo(info), nil
}

func (b *s3Bucket) Put(ctx context.Context, key string, r io.Reader, size int64, opts PutOptions) error {
	po := minio.PutObjectOptions{
		ContentType:  opts.ContentType,
		UserMetadata: opts.Metadata,
		PartSize:     b.partSize,
		NumThreads:   b.threads,
	}
	if opts.Uploaded != nil {
		po.Progress = progressReader(opts.Uploaded)
	}
	if opts.IfAbsent {
		po.SetMatchETagExcept("*")
	}
	if b.lock != nil && !opts.Unlocked {
		// S3 wants the body's digest with a retention: Content-MD5 on a single PUT.
		po.Mode, po.RetainUntilDate, po.SendContentMd5 = minio.RetentionMode(b.lock.Mode),
			b.lock.Until(b.now()).UTC(), true
	}
	if uint64(size) > b.partSize {
		return b.multipart(ctx, key, r, size, po, opts.Uploaded)
	}
	ctx, cancel := context.WithTimeout(ctx, b.partTimeout)
	defer cancel()
	if _, err := b.c.PutObject(ctx, b.name, key, r, size, po); err != nil {
		return b.classify("put "+key, key, err)
	}
	return nil
}

func (b *s3Bucket) Delete(ctx context.Context, key string) error {
	err := b.c.RemoveObject(ctx, b.name, key, minio.RemoveObjectOptions{})
	if err = b.classify("delete "+key, key, err); errors.Is(err, ErrObjectNotFound) {
		return nil
	}
	return err
}

func (b *s3Bucket) List(ctx context.Context, prefix string, f func(ObjectInfo) error) error {
	return b.ListWith(ctx, prefix, ListOptions{}, f)
}

func (b *s3Bucket) ListWith(ctx context.Context, prefix string, opts ListOptions, f func(ObjectInfo) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops minio-go's listing goroutine when f returns early
	for o := range b.c.ListObjects(ctx, b.name, minio.ListObjectsOptions{Prefix: prefix, Recursive: !opts.Shallow,
		StartAfter: opts.StartAfter}) {
		if o.Err != nil {
			return b.classify("list "+prefix, "", o.Err)
		}
		if err := f(ObjectInfo{Key: o.Key, Size: o.Size, LastModified: o.LastModified}); err != nil {
			return err
		}
	}
	return ctx.Err()
}

func (b *s3Bucket) AbortUploads(ctx context.Context, key string) error {
	err := b.c.RemoveIncompleteUpload(ctx, b.name, key)
	if minio.ToErrorResponse(err).Code == "NoSuchUpload" {
		return nil // some stores answer a listing of no uploads so
	}
	return b.classify("abort uploads of "+key, key, err)
}

func (b *s3Bucket) PresignGet(ctx context.Context, key string, expiry time.Duration) (string, error) {
	if expiry <= 0 || expiry > MaxPresignExpiry {
		return "", fmt.Errorf("presign %s: expiry %s is not within (0, %s]", key, expiry, MaxPresignExpiry)
	}
	// Whole seconds: S3 reads X-Amz-Expires as an integer.
	u, err := b.c.PresignedGetObject(ctx, b.name, key, expiry.Round(time.Second), nil)
	if err != nil {
		return "", b.classify("presign a GET of "+key, key, err)
	}
	return u.String(), nil
}

// notFound classifies err like classify, and tells a missing bucket from a missing object
// where S3 cannot: a HEAD request's 404 has no body, so it does not say which is missing.
func (b *s3Bucket) notFound(ctx context.Context, op, key string, err error) error {
	err = b.classify(op, key, err)
	if !errors.Is(err, ErrObjectNotFound) {
		return err
	}
	// Keys that may not read the bucket's own metadata (a 403 here) leave it an object not
	// found, which the object's 404 said.
	if exists, berr := b.c.BucketExists(ctx, b.name); berr == nil && !exists {
		return b.missingBucket()
	}
	return err
}

// classify maps S3's answer to the Bucket contract's sentinels, naming the operation.
func (b *s3Bucket) classify(op, key string, err error) error {
	if err == nil {
		return nil
	}
	resp := minio.ToErrorResponse(err)
	switch {
	case resp.Code == minio.NoSuchBucket:
		return b.missingBucket()
	case resp.StatusCode == http.StatusPreconditionFailed, resp.Code == "PreconditionFailed",
		resp.Code == "ConditionalRequestConflict":
		// If-None-Match: * met an object (or a concurrent put of one).
		return describe(ErrObjectExists, "an object is already at %s in bucket %s%s; it was kept", key, b.name, b.of())
	case resp.Code == minio.NoSuchKey || resp.Code == "NotFound":
		return describe(ErrObjectNotFound, "no object %s in bucket %s%s", key, b.name, b.of())
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden,
		resp.Code == minio.AccessDenied, resp.Code == "InvalidAccessKeyId", resp.Code == "SignatureDoesNotMatch":
		return describe(ErrAccessDenied, "bucket %s%s refused to %s: %s (HTTP %d, access denied)", b.name, b.of(), op,
			resp.Code, resp.StatusCode)
	}
	return fmt.Errorf("%s in bucket %s%s: %w", op, b.name, b.of(), err)
}

func (b *s3Bucket) missingBucket() error {
	return describe(ErrBucketNotFound, "bucket %q%s does not exist", b.name, b.of())
}

// of names the destination, for messages.
func (b *s3Bucket) of() string {
	if b.dest == "" {
		return ""
	}
	return fmt.Sprintf(" of destination %q", b.dest)
}

func objectInfo(info minio.ObjectInfo) ObjectInfo {
	meta := make(map[string]string, len(info.UserMetadata))
	for k, v := range info.UserMetadata {
		meta[textproto.CanonicalMIMEHeaderKey(k)] = v
	}
	out := ObjectInfo{Key: info.Key, Size: info.Size, LastModified: info.LastModified, Metadata: meta}
	// A HEAD's response headers carry the retention; one that does not parse is left out (it
	// is shown, never relied on: the bucket enforces it).
	until, err := time.Parse(time.RFC3339, info.Metadata.Get(amzRetainUntil))
	if mode := info.Metadata.Get(amzLockMode); err == nil && (mode == LockGovernance || mode == LockCompliance) {
		out.RetainUntil, out.LockMode = until.UTC(), mode
	}
	return out
}

// The Object Lock headers of a HEAD response.
const (
	amzLockMode    = "X-Amz-Object-Lock-Mode"
	amzRetainUntil = "X-Amz-Object-Lock-Retain-Until-Date"
)

// progressReader adapts a count of uploaded bytes to minio-go's Progress, which reads from it
// as many bytes as it uploaded.
type progressReader func(n int64)

func (p progressReader) Read(b []byte) (int, error) {
	p(int64(len(b)))
	return len(b), nil
}

// described is a sentinel error told in words of its own: errors.Is finds the sentinel, and
// the message does not repeat it.
type described struct {
	sentinel error
	msg      string
}

func (d described) Error() string { return d.msg }
func (d described) Unwrap() error { return d.sentinel }

func describe(sentinel error, format string, args ...any) error {
	return described{sentinel: sentinel, msg: fmt.Sprintf(format, args...)}
}

// multipart is a multipart put driven through minio-go's Core, for two things its PutObject
// does not do: a create commits only where no object is (po's If-None-Match: * goes on
// CompleteMultipartUpload, where S3 checks it; PutObject sends its custom headers on
// CreateMultipartUpload only, v7.4.1's completeUploadOpts), and each request has its own
// deadline (partTimeout). Parts of partSize, threads of them in flight (memory as
// PutObject's), each counted in uploaded once stored; the upload is aborted, detached from
// ctx, if anything fails.
func (b *s3Bucket) multipart(ctx context.Context, key string, r io.Reader, size int64,
	po minio.PutObjectOptions, uploaded func(int64)) (err error) {
	core := minio.Core{Client: b.c}
	nctx, cancel := context.WithTimeout(ctx, b.partTimeout)
	id, err := core.NewMultipartUpload(nctx, b.name, key, minio.PutObjectOptions{ContentType: po.ContentType,
		UserMetadata: po.UserMetadata, Mode: po.Mode, RetainUntilDate: po.RetainUntilDate})
	cancel()
	if err != nil {
		return b.classify("put "+key, key, err)
	}
	defer func() {
		if err != nil {
			_ = core.AbortMultipartUpload(context.WithoutCancel(ctx), b.name, key, id)
		}
	}()
	parts, err := b.uploadParts(ctx, core, key, id, r, size, uploaded)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, b.partTimeout)
	defer cancel()
	if _, err := core.CompleteMultipartUpload(cctx, b.name, key, id, parts, po); err != nil {
		return b.classify("put "+key, key, err)
	}
	return nil
}

// uploadParts reads size bytes of r into parts of partSize and uploads up to threads at once.
// Memory is threads+1 part buffers, reused: the one being filled, and those in flight.
func (b *s3Bucket) uploadParts(ctx context.Context, core minio.Core, key, id string, r io.Reader, size int64,
	uploaded func(int64)) ([]minio.CompletePart, error) {
	n := int((size + int64(b.partSize) - 1) / int64(b.partSize))
	parts := make([]minio.CompletePart, n)
	free := make(chan []byte, b.threads+1)
	for range b.threads + 1 {
		free <- make([]byte, b.partSize)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(int(b.threads))
	for i := range n {
		whole := <-free // one is always free: at most threads are in flight
		buf := whole[:min(int64(b.partSize), size-int64(i)*int64(b.partSize))]
		if _, err := io.ReadFull(r, buf); err != nil {
			_ = g.Wait()
			return nil, fmt.Errorf("put %s: read part %d: %w", key, i+1, err)
		}
		if gctx.Err() != nil {
			break // a part failed: g.Wait says which
		}
		g.Go(func() error {
			defer func() { free <- whole }()
			pctx, cancel := context.WithTimeout(gctx, b.partTimeout)
			defer cancel()
			p, err := core.PutObjectPart(pctx, b.name, key, id, i+1, bytes.NewReader(buf), int64(len(buf)),
				minio.PutObjectPartOptions{})
			if err != nil {
				return b.classify(fmt.Sprintf("put %s part %d", key, i+1), key, err)
			}
			parts[i] = minio.CompletePart{PartNumber: i + 1, ETag: p.ETag}
			if uploaded != nil {
				uploaded(int64(len(buf)))
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return parts, ctx.Err()
}

// checkLock requires Object Lock enabled on the bucket (ErrObjectLockNotEnabled otherwise).
func (b *s3Bucket) checkLock(ctx context.Context) error {
	enabled, _, _, _, err := b.c.GetObjectLockConfig(ctx, b.name)
	resp := minio.ToErrorResponse(err)
	var notLockXML xml.UnmarshalError
	switch {
	case err == nil && enabled == "Enabled":
		return nil
	case err == nil, resp.Code == "ObjectLockConfigurationNotFoundError", resp.Code == "NotImplemented",
		resp.StatusCode == http.StatusNotFound && resp.Code != minio.NoSuchBucket,
		errors.As(err, &notLockXML): // a store that answers with something else knows no Object Lock
		return fmt.Errorf("%w: destination %q sets objectLock (%s), but bucket %s does not have Object Lock enabled; "+
			"S3 enables it only on a bucket created with it: create one so and point the destination at it",
			ErrObjectLockNotEnabled, b.dest, b.lock, b.name)
	}
	return b.classify("read the object lock configuration", "", err)
}

func (b *s3Bucket) Lock() Lock {
	if b.lock == nil {
		return Lock{}
	}
	return *b.lock
}

func (b *s3Bucket) ListVersions(ctx context.Context, prefix string, f func(Version) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for o := range b.c.ListObjects(ctx, b.name, minio.ListObjectsOptions{Prefix: prefix, Recursive: true,
		WithVersions: true}) {
		if o.Err != nil {
			return b.classify("list versions of "+prefix, "", o.Err)
		}
		if err := f(Version{Key: o.Key, VersionID: o.VersionID, LastModified: o.LastModified, Size: o.Size,
			DeleteMarker: o.IsDeleteMarker, Latest: o.IsLatest}); err != nil {
			return err
		}
	}
	return ctx.Err()
}

func (b *s3Bucket) DeleteVersion(ctx context.Context, key, versionID string) error {
	err := b.c.RemoveObject(ctx, b.name, key, minio.RemoveObjectOptions{VersionID: versionID})
	if resp := minio.ToErrorResponse(err); err != nil && resp.StatusCode == http.StatusForbidden && b.lock != nil {
		// The keys may delete (they just did: a Delete made the marker); the lock refused.
		return describe(ErrLocked, "version %s of %s in bucket %s%s: %s", versionID, key, b.name, b.of(), resp.Message)
	}
	if err = b.classify("delete version "+versionID+" of "+key, key, err); errors.Is(err, ErrObjectNotFound) {
		return nil
	}
	return err
}
