package e2e

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/e2e/sandbox"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/etcdtest"
	"github.com/etcd-backup/etcdbackup/pkg/journal"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// revisionKVs is every key at rev with what etcd says of it (value, revisions, version, lease).
func revisionKVs(t *testing.T, ctx context.Context, cli *clientv3.Client, rev int64) []string {
	t.Helper()
	resp, err := cli.Get(ctx, "\x00", clientv3.WithFromKey(), clientv3.WithRev(rev))
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out = append(out, fmt.Sprintf("%s=%q create=%d mod=%d version=%d lease=%x", kv.Key, kv.Value,
			kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease))
	}
	return out
}

// revisionTime is when the journal received rev, read from its segment in the bucket.
func revisionTime(t *testing.T, ctx context.Context, b destination.Bucket, prefix string, rev int64) time.Time {
	t.Helper()
	segs, err := journal.Segments(ctx, b, journal.Timeline{Name: journal.InitialTimeline}.Dir(prefix))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range segs {
		if s.First <= rev && rev <= s.Last {
			_, revs, err := journal.Fetch(ctx, b, s.Key, nil)
			if err != nil {
				t.Fatal(err)
			}
			return revs[rev-s.First].GetTime().AsTime()
		}
	}
	t.Fatalf("no segment holds revision %d", rev)
	return time.Time{}
}

// A continuous config: the journal seals every revision into segments next to the full
// backup; a whole prefix is deleted; a restore to the time just before the deletion (the time
// the journal recorded for the revision before it) rebuilds etcd with every key exactly as
// etcd held it at that revision (values, create and mod revisions, versions, leases), and
// etcd's HashKV at that revision equals the source's. A target outside the window fails first,
// with the window in the message, and touches nothing.
func TestPointInTimeRestoreBringsBackADeletedPrefix(t *testing.T) {
	ctx := testContext(t, 6*time.Minute)
	dumpLogsOnFailure(t)
	const cluster = "pitr"
	k, cli := startEtcdCluster(t, ctx, cluster, nil)
	for i := range 100 {
		if _, err := cli.Put(ctx, fmt.Sprintf("/registry/keep/k%03d", i), "v0"); err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Put(ctx, fmt.Sprintf("/registry/doomed/d%03d", i), "d0"); err != nil {
			t.Fatal(err)
		}
	}
	cfg := newConfig(t, ctx, cluster, "pitr", "@every 1h", sandbox.Destination, 5)
	patched := cfg.DeepCopy()
	patched.Annotations = map[string]string{kubermaticv1.AnnotationContinuous: kubermaticv1.ContinuousOn}
	if err := env.Client.Patch(ctx, patched, client.MergeFrom(cfg)); err != nil {
		t.Fatal(err)
	}
	reply := triggerWhenAllowed(t, ctx, cfg.Namespace, cfg.Name)
	waitConfig(t, ctx, cfg.Namespace, cfg.Name, 60*time.Second, "the full backup",
		func(c *kubermaticv1.EtcdBackupConfig) bool {
			return slices.ContainsFunc(entries(c, kubermaticv1.PhaseCompleted), func(b kubermaticv1.BackupStatus) bool {
				return b.BackupName == reply.GetBackupName()
			})
		})
	// Writes after the full backup, with leases, as kube-apiserver's events have.
	lease, err := cli.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		key := fmt.Sprintf("/registry/keep/k%03d", i%100)
		opts := []clientv3.OpOption{}
		if i%10 == 0 {
			key, opts = fmt.Sprintf("/registry/events/e%03d", i), []clientv3.OpOption{clientv3.WithLease(lease.ID)}
		}
		if _, err := cli.Put(ctx, key, fmt.Sprintf("v%d", i+1), opts...); err != nil {
			t.Fatal(err)
		}
		// A revision past NATS's default max_payload (1 MiB), under etcd's largest request
		// (1.5 MiB): the bus carries it alone (deploy/k8s/nats.yaml's max_payload).
		if i == 150 {
			if _, err := cli.Put(ctx, "/registry/configmaps/big", strings.Repeat("b", 1200<<10)); err != nil {
				t.Fatal(err)
			}
		}
	}
	before, err := cli.Get(ctx, "probe")
	if err != nil {
		t.Fatal(err)
	}
	target := before.Header.Revision
	want := revisionKVs(t, ctx, cli, target)
	wantHash, err := cli.HashKV(ctx, k.ClientURLs()[0], target)
	if err != nil {
		t.Fatal(err)
	}
	b, err := destination.OpenS3(env.S3.Host, false, env.S3.AccessKey, env.S3.SecretKey, sandbox.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	prefix := backupname.Prefix(cluster, cfg.Namespace, cfg.Name)
	sealedTo := func(rev int64) {
		t.Helper()
		err := sandbox.Poll(ctx, 60*time.Second, 200*time.Millisecond, func() (bool, error) {
			last, err := journal.LastSealed(ctx, b, journal.Timeline{Name: journal.InitialTimeline}.Dir(prefix))
			return last >= rev, fmt.Errorf("segments up to revision %d (%w), want %d", last, err, rev)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// The deletion comes after the target is sealed: a later watch response, a later time.
	sealedTo(target)
	if _, err := cli.Delete(ctx, "/registry/doomed/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/registry/keep/after", "x"); err != nil {
		t.Fatal(err)
	}
	after, err := cli.Get(ctx, "probe")
	if err != nil {
		t.Fatal(err)
	}
	sealedTo(after.Header.Revision)
	at := revisionTime(t, ctx, b, prefix, target)
	if next := revisionTime(t, ctx, b, prefix, target+1); !next.After(at) {
		t.Fatalf("the deletion at %s is not after the target's %s", next, at)
	}
	waitConfig(t, ctx, cfg.Namespace, cfg.Name, 30*time.Second, "a restorable window up to the deletion",
		func(c *kubermaticv1.EtcdBackupConfig) bool {
			cond := c.Status.Condition(kubermaticv1.ConditionContinuousBackup)
			return cond != nil && cond.Status == "True" && strings.Contains(cond.Message,
				fmt.Sprintf(" to %d)", after.Header.Revision))
		})

	// A target beyond the journal, asked for with kubectl etcdbackup restore --to by a user of
	// the cluster's namespace: the plugin names the journal and its window, creates the
	// EtcdRestore and follows it to the restorer's refusal.
	out, err := runPlugin(t, ctx, pluginUser(t, ctx, "pitr-user", cluster), "", "restore", cluster, "--to",
		"revision:99999999", "--yes", "--name", "pitr-outside", "--timeout", "1m")
	if err == nil || !strings.Contains(out, "to revision:99999999 through the journal of continuous config pitr") ||
		!strings.Contains(out, fmt.Sprintf(" to %d)", after.Header.Revision)) || !strings.Contains(out, "Failed") {
		t.Fatalf("kubectl etcdbackup restore --to beyond the journal: %v\n%s", err, out)
	}
	outside := &kubermaticv1.EtcdRestore{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: cfg.Namespace, Name: "pitr-outside"}, outside); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.WithoutCancel(ctx), outside) })
	failed := waitRestore(t, ctx, outside, time.Minute, kubermaticv1.RestorePhaseFailed,
		kubermaticv1.RestorePhaseCompleted)
	if failed.Status.Phase != kubermaticv1.RestorePhaseFailed ||
		!strings.Contains(failed.Status.Message, "restorable from") ||
		failed.Annotations[kubermaticv1.AnnotationRestoreTo] != "revision:99999999" {
		t.Fatalf("a restore beyond the journal ended %s: %s", failed.Status.Phase, failed.Status.Message)
	}
	if got, err := cli.Get(ctx, "/registry/keep/after"); err != nil || len(got.Kvs) != 1 {
		t.Fatalf("the refused restore touched etcd: %v %v", got, err)
	}

	// The restore to the point in time is asked for in the console, by a member of the
	// cluster's project: the config's page shows the window, the form takes the time.
	rs := restoreToInTheConsole(t, ctx, cluster, cfg.Name, at.Format(time.RFC3339Nano),
		fmt.Sprintf(" to %d)", after.Header.Revision))
	t.Cleanup(func() { _ = env.Client.Delete(context.WithoutCancel(ctx), rs) })
	if rs.Spec.BackupName != cfg.Name || rs.Spec.Destination != sandbox.Destination ||
		rs.Annotations[kubermaticv1.AnnotationRestoreTo] != at.Format(time.RFC3339Nano) {
		t.Fatalf("the console's restore: %+v %v", rs.Spec, rs.Annotations)
	}
	done := completed(t, ctx, rs, fmt.Sprintf("the point-in-time restore (kubelet: %v)", k.Err()))
	t.Logf("restore: %s", done.Status.Message)
	if !strings.Contains(done.Status.Message, "restored to "+at.Format(time.RFC3339Nano)) {
		t.Errorf("the restore's message does not name its point in time %s: %s", at.Format(time.RFC3339Nano),
			done.Status.Message)
	}
	// It was built at exactly the target's revision and proven by the journal's hashes on the way.
	started := waitEventIn(t, ctx, env.Client, rs.Namespace, rs.Name, "Normal", "Started")
	if !strings.Contains(started.Note, fmt.Sprintf("database at revision %d built", target)) ||
		strings.Contains(started.Note, " 0 HashKV") {
		t.Errorf("the restore's Started event: %s; want the database at revision %d, with HashKV reproduced",
			started.Note, target)
	}
	// The database built for the restore was the restore's, not a backup: it is gone.
	if _, err := b.Stat(ctx, done.Status.ObjectKey); !errors.Is(err, destination.ErrObjectNotFound) ||
		!strings.Contains(done.Status.ObjectKey, "/pitr/") {
		t.Errorf("the point-in-time database %s after the restore: %v", done.Status.ObjectKey, err)
	}
	if err := k.WaitMembers(ctx, 3); err != nil {
		t.Fatal(err)
	}
	restored := etcdClient(t, k)
	got := revisionKVs(t, ctx, restored, 0)
	if !slices.Equal(got, want) {
		t.Fatalf("restored etcd holds %d keys, want %d as at revision %d; first difference: %s", len(got), len(want),
			target, firstDifference(got, want))
	}
	gotHash, err := restored.HashKV(ctx, k.ClientURLs()[0], target)
	if err != nil {
		t.Fatal(err)
	}
	if gotHash.Hash != wantHash.Hash {
		t.Fatalf("HashKV at %d after the restore is %d, the source's was %d", target, gotHash.Hash, wantHash.Hash)
	}

	// After the restore etcd makes revisions after the target again: a new timeline, whose
	// journal the full backup the journal asks for anchors; the old timeline's window stays.
	var c kubermaticv1.Cluster
	if err := env.Client.Get(ctx, client.ObjectKey{Name: cluster}, &c); err != nil {
		t.Fatal(err)
	}
	timeline := c.Annotations[kubermaticv1.AnnotationEtcdTimeline]
	if timeline == "" {
		t.Fatalf("the restored cluster has no annotation %s", kubermaticv1.AnnotationEtcdTimeline)
	}
	var ws []journal.Window
	writes := 0
	err = sandbox.Poll(ctx, 90*time.Second, 500*time.Millisecond, func() (bool, error) {
		// The cluster goes on changing, as a live one does, so that the new timeline has revisions.
		writes++
		if _, err := restored.Put(ctx, "/registry/keep/after-restore", strconv.Itoa(writes)); err != nil {
			return false, err
		}
		ws, err = journal.Windows(ctx, b, prefix)
		return err == nil && len(ws) == 2 && ws[1].Timeline.Name == timeline && ws[1].FromRevision >= target,
			fmt.Errorf("windows %s (%w)", journal.Describe(ws), err)
	})
	if err != nil {
		t.Fatalf("no window of the new timeline %s: %v", timeline, err)
	}
	if ws[0].ToRevision != after.Header.Revision {
		t.Errorf("the old timeline's window ends at %d, want %d", ws[0].ToRevision, after.Header.Revision)
	}
}

// restoreToInTheConsole signs a member of cluster's project in to the console, checks that the
// config's page shows a window saying window, asks there for a restore to the time to, confirms
// it, and returns the EtcdRestore the console created once its page follows it.
func restoreToInTheConsole(t *testing.T, ctx context.Context, cluster, config, to,
	window string) *kubermaticv1.EtcdRestore {
	t.Helper()
	consoles := env.ServicesOf("console")
	if len(consoles) == 0 {
		t.Fatal("no console runs in the sandbox")
	}
	p := &page{t: t, ctx: browser(t, ctx), base: consoles[0].URL, shots: t.TempDir()}
	p.signIn(consoleUser(t, ctx, "pitr-operator", cluster))
	p.open("/clusters/" + cluster + "/configs/" + config)
	if got := p.text("#pit-window"); !strings.Contains(got, "restorable from") || !strings.Contains(got, window) {
		t.Fatalf("the config's page shows the window %q, want one with %q", got, window)
	}
	p.run(chromedp.SendKeys(css("#restore-to"), to), chromedp.Click(css("#restore-to-point")))
	p.waitFor("the confirmation", `!!document.querySelector('#restore-form')`, 30*time.Second)
	p.measure()
	if got := p.text("#restore-point"); !strings.Contains(got, to) {
		t.Fatalf("the confirmation says %q, want the point %s", got, to)
	}
	p.run(chromedp.SendKeys(css("#confirm"), cluster+"\r"))
	p.waitFor("the restore's page", `!!document.querySelector('#restore-phase')`, 30*time.Second)
	name := evalJS[string](p, `location.pathname.split('/').pop()`)
	var rs kubermaticv1.EtcdRestore
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "cluster-" + cluster, Name: name}, &rs); err != nil {
		t.Fatalf("the console's restore %q: %v", name, err)
	}
	return &rs
}

func firstDifference(a, b []string) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprintf("%q vs %q", a[i], b[i])
		}
	}
	return fmt.Sprintf("lengths %d and %d", len(a), len(b))
}

// Two journal replicas share 50 continuous clusters with writers running. The replica following
// most of them is killed with SIGKILL mid-write; then NATS is shut down and started again; then
// the S3 server is down for a while, mid-segment. Afterwards every cluster's segments in the
// bucket are consecutive and hold every revision from its full backup to its last write
// exactly once: the survivor took the configs over from the bus and the bucket, and resumed
// from them after each outage.
func TestJournalReplicaKilledLosesNoRevision(t *testing.T) {
	ctx := testContext(t, 10*time.Minute)
	dumpLogsOnFailure(t)
	second, err := env.StartService(ctx, "journal")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = second.Stop() })
	const clusters = 50
	b, err := destination.OpenS3(env.S3.Host, false, env.S3.AccessKey, env.S3.SecretKey, sandbox.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	type follow struct {
		ns, prefix string
		cli        *clientv3.Client
		anchor     int64
	}
	// Each cluster's etcd is an embedded member of its own, named in the Cluster's annotation
	// (a kubelet playing 50 StatefulSets would poll the API server more than the test does).
	all := make([]*follow, clusters)
	members := make([]*etcdtest.Etcd, clusters)
	var starts errgroup.Group
	starts.SetLimit(8) // one after the other, they took about 80 of the test's 123 s alone
	for i := range clusters {
		dir := t.TempDir()
		starts.Go(func() error {
			e, err := etcdtest.StartIn(dir, fmt.Sprintf("jkill%d", i), nil)
			members[i] = e
			return err
		})
	}
	err = starts.Wait()
	for _, e := range members {
		if e != nil {
			t.Cleanup(e.Stop)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	setup := time.Now()
	for i, e := range members {
		name := fmt.Sprintf("jkill%d", i)
		mustAddCluster(t, ctx, name, e.Endpoint)
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Endpoint}, DialTimeout: 5 * time.Second,
			Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cli.Close() })
		all[i] = &follow{ns: "cluster-" + name, prefix: backupname.Prefix(name, "cluster-"+name, "journal"), cli: cli}
		cfg := newConfig(t, ctx, name, "journal", "@every 1h", sandbox.Destination, 5)
		patched := cfg.DeepCopy()
		patched.Annotations = map[string]string{kubermaticv1.AnnotationContinuous: kubermaticv1.ContinuousOn}
		if err := env.Client.Patch(ctx, patched, client.MergeFrom(cfg)); err != nil {
			t.Fatal(err)
		}
		triggerWhenAllowed(t, ctx, all[i].ns, "journal")
	}
	t.Logf("%d clusters, configs and triggers in %s", clusters, time.Since(setup).Round(100*time.Millisecond))
	for _, f := range all {
		waitConfig(t, ctx, f.ns, "journal", 90*time.Second, "the full backup", func(c *kubermaticv1.EtcdBackupConfig) bool {
			return len(entries(c, kubermaticv1.PhaseCompleted)) >= 1
		})
		anchor, err := journal.NewestBackupRevision(ctx, b, f.prefix, journal.Timeline{Name: journal.InitialTimeline})
		if err != nil || anchor == 0 {
			t.Fatalf("%s: full backup's revision %d (%v)", f.ns, anchor, err)
		}
		f.anchor = anchor
	}
	t.Logf("every full backup completed after %s", time.Since(setup).Round(100*time.Millisecond))
	// Writers, 5 revisions a second per cluster (250 a second in all), until stopped.
	wctx, stopWriters := context.WithCancel(ctx)
	defer stopWriters()
	var wg sync.WaitGroup
	last := make([]atomic.Int64, clusters)
	for i, f := range all {
		wg.Go(func() {
			tick := time.NewTicker(200 * time.Millisecond)
			defer tick.Stop()
			for n := 0; wctx.Err() == nil; n++ {
				select {
				case <-wctx.Done():
					return
				case <-tick.C:
				}
				resp, err := f.cli.Put(wctx, fmt.Sprintf("/registry/pods/p%d", n%50), strconv.Itoa(n))
				if err == nil {
					last[i].Store(resp.Header.Revision)
				}
			}
		})
	}
	dir := func(f *follow) string { return journal.Timeline{Name: journal.InitialTimeline}.Dir(f.prefix) }
	tails := make([]*journal.Tail, clusters)
	for i, f := range all {
		tails[i] = &journal.Tail{Bucket: b, Dir: dir(f)}
	}
	// sealedPast polls until every cluster's segments hold the revisions written before it was
	// called: the journal follows every one of them.
	sealedPast := func(what string) {
		t.Helper()
		want := make([]int64, clusters)
		for i := range all {
			want[i] = max(last[i].Load(), all[i].anchor+1)
		}
		start := time.Now()
		err := sandbox.Poll(ctx, 90*time.Second, time.Second, func() (bool, error) {
			for i, f := range all {
				if sealed, err := tails[i].Last(ctx); err != nil || sealed < want[i] {
					return false, fmt.Errorf("%s sealed up to %d (%w), want %d", f.ns, sealed, err, want[i])
				}
			}
			return true, nil
		})
		if err != nil {
			// Where each journal replica stands: Go dumps its goroutines to its log on SIGQUIT.
			for _, r := range env.ServicesOf("journal") {
				_ = syscall.Kill(r.Pid(), syscall.SIGQUIT)
			}
			t.Fatalf("%s: %v (the journal replicas' goroutines are in their logs)", what, err)
		}
		t.Logf("%s: every cluster's journal caught up in %s", what, time.Since(start).Round(100*time.Millisecond))
	}
	// outage lasts d while the writers go on.
	outage := func(d time.Duration) {
		t.Helper()
		begun := time.Now()
		if err := sandbox.Poll(ctx, d+time.Minute, 100*time.Millisecond, func() (bool, error) {
			return time.Since(begun) >= d, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	sealedPast("every cluster followed")

	// 1. kill -9 of the replica following most clusters.
	replicas := env.ServicesOf("journal")
	busiest, most := replicas[0], -1
	for _, r := range replicas {
		n := 0
		for _, f := range all {
			if v, err := r.Metric(ctx, "etcdbackup_journal_revisions_since_full_backup",
				map[string]string{"namespace": f.ns}); err == nil && v > 0 {
				n++
			}
		}
		if n > most {
			busiest, most = r, n
		}
	}
	if most == 0 {
		t.Fatal("no journal replica reports following any cluster")
	}
	busiest.Kill()
	t.Logf("killed %s, which followed %d of %d clusters", busiest.Name, most, clusters)
	outage(5 * time.Second)
	sealedPast("after the kill")

	// 2. NATS shut down and started again: what the bus held is on disk.
	env.StopNATS()
	natsDown := true
	t.Cleanup(func() {
		if natsDown {
			_ = env.StartNATS()
		}
	})
	outage(3 * time.Second)
	if err := env.StartNATS(); err != nil {
		t.Fatal(err)
	}
	natsDown = false
	sealedPast("after NATS restarted")

	// 3. The S3 server down mid-segment: revisions wait on the bus.
	env.S3.Stop()
	s3Down := true
	t.Cleanup(func() {
		if s3Down {
			_ = env.S3.Start(context.WithoutCancel(ctx))
		}
	})
	outage(5 * time.Second)
	if err := env.S3.Start(ctx); err != nil {
		t.Fatal(err)
	}
	s3Down = false
	sealedPast("after S3 came back")

	stopWriters()
	wg.Wait()
	sealedPast("after the last write")
	for i, f := range all {
		segs, err := journal.Segments(ctx, b, dir(f))
		if err != nil {
			t.Fatal(err)
		}
		next, count := f.anchor+1, int64(0)
		for _, s := range segs {
			if s.Last < next {
				continue // before the full backup: a chain this check does not need
			}
			if s.First > next || (s.First < next && count > 0) {
				t.Fatalf("%s: segment %d-%d follows revision %d: revisions lost or doubled", f.ns, s.First, s.Last, next-1)
			}
			_, revs, err := journal.Fetch(ctx, b, s.Key, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range revs {
				if r.GetRevision() >= next {
					count++
				}
			}
			next = s.Last + 1
		}
		if want := next - 1 - f.anchor; count != want || next-1 < last[i].Load() {
			t.Fatalf("%s: %d revisions in segments up to %d, want %d up to at least %d", f.ns, count, next-1, want,
				last[i].Load())
		}
	}
}
