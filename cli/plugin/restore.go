package plugin

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// restoreFlags are restore's choices.
type restoreFlags struct {
	backup, to, config, name string
	yes, wait                bool
	timeout                  time.Duration
}

func (o *Options) restoreCommand() *cobra.Command {
	var f restoreFlags
	cmd := &cobra.Command{
		Use:   "restore CLUSTER (--backup NAME | --to TIME)",
		Short: "Restore a cluster's etcd from a backup, or to a point in time; shows what will happen and asks first",
		Long: "restore creates an EtcdRestore in the cluster's namespace (cluster-CLUSTER unless -n says otherwise) " +
			"with your rights, after showing what it will do and asking you to type the cluster's name (--yes: " +
			"do not ask), then follows it until it is Completed or Failed. --to restores a continuous config to a " +
			"time (RFC 3339) or to revision:N.",
		Example: "  kubectl etcdbackup restore zvc78xnnz7 --backup daily-backup-2026-12-05T14-00-00\n" +
			"  kubectl etcdbackup restore zvc78xnnz7 --to 2026-12-05T14:03:11Z",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: o.completeClusters,
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.restore(cmd.Context(), args[0], f)
		},
	}
	cmd.Flags().StringVar(&f.backup, "backup", "", "the backup to restore (kubectl etcdbackup ls)")
	cmd.Flags().StringVar(&f.to, "to", "", "a point in time of a continuous config: RFC 3339, or revision:N")
	cmd.Flags().StringVar(&f.config, "config", "", "with --to: the continuous config (needed when there are several)")
	cmd.Flags().StringVar(&f.name, "name", "", "the EtcdRestore's name (default: CLUSTER-restore-<time>)")
	cmd.Flags().BoolVarP(&f.yes, "yes", "y", false, "do not ask")
	cmd.Flags().BoolVar(&f.wait, "wait", true, "follow the restore until it ends")
	cmd.Flags().DurationVar(&f.timeout, "timeout", time.Hour, "how long to follow the restore")
	_ = cmd.RegisterFlagCompletionFunc("backup", o.completeBackups)
	_ = cmd.RegisterFlagCompletionFunc("config", o.completeConfigs)
	return cmd
}

func (o *Options) restore(ctx context.Context, cluster string, f restoreFlags) error {
	if (f.backup == "") == (f.to == "") {
		return errors.New("say what to restore: --backup NAME or --to TIME, one of them")
	}
	c, err := o.client()
	if err != nil {
		return err
	}
	ns, named, err := o.namespace()
	if err != nil {
		return err
	}
	if !named {
		ns = "cluster-" + cluster // KKP's namespace of a user cluster's control plane
	}
	rs := &kubermaticv1.EtcdRestore{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns,
			Name: cmp.Or(f.name, cluster+"-restore-"+o.Now().UTC().Format("20060102-150405"))},
		Spec: kubermaticv1.EtcdRestoreSpec{Cluster: corev1.ObjectReference{APIVersion: kubermaticv1.GroupVersion.String(),
			Kind: "Cluster", Name: cluster}},
	}
	plan, err := o.restorePlan(ctx, c, rs, f)
	if err != nil {
		return err
	}
	fmt.Fprintf(o.out(), "EtcdRestore %s/%s will restore the etcd of cluster %s %s\n"+
		"The cluster's control plane is paused while its etcd is rebuilt, and everything written to it after that "+
		"point is gone;\na backup of its etcd as it is now is taken first (config %s), unless etcd cannot give one.\n",
		ns, rs.Name, cluster, plan, kubermaticv1.PreRestoreConfig(rs.Name))
	if !f.yes {
		fmt.Fprintf(o.out(), "Type the cluster's name (%s) to restore it: ", cluster)
		answer, _ := bufio.NewReader(o.Streams.In).ReadString('\n')
		if strings.TrimSpace(answer) != cluster {
			return errors.New("not restored: the answer was not the cluster's name")
		}
	}
	if err := c.Create(ctx, rs); err != nil {
		return fmt.Errorf("create EtcdRestore %s/%s: %w", ns, rs.Name, err)
	}
	fmt.Fprintf(o.out(), "EtcdRestore %s/%s created\n", ns, rs.Name)
	if !f.wait {
		return nil
	}
	return o.followRestore(ctx, f.timeout, c, rs)
}

// restorePlan fills in what rs restores from, as f asks, and says it in words.
func (o *Options) restorePlan(ctx context.Context, c client.Client, rs *kubermaticv1.EtcdRestore,
	f restoreFlags) (string, error) {
	ns, cluster := rs.Namespace, rs.Spec.Cluster.Name
	if f.backup != "" {
		cfg, b, err := findBackup(ctx, c, ns, f.backup)
		if err != nil {
			return "", err
		}
		if cfg.Spec.Cluster.Name != cluster {
			return "", fmt.Errorf("backup %s is of cluster %s (config %s), not of %s", b.Name, cfg.Spec.Cluster.Name, cfg.Name,
				cluster)
		}
		if b.Phase != kubermaticv1.PhaseCompleted || b.Deletion != "" {
			return "", fmt.Errorf("backup %s is %s%s: only a Completed backup that is not being deleted restores", b.Name,
				cmp.Or(b.Phase, "Pending"), map[bool]string{true: ", its deletion " + b.Deletion}[b.Deletion != ""])
		}
		rs.Spec.BackupName, rs.Spec.Destination = b.Name, b.Destination
		when := "-"
		if b.Finished != nil {
			when = o.timeString(*b.Finished)
		}
		return fmt.Sprintf("from backup %s of config %s\n  taken %s, etcd revision %s, %s, in destination %s",
			b.Name, cfg.Name, when, revision(b.Revision), size(b.Size), dash(b.Destination)), nil
	}
	if _, _, err := kubermaticv1.ParseRestoreTo(f.to); err != nil {
		return "", fmt.Errorf("--to %q: %w", f.to, err)
	}
	cfg, err := continuousConfig(ctx, c, ns, cluster, f.config)
	if err != nil {
		return "", err
	}
	rs.Annotations = map[string]string{kubermaticv1.AnnotationRestoreTo: f.to}
	rs.Spec.BackupName, rs.Spec.Destination = cfg.Name, cfg.Spec.Destination
	window := "(its ContinuousBackup condition says nothing yet)"
	if cond := cfg.Status.Condition(kubermaticv1.ConditionContinuousBackup); cond != nil {
		window = cond.Message
	}
	return fmt.Sprintf("to %s through the journal of continuous config %s\n  %s", f.to, cfg.Name, window), nil
}

// continuousConfig is the continuous config of cluster in ns: the one named, or the only one.
func continuousConfig(ctx context.Context, c client.Client, ns, cluster, name string) (*kubermaticv1.EtcdBackupConfig,
	error) {
	var l kubermaticv1.EtcdBackupConfigList
	if err := c.List(ctx, &l, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	var found []*kubermaticv1.EtcdBackupConfig
	for i := range l.Items {
		cfg := &l.Items[i]
		if cfg.Spec.Cluster.Name == cluster && cfg.Annotations[kubermaticv1.AnnotationContinuous] ==
			kubermaticv1.ContinuousOn && (name == "" || cfg.Name == name) {
			found = append(found, cfg)
		}
	}
	switch {
	case len(found) == 1:
		return found[0], nil
	case len(found) == 0 && name != "":
		return nil, fmt.Errorf("config %s/%s does not back up cluster %s continuously (annotation %s: %s)", ns, name,
			cluster, kubermaticv1.AnnotationContinuous, kubermaticv1.ContinuousOn)
	case len(found) == 0:
		return nil, fmt.Errorf("no config in %s backs up cluster %s continuously: a point in time needs one (annotation "+
			"%s: %s)", ns, cluster, kubermaticv1.AnnotationContinuous, kubermaticv1.ContinuousOn)
	}
	names := make([]string, len(found))
	for i, cfg := range found {
		names[i] = cfg.Name
	}
	return nil, fmt.Errorf("several configs back up cluster %s continuously (%s): say which with --config", cluster,
		strings.Join(names, ", "))
}

// followRestore shows the restore's phase and progress until it ends, and fails unless it
// Completed.
func (o *Options) followRestore(ctx context.Context, timeout time.Duration, c client.Client,
	rs *kubermaticv1.EtcdRestore) error {
	p := newProgress(o.out())
	defer p.done()
	return o.until(ctx, timeout, func(ctx context.Context) (bool, error) {
		var got kubermaticv1.EtcdRestore
		if err := c.Get(ctx, client.ObjectKeyFromObject(rs), &got); err != nil {
			return false, err
		}
		st := got.EffectiveStatus()
		msg := st.Progress
		switch {
		case st.Message == "", strings.Contains(st.Message, st.Progress) && st.Progress != "":
			msg = cmp.Or(st.Message, msg)
		case msg == "":
			msg = st.Message
		default:
			msg += " (" + st.Message + ")"
		}
		p.show(cmp.Or(st.Phase, "Pending"), msg)
		switch st.Phase {
		case kubermaticv1.RestorePhaseCompleted:
			return true, nil
		case kubermaticv1.RestorePhaseFailed, kubermaticv1.RestorePhaseEtcdLauncherNotEnabled:
			return false, fmt.Errorf("restore %s/%s %s: %s", rs.Namespace, rs.Name, st.Phase, st.Message)
		}
		return false, nil
	}, func() string {
		return fmt.Sprintf("restore %s/%s: still %s when the wait ended (kubectl etcdbackup describe restore %s -n %s)",
			rs.Namespace, rs.Name, p.last, rs.Name, rs.Namespace)
	})
}
