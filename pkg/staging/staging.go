// Package staging moves snapshots through the JetStream object store bucket where they wait
// between snapshotter and uploader, with bounded memory on both sides and no fixed deadline
// on the transfer as a whole.
//
// Writing (Put) publishes full chunks in the object store's own format with a bound on chunks
// in flight: etcd's client hands the snapshot over in 32 KiB pieces, and ObjectStore.Put
// sends one chunk per Read and any number of them unacknowledged (see Put). Reading does not use ObjectStore.Get:
// Get is a push consumer into a pipe that
// buffers up to 64 MB in the client when the reader is slower than NATS, and it gives the whole
// read the JetStream default timeout (5s) unless the context has a deadline. Read pulls the
// chunks through an ordered consumer, a bounded number of bytes at a time, and checks the
// object's size and SHA-256 digest at the end (the object store's own format, NATS ADR-20).
package staging

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"sync"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/klauspost/compress/zstd"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// Free returns how many bytes the bucket can still take (its MaxBytes less what it holds;
// math.MaxInt64 when it has no limit).
func Free(ctx context.Context, js jetstream.JetStream, bucket string) (int64, error) {
	used, limit, err := Usage(ctx, js, bucket)
	if err != nil {
		return 0, err
	}
	if limit <= 0 {
		return math.MaxInt64, nil
	}
	return max(0, limit-used), nil
}

// Usage returns the bytes the staging bucket holds and its limit (0: none).
func Usage(ctx context.Context, js jetstream.JetStream, bucket string) (used, limit int64, err error) {
	s, err := js.Stream(ctx, "OBJ_"+bucket)
	if err != nil {
		return 0, 0, fmt.Errorf("open bucket %s: %w", bucket, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("bucket %s: %w", bucket, err)
	}
	return int64(info.State.Bytes), max(0, info.Config.MaxBytes), nil
}

// ChunkSize is the size of the staged chunks; below NATS' default max_payload of 1 MiB.
const ChunkSize = 512 << 10

// defaultChunkSize is the object store's chunk size for objects put without one.
const defaultChunkSize = 128 << 10

// ErrCorrupt is returned (wrapped) when a staged object's size or digest does not match.
var ErrCorrupt = errors.New("staged object corrupt")

// MaxInFlight bounds the chunks one Put has sent but not yet seen stored: 8 chunks, 4 MiB,
// which keeps a server that fsyncs every write busy (compressed snapshots need tens of MB/s).
const MaxInFlight = 8

// Put stores r under name in bucket in full chunks, in the object store's own format (NATS
// ADR-20), so ObjectStore.GetInfo, Get and Delete and this package's Reader read it. If r
// fails, nothing is left behind; an object of the same name is replaced.
//
// It does not use ObjectStore.Put: that publishes every chunk through a private JetStream
// context with no limit on publishes in flight (nats.go#1908; nats.c fixed the same in #1022),
// so a large object outruns a server that fsyncs every write (sync_interval: always), fills the
// stream's 128 MiB ingest queue and fails with "429 too many requests". Here at most
// MaxInFlight chunks are unacknowledged; the rest waits in the reader, which for a snapshot is
// etcd's stream.
func Put(ctx context.Context, js jetstream.JetStream, bucket, name, description string,
	r io.Reader) (*jetstream.ObjectInfo, error) {
	return put(ctx, js, bucket, name, description, r, nil)
}

// described is what a put's caller adds to the object once every chunk is stored: its
// metadata, and its digest when the caller hashed the bytes already ("": put hashes them).
type described struct {
	metadata map[string]string
	sha256   []byte
}

// put is Put, with the object's metadata from describe, called once every chunk is stored and
// before the object appears: an error from it leaves nothing, as a failed r does. A describe
// that gives the digest saves hashing the bytes a second time.
func put(ctx context.Context, js jetstream.JetStream, bucket, name, description string, r io.Reader,
	describe func() (described, error)) (*jetstream.ObjectInfo, error) {
	stream, err := js.Stream(ctx, "OBJ_"+bucket)
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", bucket, err)
	}
	metaSubj := metaSubject(bucket, name)
	var old jetstream.ObjectInfo
	if m, err := stream.GetLastMsgForSubject(ctx, metaSubj); err == nil {
		_ = json.Unmarshal(m.Data, &old)
	} else if !errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("look up %s: %w", name, err)
	}

	id := nuid.Next()
	chunkSubj := "$O." + bucket + ".C." + id
	info, err := putChunks(ctx, js, chunkSubj, r, describe == nil)
	if err == nil && describe != nil {
		var d described
		if d, err = describe(); err == nil {
			info.Metadata = d.metadata
			if d.sha256 != nil {
				info.Digest = "SHA-256=" + base64.URLEncoding.EncodeToString(d.sha256)
			} else {
				err = errors.New("stage: no digest of the object's bytes")
			}
		}
	}
	if err == nil {
		info.Name, info.Description, info.Bucket, info.NUID = name, description, bucket, id
		info.Opts = &jetstream.ObjectMetaOptions{ChunkSize: ChunkSize}
		var data []byte
		if data, err = json.Marshal(info); err == nil {
			m := nats.NewMsg(metaSubj)
			m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
			m.Data = data
			_, err = js.PublishMsg(ctx, m)
		}
	}
	if err != nil {
		_ = stream.Purge(context.WithoutCancel(ctx), jetstream.WithPurgeSubject(chunkSubj))
		return nil, err
	}
	info.ModTime = time.Now().UTC()
	if old.NUID != "" && old.NUID != id {
		_ = stream.Purge(ctx, jetstream.WithPurgeSubject("$O."+bucket+".C."+old.NUID))
	}
	return info, nil
}

func metaSubject(bucket, name string) string {
	return "$O." + bucket + ".M." + base64.URLEncoding.EncodeToString([]byte(name))
}

// Metadata returns the metadata of the object called name, or nil when there is none (never
// put, deleted, or a put that has not finished: an object appears only whole).
func Metadata(ctx context.Context, js jetstream.JetStream, bucket, name string) (map[string]string, error) {
	stream, err := js.Stream(ctx, "OBJ_"+bucket)
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", bucket, err)
	}
	m, err := stream.GetLastMsgForSubject(ctx, metaSubject(bucket, name))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up %s: %w", name, err)
	}
	var info jetstream.ObjectInfo
	if err := json.Unmarshal(m.Data, &info); err != nil {
		return nil, fmt.Errorf("staged object %s: %w", name, err)
	}
	if info.Deleted {
		return nil, nil
	}
	if info.Metadata == nil {
		info.Metadata = map[string]string{}
	}
	return info.Metadata, nil
}

// PutCompressed compresses raw (about size bytes, 0: not known; backupformat) as it streams, encrypts it when seal has
// recipients, and stores the result under name, as Put does: what is staged is the backup as
// it will be stored. One goroutine reads raw and compresses, the caller's stages, so the
// source (etcd's snapshot stream) is read as fast as the compressor takes it. It returns the
// stored size, sha256 and codec in the Writer.
//
// record, when set, is called with the Writer once everything is compressed and stored, before
// the object appears; what it returns is the object's metadata (Metadata), and an error from
// it (the source's check failed) leaves no object.
func PutCompressed(ctx context.Context, js jetstream.JetStream, bucket, name, description string, raw io.Reader,
	size int64, level zstd.EncoderLevel, concurrency int, seal backupformat.Encryption,
	record func(*backupformat.Writer) (map[string]string, error)) (*backupformat.Writer, error) {
	pr, pw := io.Pipe()
	var enc *backupformat.Writer
	done := make(chan error, 1)
	go func() {
		// Made here, not before Put reads: an encrypting writer writes its header at once,
		// and the pipe holds nothing until Put reads it.
		var err error
		if enc, err = backupformat.NewSizedSealingWriter(pw, level, concurrency, seal, size); err == nil {
			_, err = enc.ReadFrom(raw)
			if cerr := enc.Close(); err == nil {
				err = cerr
			}
		}
		pw.CloseWithError(err) // nil: Put reads io.EOF
		done <- err
	}()
	// The compressor's own result, once it has closed the pipe: before the object appears
	// (record needs the Writer's sums) or after a failed put.
	finish := sync.OnceValue(func() error { return <-done })
	// The Writer hashed exactly the bytes put read from the pipe: its sum is the object's
	// digest, and they are not hashed again.
	_, err := put(ctx, js, bucket, name, description, pr, func() (described, error) {
		if err := finish(); err != nil {
			return described{}, err
		}
		d := described{sha256: enc.Sum()}
		if record != nil {
			var err error
			d.metadata, err = record(enc)
			return d, err
		}
		return d, nil
	})
	pr.CloseWithError(err) // a failed Put unblocks the compressor
	if ferr := finish(); err == nil {
		err = ferr
	}
	if err != nil {
		return nil, err
	}
	return enc, nil
}

// putChunks publishes r in full ChunkSize chunks on subj, at most MaxInFlight unacknowledged,
// and returns the object's size, chunk count and, when hash is set, digest.
func putChunks(ctx context.Context, js jetstream.JetStream, subj string, r io.Reader,
	hash bool) (*jetstream.ObjectInfo, error) {
	p := &chunkPublisher{js: js, subj: subj, info: &jetstream.ObjectInfo{}}
	if hash {
		p.digest = sha256.New()
	}
	for {
		buf := p.buffer()
		n, readErr := io.ReadFull(r, buf)
		if n > 0 {
			if err := p.publish(ctx, buf, n); err != nil {
				return nil, err
			}
		}
		if errors.Is(readErr, io.EOF) || errors.Is(readErr, io.ErrUnexpectedEOF) {
			break
		}
		if readErr != nil {
			return nil, readErr
		}
	}
	for len(p.inFlight) > 0 {
		if err := p.settle(ctx); err != nil {
			return nil, err
		}
	}
	if p.digest != nil {
		p.info.Digest = jetstream.GetObjectDigestValue(p.digest)
	}
	return p.info, nil
}

// chunkPublisher is one putChunks under way: the chunks in flight and the buffers they free.
type chunkPublisher struct {
	js       jetstream.JetStream
	subj     string
	digest   hash.Hash
	info     *jetstream.ObjectInfo
	inFlight []sentChunk
	free     [][]byte
}

type sentChunk struct {
	ack jetstream.PubAckFuture
	buf []byte
}

// buffer returns a free chunk buffer, or a new one.
func (p *chunkPublisher) buffer() []byte {
	if n := len(p.free); n > 0 {
		buf := p.free[n-1]
		p.free = p.free[:n-1]
		return buf
	}
	return make([]byte, ChunkSize)
}

// publish publishes buf[:n] as the next chunk, settling the oldest when MaxInFlight are out.
func (p *chunkPublisher) publish(ctx context.Context, buf []byte, n int) error {
	if p.digest != nil {
		p.digest.Write(buf[:n])
	}
	m := nats.NewMsg(p.subj)
	m.Data = buf[:n]
	ack, err := p.js.PublishMsgAsync(m)
	if err != nil {
		return fmt.Errorf("stage chunk %d: %w", p.info.Chunks, err)
	}
	p.inFlight = append(p.inFlight, sentChunk{ack, buf})
	p.info.Chunks++
	p.info.Size += uint64(n)
	if len(p.inFlight) >= MaxInFlight {
		return p.settle(ctx)
	}
	return nil
}

// settle waits for the oldest chunk's acknowledgement and frees its buffer.
func (p *chunkPublisher) settle(ctx context.Context) error {
	s := p.inFlight[0]
	p.inFlight = p.inFlight[1:]
	p.free = append(p.free, s.buf)
	select {
	case <-s.ack.Ok():
		return nil
	case err := <-s.ack.Err():
		return fmt.Errorf("stage a chunk: %w", err)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Reader reads one staged object. Close it.
type Reader struct {
	info    *jetstream.ObjectInfo
	js      jetstream.JetStream
	stream  string
	cons    jetstream.Consumer
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
func Open(ctx context.Context, js jetstream.JetStream, bucket, name string, maxBytes int,
	idle time.Duration) (*Reader, error) {
	obs, err := js.ObjectStore(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", bucket, err)
	}
	info, err := obs.GetInfo(ctx, name)
	if err != nil {
		return nil, err
	}
	r := &Reader{info: info, js: js, stream: "OBJ_" + bucket, ctx: ctx, idle: idle, digest: sha256.New()}
	if info.Size == 0 {
		r.done = true
		return r, r.check()
	}
	cons, err := js.OrderedConsumer(ctx, r.stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{fmt.Sprintf("$O.%s.C.%s", bucket, info.NUID)},
		// Close deletes the consumer; this bounds one a crashed reader leaves behind.
		InactiveThreshold: ConsumerInactiveThreshold,
	})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	r.cons = cons
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

// ConsumerInactiveThreshold is how long the server keeps the consumer of a Reader that was
// never closed (its process died); nats.go's default for ordered consumers is 5 minutes, long
// enough for a busy uploader to pile up the stream's consumers to the server's limit.
const ConsumerInactiveThreshold = 30 * time.Second

// Close stops reading and deletes the server-side consumer, so no consumer outlives its read.
func (r *Reader) Close() error {
	if r.iter == nil || r.stopped {
		return nil
	}
	r.stopped = true
	r.iter.Stop()
	// The ordered consumer's current server-side consumer (it re-creates one on a gap).
	info := r.cons.CachedInfo()
	if info == nil {
		return nil
	}
	name := info.Name
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.ctx), 5*time.Second)
	defer cancel()
	if err := r.js.DeleteConsumer(ctx, r.stream, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("delete staging consumer %s: %w", name, err)
	}
	return nil
}
