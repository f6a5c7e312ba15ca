// Command images builds an OCI image archive (an OCI layout in a tar) per service without a container engine or a
// base image: static binaries (CGO_ENABLED=0, -trimpath, no build id) on an empty base that
// holds only CA certificates (Mozilla's, from golang.org/x/crypto/x509roots/fallback, pinned
// by go.sum), /etc/passwd and /etc/group with the non-root user 65532, and /tmp. Every file
// time and the image's creation time are the Unix epoch, so the same sources give the same
// digests, on any machine with the same Go. The restorer's image also holds /restore-step,
// the scheduler's /setup.
//
//	go run . --repo ../.. --out ../../bin/images --kustomization ../../deploy/k8s/kustomization.yaml
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/crypto/x509roots/fallback/bundle"
)

// Services are the images built, each with the programs it holds (its entrypoint first).
var Services = map[string][]Program{
	"scheduler":   {{"scheduler", "services/scheduler", "."}, {"setup", "services/scheduler", "./cmd/setup"}},
	"snapshotter": {{"snapshotter", "services/snapshotter", "."}},
	"uploader":    {{"uploader", "services/uploader", "."}},
	"pruner":      {{"pruner", "services/pruner", "."}},
	"restorer":    {{"restorer", "services/restorer", "."}, {"restore-step", "services/restorer", "./cmd/restore-step"}},
	"journal":     {{"journal", "services/journal", "."}},
	"console":     {{"console", "services/console", "."}},
}

// Program is one binary: its name (its path in the image is /<name>), module directory and
// package.
type Program struct {
	Name, Dir, Package string
}

// Image naming and identity.
const (
	Repository = "etcdbackup/"
	// User is the non-root user and group the services run as.
	User = "65532:65532"
	// Source is the repository the images are built from (label org.opencontainers.image.source).
	Source = "https://github.com/etcd-backup/etcdbackup"
)

// epoch is every time in an image: reproducible builds.
var epoch = time.Unix(0, 0).UTC()

func main() {
	repo := flag.String("repo", "../..", "repository root")
	out := flag.String("out", "../../bin/images", "directory for <service>.tar and digests.txt")
	kustomization := flag.String("kustomization", "",
		"kustomization.yaml whose images: list is rewritten with the digests (empty: none)")
	flag.Parse()
	if err := run(context.Background(), *repo, *out, *kustomization); err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, repo, out, kustomization string) error {
	digests, err := BuildAll(ctx, repo, out)
	if err != nil {
		return err
	}
	var lines []string
	for _, svc := range sorted(digests) {
		lines = append(lines, fmt.Sprintf("%s%s@%s", Repository, svc, digests[svc]))
	}
	if err := os.WriteFile(filepath.Join(out, "digests.txt"), []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	fmt.Println(strings.Join(lines, "\n"))
	if kustomization == "" {
		return nil
	}
	return WriteKustomization(kustomization, digests)
}

// BuildAll builds every service's binaries into out/bin and its image into out/<service>.tar,
// and returns each image's digest.
func BuildAll(ctx context.Context, repo, out string) (map[string]v1.Hash, error) {
	repo, err := filepath.Abs(repo)
	if err != nil {
		return nil, err
	}
	bin := filepath.Join(out, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return nil, err
	}
	base, err := baseLayer()
	if err != nil {
		return nil, err
	}
	digests := map[string]v1.Hash{}
	for _, svc := range sorted(Services) {
		var paths []string
		for _, p := range Services[svc] {
			path := filepath.Join(bin, p.Name)
			if err := buildStatic(ctx, repo, p, path); err != nil {
				return nil, err
			}
			paths = append(paths, path)
		}
		img, err := Image(svc, base, paths)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", svc, err)
		}
		if err := writeArchive(filepath.Join(out, svc+".tar"), Repository+svc+":latest", img); err != nil {
			return nil, fmt.Errorf("write %s.tar: %w", svc, err)
		}
		if digests[svc], err = img.Digest(); err != nil {
			return nil, err
		}
	}
	return digests, nil
}

// writeArchive writes img as an OCI image layout in a tar file (an "oci-archive", which
// skopeo, podman, docker load and crane take as it is), the manifest unchanged, so the digest
// the deploy names is the digest a registry gets. The tar is reproducible too.
func writeArchive(path, ref string, img v1.Image) error {
	dir, err := os.MkdirTemp(filepath.Dir(path), ".layout-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendImage(img,
		layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": ref})); err != nil {
		return err
	}
	var names []string
	err = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && path != dir {
			names = append(names, path)
		}
		return err
	})
	if err != nil {
		return err
	}
	sort.Strings(names)
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	for _, n := range names {
		if err := addToTar(tw, dir, n); err != nil {
			f.Close()
			return err
		}
	}
	if err := tw.Close(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// addToTar writes the file or directory name, under dir, to tw at its path relative to dir,
// with the epoch as its time and fixed modes: the same tree gives the same archive.
func addToTar(tw *tar.Writer, dir, name string) error {
	rel, _ := filepath.Rel(dir, name)
	st, err := os.Stat(name)
	if err != nil {
		return err
	}
	h := &tar.Header{Name: filepath.ToSlash(rel), Mode: 0o644, ModTime: epoch, Format: tar.FormatPAX}
	if st.IsDir() {
		h.Typeflag, h.Name, h.Mode = tar.TypeDir, h.Name+"/", 0o755
		return tw.WriteHeader(h)
	}
	h.Typeflag, h.Size = tar.TypeReg, st.Size()
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return err
	}
	_, err = tw.Write(b)
	return err
}

// buildStatic builds one program as a static, reproducible binary.
func buildStatic(ctx context.Context, repo string, p Program, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w -buildid=", "-o",
		out, p.Package)
	cmd.Dir = filepath.Join(repo, p.Dir)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOWORK="+filepath.Join(repo, "go.work"))
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build %s: %w\n%s", p.Name, err, b)
	}
	return nil
}

// Image is a service's image: the base layer, a layer with its binaries at /<name>, the first
// one the entrypoint, run as User.
func Image(svc string, base v1.Layer, binaries []string) (v1.Image, error) {
	var files []file
	for _, b := range binaries {
		data, err := os.ReadFile(b)
		if err != nil {
			return nil, err
		}
		files = append(files, file{name: filepath.Base(b), mode: 0o755, data: data})
	}
	layer, err := layerOf(files)
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), base, layer)
	if err != nil {
		return nil, err
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture, cfg.OS = runtime.GOARCH, "linux"
	cfg.Created = v1.Time{Time: epoch}
	cfg.Config.Entrypoint = []string{"/" + filepath.Base(binaries[0])}
	cfg.Config.User = User
	cfg.Config.WorkingDir = "/"
	cfg.Config.Env = []string{"PATH=/", "HOME=/home/nonroot"}
	cfg.Config.Labels = map[string]string{
		"org.opencontainers.image.title":       "etcdbackup-" + svc,
		"org.opencontainers.image.description": "etcd backup and restore for Kubernetes seeds: the " + svc,
		"org.opencontainers.image.source":      Source,
		"org.opencontainers.image.licenses":    "Apache-2.0",
	}
	cfg.History = nil
	return mutate.ConfigFile(img, cfg)
}

type file struct {
	name string
	mode int64
	dir  bool
	uid  int
	data []byte
}

// baseLayer holds what every image needs besides its binaries.
func baseLayer() (v1.Layer, error) {
	var certs bytes.Buffer
	for root := range bundle.Roots() {
		if err := pem.Encode(&certs, &pem.Block{Type: "CERTIFICATE", Bytes: root.Certificate}); err != nil {
			return nil, err
		}
	}
	if certs.Len() == 0 {
		return nil, errors.New("no CA certificates in the fallback bundle")
	}
	return layerOf([]file{
		{name: "etc", mode: 0o755, dir: true},
		{name: "etc/group", mode: 0o644, data: []byte("root:x:0:\nnonroot:x:65532:\n")},
		{name: "etc/passwd", mode: 0o644,
			data: []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
		{name: "etc/ssl", mode: 0o755, dir: true},
		{name: "etc/ssl/certs", mode: 0o755, dir: true},
		{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, data: certs.Bytes()},
		{name: "home", mode: 0o755, dir: true},
		{name: "home/nonroot", mode: 0o700, dir: true, uid: 65532},
		{name: "tmp", mode: 0o1777, dir: true},
	})
}

// layerOf is a gzip-compressed OCI layer of files, in the given order, every time the epoch.
func layerOf(files []file) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Mode: f.mode, ModTime: epoch, Uid: f.uid, Gid: f.uid, Format: tar.FormatPAX}
		if f.dir {
			h.Typeflag, h.Name = tar.TypeDir, f.name+"/"
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
		tarball.WithMediaType(types.OCILayer))
}

// WriteKustomization rewrites the images: list that ends path (it must be the last key) to
// refer to each service's image by digest.
func WriteKustomization(path string, digests map[string]v1.Hash) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	i := bytes.Index(b, []byte("\nimages:\n"))
	if i < 0 {
		return fmt.Errorf("%s has no images: list", path)
	}
	var out bytes.Buffer
	out.Write(b[:i+1])
	out.WriteString(KustomizationImages(digests))
	return os.WriteFile(path, out.Bytes(), 0o644)
}

// KustomizationImages is the images: list that refers to each image by digest.
func KustomizationImages(digests map[string]v1.Hash) string {
	var b strings.Builder
	b.WriteString("images:\n")
	for _, svc := range sorted(digests) {
		fmt.Fprintf(&b, "  - name: %s%s\n    digest: %s\n", Repository, svc, digests[svc])
	}
	return b.String()
}

func sorted[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
