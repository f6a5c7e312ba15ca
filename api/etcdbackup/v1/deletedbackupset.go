package v1

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// DeletedBackupSetFinalizer keeps a DeletedBackupSet until the pruner has deleted its backups
// (or handed them to a config re-created under the same name, which lists them as its own).
const DeletedBackupSetFinalizer = "etcdbackup.k8c.io/delete-backups"

// AnnotationDeletedBackups on an EtcdRestore names the DeletedBackupSet whose backup
// spec.backupName restores: a backup of a config that was deleted, kept for the grace period.
const AnnotationDeletedBackups = "etcdbackup.k8c.io/deleted-backups"

// Phases of a DeletedBackupSet.
const (
	// DeletedPhaseKept: the backups are kept until spec.expires.
	DeletedPhaseKept = "Kept"
	// DeletedPhaseDeleting: the grace ended (or the set was deleted): the backups are being deleted.
	DeletedPhaseDeleting = "Deleting"
)

// DeletedBackupSet records the backups an EtcdBackupConfig left when it (or its namespace)
// was deleted: the pruner keeps them until spec.expires (its --deletion-grace after the
// deletion), then deletes them and this object. Deleting the object deletes the backups at
// once. It is cluster-scoped: only who may write it (the Seed's operators) can let another
// namespace restore from it (spec.restoreInto).
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=dbs,categories=etcdbackup
// +kubebuilder:printcolumn:name="Namespace",type=string,JSONPath=`.spec.namespace`
// +kubebuilder:printcolumn:name="Config",type=string,JSONPath=`.spec.config`
// +kubebuilder:printcolumn:name="Cluster",type=string,JSONPath=`.spec.cluster`
// +kubebuilder:printcolumn:name="Backups",type=integer,JSONPath=`.status.backups`
// +kubebuilder:printcolumn:name="Newest",type=string,JSONPath=`.status.newest`
// +kubebuilder:printcolumn:name="Expires",type=date,JSONPath=`.spec.expires`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
type DeletedBackupSet struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   DeletedBackupSetSpec   `json:"spec"`
	Status DeletedBackupSetStatus `json:"status,omitempty"`
}

// DeletedBackupSetSpec is the deleted config and its backups, as the pruner found them.
type DeletedBackupSetSpec struct {
	// Namespace, Config and ConfigUID name the deleted EtcdBackupConfig.
	// +kubebuilder:validation:MinLength=1
	Namespace string `json:"namespace"`
	// NamespaceUID is the uid of the namespace when the config was deleted: an EtcdRestore in a
	// namespace of the same name but another uid (re-created) needs spec.restoreInto.
	NamespaceUID types.UID `json:"namespaceUID,omitempty"`
	// +kubebuilder:validation:MinLength=1
	Config    string    `json:"config"`
	ConfigUID types.UID `json:"configUID"`
	// Cluster is the config's spec.cluster.name.
	Cluster string `json:"cluster"`
	// DeletedAt is when the config's deletion began.
	DeletedAt metav1.Time `json:"deletedAt"`
	// Expires is when the pruner deletes the backups; an operator may move it.
	Expires metav1.Time `json:"expires"`
	// Backups are the kept backups, newest first.
	Backups []DeletedBackup `json:"backups"`
	// RestoreInto are the namespaces, besides the config's own (under the same uid), whose
	// EtcdRestores may restore these backups (annotation etcdbackup.k8c.io/deleted-backups).
	// +optional
	RestoreInto []string `json:"restoreInto,omitempty"`
}

// DeletedBackup is one kept backup.
type DeletedBackup struct {
	// Name is the backup's name, <config>-<scheduled time>.
	Name string `json:"name"`
	// Destination is the Seed destination that holds the object.
	Destination string `json:"destination"`
	ObjectKey   string `json:"objectKey"`
	// Size in bytes as stored.
	Size int64 `json:"size,omitempty"`
	// Stored is when the bucket stored it.
	// +optional
	Stored *metav1.Time `json:"stored,omitempty"`
}

// DeletedBackupSetStatus is what the pruner did with the set.
type DeletedBackupSetStatus struct {
	// +optional
	Phase string `json:"phase,omitempty"`
	// +optional
	Message string `json:"message,omitempty"`
	// Backups counts spec.backups not deleted yet; Newest names the newest.
	// +optional
	Backups int `json:"backups,omitempty"`
	// +optional
	Newest string `json:"newest,omitempty"`
}

// DeletedBackupSetList is a list of DeletedBackupSets.
//
// +kubebuilder:object:root=true
type DeletedBackupSetList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []DeletedBackupSet `json:"items"`
}

// DeletedBackupSetName is the name of the set a config (namespace, name, uid) leaves:
// "<namespace>.<config>.<first 8 of its uid>", or a digest of the three when that is longer
// than a name may be.
func DeletedBackupSetName(namespace, config string, uid types.UID) string {
	short := string(uid)
	if len(short) > 8 {
		short = short[:8]
	}
	name := namespace + "." + config + "." + short
	if len(name) <= 253 {
		return name
	}
	sum := sha256.Sum256([]byte(namespace + "/" + config + "/" + string(uid)))
	return "deleted-" + hex.EncodeToString(sum[:16])
}

// Backup returns the kept backup named name.
func (s *DeletedBackupSet) Backup(name string) (DeletedBackup, bool) {
	i := slices.IndexFunc(s.Spec.Backups, func(b DeletedBackup) bool { return b.Name == name })
	if i < 0 {
		return DeletedBackup{}, false
	}
	return s.Spec.Backups[i], true
}

// Expired says the grace of the set ended at now.
func (s *DeletedBackupSet) Expired(now time.Time) bool { return !now.Before(s.Spec.Expires.Time) }
