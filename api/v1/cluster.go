package v1

import (
	"encoding/json"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Annotations on a Cluster.
const (
	// AnnotationActiveRestore locks a Cluster for one restore: "<namespace>/<name>".
	AnnotationActiveRestore = "kubermatic.k8c.io/active-restore"
	// AnnotationPausedBeforeRestore is set to "true" with the restore lock when the Cluster
	// was paused before the restore began: the restore then leaves it paused when it ends.
	AnnotationPausedBeforeRestore = "etcdbackup.k8c.io/paused-before-restore"
	// AnnotationRestoreVerified records, as JSON, the restore whose backup the restorer verified
	// and for which it paused the Cluster: the restore's uid, the destination, object key and
	// sha256. It is written with the pause and removed with the lock. It lives on the Cluster
	// (cluster-scoped) because an EtcdRestore's own status may be an annotation its namespace's
	// users can write: no phase after the verification runs without this record.
	AnnotationRestoreVerified = "etcdbackup.k8c.io/restore-verified"
	// AnnotationEtcdTimeline names the history the cluster's etcd is on: written by the
	// restorer when a restore ends (the time it ended, pkg/journal.TimelineLayout), since the
	// revisions after it repeat those of the history before with other changes. The journal
	// keeps each timeline's segments apart. Absent: the first timeline.
	AnnotationEtcdTimeline = "etcdbackup.k8c.io/etcd-timeline"
	// AnnotationLastRestart rolls the control plane after a restore.
	AnnotationLastRestart = "kubermatic.k8c.io/last-restart"
	// AnnotationEtcdEndpoints overrides KKP's etcd naming convention for this cluster: a
	// comma-separated list of client URLs (for non-KKP clusters and tests).
	AnnotationEtcdEndpoints = "etcdbackup.k8c.io/etcd-endpoints"
	// AnnotationEtcdClientSecret overrides the Secret (in the cluster namespace) that holds the
	// etcd client TLS material: keys ca.crt, tls.crt, tls.key. "none" means plain HTTP.
	AnnotationEtcdClientSecret = "etcdbackup.k8c.io/etcd-client-secret"
	// AnnotationEtcdPeerURLs overrides the peer URL of each etcd member a restore rebuilds: a
	// comma-separated list, one per member in ordinal order (for non-KKP clusters and tests).
	AnnotationEtcdPeerURLs = "etcdbackup.k8c.io/etcd-peer-urls"
)

// FeatureEtcdLauncher is the Cluster feature a restore requires.
const FeatureEtcdLauncher = "etcdLauncher"

// Cluster is the subset of KKP's Cluster this system reads and patches. The CRD keeps unknown
// fields, and the services only ever patch the fields they own.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster
// +kubebuilder:subresource:status
// +kubebuilder:pruning:PreserveUnknownFields
// +kubebuilder:printcolumn:name="Paused",type=boolean,JSONPath=`.spec.pause`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Cluster struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec ClusterSpec `json:"spec,omitempty"`
	// Status is KKP's; this system only reads namespaceName and keeps the rest as it is.
	// +optional
	Status ClusterStatus `json:"status,omitempty"`
}

// ClusterStatus holds the Cluster status field this system reads.
//
// +kubebuilder:pruning:PreserveUnknownFields
type ClusterStatus struct {
	// NamespaceName is the namespace of the cluster's control plane (KKP sets it).
	// +optional
	NamespaceName string `json:"namespaceName,omitempty"`
}

// ClusterSpec holds the Cluster fields this system reads.
//
// +kubebuilder:pruning:PreserveUnknownFields
type ClusterSpec struct {
	// Pause stops all controllers from acting on the cluster; paused clusters are not backed up.
	// +optional
	Pause bool `json:"pause,omitempty"`
	// Features toggles cluster features; etcdLauncher is required for restores.
	// +optional
	Features map[string]bool `json:"features,omitempty"`
}

// NamespaceName is the namespace of the cluster's control plane: status.namespaceName, where
// KKP records it, else KKP's convention cluster-<name>.
func (c *Cluster) NamespaceName() string {
	if c.Status.NamespaceName != "" {
		return c.Status.NamespaceName
	}
	return "cluster-" + c.Name
}

// ClusterList is a list of Clusters.
//
// +kubebuilder:object:root=true
type ClusterList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Cluster `json:"items"`
}

// PreRestoreBackupDue says a backup of config (namespace, name) may run although c is locked
// for a restore (or paused): it is the pre-restore config of the restore that holds the lock,
// and that restore has not verified its backup and paused c yet. Every other backup waits
// for the restore to end.
func (c *Cluster) PreRestoreBackupDue(namespace, config string) bool {
	holder := c.Annotations[AnnotationActiveRestore]
	ns, restore, ok := strings.Cut(holder, "/")
	if !ok || ns != namespace || config != PreRestoreConfig(restore) {
		return false
	}
	var v struct {
		Restore string `json:"restore"`
	}
	raw := c.Annotations[AnnotationRestoreVerified]
	return raw == "" || json.Unmarshal([]byte(raw), &v) != nil || v.Restore != holder
}
