package service

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// Settings that would connect insecurely, or hand a secret to a flag or URL, are refused at
// start with ErrInvalidOption.
func TestNATSValidate(t *testing.T) {
	seed := filepath.Join(t.TempDir(), "seed.nk")
	if err := os.WriteFile(seed, []byte("SUAIBDPBAUTW"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		n    NATS
		ok   bool
	}{
		{"a seed file", NATS{URL: "tls://nats:4222", Creds: seed}, true},
		{"no credentials", NATS{URL: "tls://nats:4222"}, false},
		{"no credentials, plaintext for development", NATS{URL: "nats://127.0.0.1:4222", Plaintext: true}, true},
		{"a password in the URL", NATS{URL: "tls://user:secret@nats:4222", Creds: seed}, false},
		{"a certificate without its key", NATS{URL: "tls://nats:4222", Creds: seed, Cert: seed}, false},
		{"a seed file that is not there", NATS{URL: "tls://nats:4222", Creds: seed + ".missing"}, false},
		{"no URL", NATS{Creds: seed}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.n.Validate()
			if tc.ok != (err == nil) {
				t.Fatalf("Validate() = %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalidOption) {
				t.Fatalf("error %v does not wrap ErrInvalidOption", err)
			}
		})
	}
}
