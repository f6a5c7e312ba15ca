package destination

import "testing"

func TestParseEndpoint(t *testing.T) {
	tests := []struct {
		in         string
		host       string
		secure, ok bool
	}{
		{"s3.amazonaws.com", "s3.amazonaws.com", true, true},
		{"https://s3.example.com:9000", "s3.example.com:9000", true, true},
		{"http://127.0.0.1:9000", "127.0.0.1:9000", false, true},
		{"http://127.0.0.1:9000/", "127.0.0.1:9000", false, true},
		{"ftp://x", "", false, false},
		{"http://host/bucket", "", false, false},
		{"", "", false, false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			host, secure, err := ParseEndpoint(tc.in)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			if tc.ok && (host != tc.host || secure != tc.secure) {
				t.Fatalf("got %q secure=%v, want %q secure=%v", host, secure, tc.host, tc.secure)
			}
		})
	}
}
