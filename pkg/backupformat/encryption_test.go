package backupformat

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"

	"filippo.io/age"
)

func newKey(t *testing.T) *age.X25519Identity {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func seal(t *testing.T, snap []byte, to ...*age.X25519Identity) ([]byte, *Writer) {
	t.Helper()
	var lines []string
	for _, id := range to {
		lines = append(lines, id.Recipient().String())
	}
	e, err := ParseRecipients("# the seed's backup keys\n" + strings.Join(lines, "\n") + "\n")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w, err := NewSealingWriter(&buf, Level, 1, e)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.ReadFrom(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), w
}

func identities(t *testing.T, ids ...*age.X25519Identity) []age.Identity {
	t.Helper()
	var lines []string
	for _, id := range ids {
		lines = append(lines, id.String())
	}
	parsed, err := ParseIdentities(strings.Join(lines, "\n"))
	if err != nil {
		t.Fatal(err)
	}
	return parsed.List
}

// An encrypted backup holds no plaintext, says its codec and recipients in its metadata,
// and opens with any one of its recipients' identities, to the same snapshot.
func TestSealedBackupOpensWithEachRecipientsIdentity(t *testing.T) {
	snap := fakeSnapshot(2048)
	alice, bob := newKey(t), newKey(t)
	stored, w := seal(t, snap, alice, bob)
	if bytes.Contains(stored, snap[:512]) {
		t.Fatal("the stored bytes hold the snapshot in the clear")
	}
	// Through the object's metadata and back, as the uploader writes it and a restore reads it.
	st, err := ParseMeta(w.Meta().Map())
	if err != nil {
		t.Fatal(err)
	}
	want := Fingerprint(alice.Recipient().String()) + "," + Fingerprint(bob.Recipient().String())
	if st.Codec != CodecZstdAge || st.Recipients != want || st.SHA256 != w.SHA256() {
		t.Fatalf("metadata %+v, want codec %s, recipients %s and sha256 %s", st, CodecZstdAge, want, w.SHA256())
	}
	for name, id := range map[string]*age.X25519Identity{"alice": alice, "bob": bob} {
		var out bytes.Buffer
		d, err := Open(bytes.NewReader(stored), st, identities(t, id), &out, 0)
		if err != nil || !bytes.Equal(out.Bytes(), snap) || d.SnapshotSize != int64(len(snap)) {
			t.Fatalf("open with %s's identity: %v, %d bytes, want the snapshot's %d", name, err, out.Len(), len(snap))
		}
	}
}

// Rotation: backups sealed to the old key open with the old identity, new ones with the new,
// and an identity file holding both opens either. Unencrypted backups keep opening, with or
// without identities.
func TestKeyRotation(t *testing.T) {
	snap := fakeSnapshot(256)
	old, next := newKey(t), newKey(t)
	before, wb := seal(t, snap, old)
	after, wa := seal(t, snap, next)
	plain, wp := encode(t, snap)
	open := func(stored []byte, w *Writer, ids []age.Identity) error {
		_, err := Open(bytes.NewReader(stored), w.Meta(), ids, io.Discard, 0)
		return err
	}
	both := identities(t, old, next)
	for _, tc := range []struct {
		name   string
		stored []byte
		w      *Writer
		ids    []age.Identity
		ok     bool
	}{
		{"old backup, old identity", before, wb, identities(t, old), true},
		{"new backup, new identity", after, wa, identities(t, next), true},
		{"old backup, both identities", before, wb, both, true},
		{"new backup, both identities", after, wa, both, true},
		{"old backup, new identity only", before, wb, identities(t, next), false},
		{"unencrypted backup, no identity", plain, wp, nil, true},
		{"unencrypted backup, identities given", plain, wp, both, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := open(tc.stored, tc.w, tc.ids)
			if tc.ok != (err == nil) {
				t.Fatalf("open: %v, want ok=%v", err, tc.ok)
			}
			if !tc.ok && !errors.Is(err, ErrDecrypt) {
				t.Fatalf("open: %v, want ErrDecrypt", err)
			}
		})
	}
}

// A wrong or missing identity is ErrDecrypt naming the recipients' fingerprints (and never
// the identity); bytes changed after upload are ErrCorrupt whatever the identity.
func TestDecryptionFailures(t *testing.T) {
	snap := fakeSnapshot(256)
	alice, mallory := newKey(t), newKey(t)
	stored, w := seal(t, snap, alice)
	st := w.Meta()
	fp := Fingerprint(alice.Recipient().String())
	for name, ids := range map[string][]age.Identity{"none": nil, "wrong": identities(t, mallory)} {
		_, err := Open(bytes.NewReader(stored), st, ids, io.Discard, 0)
		if !errors.Is(err, ErrDecrypt) || !strings.Contains(err.Error(), fp) || strings.Contains(err.Error(),
			"AGE-SECRET-KEY") {
			t.Fatalf("%s identity: %v, want ErrDecrypt naming recipient %s", name, err, fp)
		}
	}
	flipped := append([]byte(nil), stored...)
	flipped[len(flipped)/2] ^= 1
	if _, err := Open(bytes.NewReader(flipped), st, identities(t, alice), io.Discard, 0); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("flipped byte: %v, want ErrCorrupt", err)
	}
	// The payload is authenticated: bytes changed with the digest rewritten to match are
	// still refused.
	sum := sha(flipped)
	if _, err := Open(bytes.NewReader(flipped), Meta{SHA256: sum, Codec: st.Codec, Recipients: st.Recipients},
		identities(t, alice), io.Discard, 0); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("flipped byte, digest rewritten: %v, want ErrCorrupt", err)
	}
	if _, err := ParseRecipients("ssh-ed25519 AAAA… not age"); err == nil {
		t.Fatal("ParseRecipients took an SSH key")
	}
	if _, err := ParseIdentities(""); err == nil {
		t.Fatal("ParseIdentities took an empty file")
	}
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
