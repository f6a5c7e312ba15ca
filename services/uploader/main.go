// Command uploader stores staged etcd snapshots, zstd-compressed, in their S3 destination.
package main

import "github.com/etcd-backup/etcdbackup/pkg/service"

func main() { service.Main(run) }
