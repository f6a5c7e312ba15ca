package v1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// EtcdBackupConfig as KKP's CRD has it: spec.name and spec.destination required, status with
// currentBackups (KKP's fields only) and conditions as a map keyed by type.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
type EtcdBackupConfig struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   EtcdBackupConfigSpec   `json:"spec,omitempty"`
	Status EtcdBackupConfigStatus `json:"status,omitempty"`
}

type EtcdBackupConfigSpec struct {
	Name    string                 `json:"name"`
	Cluster corev1.ObjectReference `json:"cluster"`
	// +optional
	Schedule string `json:"schedule,omitempty"`
	// +optional
	Keep        *int   `json:"keep,omitempty"`
	Destination string `json:"destination"`
}

type EtcdBackupConfigStatus struct {
	// +optional
	CurrentBackups []BackupStatus `json:"currentBackups,omitempty"`
	// +optional
	Conditions map[string]EtcdBackupConfigCondition `json:"conditions,omitempty"`
	// +optional
	CleanupRunning bool `json:"cleanupRunning,omitempty"`
}

type BackupStatus struct {
	// +optional
	ScheduledTime metav1.Time `json:"scheduledTime,omitempty"`
	// +optional
	BackupName string `json:"backupName,omitempty"`
	// +optional
	JobName string `json:"jobName,omitempty"`
	// +optional
	BackupStartTime metav1.Time `json:"backupStartTime,omitempty"`
	// +optional
	BackupFinishedTime metav1.Time `json:"backupFinishedTime,omitempty"`
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
	// +optional
	DeletePhase string `json:"deletePhase,omitempty"`
	// +optional
	DeleteMessage string `json:"deleteMessage,omitempty"`
}

type EtcdBackupConfigCondition struct {
	Status            corev1.ConditionStatus `json:"status"`
	LastHeartbeatTime metav1.Time            `json:"lastHeartbeatTime"`
	// +optional
	LastTransitionTime metav1.Time `json:"lastTransitionTime,omitempty"`
	// +optional
	Reason string `json:"reason,omitempty"`
	// +optional
	Message string `json:"message,omitempty"`
}

// EtcdRestore as KKP's CRD has it: spec.name required; status only a required phase of four
// (no Failed) and restoreTime.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type EtcdRestore struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   EtcdRestoreSpec   `json:"spec,omitempty"`
	Status EtcdRestoreStatus `json:"status,omitempty"`
}

type EtcdRestoreSpec struct {
	Name       string                 `json:"name"`
	Cluster    corev1.ObjectReference `json:"cluster"`
	BackupName string                 `json:"backupName"`
	// +optional
	BackupDownloadCredentialsSecret string `json:"backupDownloadCredentialsSecret,omitempty"`
	// +optional
	Destination string `json:"destination,omitempty"`
}

type EtcdRestoreStatus struct {
	// +kubebuilder:validation:Enum=Started;StsRebuilding;Completed;EtcdLauncherNotEnabled
	Phase string `json:"phase"`
	// +optional
	RestoreTime metav1.Time `json:"restoreTime,omitempty"`
}

// Cluster as KKP's CRD has it (cluster-scoped), with the spec fields it requires and the ones
// these services read; status.namespaceName is where KKP records the control plane's namespace.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster
// +kubebuilder:subresource:status
type Cluster struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ClusterSpec   `json:"spec,omitempty"`
	Status ClusterStatus `json:"status,omitempty"`
}

type ClusterSpec struct {
	Cloud          CloudSpec               `json:"cloud"`
	ClusterNetwork ClusterNetworkingConfig `json:"clusterNetwork"`
	// +kubebuilder:validation:Enum=NodePort;LoadBalancer;Tunneling
	ExposeStrategy    string `json:"exposeStrategy"`
	HumanReadableName string `json:"humanReadableName"`
	Version           string `json:"version"`
	// +kubebuilder:default=false
	// +optional
	Pause bool `json:"pause,omitempty"`
	// +optional
	Features map[string]bool `json:"features,omitempty"`
}

type CloudSpec struct {
	DatacenterName string `json:"dc"`
	ProviderName   string `json:"providerName"`
}

type ClusterNetworkingConfig struct {
	Pods      NetworkRanges `json:"pods"`
	Services  NetworkRanges `json:"services"`
	DNSDomain string        `json:"dnsDomain"`
	// +kubebuilder:validation:Enum=ipvs;iptables;ebpf;nftables
	// +kubebuilder:default=ipvs
	ProxyMode string `json:"proxyMode"`
}

type NetworkRanges struct {
	CIDRBlocks []string `json:"cidrBlocks"`
}

type ClusterStatus struct {
	// +optional
	NamespaceName string `json:"namespaceName,omitempty"`
}

// Seed as KKP's CRD has it (namespaced), spec.kubeconfig required, with its etcd backup
// destinations.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
type Seed struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec SeedSpec `json:"spec,omitempty"`
}

type SeedSpec struct {
	Kubeconfig corev1.ObjectReference `json:"kubeconfig"`
	// +optional
	EtcdBackupRestore *EtcdBackupRestore `json:"etcdBackupRestore,omitempty"`
}

type EtcdBackupRestore struct {
	// +optional
	Destinations map[string]*BackupDestination `json:"destinations,omitempty"`
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	// +optional
	DefaultDestination string `json:"defaultDestination,omitempty"`
}

type BackupDestination struct {
	Endpoint   string `json:"endpoint"`
	BucketName string `json:"bucketName"`
	// +optional
	Credentials *corev1.SecretReference `json:"credentials,omitempty"`
}
