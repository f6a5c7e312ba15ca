package backupformat

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"filippo.io/age"
)

// ErrDecrypt is returned (wrapped) when an encrypted backup cannot be decrypted with the
// identities given: none, or none of its recipients'.
var ErrDecrypt = errors.New("cannot decrypt the backup")

// Encryption is what a backup is sealed to: age X25519 recipients and their fingerprints.
type Encryption struct {
	Recipients   []age.Recipient
	Fingerprints []string
}

// Codec is the codec chain (Meta.Codec) of a backup sealed to e: CodecZstdAge when e has
// recipients, else CodecZstd.
func (e Encryption) Codec() string {
	if len(e.Recipients) > 0 {
		return CodecZstdAge
	}
	return CodecZstd
}

// RecipientList is Meta.Recipients of a backup sealed to e: its fingerprints, comma-separated.
func (e Encryption) RecipientList() string { return strings.Join(e.Fingerprints, ",") }

// fingerprintBytes is how much of a recipient's sha256 its fingerprint keeps.
const fingerprintBytes = 8

// Fingerprint names a recipient (its "age1…" string) without giving it: the first 16 hex
// digits of its sha256. Metadata, status and messages carry fingerprints.
func Fingerprint(recipient string) string {
	sum := sha256.Sum256([]byte(strings.TrimSpace(recipient)))
	return hex.EncodeToString(sum[:fingerprintBytes])
}

// ParseRecipients reads an age recipients file: one X25519 recipient ("age1…") per line,
// blank lines and # comments allowed. Other kinds (SSH keys, plugins) are refused: the
// restore step and the drills know X25519 identities only.
func ParseRecipients(text string) (Encryption, error) {
	var e Encryption
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		r, err := age.ParseX25519Recipient(line)
		if err != nil {
			return Encryption{}, fmt.Errorf("line %d: not an age X25519 recipient (age1…): %w", i+1, err)
		}
		e.Recipients = append(e.Recipients, r)
		e.Fingerprints = append(e.Fingerprints, Fingerprint(r.String()))
	}
	if len(e.Recipients) == 0 {
		return Encryption{}, errors.New("no age recipient in it")
	}
	return e, nil
}

// Identities are age X25519 identities and the fingerprints of their recipients.
type Identities struct {
	List         []age.Identity
	Fingerprints []string
	// Text is the identity file they were read from, to hand on (the restore step's Secret).
	// It is secret: never log Identities.
	Text string
}

// ParseIdentities reads an age identity file (age-keygen's output: "AGE-SECRET-KEY-1…" lines,
// # comments). Several identities may be given: the old and the new key while rotating.
func ParseIdentities(text string) (Identities, error) {
	var ids Identities
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		id, err := age.ParseX25519Identity(line)
		if err != nil {
			// The parser's error does not quote the key; say only where.
			return Identities{}, fmt.Errorf("line %d: not an age X25519 identity (AGE-SECRET-KEY-1…)", i+1)
		}
		ids.List = append(ids.List, id)
		ids.Fingerprints = append(ids.Fingerprints, Fingerprint(id.Recipient().String()))
	}
	if len(ids.List) == 0 {
		return Identities{}, errors.New("no age identity in it")
	}
	ids.Text = text
	return ids, nil
}

func decryptError(st Meta, identities []age.Identity, err error) error {
	var have []string
	for _, id := range identities {
		if x, ok := id.(*age.X25519Identity); ok {
			have = append(have, Fingerprint(x.Recipient().String()))
		}
	}
	if len(have) == 0 {
		return fmt.Errorf("%w: it is encrypted to recipients [%s] and no identity was given", ErrDecrypt, st.Recipients)
	}
	var noMatch *age.NoIdentityMatchError
	if errors.As(err, &noMatch) {
		return fmt.Errorf("%w: it is encrypted to recipients [%s]; the identities given are for [%s]", ErrDecrypt,
			st.Recipients, strings.Join(have, ","))
	}
	// An identity matched, and the header still does not hold (its MAC, its form): the bytes
	// are not what was sealed.
	return fmt.Errorf("%w: its age header does not hold: %w", ErrCorrupt, err)
}
