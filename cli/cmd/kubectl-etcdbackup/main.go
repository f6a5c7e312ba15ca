// Command kubectl-etcdbackup is the etcd backup system's kubectl plugin: kubectl etcdbackup ls,
// describe, backup, restore. It works with the user's kubeconfig and RBAC (docs/cli.md).
package main

import (
	"os"

	"github.com/etcd-backup/etcdbackup/cli/plugin"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

func main() {
	cmd := plugin.NewCommand(genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr})
	if err := plugin.Execute(cmd, os.Args[1:]); err != nil {
		os.Exit(1)
	}
}
