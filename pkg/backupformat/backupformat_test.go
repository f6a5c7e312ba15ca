package backupformat

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"runtime"
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
	d, err := Open(iotest.OneByteReader(bytes.NewReader(stored)), Meta{SHA256: w.SHA256()}, nil, &out, 0)
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
			_, err := Open(bytes.NewReader(tc.stored), Meta{SHA256: tc.want}, nil, io.Discard, 0)
			if err == nil || !tc.is(err) {
				t.Fatalf("Open = %v", err)
			}
		})
	}
	// The snapshot's recorded size bounds what is written: an object whose metadata
	// understates it is refused after at most one byte more, and one that overstates it too.
	snap := fakeSnapshot(64)
	n := int64(len(snap))
	for _, tc := range []struct {
		name          string
		recorded, max int64 // max 0: the default bound
		ok            bool
		wrote         int64 // at most
	}{
		{"the recorded size", n, 0, true, n},
		{"not recorded", 0, 0, true, n},
		{"a smaller recorded size", n / 2, 0, false, n/2 + 1},
		{"a larger recorded size", n + 1, 0, false, n + 1},
		// Missing metadata never lifts the bound; a recorded size above it is refused unread.
		{"not recorded, within the bound", 0, n, true, n},
		{"not recorded, beyond the bound", 0, n / 2, false, n/2 + 1},
		{"recorded beyond the bound", n, n - 1, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stored, w := encode(t, snap)
			var out countWriter
			_, err := Open(bytes.NewReader(stored), Meta{SHA256: w.SHA256(), SnapshotSize: tc.recorded}, nil, &out, tc.max)
			if tc.ok != (err == nil) || !tc.ok && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open with %d recorded of %d, bound %d = %v", tc.recorded, n, tc.max, err)
			}
			if out.n > tc.wrote {
				t.Fatalf("wrote %d bytes, want at most %d", out.n, tc.wrote)
			}
		})
	}
	t.Run("a broken download is the source's fault", func(t *testing.T) {
		_, err := Open(io.MultiReader(bytes.NewReader(good[:10]), iotest.ErrReader(io.ErrClosedPipe)),
			Meta{SHA256: w.SHA256()}, nil, io.Discard, 0)
		var se *SourceError
		if !errors.As(err, &se) || errors.Is(err, ErrCorrupt) {
			t.Fatalf("Open = %v, want a SourceError", err)
		}
	})
	t.Run("a failing sink is the sink's fault", func(t *testing.T) {
		_, err := Open(bytes.NewReader(good), Meta{SHA256: w.SHA256()}, nil, failingWriter{}, 0)
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

// A small or unknown input gets the encoder that allocates least (a burst of small snapshots);
// a large one the encoder whose history moves once per window, for its 2 MiB more.
func TestEncoderMemoryFollowsTheInputSize(t *testing.T) {
	allocated := func(size int64) uint64 {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		w, err := NewSizedSealingWriter(io.Discard, Level, 1, Encryption{}, size)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(make([]byte, 256<<10)); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}
	small, unknown, large := allocated(1<<20), allocated(0), allocated(LargeInput)
	if large < small+(2<<20) || large < unknown+(2<<20) {
		t.Fatalf("allocated %d bytes for a large input, %d for a small and %d for an unknown one: want the large one's "+
			"at least 2 MiB more", large, small, unknown)
	}
}
