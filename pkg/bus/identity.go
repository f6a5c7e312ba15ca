package bus

import (
	"fmt"
	"slices"
	"strings"
)

// Identity is who connects to NATS. Every service has its own, and two more serve people and
// tools: trigger (the manual trigger only) and watcher (status events only). Each identity
// authenticates with its own nkey and may publish and subscribe only on the subjects
// PermissionsOf lists; deploy/k8s/nats.yaml grants exactly these (a test compares them).
type Identity string

// Identities.
const (
	IdentityScheduler   Identity = "scheduler"
	IdentitySnapshotter Identity = "snapshotter"
	IdentityUploader    Identity = "uploader"
	IdentityPruner      Identity = "pruner"
	IdentityRestorer    Identity = "restorer"
	IdentityJournal     Identity = "journal"
	// IdentitySetup creates and updates the streams, the staging bucket and the services'
	// durable consumers (bus.Ensure, bus.EnsureDurables), and nothing else: no service may
	// change a stream or a consumer, so no stolen service key can rewrite or seal a stream
	// every service shares.
	IdentitySetup Identity = "setup"
	// IdentityTrigger may only request etcdbackup.trigger.backup.
	IdentityTrigger Identity = "trigger"
	// IdentityWatcher may only read status events, live and from the status stream.
	IdentityWatcher Identity = "watcher"
)

// Identities lists every identity, services first.
func Identities() []Identity {
	return []Identity{IdentityScheduler, IdentitySnapshotter, IdentityUploader, IdentityPruner, IdentityRestorer,
		IdentityJournal, IdentitySetup, IdentityTrigger, IdentityWatcher}
}

// InboxPrefix is the identity's own inbox prefix: replies to its requests (JetStream API
// answers, acks of its publishes, messages it pulls) arrive under it, and no other identity
// may subscribe there. Connect with nats.CustomInboxPrefix(InboxPrefix(id)).
func InboxPrefix(id Identity) string { return "_INBOX_" + string(id) }

// Permissions is what one identity may do on NATS.
type Permissions struct {
	Publish   []string
	Subscribe []string
	// AllowResponses lets the identity answer requests it received (the manual trigger).
	AllowResponses bool
}

// jsAPI is JetStream's API prefix.
const jsAPI = "$JS.API."

// streamAdmin is what creating or updating a stream needs (bus.Ensure): the setup identity's.
func streamAdmin(stream string) []string {
	return []string{jsAPI + "STREAM.CREATE." + stream, jsAPI + "STREAM.UPDATE." + stream, jsAPI + "STREAM.INFO." + stream}
}

// streamInfo is what checking a stream at start-up needs (bus.CheckFor): a service's.
func streamInfo(stream string) []string { return []string{jsAPI + "STREAM.INFO." + stream} }

// durable is what a service needs to bind to its durable pull consumer (which the setup
// creates), fetch from it and acknowledge what it fetched, and nothing of any other consumer.
func durable(name string) []string {
	stream := StreamOf(name)
	return []string{
		jsAPI + "CONSUMER.INFO." + stream + "." + name,
		jsAPI + "CONSUMER.MSG.NEXT." + stream + "." + name,
		"$JS.ACK." + stream + "." + name + ".>",
	}
}

// stagingStream is the stream behind the staging object store.
const stagingStream = "OBJ_" + StagingBucket

// staging is what writing, reading and deleting staged snapshots needs: the object store's
// own subjects, reading its messages, ordered consumers on it (their names are random), and
// purging the chunks of a deleted object.
func staging() []string {
	return append(streamInfo(stagingStream),
		"$O."+StagingBucket+".>",
		jsAPI+"STREAM.MSG.GET."+stagingStream,
		jsAPI+"DIRECT.GET."+stagingStream+".>",
		jsAPI+"STREAM.PURGE."+stagingStream,
		jsAPI+"CONSUMER.CREATE."+stagingStream+".>",
		jsAPI+"CONSUMER.MSG.NEXT."+stagingStream+".>",
		jsAPI+"CONSUMER.DELETE."+stagingStream+".>",
		jsAPI+"CONSUMER.INFO."+stagingStream+".>",
	)
}

// leases is what taking, refreshing and giving back leases needs (Leases).
func leases() []string { return kv(LeaseBucket) }

// kv is what writing and reading a key-value bucket needs: its stream's configuration (the
// client binds to it), its subjects, and gets of its keys.
func kv(bucket string) []string {
	stream := "KV_" + bucket
	return append(streamInfo(stream),
		"$KV."+bucket+".>",
		jsAPI+"STREAM.MSG.GET."+stream,
		jsAPI+"DIRECT.GET."+stream+".>",
	)
}

// leaseBucketOf is the lease bucket id takes leases from (and checks at start-up); "" for none.
func leaseBucketOf(id Identity) string {
	if id == IdentitySnapshotter {
		return LeaseBucket
	}
	return ""
}

// PermissionsOf returns the identity's permissions; ok is false for an unknown identity.
// Only the setup identity creates or updates streams (bus.Ensure); a service may read the
// configuration of the streams it works with (bus.CheckFor) and change none.
func PermissionsOf(id Identity) (p Permissions, ok bool) {
	inbox := InboxPrefix(id) + ".>"
	status := func(stage string) string { return SubjectStatusPrefix + "." + stage }
	switch id {
	case IdentityScheduler:
		p.Publish = concat(
			[]string{SubjectBackupRequested, status("scheduler")},
			streamInfo(StreamRequests), streamInfo(StreamStatus), durable(ConsumerStatusWriter))
		p.Subscribe = []string{SubjectTriggerBackup, inbox}
		p.AllowResponses = true
	case IdentitySnapshotter:
		p.Publish = concat(
			[]string{SubjectSnapshotReady, status("snapshotter")},
			streamInfo(StreamRequests), streamInfo(StreamSnapshots), streamInfo(StreamStatus),
			durable(ConsumerSnapshotter), staging(), leases())
		p.Subscribe = []string{inbox}
	case IdentityUploader:
		p.Publish = concat(
			[]string{SubjectBackupStored, status("uploader")},
			streamInfo(StreamSnapshots), streamInfo(StreamStored), streamInfo(StreamStatus),
			durable(ConsumerUploader), staging())
		p.Subscribe = []string{inbox}
	case IdentityPruner:
		p.Publish = concat(
			[]string{SubjectDeleteRequested, status("pruner")},
			streamInfo(StreamStored), streamInfo(StreamDeletes), streamInfo(StreamStatus),
			durable(ConsumerPruner), durable(ConsumerDeleter))
		p.Subscribe = []string{inbox}
	case IdentityRestorer:
		p.Publish = concat([]string{status("restorer")}, streamInfo(StreamStatus))
		p.Subscribe = []string{inbox}
	case IdentityJournal:
		p.Publish = journal()
		p.Subscribe = []string{inbox}
	case IdentitySetup:
		for _, stream := range []string{StreamRequests, StreamSnapshots, StreamStored, StreamDeletes, StreamStatus,
			StreamJournal, stagingStream, leaseStream, journalReplicasStream, journalClaimsStream} {
			p.Publish = append(p.Publish, streamAdmin(stream)...)
		}
		// Creating a key-value bucket reads the account's JetStream limits first.
		p.Publish = append(p.Publish, jsAPI+"INFO")
		for _, d := range Durables() {
			p.Publish = append(p.Publish, jsAPI+"CONSUMER.CREATE."+StreamOf(d)+"."+d, jsAPI+"CONSUMER.INFO."+StreamOf(d)+"."+d)
		}
		p.Subscribe = []string{inbox}
	case IdentityTrigger:
		p.Publish = []string{SubjectTriggerBackup}
		p.Subscribe = []string{inbox}
	case IdentityWatcher:
		// History by sequence or by subject (Stream.GetMsg, direct get); no consumers, so a
		// watcher can neither take the status writer's messages nor redirect a stream.
		p.Publish = []string{
			jsAPI + "STREAM.INFO." + StreamStatus,
			jsAPI + "STREAM.MSG.GET." + StreamStatus,
			jsAPI + "DIRECT.GET." + StreamStatus,
			jsAPI + "DIRECT.GET." + StreamStatus + ".>",
		}
		p.Subscribe = []string{SubjectStatusAll, inbox}
	default:
		return Permissions{}, false
	}
	slices.Sort(p.Publish)
	slices.Sort(p.Subscribe)
	return p, true
}

// StreamsOf lists the streams a service checks at start-up (bus.CheckFor), and whether it
// also works with the staging bucket.
func StreamsOf(id Identity) (streams []string, stagingBucket bool) {
	switch id {
	case IdentityScheduler:
		return []string{StreamRequests, StreamStatus}, false
	case IdentitySnapshotter:
		return []string{StreamRequests, StreamSnapshots, StreamStatus}, true
	case IdentityUploader:
		return []string{StreamSnapshots, StreamStored, StreamStatus}, true
	case IdentityPruner:
		return []string{StreamStored, StreamDeletes, StreamStatus}, false
	case IdentityRestorer:
		return []string{StreamStatus}, false
	case IdentityJournal:
		return []string{StreamJournal}, false
	}
	return nil, false
}

// DurablesOf lists the durable consumers a service reads (its own; the setup creates them).
func DurablesOf(id Identity) []string {
	switch id {
	case IdentityScheduler:
		return []string{ConsumerStatusWriter}
	case IdentitySnapshotter:
		return []string{ConsumerSnapshotter}
	case IdentityUploader:
		return []string{ConsumerUploader}
	case IdentityPruner:
		return []string{ConsumerPruner, ConsumerDeleter}
	}
	return nil
}

// StatusStage is the stage whose identity alone may publish on a status subject, by the
// subject's last token ("" when the subject is not a stage's).
func StatusStage(subject string) string {
	stage, ok := strings.CutPrefix(subject, SubjectStatusPrefix+".")
	if !ok || strings.Contains(stage, ".") {
		return ""
	}
	switch Identity(stage) {
	case IdentityScheduler, IdentitySnapshotter, IdentityUploader, IdentityPruner, IdentityRestorer:
		return stage
	}
	return ""
}

// NATSUsers renders the permission table as the users list of a nats-server authorization
// block, each user's nkey read from the environment variable <IDENTITY>_NKEY. It is what
// deploy/k8s/nats.yaml holds.
func NATSUsers() string {
	var b strings.Builder
	b.WriteString("users: [\n")
	for _, id := range Identities() {
		p, _ := PermissionsOf(id)
		fmt.Fprintf(&b, "  # %s\n  {\n    nkey: $%s\n    permissions: {\n", id, NKeyEnv(id))
		fmt.Fprintf(&b, "      publish: {allow: %s}\n", quoteList(p.Publish, "      "))
		fmt.Fprintf(&b, "      subscribe: {allow: %s}\n", quoteList(p.Subscribe, "      "))
		if p.AllowResponses {
			b.WriteString("      allow_responses: true\n")
		}
		b.WriteString("    }\n  }\n")
	}
	b.WriteString("]\n")
	return b.String()
}

// NKeyEnv is the environment variable nats-server reads an identity's public nkey from.
func NKeyEnv(id Identity) string { return strings.ToUpper(string(id)) + "_NKEY" }

// quoteList renders items as a list of quoted strings, one a line, closing at indent.
func quoteList(items []string, indent string) string {
	var b strings.Builder
	b.WriteString("[\n")
	for _, s := range items {
		fmt.Fprintf(&b, "%s  %q\n", indent, s)
	}
	return b.String() + indent + "]"
}

func concat(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

// PermissionTable renders the permission table as the Markdown table docs/bus.md holds.
func PermissionTable() string {
	var b strings.Builder
	b.WriteString("| identity | may publish | may subscribe |\n|---|---|---|\n")
	code := func(l []string) string {
		q := make([]string, len(l))
		for i, s := range l {
			q[i] = "`" + s + "`"
		}
		return strings.Join(q, "<br>")
	}
	for _, id := range Identities() {
		p, _ := PermissionsOf(id)
		sub := code(p.Subscribe)
		if p.AllowResponses {
			sub += "<br>(and may answer requests it receives: `allow_responses`)"
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", id, code(p.Publish), sub)
	}
	return b.String()
}
