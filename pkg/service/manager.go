package service

import (
	"fmt"
	"log/slog"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/kube"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// newManager builds a service's controller-runtime manager on restCfg that logs through log,
// serves no metrics or probes of its own (the service's Endpoint does), and caches Seeds of
// the Seed's namespace only, where RBAC grants access (and the destinations ConfigMap alone,
// when one is set). opts may change the options (leader election); a leader election Lease
// lives in the Seed's namespace.
func (c *Common) newManager(restCfg *rest.Config, log *slog.Logger,
	opts ...func(*ctrl.Options)) (manager.Manager, error) {
	ctrl.SetLogger(logr.FromSlogHandler(log.Handler()))
	scheme, err := kube.NewScheme()
	if err != nil {
		return nil, err
	}
	o := ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress:  "0",
		LeaderElectionNamespace: c.SeedNamespace,
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&kubermaticv1.Seed{}: {Namespaces: map[string]cache.Config{c.SeedNamespace: {}}},
		}},
	}
	if c.DestinationsConfigMap != "" {
		// The destinations ConfigMap alone: RBAC grants ConfigMaps of the Seed's namespace.
		o.Cache.ByObject[&corev1.ConfigMap{}] = cache.ByObject{
			Namespaces: map[string]cache.Config{c.SeedNamespace: {}},
			Field:      fields.OneTermEqualSelector("metadata.name", c.DestinationsConfigMap),
		}
	}
	for _, f := range opts {
		f(&o)
	}
	mgr, err := ctrl.NewManager(restCfg, o)
	if err != nil {
		return nil, fmt.Errorf("controller manager: %w", err)
	}
	return mgr, nil
}
