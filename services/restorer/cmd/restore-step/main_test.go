package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/etcdtest"
	"github.com/etcd-backup/etcdbackup/pkg/s3test"
	"github.com/etcd-backup/etcdbackup/services/restorer/member"
)

// The command restores a data dir from a stored backup once; run again for the same restore
// it neither downloads nor touches the data dir.
func TestRestoreStep(t *testing.T) {
	ctx := context.Background()
	e := etcdtest.Start(t)
	cli := e.Client(t)
	if _, err := cli.Put(ctx, "/registry/k", "v"); err != nil {
		t.Fatal(err)
	}
	s3 := s3test.Run(t, "backups")
	sha := s3.PutBackup(t, "backups", "k.db.zst", e.Snapshot(t), backupformat.Encryption{}, backupformat.Meta{})
	stored, err := s3.Bucket(t, "backups").Stat(ctx, "k.db.zst")
	if err != nil {
		t.Fatal(err)
	}
	peer := freePeer(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	args := []string{"--endpoint", s3.Endpoint, "--bucket", "backups", "--key", "k.db.zst", "--restore-id", "uid-1",
		"--data-dir", dataDir, "--initial-cluster", "etcd-0=" + peer, "--initial-cluster-token", "cluster-x",
		"--work-dir", t.TempDir()}
	env := map[string]string{"POD_NAME": "etcd-0", "ACCESS_KEY_ID": s3test.AccessKey,
		"SECRET_ACCESS_KEY": s3test.SecretKey}
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	// The digest the restorer verified is required, and another object than it is refused.
	for _, sha := range []string{"", "abc"} {
		if err := run(ctx, append(args, "--sha256", sha), func(k string) string { return env[k] },
			log); err == nil || !strings.Contains(err.Error(), "--sha256") {
			t.Fatalf("--sha256 %q: %v, want it refused", sha, err)
		}
	}
	other := sha256.Sum256([]byte("another object"))
	if err := run(ctx, append(args, "--sha256", hex.EncodeToString(other[:])), func(k string) string { return env[k] },
		log); err == nil || !strings.Contains(err.Error(), "not the backup the restorer verified") {
		t.Fatalf("another verified digest: %v, want the object refused", err)
	}
	args = append(args, "--sha256", sha)
	logs.Reset()
	if err := run(ctx, args, func(k string) string { return env[k] }, log); err != nil {
		t.Fatal(err)
	}
	// Its log says what it downloaded, in the lines the restorer reads for the progress.
	if done, total, ok := member.LastProgress(logs.Bytes()); !ok || done != stored.Size || total != stored.Size {
		t.Fatalf("progress in the log: %d of %d (%v); the object has %d bytes\n%s", done, total, ok, stored.Size,
			logs.String())
	}
	if by, err := member.RestoredBy(dataDir); err != nil || by != "uid-1" {
		t.Fatalf("restored by %q, %v", by, err)
	}
	// The backup is gone now: a second run must not need it.
	if err := s3.Bucket(t, "backups").Delete(ctx, "k.db.zst"); err != nil {
		t.Fatal(err)
	}
	if err := run(ctx, args, func(k string) string { return env[k] }, log); err != nil {
		t.Fatalf("second run of the same restore: %v", err)
	}
	if strings.Contains(logs.String(), s3test.SecretKey) {
		t.Fatal("the secret key reached the log")
	}
	if err := run(ctx, append(args, "--progress-interval=0s"), func(k string) string { return env[k] },
		log); err == nil || !strings.Contains(err.Error(), "--progress-interval") {
		t.Fatalf("--progress-interval=0s: %v, want it refused", err)
	}
	delete(env, "SECRET_ACCESS_KEY")
	if err := run(ctx, args, func(k string) string { return env[k] }, log); err == nil || !strings.Contains(err.Error(),
		"SECRET_ACCESS_KEY") {
		t.Fatalf("missing credentials: %v", err)
	}
}

// An encrypted backup restores with the identities in AGE_IDENTITY; without them, or with
// others, the step fails saying it cannot decrypt, and restores nothing.
func TestRestoreStepDecrypts(t *testing.T) {
	ctx := context.Background()
	e := etcdtest.Start(t)
	raw := e.Snapshot(t)
	owner, seal := s3test.AgeKey(t)
	stranger, _ := s3test.AgeKey(t)
	s3 := s3test.Run(t, "backups")
	sha := s3.PutBackup(t, "backups", "k.db.zst", raw, seal, backupformat.Meta{})
	peer := freePeer(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	args := []string{"--endpoint", s3.Endpoint, "--bucket", "backups", "--key", "k.db.zst", "--restore-id", "uid-1",
		"--sha256", sha,
		"--data-dir", dataDir, "--initial-cluster", "etcd-0=" + peer, "--initial-cluster-token", "cluster-x", "--work-dir",
		t.TempDir()}
	env := map[string]string{"POD_NAME": "etcd-0", "ACCESS_KEY_ID": s3test.AccessKey,
		"SECRET_ACCESS_KEY": s3test.SecretKey}
	log := slog.New(slog.DiscardHandler)
	for _, identity := range []string{"", stranger.String()} {
		env["AGE_IDENTITY"] = identity
		if err := run(ctx, args, func(k string) string { return env[k] }, log); !errors.Is(err,
			member.ErrDecrypt) || !strings.Contains(err.Error(), seal.Fingerprints[0]) {
			t.Fatalf("AGE_IDENTITY set: %v: %v, want a decryption failure naming recipient %s", identity != "", err,
				seal.Fingerprints[0])
		}
		if by, _ := member.RestoredBy(dataDir); by != "" {
			t.Fatal("a data dir was restored without the identity")
		}
	}
	env["AGE_IDENTITY"] = stranger.String() + "\n" + owner.String() + "\n"
	if err := run(ctx, args, func(k string) string { return env[k] }, log); err != nil {
		t.Fatal(err)
	}
	if by, err := member.RestoredBy(dataDir); err != nil || by != "uid-1" {
		t.Fatalf("restored by %q, %v", by, err)
	}
}

// freePeer is a loopback peer URL on a port free now.
func freePeer(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return "http://" + l.Addr().String()
}

// With a presigned URL in BACKUP_URL, and no bucket keys, the step restores the object it
// reads; once the URL expired it fails, restores nothing, and never logs the URL.
func TestRestoreStepWithAPresignedURL(t *testing.T) {
	ctx := context.Background()
	e := etcdtest.Start(t)
	s3 := s3test.Run(t, "backups")
	sha := s3.PutBackup(t, "backups", "k.db.zst", e.Snapshot(t), backupformat.Encryption{}, backupformat.Meta{})
	bucket := s3.Bucket(t, "backups")
	args := func(id, dataDir string) []string {
		return []string{"--endpoint", s3.Endpoint, "--bucket", "backups", "--key", "k.db.zst", "--restore-id", id,
			"--sha256", sha, "--data-dir", dataDir, "--initial-cluster", "etcd-0=" + freePeer(t),
			"--initial-cluster-token", "cluster-x", "--work-dir", t.TempDir()}
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	u, err := bucket.PresignGet(ctx, "k.db.zst", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"POD_NAME": "etcd-0", "BACKUP_URL": u}
	dataDir := filepath.Join(t.TempDir(), "data")
	if err := run(ctx, args("uid-1", dataDir), func(k string) string { return env[k] }, log); err != nil {
		t.Fatal(err)
	}
	if by, err := member.RestoredBy(dataDir); err != nil || by != "uid-1" {
		t.Fatalf("restored by %q, %v", by, err)
	}
	if env["BACKUP_URL"], err = bucket.PresignGet(ctx, "k.db.zst", time.Second); err != nil {
		t.Fatal(err)
	}
	dataDir = filepath.Join(t.TempDir(), "data")
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		err := run(ctx, args("uid-2", dataDir), func(k string) string { return env[k] }, log)
		if errors.Is(err, destination.ErrAccessDenied) && strings.Contains(err.Error(), "expired") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("with a URL valid for 1s, 30s later: %v; want it refused as expired", err)
		}
		os.RemoveAll(dataDir)
	}
	if by, _ := member.RestoredBy(dataDir); by != "" {
		t.Fatalf("an expired URL restored the data dir (by %q)", by)
	}
	if strings.Contains(logs.String(), "X-Amz-Signature") {
		t.Fatal("the presigned URL reached the log")
	}
}
