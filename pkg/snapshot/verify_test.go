package snapshot

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// fake builds a stream shaped like etcd's: data followed by its sha256.
func fake(size int) []byte {
	data := bytes.Repeat([]byte("etcd"), size/4+1)[:size]
	sum := sha256.Sum256(data)
	return append(data, sum[:]...)
}

func TestVerifier(t *testing.T) {
	good := fake(4096 * 3)
	flipped := bytes.Clone(good)
	flipped[100] ^= 1
	badTrailer := bytes.Clone(good)
	badTrailer[len(badTrailer)-1] ^= 1
	tests := []struct {
		name    string
		stream  []byte
		reader  func(io.Reader) io.Reader
		wantErr bool
	}{
		{"valid stream", good, nil, false},
		{"valid stream read one byte at a time", good, iotest.OneByteReader, false},
		{"valid stream read in halves", good, iotest.HalfReader, false},
		{"flipped data byte", flipped, nil, true},
		{"flipped trailer byte", badTrailer, nil, true},
		{"truncated stream", good[:len(good)-1], nil, true},
		{"size not n*512+32", fake(1000), nil, true},
		{"empty", nil, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var r io.Reader = bytes.NewReader(tc.stream)
			if tc.reader != nil {
				r = tc.reader(r)
			}
			v := NewVerifier(r)
			var out bytes.Buffer
			_, err := io.Copy(&out, v)
			if tc.wantErr {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("err = %v, want ErrCorrupt", err)
				}
				if v.Verified() {
					t.Fatal("Verified() true for a bad stream")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), tc.stream) {
				t.Fatal("verifier changed the bytes passing through")
			}
			sum := sha256.Sum256(tc.stream[:len(tc.stream)-HashSize])
			if !v.Verified() || v.SHA256() != hex.EncodeToString(sum[:]) || v.Size() != int64(len(tc.stream)) {
				t.Fatalf("verified=%v sha=%s size=%d", v.Verified(), v.SHA256(), v.Size())
			}
		})
	}
}

func FuzzVerifier(f *testing.F) {
	f.Add(fake(512), 7)
	f.Add([]byte("short"), 1)
	f.Fuzz(func(t *testing.T, stream []byte, chunk int) {
		if chunk <= 0 {
			chunk = 1
		}
		v := NewVerifier(iotest.DataErrReader(&chunked{b: stream, n: chunk}))
		out, err := io.ReadAll(v)
		if !bytes.Equal(out, stream) {
			t.Fatal("bytes changed")
		}
		valid := len(stream) >= HashSize && (len(stream)-HashSize)%512 == 0
		if valid {
			sum := sha256.Sum256(stream[:len(stream)-HashSize])
			valid = bytes.Equal(sum[:], stream[len(stream)-HashSize:])
		}
		if valid != (err == nil) {
			t.Fatalf("valid=%v err=%v", valid, err)
		}
	})
}

type chunked struct {
	b []byte
	n int
}

func (c *chunked) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), c.n)], c.b)
	c.b = c.b[n:]
	return n, nil
}
