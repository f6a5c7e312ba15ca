package backupformat

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"runtime"
	"sync"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
)

// Unseal reads a small stored object written by a Writer (a journal segment), held whole in
// memory: its sha256 is checked against st's record before any byte of it is decrypted or
// decompressed, and at most limit bytes come out of it. A digest that differs, a codec this
// version does not read, or more than limit bytes wrap ErrCorrupt; identities that open none
// of its recipients wrap ErrDecrypt.
func Unseal(stored []byte, st Meta, identities []age.Identity, limit int64) ([]byte, error) {
	if st.SHA256 == "" {
		return nil, fmt.Errorf("%w: no %s metadata to check it against", ErrCorrupt, metaSHA256)
	}
	sum := sha256.Sum256(stored)
	if got := hex.EncodeToString(sum[:]); got != st.SHA256 {
		return nil, fmt.Errorf("%w: sha256 %s, its metadata says %s: the stored bytes changed after upload", ErrCorrupt,
			got, st.SHA256)
	}
	var compressed io.Reader = bytes.NewReader(stored)
	switch st.Codec {
	case "", CodecZstd:
	case CodecZstdAge:
		p, err := age.Decrypt(compressed, identities...)
		if err != nil {
			return nil, decryptError(st, identities, err)
		}
		compressed = p
	default:
		return nil, fmt.Errorf("%w: codec %q is not one this version reads (%s, %s)", ErrCorrupt, st.Codec, CodecZstd,
			CodecZstdAge)
	}
	dec, err := zstd.NewReader(compressed, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(uint64(limit)))
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	var out bytes.Buffer
	n, err := io.Copy(&out, io.LimitReader(dec, limit+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	case n > limit:
		return nil, fmt.Errorf("%w: it holds more than %d bytes", ErrCorrupt, limit)
	}
	return out.Bytes(), nil
}

// small compresses small objects whole (EncodeAll): one encoder state per core, made once,
// instead of a streaming Writer's window per object.
var small = sync.OnceValue(func() *zstd.Encoder {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(Level), zstd.WithWindowSize(WindowSize),
		zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)))
	if err != nil {
		panic(err) // the options are constants
	}
	return enc
})

// Seal is Unseal's inverse for an object held whole (a journal segment): plain compressed
// with zstd, and encrypted to e's recipients when it has any. It returns the stored bytes
// and what Unseal needs of them (sha256, codec, recipients).
func Seal(plain []byte, e Encryption) ([]byte, Meta, error) {
	stored := small().EncodeAll(plain, nil)
	if len(e.Recipients) > 0 {
		var buf bytes.Buffer
		w, err := age.Encrypt(&buf, e.Recipients...)
		if err != nil {
			return nil, Meta{}, fmt.Errorf("encrypt: %w", err)
		}
		if _, err := w.Write(stored); err != nil {
			return nil, Meta{}, fmt.Errorf("encrypt: %w", err)
		}
		if err := w.Close(); err != nil {
			return nil, Meta{}, fmt.Errorf("encrypt: %w", err)
		}
		stored = buf.Bytes()
	}
	sum := sha256.Sum256(stored)
	return stored, Meta{SHA256: hex.EncodeToString(sum[:]), Codec: e.Codec(), Recipients: e.RecipientList()}, nil
}
