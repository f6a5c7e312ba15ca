package v1

import (
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AnnotationLastManualBackup records on an EtcdBackupConfig when the manual trigger last
// queued a backup of it (RFC 3339, UTC), so that every scheduler replica enforces
// --trigger-min-interval. An annotation, so it survives any CRD schema.
const AnnotationLastManualBackup = "etcdbackup.k8c.io/last-manual-backup"

// AnnotationContinuous turns continuous backup of an EtcdBackupConfig on ("on") or off
// ("off"); absent, the journal's --continuous-default decides. A continuous config's etcd is
// journaled revision by revision between its full backups, and can be restored to any point
// of its restorable window (docs/restore.md). It needs a schedule: full backups anchor the
// journal.
const AnnotationContinuous = "etcdbackup.k8c.io/continuous"

// Values of AnnotationContinuous.
const (
	ContinuousOn  = "on"
	ContinuousOff = "off"
)

// DefaultKeep is how many completed backups are kept when spec.keep is unset.
const DefaultKeep = 20

// MaxKeep is the most completed backups one config may keep. KKP's CRD sets no maximum; a
// larger keep is refused (InvalidKeep). A thousand is about ten days of backups every fifteen
// minutes, or three years of daily ones; beyond it, one config's listing and retention pass
// would grow without bound, and twice keep (TooManyBackups) could overflow.
const MaxKeep = 1000

// DeleteAllBackupsFinalizer holds an EtcdBackupConfig until all its backups are deleted.
const DeleteAllBackupsFinalizer = "kubermatic.k8c.io/delete-all-backups"

// Backup and delete phases of status.lastBackups entries.
const (
	PhaseRunning   = "Running"
	PhaseCompleted = "Completed"
	PhaseFailed    = "Failed"
)

// Condition types and reasons of EtcdBackupConfig.
const (
	// ConditionSchedulingActive is True while the scheduler takes backups for the config.
	ConditionSchedulingActive = "SchedulingActive"
	// ConditionBackupsDeleted is False, on a config being deleted, while its backups are not
	// all deleted yet (reasons DeletionPending, DestinationUnreachable).
	ConditionBackupsDeleted = "BackupsDeleted"
	// ConditionBackupsCopied says, on a config whose destination has copyTo, whether every
	// backup and journal segment is also in the copy destination, verified (pruner): True,
	// Copied; False, CopyPending (the message says what is not copied yet, since when, and why).
	ConditionBackupsCopied = "BackupsCopied"
	// ConditionBackupRestorable says how the newest restore drill of the config's newest
	// backup went (restorer): True, DrillPassed; False, DrillFailed; Unknown, DrillNotRun or
	// InvalidDrillSchedule. LastHeartbeatTime is when the last drill ran.
	ConditionBackupRestorable = "BackupRestorable"
	// ConditionContinuousBackup says, on a continuous config, the window it can be restored
	// to any point of (journal): True, Restorable; False, NotRestorable (no full backup
	// anchors the journal yet, or the journal failed). LastHeartbeatTime is when the journal
	// last looked.
	ConditionContinuousBackup = "ContinuousBackup"
	ReasonRestorable          = "Restorable"
	ReasonNotRestorable       = "NotRestorable"

	ReasonScheduled       = "Scheduled"
	ReasonOneTimeBackup   = "OneTimeBackup"
	ReasonInvalidSchedule = "InvalidSchedule"
	ReasonInvalidKeep     = "InvalidKeep"
	// ReasonScheduleTooFrequent: the schedule asks for backups more often than the operator's
	// floor (the scheduler's --min-interval).
	ReasonScheduleTooFrequent = "ScheduleTooFrequent"
	// ReasonInvalidDestination: spec.destination is not a DNS-1123 subdomain, so no message
	// naming it is valid.
	ReasonInvalidDestination  = "InvalidDestination"
	ReasonDestinationNotFound = "DestinationNotFound"
	ReasonNoDestinations      = "NoDestinations"
	ReasonClusterNotFound     = "ClusterNotFound"
	// ReasonClusterNamespaceMismatch: the object is not in its cluster's namespace (the
	// Cluster's status.namespaceName, else cluster-<name>); nothing is done for it.
	ReasonClusterNamespaceMismatch = "ClusterNamespaceMismatch"
	ReasonClusterPaused            = "ClusterPaused"
	ReasonClusterRestoring         = "ClusterRestoring"
	ReasonTooManyBackups           = "TooManyBackups"
)

// EtcdBackupConfig schedules backups of a user cluster's etcd.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=kubermatic
// +kubebuilder:printcolumn:name="Cluster",type=string,JSONPath=`.spec.cluster.name`
// +kubebuilder:printcolumn:name="Schedule",type=string,JSONPath=`.spec.schedule`
// +kubebuilder:printcolumn:name="Keep",type=integer,JSONPath=`.spec.keep`
// +kubebuilder:printcolumn:name="Destination",type=string,JSONPath=`.spec.destination`
// +kubebuilder:printcolumn:name="Last Backup",type=string,JSONPath=`.status.lastBackupName`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.lastBackupPhase`
// +kubebuilder:printcolumn:name="Point In Time",type=string,JSONPath=`.status.conditions.ContinuousBackup.message`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type EtcdBackupConfig struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   EtcdBackupConfigSpec   `json:"spec"`
	Status EtcdBackupConfigStatus `json:"status,omitempty"`
}

// EtcdBackupConfigSpec says which cluster to back up, when, how many backups to keep and where.
type EtcdBackupConfigSpec struct {
	// Name is an optional display name.
	// +optional
	Name string `json:"name,omitempty"`
	// Cluster references the Cluster whose etcd is backed up. It cannot change: the backups
	// listed in status, and the prefix they are stored under, are that cluster's.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.cluster is immutable: the config's backups belong to its cluster; create another EtcdBackupConfig for another cluster"
	Cluster corev1.ObjectReference `json:"cluster"`
	// Schedule is a cron expression (5 fields, or @every/@hourly/@daily/@weekly/@monthly).
	// Omitted: one backup, taken once.
	// +optional
	Schedule string `json:"schedule,omitempty"`
	// Keep is how many completed backups are kept (default 20). Ignored for one-time backups.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +optional
	Keep *int `json:"keep,omitempty"`
	// Destination names a backup destination of the Seed; omitted: the Seed's default.
	// +optional
	Destination string `json:"destination,omitempty"`
}

// EtcdBackupConfigStatus lists the config's backups and whether scheduling is active. Its
// shape is KKP's own (currentBackups, conditions as a map keyed by type), so the services'
// status writes stand under KKP's CRD too; lastBackups, the seed document's name for the same
// list, is written alongside for this project's CRD (KKP's prunes it).
type EtcdBackupConfigStatus struct {
	// CurrentBackups lists the backups of this config, oldest first (KKP's name).
	// +optional
	CurrentBackups []BackupStatus `json:"currentBackups,omitempty"`
	// LastBackups is the same list under the seed document's name.
	// +optional
	LastBackups []BackupStatus `json:"lastBackups,omitempty"`
	// LastBackupName and LastBackupPhase summarise the newest entry.
	// +optional
	LastBackupName string `json:"lastBackupName,omitempty"`
	// +optional
	LastBackupPhase string `json:"lastBackupPhase,omitempty"`
	// Conditions, keyed by type, as KKP keeps them.
	// +optional
	Conditions map[string]EtcdBackupConfigCondition `json:"conditions,omitempty"`
}

// EtcdBackupConfigCondition is one condition of a config, in KKP's shape.
type EtcdBackupConfigCondition struct {
	// Status of the condition: True, False or Unknown.
	Status corev1.ConditionStatus `json:"status"`
	// LastHeartbeatTime is when the condition was last written.
	LastHeartbeatTime metav1.Time `json:"lastHeartbeatTime"`
	// LastTransitionTime is when the status last changed.
	// +optional
	LastTransitionTime metav1.Time `json:"lastTransitionTime,omitempty"`
	// +optional
	Reason string `json:"reason,omitempty"`
	// +optional
	Message string `json:"message,omitempty"`
}

// Backups is the config's list of backups: currentBackups, or lastBackups on an object written
// before both were.
func (s *EtcdBackupConfigStatus) Backups() []BackupStatus {
	if len(s.CurrentBackups) > 0 {
		return s.CurrentBackups
	}
	return s.LastBackups
}

// MaxLastBackups is how many entries, the newest, lastBackups repeats of currentBackups: what
// the seed's example shows, without doubling a status that keeps a thousand backups (etcd
// refuses an object over 1.5 MiB).
const MaxLastBackups = 50

// SetBackups writes the list (oldest first) as currentBackups, and its newest MaxLastBackups
// entries as lastBackups.
func (s *EtcdBackupConfigStatus) SetBackups(b []BackupStatus) {
	s.CurrentBackups = b
	s.LastBackups = append([]BackupStatus(nil), b[max(len(b)-MaxLastBackups, 0):]...)
}

// Condition returns the condition of type t, or nil.
func (s *EtcdBackupConfigStatus) Condition(t string) *EtcdBackupConfigCondition {
	if c, ok := s.Conditions[t]; ok {
		return &c
	}
	return nil
}

// SetCondition sets the condition of type t and reports whether anything changed; an
// unchanged condition is left as it is (no write just for a heartbeat).
func (s *EtcdBackupConfigStatus) SetCondition(t string, status corev1.ConditionStatus, reason, message string,
	now metav1.Time) bool {
	prev, had := s.Conditions[t]
	if had && prev.Status == status && prev.Reason == reason && prev.Message == message {
		return false
	}
	c := EtcdBackupConfigCondition{Status: status, LastHeartbeatTime: now, LastTransitionTime: now, Reason: reason,
		Message: message}
	if had && prev.Status == status {
		c.LastTransitionTime = prev.LastTransitionTime
	}
	if s.Conditions == nil {
		s.Conditions = map[string]EtcdBackupConfigCondition{}
	}
	s.Conditions[t] = c
	return true
}

// BackupStatus is one backup of a config and, once retention removes it, its deletion.
type BackupStatus struct {
	ScheduledTime metav1.Time `json:"scheduledTime,omitempty"`
	BackupName    string      `json:"backupName,omitempty"`
	JobName       string      `json:"jobName,omitempty"`
	// +optional
	BackupStartTime metav1.Time `json:"backupStartTime,omitempty"`
	// +optional
	BackupFinishedTime metav1.Time `json:"backupFinishedTime,omitempty"`
	// +kubebuilder:validation:Enum=Running;Completed;Failed
	// +optional
	BackupPhase string `json:"backupPhase,omitempty"`
	// +optional
	BackupMessage string `json:"backupMessage,omitempty"`
	// +optional
	DeleteJobName string `json:"deleteJobName,omitempty"`
	// +optional
	DeleteStartTime metav1.Time `json:"deleteStartTime,omitempty"`
	// +optional
	DeleteFinishedTime metav1.Time `json:"deleteFinishedTime,omitempty"`
	// +kubebuilder:validation:Enum=Running;Completed;Failed
	// +optional
	DeletePhase string `json:"deletePhase,omitempty"`
	// +optional
	DeleteMessage string `json:"deleteMessage,omitempty"`

	// Destination is the Seed destination the backup is stored in.
	// +optional
	Destination string `json:"destination,omitempty"`
	// ObjectKey is the backup's key in the destination bucket.
	// +optional
	ObjectKey string `json:"objectKey,omitempty"`
	// Size is the stored (compressed) object's size in bytes.
	// +optional
	Size int64 `json:"size,omitempty"`
	// SHA256 is the stored object's sha256, hex.
	// +optional
	SHA256 string `json:"sha256,omitempty"`
	// EtcdRevision is the etcd revision the snapshot holds.
	// +optional
	EtcdRevision int64 `json:"etcdRevision,omitempty"`
	// Object is the stored object's record in the bucket, read back from the bucket when the
	// status writer confirms the backup's completion: what a user who cannot read the
	// destination's credentials would otherwise not see.
	// +optional
	Object *StoredObject `json:"object,omitempty"`
}

// StoredObject is what the bucket holds of a stored backup besides its bytes: the object's
// metadata (written by the uploader) and its Object Lock retention.
type StoredObject struct {
	// Codec is the chain the stored bytes were written with: zstd, or zstd+age (encrypted).
	// +optional
	Codec string `json:"codec,omitempty"`
	// Recipients are the fingerprints (the first 8 bytes of the sha256 of the "age1..."
	// recipient, hex) of the age recipients an encrypted backup is sealed to.
	// +optional
	Recipients []string `json:"recipients,omitempty"`
	// SnapshotSize is the etcd snapshot's size in bytes, before compression.
	// +optional
	SnapshotSize int64 `json:"snapshotSize,omitempty"`
	// SnapshotSHA256 is etcd's own trailing hash of the snapshot, hex.
	// +optional
	SnapshotSHA256 string `json:"snapshotSHA256,omitempty"`
	// KeyCount is the number of keys in etcd at the snapshot's revision.
	// +optional
	KeyCount int64 `json:"keyCount,omitempty"`
	// RetainUntil is when the object's Object Lock retention ends: the bucket refuses to
	// delete this version before then. Unset when the destination locks nothing.
	// +optional
	RetainUntil *metav1.Time `json:"retainUntil,omitempty"`
	// LockMode is the Object Lock mode of that retention: GOVERNANCE or COMPLIANCE.
	// +optional
	LockMode string `json:"lockMode,omitempty"`
}

// EtcdBackupConfigList is a list of EtcdBackupConfigs.
//
// +kubebuilder:object:root=true
type EtcdBackupConfigList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []EtcdBackupConfig `json:"items"`
}

// KeepCount is spec.keep, defaulted, and never below 1: KKP's CRD takes any integer, and a
// keep of 0 must not read as "delete every backup" (the scheduler refuses such a config with
// InvalidKeep; the pruner keeps at least the newest).
func (c *EtcdBackupConfig) KeepCount() int {
	if c.Spec.Keep == nil {
		return DefaultKeep
	}
	return min(max(*c.Spec.Keep, 1), MaxKeep)
}

// Verdicts of a backup's restore drill (DrillVerdict).
const (
	DrillPassed = "passed"
	DrillFailed = "failed"
	DrillNotRun = "not run"
)

// DrillVerdict is what the restore drills said of backup ("": nothing): the BackupRestorable
// condition's status when its message names the backup (True passed, False failed, else not
// run), else passed when the restorer marked it the last restorable one.
func (c *EtcdBackupConfig) DrillVerdict(backup string) string {
	if cond := c.Status.Condition(ConditionBackupRestorable); cond != nil &&
		strings.Contains(cond.Message, "backup "+backup+" ") {
		switch cond.Status {
		case corev1.ConditionTrue:
			return DrillPassed
		case corev1.ConditionFalse:
			return DrillFailed
		}
		return DrillNotRun
	}
	if c.Annotations[AnnotationLastRestorable] == backup {
		return DrillPassed
	}
	return ""
}

// DrillRequestEvery is how often a requested drill may run per config: a drill restores a
// whole backup, and whoever may patch a config may ask for one.
const DrillRequestEvery = 10 * time.Minute

// Annotations of restore drills on an EtcdBackupConfig (KKP's schema has no field for them).
const (
	// AnnotationDrillSchedule is a cron schedule of restore drills of the config's newest
	// backup ("off": none); without it the restorer's --drill-schedule applies.
	AnnotationDrillSchedule = "etcdbackup.k8c.io/drill-schedule"
	// AnnotationDrillRequested asks for a drill now (kubectl etcdbackup drill): an RFC 3339
	// time; the restorer drills the newest backup once after it, at most once every
	// DrillRequestEvery per config, whatever the schedule (also "off").
	AnnotationDrillRequested = "etcdbackup.k8c.io/drill-requested"
	// AnnotationLastRestorable names the newest backup that passed a drill (restorer):
	// retention never deletes it by count.
	AnnotationLastRestorable = "etcdbackup.k8c.io/last-restorable-backup"
)
