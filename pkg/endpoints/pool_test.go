package endpoints

import (
	"bytes"
	"testing"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

func TestReusedPoolHandsOutWhatWasReturned(t *testing.T) {
	p := &reusedPool{}
	for _, n := range []int{1, 9, 16 << 10, 32<<10 + 17, 1 << 20, 4 << 20} {
		b := p.Get(n)
		if len(*b) != n || cap(*b) < n || cap(*b) >= 2*max(n, 1) {
			t.Fatalf("Get(%d): len %d cap %d, want len %d and a cap of the next power of two", n, len(*b), cap(*b), n)
		}
	}
	// A returned buffer comes back with its bytes as they were: nothing is cleared. sync.Pool
	// may drop what it holds (a collection), so the test looks for one reuse among a few tries.
	reused := false
	for range 10 {
		b := p.Get(32 << 10)
		(*b)[0], (*b)[len(*b)-1] = 0xAB, 0xCD
		p.Put(b)
		c := p.Get(30 << 10)
		if &(*c)[0] == &(*b)[0] {
			reused = true
			if (*c)[0] != 0xAB || (*c)[:cap(*c)][32<<10-1] != 0xCD {
				t.Fatalf("a reused buffer was changed: %x %x", (*c)[0], (*c)[:cap(*c)][32<<10-1])
			}
			break
		}
	}
	if !reused {
		t.Fatal("no buffer was reused in 10 tries")
	}
	// Too large to pool, and odd capacities, are not kept.
	big := p.Get(8 << 20)
	if len(*big) != 8<<20 {
		t.Fatalf("Get(8 MiB): len %d", len(*big))
	}
	p.Put(big)
	odd := make([]byte, 100)
	p.Put(&odd)
	if got := p.Get(100); cap(*got) != 128 {
		t.Fatalf("Get(100) after putting a 100-byte buffer: cap %d, want 128 (odd sizes are not pooled)", cap(*got))
	}
}

// The codec reads a message split over several buffers, as gRPC hands over one that spans
// frames, and refuses what is not a protobuf message.
func TestReusingCodecJoinsFrames(t *testing.T) {
	c := reusingCodec{pool: &reusedPool{}}
	want := &etcdserverpb.SnapshotResponse{RemainingBytes: 7, Blob: bytes.Repeat([]byte("etcd"), 10000), Version: "3.6.0"}
	data, err := c.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	raw := data.Materialize()
	var split mem.BufferSlice
	for off := 0; off < len(raw); off += 16 << 10 {
		split = append(split, mem.SliceBuffer(raw[off:min(off+16<<10, len(raw))]))
	}
	var got etcdserverpb.SnapshotResponse
	if err := c.Unmarshal(split, &got); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&got, want) {
		t.Fatalf("got %d bytes of blob, version %q, want %d, %q", len(got.Blob), got.Version, len(want.Blob), want.Version)
	}
	if err := c.Unmarshal(split, struct{}{}); err == nil {
		t.Fatal("a struct{} was unmarshalled")
	}
}
