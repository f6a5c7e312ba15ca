package v1

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Phases of an EtcdRestore.
const (
	RestorePhaseStarted                = "Started"
	RestorePhaseStsRebuilding          = "StsRebuilding"
	RestorePhaseCompleted              = "Completed"
	RestorePhaseEtcdLauncherNotEnabled = "EtcdLauncherNotEnabled"
	RestorePhaseFailed                 = "Failed"
)

// AnnotationRestoreStatus holds the restorer's whole status of an EtcdRestore, as JSON, when
// the EtcdRestore's CRD keeps less of it: KKP's keeps only a phase of its enum (no Failed) and
// restoreTime, and requires the phase. The restorer reads this annotation back before
// status, so a restore runs the same under either schema (see EffectiveStatus).
const AnnotationRestoreStatus = "etcdbackup.k8c.io/restore-status"

// AnnotationRestoreTo on an EtcdRestore asks for a point-in-time restore of a continuous
// config: "<RFC 3339 time>" or "revision:<n>". spec.backupName names the config (any of its
// backups, or the config's own name); the restorer picks the newest full backup at or before
// the target and replays the journal up to it (docs/restore.md).
const AnnotationRestoreTo = "etcdbackup.k8c.io/restore-to"

// ParseRestoreTo reads AnnotationRestoreTo: a revision ("revision:<n>", n > 0) or a time
// (RFC 3339); exactly one of the two results is set.
func ParseRestoreTo(s string) (revision int64, at time.Time, err error) {
	if n, ok := strings.CutPrefix(s, "revision:"); ok {
		rev, err := strconv.ParseInt(n, 10, 64)
		if err != nil || rev < 1 {
			return 0, time.Time{}, fmt.Errorf("%q is not revision:<n> with n a positive integer", s)
		}
		return rev, time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time (2026-12-05T14:03:11Z) nor revision:<n>", s)
	}
	return 0, t, nil
}

// AnnotationDecryptionSecret on an EtcdRestore names a Secret in the cluster's namespace whose
// key "identity" holds the age identities an encrypted backup is decrypted with (KKP's
// EtcdRestore has no field for it); without it the destination's decryptionSecret is used.
const AnnotationDecryptionSecret = "etcdbackup.k8c.io/decryption-secret"

// PreRestorePrefix names the one-time EtcdBackupConfig the restorer creates, controlled by
// the EtcdRestore, to back up a cluster's etcd just before restoring it: "pre-restore-<restore>".
// Its backup undoes the restore (EtcdRestoreStatus.PreRestoreBackup).
const PreRestorePrefix = "pre-restore-"

// PreRestoreConfig is the name of restore's pre-restore config.
func PreRestoreConfig(restore string) string { return PreRestorePrefix + restore }

// RestoreFinalizer keeps an EtcdRestore until the restorer has let go of its cluster: a
// restore deleted before the cluster is paused is cancelled; one deleted later finishes first.
const RestoreFinalizer = "etcdbackup.k8c.io/restore"

// EtcdRestore restores a cluster's etcd from a backup.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=kubermatic
// +kubebuilder:printcolumn:name="Cluster",type=string,JSONPath=`.spec.cluster.name`
// +kubebuilder:printcolumn:name="Backup",type=string,JSONPath=`.spec.backupName`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Progress",type=string,JSONPath=`.status.progress`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type EtcdRestore struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   EtcdRestoreSpec   `json:"spec"`
	Status EtcdRestoreStatus `json:"status,omitempty"`
}

// EtcdRestoreSpec names the cluster and the backup to restore it from.
type EtcdRestoreSpec struct {
	// +optional
	Name string `json:"name,omitempty"`
	// Cluster references the Cluster whose etcd is restored.
	Cluster corev1.ObjectReference `json:"cluster"`
	// BackupName is a backup's name as listed in EtcdBackupConfig status.lastBackups.
	// +kubebuilder:validation:MinLength=1
	BackupName string `json:"backupName"`
	// Destination names a Seed backup destination; omitted: the Seed's default.
	// +optional
	Destination string `json:"destination,omitempty"`
	// BackupDownloadCredentialsSecret names a Secret with read-only credentials for the download.
	// +optional
	BackupDownloadCredentialsSecret string `json:"backupDownloadCredentialsSecret,omitempty"`
}

// EtcdRestoreStatus is the restore's progress.
type EtcdRestoreStatus struct {
	// +kubebuilder:validation:Enum=Started;StsRebuilding;Completed;EtcdLauncherNotEnabled;Failed
	// +optional
	Phase string `json:"phase,omitempty"`
	// +optional
	RestoreTime metav1.Time `json:"restoreTime,omitempty"`
	// Message says what the restore is doing or waiting for, why it failed and what to do next.
	// +optional
	Message string `json:"message,omitempty"`
	// StartTime is when the restore took the cluster's lock and began.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`
	// PhaseTime is when the current phase began.
	// +optional
	PhaseTime *metav1.Time `json:"phaseTime,omitempty"`
	// Destination, ObjectKey and SHA256 name the stored backup restored from, once verified.
	// +optional
	Destination string `json:"destination,omitempty"`
	// +optional
	ObjectKey string `json:"objectKey,omitempty"`
	// +optional
	SHA256 string `json:"sha256,omitempty"`
	// Progress is how far the restore got, short enough for a column: "verifying",
	// "tearing down", "members restored 1/3", "done".
	// +optional
	Progress string `json:"progress,omitempty"`
	// PreRestoreBackup names the backup of the cluster's etcd taken just before the restore
	// (config pre-restore-<restore>): an EtcdRestore of it undoes this one.
	// +optional
	PreRestoreBackup string `json:"preRestoreBackup,omitempty"`
	// PreRestoreSkipped says why there is no pre-restore backup (etcd unhealthy, the backup
	// failed or took too long, or turned off).
	// +optional
	PreRestoreSkipped string `json:"preRestoreSkipped,omitempty"`
}

// EtcdRestoreList is a list of EtcdRestores.
//
// +kubebuilder:object:root=true
type EtcdRestoreList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []EtcdRestore `json:"items"`
}

// EffectiveStatus is the restorer's status of r: the one in AnnotationRestoreStatus when that
// holds a valid one (under a CRD that prunes or refuses this project's status), else status.
func (r *EtcdRestore) EffectiveStatus() EtcdRestoreStatus {
	if s, ok := annotatedStatus(r.Annotations[AnnotationRestoreStatus]); ok {
		return s
	}
	return r.Status
}

func annotatedStatus(v string) (EtcdRestoreStatus, bool) {
	var s EtcdRestoreStatus
	if v == "" || json.Unmarshal([]byte(v), &s) != nil {
		return s, false
	}
	switch s.Phase {
	case "", RestorePhaseStarted, RestorePhaseStsRebuilding, RestorePhaseCompleted, RestorePhaseEtcdLauncherNotEnabled,
		RestorePhaseFailed:
		return s, true
	}
	return s, false
}

// Finished reports whether the restore has ended (Completed or Failed).
func (s *EtcdRestoreStatus) Finished() bool {
	return s.Phase == RestorePhaseCompleted || s.Phase == RestorePhaseFailed
}
