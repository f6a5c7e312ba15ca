package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/e2e/sandbox"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Sized for CI: loadConfigs configs "@every 10s" for loadWindow. statusLag bounds how long
// after a backup's end its config's status shows it, under that load.
const (
	loadConfigs = 100
	loadWindow  = time.Minute
	statusLag   = 5 * time.Second
)

// TestManyConfigsEverySlotCompletes runs loadConfigs clusters, one config each every 10 s, for
// loadWindow (all on the demo etcd: the configs of one cluster take turns, one backup of a
// cluster at a time), then pauses the clusters (no new slots) and waits until the pipeline is
// idle. Every config's backups must then be Completed and form a run of 10 s slots from its
// first tick to the pause in which each missing slot is explained: one backup of a cluster at
// a time, so a slot that comes while the config's previous backup still runs is skipped (as a
// CronJob with concurrencyPolicy Forbid skips it). A slot missing while nothing ran is lost;

// nothing may be left in any work stream or in staging; every consumer must have nothing
// pending; and consumer counts must be back at rest (no consumer per upload left behind).
// It checks correctness under load, not time.
func TestManyConfigsEverySlotCompletes(t *testing.T) {
	dumpLogsOnFailure(t)
	ctx := testContext(t, 10*time.Minute)
	cluster := func(i int) string { return fmt.Sprintf("load-%03d", i) }
	for i := range loadConfigs {
		if err := env.AddCluster(ctx, cluster(i), env.DemoEtcd.Endpoint); err != nil {
			t.Fatal(err)
		}
	}
	rest := jsConsumers(t)
	created := time.Now()
	for i := range loadConfigs {
		newConfig(t, ctx, cluster(i), fmt.Sprintf("every-10s-%03d", i), "@every 10s", sandbox.Destination, 20)
	}
	// Let the window pass, watching that the pipeline keeps up (no deadline on each slot: this
	// asserts completeness, the benchmark asserts time).
	window := time.NewTimer(loadWindow - time.Since(created))
	<-window.C
	pause := time.Now()
	for i := range loadConfigs {
		if err := env.Client.Patch(ctx, &kubermaticv1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: cluster(i)}},
			client.RawPatch(types.MergePatchType, []byte(`{"spec":{"pause":true}}`))); err != nil {
			t.Fatal(err)
		}
	}
	if late := time.Since(pause); late > 2*time.Second {
		t.Logf("pausing the clusters took %s", late)
	}

	// Idle: every config's backups settled (none Running), work streams empty.
	var list kubermaticv1.EtcdBackupConfigList
	err := sandbox.Poll(ctx, 5*time.Minute, time.Second, func() (bool, error) {
		var all kubermaticv1.EtcdBackupConfigList
		if err := env.Client.List(ctx, &all); err != nil {
			return false, err
		}
		list.Items = list.Items[:0]
		for _, c := range all.Items {
			if strings.HasPrefix(c.Name, "every-10s-") {
				list.Items = append(list.Items, c)
			}
		}
		running := 0
		for _, c := range list.Items {
			for _, b := range c.Status.Backups() {
				if b.BackupPhase == "" || b.BackupPhase == kubermaticv1.PhaseRunning {
					running++
				}
			}
		}
		left := jsLeft(t, ctx)
		return running == 0 && len(left) == 0, fmt.Errorf("%d backups running; left on the bus: %v", running, left)
	})
	if err != nil {
		t.Fatalf("the pipeline did not drain: %v", err)
	}

	total, skipped := 0, 0
	for _, c := range list.Items {
		var slots []time.Time
		finished := map[time.Time]time.Time{}
		for _, b := range c.Status.Backups() {
			if b.BackupPhase != kubermaticv1.PhaseCompleted {
				t.Errorf("%s: backup %s is %s: %s", c.Name, b.BackupName, b.BackupPhase, b.BackupMessage)
				continue
			}
			slots = append(slots, b.ScheduledTime.Time)
			finished[b.ScheduledTime.Time] = b.BackupFinishedTime.Time
		}
		sort.Slice(slots, func(i, j int) bool { return slots[i].Before(slots[j]) })
		total += len(slots)
		if len(slots) == 0 {
			t.Errorf("%s: no backup", c.Name)
			continue
		}
		if first := slots[0]; first.Sub(c.CreationTimestamp.Time) > 10*time.Second+time.Second {
			t.Errorf("%s: first backup at %s, created %s: the first tick was missed", c.Name, first, c.CreationTimestamp)
		}
		// Each slot missing between two backups, or before the pause (seen within a moment; the
		// clusters are paused one after another, within a few seconds), came while the backup
		// before it still ran, as far as the scheduler could see: status shows a backup's end
		// up to statusLag after it.
		ends := append(append(make([]time.Time, 0, len(slots)), slots[1:]...), pause.Add(-2*time.Second))
		for i, prev := range slots {
			for missing := prev.Add(10 * time.Second); missing.Before(ends[i]); missing = missing.Add(10 * time.Second) {
				skipped++
				if done := finished[prev]; !done.After(missing.Add(-statusLag)) {
					t.Errorf("%s: slot %s is missing, but the backup before it (%s) had finished at %s: a slot was lost",
						c.Name, missing.Format(time.TimeOnly), prev.Format(time.TimeOnly), done.Format(time.TimeOnly))
				}
			}
		}
	}
	t.Logf("%d slots skipped while the backup before them still ran", skipped)
	if got := len(list.Items); got != loadConfigs {
		t.Errorf("%d configs listed, want %d", got, loadConfigs)
	}
	t.Logf("%d configs, %d backups completed in %s", len(list.Items), total, pause.Sub(created).Round(time.Second))

	if now := jsConsumers(t); fmt.Sprint(now) != fmt.Sprint(rest) {
		t.Errorf("consumers per stream after the load %v, at rest before %v", now, rest)
	}
}

// jsDetail returns the embedded server's streams with their consumers.
func jsDetail(t *testing.T) []server.StreamDetail {
	t.Helper()
	jsz, err := env.NATS.Jsz(&server.JSzOptions{Accounts: true, Streams: true, Consumer: true})
	if err != nil {
		t.Fatal(err)
	}
	var out []server.StreamDetail
	for _, a := range jsz.AccountDetails {
		out = append(out, a.Streams...)
	}
	return out
}

// jsConsumers counts the consumers of each stream.
func jsConsumers(t *testing.T) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, s := range jsDetail(t) {
		out[s.Name] = s.State.Consumers
	}
	return out
}

// jsLeft lists what is left to do on the bus: messages in work-queue streams, objects in
// staging, and messages pending or unacknowledged on any consumer.
func jsLeft(t *testing.T, ctx context.Context) []string {
	t.Helper()
	var left []string
	staged, err := stagedChunks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if staged > 0 {
		left = append(left, fmt.Sprintf("staging: %d objects' chunks", staged))
	}
	for _, s := range jsDetail(t) {
		switch s.Name {
		case bus.StreamRequests, bus.StreamSnapshots, bus.StreamDeletes: // work queues
			if s.State.Msgs > 0 {
				left = append(left, fmt.Sprintf("%s: %d messages", s.Name, s.State.Msgs))
			}
		}
		for _, c := range s.Consumer {
			if c.NumPending > 0 || c.NumAckPending > 0 {
				left = append(left, fmt.Sprintf("%s/%s: %d pending, %d unacknowledged", s.Name, c.Name, c.NumPending,
					c.NumAckPending))
			}
		}
	}
	return left
}

// stagedChunks counts the staged objects whose chunks are still in staging, read as the
// uploader may (stream info filtered to chunk subjects: no consumer is made).
func stagedChunks(ctx context.Context) (int, error) {
	nc, err := env.NATSClient(bus.IdentityUploader)
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(10*time.Second))
	if err != nil {
		return 0, err
	}
	s, err := js.Stream(ctx, "OBJ_"+bus.StagingBucket)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter("$O."+bus.StagingBucket+".C.>"))
	if err != nil {
		return 0, err
	}
	return len(info.State.Subjects), nil
}
