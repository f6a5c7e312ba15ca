// Command console is the web console of the etcd backups: clusters and their backup configs,
// a config's backups, adding or editing a config with presets, one-time backups, restores
// and their phases, live from the status events. Every Kubernetes call is made with the
// signed-in user's own token, so Kubernetes RBAC decides what each user sees and changes.
package main

import "github.com/etcd-backup/etcdbackup/pkg/service"

func main() { service.Main(run) }
