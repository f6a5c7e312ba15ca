package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/etcd-backup/etcdbackup/e2e/sandbox"
)

// The plugin's krew release installs with krew itself: make krew's manifest and archive (this
// machine's platform), `kubectl krew install --manifest --archive` into an empty KREW_ROOT,
// and kubectl finds the plugin and runs it. krew checks the archive against the manifest's
// sha256: a changed archive is refused and nothing is installed.
func TestKrewInstallsThePlugin(t *testing.T) {
	ctx := testContext(t, 3*time.Minute)
	root, err := sandbox.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "release")
	const version = "v0.0.0-e2e"
	build := exec.CommandContext(ctx, "go", "run", "./cmd/krew-release", "--version", version, "--host-only",
		"--out", out, "--readme", filepath.Join(root, "docs", "cli.md"))
	build.Dir = filepath.Join(root, "cli")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("krew-release: %v\n%s", err, b)
	}
	manifest := filepath.Join(out, "etcdbackup.yaml")
	archive := filepath.Join(out, "kubectl-etcdbackup_"+version+"_"+runtime.GOOS+"_"+runtime.GOARCH+".tar.gz")
	tools := sandbox.ToolDir()
	krewRoot := filepath.Join(dir, "krew")
	krew := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, filepath.Join(tools, "kubectl-krew"), args...)
		cmd.Env = append(os.Environ(), "KREW_ROOT="+krewRoot, "HOME="+dir)
		b, err := cmd.CombinedOutput()
		return string(b), err
	}

	// A changed archive: krew refuses it by the manifest's sha256.
	b, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	tampered := filepath.Join(dir, filepath.Base(archive))
	if err := os.WriteFile(tampered, append(b, 0), 0o644); err != nil {
		t.Fatal(err)
	}
	if msg, err := krew("install", "--manifest="+manifest, "--archive="+tampered); err == nil ||
		!strings.Contains(msg, "checksum does not match") {
		t.Errorf("krew installed a changed archive (%v):\n%s", err, msg)
	}
	if _, err := os.Stat(filepath.Join(krewRoot, "bin", "kubectl-etcdbackup")); err == nil {
		t.Fatal("the changed archive left the plugin installed")
	}

	if msg, err := krew("install", "--manifest="+manifest, "--archive="+archive); err != nil {
		t.Fatalf("krew install: %v\n%s", err, msg)
	}
	// krew's receipt of the install (what `kubectl krew list` reads, with an index to compare).
	if r, err := os.ReadFile(filepath.Join(krewRoot, "receipts", "etcdbackup.yaml")); err != nil ||
		!strings.Contains(string(r), "version: "+version) {
		t.Errorf("krew's receipt of the install (%v):\n%s", err, r)
	}
	// kubectl finds the plugin on the PATH krew puts it on.
	kubectl := exec.CommandContext(ctx, filepath.Join(tools, "kubectl"), "etcdbackup", "version")
	kubectl.Env = append(os.Environ(), "PATH="+filepath.Join(krewRoot, "bin")+string(os.PathListSeparator)+
		os.Getenv("PATH"))
	got, err := kubectl.CombinedOutput()
	if err != nil || strings.TrimSpace(string(got)) != "kubectl-etcdbackup "+version {
		t.Errorf("kubectl etcdbackup version: %v\n%s", err, got)
	}
	if _, err := os.Stat(filepath.Join(krewRoot, "store", "etcdbackup", version, "README.md")); err != nil {
		t.Errorf("the README is not installed beside the plugin: %v", err)
	}
}
