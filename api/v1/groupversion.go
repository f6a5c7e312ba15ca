// Package v1 holds the Go types of the kubermatic.k8c.io/v1 resources this system owns
// (EtcdBackupConfig, EtcdRestore) and the subset of KKP's Cluster and Seed it reads.
//
// +kubebuilder:object:generate=true
// +groupName=kubermatic.k8c.io
package v1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is kubermatic.k8c.io/v1.
var GroupVersion = schema.GroupVersion{Group: "kubermatic.k8c.io", Version: "v1"}

// AddToScheme registers every type of this package with a scheme.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&EtcdBackupConfig{}, &EtcdBackupConfigList{},
		&EtcdRestore{}, &EtcdRestoreList{},
		&Cluster{}, &ClusterList{},
		&Seed{}, &SeedList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
