package plugin

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/service"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Keys of a Secret holding the trigger identity's NATS credentials (--nats-secret).
const (
	SecretNATSURL  = "url"
	SecretNATSNkey = "nkey"
	SecretNATSCA   = "ca.crt"
)

// natsFlags say how to reach the bus as the trigger identity.
type natsFlags struct {
	url, nkey, ca, secret string
}

func (o *Options) backupCommand() *cobra.Command {
	var nf natsFlags
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "backup CONFIG",
		Short: "Take a one-time backup of a config now, and follow it until it is Completed or Failed",
		Long: "backup asks the scheduler for a backup of CONFIG now, through the manual trigger on the bus " +
			"(etcdbackup.trigger.backup) as the trigger identity, whose credentials come from files (--nats-nkey, " +
			"--nats-ca) or from a Secret you may read (--nats-secret, keys url, nkey and ca.crt). It first asks the API " +
			"server whether you may patch the config, which the trigger records on it: nobody triggers a config " +
			"they could not change with kubectl.",
		Example: "  kubectl etcdbackup backup daily-backup -n cluster-zvc78xnnz7 --nats-secret etcdbackup-trigger\n" +
			"  kubectl etcdbackup backup daily-backup -n cluster-zvc78xnnz7 --nats-server tls://nats:4222 " +
			"--nats-nkey trigger.nk --nats-ca ca.crt",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: o.completeConfigs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.backup(cmd.Context(), args[0], nf, wait, timeout)
		},
	}
	cmd.Flags().StringVar(&nf.url, "nats-server", "", "the bus's URL (default: the Secret's url)")
	cmd.Flags().StringVar(&nf.nkey, "nats-nkey", "", "file with the trigger identity's nkey seed")
	cmd.Flags().StringVar(&nf.ca, "nats-ca", "", "file with the CA of the bus's TLS certificate")
	cmd.Flags().StringVar(&nf.secret, "nats-secret", "",
		"Secret (NAME in the namespace, or NAMESPACE/NAME) with the trigger identity's url, nkey and ca.crt")
	cmd.Flags().BoolVar(&wait, "wait", true, "follow the backup until it is Completed or Failed")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Minute, "how long to follow the backup")
	return cmd
}

func (o *Options) backup(ctx context.Context, name string, nf natsFlags, wait bool, timeout time.Duration) error {
	c, cfg, err := o.config(ctx, name)
	if err != nil {
		return err
	}
	ns := cfg.Namespace
	if err := o.may(ctx, c, "patch", "etcdbackupconfigs", ns, name,
		"a manual backup records on the config"); err != nil {
		return err
	}
	opts, err := nf.options(ctx, c, ns)
	if err != nil {
		return err
	}
	nc, err := nats.Connect(nf.url, append(opts, nats.Name("kubectl-etcdbackup"))...)
	if err != nil {
		return fmt.Errorf("connect to the bus at %s as the trigger identity: %w", nf.url, err)
	}
	defer nc.Close()
	data, ct, err := bus.Encode(&etcdbackupv1.TriggerBackupRequest{Namespace: ns, Config: name}, false)
	if err != nil {
		return err
	}
	msg := nats.NewMsg(bus.SubjectTriggerBackup)
	msg.Data = data
	msg.Header.Set(bus.HeaderContentType, ct)
	rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	resp, err := nc.RequestMsgWithContext(rctx, msg)
	if errors.Is(err, nats.ErrNoResponders) {
		return errors.New("no scheduler serves the manual trigger (etcdbackup.trigger.backup): is the scheduler running?")
	}
	if err != nil {
		return fmt.Errorf("ask the scheduler for a backup: %w", err)
	}
	var reply etcdbackupv1.TriggerBackupReply
	if err := bus.Decode(resp.Data, resp.Header.Get(bus.HeaderContentType), &reply); err != nil {
		return fmt.Errorf("the scheduler's answer: %w", err)
	}
	if reply.GetError() != "" {
		return fmt.Errorf("the scheduler queued no backup: %s", reply.GetError())
	}
	fmt.Fprintf(o.out(), "backup %s of %s/%s queued\n", reply.GetBackupName(), ns, name)
	if !wait {
		return nil
	}
	return o.followBackup(ctx, timeout, c, ns, name, reply.GetBackupName())
}

// followBackup shows backup's progress until it ends, and fails when it Failed.
func (o *Options) followBackup(ctx context.Context, timeout time.Duration, c client.Client, ns, config,
	backup string) error {
	p := newProgress(o.out())
	defer p.done()
	return o.until(ctx, timeout, func(ctx context.Context) (bool, error) {
		var cfg kubermaticv1.EtcdBackupConfig
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: config}, &cfg); err != nil {
			return false, err
		}
		for _, e := range cfg.Status.Backups() {
			if e.BackupName != backup {
				continue
			}
			p.show(cmp.Or(e.BackupPhase, "Pending"), e.BackupMessage)
			switch e.BackupPhase {
			case kubermaticv1.PhaseCompleted:
				return true, nil
			case kubermaticv1.PhaseFailed:
				return false, fmt.Errorf("backup %s failed: %s", backup, e.BackupMessage)
			}
		}
		return false, nil
	}, func() string {
		return fmt.Sprintf("backup %s: still %s when the wait ended (kubectl etcdbackup describe backup %s -n %s)",
			backup, p.last, backup, ns)
	})
}

// until calls check every Poll until it says done or fails, for at most timeout; expired says
// what was still awaited when the time ran out.
func (o *Options) until(ctx context.Context, timeout time.Duration, check func(context.Context) (bool, error),
	expired func() string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(o.Poll)
	defer tick.Stop()
	for {
		done, err := check(ctx)
		switch {
		case err != nil && ctx.Err() != nil:
			return fmt.Errorf("%s: %w", expired(), ctx.Err())
		case done || err != nil:
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", expired(), ctx.Err())
		case <-tick.C:
		}
	}
}

// options are the NATS options of the trigger identity: from the files, or from the Secret,
// whose nkey seed stays in memory (never written to a file a killed command would leave).
func (nf *natsFlags) options(ctx context.Context, c client.Client, ns string) ([]nats.Option, error) {
	if nf.secret == "" {
		if nf.url == "" {
			return nil, errors.New("where is the bus? give --nats-server, or --nats-secret with a url")
		}
		if nf.nkey == "" {
			return nil, errors.New("the trigger identity's credentials: give --nats-nkey, or --nats-secret")
		}
		n := service.NATS{URL: nf.url, Creds: nf.nkey, CA: nf.ca}
		return n.Options(bus.IdentityTrigger)
	}
	sns, name := ns, nf.secret
	if before, after, ok := strings.Cut(nf.secret, "/"); ok {
		sns, name = before, after
	}
	var s corev1.Secret
	if err := c.Get(ctx, client.ObjectKey{Namespace: sns, Name: name}, &s); err != nil {
		return nil, fmt.Errorf("the trigger identity's Secret: %w", err)
	}
	kp, err := nkeys.ParseDecoratedNKey(s.Data[SecretNATSNkey])
	if err != nil {
		return nil, fmt.Errorf("the Secret %s/%s has no nkey seed of the trigger identity in %q", sns, name,
			SecretNATSNkey)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("the Secret %s/%s: the nkey in %q: %w", sns, name, SecretNATSNkey, err)
	}
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	ca := s.Data[SecretNATSCA]
	if nf.ca != "" {
		if ca, err = os.ReadFile(nf.ca); err != nil {
			return nil, err
		}
	}
	if len(ca) > 0 {
		tlsConfig.RootCAs = x509.NewCertPool()
		if !tlsConfig.RootCAs.AppendCertsFromPEM(ca) {
			return nil, fmt.Errorf("the bus's CA (the Secret %s/%s's %q, or --nats-ca) holds no PEM certificate", sns, name,
				SecretNATSCA)
		}
	}
	if nf.url == "" {
		nf.url = string(s.Data[SecretNATSURL])
	}
	if nf.url == "" {
		return nil, fmt.Errorf("where is the bus? the Secret %s/%s has no %q: give --nats-server", sns, name, SecretNATSURL)
	}
	return []nats.Option{nats.CustomInboxPrefix(bus.InboxPrefix(bus.IdentityTrigger)), nats.Nkey(pub, kp.Sign),
		nats.Secure(tlsConfig)}, nil
}
