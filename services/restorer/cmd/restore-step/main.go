// Command restore-step restores one etcd member's data dir from a backup, in front of etcd in
// the member's pod during a restore. It downloads the backup through the presigned GET URL
// in BACKUP_URL, or else with the read-only keys in ACCESS_KEY_ID and SECRET_ACCESS_KEY (its
// environment, from the restore's credentials Secret), proves it intact, and restores the
// data dir once per restore. Exit 0: restored, or already restored by this restore; 1:
// anything else, with the reason on stderr.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"filippo.io/age"
	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/procstat"
	"github.com/etcd-backup/etcdbackup/pkg/progress"
	"github.com/etcd-backup/etcdbackup/services/restorer/member"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, slog.New(slog.NewJSONHandler(os.Stderr, nil)))
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "restore-step:", err)
		os.Exit(1)
	}
}

type config struct {
	endpoint, bucket, key, workDir string
	sha256                         string
	member                         member.Config
	peerURLs                       string
	// progressEvery is how often a "fetching" line reports the download.
	progressEvery time.Duration
	// maxSnapshot bounds the snapshot written to the work dir.
	maxSnapshot int64
}

func parse(args []string, getenv func(string) string) (config, error) {
	var c config
	fs := flag.NewFlagSet("restore-step", flag.ContinueOnError)
	fs.StringVar(&c.endpoint, "endpoint", "", "S3 endpoint: host[:port], https://… or http://…")
	fs.StringVar(&c.bucket, "bucket", "", "bucket of the backup")
	fs.StringVar(&c.key, "key", "", "object key of the backup")
	fs.StringVar(&c.sha256, "sha256", "",
		"sha256 of the backup object as the restorer verified it; any other object is refused")
	fs.StringVar(&c.workDir, "work-dir", os.TempDir(), "where the decompressed backup waits (needs the snapshot's size)")
	fs.StringVar(&c.member.RestoreID, "restore-id", "", "id of the restore (the EtcdRestore's uid)")
	fs.StringVar(&c.member.Name, "name", getenv("POD_NAME"), "member name (default $POD_NAME)")
	fs.StringVar(&c.member.DataDir, "data-dir", "", "the member's data dir")
	fs.StringVar(&c.member.InitialCluster, "initial-cluster", "", "every member: name=peerURL,…")
	fs.StringVar(&c.member.Token, "initial-cluster-token", "", "cluster token (the cluster's name)")
	fs.StringVar(&c.peerURLs, "peer-urls", "",
		"this member's peer URLs, comma-separated (default: its entry in --initial-cluster)")
	fs.DurationVar(&c.progressEvery, "progress-interval", progress.Interval,
		"how often a \"fetching\" log line reports the bytes downloaded (the restorer reads them for the EtcdRestore's "+
			"progress)")
	fs.Int64Var(&c.maxSnapshot, "max-snapshot-size", backupformat.DefaultMaxSnapshotSize,
		"bytes of snapshot written to the work dir at most, whatever the backup's metadata says")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if c.maxSnapshot < 1 {
		return config{}, fmt.Errorf("--max-snapshot-size %d must be positive", c.maxSnapshot)
	}
	if c.progressEvery <= 0 {
		return config{}, fmt.Errorf("--progress-interval %s must be positive", c.progressEvery)
	}
	for name, v := range map[string]string{"endpoint": c.endpoint, "bucket": c.bucket, "key": c.key, "sha256": c.sha256,
		"data-dir": c.member.DataDir,
		"name":     c.member.Name, "initial-cluster": c.member.InitialCluster} {
		if v == "" {
			return config{}, fmt.Errorf("--%s is required", name)
		}
	}
	if b, err := hex.DecodeString(c.sha256); err != nil || len(b) != sha256.Size {
		return config{}, fmt.Errorf("--sha256 %q is not a hex sha256", c.sha256)
	}
	if c.peerURLs == "" {
		c.peerURLs = peerURLsOf(c.member.InitialCluster, c.member.Name)
		if c.peerURLs == "" {
			return config{}, fmt.Errorf("--initial-cluster has no entry for member %q, and --peer-urls is not set",
				c.member.Name)
		}
	}
	c.member.PeerURLs = strings.Split(c.peerURLs, ",")
	return c, nil
}

// peerURLsOf returns name's peer URLs from an initial cluster "a=url,b=url,a=url2".
func peerURLsOf(initialCluster, name string) string {
	var urls []string
	for _, m := range strings.Split(initialCluster, ",") {
		if n, u, ok := strings.Cut(strings.TrimSpace(m), "="); ok && n == name {
			urls = append(urls, u)
		}
	}
	return strings.Join(urls, ",")
}

func run(ctx context.Context, args []string, getenv func(string) string, log *slog.Logger) error {
	c, err := parse(args, getenv)
	if err != nil {
		return err
	}
	bucket, ids, err := secrets(c, getenv)
	if err != nil {
		return err
	}
	log = log.With("member", c.member.Name, "restore", c.member.RestoreID, "key", c.key)
	// A member restarting within the same restore keeps its data and skips the download.
	if by, err := member.RestoredBy(c.member.DataDir); err != nil {
		return err
	} else if by == c.member.RestoreID {
		log.Info("data dir already restored by this restore")
		return nil
	}
	if err := os.MkdirAll(c.workDir, 0o700); err != nil {
		return err
	}
	c.member.Snapshot = filepath.Join(c.workDir, "restore-"+c.member.RestoreID+".db")
	defer os.Remove(c.member.Snapshot)
	mem := procstat.Sample(20 * time.Millisecond)
	start := time.Now()
	if err := fetch(ctx, c, bucket, ids, log); err != nil {
		return err
	}
	fetched := time.Now()
	restored, err := member.Restore(c.member)
	if err != nil {
		return err
	}
	var size int64
	if fi, err := os.Stat(c.member.Snapshot); err == nil {
		size = fi.Size()
	}
	// Memory, for sizing the init container: etcd's backend maps the restored db with
	// MAP_POPULATE, so the resident set includes the db file; the heap is the anonymous part.
	anon, file := mem.Stop()
	peak, _ := procstat.PeakRSS(0)
	log.Info("member restored", "restored", restored, "data_dir", c.member.DataDir, "snapshot_bytes", size,
		"fetch_seconds", fetched.Sub(start).Seconds(), "restore_seconds", time.Since(fetched).Seconds(),
		"peak_rss_bytes", peak, "peak_anon_bytes", anon, "peak_file_bytes", file)
	return nil
}

// secrets opens the backup with what the environment holds (from the restore's credentials
// Secret): its presigned URL (BACKUP_URL), else the bucket's keys (ACCESS_KEY_ID and
// SECRET_ACCESS_KEY); and reads the identities an encrypted backup is decrypted with
// (AGE_IDENTITY).
func secrets(c config, getenv func(string) string) (destination.Reader, []age.Identity, error) {
	bucket, err := open(c, getenv)
	if err != nil {
		return nil, nil, err
	}
	var ids []age.Identity
	if text := getenv("AGE_IDENTITY"); text != "" {
		parsed, err := backupformat.ParseIdentities(text)
		if err != nil {
			return nil, nil, fmt.Errorf("AGE_IDENTITY: %w", err)
		}
		ids = parsed.List
	}
	return bucket, ids, nil
}

func open(c config, getenv func(string) string) (destination.Reader, error) {
	if u := getenv("BACKUP_URL"); u != "" {
		return destination.OpenPresigned(u, c.key)
	}
	id, secret := getenv("ACCESS_KEY_ID"), getenv("SECRET_ACCESS_KEY")
	if id == "" || secret == "" {
		return nil, errors.New("BACKUP_URL, or ACCESS_KEY_ID and SECRET_ACCESS_KEY, must be set")
	}
	host, secure, err := destination.ParseEndpoint(c.endpoint)
	if err != nil {
		return nil, err
	}
	return destination.OpenS3(host, secure, id, secret, c.bucket)
}

// fetch downloads the backup into c.member.Snapshot, logging its progress: the restorer reads
// the last of these lines from the pod's log for the restore's progress (member.LastProgress);
// the last one, "fetched", has the whole download.
func fetch(ctx context.Context, c config, bucket destination.Reader, ids []age.Identity, log *slog.Logger) error {
	var p member.Progress
	say := func(msg string) {
		done, total := p.Bytes()
		log.Info(msg, member.LogBytesDone, done, member.LogBytesTotal, total)
	}
	stop := progress.Every(ctx, c.progressEvery, func() { say("fetching") })
	err := member.Fetch(ctx, bucket, c.key, c.sha256, ids, c.member.Snapshot, &p, c.maxSnapshot)
	stop()
	if err != nil {
		return err
	}
	say("fetched")
	return nil
}
