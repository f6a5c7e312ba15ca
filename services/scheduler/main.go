// Command scheduler watches EtcdBackupConfigs and queues a backup request for every due slot,
// serves the manual trigger, and writes every stage's status events to the configs' status.
package main

import "github.com/etcd-backup/etcdbackup/pkg/service"

func main() { service.Main(run) }
