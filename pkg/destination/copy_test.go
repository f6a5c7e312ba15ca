package destination_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"testing"

	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/s3test"
)

// Copy puts the object's bytes and metadata in the other bucket and checks them read back; a
// copy already there is checked the same way, and a wrong one is deleted, not kept.
func TestCopyVerifiesWhatItCopied(t *testing.T) {
	s3 := s3test.Run(t, "primary", "copy")
	from, to := s3.Bucket(t, "primary"), s3.Bucket(t, "copy")
	ctx := context.Background()
	body := bytes.Repeat([]byte("etcd"), 3<<20) // 12 MiB: a multipart put
	sum := sha256.Sum256(body)
	want := hex.EncodeToString(sum[:])
	if err := from.Put(ctx, "c/ns/cfg/b.db.zst", bytes.NewReader(body), int64(len(body)),
		destination.PutOptions{Metadata: map[string]string{"Sha256": want}}); err != nil {
		t.Fatal(err)
	}
	for range 2 { // copied, then found there already
		got, err := destination.Copy(ctx, from, to, "c/ns/cfg/b.db.zst")
		if err != nil || got != want {
			t.Fatalf("copy: %s, %v; want %s", got, err, want)
		}
	}
	r, info, err := to.Get(ctx, "c/ns/cfg/b.db.zst")
	if err != nil {
		t.Fatal(err)
	}
	copied, _ := io.ReadAll(r)
	r.Close()
	if !bytes.Equal(copied, body) || info.Metadata["Sha256"] != want {
		t.Fatalf("the copy: %d bytes, metadata %v", len(copied), info.Metadata)
	}
	// A wrong object at the key in the copy: found, deleted, reported.
	if err := to.Put(ctx, "c/ns/cfg/b.db.zst", bytes.NewReader([]byte("tampered")), 8,
		destination.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := destination.Copy(ctx, from, to, "c/ns/cfg/b.db.zst"); !errors.Is(err, destination.ErrCopyMismatch) {
		t.Fatalf("a wrong copy: %v, want ErrCopyMismatch", err)
	}
	if _, err := to.Stat(ctx, "c/ns/cfg/b.db.zst"); !errors.Is(err, destination.ErrObjectNotFound) {
		t.Fatalf("the wrong copy stayed: %v", err)
	}
	if got, err := destination.Copy(ctx, from, to, "c/ns/cfg/b.db.zst"); err != nil || got != want {
		t.Fatalf("copied again: %s, %v", got, err)
	}
}
