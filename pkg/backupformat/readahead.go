package backupformat

import (
	"io"
	"sync"
)

// Read-ahead of Writer.ReadFrom: 4 buffers of 256 KiB, 1 MiB in all.
const (
	readAheadBuffers = 4
	readAheadSize    = 256 << 10
)

// readAhead reads its source in a goroutine into a few buffers the consumer takes in order.
type readAhead struct {
	full  chan []byte
	free  chan []byte
	stop  chan struct{}
	done  chan struct{}
	err   error // the source's error (io.EOF at the end), valid once full is closed
	cur   []byte
	taken []byte // the buffer cur is a slice of, returned to free when drained
	once  sync.Once
}

func newReadAhead(r io.Reader, n, size int) *readAhead {
	ra := &readAhead{full: make(chan []byte, n), free: make(chan []byte, n), stop: make(chan struct{}),
		done: make(chan struct{})}
	for range n {
		ra.free <- make([]byte, size)
	}
	go ra.fill(r)
	return ra
}

func (ra *readAhead) fill(r io.Reader) {
	defer close(ra.done)
	defer close(ra.full)
	for {
		var buf []byte
		select {
		case buf = <-ra.free:
		case <-ra.stop:
			return
		}
		n, err := io.ReadFull(r, buf[:cap(buf)])
		if n > 0 {
			select {
			case ra.full <- buf[:n]:
			case <-ra.stop:
				return
			}
		}
		if err == io.ErrUnexpectedEOF {
			err = io.EOF
		}
		if err != nil {
			ra.err = err
			return
		}
	}
}

// Read implements io.Reader.
func (ra *readAhead) Read(p []byte) (int, error) {
	for len(ra.cur) == 0 {
		if ra.taken != nil {
			ra.free <- ra.taken[:cap(ra.taken)]
			ra.taken = nil
		}
		buf, ok := <-ra.full
		if !ok {
			return 0, ra.err
		}
		ra.cur, ra.taken = buf, buf
	}
	n := copy(p, ra.cur)
	ra.cur = ra.cur[n:]
	return n, nil
}

// Close stops the reading goroutine and waits for it (it may be blocked in the source's Read
// until that returns).
func (ra *readAhead) Close() error {
	ra.once.Do(func() { close(ra.stop) })
	<-ra.done
	return nil
}
