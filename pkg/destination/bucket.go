package destination

import (
	"context"
	"errors"
	"io"
	"time"
)

// Bucket is one bucket of a destination: everything the services do with stored backups goes
// through it (thanos-io/objstore's Bucket is the model). The only implementation is S3's
// (s3.go, the only importer of an S3 client library); one contract suite (buckettest) runs
// against every S3 server this repository uses.
//
// Errors are classified the same way by every method, so that every service treats them
// the same way:
//   - ErrObjectNotFound: the bucket exists and holds no object at the key;
//   - ErrBucketNotFound: the bucket itself does not exist (a configuration error: IsConfigError);
//   - ErrAccessDenied: the store refused the credentials or the operation (a configuration
//     error too: a person must fix the keys or their policy);
//   - ErrObjectExists: a Put with IfAbsent found an object at the key, and left it;
//   - anything else is transient (a network error, the store down, a 5xx): retry it.
//
// Keys are the object names inside the bucket; metadata keys are returned in the canonical
// form of an HTTP header ("Snapshot-Sha256"), whatever case they were written in.
type Bucket interface {
	// Name is the bucket's name.
	Name() string
	// Reader: Stat and Get.
	Reader
	// Put stores size bytes of r at key with opts' metadata, replacing any object there
	// unless opts.IfAbsent. An
	// object appears whole or not at all: a put that fails (r fails, the store fails, ctx
	// ends) leaves no object and aborts the multipart upload it began. Putting the same bytes
	// again is harmless.
	Put(ctx context.Context, key string, r io.Reader, size int64, opts PutOptions) error
	// Delete removes the object at key. Deleting an object that is not there succeeds:
	// deletions are idempotent.
	Delete(ctx context.Context, key string) error
	// List calls f for every object whose key starts with prefix, at any depth, in key order.
	// An error from f stops the listing and is returned.
	List(ctx context.Context, prefix string, f func(ObjectInfo) error) error
	// ListWith is List with options: only the keys after opts.StartAfter, and with
	// opts.Shallow, the objects directly under prefix and one entry per folder below it.
	ListWith(ctx context.Context, prefix string, opts ListOptions, f func(ObjectInfo) error) error
	// AbortUploads aborts the unfinished multipart uploads to key (left by a process killed
	// during a put), so that their parts stop taking space. None is not an error.
	AbortUploads(ctx context.Context, key string) error
	// PresignGet returns a URL that reads the object at key, and no other, with a plain HTTP
	// GET and no other credential until expiry has passed (at most MaxPresignExpiry, S3's
	// limit). Making it sends no request but, once, the bucket's region lookup. The URL is a
	// credential for that object: it belongs in a Secret, never in a log or on the bus.
	// OpenPresigned reads through it.
	PresignGet(ctx context.Context, key string, expiry time.Duration) (string, error)
}

// Versions is what a bucket of an Object Lock destination offers besides Bucket. There a
// Delete hides the object behind a delete marker (S3's way: the delete succeeds, the locked
// version stays, listed by nothing but ListVersions), and the version is destroyed with
// DeleteVersion once its retention has run out.
type Versions interface {
	// Lock is the retention every object is written with.
	Lock() Lock
	// ListVersions calls f for every version and delete marker whose key starts with prefix,
	// each key's newest first.
	ListVersions(ctx context.Context, prefix string, f func(Version) error) error
	// DeleteVersion destroys one version or delete marker; ErrLocked while it is retained. One
	// that is gone already succeeds.
	DeleteVersion(ctx context.Context, key, versionID string) error
}

// Version is one version of an object, or a delete marker.
type Version struct {
	Key, VersionID string
	LastModified   time.Time
	Size           int64
	// DeleteMarker: no bytes, it hides the versions before it; Latest: the key's newest.
	DeleteMarker, Latest bool
}

// Reader is the reading half of a Bucket: what a restore step downloads through, either a
// Bucket opened with keys or one object's presigned URL (OpenPresigned).
type Reader interface {
	// Stat returns what the bucket knows of the object at key, without its bytes.
	Stat(ctx context.Context, key string) (ObjectInfo, error)
	// Get opens the object at key for reading and returns it with what Stat would return; the
	// caller closes it. A missing object is reported here, not by the first Read.
	Get(ctx context.Context, key string) (io.ReadCloser, ObjectInfo, error)
}

// MaxPresignExpiry is the longest a presigned URL is valid for (S3's Signature V4 limit).
const MaxPresignExpiry = 7 * 24 * time.Hour

// ObjectInfo is what a bucket says of one object.
// ListOptions narrow a listing (ListWith).
type ListOptions struct {
	// StartAfter: only keys after it, in key order (S3's start-after): what a listing that
	// saw up to StartAfter has not seen yet.
	StartAfter string
	// Shallow: the objects directly under the prefix, and each folder below it once, as an
	// ObjectInfo whose Key is the folder's path ending in "/" and whose Size is 0 (S3's
	// delimiter "/"), instead of every object at any depth.
	Shallow bool
}

type ObjectInfo struct {
	Key          string
	Size         int64
	LastModified time.Time
	// Metadata is the object's user metadata (S3's X-Amz-Meta-*), keys in canonical header
	// form. List leaves it empty.
	Metadata map[string]string
	// RetainUntil and LockMode are the object's Object Lock retention (zero: none), as Stat
	// reads it; List leaves them empty.
	RetainUntil time.Time
	LockMode    string
}

// PutOptions are the optional parts of a Put.
type PutOptions struct {
	// ContentType of the object ("application/octet-stream" when empty).
	ContentType string
	// Metadata is stored as the object's user metadata.
	Metadata map[string]string
	// Uploaded, when set, is called with the number of bytes of each part as it is stored:
	// the sum is the bytes uploaded so far. It may be called from several goroutines.
	Uploaded func(n int64)
	// IfAbsent makes the put a create: an object already at the key stays, and Put returns
	// ErrObjectExists. S3 checks it when the object is committed (If-None-Match: *, on the
	// PUT or on CompleteMultipartUpload), so of two racing puts one wins. A store that ignores
	// the header replaces the object: callers Stat first, which leaves the race between that
	// Stat and the commit.
	IfAbsent bool
	// Unlocked writes the object without the destination's Object Lock retention: a scratch
	// object that is deleted again (a point-in-time restore's database).
	Unlocked bool
}

var (
	// ErrObjectNotFound: the bucket exists and holds no object at the key.
	ErrObjectNotFound = errors.New("object not found")
	// ErrBucketNotFound: the destination's bucket does not exist. A configuration error: the
	// Seed names a bucket nobody created, or it was deleted.
	ErrBucketNotFound = errors.New("bucket not found")
	// ErrAccessDenied: the store refused the credentials (unknown key, wrong secret) or the
	// operation (the key's policy). A configuration error: the credentials Secret or the
	// key's policy must be fixed.
	ErrAccessDenied = errors.New("access denied")
	// ErrObjectExists: a Put with IfAbsent found an object at the key; that object is kept.
	ErrObjectExists = errors.New("object exists")
	// ErrLocked: S3 Object Lock retains the object version; it can be destroyed once its
	// retention has run out. Not a configuration error.
	ErrLocked = errors.New("retained by object lock")
)
