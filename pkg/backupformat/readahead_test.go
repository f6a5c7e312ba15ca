package backupformat

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

func TestReadAhead(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 10000)
	for name, src := range map[string]func() io.Reader{
		"whole":        func() io.Reader { return bytes.NewReader(data) },
		"one byte":     func() io.Reader { return iotest.OneByteReader(bytes.NewReader(data)) },
		"data and EOF": func() io.Reader { return iotest.DataErrReader(bytes.NewReader(data)) },
	} {
		t.Run(name, func(t *testing.T) {
			ra := newReadAhead(src(), 3, 1000)
			defer ra.Close()
			got, err := io.ReadAll(iotest.HalfReader(ra))
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("read %d of %d bytes, err %v", len(got), len(data), err)
			}
		})
	}
	t.Run("the source's error comes after its data", func(t *testing.T) {
		boom := errors.New("boom")
		ra := newReadAhead(io.MultiReader(bytes.NewReader(data[:2500]), iotest.ErrReader(boom)), 2, 1000)
		defer ra.Close()
		got, err := io.ReadAll(ra)
		if !errors.Is(err, boom) || !bytes.Equal(got, data[:2500]) {
			t.Fatalf("read %d bytes, err %v", len(got), err)
		}
	})
	t.Run("closing early stops the reader", func(t *testing.T) {
		ra := newReadAhead(bytes.NewReader(data), 2, 1000)
		if _, err := io.ReadFull(ra, make([]byte, 10)); err != nil {
			t.Fatal(err)
		}
		ra.Close() // returns: the filling goroutine is not left blocked on a full channel
	})
}
