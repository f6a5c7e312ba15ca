package main

import (
	"testing"

	"github.com/etcd-backup/etcdbackup/pkg/bus"
)

// The setup takes only what it needs: the NATS connection and the streams' replicas.
func TestParse(t *testing.T) {
	c, err := parse([]string{"--nats-url=tls://nats:4222", "--stream-replicas=3"})
	if err != nil || c.replicas != 3 || c.nats.URL != "tls://nats:4222" {
		t.Fatalf("parse = %+v, %v", c, err)
	}
	if _, err := parse([]string{"--stream-replicas=2"}); err == nil {
		t.Fatal("2 replicas accepted")
	}
	// The durables' MaxDeliver: the defaults, 0 for no count, and the flag's.
	if c.maxDeliver[bus.ConsumerUploader] != bus.Unlimited || c.maxDeliver[bus.ConsumerStatusWriter] != 50 {
		t.Fatalf("default max deliveries %v", c.maxDeliver)
	}
	c, err = parse([]string{"--uploader-max-deliver=7", "--status-writer-max-deliver=0"})
	if err != nil || c.maxDeliver[bus.ConsumerUploader] != 7 || c.maxDeliver[bus.ConsumerStatusWriter] != bus.Unlimited {
		t.Fatalf("max deliveries %v, %v", c.maxDeliver, err)
	}
	if _, err := parse([]string{"--pruner-max-deliver=-1"}); err == nil {
		t.Fatal("a negative count accepted")
	}
}
