package destination

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
)

// ErrCopyMismatch: a copy read back does not have the bytes that were copied.
var ErrCopyMismatch = errors.New("copy differs from its source")

// Copy copies the object at key from one bucket to another (its bytes and user metadata,
// streamed: memory stays flat) and verifies it there: the copy is read back and its sha256
// must equal the source's, hashed as it was read. A copy already there is verified the same
// way, and a wrong one replaced. It returns the sha256.
func Copy(ctx context.Context, from, to Bucket, key string) (string, error) {
	r, info, err := from.Get(ctx, key)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	err = to.Put(ctx, key, io.TeeReader(r, h), info.Size, PutOptions{Metadata: info.Metadata, IfAbsent: true})
	r.Close()
	switch {
	case errors.Is(err, ErrObjectExists):
		// Copied before (by another replica, or an earlier pass): hash the source to check it
		// (the put may have read some or all of it before it was refused).
		h.Reset()
		if _, err := hashOf(ctx, from, key, h); err != nil {
			return "", err
		}
	case err != nil:
		return "", err
	}
	want := hex.EncodeToString(h.Sum(nil))
	got, err := hashOf(ctx, to, key, sha256.New())
	if err != nil {
		return "", err
	}
	if got != want {
		if derr := to.Delete(ctx, key); derr != nil {
			return "", fmt.Errorf("%w: %s has sha256 %s in bucket %s, the source %s (and the bad copy stays: %w)",
				ErrCopyMismatch, key, got, to.Name(), want, derr)
		}
		return "", fmt.Errorf("%w: %s had sha256 %s in bucket %s, the source %s; the bad copy was deleted",
			ErrCopyMismatch, key, got, to.Name(), want)
	}
	return want, nil
}

// hashOf reads the object at key from b into h and returns h's sum.
func hashOf(ctx context.Context, b Bucket, key string, h interface {
	io.Writer
	Sum([]byte) []byte
}) (string, error) {
	r, _, err := b.Get(ctx, key)
	if err != nil {
		return "", err
	}
	defer r.Close()
	if _, err := io.Copy(h, r); err != nil {
		return "", fmt.Errorf("read %s back from bucket %s: %w", key, b.Name(), err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
