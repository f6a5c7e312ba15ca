package statuswriter

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/kube"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/timestamppb"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

// A status event costs one read of its config: the one it is checked against is the one it
// is merged into.
func TestHandleReadsTheConfigOnce(t *testing.T) {
	scheme, err := kube.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	cfg := &kubermaticv1.EtcdBackupConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-c", Name: "daily", UID: "u-1"},
		Spec:       kubermaticv1.EtcdBackupConfigSpec{Cluster: corev1.ObjectReference{Name: "c"}},
	}
	gets := 0
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(cfg).WithStatusSubresource(cfg).
		WithInterceptorFuncs(interceptor.Funcs{Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey,
			obj client.Object, opts ...client.GetOption) error {
			gets++
			return c.Get(ctx, key, obj, opts...)
		}}).Build()
	w := New(c, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	at := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	backup := backupname.Backup("daily", at)
	ev := &etcdbackupv1.StatusEvent{
		Config: &etcdbackupv1.ConfigRef{Namespace: "cluster-c", Name: "daily", Uid: "u-1"}, Cluster: "c",
		BackupName: backup, ScheduledTime: timestamppb.New(at), Stage: etcdbackupv1.Stage_STAGE_SCHEDULER,
		Phase: etcdbackupv1.Phase_PHASE_RUNNING, Message: "queued", Time: timestamppb.Now(),
	}
	if err := handleOne(w, ev, bus.Delivery{Subject: "etcdbackup.status.scheduler", Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	var got kubermaticv1.EtcdBackupConfig
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(cfg), &got); err != nil {
		t.Fatal(err)
	}
	if b := got.Status.Backups(); len(b) != 1 || b[0].BackupName != backup {
		t.Fatalf("status %+v, want the backup listed", got.Status)
	}
	if gets != 2 { // the Handle's read, and this test's own
		t.Fatalf("%d reads of the config for one event, want 1", gets-1)
	}
}

// counting is a fake API with one config, counting reads and status patches.
type counting struct {
	client      client.Client
	gets, patch int
	mu          sync.Mutex
}

func newCounting(t *testing.T, objs ...client.Object) *counting {
	t.Helper()
	scheme, err := kube.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	c := &counting{}
	c.client = fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).WithStatusSubresource(objs...).
		WithInterceptorFuncs(interceptor.Funcs{
			Get: func(ctx context.Context, cl client.WithWatch, key client.ObjectKey, obj client.Object,
				opts ...client.GetOption) error {
				c.mu.Lock()
				c.gets++
				c.mu.Unlock()
				return cl.Get(ctx, key, obj, opts...)
			},
			SubResourcePatch: func(ctx context.Context, cl client.Client, sub string, obj client.Object, patch client.Patch,
				opts ...client.SubResourcePatchOption) error {
				c.mu.Lock()
				c.patch++
				c.mu.Unlock()
				return cl.SubResource(sub).Patch(ctx, obj, patch, opts...)
			},
		}).Build()
	return c
}

func (c *counting) counts() (gets, patches int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gets, c.patch
}

func config(cluster, name, uid string) *kubermaticv1.EtcdBackupConfig {
	return &kubermaticv1.EtcdBackupConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-" + cluster, Name: name, UID: types.UID(uid)},
		Spec:       kubermaticv1.EtcdBackupConfigSpec{Cluster: corev1.ObjectReference{Name: cluster}},
	}
}

// lifecycle is one backup's events from queued to stored, as each stage publishes them.
func lifecycle(cfg *kubermaticv1.EtcdBackupConfig, slot time.Time) []bus.Item[*etcdbackupv1.StatusEvent] {
	backup := backupname.Backup(cfg.Name, slot)
	key := backupname.ObjectKey(cfg.Spec.Cluster.Name, cfg.Namespace, cfg.Name, backup)
	mk := func(stage etcdbackupv1.Stage, phase etcdbackupv1.Phase, after time.Duration,
		msg string) bus.Item[*etcdbackupv1.StatusEvent] {
		ev := &etcdbackupv1.StatusEvent{
			Config:  &etcdbackupv1.ConfigRef{Namespace: cfg.Namespace, Name: cfg.Name, Uid: string(cfg.UID)},
			Cluster: cfg.Spec.Cluster.Name, BackupName: backup, ScheduledTime: timestamppb.New(slot),
			Stage: stage, Phase: phase, Message: msg, Time: timestamppb.New(slot.Add(after)),
		}
		if phase == etcdbackupv1.Phase_PHASE_COMPLETED {
			ev.ObjectKey, ev.Size, ev.Sha256, ev.Revision = key, 544, strings.Repeat("a", 64), 9
		}
		return bus.Item[*etcdbackupv1.StatusEvent]{Msg: ev,
			Delivery: bus.Delivery{Subject: "etcdbackup.status." + strings.ToLower(strings.TrimPrefix(stage.String(),
				"STAGE_")), Attempt: 1}}
	}
	return []bus.Item[*etcdbackupv1.StatusEvent]{
		mk(sched, run, 0, "queued"),
		mk(snap, run, time.Second, "taking snapshot"),
		mk(snap, run, 2*time.Second, "snapshot staged"),
		mk(up, done, 3*time.Second, "stored"),
	}
}

func getConfig(t *testing.T, c client.Client, cfg *kubermaticv1.EtcdBackupConfig) *kubermaticv1.EtcdBackupConfig {
	t.Helper()
	var got kubermaticv1.EtcdBackupConfig
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(cfg), &got); err != nil {
		t.Fatal(err)
	}
	return &got
}

// A batch costs one read and one patch per config, whatever number of events each has; the
// result is what the events applied one by one give.
func TestHandleBatchWritesEachConfigOnce(t *testing.T) {
	slot := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	a, b, c := config("a", "daily", "u-a"), config("b", "daily", "u-b"), config("c", "daily", "u-c")
	api := newCounting(t, a, b, c)
	w := New(api.client, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	w.Parallel = 2
	var items []bus.Item[*etcdbackupv1.StatusEvent]
	for _, cfg := range []*kubermaticv1.EtcdBackupConfig{a, b, c} {
		items = append(items, lifecycle(cfg, slot)...)
	}
	rand.Shuffle(len(items), func(i, j int) { items[i], items[j] = items[j], items[i] })
	for i, err := range w.HandleBatch(context.Background(), items) {
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	if gets, patches := api.counts(); gets != 3 || patches != 3 {
		t.Fatalf("%d reads and %d patches for 12 events of 3 configs, want 3 and 3", gets, patches)
	}
	// The same events one by one, into a fresh API.
	one := newCounting(t, config("a", "daily", "u-a"))
	w1 := New(one.client, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	for _, it := range lifecycle(a, slot) {
		if err := handleOne(w1, it.Msg, it.Delivery); err != nil {
			t.Fatal(err)
		}
	}
	got, want := getConfig(t, api.client, a).Status, getConfig(t, one.client, a).Status
	if !apiequality.Semantic.DeepEqual(got, want) {
		t.Fatalf("batched status\n%+v\nwant (one by one)\n%+v", got, want)
	}
	if bs := got.Backups(); len(bs) != 1 || bs[0].BackupPhase != kubermaticv1.PhaseCompleted || bs[0].Size != 544 {
		t.Fatalf("status %+v, want the backup Completed with its size", got)
	}
}

// A rejected event (another config's object key) is refused alone; the rest of its group is
// written.
func TestHandleBatchRejectsOnlyTheForgedEvent(t *testing.T) {
	slot := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	a := config("a", "daily", "u-a")
	api := newCounting(t, a)
	w := New(api.client, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	items := lifecycle(a, slot)
	forged := lifecycle(a, slot.Add(time.Minute))[3]
	forged.Msg.ObjectKey = "victim/cluster-victim/daily/x.db.zst"
	items = append(items, forged)
	errs := w.HandleBatch(context.Background(), items)
	for i, err := range errs[:4] {
		if err != nil {
			t.Errorf("event %d: %v", i, err)
		}
	}
	var rej *bus.RejectError
	if !errors.As(errs[4], &rej) || !bus.IsPermanent(errs[4]) {
		t.Fatalf("forged event: %v, want a permanent rejection", errs[4])
	}
	if bs := getConfig(t, api.client,
		a).Status.Backups(); len(bs) != 1 || bs[0].BackupPhase != kubermaticv1.PhaseCompleted {
		t.Fatalf("status %+v, want only the genuine backup, Completed", bs)
	}
}

// The first read may come from the informer cache. A cache that lags — it holds the config
// before it was deleted and created again, or does not hold it yet — makes the writer read the
// API before it skips or rejects anything; a stale copy in the patch costs a conflict and a
// fresh read, not an event.
func TestHandleBatchDoesNotTrustAStaleCache(t *testing.T) {
	slot := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name  string
		cache []client.Object
	}{
		{"cache holds the config deleted since", []client.Object{config("a", "daily", "u-old")}},
		{"cache does not hold it yet", nil},
		{"cache holds an older resourceVersion", []client.Object{config("a", "daily", "u-a")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := config("a", "daily", "u-a")
			api := newCounting(t, a)
			if tc.name == "cache holds an older resourceVersion" {
				// Move the API's copy on: the cache's resourceVersion is now stale.
				cur := getConfig(t, api.client, a)
				cur.Labels = map[string]string{"moved": "on"}
				if err := api.client.Update(context.Background(), cur); err != nil {
					t.Fatal(err)
				}
			}
			cache := newCounting(t, tc.cache...)
			w := New(api.client, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
			w.Cache = cache.client
			for i, err := range w.HandleBatch(context.Background(), lifecycle(a, slot)) {
				if err != nil {
					t.Fatalf("event %d: %v", i, err)
				}
			}
			if bs := getConfig(t, api.client,
				a).Status.Backups(); len(bs) != 1 || bs[0].BackupPhase != kubermaticv1.PhaseCompleted {
				t.Fatalf("status %+v, want the backup Completed", bs)
			}
		})
	}
}

// handleOne applies one event: a batch of one.
func handleOne(w *Writer, ev *etcdbackupv1.StatusEvent, d bus.Delivery) error {
	return w.HandleBatch(context.Background(), []bus.Item[*etcdbackupv1.StatusEvent]{{Msg: ev, Delivery: d}})[0]
}
