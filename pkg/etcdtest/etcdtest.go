// Package etcdtest runs a real etcd member inside the test process (go.etcd.io/etcd/server/v3/embed).
package etcdtest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Etcd is a running embedded etcd member.
type Etcd struct {
	// Endpoint is its client URL, http://127.0.0.1:<port> (https when cfgFn sets up TLS).
	Endpoint string
	// Dir is its data dir.
	Dir string
	e   *embed.Etcd
}

// Start starts a single-member etcd in a temporary data dir; it stops when the test ends.
func Start(t testing.TB) *Etcd {
	t.Helper()
	e, err := StartIn(t.TempDir(), "default", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	return e
}

// StartIn starts a member named name on data dir dir. With cfgFn it can change the config
// (cluster membership, quotas) before start. Ports are picked free on 127.0.0.1.
func StartIn(dir, name string, cfgFn func(*embed.Config)) (*Etcd, error) {
	cfg := embed.NewConfig()
	cfg.Name = name
	cfg.Dir = dir
	cfg.Logger = "zap"
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	// A port found free can be taken before etcd binds it (by another test process, or as an
	// outgoing connection's source port): then the member starts again on other ports.
	var e *embed.Etcd
	for attempt := 1; ; attempt++ {
		clientURL, err := freeURL()
		if err != nil {
			return nil, err
		}
		peerURL, err := freeURL()
		if err != nil {
			return nil, err
		}
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{clientURL}, []url.URL{clientURL}
		cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peerURL}, []url.URL{peerURL}
		cfg.InitialCluster = fmt.Sprintf("%s=%s", name, peerURL.String())
		if cfgFn != nil {
			cfgFn(cfg)
		}
		e, err = embed.StartEtcd(cfg)
		if err == nil {
			break
		}
		inUse := errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")
		if !inUse || attempt == 5 {
			return nil, fmt.Errorf("start etcd: %w", err)
		}
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		return nil, fmt.Errorf("etcd in %s not ready within 30s", dir)
	}
	return &Etcd{Endpoint: cfg.AdvertiseClientUrls[0].String(), Dir: dir, e: e}, nil
}

// Client returns a client of the member; it is closed when the test ends.
func (e *Etcd) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Endpoint}, DialTimeout: 5 * time.Second,
		Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Snapshot returns the member's snapshot as etcd streams it (data and its sha256 trailer),
// read whole: for tests' small databases.
func (e *Etcd) Snapshot(t testing.TB) []byte {
	t.Helper()
	resp, err := e.Client(t).SnapshotWithVersion(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Snapshot.Close()
	raw, err := io.ReadAll(resp.Snapshot)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// Stop stops the member.
func (e *Etcd) Stop() { e.e.Close() }

func freeURL() (url.URL, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return url.URL{}, err
	}
	addr := l.Addr().String()
	_ = l.Close()
	return url.URL{Scheme: "http", Host: addr}, nil
}

// Fill writes mib MiB of 4 KiB objects through c, 64 to a transaction, as kube-apiserver's
// configmaps would lie in etcd: the benchmarks' database of a given size.
func Fill(t testing.TB, c *clientv3.Client, mib int) {
	t.Helper()
	value := strings.Repeat("k8s-object-", 4096/11)
	ops := make([]clientv3.Op, 0, 64)
	for i := 0; i < mib*256; {
		ops = ops[:0]
		for j := 0; j < 64 && i < mib*256; j++ {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("/registry/configmaps/ns-%d/cm-%d", i%100, i), value))
			i++
		}
		if _, err := c.Txn(t.Context()).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
	}
}
