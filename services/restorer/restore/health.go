package restore

import (
	"context"
	"fmt"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/endpoints"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Health is what etcd said when asked whether it is whole again.
type Health struct {
	Members, Healthy int
}

// CheckEtcd asks every endpoint of t for its status and the member list; etcd is healthy
// when it has want members and each endpoint answers with a leader known.
func CheckEtcd(ctx context.Context, t endpoints.Target, want int) (Health, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: t.Endpoints, TLS: t.TLS, DialTimeout: 3 * time.Second, Logger: zap.NewNop(),
	})
	if err != nil {
		return Health{}, fmt.Errorf("etcd client: %w", err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var h Health
	members, err := cli.MemberList(ctx)
	if err != nil {
		return h, fmt.Errorf("member list: %w", err)
	}
	h.Members = len(members.Members)
	var lastErr error
	for _, ep := range t.Endpoints {
		st, err := cli.Status(ctx, ep)
		if err != nil {
			lastErr = fmt.Errorf("%s: %w", ep, err)
			continue
		}
		if st.Leader == 0 || len(st.Errors) > 0 {
			lastErr = fmt.Errorf("%s: no leader or errors %v", ep, st.Errors)
			continue
		}
		h.Healthy++
	}
	if h.Members != want || h.Healthy != len(t.Endpoints) {
		if lastErr == nil {
			lastErr = fmt.Errorf("%d members, want %d", h.Members, want)
		}
		return h, lastErr
	}
	return h, nil
}
