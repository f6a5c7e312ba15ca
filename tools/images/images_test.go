package main

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// The images built from this checkout have the digests the deploy refers to (built by make
// images elsewhere: the images are reproducible), and each tarball holds a runnable static
// binary as its entrypoint, run as the non-root user, with CA certificates, the labels, and
// nothing else.
func TestImages(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	repo, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	// One build: the digests committed in the kustomization were built by make images in
	// another checkout, at another path, often on another machine, so matching them is the
	// reproducibility check (a second build here relinked every binary for 35 s to prove less).
	first := t.TempDir()
	digests, err := BuildAll(ctx, repo, first)
	if err != nil {
		t.Fatal(err)
	}

	kustomization, err := os.ReadFile(filepath.Join(repo, "deploy", "k8s", "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if want := KustomizationImages(digests); !strings.HasSuffix(string(kustomization), "\n"+want) {
		t.Errorf("deploy/k8s/kustomization.yaml does not refer to the images built from this tree; run make images and "+
			"commit (if it then still differs on another machine, the build is not reproducible). It should end "+
			"with:\n%s", want)
	}

	for svc, programs := range Services {
		t.Run(svc, func(t *testing.T) {
			img := imageOf(t, filepath.Join(first, svc+".tar"))
			if d, err := img.Digest(); err != nil || d != digests[svc] {
				t.Fatalf("the tarball's image has digest %s (%v), the build said %s", d, err, digests[svc])
			}
			cfg, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			c := cfg.Config
			if ep := "/" + programs[0].Name; len(c.Entrypoint) != 1 || c.Entrypoint[0] != ep {
				t.Errorf("entrypoint %v, want [%s]", c.Entrypoint, ep)
			}
			if c.User != User {
				t.Errorf("user %q, want %q", c.User, User)
			}
			for _, l := range []string{"org.opencontainers.image.title", "org.opencontainers.image.source",
				"org.opencontainers.image.licenses"} {
				if c.Labels[l] == "" {
					t.Errorf("label %s is missing", l)
				}
			}
			if !cfg.Created.Equal(epoch) {
				t.Errorf("created %s, want the epoch", cfg.Created)
			}
			files := filesOf(t, img)
			for _, want := range []string{"etc/passwd", "etc/group", "etc/ssl/certs/ca-certificates.crt"} {
				if len(files[want]) == 0 {
					t.Errorf("%s is missing or empty", want)
				}
			}
			if !strings.Contains(string(files["etc/passwd"]), ":65532:65532:") {
				t.Errorf("/etc/passwd has no user 65532:\n%s", files["etc/passwd"])
			}
			if n := strings.Count(string(files["etc/ssl/certs/ca-certificates.crt"]), "BEGIN CERTIFICATE"); n < 100 {
				t.Errorf("the CA bundle holds %d certificates", n)
			}
			var want []string
			for _, p := range programs {
				want = append(want, p.Name)
			}
			for name := range files {
				if !strings.Contains(name, "/") && !strings.HasSuffix(name, "/") && !contains(want, name) {
					t.Errorf("unexpected file /%s", name)
				}
			}
			for _, p := range programs {
				bin := filepath.Join(t.TempDir(), p.Name)
				if err := os.WriteFile(bin, files[p.Name], 0o755); err != nil {
					t.Fatal(err)
				}
				out, err := exec.CommandContext(ctx, bin, "--help").CombinedOutput()
				if err != nil || !strings.Contains(string(out), "-") {
					t.Errorf("/%s --help from the image: %v\n%s", p.Name, err, out)
				}
				if p.Name != "restore-step" && !strings.Contains(string(out), "-nats-creds") {
					t.Errorf("/%s --help does not list --nats-creds:\n%s", p.Name, out)
				}
			}
		})
	}
}

// imageOf opens the one image of an OCI archive.
func imageOf(t *testing.T, archive string) v1.Image {
	t.Helper()
	dir := t.TempDir()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		target := filepath.Join(dir, filepath.FromSlash(h.Name))
		if h.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(target, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(target, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil || len(m.Manifests) != 1 {
		t.Fatalf("the archive's index lists %v (%v), want one image", m, err)
	}
	img, err := idx.Image(m.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// filesOf returns the regular files of the image's flattened file system, by path without
// the leading slash.
func filesOf(t *testing.T, img v1.Image) map[string][]byte {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if h.Typeflag != tar.TypeReg {
				continue
			}
			if h.Uid != 0 && h.Uid != 65532 || !h.ModTime.Equal(epoch) {
				t.Errorf("%s: uid %d, time %s", h.Name, h.Uid, h.ModTime)
			}
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[h.Name] = b
		}
		rc.Close()
	}
	return files
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
