// Package buckettest is the contract of destination.Bucket, run against every S3 server this
// repository uses (thanos-io/objstore's objtesting is the model): the in-process one of the
// unit tests (pkg/destination) and the S3 server process of the end-to-end suite (e2e).
package buckettest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/destination"
)

// Store is one S3 server under test.
type Store struct {
	// Bucket returns an empty bucket that exists, reached with keys the server accepts.
	Bucket func(t *testing.T) destination.Bucket
	// Missing returns a bucket that does not exist, reached with keys the server accepts.
	Missing func(t *testing.T) destination.Bucket
	// Refused returns an existing bucket reached with keys the server refuses.
	Refused func(t *testing.T) destination.Bucket
	// ChecksSignatures says the server checks a presigned URL's signature against the
	// request: one for another object is refused. (gofakes3, the in-process server, checks
	// none: only the expiry, which s3test adds.)
	ChecksSignatures bool
}

// Run runs the contract against s.
func Run(t *testing.T, s Store) {
	t.Helper()
	c := contract{s}
	t.Run("a missing object is ErrObjectNotFound", c.missingObject)
	t.Run("put, stat and get keep bytes and metadata", c.roundTrip)
	t.Run("put replaces", c.putReplaces)
	t.Run("a multipart put reports its progress", c.multipart)
	t.Run("a put if absent never replaces", c.putIfAbsent)
	t.Run("a failed put leaves no object", c.failedPut)
	t.Run("delete is idempotent", c.deleteTwice)
	t.Run("list walks a prefix at any depth, or one level, from a key", c.list)
	t.Run("a presigned GET reads its object until it expires", c.presigned)
	t.Run("a missing bucket is ErrBucketNotFound everywhere", c.missingBucket)
	t.Run("refused keys are ErrAccessDenied everywhere", c.refused)
}

// contract holds the cases, each a test of its own on a fresh bucket of the store.
type contract struct{ Store }

func ctx(t *testing.T) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

func put(t *testing.T, b destination.Bucket, key string, body []byte, meta map[string]string) {
	t.Helper()
	err := b.Put(ctx(t), key, bytes.NewReader(body), int64(len(body)),
		destination.PutOptions{ContentType: "application/zstd", Metadata: meta})
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

func (c contract) missingObject(t *testing.T) {
	b := c.Bucket(t)
	if _, err := b.Stat(ctx(t), "no/such.db.zst"); !errors.Is(err, destination.ErrObjectNotFound) || errors.Is(err,
		destination.ErrBucketNotFound) {
		t.Fatalf("stat: %v, want ErrObjectNotFound only", err)
	}
	if r, _, err := b.Get(ctx(t), "no/such.db.zst"); !errors.Is(err, destination.ErrObjectNotFound) {
		if r != nil {
			r.Close()
		}
		t.Fatalf("get: %v, want ErrObjectNotFound", err)
	}
	if destination.IsConfigError(destination.ErrObjectNotFound) {
		t.Fatal("a missing object is reported as a configuration error")
	}
}

func (c contract) roundTrip(t *testing.T) {
	b := c.Bucket(t)
	body := random(t, 4096)
	meta := map[string]string{"Sha256": "abc", "Snapshot-Size": "4096", "Backup-Name": "daily-2021-03-02T15:24:00"}
	before := time.Now().Add(-time.Minute)
	put(t, b, "c/ns/cfg/cfg-2021-03-02T15-24-00.db.zst", body, meta)
	info, err := b.Stat(ctx(t), "c/ns/cfg/cfg-2021-03-02T15-24-00.db.zst")
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != int64(len(body)) || info.LastModified.Before(before) || !equalMeta(info.Metadata, meta) {
		t.Fatalf("stat: %+v, want size %d, metadata %v, modified after %s", info, len(body), meta, before)
	}
	r, got, err := b.Get(ctx(t), "c/ns/cfg/cfg-2021-03-02T15-24-00.db.zst")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	data, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(data, body) || !equalMeta(got.Metadata, meta) || got.Size != info.Size {
		t.Fatalf("get: %d bytes (%v), info %+v; want the %d bytes put and %+v", len(data), err, got, len(body), info)
	}
}

func (c contract) putReplaces(t *testing.T) {
	b := c.Bucket(t)
	put(t, b, "k", []byte("first"), map[string]string{"Sha256": "1"})
	put(t, b, "k", []byte("second!"), map[string]string{"Sha256": "2"})
	info, err := b.Stat(ctx(t), "k")
	if err != nil || info.Size != 7 || info.Metadata["Sha256"] != "2" {
		t.Fatalf("after a second put: %+v, %v; want the second object", info, err)
	}
}

// putIfAbsent: a create stores where nothing is and is refused, with ErrObjectExists and the
// first object kept, where something is, in one request and in a multipart upload alike.
func (c contract) putIfAbsent(t *testing.T) {
	b := c.Bucket(t)
	for _, size := range []int{7, 11 << 20} {
		key := fmt.Sprintf("once-%d", size)
		first, second := random(t, size), random(t, size)
		create := func(body []byte, sum string) error {
			return b.Put(ctx(t), key, bytes.NewReader(body), int64(len(body)), destination.PutOptions{
				Metadata: map[string]string{"Sha256": sum}, IfAbsent: true})
		}
		if err := create(first, "first"); err != nil {
			t.Fatalf("%d bytes: create where nothing is: %v", size, err)
		}
		err := create(second, "second")
		if !errors.Is(err, destination.ErrObjectExists) || destination.IsConfigError(err) {
			t.Fatalf("%d bytes: create over an object: %v, want ErrObjectExists", size, err)
		}
		r, info, err := b.Get(ctx(t), key)
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(data, first) || info.Metadata["Sha256"] != "first" {
			t.Fatalf("%d bytes: after a refused create the object is %d bytes, %v; want the first kept", size, len(data),
				info.Metadata)
		}
	}
}

func (c contract) multipart(t *testing.T) {
	b := c.Bucket(t)
	body := random(t, 11<<20) // three parts of the default 8 MiB or the minimum 5 MiB
	var uploaded int64
	var calls int
	err := b.Put(ctx(t), "big.db.zst", bytes.NewReader(body), int64(len(body)), destination.PutOptions{
		Metadata: map[string]string{"Sha256": "big"},
		Uploaded: func(n int64) { uploaded += n; calls++ },
	})
	if err != nil {
		t.Fatal(err)
	}
	if uploaded != int64(len(body)) || calls < 2 {
		t.Fatalf("progress counted %d bytes in %d calls, want %d in several", uploaded, calls, len(body))
	}
	info, err := b.Stat(ctx(t), "big.db.zst")
	if err != nil || info.Size != int64(len(body)) || info.Metadata["Sha256"] != "big" {
		t.Fatalf("stat: %+v, %v", info, err)
	}
}

func (c contract) failedPut(t *testing.T) {
	b := c.Bucket(t)
	for name, size := range map[string]int{"one part": 1 << 10, "multipart": 11 << 20, "multipart if absent": 11 << 20} {
		t.Run(name, func(t *testing.T) {
			key := "failed-" + strings.ReplaceAll(name, " ", "-")
			body := io.MultiReader(bytes.NewReader(random(t, size/2)), iotest.ErrReader(errors.New("the staged copy broke")))
			opts := destination.PutOptions{IfAbsent: strings.HasSuffix(name, "if absent")}
			if err := b.Put(ctx(t), key, body, int64(size), opts); err == nil {
				t.Fatal("a put whose reader failed succeeded")
			}
			if _, err := b.Stat(ctx(t), key); !errors.Is(err, destination.ErrObjectNotFound) {
				t.Fatalf("after a failed put: %v, want ErrObjectNotFound", err)
			}
			if err := b.AbortUploads(ctx(t), key); err != nil {
				t.Fatalf("abort what is left: %v", err)
			}
		})
	}
}

func (c contract) deleteTwice(t *testing.T) {
	b := c.Bucket(t)
	put(t, b, "gone.db.zst", []byte("x"), nil)
	for i := range 2 {
		if err := b.Delete(ctx(t), "gone.db.zst"); err != nil {
			t.Fatalf("delete %d: %v", i+1, err)
		}
	}
	if _, err := b.Stat(ctx(t), "gone.db.zst"); !errors.Is(err, destination.ErrObjectNotFound) {
		t.Fatalf("stat after delete: %v", err)
	}
}

func (c contract) list(t *testing.T) {
	b := c.Bucket(t)
	for _, k := range []string{"c/ns/a/a-1.db.zst", "c/ns/a/deep/a-2.db.zst", "c/ns/ab/ab-1.db.zst", "d/other.db.zst"} {
		put(t, b, k, []byte(k), nil)
	}
	var got []string
	err := b.List(ctx(t), "c/ns/a/", func(o destination.ObjectInfo) error {
		if o.Size != int64(len(o.Key)) || o.LastModified.IsZero() {
			t.Errorf("listed %+v: want its size and time", o)
		}
		got = append(got, o.Key)
		return nil
	})
	slices.Sort(got)
	if err != nil || !slices.Equal(got, []string{"c/ns/a/a-1.db.zst", "c/ns/a/deep/a-2.db.zst"}) {
		t.Fatalf("list c/ns/a/: %v, %v", got, err)
	}
	stop := errors.New("enough")
	n := 0
	if err := b.List(ctx(t), "", func(destination.ObjectInfo) error { n++; return stop }); !errors.Is(err,
		stop) || n != 1 {
		t.Fatalf("list stopped by f: %v after %d objects, want f's error after 1", err, n)
	}
	if err := b.List(ctx(t), "none/",
		func(o destination.ObjectInfo) error { return errors.New("listed " + o.Key) }); err != nil {
		t.Fatalf("an empty prefix: %v", err)
	}
	listed := func(prefix string, opts destination.ListOptions) []string {
		t.Helper()
		var keys []string
		if err := b.ListWith(ctx(t), prefix, opts, func(o destination.ObjectInfo) error {
			keys = append(keys, o.Key)
			return nil
		}); err != nil {
			t.Fatalf("list %s with %+v: %v", prefix, opts, err)
		}
		return keys
	}
	if got := listed("c/ns/", destination.ListOptions{StartAfter: "c/ns/a/a-1.db.zst"}); !slices.Equal(got,
		[]string{"c/ns/a/deep/a-2.db.zst", "c/ns/ab/ab-1.db.zst"}) {
		t.Errorf("list c/ns/ after c/ns/a/a-1.db.zst: %v", got)
	}
	if got := listed("c/ns/a/", destination.ListOptions{Shallow: true}); !slices.Equal(got,
		[]string{"c/ns/a/a-1.db.zst", "c/ns/a/deep/"}) {
		t.Errorf("list c/ns/a/ shallow: %v, want its object and its folder", got)
	}
	if got := listed("c/ns/a/", destination.ListOptions{Shallow: true, StartAfter: "c/ns/a/a-1.db.zst"}); !slices.Equal(
		got, []string{"c/ns/a/deep/"}) {
		t.Errorf("list c/ns/a/ shallow after its object: %v, want its folder", got)
	}
}

// presigned: a presigned GET URL reads exactly its object, bytes and metadata, with no keys;
// not another object; not after it expired; and no URL outlives S3's limit.
func (c contract) presigned(t *testing.T) {
	b := c.Bucket(t)
	body := random(t, 4096)
	meta := map[string]string{"Sha256": "abc", "Snapshot-Size": "4096"}
	put(t, b, "c/ns/cfg/one.db.zst", body, meta)
	put(t, b, "c/ns/cfg/other.db.zst", []byte("another tenant's"), nil)
	u, err := b.PresignGet(ctx(t), "c/ns/cfg/one.db.zst", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	r := openPresigned(t, u, "c/ns/cfg/one.db.zst")
	info, err := r.Stat(ctx(t), "c/ns/cfg/one.db.zst")
	if err != nil || info.Size != int64(len(body)) || !equalMeta(info.Metadata, meta) {
		t.Fatalf("stat through the URL: %+v, %v; want size %d and %v", info, err, len(body), meta)
	}
	obj, got, err := r.Get(ctx(t), "c/ns/cfg/one.db.zst")
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(obj)
	obj.Close()
	if err != nil || !bytes.Equal(data, body) || !equalMeta(got.Metadata, meta) {
		t.Fatalf("get through the URL: %d bytes (%v), %v; want the %d bytes put and %v", len(data), err, got.Metadata,
			len(body), meta)
	}
	if _, _, err := r.Get(ctx(t), "c/ns/cfg/other.db.zst"); err == nil {
		t.Fatal("a presigned URL's reader read another key")
	}
	if c.ChecksSignatures {
		forged := strings.Replace(u, "/one.db.zst", "/other.db.zst", 1)
		if _, _, err := openPresigned(t, forged, "c/ns/cfg/other.db.zst").Get(ctx(t),
			"c/ns/cfg/other.db.zst"); !errors.Is(err, destination.ErrAccessDenied) {
			t.Fatalf("the URL's signature on another object's path: %v, want ErrAccessDenied", err)
		}
	}
	short, err := b.PresignGet(ctx(t), "c/ns/cfg/one.db.zst", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	expired := openPresigned(t, short, "c/ns/cfg/one.db.zst")
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := expired.Stat(ctx(t), "c/ns/cfg/one.db.zst")
		if errors.Is(err, destination.ErrAccessDenied) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a URL valid for 1s still reads after 30s: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := b.PresignGet(ctx(t), "c/ns/cfg/one.db.zst", destination.MaxPresignExpiry+time.Second); err == nil {
		t.Fatal("a URL valid beyond S3's 7 days was made")
	}
}

func openPresigned(t *testing.T, u, key string) destination.Reader {
	t.Helper()
	r, err := destination.OpenPresigned(u, key)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (c contract) missingBucket(t *testing.T) {
	checkAll(t, c.Missing(t), destination.ErrBucketNotFound)
	if !destination.IsConfigError(destination.ErrBucketNotFound) ||
		destination.Reason(destination.ErrBucketNotFound) != "BucketNotFound" {
		t.Fatal("a missing bucket is not the configuration error BucketNotFound")
	}
}

func (c contract) refused(t *testing.T) {
	checkAll(t, c.Refused(t), destination.ErrAccessDenied)
}

// checkAll requires every method of b to fail with want.
func checkAll(t *testing.T, b destination.Bucket, want error) {
	t.Helper()
	_, statErr := b.Stat(ctx(t), "k")
	_, _, getErr := b.Get(ctx(t), "k")
	// A presign may succeed (it is signed locally), but never the GET of its URL.
	u, presignErr := b.PresignGet(ctx(t), "k", time.Minute)
	if presignErr == nil {
		_, _, presignErr = openPresigned(t, u, "k").Get(ctx(t), "k")
	}
	for op, err := range map[string]error{
		"stat":          statErr,
		"get":           getErr,
		"presigned get": presignErr,
		"put":           b.Put(ctx(t), "k", bytes.NewReader([]byte("x")), 1, destination.PutOptions{}),
		"delete":        b.Delete(ctx(t), "k"),
		"list":          b.List(ctx(t), "", func(destination.ObjectInfo) error { return nil }),
	} {
		if !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", op, err, want)
		}
	}
}

func equalMeta(got, want map[string]string) bool {
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

func random(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}
