package endpoints

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// Member is a client bound to one member of a target, and what the member said of itself.
type Member struct {
	Client   *clientv3.Client
	Endpoint string
	Status   *clientv3.StatusResponse
}

// Healthy returns a client of the first of t's members that answers a status request without
// errors, bound to that member alone: what one member streams (a snapshot, a watch, a
// HashKV) is that member's. timeout bounds the dial and the status request, and the gRPC
// keepalive's answer, so that a member that vanished is noticed within it; dial adds gRPC
// options. The caller closes the client.
func Healthy(ctx context.Context, t Target, timeout time.Duration, dial ...grpc.DialOption) (Member, error) {
	var errs []string
	for _, ep := range t.Endpoints {
		cli, err := clientv3.New(clientv3.Config{
			Endpoints:            []string{ep},
			TLS:                  t.TLS,
			DialTimeout:          timeout,
			DialKeepAliveTime:    10 * time.Second,
			DialKeepAliveTimeout: timeout,
			Logger:               zap.NewNop(),
			DialOptions:          dial,
		})
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", ep, err))
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, timeout)
		st, err := cli.Status(sctx, ep)
		cancel()
		if err == nil && len(st.Errors) == 0 {
			return Member{Client: cli, Endpoint: ep, Status: st}, nil
		}
		if err == nil {
			err = errors.New(strings.Join(st.Errors, "; "))
		}
		errs = append(errs, fmt.Sprintf("%s: %v", ep, err))
		_ = cli.Close()
	}
	return Member{}, fmt.Errorf("no healthy etcd member: %s", strings.Join(errs, "; "))
}
