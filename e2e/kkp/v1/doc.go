// Package v1 mirrors, for CRD generation only, the shape of KKP's Cluster, Seed,
// EtcdBackupConfig and EtcdRestore (see package kkp). Nothing links it.
//
// +groupName=kubermatic.k8c.io
// +kubebuilder:object:generate=false
package v1
