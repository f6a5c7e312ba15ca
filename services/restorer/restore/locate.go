package restore

import (
	"context"
	"fmt"
	"strings"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Backup is where a restore's backup is stored.
type Backup struct {
	// Destination is the Seed destination's name ("" while unresolved: the default).
	Destination string
	ObjectKey   string
}

// Locate finds the backup an EtcdRestore names. The EtcdBackupConfigs of the restore's
// namespace list their backups with destination and object key; a backup no longer listed
// (status entries are capped) is found by its name, which is "<config>-<scheduled time>".
func Locate(ctx context.Context, r client.Reader, restore *kubermaticv1.EtcdRestore) (Backup, error) {
	name := restore.Spec.BackupName
	var configs kubermaticv1.EtcdBackupConfigList
	if err := r.List(ctx, &configs, client.InNamespace(restore.Namespace)); err != nil {
		return Backup{}, fmt.Errorf("list etcdbackupconfigs in %s: %w", restore.Namespace, err)
	}
	for _, cfg := range configs.Items {
		for _, b := range cfg.Status.LastBackups {
			if b.BackupName == name && b.ObjectKey != "" {
				return Backup{Destination: b.Destination, ObjectKey: b.ObjectKey}, nil
			}
		}
	}
	config, ok := ConfigOf(name)
	if !ok {
		return Backup{}, fmt.Errorf("%w: %q is neither listed in the status of an EtcdBackupConfig in %s nor a backup name (<config>-%s)",
			ErrBackupNotFound, name, restore.Namespace, backupname.TimeLayout)
	}
	return Backup{ObjectKey: backupname.ObjectKey(restore.Spec.Cluster.Name, restore.Namespace, config, name)}, nil
}

// ConfigOf splits a backup name "<config>-2006-01-02T15:04:05" into its config's name.
func ConfigOf(backup string) (string, bool) {
	n := len(backupname.TimeLayout)
	if len(backup) < n+2 || backup[len(backup)-n-1] != '-' {
		return "", false
	}
	if _, err := time.Parse(backupname.TimeLayout, backup[len(backup)-n:]); err != nil {
		return "", false
	}
	config := backup[:len(backup)-n-1]
	return config, strings.TrimSpace(config) != ""
}
