// Package journal is the continuous backup's format and replay: every revision of a cluster's
// etcd (etcdbackupv1.JournalRevision), sealed into segment objects next to the config's full
// backups, and replayed on top of a full backup's snapshot, one transaction per revision, to
// rebuild etcd's database at any revision a segment holds, proven by etcd's own HashKV.
package journal

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"filippo.io/age"
	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"google.golang.org/protobuf/encoding/protodelim"
)

// Dir is the folder of a config's journal, under the config's backup prefix: a folder per
// timeline (Timeline.Dir) holds its segments.
const Dir = "journal/"

// Suffix ends every segment's key.
const Suffix = ".zst"

// MaxSegmentBytes bounds a segment's revisions, uncompressed: a reader refuses more, whatever
// the segment's metadata says.
const MaxSegmentBytes = 256 << 20

// maxRevisionBytes bounds one revision: etcd's largest request (1.5 MiB by default, its flag
// --max-request-bytes at most 10 MiB) with room for the event framing.
const maxRevisionBytes = 16 << 20

// ErrCorrupt is returned (wrapped) when a segment fails a check: its bytes, its record, or the
// order of its revisions.
var ErrCorrupt = errors.New("journal segment corrupt")

// Key is the bucket key of the segment holding revisions from to to in the timeline folder dir
// (Timeline.Dir): "<dir><from>-<to>.zst", each revision zero-padded to 20 digits, so that keys
// sort in revision order.
func Key(dir string, from, to int64) string {
	return fmt.Sprintf("%s%020d-%020d%s", dir, from, to, Suffix)
}

// ParseKey reads the revisions of a segment's key in the folder dir; ok is false for any other key.
func ParseKey(dir, key string) (from, to int64, ok bool) {
	name, found := strings.CutPrefix(key, dir)
	if !found {
		return 0, 0, false
	}
	name, found = strings.CutSuffix(name, Suffix)
	a, b, dash := strings.Cut(name, "-")
	if !found || !dash || len(a) != 20 || len(b) != 20 {
		return 0, 0, false
	}
	from, errA := strconv.ParseInt(a, 10, 64)
	to, errB := strconv.ParseInt(b, 10, 64)
	if errA != nil || errB != nil || from < 1 || to < from {
		return 0, 0, false
	}
	return from, to, true
}

// Hash is etcd's HashKV of a cluster's member at a revision, as the journal read it: what a
// replay must reproduce at the same revision once compacted to CompactRevision.
type Hash struct {
	Revision, CompactRevision int64
	Hash                      uint32
}

func (h Hash) String() string {
	return fmt.Sprintf("%d:%d:%d", h.Revision, h.CompactRevision, h.Hash)
}

func parseHash(s string) (Hash, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return Hash{}, fmt.Errorf("%q is not <revision>:<compact revision>:<hash>", s)
	}
	rev, err1 := strconv.ParseInt(parts[0], 10, 64)
	compact, err2 := strconv.ParseInt(parts[1], 10, 64)
	hash, err3 := strconv.ParseUint(parts[2], 10, 32)
	// etcd reports compact revision -1 for a store never compacted.
	if err := errors.Join(err1, err2, err3); err != nil || rev < 1 || compact < -1 || compact > rev {
		return Hash{}, fmt.Errorf("%q is not <revision>:<compact revision>:<hash>", s)
	}
	return Hash{Revision: rev, CompactRevision: compact, Hash: uint32(hash)}, nil
}

// Meta is a segment's record, kept as its object's metadata: what a restore reads before
// fetching it (which revisions, which times) and checks it against.
type Meta struct {
	// Stored is the stored bytes' sha256, codec and recipients, as for a backup.
	Stored backupformat.Meta
	// First and Last are the revisions it holds, every one between them included.
	First, Last int64
	// FirstTime and LastTime are when the journal received its first and last revision.
	FirstTime, LastTime time.Time
	// Events is the number of key changes in it.
	Events int64
	// Hash is the member's HashKV at Last, when the journal read one with this segment.
	Hash *Hash
}

// Metadata keys, besides a backup's Sha256, Codec and Age-Recipients.
const (
	metaFirst     = "Journal-First-Revision"
	metaLast      = "Journal-Last-Revision"
	metaFirstTime = "Journal-First-Time"
	metaLastTime  = "Journal-Last-Time"
	metaEvents    = "Journal-Events"
	metaHash      = "Etcd-Hashkv"
)

// Map returns m as object metadata.
func (m Meta) Map() map[string]string {
	out := m.Stored.Map()
	out[metaFirst] = strconv.FormatInt(m.First, 10)
	out[metaLast] = strconv.FormatInt(m.Last, 10)
	out[metaFirstTime] = m.FirstTime.UTC().Format(time.RFC3339Nano)
	out[metaLastTime] = m.LastTime.UTC().Format(time.RFC3339Nano)
	out[metaEvents] = strconv.FormatInt(m.Events, 10)
	if m.Hash != nil {
		out[metaHash] = m.Hash.String()
	}
	return out
}

// ParseMeta reads a segment's metadata (keys in canonical header form, as Bucket returns them).
// Anything missing or malformed is an error wrapping ErrCorrupt: a segment is untrusted input.
func ParseMeta(md map[string]string) (Meta, error) {
	stored, err := backupformat.ParseMeta(md)
	if err != nil {
		return Meta{}, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	m := Meta{Stored: stored}
	var errs []error
	ints := map[string]*int64{metaFirst: &m.First, metaLast: &m.Last, metaEvents: &m.Events}
	for key, into := range ints {
		n, err := strconv.ParseInt(md[key], 10, 64)
		if err != nil || n < 0 {
			errs = append(errs, fmt.Errorf("metadata %s %q is not a non-negative integer", key, md[key]))
		}
		*into = n
	}
	for key, into := range map[string]*time.Time{metaFirstTime: &m.FirstTime, metaLastTime: &m.LastTime} {
		t, err := time.Parse(time.RFC3339Nano, md[key])
		if err != nil {
			errs = append(errs, fmt.Errorf("metadata %s %q is not an RFC 3339 time", key, md[key]))
		}
		*into = t
	}
	if v, ok := md[metaHash]; ok {
		h, err := parseHash(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("metadata %s: %w", metaHash, err))
		}
		m.Hash = &h
	}
	if len(errs) == 0 {
		errs = append(errs, m.check())
	}
	if err := errors.Join(errs...); err != nil {
		return Meta{}, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return m, nil
}

func (m Meta) check() error {
	switch {
	case m.Stored.SHA256 == "":
		return errors.New("no sha256 recorded")
	case m.First < 1 || m.Last < m.First:
		return fmt.Errorf("revisions %d to %d are not a range", m.First, m.Last)
	case m.LastTime.Before(m.FirstTime):
		return fmt.Errorf("its last time %s is before its first %s", m.LastTime, m.FirstTime)
	case m.Events < m.Last-m.First+1:
		return fmt.Errorf("%d events cannot make %d revisions", m.Events, m.Last-m.First+1)
	case m.Hash != nil && m.Hash.Revision != m.Last:
		return fmt.Errorf("its hash is at revision %d, not at its last %d", m.Hash.Revision, m.Last)
	}
	return nil
}

var plainBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// Write seals revs, consecutive revisions, into w: length-delimited JournalRevision messages,
// compressed with zstd and, when e has recipients, encrypted to them (the destination's).
// It returns the segment's record; the caller adds Hash.
func Write(w io.Writer, revs []*etcdbackupv1.JournalRevision, e backupformat.Encryption) (Meta, error) {
	if err := checkOrder(revs); err != nil {
		return Meta{}, err
	}
	m := Meta{First: revs[0].GetRevision(), Last: revs[len(revs)-1].GetRevision(),
		FirstTime: revs[0].GetTime().AsTime(), LastTime: revs[len(revs)-1].GetTime().AsTime()}
	// A journal seals a segment of every config every interval: the plain bytes' buffer is
	// reused (Seal returns bytes of its own).
	plain, _ := plainBuffers.Get().(*bytes.Buffer)
	defer func() {
		if plain.Cap() <= 16<<20 {
			plain.Reset()
			plainBuffers.Put(plain)
		}
	}()
	for _, r := range revs {
		if _, err := protodelim.MarshalTo(plain, r); err != nil {
			return Meta{}, err
		}
		m.Events += int64(len(r.GetEvents()))
	}
	stored, st, err := backupformat.Seal(plain.Bytes(), e)
	if err != nil {
		return Meta{}, err
	}
	if _, err := w.Write(stored); err != nil {
		return Meta{}, err
	}
	m.Stored = st
	return m, nil
}

// Read opens a stored segment, held whole in stored, against its record m: the bytes' sha256
// first, then each revision, which must be the record's, consecutive, each well formed. Any
// failure wraps ErrCorrupt, or backupformat.ErrDecrypt when identities open none of its
// recipients.
func Read(stored []byte, m Meta, identities []age.Identity) ([]*etcdbackupv1.JournalRevision, error) {
	plain, err := backupformat.Unseal(stored, m.Stored, identities, MaxSegmentBytes)
	if errors.Is(err, backupformat.ErrCorrupt) {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if err != nil {
		return nil, err
	}
	var revs []*etcdbackupv1.JournalRevision
	events := int64(0)
	r := bytes.NewReader(plain)
	opts := protodelim.UnmarshalOptions{MaxSize: maxRevisionBytes}
	for r.Len() > 0 {
		rev := &etcdbackupv1.JournalRevision{}
		if err := opts.UnmarshalFrom(r, rev); err != nil {
			return nil, fmt.Errorf("%w: revision %d of it: %w", ErrCorrupt, len(revs)+1, err)
		}
		revs = append(revs, rev)
		events += int64(len(rev.GetEvents()))
	}
	if err := checkOrder(revs); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	switch first, last := revs[0], revs[len(revs)-1]; {
	case first.GetRevision() != m.First || last.GetRevision() != m.Last:
		return nil, fmt.Errorf("%w: it holds revisions %d to %d, its record says %d to %d", ErrCorrupt,
			first.GetRevision(), last.GetRevision(), m.First, m.Last)
	case events != m.Events:
		return nil, fmt.Errorf("%w: it holds %d events, its record says %d", ErrCorrupt, events, m.Events)
	case !first.GetTime().AsTime().Equal(m.FirstTime) || !last.GetTime().AsTime().Equal(m.LastTime):
		return nil, fmt.Errorf("%w: its times are not its record's", ErrCorrupt)
	}
	return revs, nil
}

// checkOrder says whether revs are a journal's: at least one, consecutive revisions, times
// that do not go back, and every revision well formed.
func checkOrder(revs []*etcdbackupv1.JournalRevision) error {
	if len(revs) == 0 {
		return errors.New("no revision")
	}
	for i, r := range revs {
		if i > 0 {
			prev := revs[i-1]
			if r.GetRevision() != prev.GetRevision()+1 {
				return fmt.Errorf("revision %d follows %d", r.GetRevision(), prev.GetRevision())
			}
			if r.GetTime().AsTime().Before(prev.GetTime().AsTime()) {
				return fmt.Errorf("revision %d is older than revision %d", r.GetRevision(), prev.GetRevision())
			}
		}
		if err := CheckRevision(r); err != nil {
			return err
		}
	}
	return nil
}

// CheckRevision says whether r is a revision etcd could have made: a positive revision with a
// time, at least one event, each with a key, and each put's create revision and version
// consistent with it (a key created at r is at version 1); each lease named once, positive.
func CheckRevision(r *etcdbackupv1.JournalRevision) error {
	rev := r.GetRevision()
	switch {
	case rev < 1:
		return fmt.Errorf("revision %d is not positive", rev)
	case r.GetTime() == nil || r.GetTime().CheckValid() != nil:
		return fmt.Errorf("revision %d has no valid time", rev)
	case len(r.GetEvents()) == 0:
		return fmt.Errorf("revision %d changes nothing", rev)
	}
	if _, err := ParseTimeline(r.GetTimeline()); err != nil {
		return fmt.Errorf("revision %d: %w", rev, err)
	}
	leases := map[int64]bool{}
	for _, l := range r.GetLeases() {
		if l.GetId() <= 0 || l.GetTtlSeconds() < 0 || leases[l.GetId()] {
			return fmt.Errorf("revision %d: lease %d (ttl %d) is not a lease", rev, l.GetId(), l.GetTtlSeconds())
		}
		leases[l.GetId()] = true
	}
	keys := map[string]bool{}
	for _, e := range r.GetEvents() {
		k := string(e.GetKey())
		switch {
		case k == "":
			return fmt.Errorf("revision %d: an event without a key", rev)
		case keys[k]:
			return fmt.Errorf("revision %d changes %q twice", rev, k)
		case e.GetDelete() && (len(e.GetValue()) > 0 || e.GetLease() != 0 || e.GetVersion() != 0):
			return fmt.Errorf("revision %d: the deletion of %q carries a value", rev, k)
		case !e.GetDelete() && !putConsistent(rev, e):
			return fmt.Errorf("revision %d: %q at version %d, created at %d, is not a put at this revision", rev, k,
				e.GetVersion(), e.GetCreateRevision())
		case e.GetLease() < 0:
			return fmt.Errorf("revision %d: %q has lease %d", rev, k, e.GetLease())
		}
		keys[k] = true
	}
	return nil
}

func putConsistent(rev int64, e *etcdbackupv1.JournalEvent) bool {
	created, version := e.GetCreateRevision(), e.GetVersion()
	if version < 1 || created < 1 || created > rev {
		return false
	}
	return (version == 1) == (created == rev)
}
