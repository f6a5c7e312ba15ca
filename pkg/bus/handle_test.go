package bus_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/natstest"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Poison messages ({}, garbage, a request naming another cluster's key) are terminated on
// their first delivery, never reach the handler and are counted by subject; a valid one is
// handled.
func TestTypedTerminatesInvalidMessagesAtOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := natstest.JetStream(t)
	c := consumer(t, ctx, js, 5*time.Second)
	reg := prometheus.NewRegistry()
	m := bus.NewMetrics(reg)
	var handled atomic.Int32
	h := bus.Typed(10, func(ctx context.Context, req *etcdbackupv1.BackupRequested, d bus.Delivery) error {
		handled.Add(1)
		return nil
	})
	startWorker(t, ctx, c, h, bus.WithMetrics(m))
	forged := validRequest()
	forged.ObjectKey = "victim/cluster-victim/daily/x.db.zst"
	for i, body := range [][]byte{[]byte(`{}`), []byte("not a message"), mustEncode(t, forged)} {
		if _, err := js.Publish(ctx, bus.SubjectBackupRequested, body, jetstream.WithMsgID(string(rune('a'+i)))); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "three invalid messages counted", func() bool {
		return testutil.ToFloat64(m.Invalid(bus.SubjectBackupRequested)) == 3
	})
	waitFor(t, "the stream to drop them", func() bool { return streamEmpty(t, ctx, js) })
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumRedelivered != 0 || info.NumAckPending != 0 {
		t.Fatalf("invalid messages were redelivered (%d) or are pending (%d)", info.NumRedelivered, info.NumAckPending)
	}
	if _, err := js.Publish(ctx, bus.SubjectBackupRequested, mustEncode(t, validRequest()),
		jetstream.WithMsgID("ok")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the valid message handled", func() bool { return handled.Load() == 1 })
}

func mustEncode(t *testing.T, m *etcdbackupv1.BackupRequested) []byte {
	t.Helper()
	b, _, err := bus.Encode(m, false)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
