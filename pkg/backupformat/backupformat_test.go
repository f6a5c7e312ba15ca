package backupformat

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

// fakeSnapshot is shaped like etcd's stream: n*512 bytes of data and their sha256.
func fakeSnapshot(blocks int) []byte {
	data := bytes.Repeat([]byte("etcd-kv-"), blocks*64)[:blocks*512]
	sum := sha256.Sum256(data)
	return append(data, sum[:]...)
}

func encode(t *testing.T, snap []byte) ([]byte, *Writer) {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, Level, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.ReadFrom(iotest.HalfReader(bytes.NewReader(snap))); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), w
}

func TestWriterAndOpen(t *testing.T) {
	snap := fakeSnapshot(2048)
	stored, w := encode(t, snap)
	if w.Size() != int64(len(stored)) {
		t.Fatalf("Size = %d, wrote %d", w.Size(), len(stored))
	}
	sum := sha256.Sum256(stored)
	if w.SHA256() != hexOf(sum[:]) {
		t.Fatalf("SHA256 = %s, the bytes' is %x", w.SHA256(), sum)
	}
	if len(stored) >= len(snap)/4 {
		t.Fatalf("stored %d bytes of a %d-byte repetitive snapshot: not compressed", len(stored), len(snap))
	}
	var out bytes.Buffer
	d, err := Open(iotest.OneByteReader(bytes.NewReader(stored)), Meta{SHA256: w.SHA256()}, nil, &out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(),
		snap) || d.Size != int64(len(stored)) || d.SnapshotSize != int64(len(snap)) || d.SHA256 != w.SHA256() {
		t.Fatalf("Open = %+v, %d bytes out", d, out.Len())
	}
}

func hexOf(b []byte) string { return hex.EncodeToString(b) }

func TestDecodeRefuses(t *testing.T) {
	good, w := encode(t, fakeSnapshot(64))
	flipped := bytes.Clone(good)
	flipped[len(flipped)/2] ^= 1
	// A snapshot whose own trailing hash is wrong, stored with a matching object digest.
	badSnap := fakeSnapshot(64)
	badSnap[len(badSnap)-1] ^= 1
	badStored, bw := encode(t, badSnap)
	for _, tc := range []struct {
		name   string
		stored []byte
		want   string
		is     func(error) bool
	}{
		{"a flipped stored byte", flipped, w.SHA256(), func(err error) bool { return errors.Is(err, ErrCorrupt) }},
		{"a truncated object", good[:len(good)-5], w.SHA256(), func(err error) bool { return errors.Is(err, ErrCorrupt) }},
		{"no digest to check against", good, "", func(err error) bool { return errors.Is(err, ErrCorrupt) }},
		{"etcd's trailing hash wrong", badStored, bw.SHA256(), func(err error) bool { return errors.Is(err, ErrCorrupt) }},
		{"not zstd", bytes.Repeat([]byte{1}, 100), hexOf(func() []byte {
			s := sha256.Sum256(bytes.Repeat([]byte{1},
				100))
			return s[:]
		}()), func(err error) bool { return errors.Is(err, ErrCorrupt) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Open(bytes.NewReader(tc.stored), Meta{SHA256: tc.want}, nil, io.Discard)
			if err == nil || !tc.is(err) {
				t.Fatalf("Open = %v", err)
			}
		})
	}
	// The snapshot's recorded size bounds what is written: an object whose metadata
	// understates it is refused after at most one byte more, and one that overstates it too.
	snap := fakeSnapshot(64)
	for _, tc := range []struct {
		name     string
		recorded int64
		ok       bool
	}{
		{"the recorded size", int64(len(snap)), true},
		{"not recorded", 0, true},
		{"a smaller recorded size", int64(len(snap)) / 2, false},
		{"a larger recorded size", int64(len(snap)) + 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stored, w := encode(t, snap)
			var out countWriter
			_, err := Open(bytes.NewReader(stored), Meta{SHA256: w.SHA256(), SnapshotSize: tc.recorded}, nil, &out)
			if tc.ok != (err == nil) || !tc.ok && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open with %d recorded of %d = %v", tc.recorded, len(snap), err)
			}
			if tc.recorded > 0 && out.n > tc.recorded+1 {
				t.Fatalf("wrote %d bytes of a snapshot recorded as %d", out.n, tc.recorded)
			}
		})
	}
	t.Run("a broken download is the source's fault", func(t *testing.T) {
		_, err := Open(io.MultiReader(bytes.NewReader(good[:10]), iotest.ErrReader(io.ErrClosedPipe)),
			Meta{SHA256: w.SHA256()}, nil, io.Discard)
		var se *SourceError
		if !errors.As(err, &se) || errors.Is(err, ErrCorrupt) {
			t.Fatalf("Open = %v, want a SourceError", err)
		}
	})
	t.Run("a failing sink is the sink's fault", func(t *testing.T) {
		_, err := Open(bytes.NewReader(good), Meta{SHA256: w.SHA256()}, nil, failingWriter{})
		var se *SinkError
		if !errors.As(err, &se) || errors.Is(err, ErrCorrupt) {
			t.Fatalf("Open = %v, want a SinkError", err)
		}
	})
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, io.ErrShortWrite }

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }
