// Package backupformat is the one definition of a stored backup: an etcd snapshot compressed
// with zstd, its key suffix, content type and S3 metadata, the writer that compresses and
// hashes it (the snapshotter, while etcd streams) and the reader that proves it intact (the
// restorer's verification and the restore step).
package backupformat

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"

	"filippo.io/age"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	"github.com/etcd-backup/etcdbackup/pkg/snapshot"
	"github.com/klauspost/compress/zstd"
)

// Suffix ends every backup object's key.
const Suffix = backupname.ObjectSuffix

// ContentType of a stored backup.
const ContentType = "application/zstd"

// Codecs (Meta.Codec): the chain the stored bytes were written with.
const (
	CodecZstd    = "zstd"
	CodecZstdAge = "zstd+age"
)

// ErrCorrupt is returned (wrapped) when a backup fails a check.
var ErrCorrupt = errors.New("backup corrupt")

// Level is the compression level backups are written with: zstd's default (level 3), 4%
// smaller than gzip -9 on etcd data and about 13 times faster.
const Level = zstd.SpeedDefault

// WindowSize is the zstd window: 2 MiB instead of the default level's 8 MiB allocates 4 MiB
// instead of 10 per encoder, for 0.6% more bytes on Kubernetes-like data (measured here).
const WindowSize = 2 << 20

// Writer compresses a snapshot into w, and encrypts it when given recipients, and hashes and
// counts the stored bytes.
type Writer struct {
	enc  *zstd.Encoder
	seal io.WriteCloser // the age stream, nil when not encrypting
	hash hash.Hash
	out  *countingWriter
	// sealedTo is what the stream is encrypted to (none: not encrypted).
	sealedTo Encryption
}

// NewWriter returns a Writer into w at level, with encoder concurrency concurrency (1 keeps
// memory flat at one window; more trades memory for speed on more cores).
func NewWriter(w io.Writer, level zstd.EncoderLevel, concurrency int) (*Writer, error) {
	return NewSealingWriter(w, level, concurrency, Encryption{})
}

// NewSealingWriter is NewWriter that also encrypts the compressed stream to e's recipients
// (age, X25519), when e has any: snapshot → zstd → age → w.
func NewSealingWriter(w io.Writer, level zstd.EncoderLevel, concurrency int, e Encryption) (*Writer, error) {
	return NewSizedSealingWriter(w, level, concurrency, e, 0)
}

// LargeInput is the size from which an encoder trades 2 MiB of memory for copies: below it
// (or when the size is not known) it allocates as little as it can, which is what a burst of
// small snapshots is made of; from it, its history moves once per window, not once per block.
const LargeInput = 64 << 20

// NewSizedSealingWriter is NewSealingWriter for about size bytes of input (0: not known).
//
// With WithLowerEncoderMem the encoder's history holds the window and one 128 KiB block, and
// moves the whole window down for every block: 16 times the input in copies, a tenth of the
// snapshotter's CPU on a 1.1 GB snapshot (1.05 of 10.8 CPU-s). Without it the history holds
// two windows and moves one per window, for 2 MiB more, and larger buffers: 20% more
// snapshotter CPU per backup in a burst of a thousand 1 MiB snapshots (BenchmarkScale).
func NewSizedSealingWriter(w io.Writer, level zstd.EncoderLevel, concurrency int, e Encryption,
	size int64) (*Writer, error) {
	h := sha256.New()
	out := &countingWriter{w: io.MultiWriter(w, h)}
	var into io.Writer = out
	var seal io.WriteCloser
	if len(e.Recipients) > 0 {
		var err error
		if seal, err = age.Encrypt(out, e.Recipients...); err != nil {
			return nil, fmt.Errorf("encrypt: %w", err)
		}
		into = seal
	}
	enc, err := zstd.NewWriter(into, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(max(1, concurrency)),
		zstd.WithLowerEncoderMem(size < LargeInput), zstd.WithWindowSize(WindowSize))
	if err != nil {
		return nil, err
	}
	return &Writer{enc: enc, seal: seal, hash: h, out: out, sealedTo: e}, nil
}

// Codec is the chain the stored bytes were written with (Meta.Codec).
func (w *Writer) Codec() string { return w.sealedTo.Codec() }

// Meta is what the Writer knows of the stored bytes, after Close: their sha256, the codec
// and, when encrypted, the recipients' fingerprints. The caller adds the snapshot's facts.
func (w *Writer) Meta() Meta {
	return Meta{SHA256: w.SHA256(), Codec: w.Codec(), Recipients: w.sealedTo.RecipientList()}
}

// Write compresses p.
func (w *Writer) Write(p []byte) (int, error) { return w.enc.Write(p) }

// ReadFrom compresses everything r holds. r is read ahead by its own goroutine (up to
// readAheadBuffers of readAheadSize), so reading it, and whatever its Read does (etcd's
// stream and its verification), overlaps compression instead of taking turns with it.
func (w *Writer) ReadFrom(r io.Reader) (int64, error) {
	ra := newReadAhead(r, readAheadBuffers, readAheadSize)
	defer ra.Close()
	return w.enc.ReadFrom(ra)
}

// Close flushes the compressed (and encrypted) stream; Size and SHA256 are final after it.
func (w *Writer) Close() error {
	if err := w.enc.Close(); err != nil {
		return err
	}
	if w.seal != nil {
		return w.seal.Close()
	}
	return nil
}

// Size is the number of stored (compressed, encrypted) bytes written.
func (w *Writer) Size() int64 { return w.out.n }

// SHA256 is the compressed bytes' sha256, hex.
func (w *Writer) SHA256() string { return hex.EncodeToString(w.Sum()) }

// Sum is the compressed bytes' sha256.
func (w *Writer) Sum() []byte { return w.hash.Sum(nil) }

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// DefaultMaxSnapshotSize bounds a restored snapshot when nothing else does: twice etcd's
// largest recommended backend quota (8 GiB).
const DefaultMaxSnapshotSize = 16 << 30

// Decoded describes a backup that passed every check.
type Decoded struct {
	// Size is the stored (compressed) size, SnapshotSize the etcd snapshot's.
	Size, SnapshotSize int64
	// SHA256 is the stored object's digest.
	SHA256 string
}

// SourceError is a failure to read the stored bytes (the download broke off): not the
// backup's fault, unlike ErrCorrupt.
type SourceError struct{ Err error }

func (e *SourceError) Error() string { return "read the backup: " + e.Err.Error() }
func (e *SourceError) Unwrap() error { return e.Err }

// SinkError is a failure to write the decompressed snapshot (a full disk): not the backup's
// fault either.
type SinkError struct{ Err error }

func (e *SinkError) Error() string { return "write the snapshot: " + e.Err.Error() }
func (e *SinkError) Unwrap() error { return e.Err }

// Open reads a stored backup from r, decrypts it when its codec is CodecZstdAge (with
// identities: one of them must match a recipient, or the error wraps ErrDecrypt and names
// the recipients' fingerprints), decompresses it into out and proves it intact in the same
// pass: the stored bytes' sha256 against st.SHA256 (its record's), zstd, and etcd's
// trailing hash and size rule (and its recorded size, when st has one). Memory stays flat whatever the size. A
// broken r is a
// *SourceError, a failing out a *SinkError, anything else wraps ErrCorrupt (a backup whose
// bytes changed is ErrCorrupt, not ErrDecrypt).
//
// maxSnapshot bounds what is written to out: a record whose snapshot size is above it is
// refused before anything is read, and a record without one (an object stored before sizes
// were recorded, or by hand) is decompressed at most that far: the metadata can never lift the
// bound. Zero or less: DefaultMaxSnapshotSize.
func Open(r io.Reader, st Meta, identities []age.Identity, out io.Writer, maxSnapshot int64) (Decoded, error) {
	if st.SHA256 == "" {
		return Decoded{}, fmt.Errorf("%w: no %s metadata to check it against", ErrCorrupt, metaSHA256)
	}
	if maxSnapshot <= 0 {
		maxSnapshot = DefaultMaxSnapshotSize
	}
	if st.SnapshotSize > maxSnapshot {
		return Decoded{}, fmt.Errorf("%w: its record says the snapshot is %d bytes, more than the %d this restore takes "+
			"(--max-snapshot-size)", ErrCorrupt, st.SnapshotSize, maxSnapshot)
	}
	limit := st.SnapshotSize
	if limit == 0 {
		limit = maxSnapshot
	}
	h := sha256.New()
	// Reading in 1 MiB pieces took a 256 MiB fetch from 1.9 s to 1.4-1.65 s here.
	counted := &countingReader{r: io.TeeReader(bufio.NewReaderSize(r, 1<<20), h)}
	plain, err := decrypt(counted, h, st, identities)
	if err != nil {
		return Decoded{}, err
	}
	dec, err := zstd.NewReader(plain, zstd.WithDecoderConcurrency(1))
	if err != nil {
		return Decoded{}, err
	}
	defer dec.Close()
	v := snapshot.NewVerifier(dec)
	snap := io.LimitReader(v, limit+1) // one byte more tells "larger" from "equal"
	w := &errWriter{w: out}
	_, copyErr := io.Copy(w, snap)
	if w.err != nil {
		return Decoded{}, &SinkError{w.err}
	}
	// The digest covers the whole object: when the bytes differ from what was stored, that is
	// the cause to report, whatever broke first.
	if err := drained(counted, h, st.SHA256); err != nil {
		return Decoded{}, err
	}
	switch {
	case copyErr != nil:
		return Decoded{}, fmt.Errorf("%w: %w", ErrCorrupt, copyErr)
	case st.SnapshotSize > 0 && v.Size() != st.SnapshotSize:
		return Decoded{}, fmt.Errorf("%w: the snapshot is not the %d bytes its metadata records (%s): it read %d",
			ErrCorrupt, st.SnapshotSize, metaSnapshotSize, v.Size())
	case v.Size() > limit:
		return Decoded{}, fmt.Errorf("%w: the snapshot, of no recorded size (%s), is larger than the %d bytes this "+
			"restore takes (--max-snapshot-size)", ErrCorrupt, metaSnapshotSize, limit)
	case !v.Verified():
		return Decoded{}, fmt.Errorf("%w: it ended before etcd's trailing hash", ErrCorrupt)
	}
	return Decoded{Size: counted.n, SnapshotSize: v.Size(), SHA256: st.SHA256}, nil
}

// decrypt returns the compressed stream of a backup read from counted (whose bytes h hashes):
// counted itself, or the age stream decrypted with identities when st's codec says so. A
// header no identity opens is the bytes' fault when the digest disagrees (ErrCorrupt), the
// identities' otherwise (ErrDecrypt).
func decrypt(counted *countingReader, h hash.Hash, st Meta, identities []age.Identity) (io.Reader, error) {
	switch st.Codec {
	case "", CodecZstd:
		return counted, nil
	case CodecZstdAge:
	default:
		return nil, fmt.Errorf("%w: codec %q is not one this version reads (%s, %s)", ErrCorrupt, st.Codec, CodecZstd,
			CodecZstdAge)
	}
	p, err := age.Decrypt(counted, identities...)
	if err == nil {
		return p, nil
	}
	if derr := drained(counted, h, st.SHA256); derr != nil {
		return nil, derr
	}
	return nil, decryptError(st, identities, err)
}

// drained reads what is left of counted and checks the whole object's digest against want: a
// broken read is a *SourceError, other bytes than stored ErrCorrupt.
func drained(counted *countingReader, h hash.Hash, want string) error {
	if _, err := io.Copy(io.Discard, counted); err != nil && counted.err == nil {
		counted.err = err
	}
	if counted.err != nil {
		return &SourceError{counted.err}
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return fmt.Errorf("%w: sha256 %s, its metadata says %s: the stored bytes changed after upload", ErrCorrupt, got, want)
	}
	return nil
}

// countingReader counts bytes and keeps the first read error other than EOF.
type countingReader struct {
	r   io.Reader
	n   int64
	err error
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if err != nil && err != io.EOF && c.err == nil {
		c.err = err
	}
	return n, err
}

// errWriter keeps the first write error, to tell a full disk from a corrupt backup.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if err != nil && e.err == nil {
		e.err = err
	}
	return n, err
}
