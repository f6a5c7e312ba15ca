// Package service holds what every etcd backup service does the same way: flags shared by
// all, the root context and exit code, logging, the NATS connection, and the HTTP endpoint
// for metrics and health.
package service

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"k8s.io/apimachinery/pkg/types"
)

// Common is the configuration every service takes.
type Common struct {
	NATS          NATS
	Kubeconfig    string
	MetricsAddr   string
	DebugPprof    bool
	LogLevel      string
	LogFormat     string
	SeedNamespace string
	SeedName      string
	// DestinationsConfigMap, when set, names the ConfigMap in SeedNamespace that configures
	// the destinations instead of the Seed (see destination.Source).
	DestinationsConfigMap string
	StreamReplicas        int
}

// Register adds the common flags to fs. Every flag also reads an environment variable:
// ETCDBACKUP_ and the flag's name in upper case with '-' as '_' (ETCDBACKUP_NATS_URL).
func (c *Common) Register(fs *flag.FlagSet) {
	c.NATS.Register(fs)
	StringVar(fs, &c.Kubeconfig, "kubeconfig", "", "kubeconfig file; empty: in-cluster service account")
	StringVar(fs, &c.MetricsAddr, "metrics-addr", ":8080",
		"address of the /metrics, /healthz and /readyz endpoint; empty disables it")
	BoolVar(fs, &c.DebugPprof, "debug-pprof", false,
		"also serve Go's profiles (net/http/pprof) at /debug/pprof/ on --metrics-addr; for diagnosis only")
	StringVar(fs, &c.LogLevel, "log-level", "info", "debug, info, warn or error")
	StringVar(fs, &c.LogFormat, "log-format", "json", "json or text")
	StringVar(fs, &c.SeedNamespace, "seed-namespace", "kubermatic",
		"namespace of the Seed that configures backup destinations")
	StringVar(fs, &c.SeedName, "seed-name", "kubermatic", "name of the Seed that configures backup destinations")
	StringVar(fs, &c.DestinationsConfigMap, "destinations-configmap", "",
		"name of a ConfigMap in --seed-namespace whose key etcdBackupRestore (the Seed's spec.etcdBackupRestore in YAML) "+
			"configures the backup destinations instead of the Seed; empty: the Seed's")
	IntVar(fs, &c.StreamReplicas, "stream-replicas", 1, "replicas of the JetStream streams and staging bucket (1 or 3)")
}

// Seed is the Seed's namespaced name.
func (c *Common) Seed() types.NamespacedName {
	return types.NamespacedName{Namespace: c.SeedNamespace, Name: c.SeedName}
}

// Destinations is where the backup destinations are configured: the Seed's, or the
// destinations ConfigMap in its namespace.
func (c *Common) Destinations() destination.Source {
	return destination.Source{Seed: c.Seed(), ConfigMap: c.DestinationsConfigMap}
}

// Topology is the bus topology for these settings.
func (c *Common) Topology() bus.Topology {
	t := bus.DefaultTopology()
	t.Replicas = c.StreamReplicas
	return t
}

// Logger builds the logger from LogLevel and LogFormat.
func (c *Common) Logger(service string) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", c.LogLevel, err)
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	switch c.LogFormat {
	case "json":
		h = slog.NewJSONHandler(os.Stderr, opts)
	case "text":
		h = slog.NewTextHandler(os.Stderr, opts)
	default:
		return nil, fmt.Errorf("log format %q: want json or text", c.LogFormat)
	}
	return slog.New(h).With("service", service), nil
}

func envName(flagName string) string {
	return "ETCDBACKUP_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// StringVar defines a string flag that its environment variable may also set (see Parse).
func StringVar(fs *flag.FlagSet, p *string, name, def, usage string) {
	fs.StringVar(p, name, def, usage+" (env "+envName(name)+")")
}

// IntVar defines an int flag that its environment variable may also set (see Parse).
func IntVar(fs *flag.FlagSet, p *int, name string, def int, usage string) {
	fs.IntVar(p, name, def, usage+" (env "+envName(name)+")")
}

// Int64Var defines an int64 flag that its environment variable may also set (see Parse).
func Int64Var(fs *flag.FlagSet, p *int64, name string, def int64, usage string) {
	fs.Int64Var(p, name, def, usage+" (env "+envName(name)+")")
}

// BoolVar defines a bool flag that its environment variable may also set (see Parse).
func BoolVar(fs *flag.FlagSet, p *bool, name string, def bool, usage string) {
	fs.BoolVar(p, name, def, usage+" (env "+envName(name)+")")
}

// DurationVar defines a duration flag that its environment variable may also set (see
// Parse); Parse refuses a duration that is not positive.
func DurationVar(fs *flag.FlagSet, p *time.Duration, name string, def time.Duration, usage string) {
	fs.DurationVar(p, name, def, usage+" (env "+envName(name)+")")
}

// Parse parses args, then sets every flag not given on the command line from its environment
// variable (ETCDBACKUP_<NAME>), and refuses what would otherwise become a silent default: an
// environment value the flag cannot parse, and a duration that is zero or negative. Errors
// wrap ErrInvalidOption (flag.ErrHelp is returned as it is).
func Parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		env := envName(f.Name)
		if v, ok := os.LookupEnv(env); ok && !given[f.Name] {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%w: %s=%q: %w", ErrInvalidOption, env, v, err))
				return
			}
		}
		if g, ok := f.Value.(flag.Getter); ok {
			if d, isDuration := g.Get().(time.Duration); isDuration && d <= 0 {
				errs = append(errs, fmt.Errorf("%w: --%s must be positive, got %s", ErrInvalidOption, f.Name, d))
			}
		}
	})
	return errors.Join(errs...)
}

// Validate refuses common settings that cannot work.
func (c *Common) Validate() error {
	if c.StreamReplicas != 1 && c.StreamReplicas != 3 {
		return fmt.Errorf("%w: --stream-replicas must be 1 or 3, got %d", ErrInvalidOption, c.StreamReplicas)
	}
	if _, err := c.Logger("check"); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidOption, err)
	}
	return c.NATS.Validate()
}

// Main runs run with a context cancelled by SIGINT or SIGTERM and exits: 0 when run returns
// nil or the context was cancelled, 2 for flag errors, 1 otherwise.
func Main(run func(ctx context.Context, args []string) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	switch {
	case err == nil, errors.Is(err, context.Canceled):
		os.Exit(0)
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	default:
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
