package restore

import (
	"context"
	"errors"
	"fmt"
	"slices"

	backupv1 "github.com/etcd-backup/etcdbackup/api/etcdbackup/v1"
	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	"github.com/etcd-backup/etcdbackup/pkg/trust"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ErrNotPermitted: the restore names a deleted config's backups (AnnotationDeletedBackups)
// that its namespace may not restore.
var ErrNotPermitted = errors.New("not permitted")

// Backup is where a restore's backup is stored.
type Backup struct {
	// Destination is the Seed destination's name ("" while unresolved: the default).
	Destination string
	ObjectKey   string
	// Deleted: a backup of a DeletedBackupSet, in the destination the set records, whatever
	// the restore's spec.destination says.
	Deleted bool
}

// Locate finds the backup an EtcdRestore names. Its object key is derived from the backup's
// name ("<config>-<scheduled time>"), the restore's cluster and namespace, never read from
// status (anyone who may write a config's status could point it elsewhere). The destination
// is the restore's own, else that of the config the name belongs to, else the default. A
// restore annotated AnnotationDeletedBackups restores a backup of that DeletedBackupSet, from
// where the set says (locateDeleted).
func Locate(ctx context.Context, r client.Reader, restore *kubermaticv1.EtcdRestore) (Backup, error) {
	if set, ok := restore.Annotations[backupv1.AnnotationDeletedBackups]; ok {
		return locateDeleted(ctx, r, restore, set)
	}
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

// locateDeleted finds the backup restore names in the DeletedBackupSet name. The set is
// cluster-scoped, written by the pruner and the Seed's operators only, so its keys are
// trusted; who may restore them is not the restore's to say: its namespace must be the
// deleted config's own (the same namespace, not one re-created under its name) or one the
// set's spec.restoreInto lists.
func locateDeleted(ctx context.Context, r client.Reader, restore *kubermaticv1.EtcdRestore,
	name string) (Backup, error) {
	if _, pit := restore.Annotations[kubermaticv1.AnnotationRestoreTo]; pit {
		return Backup{}, fmt.Errorf("%w: a deleted config's backups are restored as they are: its journal went with it "+
			"(remove annotation %s)", ErrTarget, kubermaticv1.AnnotationRestoreTo)
	}
	var set backupv1.DeletedBackupSet
	if err := r.Get(ctx, types.NamespacedName{Name: name}, &set); err != nil {
		if apierrors.IsNotFound(err) {
			return Backup{}, fmt.Errorf("%w: there is no DeletedBackupSet %q (kubectl get deletedbackupsets lists them)",
				ErrBackupNotFound, name)
		}
		return Backup{}, fmt.Errorf("get deletedbackupset %s: %w", name, err)
	}
	if set.DeletionTimestamp != nil {
		return Backup{}, fmt.Errorf("%w: DeletedBackupSet %q is being deleted, and its backups with it", ErrBackupNotFound,
			name)
	}
	if !slices.Contains(set.Spec.RestoreInto, restore.Namespace) {
		var ns corev1.Namespace
		if err := r.Get(ctx, types.NamespacedName{Name: restore.Namespace}, &ns); err != nil {
			return Backup{}, fmt.Errorf("get namespace %s: %w", restore.Namespace, err)
		}
		if ns.Name != set.Spec.Namespace || ns.UID != set.Spec.NamespaceUID {
			return Backup{}, fmt.Errorf("%w: DeletedBackupSet %q holds backups of namespace %q (uid %s); namespace %q "+
				"(uid %s) may restore them only once an operator adds it to the set's spec.restoreInto", ErrNotPermitted, name,
				set.Spec.Namespace, set.Spec.NamespaceUID, ns.Name, ns.UID)
		}
	}
	b, ok := set.Backup(restore.Spec.BackupName)
	if !ok {
		names := make([]string, 0, len(set.Spec.Backups))
		for _, b := range set.Spec.Backups {
			names = append(names, b.Name)
		}
		return Backup{}, fmt.Errorf("%w: DeletedBackupSet %q has no backup %q; it holds %v", ErrBackupNotFound, name,
			restore.Spec.BackupName, names)
	}
	key, err := trust.DeletedKey(&set, b)
	if err != nil {
		return Backup{}, fmt.Errorf("%w: %w", ErrBackupNotFound, err)
	}
	return Backup{Destination: b.Destination, ObjectKey: key, Deleted: true}, nil
}
