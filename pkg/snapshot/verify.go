// Package snapshot checks etcd snapshot streams as they pass, without holding them in memory.
package snapshot

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
)

// HashSize is the length of the sha256 that etcd appends to every snapshot stream.
const HashSize = sha256.Size

// ErrCorrupt is returned (wrapped) when a snapshot's trailing hash or size is wrong.
var ErrCorrupt = errors.New("corrupt snapshot")

// Verifier passes a snapshot stream through unchanged while it checks it: etcd ends the
// stream with the sha256 of everything before it, and a valid snapshot is n*512+32 bytes.
// When the wrapped reader reports io.EOF, Verifier returns an error wrapping ErrCorrupt instead
// if either check fails, so a consumer that stops on the first error never takes a corrupt
// snapshot for a complete one. Memory use is constant.
type Verifier struct {
	r     io.Reader
	h     hash.Hash
	tail  [HashSize]byte
	tailN int
	size  int64
	done  bool
	err   error
}

// NewVerifier returns a Verifier reading from r.
func NewVerifier(r io.Reader) *Verifier {
	return &Verifier{r: r, h: sha256.New()}
}

// Read implements io.Reader.
func (v *Verifier) Read(p []byte) (int, error) {
	if v.done {
		if v.err != nil {
			return 0, v.err
		}
		return 0, io.EOF
	}
	n, err := v.r.Read(p)
	if n > 0 {
		v.consume(p[:n])
	}
	if errors.Is(err, io.EOF) {
		v.done = true
		v.err = v.check()
		if v.err != nil {
			return n, v.err
		}
	}
	return n, err
}

// consume hashes everything but the last HashSize bytes seen so far, which it keeps.
func (v *Verifier) consume(data []byte) {
	v.size += int64(len(data))
	if len(data) >= HashSize {
		v.h.Write(v.tail[:v.tailN])
		v.h.Write(data[:len(data)-HashSize])
		v.tailN = copy(v.tail[:], data[len(data)-HashSize:])
		return
	}
	var buf [2 * HashSize]byte
	joined := append(append(buf[:0], v.tail[:v.tailN]...), data...)
	if over := len(joined) - HashSize; over > 0 {
		v.h.Write(joined[:over])
		joined = joined[over:]
	}
	v.tailN = copy(v.tail[:], joined)
}

func (v *Verifier) check() error {
	if v.size < HashSize || (v.size-HashSize)%512 != 0 {
		return fmt.Errorf("%w: size %d is not n*512+%d", ErrCorrupt, v.size, HashSize)
	}
	if got := v.h.Sum(nil); !bytes.Equal(got, v.tail[:]) {
		return fmt.Errorf("%w: sha256 of the data is %x, the trailer says %x", ErrCorrupt, got, v.tail[:])
	}
	return nil
}

// Size is the number of bytes read so far, trailer included.
func (v *Verifier) Size() int64 { return v.size }

// Verified reports whether the whole stream was read and both checks passed.
func (v *Verifier) Verified() bool { return v.done && v.err == nil }

// SHA256 is etcd's trailing hash, hex; valid once Verified.
func (v *Verifier) SHA256() string { return hex.EncodeToString(v.tail[:v.tailN]) }
