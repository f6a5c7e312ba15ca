package etcdtest

import (
	"net"
	"net/url"
	"testing"

	"go.etcd.io/etcd/server/v3/embed"
)

// A port taken between being found free and etcd binding it (another test process, an
// outgoing connection) costs a second start on other ports, not the test.
func TestStartInTriesOtherPortsWhenOneIsTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	busy := url.URL{Scheme: "http", Host: taken.Addr().String()}
	calls := 0
	e, err := StartIn(t.TempDir(), "default", func(cfg *embed.Config) {
		calls++
		if calls == 1 {
			cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{busy}, []url.URL{busy}
		}
	})
	if err != nil {
		t.Fatalf("start with the first client port taken: %v", err)
	}
	defer e.Stop()
	if calls != 2 || e.Endpoint == busy.String() {
		t.Fatalf("%d starts, endpoint %s (taken: %s); want a second start elsewhere", calls, e.Endpoint, busy.String())
	}
	if _, err := e.Client(t).Put(t.Context(), "k", "v"); err != nil {
		t.Fatal(err)
	}
}
