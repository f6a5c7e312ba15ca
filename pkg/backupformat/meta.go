package backupformat

import (
	"encoding/hex"
	"fmt"
	"net/textproto"
	"strconv"
	"strings"
)

// Meta is what a stored backup's object metadata records (S3 user metadata, X-Amz-Meta-*):
// written once, by the uploader (Map), and read by everything that trusts a backup only as far
// as its record goes (ParseMeta): the uploader's "already stored?" check, the restorer's
// verification, the restore step and the drill. Objects in the bucket are untrusted input:
// ParseMeta refuses a record it cannot read rather than guess.
type Meta struct {
	// SHA256 is the stored (compressed, maybe encrypted) bytes' sha256, hex: what a restore
	// checks the object against.
	SHA256 string
	// Codec is the chain the stored bytes were written with (CodecZstd, CodecZstdAge; "" for
	// objects written before it was recorded: zstd).
	Codec string
	// Recipients lists, comma-separated, the fingerprints of the age recipients an encrypted
	// backup is sealed to (Encryption.RecipientList).
	Recipients string
	// SnapshotSHA256 is etcd's own trailing hash of the snapshot, hex.
	SnapshotSHA256 string
	// SnapshotSize is the etcd snapshot's size in bytes (0: not recorded). Open writes no more
	// than that and requires exactly that: an object whose record understates its snapshot
	// cannot fill a disk sized by the record.
	SnapshotSize int64
	// Revision is etcd's revision the snapshot holds at least (0: not recorded).
	Revision int64
	// KeyCount is the number of keys in etcd at Revision (0: not recorded).
	KeyCount int64
	// BackupName and Cluster say whose backup it is, for people reading the bucket.
	BackupName, Cluster string
}

// Fingerprints returns Recipients as a list (nil when the backup is not encrypted).
func (m Meta) Fingerprints() []string {
	if m.Recipients == "" {
		return nil
	}
	return strings.Split(m.Recipients, ",")
}

// Metadata keys, in the canonical form S3 clients return them in.
const (
	metaSHA256         = "Sha256"
	metaCodec          = "Codec"
	metaRecipients     = "Age-Recipients"
	metaSnapshotSHA256 = "Snapshot-Sha256"
	metaSnapshotSize   = "Snapshot-Size"
	metaRevision       = "Etcd-Revision"
	metaKeyCount       = "Etcd-Key-Count"
	metaBackupName     = "Backup-Name"
	metaCluster        = "Cluster"
)

// Map returns m as object metadata; fields not recorded (empty, zero) are left out.
func (m Meta) Map() map[string]string {
	out := map[string]string{}
	for k, v := range map[string]string{
		metaSHA256: m.SHA256, metaCodec: m.Codec, metaRecipients: m.Recipients, metaSnapshotSHA256: m.SnapshotSHA256,
		metaBackupName: m.BackupName, metaCluster: m.Cluster,
	} {
		if v != "" {
			out[k] = v
		}
	}
	for k, v := range map[string]int64{metaSnapshotSize: m.SnapshotSize, metaRevision: m.Revision,
		metaKeyCount: m.KeyCount} {
		if v > 0 {
			out[k] = strconv.FormatInt(v, 10)
		}
	}
	return out
}

// ParseMeta reads an object's metadata (keys in any case). Fields that are absent stay empty;
// a field that is present but malformed (a digest that is not hex sha256, a codec this version
// does not read, recipients that are not fingerprints, a size or revision that is not a
// non-negative integer) is an error wrapping ErrCorrupt.
func ParseMeta(md map[string]string) (Meta, error) {
	get := func(key string) string {
		if v, ok := md[key]; ok {
			return v
		}
		for k, v := range md {
			if textproto.CanonicalMIMEHeaderKey(k) == key {
				return v
			}
		}
		return ""
	}
	m := Meta{
		SHA256: get(metaSHA256), Codec: get(metaCodec), Recipients: get(metaRecipients),
		SnapshotSHA256: get(metaSnapshotSHA256), BackupName: get(metaBackupName), Cluster: get(metaCluster),
	}
	for key, v := range map[string]string{metaSHA256: m.SHA256, metaSnapshotSHA256: m.SnapshotSHA256} {
		if b, err := hex.DecodeString(v); v != "" && (err != nil || len(b) != 32) {
			return Meta{}, fmt.Errorf("%w: metadata %s %q is not a hex sha256", ErrCorrupt, key, v)
		}
	}
	switch m.Codec {
	case "", CodecZstd, CodecZstdAge:
	default:
		// Refused here, not only when the bytes are opened: the record reaches status and
		// the plugin's terminal (trust.Recorded).
		return Meta{}, fmt.Errorf("%w: metadata %s %q is not a codec this version reads (%s, %s)", ErrCorrupt,
			metaCodec, m.Codec, CodecZstd, CodecZstdAge)
	}
	for _, f := range m.Fingerprints() {
		if b, err := hex.DecodeString(f); err != nil || len(b) != fingerprintBytes {
			return Meta{}, fmt.Errorf("%w: metadata %s %q is not a list of recipients' fingerprints", ErrCorrupt,
				metaRecipients, m.Recipients)
		}
	}
	for key, into := range map[string]*int64{metaSnapshotSize: &m.SnapshotSize, metaRevision: &m.Revision,
		metaKeyCount: &m.KeyCount} {
		v := get(key)
		if v == "" {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return Meta{}, fmt.Errorf("%w: metadata %s %q is not a non-negative integer", ErrCorrupt, key, v)
		}
		*into = n
	}
	return m, nil
}
