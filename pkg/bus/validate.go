package bus

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Bounds of what a message may hold.
const (
	// MaxMessageText bounds a status message or error text.
	MaxMessageText = 8 << 10
	// MaxSnapshotSize bounds a snapshot's size: etcd's own backend limit is 8 GiB; 1 TiB leaves
	// room and still refuses nonsense.
	MaxSnapshotSize = 1 << 40
	// maxFuture is how far ahead of this clock a time in a message may be (clock skew).
	maxFuture = 24 * time.Hour
)

// earliest is the earliest time a message may name.
var earliest = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// Deletion reasons a DeleteRequested may carry.
const (
	DeleteReasonRetention     = "retention"
	DeleteReasonFailed        = "failed"
	DeleteReasonConfigDeleted = "config deleted"
)

// Validate checks that m is a well-formed message of the bus: required fields set, names valid
// Kubernetes names, times in range, sizes plausible, and every derived name (job, object key,
// staged object) equal to what its parts derive. It says nothing about whether the Kubernetes
// API agrees (consumers check that); it only refuses what no honest publisher sends.
func Validate(m proto.Message) error {
	now := time.Now()
	switch m := m.(type) {
	case *etcdbackupv1.BackupRequested:
		return validateRequest(m, now)
	case *etcdbackupv1.SnapshotReady:
		return validateReady(m, now)
	case *etcdbackupv1.BackupStored:
		return validateStored(m, now)
	case *etcdbackupv1.DeleteRequested:
		return validateDelete(m, now)
	case *etcdbackupv1.StatusEvent:
		return validateStatus(m, now)
	case *etcdbackupv1.TriggerBackupRequest:
		return validateNames("", m.GetNamespace(), m.GetConfig())
	}
	return fmt.Errorf("no validation is defined for %T", m)
}

func validateRequest(m *etcdbackupv1.BackupRequested, now time.Time) error {
	if err := validateBackup(m.GetConfig(), m.GetCluster(), m.GetBackupName(), m.GetScheduledTime(), now); err != nil {
		return err
	}
	ref := m.GetConfig()
	if want := backupname.Job(m.GetCluster(), ref.GetName(), m.GetBackupName()); m.GetJobName() != want {
		return fmt.Errorf("job_name %q is not the backup's job name %q", m.GetJobName(), want)
	}
	if want := backupname.ObjectKey(m.GetCluster(), ref.GetNamespace(), ref.GetName(),
		m.GetBackupName()); m.GetObjectKey() != want {
		return fmt.Errorf("object_key %q is not the backup's key %q", m.GetObjectKey(), want)
	}
	if err := validateDestination(m.GetDestination()); err != nil {
		return err
	}
	if _, ok := etcdbackupv1.Trigger_name[int32(m.GetTrigger())]; !ok ||
		m.GetTrigger() == etcdbackupv1.Trigger_TRIGGER_UNSPECIFIED {
		return fmt.Errorf("trigger %d is not a known trigger", m.GetTrigger())
	}
	return nil
}

func validateReady(m *etcdbackupv1.SnapshotReady, now time.Time) error {
	if m.GetRequest() == nil {
		return errors.New("request is required")
	}
	if err := validateRequest(m.GetRequest(), now); err != nil {
		return fmt.Errorf("request: %w", err)
	}
	if want := MsgID(m.GetRequest()); m.GetStagedObject() != want {
		return fmt.Errorf("staged_object %q is not the backup's staged object %q", m.GetStagedObject(), want)
	}
	if err := validateSnapshot(m.GetSnapshotSize(), m.GetSnapshotSha256()); err != nil {
		return err
	}
	if m.GetRevision() < 0 {
		return fmt.Errorf("revision %d is negative", m.GetRevision())
	}
	if m.GetStoredSha256() != "" || m.GetStoredSize() != 0 {
		if !isSHA256(m.GetStoredSha256()) {
			return fmt.Errorf("stored_sha256 %q is not a hex sha256", m.GetStoredSha256())
		}
		if m.GetStoredSize() == 0 || m.GetStoredSize() > MaxSnapshotSize {
			return fmt.Errorf("stored_size %d is not within range", m.GetStoredSize())
		}
	}
	if len(m.GetEtcdVersion()) > 64 || len(m.GetMemberEndpoint()) > 1024 {
		return errors.New("etcd_version or member_endpoint is too long")
	}
	return validateTime("started_time", m.GetStartedTime(), now, true)
}

func validateStored(m *etcdbackupv1.BackupStored, now time.Time) error {
	if m.GetRequest() == nil {
		return errors.New("request is required")
	}
	if err := validateRequest(m.GetRequest(), now); err != nil {
		return fmt.Errorf("request: %w", err)
	}
	if m.GetObjectKey() != m.GetRequest().GetObjectKey() {
		return fmt.Errorf("object_key %q is not the request's %q", m.GetObjectKey(), m.GetRequest().GetObjectKey())
	}
	if m.GetBucket() == "" || len(m.GetBucket()) > 255 {
		return errors.New("bucket is required and at most 255 characters")
	}
	if m.GetSize() == 0 || m.GetSize() > MaxSnapshotSize {
		return fmt.Errorf("size %d is out of range", m.GetSize())
	}
	if !isSHA256(m.GetSha256()) {
		return fmt.Errorf("sha256 %q is not a hex sha256", m.GetSha256())
	}
	if err := validateSnapshot(m.GetSnapshotSize(), m.GetSnapshotSha256()); err != nil {
		return err
	}
	return validateTime("finished_time", m.GetFinishedTime(), now, false)
}

// MaxRecipients bounds the recipients' fingerprints a stored object's record lists.
const MaxRecipients = 64

// validateStoredObject checks a stored object's record (nil: none).
func validateStoredObject(o *etcdbackupv1.StoredObject) error {
	if o == nil {
		return nil
	}
	if c := o.GetCodec(); len(c) > 32 || strings.Trim(c, "abcdefghijklmnopqrstuvwxyz0123456789+") != "" {
		return fmt.Errorf("object.codec %q is not a codec", c)
	}
	if len(o.GetRecipients()) > MaxRecipients {
		return fmt.Errorf("object.recipients lists %d, at most %d", len(o.GetRecipients()), MaxRecipients)
	}
	for _, f := range o.GetRecipients() {
		if b, err := hex.DecodeString(f); err != nil || len(b) != 8 || strings.ToLower(f) != f {
			return fmt.Errorf("object.recipients: %q is not a fingerprint", f)
		}
	}
	if s := o.GetSnapshotSha256(); s != "" && !isSHA256(s) {
		return fmt.Errorf("object.snapshot_sha256 %q is not a hex sha256", s)
	}
	if o.GetSnapshotSize() > MaxSnapshotSize || o.GetKeyCount() < 0 {
		return errors.New("object.snapshot_size or object.key_count is out of range")
	}
	switch o.GetLockMode() {
	case "", "GOVERNANCE", "COMPLIANCE":
	default:
		return fmt.Errorf("object.lock_mode %q is neither GOVERNANCE nor COMPLIANCE", o.GetLockMode())
	}
	if u := o.GetRetainUntil(); u != nil && (u.CheckValid() != nil || u.AsTime().Before(earliest) ||
		u.AsTime().Year() > 2300) {
		return errors.New("object.retain_until is out of range")
	}
	return nil
}

func validateDelete(m *etcdbackupv1.DeleteRequested, now time.Time) error {
	if err := validateBackup(m.GetConfig(), m.GetCluster(), m.GetBackupName(), m.GetScheduledTime(), now); err != nil {
		return err
	}
	ref := m.GetConfig()
	if want := backupname.DeleteJob(m.GetCluster(), ref.GetName(), m.GetBackupName()); m.GetDeleteJobName() != want {
		return fmt.Errorf("delete_job_name %q is not the backup's deletion job %q", m.GetDeleteJobName(), want)
	}
	if key := m.GetObjectKey(); key != "" && key != backupname.ObjectKey(m.GetCluster(), ref.GetNamespace(),
		ref.GetName(), m.GetBackupName()) {
		return fmt.Errorf("object_key %q is not the backup's key", key)
	}
	switch m.GetReason() {
	case DeleteReasonRetention, DeleteReasonFailed, DeleteReasonConfigDeleted:
	default:
		return fmt.Errorf("reason %q is not retention, failed or config deleted", m.GetReason())
	}
	return validateDestination(m.GetDestination())
}

func validateStatus(m *etcdbackupv1.StatusEvent, now time.Time) error {
	if _, ok := etcdbackupv1.Stage_name[int32(m.GetStage())]; !ok || m.GetStage() == etcdbackupv1.Stage_STAGE_UNSPECIFIED {
		return fmt.Errorf("stage %d is not a known stage", m.GetStage())
	}
	if _, ok := etcdbackupv1.Phase_name[int32(m.GetPhase())]; !ok || m.GetPhase() == etcdbackupv1.Phase_PHASE_UNSPECIFIED {
		return fmt.Errorf("phase %d is not a known phase", m.GetPhase())
	}
	if _, ok := etcdbackupv1.Operation_name[int32(m.GetOperation())]; !ok {
		return fmt.Errorf("operation %d is not a known operation", m.GetOperation())
	}
	if len(m.GetMessage()) > MaxMessageText || !utf8.ValidString(m.GetMessage()) {
		return fmt.Errorf("message is longer than %d bytes or not UTF-8", MaxMessageText)
	}
	if err := validateTime("time", m.GetTime(), now, false); err != nil {
		return err
	}
	if op := m.GetOperation(); op == etcdbackupv1.Operation_OPERATION_RESTORE ||
		op == etcdbackupv1.Operation_OPERATION_DRILL {
		// config names the EtcdRestore (a drill: the config); the backup name is what it says.
		if m.GetConfig().GetUid() == "" {
			return errors.New("config with its uid is required")
		}
		if err := validateNames(m.GetConfig().GetUid(), m.GetConfig().GetNamespace(), m.GetConfig().GetName()); err != nil {
			return err
		}
		if len(m.GetBackupName()) > validation.DNS1123SubdomainMaxLength {
			return errors.New("backup_name is too long")
		}
		return nil
	}
	if err := validateBackup(m.GetConfig(), m.GetCluster(), m.GetBackupName(), m.GetScheduledTime(), now); err != nil {
		return err
	}
	ref := m.GetConfig()
	if job := m.GetJobName(); job != "" && job != backupname.Job(m.GetCluster(), ref.GetName(), m.GetBackupName()) &&
		job != backupname.DeleteJob(m.GetCluster(), ref.GetName(), m.GetBackupName()) {
		return fmt.Errorf("job_name %q is not a job of the backup", job)
	}
	if key := m.GetObjectKey(); key != "" && key != backupname.ObjectKey(m.GetCluster(), ref.GetNamespace(),
		ref.GetName(), m.GetBackupName()) {
		return fmt.Errorf("object_key %q is not the backup's key", key)
	}
	if s := m.GetSha256(); s != "" && !isSHA256(s) {
		return fmt.Errorf("sha256 %q is not a hex sha256", s)
	}
	if m.GetSize() > MaxSnapshotSize || m.GetRevision() < 0 {
		return errors.New("size or revision is out of range")
	}
	if err := validateStoredObject(m.GetObject()); err != nil {
		return err
	}
	return validateDestination(m.GetDestination())
}

// validateBackup checks the parts every message about one backup has.
func validateBackup(ref *etcdbackupv1.ConfigRef, cluster, backup string, scheduled *timestamppb.Timestamp,
	now time.Time) error {
	if ref == nil || ref.GetUid() == "" {
		return errors.New("config with its uid is required")
	}
	if err := validateNames(ref.GetUid(), ref.GetNamespace(), ref.GetName()); err != nil {
		return err
	}
	if errs := validation.IsDNS1123Subdomain(cluster); len(errs) > 0 {
		return fmt.Errorf("cluster %q: %s", cluster, strings.Join(errs, "; "))
	}
	at, ok := backupname.Parse(ref.GetName(), backup)
	if !ok {
		return fmt.Errorf("backup_name %q is not %q followed by a time %s", backup, ref.GetName()+"-", backupname.TimeLayout)
	}
	if err := validateTime("scheduled_time", scheduled, now, true); err != nil {
		return err
	}
	if !scheduled.AsTime().Truncate(time.Second).Equal(at) {
		return fmt.Errorf("scheduled_time %s is not the time in backup_name %q", scheduled.AsTime().Format(time.RFC3339),
			backup)
	}
	return nil
}

// validateNames checks an object reference: a namespace, a name and, if required (uid != ""
// is always asked for by callers that need it), a uid.
func validateNames(uid, namespace, name string) error {
	if errs := validation.IsDNS1123Label(namespace); len(errs) > 0 {
		return fmt.Errorf("namespace %q: %s", namespace, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return fmt.Errorf("name %q: %s", name, strings.Join(errs, "; "))
	}
	if uid != "" && (len(uid) > 64 || strings.ContainsFunc(uid, func(r rune) bool {
		return (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-'
	})) {
		return fmt.Errorf("uid %q is not a Kubernetes uid", uid)
	}
	return nil
}

func validateDestination(d string) error {
	if len(d) > validation.DNS1123SubdomainMaxLength || strings.ContainsFunc(d,
		func(r rune) bool { return r < 0x21 || r > 0x7e }) {
		return fmt.Errorf("destination %q is not a destination name", d)
	}
	return nil
}

func validateSnapshot(size uint64, sum string) error {
	if size < 32+512 || size > MaxSnapshotSize || (size-32)%512 != 0 {
		return fmt.Errorf("snapshot_size %d is not n*512+32 bytes within range", size)
	}
	if !isSHA256(sum) {
		return fmt.Errorf("snapshot_sha256 %q is not a hex sha256", sum)
	}
	return nil
}

func validateTime(field string, ts *timestamppb.Timestamp, now time.Time, required bool) error {
	if ts == nil {
		if required {
			return fmt.Errorf("%s is required", field)
		}
		return nil
	}
	if err := ts.CheckValid(); err != nil {
		return fmt.Errorf("%s: %w", field, err)
	}
	if t := ts.AsTime(); t.Before(earliest) || t.After(now.Add(maxFuture)) {
		return fmt.Errorf("%s %s is out of range", field, t.Format(time.RFC3339))
	}
	return nil
}

func isSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}
