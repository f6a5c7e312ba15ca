// Command restorer drives EtcdRestores: it verifies the backup, pauses the cluster, rebuilds
// its etcd StatefulSet with the restore step (command restore-step) in front of each member,
// waits until etcd is whole, rolls the control plane and unpauses.
package main

import "github.com/etcd-backup/etcdbackup/pkg/service"

func main() { service.Main(run) }
