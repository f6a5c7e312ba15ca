// Package krew makes a release of the kubectl plugin for krew, kubectl's plugin manager: an
// archive per platform (the binary and its README), and the krew manifest that names each
// archive with its sha256, ready for the krew index or for
// `kubectl krew install --manifest=etcdbackup.yaml --archive=<archive>`.
package krew

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// Name is the plugin's name at krew: kubectl etcdbackup.
const Name = "etcdbackup"

// Binary is the plugin's executable.
const Binary = "kubectl-etcdbackup"

// Platform is an operating system and architecture a release is built for.
type Platform struct{ OS, Arch string }

// Platforms are those a release is built for.
var Platforms = []Platform{{"linux", "amd64"}, {"linux", "arm64"}, {"darwin", "amd64"}, {"darwin", "arm64"},
	{"windows", "amd64"}}

// Archive is one platform's archive of a release.
type Archive struct {
	Platform
	// File is the archive's path; its base name is what the manifest's URI ends in.
	File   string
	SHA256 string
}

var semver = regexp.MustCompile(`^v\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$`)

// Build builds the plugin for each platform from the cli module at cliDir and writes an archive
// for each into out: kubectl-etcdbackup_<version>_<os>_<arch>.tar.gz, holding the binary
// (version in `kubectl etcdbackup version`) and readme as README.md.
func Build(ctx context.Context, cliDir, readme, out, version string, platforms []Platform) ([]Archive, error) {
	if !semver.MatchString(version) {
		return nil, fmt.Errorf("version %q: krew wants a semantic version such as v0.1.0", version)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	doc, err := os.ReadFile(readme)
	if err != nil {
		return nil, err
	}
	var archives []Archive
	for _, p := range platforms {
		bin := filepath.Join(out, fmt.Sprintf("build-%s-%s", p.OS, p.Arch), p.binary())
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", bin,
			"-ldflags", "-s -w -X github.com/etcd-backup/etcdbackup/cli/plugin.Version="+version, "./cmd/"+Binary)
		cmd.Dir = cliDir
		cmd.Env = append(os.Environ(), "GOOS="+p.OS, "GOARCH="+p.Arch, "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("build for %s/%s: %w\n%s", p.OS, p.Arch, err, b)
		}
		file := filepath.Join(out, fmt.Sprintf("%s_%s_%s_%s.tar.gz", Binary, version, p.OS, p.Arch))
		sum, err := writeArchive(file, map[string]string{p.binary(): bin}, map[string][]byte{"README.md": doc})
		if err != nil {
			return nil, err
		}
		if err := os.RemoveAll(filepath.Dir(bin)); err != nil {
			return nil, err
		}
		archives = append(archives, Archive{Platform: p, File: file, SHA256: sum})
	}
	return archives, nil
}

func (p Platform) binary() string {
	if p.OS == "windows" {
		return Binary + ".exe"
	}
	return Binary
}

// writeArchive writes a tar.gz of files (name -> path, executable) and docs (name -> content)
// and returns its sha256. Times and owners are fixed: the same inputs make the same archive.
func writeArchive(file string, files map[string]string, docs map[string][]byte) (string, error) {
	f, err := os.Create(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	zw := gzip.NewWriter(io.MultiWriter(f, h))
	tw := tar.NewWriter(zw)
	epoch := time.Unix(0, 0)
	for _, name := range slices.Sorted(maps.Keys(files)) {
		b, err := os.ReadFile(files[name])
		if err != nil {
			return "", err
		}
		if err := writeEntry(tw, name, 0o755, epoch, b); err != nil {
			return "", err
		}
	}
	for _, name := range slices.Sorted(maps.Keys(docs)) {
		if err := writeEntry(tw, name, 0o644, epoch, docs[name]); err != nil {
			return "", err
		}
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	if err := zw.Close(); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), f.Close()
}

func writeEntry(tw *tar.Writer, name string, mode int64, at time.Time, b []byte) error {
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(b)), ModTime: at,
		Typeflag: tar.TypeReg, Format: tar.FormatPAX}); err != nil {
		return err
	}
	_, err := tw.Write(b)
	return err
}

// Manifest is the krew manifest (krew.googlecontainertools.github.com/v1alpha2 Plugin) of a
// release whose archives are served under baseURL.
func Manifest(version, baseURL string, archives []Archive) ([]byte, error) {
	if !strings.HasPrefix(baseURL, "https://") {
		return nil, fmt.Errorf("base URL %q: krew wants https", baseURL)
	}
	var platforms []any
	for _, a := range archives {
		platforms = append(platforms, map[string]any{
			"selector": map[string]any{"matchLabels": map[string]string{"os": a.OS, "arch": a.Arch}},
			"uri":      strings.TrimSuffix(baseURL, "/") + "/" + filepath.Base(a.File),
			"sha256":   a.SHA256,
			"files": []any{
				map[string]string{"from": a.binary(), "to": "."},
				map[string]string{"from": "README.md", "to": "."},
			},
			"bin": a.binary(),
		})
	}
	return yaml.Marshal(map[string]any{
		"apiVersion": "krew.googlecontainertools.github.com/v1alpha2",
		"kind":       "Plugin",
		"metadata":   map[string]any{"name": Name},
		"spec": map[string]any{
			"version":          version,
			"homepage":         "https://github.com/etcd-backup/etcdbackup",
			"shortDescription": "List, take and restore the etcd backups of KKP user clusters",
			"description": "kubectl etcdbackup works with the etcd backup system's EtcdBackupConfigs and EtcdRestores\n" +
				"with your kubeconfig and your RBAC: ls every backup with its phase, size, revision, drill\n" +
				"verdict and point-in-time window; describe a config, backup or restore; take a backup now\n" +
				"and follow it; restore a cluster from a backup or to a point in time; run a drill.\n",
			"caveats": "The backups and restores are those of the etcd backup system's services on the seed\n" +
				"(https://github.com/etcd-backup/etcdbackup); `backup` also needs the NATS trigger's\n" +
				"credentials (docs/cli.md).\n",
			"platforms": platforms,
		},
	})
}
