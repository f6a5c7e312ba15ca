package plugin

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

func (o *Options) describeCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "describe (config|backup|restore) NAME",
		Short: "Everything about a config, a backup or a restore in one screen: conditions, backups, recent Events",
		Example: "  kubectl etcdbackup describe config daily-backup -n cluster-zvc78xnnz7\n" +
			"  kubectl etcdbackup describe backup daily-backup-2026-12-05T14-00-00 -n cluster-zvc78xnnz7",
	}
	for _, kind := range []struct {
		name     string
		complete func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective)
		run      func(context.Context, string) error
	}{
		{"config", o.completeConfigs, o.describeConfig},
		{"backup", o.completeBackups, o.describeBackup},
		{"restore", o.completeRestores, o.describeRestore},
	} {
		cmd.AddCommand(&cobra.Command{
			Use:               kind.name + " NAME",
			Short:             "Describe a " + kind.name,
			Args:              cobra.ExactArgs(1),
			ValidArgsFunction: kind.complete,
			RunE:              func(cmd *cobra.Command, args []string) error { return kind.run(cmd.Context(), args[0]) },
		})
	}
	return cmd
}

func (o *Options) describeConfig(ctx context.Context, name string) error {
	c, cfg, err := o.config(ctx, name)
	if err != nil {
		return err
	}
	ns := cfg.Namespace
	w := o.out()
	keep := "-"
	if cfg.Spec.Keep != nil {
		keep = fmt.Sprint(*cfg.Spec.Keep)
	}
	field(w, "Name", cfg.Name)
	field(w, "Namespace", cfg.Namespace)
	field(w, "Cluster", cfg.Spec.Cluster.Name)
	field(w, "Schedule", cmp.Or(cfg.Spec.Schedule, "(one-time backup)"))
	field(w, "Keep", keep)
	field(w, "Destination", cmp.Or(cfg.Spec.Destination, "(the Seed's default)"))
	for _, a := range []struct{ label, key string }{
		{"Continuous", kubermaticv1.AnnotationContinuous},
		{"Drill schedule", kubermaticv1.AnnotationDrillSchedule},
		{"Retention", kubermaticv1.AnnotationRetention},
		{"Last restorable", kubermaticv1.AnnotationLastRestorable},
		{"Last manual backup", kubermaticv1.AnnotationLastManualBackup},
	} {
		if v := cfg.Annotations[a.key]; v != "" {
			field(w, a.label, v)
		}
	}
	if cfg.DeletionTimestamp != nil {
		field(w, "Deleting since", o.timeString(*cfg.DeletionTimestamp))
	}
	o.conditions(w, cfg)
	o.backupSummary(w, cfg)
	return o.events(ctx, c, ns, "EtcdBackupConfig", name, "")
}

// conditions prints cfg's conditions, by type.
func (o *Options) conditions(w io.Writer, cfg *kubermaticv1.EtcdBackupConfig) {
	fmt.Fprintln(w, "Conditions:")
	types := make([]string, 0, len(cfg.Status.Conditions))
	for t := range cfg.Status.Conditions {
		types = append(types, t)
	}
	slices.Sort(types)
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  TYPE\tSTATUS\tREASON\tSINCE\tMESSAGE")
	for _, t := range types {
		cond := cfg.Status.Conditions[t]
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", t, cond.Status, dash(cond.Reason),
			o.since(cond.LastTransitionTime.Time, cond.LastHeartbeatTime.Time), cond.Message)
	}
	_ = tw.Flush()
}

// backupSummary prints how many backups cfg has in each phase, and the newest ten.
func (o *Options) backupSummary(w io.Writer, cfg *kubermaticv1.EtcdBackupConfig) {
	backups := configBackups(cfg)
	phases := map[string]int{}
	for _, b := range backups.Backups {
		phases[cmp.Or(b.Phase, "Pending")]++
	}
	summary := fmt.Sprintf("%d", len(backups.Backups))
	if len(phases) > 0 {
		var parts []string
		for _, p := range []string{kubermaticv1.PhaseCompleted, kubermaticv1.PhaseRunning, kubermaticv1.PhaseFailed,
			"Pending"} {
			if phases[p] > 0 {
				parts = append(parts, fmt.Sprintf("%d %s", phases[p], p))
			}
		}
		summary += " (" + strings.Join(parts, ", ") + ")"
	}
	field(w, "Backups", summary)
	if len(backups.Backups) > 0 {
		tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "  BACKUP\tPHASE\tSIZE\tAGE\tREVISION\tDRILL")
		for _, b := range backups.Backups[:min(len(backups.Backups), 10)] {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\n", b.Name, dash(b.Phase), size(b.Size), o.age(b),
				revision(b.Revision), dash(b.Drill))
		}
		_ = tw.Flush()
		if len(backups.Backups) > 10 {
			fmt.Fprintf(w, "  ... %d older: kubectl etcdbackup ls -n %s %s\n", len(backups.Backups)-10, cfg.Namespace,
				cfg.Name)
		}
	}
}

func (o *Options) describeBackup(ctx context.Context, name string) error {
	c, ns, err := o.clientIn()
	if err != nil {
		return err
	}
	cfg, b, err := findBackup(ctx, c, ns, name)
	if err != nil {
		return err
	}
	w := o.out()
	field(w, "Name", b.Name)
	field(w, "Namespace", ns)
	field(w, "Config", cfg.Name)
	field(w, "Cluster", cfg.Spec.Cluster.Name)
	field(w, "Phase", dash(b.Phase))
	field(w, "Message", dash(b.Message))
	if b.Scheduled != nil {
		field(w, "Scheduled", o.timeString(*b.Scheduled))
	}
	if b.Finished != nil {
		field(w, "Finished", o.timeString(*b.Finished))
	}
	field(w, "Size", size(b.Size))
	field(w, "Revision", revision(b.Revision))
	field(w, "Destination", dash(b.Destination))
	field(w, "Object key", dash(b.ObjectKey))
	field(w, "SHA-256", dash(b.SHA256))
	o.storedObject(w, b)
	field(w, "Drill", dash(b.Drill))
	if cond := cfg.Status.Condition(kubermaticv1.ConditionBackupRestorable); cond != nil && b.Drill != "" &&
		strings.Contains(cond.Message, "backup "+b.Name+" ") {
		field(w, "Drill message", cond.Message)
	}
	if b.Deletion != "" {
		field(w, "Deletion", b.Deletion)
	}
	return o.events(ctx, c, ns, "EtcdBackupConfig", cfg.Name, b.Name)
}

// storedObject prints what the bucket records of b's object: how it is sealed and to whom,
// the snapshot inside it, and how long Object Lock retains it.
func (o *Options) storedObject(w io.Writer, b Backup) {
	obj := b.Object
	if obj == nil {
		if b.Phase == kubermaticv1.PhaseCompleted {
			field(w, "Object", "not recorded (stored by an older version, or the CRD does not keep it)")
		}
		return
	}
	codec := dash(obj.Codec)
	if len(obj.Recipients) > 0 {
		codec += ", encrypted to " + strings.Join(obj.Recipients, ", ")
	} else {
		codec += ", not encrypted"
	}
	field(w, "Object", codec)
	snapshot := size(obj.SnapshotSize)
	if obj.KeyCount > 0 {
		snapshot += fmt.Sprintf(", %d keys", obj.KeyCount)
	}
	if obj.SnapshotSHA256 != "" {
		snapshot += ", sha256 " + obj.SnapshotSHA256
	}
	field(w, "Snapshot", snapshot)
	if obj.RetainUntil != nil {
		field(w, "Retained until", fmt.Sprintf("%s (Object Lock, %s)", o.timeString(*obj.RetainUntil), obj.LockMode))
	} else {
		field(w, "Retained until", "- (no Object Lock)")
	}
}

func (o *Options) describeRestore(ctx context.Context, name string) error {
	c, ns, err := o.clientIn()
	if err != nil {
		return err
	}
	var rs kubermaticv1.EtcdRestore
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &rs); err != nil {
		return err
	}
	st := rs.EffectiveStatus()
	w := o.out()
	field(w, "Name", rs.Name)
	field(w, "Namespace", rs.Namespace)
	field(w, "Cluster", rs.Spec.Cluster.Name)
	field(w, "Backup", rs.Spec.BackupName)
	if to := rs.Annotations[kubermaticv1.AnnotationRestoreTo]; to != "" {
		field(w, "Restore to", to)
	}
	field(w, "Destination", cmp.Or(rs.Spec.Destination, "(the Seed's default)"))
	field(w, "Phase", dash(st.Phase))
	field(w, "Progress", dash(st.Progress))
	field(w, "Message", dash(st.Message))
	if st.StartTime != nil {
		field(w, "Started", o.timeString(*st.StartTime))
	}
	if st.ObjectKey != "" {
		field(w, "Restored from", fmt.Sprintf("%s/%s (sha256 %s)", st.Destination, st.ObjectKey, st.SHA256))
	}
	if st.PreRestoreBackup != "" {
		field(w, "Pre-restore backup", st.PreRestoreBackup+" (an EtcdRestore of it undoes this one)")
	}
	if st.PreRestoreSkipped != "" {
		field(w, "No pre-restore backup", st.PreRestoreSkipped)
	}
	return o.events(ctx, c, ns, "EtcdRestore", name, "")
}

// events prints the recent Events of kind/name in ns, those that mention only when set.
func (o *Options) events(ctx context.Context, c client.Client, ns, kind, name, mention string) error {
	var l corev1.EventList
	// The API server selects them (the namespace can hold thousands of Events).
	if err := c.List(ctx, &l, client.InNamespace(ns), client.MatchingFields{"involvedObject.kind": kind,
		"involvedObject.name": name}); err != nil {
		fmt.Fprintf(o.out(), "Events: not readable (%v)\n", err)
		return nil
	}
	var evs []corev1.Event
	for _, e := range l.Items {
		if e.InvolvedObject.Kind == kind && e.InvolvedObject.Name == name &&
			(mention == "" || strings.Contains(e.Message, mention)) {
			evs = append(evs, e)
		}
	}
	slices.SortFunc(evs, func(a, b corev1.Event) int { return eventTime(a).Compare(eventTime(b)) })
	if len(evs) == 0 {
		fmt.Fprintln(o.out(), "Events: <none>")
		return nil
	}
	fmt.Fprintln(o.out(), "Events:")
	tw := tabwriter.NewWriter(o.out(), 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  TYPE\tREASON\tAGE\tMESSAGE")
	for _, e := range evs[max(0, len(evs)-10):] {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", e.Type, e.Reason, duration.HumanDuration(o.Now().Sub(eventTime(e))),
			oneLine(e.Message))
	}
	return tw.Flush()
}

func eventTime(e corev1.Event) time.Time {
	switch {
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	}
	return e.CreationTimestamp.Time
}

// since is how long a condition has held (from its transition, else its heartbeat).
func (o *Options) since(transition, heartbeat time.Time) string {
	t := transition
	if t.IsZero() {
		t = heartbeat
	}
	if t.IsZero() {
		return "-"
	}
	return duration.HumanDuration(o.Now().Sub(t))
}

func field(w io.Writer, label, value string) {
	fmt.Fprintf(w, "%-20s%s\n", label+":", value)
}

// clientIn is the client and the namespace verbs work in.
func (o *Options) clientIn() (client.Client, string, error) {
	c, err := o.client()
	if err != nil {
		return nil, "", err
	}
	ns, _, err := o.namespace()
	return c, ns, err
}

// config is the client and the config called name in the namespace verbs work in.
func (o *Options) config(ctx context.Context, name string) (client.Client, *kubermaticv1.EtcdBackupConfig, error) {
	c, ns, err := o.clientIn()
	if err != nil {
		return nil, nil, err
	}
	var cfg kubermaticv1.EtcdBackupConfig
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &cfg); err != nil {
		return nil, nil, err
	}
	return c, &cfg, nil
}

// findBackup finds backup among the configs of ns.
func findBackup(ctx context.Context, c client.Client, ns, backup string) (*kubermaticv1.EtcdBackupConfig, Backup,
	error) {
	var l kubermaticv1.EtcdBackupConfigList
	if err := c.List(ctx, &l, client.InNamespace(ns)); err != nil {
		return nil, Backup{}, err
	}
	for i := range l.Items {
		for _, b := range configBackups(&l.Items[i]).Backups {
			if b.Name == backup {
				return &l.Items[i], b, nil
			}
		}
	}
	return nil, Backup{}, fmt.Errorf("backup %q does not exist in namespace %s: kubectl etcdbackup ls -n %s lists "+
		"its backups", backup, ns, ns)
}
