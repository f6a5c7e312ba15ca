// Command journal keeps the continuous backup's journal: every revision of each continuous
// config's etcd, from its newest full backup on, onto the bus and into segments next to the
// config's backups, so that a restore can bring the cluster back to any point in between.
package main

import "github.com/etcd-backup/etcdbackup/pkg/service"

func main() { service.Main(run) }
