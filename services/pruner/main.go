// Command pruner enforces each EtcdBackupConfig's retention: it deletes completed backups
// beyond keep and failed ones, and every backup of a deleted config before letting it go.
package main

import "github.com/etcd-backup/etcdbackup/pkg/service"

func main() { service.Main(run) }
