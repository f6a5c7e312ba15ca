// Package e2e runs the services as processes against real components: kube-apiserver with its
// etcd, NATS JetStream, the versitygw S3 server and a demo etcd (see package sandbox).
package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/etcd-backup/etcdbackup/e2e/sandbox"
)

var env *sandbox.Env

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	tools := sandbox.ToolDir()
	if err := sandbox.CheckTools(tools); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dir, err := os.MkdirTemp("", "etcdbackup-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	root, err := sandbox.RepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	svcDir := filepath.Join(dir, "bin")
	if err := sandbox.BuildServices(ctx, root, svcDir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	env, err = sandbox.Start(ctx, sandbox.Options{
		Dir:        dir,
		ToolDir:    tools,
		ServiceDir: svcDir,
		// Two schedulers and three pruners always run: tests check each slot is queued once
		// and each backup deleted once. Two restorers: one leads, one stands by.
		Replicas: map[string]int{"scheduler": 2, "pruner": 3, "restorer": 2},
		Args: map[string][]string{
			"scheduler":   {"--trigger-min-interval=2s"},
			"snapshotter": {"--max-attempts=2", "--retry-delay=200ms", "--member-timeout=1s"},
			"uploader":    {"--retry-delay=200ms", "--retry-max-delay=1s", "--part-size-mib=5"},
			"pruner":      {"--reconcile-interval=2s", "--retry-delay=200ms", "--retry-max-delay=1s"},
			"restorer":    {"--poll-interval=200ms"},
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "start sandbox:", err)
		fmt.Fprintln(os.Stderr, "state and logs kept in", dir)
		return 1
	}
	code := m.Run()
	env.Close()
	if code == 0 {
		_ = os.RemoveAll(dir)
	} else {
		fmt.Fprintln(os.Stderr, "state and logs kept in", dir)
	}
	return code
}
