package journal_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/journal"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func revisions(from, to int64) []*etcdbackupv1.JournalRevision {
	t0 := time.Date(2026, 12, 5, 14, 3, 0, 0, time.UTC)
	var out []*etcdbackupv1.JournalRevision
	for r := from; r <= to; r++ {
		rev := &etcdbackupv1.JournalRevision{Revision: r, Time: timestamppb.New(t0.Add(time.Duration(r) * time.Millisecond)),
			Events: []*etcdbackupv1.JournalEvent{{Key: []byte("/registry/a"), Value: []byte("v"), CreateRevision: 1,
				Version: r}}}
		if r%3 == 0 {
			rev.Events = append(rev.Events, &etcdbackupv1.JournalEvent{Key: []byte("/registry/b"), Delete: true})
		}
		if r%5 == 0 {
			rev.Events[0].Lease = r
			rev.Leases = []*etcdbackupv1.JournalLease{{Id: r, TtlSeconds: 3600}}
		}
		out = append(out, rev)
	}
	return out
}

func sealed(t testing.TB, revs []*etcdbackupv1.JournalRevision, e backupformat.Encryption) ([]byte, journal.Meta) {
	t.Helper()
	var buf bytes.Buffer
	m, err := journal.Write(&buf, revs, e)
	if err != nil {
		t.Fatal(err)
	}
	// Through the metadata, as a restore reads it from the bucket.
	back, err := journal.ParseMeta(m.Map())
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), back
}

func TestSegmentRoundTrip(t *testing.T) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	enc, err := backupformat.ParseRecipients(id.Recipient().String())
	if err != nil {
		t.Fatal(err)
	}
	revs := revisions(101, 250)
	for name, e := range map[string]backupformat.Encryption{"plain": {}, "encrypted": enc} {
		t.Run(name, func(t *testing.T) {
			stored, m := sealed(t, revs, e)
			if m.First != 101 || m.Last != 250 || m.Events != 200 || m.Stored.Codec != e.Codec() {
				t.Fatalf("record %+v", m)
			}
			got, err := journal.Read(stored, m, []age.Identity{id})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(revs) {
				t.Fatalf("%d revisions back, want %d", len(got), len(revs))
			}
			for i := range got {
				if !proto.Equal(got[i], revs[i]) {
					t.Fatalf("revision %d: %v, want %v", i, got[i], revs[i])
				}
			}
			for i := range stored {
				changed := bytes.Clone(stored)
				changed[i] ^= 0x20
				if _, err := journal.Read(changed, m, []age.Identity{id}); !errors.Is(err, journal.ErrCorrupt) {
					t.Fatalf("byte %d changed: %v, want ErrCorrupt", i, err)
				}
			}
		})
	}
	t.Run("encrypted, without its identity", func(t *testing.T) {
		stored, m := sealed(t, revs, enc)
		if _, err := journal.Read(stored, m, nil); !errors.Is(err, backupformat.ErrDecrypt) {
			t.Fatalf("read without identity: %v, want ErrDecrypt", err)
		}
	})
}

func TestSegmentRecordMustMatch(t *testing.T) {
	stored, m := sealed(t, revisions(10, 20), backupformat.Encryption{})
	for name, change := range map[string]func(*journal.Meta){
		"other revisions": func(m *journal.Meta) { m.First, m.Last = 11, 21 },
		"fewer events":    func(m *journal.Meta) { m.Events-- },
		"other times":     func(m *journal.Meta) { m.LastTime = m.LastTime.Add(time.Second) },
	} {
		t.Run(name, func(t *testing.T) {
			m := m
			change(&m)
			if _, err := journal.Read(stored, m, nil); !errors.Is(err, journal.ErrCorrupt) {
				t.Fatalf("read: %v, want ErrCorrupt", err)
			}
		})
	}
	md := m.Map()
	for key, value := range map[string]string{
		"Journal-First-Revision": "x", "Journal-Last-Revision": "5", "Journal-Last-Time": "yesterday",
		"Etcd-Hashkv": "19:1:2", "Sha256": "",
	} {
		t.Run("metadata "+key+"="+value, func(t *testing.T) {
			bad := map[string]string{}
			for k, v := range md {
				bad[k] = v
			}
			bad[key] = value
			if _, err := journal.ParseMeta(bad); !errors.Is(err, journal.ErrCorrupt) {
				t.Fatalf("ParseMeta: %v, want ErrCorrupt", err)
			}
		})
	}
}

func TestWriteRefusesWhatEtcdCannotHaveMade(t *testing.T) {
	for name, revs := range map[string][]*etcdbackupv1.JournalRevision{
		"none":      nil,
		"a gap":     append(revisions(1, 3), revisions(5, 6)...),
		"no events": {{Revision: 1, Time: timestamppb.Now()}},
		"no time":   {{Revision: 1, Events: revisions(1, 1)[0].GetEvents()}},
		"a key twice": {{Revision: 3, Time: timestamppb.Now(),
			Events: append(revisions(3, 3)[0].GetEvents(), revisions(3, 3)[0].GetEvents()...)}},
		"a bad version": {{Revision: 3, Time: timestamppb.Now(),
			Events: []*etcdbackupv1.JournalEvent{{Key: []byte("k"), CreateRevision: 3, Version: 2}}}},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := journal.Write(&bytes.Buffer{}, revs, backupformat.Encryption{}); err == nil {
				t.Fatal("written")
			}
		})
	}
}

func TestKeys(t *testing.T) {
	tl := journal.NewTimeline(time.Date(2026, 12, 5, 14, 3, 11, 250e6, time.UTC))
	dir := tl.Dir("c/ns/daily/")
	key := journal.Key(dir, 7, 1234)
	if key != "c/ns/daily/journal/20261205T140311.250Z/00000000000000000007-00000000000000001234.zst" {
		t.Fatalf("key %q", key)
	}
	if back, err := journal.ParseTimeline(tl.Name); err != nil || !back.Start.Equal(tl.Start) {
		t.Fatalf("ParseTimeline(%q) = %v, %v", tl.Name, back, err)
	}
	if from, to, ok := journal.ParseKey(dir, key); !ok || from != 7 || to != 1234 {
		t.Fatalf("ParseKey: %d %d %v", from, to, ok)
	}
	for _, other := range []string{"c/ns/daily/daily-2026-12-05T01-00-00.db.zst", dir + "7-1234.zst",
		"c/ns/daily/journal/0/00000000000000000007-00000000000000001234.zst",
		dir + "00000000000000000009-00000000000000000008.zst"} {
		if _, _, ok := journal.ParseKey(dir, other); ok {
			t.Fatalf("%q read as a segment", other)
		}
	}
}

// FuzzRead: whatever the stored bytes, Read returns revisions that pass CheckRevision, in
// order, or an error; it never panics. With plain, the fuzzer's bytes are the uncompressed
// revisions, compressed here, so that it reaches the revisions' decoder and not only zstd's.
func FuzzRead(f *testing.F) {
	stored, m := sealed(f, revisions(1, 40), backupformat.Encryption{})
	var plain bytes.Buffer
	for _, r := range revisions(1, 40) {
		if _, err := protodelim.MarshalTo(&plain, r); err != nil {
			f.Fatal(err)
		}
	}
	f.Add(stored, false)
	f.Add(stored[:len(stored)/2], false)
	f.Add(plain.Bytes(), true)
	f.Add(plain.Bytes()[:plain.Len()/2], true)
	f.Add([]byte{}, true)
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte, plain bool) {
		if plain {
			b = enc.EncodeAll(b, nil)
		}
		// The record follows the bytes, so that the fuzzer reaches the decoder, not only the digest.
		m := m
		m.Stored = backupformat.Meta{SHA256: sha(b)}
		revs, err := journal.Read(b, m, nil)
		if err != nil {
			return
		}
		for i, r := range revs {
			if err := journal.CheckRevision(r); err != nil || (i > 0 && r.GetRevision() != revs[i-1].GetRevision()+1) {
				t.Fatalf("revision %d accepted: %v", i, err)
			}
		}
	})
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
