package bus

import (
	"context"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The continuous backup's journal on the bus: the revisions of a continuous config's etcd
// (etcdbackupv1.JournalBatch, protobuf: consecutive revisions a message) are published by the
// journal replica that holds the config's journal lease, and stay in StreamJournal until that
// replica (or the next holder) has sealed them into a segment in the config's destination and
// purged them.
const (
	// SubjectJournalPrefix prefixes the journal subjects: etcdbackup.journal.<namespace>.<config uid>.
	SubjectJournalPrefix = "etcdbackup.journal"
	// StreamJournal holds the revisions not yet in a segment.
	StreamJournal = "ETCDBACKUP_JOURNAL"
	// JournalLeaseBucket is the key-value bucket of journal leases: one key per continuous
	// config ("<namespace>.<config uid>"), held by the replica that watches the config's etcd.
	JournalLeaseBucket = "ETCDBACKUP_JOURNAL_LEASES"
	// JournalLeaseTTL ends the lease of a journal replica that died: another replica takes
	// the config over within this and its claim interval.
	JournalLeaseTTL = 10 * time.Second
	// JournalMaxAge is how long an unsealed revision waits for its segment (an object store
	// down that long loses the revisions, and the next chain starts at a full backup).
	JournalMaxAge = 7 * 24 * time.Hour
)

const journalLeaseStream = "KV_" + JournalLeaseBucket

// JournalSubject is the subject of a config's revisions.
func JournalSubject(namespace, configUID string) string {
	return SubjectJournalPrefix + "." + namespace + "." + configUID
}

// JournalMsgID is the Nats-Msg-Id of a batch of a config's revisions first to last: a batch
// published twice within the stream's duplicate window is stored once. Batches that overlap
// without being equal are both stored; whoever reads the stream drops revisions it already has.
func JournalMsgID(configUID string, first, last int64) string {
	return configUID + "/" + strconv.FormatInt(first, 10) + "-" + strconv.FormatInt(last, 10)
}

// JournalLeaseKey is a config's key in the journal lease bucket.
func JournalLeaseKey(namespace, configUID string) string { return namespace + "." + configUID }

// journalStream is StreamJournal's configuration: limits retention (the journal purges what it
// sealed), new messages refused when full (the journal waits; nothing is dropped).
func (t Topology) journalStream() jetstream.StreamConfig {
	cfg := t.stream(StreamJournal, "revisions of continuous configs not yet sealed into segments (protobuf)",
		SubjectJournalPrefix+".>", jetstream.LimitsPolicy, JournalMaxAge)
	cfg.MaxBytes = t.JournalMaxBytes
	return cfg
}

// JournalLeaseConfig returns the configuration of the journal lease bucket.
func (t Topology) JournalLeaseConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      JournalLeaseBucket,
		Description: "one journal replica per continuous config: the holder of each config's lease",
		History:     1,
		TTL:         JournalLeaseTTL,
		Storage:     t.Storage,
		Replicas:    t.Replicas,
	}
}

// OpenJournalLeases binds to the journal lease bucket, which the setup created.
func OpenJournalLeases(ctx context.Context, js jetstream.JetStream) (*Leases, error) {
	return openLeases(ctx, js, JournalLeaseBucket)
}

// journal is what the journal identity needs: publishing revisions, reading back and purging
// what is not sealed (ordered consumers, whose names are random, and direct gets), its lease
// bucket, and asking the scheduler for a full backup.
func journal() []string {
	s := StreamJournal
	return concat(
		[]string{SubjectJournalPrefix + ".>", SubjectTriggerBackup},
		streamInfo(s), streamInfo(journalLeaseStream),
		[]string{
			jsAPI + "STREAM.PURGE." + s,
			jsAPI + "STREAM.MSG.GET." + s,
			jsAPI + "DIRECT.GET." + s + ".>",
			jsAPI + "CONSUMER.CREATE." + s + ".>",
			jsAPI + "CONSUMER.MSG.NEXT." + s + ".>",
			jsAPI + "CONSUMER.DELETE." + s + ".>",
			jsAPI + "CONSUMER.INFO." + s + ".>",
			"$KV." + JournalLeaseBucket + ".>",
			jsAPI + "STREAM.MSG.GET." + journalLeaseStream,
			jsAPI + "DIRECT.GET." + journalLeaseStream + ".>",
		})
}
