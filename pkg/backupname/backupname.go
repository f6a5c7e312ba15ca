// Package backupname derives every name of a backup from its config and scheduled time:
// the backup name users see in status, the job name, and the object key in the bucket.
// All are deterministic, so every replica that handles the same slot derives the same names.
package backupname

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// TimeLayout is the layout of the time in a backup name: the seed shows
// "daily-backup-2021-03-02T15:24:00" (UTC, no zone).
const TimeLayout = "2006-01-02T15:04:05"

// ObjectSuffix ends every backup object's key: a zstd-compressed etcd snapshot.
const ObjectSuffix = ".db.zst"

// Backup is "<config name>-<scheduled time, UTC>".
func Backup(config string, scheduled time.Time) string {
	return config + "-" + scheduled.UTC().Format(TimeLayout)
}

// Job is "<cluster>-backup-<config>-create-<10 characters derived from the backup name>",
// the shape of KKP's job names, deterministic so that retries and replicas agree on it.
func Job(cluster, config, backup string) string {
	return fmt.Sprintf("%s-backup-%s-create-%s", cluster, config, shortHash(backup))
}

// DeleteJob is the deletion job's name for a backup.
func DeleteJob(cluster, config, backup string) string {
	return fmt.Sprintf("%s-backup-%s-delete-%s", cluster, config, shortHash(backup))
}

// Prefix is the key prefix holding every backup of one config: "<cluster>/<namespace>/<config>/".
func Prefix(cluster, namespace, config string) string {
	return cluster + "/" + namespace + "/" + config + "/"
}

// ObjectKey is the bucket key of a backup. It contains no ':' (some S3-compatible stores
// reject it), so the time's colons become '-': "<prefix><config>-2021-03-02T15-24-00.db.zst".
func ObjectKey(cluster, namespace, config, backup string) string {
	return Prefix(cluster, namespace, config) + strings.ReplaceAll(backup, ":", "-") + ObjectSuffix
}

func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:10]
}

// Parse returns the scheduled time in a backup name of config ("<config>-<time>"); ok is false
// when the name is not one.
func Parse(config, backup string) (time.Time, bool) {
	stamp, found := strings.CutPrefix(backup, config+"-")
	if !found || config == "" {
		return time.Time{}, false
	}
	t, err := time.Parse(TimeLayout, stamp)
	if err != nil || t.Format(TimeLayout) != stamp {
		return time.Time{}, false
	}
	return t, true
}

// ConfigOf splits a backup name "<config>-2006-01-02T15:04:05" into its config's name.
func ConfigOf(backup string) (string, bool) {
	n := len(TimeLayout)
	if len(backup) < n+2 || backup[len(backup)-n-1] != '-' {
		return "", false
	}
	if _, err := time.Parse(TimeLayout, backup[len(backup)-n:]); err != nil {
		return "", false
	}
	config := backup[:len(backup)-n-1]
	return config, strings.TrimSpace(config) != ""
}
