package v1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// Keys of a destination's credentials Secret.
const (
	SecretAccessKeyID     = "ACCESS_KEY_ID"
	SecretSecretAccessKey = "SECRET_ACCESS_KEY"
)

// Seed is the subset of KKP's Seed this system reads: its backup destinations.
// The CRD keeps unknown fields.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:pruning:PreserveUnknownFields
type Seed struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec SeedSpec `json:"spec,omitempty"`
	// Status is KKP's; this system neither reads nor writes it, and keeps it as it is.
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Type=object
	// +optional
	Status *runtime.RawExtension `json:"status,omitempty"`
}

// SeedSpec holds the Seed fields this system reads.
//
// +kubebuilder:pruning:PreserveUnknownFields
type SeedSpec struct {
	// +optional
	EtcdBackupRestore *EtcdBackupRestore `json:"etcdBackupRestore,omitempty"`
}

// EtcdBackupRestore configures where backups are stored.
type EtcdBackupRestore struct {
	// Destinations by name.
	// +optional
	Destinations map[string]*BackupDestination `json:"destinations,omitempty"`
	// DefaultDestination is used by configs and restores that name none.
	// +optional
	DefaultDestination string `json:"defaultDestination,omitempty"`
}

// BackupDestination is an S3-compatible bucket.
type BackupDestination struct {
	// Endpoint is the S3 endpoint: host[:port], or a URL (http:// for no TLS).
	Endpoint string `json:"endpoint"`
	// BucketName is the bucket backups are stored in.
	BucketName string `json:"bucketName"`
	// Credentials names a Secret with ACCESS_KEY_ID and SECRET_ACCESS_KEY.
	// +optional
	Credentials *corev1.SecretReference `json:"credentials,omitempty"`
	// EncryptionSecret names a Secret (in the Seed's namespace) whose key "recipients" lists
	// age X25519 recipients (age1…, one per line): backups to this destination are encrypted
	// to all of them before they leave the snapshotter. Not in KKP's Seed: set it in the
	// destinations ConfigMap there.
	// +optional
	EncryptionSecret *corev1.SecretReference `json:"encryptionSecret,omitempty"`
	// DecryptionSecret names a Secret (in the Seed's namespace) whose key "identity" holds age
	// identities (AGE-SECRET-KEY-1…) that restores and drills decrypt this destination's
	// backups with, unless an EtcdRestore names its own. Keep it apart from Credentials.
	// +optional
	DecryptionSecret *corev1.SecretReference `json:"decryptionSecret,omitempty"`
	// ObjectLock writes every backup and journal segment to this destination with S3 Object
	// Lock retention: no one (GOVERNANCE: no one without s3:BypassGovernanceRetention) can
	// destroy it before Days have passed. The bucket must have Object Lock enabled (created
	// with it); a destination whose bucket has not is refused. Not in KKP's Seed: set it in
	// the destinations ConfigMap there.
	// +optional
	ObjectLock *ObjectLock `json:"objectLock,omitempty"`
	// CopyTo names another destination of the Seed that every backup and journal segment
	// stored here is copied to (and verified there by sha256), with the config's retention
	// applied there on its own: a restore finds the copy when this destination's bucket is
	// gone. Not in KKP's Seed: set it in the destinations ConfigMap there.
	// +optional
	CopyTo string `json:"copyTo,omitempty"`
}

// ObjectLock is the S3 Object Lock retention every object of a destination is written with.
type ObjectLock struct {
	// Mode is GOVERNANCE or COMPLIANCE (S3's retention modes).
	// +kubebuilder:validation:Enum=GOVERNANCE;COMPLIANCE
	Mode string `json:"mode"`
	// Days each object is retained from when it is written.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=36500
	Days int `json:"days"`
}

// SeedList is a list of Seeds.
//
// +kubebuilder:object:root=true
type SeedList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Seed `json:"items"`
}
