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
var ToolBinaries = []string{"kube-apiserver", "kubectl", "kube-controller-manager", "versitygw", "nats", "promtool"}

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

// BuildServices builds every service binary, and the restore step, into out.
func BuildServices(ctx context.Context, root, out string) error {
	builds := map[string]string{RestoreStep: filepath.Join(root, "services", "restorer", "cmd", "restore-step"),
		Setup: filepath.Join(root, "services", "scheduler", "cmd", "setup")}
	for _, s := range Services {
		builds[s] = filepath.Join(root, "services", s)
	}
	for name, dir := range builds {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(out, name), ".")
		cmd.Dir = dir
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %w\n%s", name, err, b)
		}
	}
	return nil
}
