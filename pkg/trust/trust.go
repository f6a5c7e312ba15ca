// Package trust checks what a message claims about a backup against the Kubernetes API. A
// message says which backup; the config says where its bytes go. Consumers read the config
// named by the message, require its uid, derive the cluster, object key and destination from
// it, and refuse a message that names anything else (bus.Reject), with an Event on the config.
package trust

import (
	"context"
	"fmt"

	backupv1 "github.com/etcd-backup/etcdbackup/api/etcdbackup/v1"
	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Rejection reasons (label values of etcdbackup_rejected_messages_total).
const (
	ReasonCluster     = "cluster"
	ReasonObjectKey   = "object-key"
	ReasonDestination = "destination"
	ReasonStage       = "stage"
	ReasonNotPlanned  = "not-planned"
	// ReasonUnlisted: a stage reported a backup its config's status does not list, and the
	// scheduler never queued.
	ReasonUnlisted = "unlisted"
	// ReasonUnconfirmed: a completion the bucket does not confirm (no object at the key, or
	// another sha256 than the one reported).
	ReasonUnconfirmed = "unconfirmed"
)

// EventReasonRejected is the reason of the Warning Event a rejected message leaves on its config.
const EventReasonRejected = "MessageRejected"

// Config returns the EtcdBackupConfig ref names if it exists under ref's uid; nil when it is
// gone or was re-created (its work is void, not forged).
func Config(ctx context.Context, r client.Reader, ref *etcdbackupv1.ConfigRef) (*kubermaticv1.EtcdBackupConfig, error) {
	var cfg kubermaticv1.EtcdBackupConfig
	key := types.NamespacedName{Namespace: ref.GetNamespace(), Name: ref.GetName()}
	if err := r.Get(ctx, key, &cfg); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("get etcdbackupconfig %s: %w", key, err)
	}
	if ref.GetUid() == "" || ref.GetUid() != string(cfg.UID) {
		return nil, nil
	}
	return &cfg, nil
}

// Backup is where a backup of a config goes, derived from the config alone.
type Backup struct {
	Cluster   string
	ObjectKey string
	// Destination is the Seed destination's name, resolved ("" in the config: the default).
	Destination string
}

// Derive returns where backup of cfg goes, with dest the config's destination resolved.
func Derive(cfg *kubermaticv1.EtcdBackupConfig, backup, dest string) Backup {
	cluster := cfg.Spec.Cluster.Name
	return Backup{Cluster: cluster, ObjectKey: backupname.ObjectKey(cluster, cfg.Namespace, cfg.Name, backup),
		Destination: dest}
}

// Check compares what a message claims (cluster, object key, destination; an empty key or
// destination claims nothing) with want, and returns a bus.Reject error for the first that
// differs.
func Check(want Backup, cluster, key, dest string) error {
	switch {
	case cluster != want.Cluster:
		return bus.Reject(ReasonCluster, fmt.Errorf("the message names cluster %q, the config backs up %q", cluster,
			want.Cluster))
	case key != "" && key != want.ObjectKey:
		return bus.Reject(ReasonObjectKey, fmt.Errorf("the message names object %q, the config's backup is %q", key,
			want.ObjectKey))
	case dest != "" && dest != want.Destination:
		return bus.Reject(ReasonDestination, fmt.Errorf("the message names destination %q, the config's is %q", dest,
			want.Destination))
	}
	return nil
}

// Checker is the trust check every consumer of backup messages makes: it reads the config a
// message names and checks what the message claims against it, recording each rejection as a
// Warning Event on the config.
type Checker struct {
	Reader client.Reader
	// Cache, when set, is read first (a controller's informer cache, which the service has
	// anyway: a cache made for this alone costs more in watch traffic than it saves): a config it
	// holds under the claim's uid, not being deleted, whose cluster, object key and destination
	// match the claim, is taken from it. Anything else is read again from Reader, so that
	// nothing is voided or rejected on a cache's word alone.
	Cache client.Reader
	// Events records the Warning Events (nil: none).
	Events events.EventRecorder
}

// Claim is what a message says of a backup.
type Claim struct {
	Config *etcdbackupv1.ConfigRef
	Backup string
	// Cluster and ObjectKey must be the config's ("" ObjectKey claims nothing).
	Cluster, ObjectKey string
	// Destination is the destination the message names, resolved; Config checks it only to
	// trust a cached config (the caller checks it against the resolved one: Destination).
	Destination string
}

// ClaimOf is what a backup request claims.
func ClaimOf(req *etcdbackupv1.BackupRequested) Claim {
	return Claim{Config: req.GetConfig(), Backup: req.GetBackupName(), Cluster: req.GetCluster(),
		ObjectKey: req.GetObjectKey(), Destination: req.GetDestination()}
}

// Config returns the config c names, or nil when it is gone or was re-created (its work is
// void, not forged). A message that claims another cluster or object key than the config's is
// a rejection (bus.Reject), with an Event on the config; subject is where it arrived.
func (k Checker) Config(ctx context.Context, subject string, c Claim) (*kubermaticv1.EtcdBackupConfig, error) {
	if k.Cache != nil {
		if cfg, err := Config(ctx, k.Cache, c.Config); err == nil && cfg != nil && cfg.DeletionTimestamp == nil &&
			(cfg.Spec.Destination == "" || c.Destination == "" || cfg.Spec.Destination == c.Destination) &&
			Check(Derive(cfg, c.Backup, ""), c.Cluster, c.ObjectKey, "") == nil {
			return cfg, nil
		}
	}
	cfg, err := Config(ctx, k.Reader, c.Config)
	if err != nil || cfg == nil {
		return nil, err
	}
	if err := Check(Derive(cfg, c.Backup, ""), c.Cluster, c.ObjectKey, ""); err != nil {
		return cfg, k.Reject(cfg, subject, err)
	}
	return cfg, nil
}

// Destination rejects, with an Event on cfg, a message that names another destination than
// want ("" claims nothing).
func (k Checker) Destination(cfg *kubermaticv1.EtcdBackupConfig, subject, claimed, want string) error {
	if claimed == "" || claimed == want {
		return nil
	}
	return k.Reject(cfg, subject, Check(Backup{Destination: want}, "", "", claimed))
}

// Reject records err, a rejection of a message about cfg, as an Event and returns it.
func (k Checker) Reject(cfg *kubermaticv1.EtcdBackupConfig, subject string, err error) error {
	Record(k.Events, cfg, subject, err)
	return err
}

// Record leaves a Warning Event on cfg about a rejected message (rec may be nil).
func Record(rec events.EventRecorder, cfg *kubermaticv1.EtcdBackupConfig, subject string, err error) {
	if rec == nil || cfg == nil {
		return
	}
	rec.Eventf(cfg, nil, corev1.EventTypeWarning, EventReasonRejected, "Consume", "message on %s refused: %v", subject,
		err)
}

// DeletedKey is the object key of backup b of a DeletedBackupSet, derived from what the set
// records of its config (cluster, namespace, name) and b's name, as every other backup's key
// is: the set's recorded key is only accepted when it is that key. A set is cluster-scoped and
// written by the pruner, but whoever may write one must not make the pruner delete, or a
// restore read, an object outside the deleted config's prefix.
func DeletedKey(set *backupv1.DeletedBackupSet, b backupv1.DeletedBackup) (string, error) {
	s := set.Spec
	if _, ok := backupname.Parse(s.Config, b.Name); !ok {
		return "", fmt.Errorf("DeletedBackupSet %s: %q is not a backup name of config %q", set.Name, b.Name, s.Config)
	}
	key := backupname.ObjectKey(s.Cluster, s.Namespace, s.Config, b.Name)
	if b.ObjectKey != key {
		return "", fmt.Errorf("DeletedBackupSet %s: backup %s records key %q, not its config's %q", set.Name, b.Name,
			b.ObjectKey, key)
	}
	return key, nil
}

// Recorded is what the bucket records of a stored backup besides its bytes (info from a
// Stat, meta parsed from its metadata): what the status shows a user who cannot read the
// destination. A retention is left out when the object has none.
func Recorded(meta backupformat.Meta, info destination.ObjectInfo) *etcdbackupv1.StoredObject {
	o := &etcdbackupv1.StoredObject{
		Codec: meta.Codec, Recipients: meta.Fingerprints(), SnapshotSize: uint64(meta.SnapshotSize),
		SnapshotSha256: meta.SnapshotSHA256, KeyCount: meta.KeyCount, LockMode: info.LockMode,
	}
	if o.Codec == "" {
		o.Codec = backupformat.CodecZstd // written before the codec was recorded
	}
	if !info.RetainUntil.IsZero() {
		o.RetainUntil = timestamppb.New(info.RetainUntil)
	}
	return o
}
