package backupformat

import (
	"errors"
	"strings"
	"testing"
)

// The uploader's record of a backup reads back as it was written, whatever case the store
// returns its keys in; fields not recorded stay empty.
func TestMetaRoundTrip(t *testing.T) {
	full := Meta{
		SHA256: strings.Repeat("ab", 32), Codec: CodecZstdAge, Recipients: Fingerprint("age1a") + "," + Fingerprint("age1b"),
		SnapshotSHA256: strings.Repeat("cd", 32),
		SnapshotSize:   1 << 30, Revision: 42, KeyCount: 7, BackupName: "daily-2021-03-02T15:24:00", Cluster: "zvc78xnnz7",
	}
	for _, tc := range []struct {
		name string
		meta Meta
		keys func(string) string
	}{
		{"every field, canonical keys", full, func(k string) string { return k }},
		{"every field, lower-case keys (as some stores return them)", full, strings.ToLower},
		{"an old backup: digest only", Meta{SHA256: full.SHA256}, func(k string) string { return k }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			md := map[string]string{}
			for k, v := range tc.meta.Map() {
				md[tc.keys(k)] = v
			}
			got, err := ParseMeta(md)
			if err != nil || got != tc.meta {
				t.Fatalf("ParseMeta(%v) = %+v, %v; want %+v", md, got, err, tc.meta)
			}
		})
	}
	if m := (Meta{SHA256: full.SHA256}).Map(); len(m) != 1 {
		t.Fatalf("fields not recorded are written: %v", m)
	}
	if got := full.Fingerprints(); len(got) != 2 || got[0] != Fingerprint("age1a") || got[1] != Fingerprint("age1b") {
		t.Fatalf("Fingerprints() = %q", got)
	}
	if got := (Meta{}).Fingerprints(); got != nil {
		t.Fatalf("an unencrypted backup's Fingerprints() = %q, want none", got)
	}
}

// A record in the bucket is untrusted: a malformed digest or number is refused as corrupt,
// not read as zero.
func TestParseMetaRefusesMalformedRecords(t *testing.T) {
	for name, md := range map[string]map[string]string{
		"digest not hex":                     {"Sha256": strings.Repeat("zz", 32)},
		"digest too short":                   {"Sha256": "abcd"},
		"snapshot digest":                    {"Snapshot-Sha256": "x"},
		"negative snapshot size":             {"Snapshot-Size": "-1"},
		"revision not a number":              {"Etcd-Revision": "forty-two"},
		"key count overflows":                {"Etcd-Key-Count": "99999999999999999999"},
		"recipient not a fingerprint":        {"Age-Recipients": "age1qqqq"},
		"a codec this version does not read": {"Codec": "zstd+age\x1b]0;owned\x07"},
		"an empty recipient":                 {"Age-Recipients": Fingerprint("age1a") + ","},
	} {
		t.Run(name, func(t *testing.T) {
			if m, err := ParseMeta(md); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("ParseMeta(%v) = %+v, %v; want ErrCorrupt", md, m, err)
			}
		})
	}
}
