// Command krew-release builds a release of the kubectl plugin for krew: an archive per platform
// and etcdbackup.yaml, the krew manifest naming each archive's URL and sha256 (make krew).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/etcd-backup/etcdbackup/cli/krew"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "krew-release:", err)
		os.Exit(1)
	}
}

func run() error {
	version := flag.String("version", "", "the release's version, such as v0.1.0")
	baseURL := flag.String("base-url", "", "https URL the archives are served under (default: the GitHub release's)")
	out := flag.String("out", "../bin/krew", "directory the archives and the manifest are written to")
	readme := flag.String("readme", "../docs/cli.md", "the README in each archive")
	host := flag.Bool("host-only", false, "only this machine's platform (a local install: kubectl krew install "+
		"--manifest=etcdbackup.yaml --archive=<archive>)")
	flag.Parse()
	if *baseURL == "" {
		*baseURL = "https://github.com/etcd-backup/etcdbackup/releases/download/" + *version
	}
	platforms := krew.Platforms
	if *host {
		platforms = []krew.Platform{{OS: runtime.GOOS, Arch: runtime.GOARCH}}
	}
	archives, err := krew.Build(context.Background(), ".", *readme, *out, *version, platforms)
	if err != nil {
		return err
	}
	m, err := krew.Manifest(*version, *baseURL, archives)
	if err != nil {
		return err
	}
	file := filepath.Join(*out, krew.Name+".yaml")
	if err := os.WriteFile(file, m, 0o644); err != nil {
		return err
	}
	for _, a := range archives {
		fmt.Printf("%s  %s\n", a.SHA256, a.File)
	}
	fmt.Println(file)
	return nil
}
