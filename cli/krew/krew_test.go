package krew

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// The manifest names every platform's archive by URL and sha256, with the binary (.exe on
// Windows) and the README installed; krew's own install of it is the end-to-end test
// (TestKrewInstallsThePlugin).
func TestManifestNamesEachArchive(t *testing.T) {
	archives := []Archive{
		{Platform: Platform{"linux", "amd64"}, File: "/x/kubectl-etcdbackup_v1.2.3_linux_amd64.tar.gz", SHA256: "aa"},
		{Platform: Platform{"windows", "amd64"}, File: "/x/kubectl-etcdbackup_v1.2.3_windows_amd64.tar.gz", SHA256: "bb"},
	}
	b, err := Manifest("v1.2.3", "https://example.com/rel/", archives)
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct{ Name string }
		Spec       struct {
			Version   string
			Platforms []struct {
				Selector struct {
					MatchLabels map[string]string `json:"matchLabels"`
				}
				URI, SHA256, Bin string
				Files            []struct{ From, To string }
			}
		}
	}
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m.APIVersion != "krew.googlecontainertools.github.com/v1alpha2" || m.Kind != "Plugin" ||
		m.Metadata.Name != "etcdbackup" || m.Spec.Version != "v1.2.3" || len(m.Spec.Platforms) != 2 {
		t.Fatalf("manifest:\n%s", b)
	}
	win := m.Spec.Platforms[1]
	if win.URI != "https://example.com/rel/kubectl-etcdbackup_v1.2.3_windows_amd64.tar.gz" || win.SHA256 != "bb" ||
		win.Bin != "kubectl-etcdbackup.exe" || win.Selector.MatchLabels["os"] != "windows" ||
		len(win.Files) != 2 || win.Files[0].From != "kubectl-etcdbackup.exe" || win.Files[1].From != "README.md" {
		t.Errorf("the windows platform: %+v", win)
	}
	if _, err := Manifest("v1.2.3", "http://example.com", archives); err == nil {
		t.Error("an http base URL was accepted")
	}
}

// A release needs a semantic version; the same inputs make byte-identical archives.
func TestArchivesAreReproducible(t *testing.T) {
	if _, err := Build(t.Context(), ".", "x", t.TempDir(), "1.0", nil); err == nil ||
		!strings.Contains(err.Error(), "semantic version") {
		t.Errorf("version 1.0: %v", err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	var sums []string
	for _, name := range []string{"a.tar.gz", "b.tar.gz"} {
		sum, err := writeArchive(filepath.Join(dir, name), map[string]string{Binary: bin},
			map[string][]byte{"README.md": []byte("# readme\n")})
		if err != nil {
			t.Fatal(err)
		}
		sums = append(sums, sum)
	}
	if sums[0] != sums[1] || len(sums[0]) != 64 {
		t.Errorf("two archives of the same files: %v", sums)
	}
}
