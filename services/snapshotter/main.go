// Command snapshotter takes the etcd snapshots that backup requests ask for, verifies them
// while they stream, and stages them in JetStream's object store for the uploader.
package main

import "github.com/etcd-backup/etcdbackup/pkg/service"

func main() { service.Main(run) }
