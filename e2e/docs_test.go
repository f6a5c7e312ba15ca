package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/etcd-backup/etcdbackup/e2e/sandbox"
)

// docs/operations.md lists every flag of every service and every metric the code defines.
func TestOperationsDocListsEveryFlagAndMetric(t *testing.T) {
	root, err := sandbox.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join(root, "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	flagLine := regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`)
	for _, svc := range append(sandbox.Services, sandbox.RestoreStep) {
		out, _ := exec.Command(filepath.Join(env.Opts.ServiceDir, svc), "-help").CombinedOutput()
		flags := flagLine.FindAllStringSubmatch(string(out), -1)
		if len(flags) < 5 {
			t.Fatalf("%s -help listed %d flags:\n%s", svc, len(flags), out)
		}
		for _, f := range flags {
			if !strings.Contains(string(doc), "`--"+f[1]+"`") {
				t.Errorf("docs/operations.md does not list %s's flag --%s", svc, f[1])
			}
		}
	}
	metricName := regexp.MustCompile(`Name:\s+"(etcdbackup_[a-z_]+)"`)
	found := 0
	walk := func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
			return err
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range metricName.FindAllStringSubmatch(string(src), -1) {
			found++
			if !strings.Contains(string(doc), "`"+m[1]+"`") {
				t.Errorf("docs/operations.md does not list metric %s (%s)", m[1], path)
			}
		}
		return nil
	}
	for _, dir := range []string{"services", "pkg"} {
		if err := filepath.WalkDir(filepath.Join(root, dir), walk); err != nil {
			t.Fatal(err)
		}
	}
	if found < 8 {
		t.Fatalf("found %d metric definitions in services/, expected at least 8", found)
	}
}
