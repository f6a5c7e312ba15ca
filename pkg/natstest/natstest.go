// Package natstest runs a real nats-server with JetStream inside the test process.
package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/bus"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// RunJetStream starts an embedded nats-server with JetStream on a random loopback port,
// storing in a temporary directory, and stops it when the test ends. It returns the server.
func RunJetStream(t testing.TB) *server.Server {
	t.Helper()
	return RunJetStreamIn(t, t.TempDir(), -1)
}

// RunJetStreamIn starts a server storing in dir on port (-1: random). Restarting a server
// on the same dir and port brings back its streams, as after an outage. Options, if given,
// change the server's options before it starts.
func RunJetStreamIn(t testing.TB, dir string, port int, options ...func(*server.Options)) *server.Server {
	t.Helper()
	o := &server.Options{
		Host:      "127.0.0.1",
		Port:      port,
		JetStream: true,
		StoreDir:  dir,
		NoSigs:    true,
		NoLog:     true,
	}
	for _, f := range options {
		f(o)
	}
	s, err := server.NewServer(o)
	if err != nil {
		t.Fatalf("nats server: %v", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready within 10s")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// JetStream starts a server as RunJetStream does (with options, if given) and returns a
// JetStream client of it (bus.NewJetStream); the connection closes when the test ends.
func JetStream(t testing.TB, options ...func(*server.Options)) jetstream.JetStream {
	t.Helper()
	_, js := Connect(t, RunJetStreamIn(t, t.TempDir(), -1, options...))
	return js
}

// Connect opens a connection of its own to s (a replica's: closing it is that replica gone)
// and a JetStream client on it (bus.NewJetStream); the connection closes when the test ends.
func Connect(t testing.TB, s *server.Server) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := bus.NewJetStream(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// Bus starts a server as JetStream does and creates the project's streams, consumers and
// staging bucket in memory, small (staging of stagingBytes, streams 16 MiB), as a service's
// tests need.
func Bus(t testing.TB, stagingBytes int64) jetstream.JetStream {
	t.Helper()
	js := JetStream(t)
	topo := bus.DefaultTopology()
	topo.Storage, topo.StagingMaxBytes, topo.StreamMaxBytes = jetstream.MemoryStorage, stagingBytes, 16<<20
	if err := bus.Ensure(t.Context(), js, topo); err != nil {
		t.Fatal(err)
	}
	return js
}

// StatusEvents returns every status event on js's status stream that keep keeps (nil: all),
// oldest first.
func StatusEvents(t testing.TB, ctx context.Context, js jetstream.JetStream,
	keep func(*etcdbackupv1.StatusEvent) bool) []*etcdbackupv1.StatusEvent {
	t.Helper()
	s, err := js.Stream(ctx, bus.StreamStatus)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*etcdbackupv1.StatusEvent
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && seq > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get status event %d: %v", seq, err)
		}
		ev := &etcdbackupv1.StatusEvent{}
		if err := bus.Decode(m.Data, m.Header.Get(bus.HeaderContentType), ev); err != nil {
			t.Fatalf("status event %d is not readable: %v", seq, err)
		}
		if keep == nil || keep(ev) {
			out = append(out, ev)
		}
	}
	return out
}
