package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/service"
)

func TestPublishLinger(t *testing.T) {
	base := []string{"--nats-insecure-plaintext"}
	c, err := parseConfig(base)
	if err != nil {
		t.Fatal(err)
	}
	if c.PublishLinger != 500*time.Millisecond {
		t.Fatalf("--publish-linger defaults to %s, want 500ms", c.PublishLinger)
	}
	for _, args := range [][]string{
		{"--publish-linger=10s"},
		{"--publish-linger=2s", "--segment-interval=1s"},
		{"--publish-linger=0s"},
	} {
		_, err := parseConfig(append(base, args...))
		if !errors.Is(err, service.ErrInvalidOption) || !strings.Contains(err.Error(), "publish-linger") {
			t.Errorf("%v: %v, want an invalid --publish-linger", args, err)
		}
	}
}
