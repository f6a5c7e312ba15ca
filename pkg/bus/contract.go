// Package bus is the message contract of the etcd backup services: every JetStream stream,
// subject, durable consumer, header and staging bucket is defined here, once, and listed in
// docs/bus.md. Services import it; none of them names a subject of its own.
package bus

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Subjects.
const (
	// SubjectBackupRequested carries etcdbackupv1.BackupRequested (protobuf), scheduler → snapshotter.
	SubjectBackupRequested = "etcdbackup.backup.requested"
	// SubjectSnapshotReady carries etcdbackupv1.SnapshotReady (protobuf), snapshotter → uploader.
	SubjectSnapshotReady = "etcdbackup.snapshot.ready"
	// SubjectBackupStored carries etcdbackupv1.BackupStored (protobuf), uploader → pruner.
	SubjectBackupStored = "etcdbackup.backup.stored"
	// SubjectDeleteRequested carries etcdbackupv1.DeleteRequested (protobuf), pruner planner →
	// pruner deleter.
	SubjectDeleteRequested = "etcdbackup.delete.requested"
	// SubjectStatusPrefix prefixes etcdbackupv1.StatusEvent (protojson), every stage → status
	// writer and any subscriber: etcdbackup.status.<stage>.
	SubjectStatusPrefix = "etcdbackup.status"
	// SubjectStatusAll matches every status event.
	SubjectStatusAll = SubjectStatusPrefix + ".>"
	// SubjectTriggerBackup is the manual trigger, a core NATS request served by the scheduler:
	// etcdbackupv1.TriggerBackupRequest in, etcdbackupv1.TriggerBackupReply out.
	SubjectTriggerBackup = "etcdbackup.trigger.backup"
)

// Streams.
const (
	StreamRequests  = "ETCDBACKUP_REQUESTS"
	StreamSnapshots = "ETCDBACKUP_SNAPSHOTS"
	StreamStored    = "ETCDBACKUP_STORED"
	StreamStatus    = "ETCDBACKUP_STATUS"
	StreamDeletes   = "ETCDBACKUP_DELETES"
	// StagingBucket is the JetStream object store bucket snapshots wait in for the uploader.
	StagingBucket = "ETCDBACKUP_STAGING"
)

// Durable consumers, each shared by all replicas of its service.
const (
	ConsumerSnapshotter  = "snapshotter"
	ConsumerUploader     = "uploader"
	ConsumerPruner       = "pruner"
	ConsumerDeleter      = "pruner-deleter"
	ConsumerStatusWriter = "status-writer"
)

// TriggerQueueGroup is the queue group the scheduler replicas serve the manual trigger in.
const TriggerQueueGroup = "scheduler"

// Headers.
const (
	// HeaderContentType is "application/protobuf" or "application/json".
	HeaderContentType = "Content-Type"
	// HeaderMsgID is JetStream's deduplication header; set to "<namespace>/<backup name>".
	HeaderMsgID = jetstream.MsgIDHeader
)

// Content types.
const (
	ContentTypeProtobuf = "application/protobuf"
	ContentTypeJSON     = "application/json"
)

// RequestsDuplicateWindow is how long a backup request's Nats-Msg-Id is remembered: several
// schedulers that publish the same slot within it produce one request.
const RequestsDuplicateWindow = time.Hour

// Topology is the set of streams and the staging bucket, with the settings a deployment picks.
type Topology struct {
	// Replicas of every stream and of the staging bucket (1 or 3).
	Replicas int
	// Storage of every stream; file unless a test wants memory.
	Storage jetstream.StorageType
	// StagingTTL is how long an unclaimed staged snapshot lives.
	StagingTTL time.Duration
	// StatusMaxAge is how long status events are kept for late subscribers.
	StatusMaxAge time.Duration
	// StoredMaxAge is how long backup-stored announcements are kept for the pruner.
	StoredMaxAge time.Duration
	// StagingMaxBytes caps the staging bucket; a staged snapshot that does not fit is refused
	// (discard new), and the snapshotter does not start a snapshot without room for one.
	StagingMaxBytes int64
	// StreamMaxBytes caps each message stream, also discarding new messages when full: a
	// publisher sees the error and retries, nothing queued is dropped.
	StreamMaxBytes int64
	// JournalMaxBytes caps the journal stream: the revisions of every continuous config not
	// yet sealed into a segment (an object store outage's worth).
	JournalMaxBytes int64
}

// DefaultTopology is what the services create when nothing else is configured.
func DefaultTopology() Topology {
	return Topology{
		Replicas:     1,
		Storage:      jetstream.FileStorage,
		StagingTTL:   24 * time.Hour,
		StatusMaxAge: 24 * time.Hour,
		StoredMaxAge: 7 * 24 * time.Hour,
		// The deploy's JetStream has max_file_store 60 GB: 40 GiB staging, 5 streams of 1 GiB and the journal's 8 GiB.
		StagingMaxBytes: 40 << 30,
		StreamMaxBytes:  1 << 30,
		JournalMaxBytes: 8 << 30,
	}
}

// StreamConfigs returns the configuration of every stream of the topology.
func (t Topology) StreamConfigs() []jetstream.StreamConfig {
	work := func(name, description, subject string) jetstream.StreamConfig {
		return t.stream(name, description, subject, jetstream.WorkQueuePolicy, 0)
	}
	return []jetstream.StreamConfig{
		work(StreamRequests, "backup requests, scheduler to snapshotter; deleted when acked", SubjectBackupRequested),
		work(StreamSnapshots, "staged snapshots, snapshotter to uploader; deleted when acked", SubjectSnapshotReady),
		t.stream(StreamStored, "stored backups, uploader to pruner", SubjectBackupStored, jetstream.LimitsPolicy,
			t.StoredMaxAge),
		work(StreamDeletes, "backup deletions, pruner planner to pruner deleter; deleted when acked", SubjectDeleteRequested),
		t.stream(StreamStatus, "status events of every stage (protojson)", SubjectStatusAll, jetstream.LimitsPolicy,
			t.StatusMaxAge),
		t.journalStream(),
	}
}

// stream is one stream of the topology: its storage, replicas and size, new messages refused
// when full, and duplicates dropped within RequestsDuplicateWindow.
func (t Topology) stream(name, description, subject string, retention jetstream.RetentionPolicy,
	maxAge time.Duration) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        name,
		Description: description,
		Subjects:    []string{subject},
		Retention:   retention,
		Storage:     t.Storage,
		Replicas:    t.Replicas,
		MaxBytes:    t.StreamMaxBytes,
		Discard:     jetstream.DiscardNew,
		MaxAge:      maxAge,
		Duplicates:  RequestsDuplicateWindow,
	}
}

// StagingConfig returns the configuration of the staging object store.
func (t Topology) StagingConfig() jetstream.ObjectStoreConfig {
	return jetstream.ObjectStoreConfig{
		Bucket:      StagingBucket,
		Description: "verified etcd snapshots waiting for the uploader",
		TTL:         t.StagingTTL,
		Storage:     t.Storage,
		Replicas:    t.Replicas,
		MaxBytes:    t.StagingMaxBytes,
	}
}

// ConsumerConfig returns the durable pull consumer configuration of a service.
// AckWait is short; workers extend it with InProgress while a job runs. A message is delivered
// at most maxDeliver times: the handler sees the last delivery as a dead letter (Typed).
func ConsumerConfig(durable string, maxDeliver int) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       durable,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxDeliver:    maxDeliver,
		MaxAckPending: 1000,
	}
}

// StreamOf returns the stream a service's durable consumer reads.
func StreamOf(durable string) string {
	switch durable {
	case ConsumerSnapshotter:
		return StreamRequests
	case ConsumerUploader:
		return StreamSnapshots
	case ConsumerPruner:
		return StreamStored
	case ConsumerDeleter:
		return StreamDeletes
	case ConsumerStatusWriter:
		return StreamStatus
	}
	return ""
}
