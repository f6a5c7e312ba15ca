package bus

import (
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The continuous backup's journal on the bus: the revisions of a continuous config's etcd
// (etcdbackupv1.JournalBatch, protobuf: consecutive revisions a message) are published by the
// journal replica that claims the config (Claims: JournalReplicasBucket and JournalClaimsBucket),
// and stay in StreamJournal until that replica (or the next one) has sealed them into a segment
// in the config's destination and purged them.
const (
	// SubjectJournalPrefix prefixes the journal subjects: etcdbackup.journal.<namespace>.<config uid>.
	SubjectJournalPrefix = "etcdbackup.journal"
	// StreamJournal holds the revisions not yet in a segment.
	StreamJournal = "ETCDBACKUP_JOURNAL"
	// JournalReplicasBucket is the key-value bucket of the journal's replicas: one key per
	// live replica's session, refreshed every fifth of JournalReplicaTTL.
	JournalReplicasBucket = "ETCDBACKUP_JOURNAL_REPLICAS"
	// JournalClaimsBucket is the key-value bucket of the journal's claims: one key per
	// continuous config ("<namespace>.<config uid>"), holding the session of the replica that
	// watches the config's etcd. It has no TTL: a claim lasts while its session does.
	JournalClaimsBucket = "ETCDBACKUP_JOURNAL_CLAIMS"
	// JournalReplicaTTL ends the session of a journal replica that died: another replica takes
	// its configs over within this and its claim interval.
	JournalReplicaTTL = 10 * time.Second
	// JournalMaxAge is how long an unsealed revision waits for its segment (an object store
	// down that long loses the revisions, and the next chain starts at a full backup).
	JournalMaxAge = 7 * 24 * time.Hour
)

const (
	journalReplicasStream = "KV_" + JournalReplicasBucket
	journalClaimsStream   = "KV_" + JournalClaimsBucket
)

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

// JournalClaimKey is a config's key in the journal's claim bucket.
func JournalClaimKey(namespace, configUID string) string { return namespace + "." + configUID }

// journalStream is StreamJournal's configuration: limits retention (the journal purges what it
// sealed), new messages refused when full (the journal waits; nothing is dropped).
func (t Topology) journalStream() jetstream.StreamConfig {
	cfg := t.stream(StreamJournal, "revisions of continuous configs not yet sealed into segments (protobuf)",
		SubjectJournalPrefix+".>", jetstream.LimitsPolicy, JournalMaxAge)
	cfg.MaxBytes = t.JournalMaxBytes
	return cfg
}

// JournalReplicasConfig returns the configuration of the journal's replica bucket: a session
// key gone JournalReplicaTTL after its last write.
func (t Topology) JournalReplicasConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      JournalReplicasBucket,
		Description: "the journal's live replicas: one session key each, refreshed while the replica lives",
		History:     1,
		TTL:         JournalReplicaTTL,
		Storage:     t.Storage,
		Replicas:    t.Replicas,
	}
}

// JournalClaimsConfig returns the configuration of the journal's claim bucket: no TTL.
func (t Topology) JournalClaimsConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      JournalClaimsBucket,
		Description: "one journal replica per continuous config: the session of the replica following each",
		History:     1,
		Storage:     t.Storage,
		Replicas:    t.Replicas,
	}
}

// journal is what the journal identity needs: publishing revisions, reading back and purging
// what is not sealed (ordered consumers, whose names are random, and direct gets), its two
// claim buckets (written, read and watched), and asking the scheduler for a full backup.
func journal() []string {
	s := StreamJournal
	return concat(
		[]string{SubjectJournalPrefix + ".>", SubjectTriggerBackup},
		streamInfo(s), kvWatch(JournalReplicasBucket), kvWatch(JournalClaimsBucket),
		[]string{
			jsAPI + "STREAM.PURGE." + s,
			jsAPI + "STREAM.MSG.GET." + s,
			jsAPI + "DIRECT.GET." + s + ".>",
			jsAPI + "CONSUMER.CREATE." + s + ".>",
			jsAPI + "CONSUMER.MSG.NEXT." + s + ".>",
			jsAPI + "CONSUMER.DELETE." + s + ".>",
			jsAPI + "CONSUMER.INFO." + s + ".>",
		})
}

// kvWatch is what writing, reading and watching a key-value bucket needs: kv, and the ordered
// consumers of its watches (created, deleted when stopped, recreated on a gap, and answering
// the server's flow control).
func kvWatch(bucket string) []string {
	stream := "KV_" + bucket
	return append(kv(bucket),
		"$JS.FC."+stream+".>",
		jsAPI+"CONSUMER.CREATE."+stream,
		jsAPI+"CONSUMER.CREATE."+stream+".>",
		jsAPI+"CONSUMER.DELETE."+stream+".>",
	)
}
