package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Third-party binaries the sandbox needs, built by `make tools` from the Go module proxy.
var ToolBinaries = []string{"kube-apiserver", "kubectl", "kube-controller-manager", "versitygw", "nats", "promtool",
	"dex", "kubectl-krew"}

// Services are the service binaries, built from this repository.
var Services = []string{"scheduler", "snapshotter", "uploader", "pruner", "restorer", "journal", "console"}

// RestoreStep is the restore step's binary (services/restorer/cmd/restore-step), built into
// the service dir beside the services; the test kubelet runs it in front of etcd.
const RestoreStep = "restore-step"

// Setup is the setup program's binary (services/scheduler/cmd/setup): the sandbox runs it,
// with the setup identity, before any service starts, as the deploy's Job does.
const Setup = "setup"

// ToolDir is where `make tools` puts third-party binaries: $ETCDBACKUP_BIN, or
// ~/.cache/etcdbackup/bin.
func ToolDir() string {
	if d := os.Getenv("ETCDBACKUP_BIN"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "etcdbackup", "bin")
}

// CheckTools returns an error naming every missing tool binary.
func CheckTools(dir string) error {
	var missing []string
	for _, b := range ToolBinaries {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %v in %s: run `make tools` from the repository root", missing, dir)
	}
	return nil
}

// RepoRoot finds the repository root (the directory holding go.work) from the working dir up.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.work not found above the working directory")
		}
		dir = parent
	}
}

// BuildServices builds every service binary, and the restore step, into out: one go build of
// them all, which compiles the packages they share once and links them side by side.
// Plugin is the kubectl plugin's binary, built with the services (cli/, docs/cli.md).
const Plugin = "kubectl-etcdbackup"

func BuildServices(ctx context.Context, root, out string) error {
	pkgs := []string{"./" + filepath.Join("services", "restorer", "cmd", RestoreStep),
		"./" + filepath.Join("services", "scheduler", "cmd", Setup), "./" + filepath.Join("cli", "cmd", Plugin)}
	for _, s := range Services {
		pkgs = append(pkgs, "./"+filepath.Join("services", s))
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", append([]string{"build", "-o", out + string(filepath.Separator)}, pkgs...)...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build the services: %w\n%s", err, b)
	}
	return nil
}
