// Package v1 holds the Go types of the etcdbackup.k8c.io/v1 resources: what this system
// records for itself, outside KKP's API group (DeletedBackupSet).
//
// +kubebuilder:object:generate=true
// +groupName=etcdbackup.k8c.io
package v1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is etcdbackup.k8c.io/v1.
var GroupVersion = schema.GroupVersion{Group: "etcdbackup.k8c.io", Version: "v1"}

// AddToScheme registers every type of this package with a scheme.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &DeletedBackupSet{}, &DeletedBackupSetList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
