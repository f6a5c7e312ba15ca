package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

func (o *Options) drillCommand() *cobra.Command {
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "drill CONFIG",
		Short: "Restore-drill a config's newest backup now, and show the verdict",
		Long: "drill asks the restorer to restore the config's newest backup into scratch space and check it (annotation " +
			kubermaticv1.AnnotationDrillRequested + ", written with your rights), whatever the config's drill schedule; " +
			"a config is drilled on request at most once every " + kubermaticv1.DrillRequestEvery.String() + ".",
		Example:           "  kubectl etcdbackup drill daily-backup -n cluster-zvc78xnnz7",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: o.completeConfigs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.drill(cmd.Context(), args[0], wait, timeout)
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", true, "follow the drill until its verdict")
	cmd.Flags().DurationVar(&timeout, "timeout", 20*time.Minute, "how long to follow the drill")
	return cmd
}

func (o *Options) drill(ctx context.Context, name string, wait bool, timeout time.Duration) error {
	c, cfg, err := o.config(ctx, name)
	if err != nil {
		return err
	}
	ns := cfg.Namespace
	newest := ""
	for _, b := range configBackups(cfg).Backups {
		if b.Phase == kubermaticv1.PhaseCompleted && b.Deletion == "" {
			newest = b.Name
			break
		}
	}
	if newest == "" {
		return fmt.Errorf("config %s/%s has no completed backup to drill (kubectl etcdbackup ls -n %s %s)", ns, name, ns,
			name)
	}
	// Whole seconds: the request is read back as RFC 3339.
	at := o.Now().UTC().Truncate(time.Second)
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{
		kubermaticv1.AnnotationDrillRequested: at.Format(time.RFC3339)}}})
	if err != nil {
		return err
	}
	if err := c.Patch(ctx, cfg, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return fmt.Errorf("ask for a drill of %s/%s: %w", ns, name, err)
	}
	fmt.Fprintf(o.out(), "drill of %s/%s (newest backup %s) requested at %s\n", ns, name, newest, at.Format(time.RFC3339))
	if cond := cfg.Status.Condition(kubermaticv1.ConditionBackupRestorable); cond != nil &&
		at.Sub(cond.LastHeartbeatTime.Time) < kubermaticv1.DrillRequestEvery {
		fmt.Fprintf(o.out(), "the last drill ran at %s: a requested one runs from %s (one every %s)\n",
			cond.LastHeartbeatTime.UTC().Format(time.RFC3339),
			cond.LastHeartbeatTime.Add(kubermaticv1.DrillRequestEvery).UTC().Format(time.RFC3339),
			kubermaticv1.DrillRequestEvery)
	}
	if !wait {
		return nil
	}
	return o.followDrill(ctx, timeout, c, client.ObjectKeyFromObject(cfg), at)
}

// followDrill waits for the BackupRestorable condition written after at, and fails unless it
// says the backup restored.
func (o *Options) followDrill(ctx context.Context, timeout time.Duration, c client.Client, key client.ObjectKey,
	at time.Time) error {
	return o.until(ctx, timeout, func(ctx context.Context) (bool, error) {
		var cfg kubermaticv1.EtcdBackupConfig
		if err := c.Get(ctx, key, &cfg); err != nil {
			return false, err
		}
		cond := cfg.Status.Condition(kubermaticv1.ConditionBackupRestorable)
		if cond == nil || cond.LastHeartbeatTime.Time.Before(at) {
			return false, nil
		}
		fmt.Fprintf(o.out(), "%s (%s): %s\n", cond.Reason, cond.Status, cond.Message)
		if cond.Status != corev1.ConditionTrue {
			return false, fmt.Errorf("the drill of %s/%s did not pass: %s", key.Namespace, key.Name, cond.Reason)
		}
		return true, nil
	}, func() string {
		return fmt.Sprintf("no drill of %s/%s ran when the wait ended (is the restorer running? kubectl etcdbackup "+
			"describe config %s -n %s)", key.Namespace, key.Name, key.Name, key.Namespace)
	})
}
