// Package staging moves snapshots through the JetStream object store bucket where they wait
// between snapshotter and uploader, with bounded memory on both sides and no fixed deadline
// on the transfer as a whole.
//
// Writing uses ObjectStore.Put with full chunks: etcd's client hands the snapshot over in
// 32 KiB pieces, and Put sends one chunk per Read, so without help every chunk would be a
// quarter full. Reading does not use ObjectStore.Get: Get is a push consumer into a pipe that
// buffers up to 64 MB in the client when the reader is slower than NATS, and it gives the whole
// read the JetStream default timeout (5s) unless the context has a deadline. Read pulls the
// chunks through an ordered consumer, a bounded number of bytes at a time, and checks the
// object's size and SHA-256 digest at the end (the object store's own format, NATS ADR-20).
package staging

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ChunkSize is the size of the staged chunks; below NATS' default max_payload of 1 MiB.
const ChunkSize = 512 << 10

// defaultChunkSize is the object store's chunk size for objects put without one.
const defaultChunkSize = 128 << 10

// ErrCorrupt is returned (wrapped) when a staged object's size or digest does not match.
var ErrCorrupt = errors.New("staged object corrupt")

// Put stores r under name in obs in full chunks. If r fails, nothing is left behind.
func Put(ctx context.Context, obs jetstream.ObjectStore, name, description string, r io.Reader) (*jetstream.ObjectInfo, error) {
	meta := jetstream.ObjectMeta{Name: name, Description: description, Opts: &jetstream.ObjectMetaOptions{ChunkSize: ChunkSize}}
	return obs.Put(ctx, meta, fullReader{r})
}

// fullReader fills every Read completely unless the stream ends.
type fullReader struct{ r io.Reader }

func (f fullReader) Read(p []byte) (int, error) {
	n, err := io.ReadFull(f.r, p)
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return n, io.EOF
	}
	return n, err
}

// Reader reads one staged object. Close it.
type Reader struct {
	info    *jetstream.ObjectInfo
	iter    jetstream.MessagesContext
	ctx     context.Context
	idle    time.Duration
	buf     []byte
	read    uint64
	digest  hash.Hash
	done    bool
	stopped bool
}

// Open returns a Reader of the object name in bucket. At most maxBytes of chunks (at least
// one chunk) are in flight to the client; a chunk that does not arrive within idle is an error.
func Open(ctx context.Context, js jetstream.JetStream, bucket, name string, maxBytes int, idle time.Duration) (*Reader, error) {
	obs, err := js.ObjectStore(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", bucket, err)
	}
	info, err := obs.GetInfo(ctx, name)
	if err != nil {
		return nil, err
	}
	r := &Reader{info: info, ctx: ctx, idle: idle, digest: sha256.New()}
	if info.Size == 0 {
		r.done = true
		return r, r.check()
	}
	cons, err := js.OrderedConsumer(ctx, "OBJ_"+bucket, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{fmt.Sprintf("$O.%s.C.%s", bucket, info.NUID)},
	})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	// Bound the chunks in flight by count: a byte budget that a whole number of chunks does
	// not fill (chunks carry a subject and headers) leaves the pull waiting for its expiry.
	chunk := defaultChunkSize
	if info.Opts != nil && info.Opts.ChunkSize > 0 {
		chunk = int(info.Opts.ChunkSize)
	}
	r.iter, err = cons.Messages(jetstream.PullMaxMessages(max(1, maxBytes/chunk)))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return r, nil
}

// Info describes the object being read.
func (r *Reader) Info() *jetstream.ObjectInfo { return r.info }

// Read implements io.Reader. At the end of the object it returns io.EOF if the size and
// digest match, an error wrapping ErrCorrupt if not.
func (r *Reader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.done {
			return 0, io.EOF
		}
		ctx, cancel := context.WithTimeout(r.ctx, r.idle)
		msg, err := r.iter.Next(jetstream.NextContext(ctx))
		cancel()
		if err != nil {
			return 0, fmt.Errorf("read staged %s at byte %d of %d: %w", r.info.Name, r.read, r.info.Size, err)
		}
		r.buf = msg.Data()
		r.digest.Write(r.buf)
		r.read += uint64(len(r.buf))
		if r.read >= r.info.Size {
			r.done = true
			if err := r.check(); err != nil {
				return 0, err
			}
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (r *Reader) check() error {
	if r.read != r.info.Size {
		return fmt.Errorf("%w: %s has %d bytes, its info says %d", ErrCorrupt, r.info.Name, r.read, r.info.Size)
	}
	if got := jetstream.GetObjectDigestValue(r.digest); got != r.info.Digest {
		return fmt.Errorf("%w: %s digest %s, its info says %s", ErrCorrupt, r.info.Name, got, r.info.Digest)
	}
	return nil
}

// Close stops the consumer.
func (r *Reader) Close() error {
	if r.iter != nil && !r.stopped {
		r.stopped = true
		r.iter.Stop()
	}
	return nil
}
