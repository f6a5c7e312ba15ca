// Package kube builds the Kubernetes clients the services share: one scheme with the core
// types, kubermatic.k8c.io/v1 and etcdbackup.k8c.io/v1, and a config from a kubeconfig file
// or the pod's account.
package kube

import (
	"errors"
	"fmt"

	backupv1 "github.com/etcd-backup/etcdbackup/api/etcdbackup/v1"
	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// NewScheme returns a scheme with client-go's types, kubermatic.k8c.io/v1 and etcdbackup.k8c.io/v1.
func NewScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, err
	}
	if err := kubermaticv1.AddToScheme(s); err != nil {
		return nil, err
	}
	if err := backupv1.AddToScheme(s); err != nil {
		return nil, err
	}
	return s, nil
}

// Config loads a REST config from kubeconfig, or in-cluster when kubeconfig is empty.
func Config(kubeconfig, userAgent string) (*rest.Config, error) {
	var (
		cfg *rest.Config
		err error
	)
	if kubeconfig == "" {
		cfg, err = rest.InClusterConfig()
	} else {
		cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	if err != nil {
		return nil, fmt.Errorf("load kubernetes config: %w", err)
	}
	cfg.UserAgent = userAgent
	cfg.QPS, cfg.Burst = 50, 100
	return cfg, nil
}

// NewClient returns a direct (uncached) client for cfg.
func NewClient(cfg *rest.Config) (client.Client, error) {
	s, err := NewScheme()
	if err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: s})
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return c, nil
}

// IsAPIError reports whether err is an answer of the Kubernetes API server (a refusal, a
// conflict, a timeout it reports), for telling such failures from the work's own.
func IsAPIError(err error) bool {
	var status apierrors.APIStatus
	return errors.As(err, &status)
}
