package restore

import (
	"context"
	"fmt"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Backup is where a restore's backup is stored.
type Backup struct {
	// Destination is the Seed destination's name ("" while unresolved: the default).
	Destination string
	ObjectKey   string
}

// Locate finds the backup an EtcdRestore names. Its object key is derived from the backup's
// name ("<config>-<scheduled time>"), the restore's cluster and namespace, never read from
// status (anyone who may write a config's status could point it elsewhere). The destination
// is the restore's own, else that of the config the name belongs to, else the default.
func Locate(ctx context.Context, r client.Reader, restore *kubermaticv1.EtcdRestore) (Backup, error) {
	name := restore.Spec.BackupName
	config, ok := configOf(restore)
	if !ok {
		return Backup{}, fmt.Errorf("%w: %q is not a backup name (<config>-%s)", ErrBackupNotFound, name,
			backupname.TimeLayout)
	}
	key, _ := ObjectKeyOf(restore)
	b := Backup{Destination: restore.Spec.Destination, ObjectKey: key}
	if b.Destination == "" {
		var cfg kubermaticv1.EtcdBackupConfig
		err := r.Get(ctx, types.NamespacedName{Namespace: restore.Namespace, Name: config}, &cfg)
		if client.IgnoreNotFound(err) != nil {
			return Backup{}, fmt.Errorf("get etcdbackupconfig %s/%s: %w", restore.Namespace, config, err)
		}
		b.Destination = cfg.Spec.Destination
	}
	return b, nil
}

// ObjectKeyOf is the key of the backup restore's spec names, derived from the spec alone; for
// a point-in-time restore (AnnotationRestoreTo), the key of the database built for it.
func ObjectKeyOf(restore *kubermaticv1.EtcdRestore) (string, bool) {
	config, ok := configOf(restore)
	if !ok {
		return "", false
	}
	if _, pit := restore.Annotations[kubermaticv1.AnnotationRestoreTo]; pit {
		return PointInTimeKey(backupname.Prefix(restore.Spec.Cluster.Name, restore.Namespace, config), restore), true
	}
	return objectKey(restore, config), true
}

// configOf is the config whose backup restore names; a point-in-time restore may name the
// config itself.
func configOf(restore *kubermaticv1.EtcdRestore) (string, bool) {
	config, ok := ConfigOf(restore.Spec.BackupName)
	if !ok && restore.Annotations[kubermaticv1.AnnotationRestoreTo] != "" && restore.Spec.BackupName != "" {
		return restore.Spec.BackupName, true
	}
	return config, ok
}

func objectKey(restore *kubermaticv1.EtcdRestore, config string) string {
	return backupname.ObjectKey(restore.Spec.Cluster.Name, restore.Namespace, config, restore.Spec.BackupName)
}

// ConfigOf splits a backup name "<config>-2006-01-02T15:04:05" into its config's name.
func ConfigOf(backup string) (string, bool) { return backupname.ConfigOf(backup) }
