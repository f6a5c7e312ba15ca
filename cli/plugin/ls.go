package plugin

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/progress"
	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// Backup is one backup as ls shows it.
type Backup struct {
	Name        string       `json:"name"`
	Phase       string       `json:"phase"`
	Message     string       `json:"message,omitempty"`
	Size        int64        `json:"size,omitempty"`
	Revision    int64        `json:"revision,omitempty"`
	Destination string       `json:"destination,omitempty"`
	ObjectKey   string       `json:"objectKey,omitempty"`
	SHA256      string       `json:"sha256,omitempty"`
	Scheduled   *metav1.Time `json:"scheduled,omitempty"`
	Finished    *metav1.Time `json:"finished,omitempty"`
	// Drill is the restore drill's verdict on this backup: passed, failed, not run, or empty.
	Drill string `json:"drill,omitempty"`
	// Deletion is the phase of the backup's deletion, when retention began it.
	Deletion string `json:"deletion,omitempty"`
	// Object is the stored object's record in the bucket, as the status writer read it back.
	Object *kubermaticv1.StoredObject `json:"object,omitempty"`
}

// Config is one EtcdBackupConfig's backups, newest first.
type Config struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Cluster   string `json:"cluster"`
	// RestorableWindow is the point-in-time window of a continuous config, as its
	// ContinuousBackup condition says it.
	RestorableWindow string   `json:"restorableWindow,omitempty"`
	Backups          []Backup `json:"backups"`
}

// List is what ls -o json|yaml prints.
type List struct {
	Items []Config `json:"items"`
}

func (o *Options) lsCommand() *cobra.Command {
	var all bool
	var output string
	cmd := &cobra.Command{
		Use:   "ls [CONFIG]",
		Short: "List backups: phase, size, age, revision, destination, the drill's verdict and the point-in-time window",
		Example: "  kubectl etcdbackup ls -n cluster-zvc78xnnz7\n  kubectl etcdbackup ls -A -o wide\n" +
			"  kubectl etcdbackup ls -n cluster-zvc78xnnz7 daily-backup -o json",
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: o.completeConfigs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !slices.Contains([]string{"", "wide", "json", "yaml"}, output) {
				return fmt.Errorf("--output %q: want json, yaml or wide", output)
			}
			list, err := o.list(cmd.Context(), all, args)
			if err != nil {
				return err
			}
			return o.printList(list, all, output)
		},
	}
	cmd.Flags().BoolVarP(&all, "all-namespaces", "A", false, "list the backups of every namespace you may read")
	cmd.Flags().StringVarP(&output, "output", "o", "", "json, yaml or wide")
	return cmd
}

// list reads the configs (one when args names it) and their backups.
func (o *Options) list(ctx context.Context, all bool, args []string) (List, error) {
	c, err := o.client()
	if err != nil {
		return List{}, err
	}
	ns, _, err := o.namespace()
	if err != nil {
		return List{}, err
	}
	var cfgs []kubermaticv1.EtcdBackupConfig
	switch {
	case len(args) == 1:
		if all {
			return List{}, fmt.Errorf("a config is named in one namespace: leave out -A or the config's name")
		}
		var cfg kubermaticv1.EtcdBackupConfig
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: args[0]}, &cfg); err != nil {
			return List{}, err
		}
		cfgs = append(cfgs, cfg)
	default:
		var l kubermaticv1.EtcdBackupConfigList
		var opts []client.ListOption
		if !all {
			opts = append(opts, client.InNamespace(ns))
		}
		if err := c.List(ctx, &l, opts...); err != nil {
			return List{}, err
		}
		cfgs = l.Items
	}
	slices.SortFunc(cfgs, func(a, b kubermaticv1.EtcdBackupConfig) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	var list List
	for i := range cfgs {
		list.Items = append(list.Items, configBackups(&cfgs[i]))
	}
	return list, nil
}

// configBackups is cfg's backups, newest first, with the drills' verdicts.
func configBackups(cfg *kubermaticv1.EtcdBackupConfig) Config {
	out := Config{Namespace: cfg.Namespace, Name: cfg.Name, Cluster: cfg.Spec.Cluster.Name, Backups: []Backup{}}
	if cond := cfg.Status.Condition(kubermaticv1.ConditionContinuousBackup); cond != nil {
		out.RestorableWindow = cond.Message
	}
	for _, e := range cfg.Status.Backups() {
		b := Backup{Name: e.BackupName, Phase: e.BackupPhase, Message: e.BackupMessage, Size: e.Size,
			Revision: e.EtcdRevision, Destination: cmp.Or(e.Destination, cfg.Spec.Destination), ObjectKey: e.ObjectKey,
			SHA256: e.SHA256, Drill: cfg.DrillVerdict(e.BackupName), Deletion: e.DeletePhase, Object: e.Object}
		if !e.ScheduledTime.IsZero() {
			b.Scheduled = e.ScheduledTime.DeepCopy()
		}
		if !e.BackupFinishedTime.IsZero() {
			b.Finished = e.BackupFinishedTime.DeepCopy()
		}
		out.Backups = append(out.Backups, b)
	}
	slices.Reverse(out.Backups) // the status lists them oldest first
	return out
}

func (o *Options) printList(list List, all bool, output string) error {
	switch output {
	case "json":
		raw, err := json.MarshalIndent(list, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(o.out(), "%s\n", raw)
		return err
	case "yaml":
		raw, err := yaml.Marshal(list)
		if err != nil {
			return err
		}
		_, err = o.out().Write(raw)
		return err
	}
	wide := output == "wide"
	tw := tabwriter.NewWriter(o.out(), 0, 8, 2, ' ', 0)
	head := []string{"CONFIG", "BACKUP", "PHASE", "SIZE", "AGE", "REVISION", "DESTINATION", "DRILL"}
	if all {
		head = append([]string{"NAMESPACE"}, head...)
	}
	if wide {
		head = append(head, "DELETION", "OBJECT KEY", "MESSAGE")
	}
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	rows := 0
	for _, cfg := range list.Items {
		for _, b := range cfg.Backups {
			row := []string{cfg.Name, b.Name, dash(b.Phase), size(b.Size), o.age(b), revision(b.Revision),
				dash(b.Destination), dash(b.Drill)}
			if all {
				row = append([]string{cfg.Namespace}, row...)
			}
			if wide {
				row = append(row, dash(b.Deletion), dash(b.ObjectKey), dash(oneLine(b.Message)))
			}
			fmt.Fprintln(tw, strings.Join(row, "\t"))
			rows++
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if rows == 0 {
		fmt.Fprintln(o.Streams.ErrOut, "No backups found.")
	}
	for _, cfg := range list.Items {
		if cfg.RestorableWindow != "" {
			fmt.Fprintf(o.out(), "Point in time: %s/%s %s\n", cfg.Namespace, cfg.Name, cfg.RestorableWindow)
		}
	}
	return nil
}

// age is how long ago b finished (or was scheduled, while it runs).
func (o *Options) age(b Backup) string {
	t := b.Finished
	if t == nil {
		t = b.Scheduled
	}
	if t == nil {
		return "-"
	}
	return duration.HumanDuration(o.Now().Sub(t.Time))
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func size(n int64) string {
	if n <= 0 {
		return "-"
	}
	return progress.Size(n)
}

func revision(r int64) string {
	if r <= 0 {
		return "-"
	}
	return fmt.Sprint(r)
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	if len(s) > 100 {
		s = s[:97] + "..."
	}
	return s
}

// timeString is t in RFC 3339 with its age.
func (o *Options) timeString(t metav1.Time) string {
	if t.IsZero() {
		return "-"
	}
	if d := t.Sub(o.Now()); d > 0 {
		return fmt.Sprintf("%s (in %s)", t.UTC().Format(time.RFC3339), duration.HumanDuration(d))
	}
	return fmt.Sprintf("%s (%s ago)", t.UTC().Format(time.RFC3339), duration.HumanDuration(o.Now().Sub(t.Time)))
}
