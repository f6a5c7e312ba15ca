package plugin

import (
	"context"
	"strings"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/spf13/cobra"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Shell completion of names, read with the user's rights: what they may not list completes to
// nothing.

func (o *Options) completeConfigs(_ *cobra.Command, args []string, prefix string) ([]string,
	cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return o.names(prefix, fromConfigs(func(cfg *kubermaticv1.EtcdBackupConfig) []string { return []string{cfg.Name} }))
}

func (o *Options) completeBackups(_ *cobra.Command, _ []string, prefix string) ([]string, cobra.ShellCompDirective) {
	return o.names(prefix, fromConfigs(func(cfg *kubermaticv1.EtcdBackupConfig) []string {
		var out []string
		for _, e := range cfg.Status.Backups() {
			out = append(out, e.BackupName)
		}
		return out
	}))
}

// completeClusters completes the clusters the user's configs back up in the namespace (a
// tenant may not list the cluster-scoped Clusters).
func (o *Options) completeClusters(_ *cobra.Command, args []string, prefix string) ([]string,
	cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return o.names(prefix, fromConfigs(func(cfg *kubermaticv1.EtcdBackupConfig) []string {
		return []string{cfg.Spec.Cluster.Name}
	}))
}

func (o *Options) completeRestores(_ *cobra.Command, args []string, prefix string) ([]string,
	cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return o.names(prefix, func(ctx context.Context, c client.Client, ns string) ([]string, error) {
		var l kubermaticv1.EtcdRestoreList
		if err := c.List(ctx, &l, client.InNamespace(ns)); err != nil {
			return nil, err
		}
		var out []string
		for _, rs := range l.Items {
			out = append(out, rs.Name)
		}
		return out, nil
	})
}

// fromConfigs lists the namespace's configs and names what pick takes from each.
func fromConfigs(pick func(*kubermaticv1.EtcdBackupConfig) []string) func(context.Context, client.Client,
	string) ([]string, error) {
	return func(ctx context.Context, c client.Client, ns string) ([]string, error) {
		var l kubermaticv1.EtcdBackupConfigList
		if err := c.List(ctx, &l, client.InNamespace(ns)); err != nil {
			return nil, err
		}
		var out []string
		for i := range l.Items {
			out = append(out, pick(&l.Items[i])...)
		}
		return out, nil
	}
}

// names lists with list in the namespace and keeps those that start with prefix, once each.
func (o *Options) names(prefix string, list func(context.Context, client.Client, string) ([]string, error)) ([]string,
	cobra.ShellCompDirective) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, ns, err := o.clientIn()
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	all, err := list(ctx, c, ns)
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	seen := map[string]bool{}
	var out []string
	for _, n := range all {
		if strings.HasPrefix(n, prefix) && !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}
