// Package plugin is kubectl-etcdbackup: the backups, restores and drills of the etcd backup
// system, read and started with the user's own kubeconfig and RBAC. Nothing here needs more
// rights than the same action with kubectl: it reads EtcdBackupConfigs, EtcdRestores and their
// Events, creates EtcdRestores, and triggers a backup on the bus only after the API server said
// the user may patch the config (what the trigger records on it).
package plugin

import (
	"context"
	"fmt"
	"io"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/spf13/cobra"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Options are what every verb shares: the kubeconfig flags and the terminal.
type Options struct {
	Flags   *genericclioptions.ConfigFlags
	Streams genericiooptions.IOStreams
	// Now is the clock ages are told by (time.Now).
	Now func() time.Time
	// Poll is how often a verb that follows an object reads it again (1 s).
	Poll time.Duration

	c client.Client
}

// NewCommand returns the plugin's root command.
func NewCommand(streams genericiooptions.IOStreams) *cobra.Command {
	o := &Options{Flags: genericclioptions.NewConfigFlags(true), Streams: streams, Now: time.Now, Poll: time.Second}
	return o.root()
}

// root is the root command of o.
func (o *Options) root() *cobra.Command {
	streams := o.Streams
	root := &cobra.Command{
		Use:   "kubectl-etcdbackup",
		Short: "List, describe, take and restore the etcd backups of KKP user clusters",
		Long: "kubectl etcdbackup works with the etcd backup system's EtcdBackupConfigs and EtcdRestores, with your " +
			"kubeconfig and your RBAC.",
		Annotations:   map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl etcdbackup"},
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(streams.In)
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	o.Flags.AddFlags(root.PersistentFlags())
	root.AddCommand(o.lsCommand(), o.describeCommand(), o.backupCommand(), o.restoreCommand(), o.drillCommand(),
		o.versionCommand())
	return root
}

// Version is the plugin's release, set when a release is built (cli/krew); a build from a
// checkout says "devel".
var Version = "devel"

func (o *Options) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the plugin's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(o.Streams.Out, "kubectl-etcdbackup", Version)
			return err
		},
	}
}

// Execute runs the root command with args and writes its error, the way kubectl does.
func Execute(cmd *cobra.Command, args []string) error {
	cmd.SetArgs(args)
	err := cmd.Execute()
	if err != nil {
		fmt.Fprintln(cmd.ErrOrStderr(), "error:", err)
	}
	return err
}

// client is the API client with the user's kubeconfig.
func (o *Options) client() (client.Client, error) {
	if o.c != nil {
		return o.c, nil
	}
	cfg, err := o.Flags.ToRESTConfig()
	if err != nil {
		return nil, err
	}
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{kubermaticv1.AddToScheme, corev1.AddToScheme,
		authorizationv1.AddToScheme} {
		if err := add(scheme); err != nil {
			return nil, err
		}
	}
	o.c, err = client.New(cfg, client.Options{Scheme: scheme})
	return o.c, err
}

// namespace is the namespace of --namespace or the kubeconfig's context, and whether it was
// named on the command line.
func (o *Options) namespace() (string, bool, error) {
	ns, _, err := o.Flags.ToRawKubeConfigLoader().Namespace()
	return ns, o.Flags.Namespace != nil && *o.Flags.Namespace != "", err
}

// may asks the API server whether the user may verb resource name in ns (a
// SelfSubjectAccessReview, which every authenticated user may create), and refuses with its
// reason when not.
func (o *Options) may(ctx context.Context, c client.Client, verb, resource, ns, name, why string) error {
	review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
		ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: verb,
			Group: kubermaticv1.GroupVersion.Group, Resource: resource, Name: name}}}
	if err := c.Create(ctx, review); err != nil {
		return fmt.Errorf("ask the API server whether you may %s %s %s/%s: %w", verb, resource, ns, name, err)
	}
	if !review.Status.Allowed {
		reason := review.Status.Reason
		if reason == "" {
			reason = "RBAC allows it to nobody you are"
		}
		return fmt.Errorf("you may not %s %s %s/%s (%s), which %s: %s", verb, resource, ns, name,
			kubermaticv1.GroupVersion.Group, why, reason)
	}
	return nil
}

// out is where a verb writes what it shows.
func (o *Options) out() io.Writer { return o.Streams.Out }
