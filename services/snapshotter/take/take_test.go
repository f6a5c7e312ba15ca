package take

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupformat"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/endpoints"
	"github.com/etcd-backup/etcdbackup/pkg/etcdtest"
	"github.com/etcd-backup/etcdbackup/pkg/kube"
	"github.com/etcd-backup/etcdbackup/pkg/natstest"
	"github.com/etcd-backup/etcdbackup/pkg/snapshot"
	"github.com/etcd-backup/etcdbackup/pkg/staging"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

// With staging short of --staging-reserve-mib, a request is refused before etcd is contacted
// (its endpoint here answers nothing), with ErrStagingFull; with room, etcd is contacted.
func TestFullStagingStartsNoSnapshot(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := natstest.Bus(t, 8<<20)
	if _, err := staging.Put(ctx, js, bus.StagingBucket, "waiting", "an upload not done yet",
		bytes.NewReader(make([]byte, 6<<20))); err != nil {
		t.Fatal(err)
	}
	h, req := silentEtcd(t)
	h.JS, h.StagingReserve = js, 4<<20
	if _, err := h.take(ctx, req, bus.Delivery{Attempt: 1}, "", time.Now()); !errors.Is(err, ErrStagingFull) {
		t.Fatalf("take with 2 MiB free of a 4 MiB reserve = %v, want ErrStagingFull", err)
	}
	if reason, err := failures.Classify(ErrStagingFull); reason != "staging-full" || bus.IsPermanent(err) {
		t.Fatalf("a full staging: reason %q, permanent %v; want staging-full, retried", reason, bus.IsPermanent(err))
	}
	h.StagingReserve = 1 << 20
	if _, err := h.take(ctx, req, bus.Delivery{Attempt: 1}, "", time.Now()); err == nil || errors.Is(err, ErrStagingFull) {
		t.Fatalf("take with room = %v, want etcd's error (it was contacted)", err)
	}
}

// A request whose config is not in its cluster's namespace is refused before etcd is
// contacted (the endpoint answers nothing), as a configuration error naming
// ClusterNamespaceMismatch: the certificates of another namespace are never read.
func TestConfigOutsideItsClusterNamespaceIsRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, req := silentEtcd(t)
	req.Config.Namespace = "cluster-a"
	// No staging to ask (JS is nil): the refusal comes before the staging check too.
	h.StagingReserve = 1 << 20
	_, err := h.take(ctx, req, bus.Delivery{Attempt: 1}, "", time.Now())
	if !errors.Is(err, endpoints.ErrConfig) || !strings.Contains(err.Error(),
		kubermaticv1.ReasonClusterNamespaceMismatch) {
		t.Fatalf("take of a config in cluster-a naming cluster c = %v, want a ClusterNamespaceMismatch configuration "+
			"error", err)
	}
	req.Config.Namespace = "cluster-c"
	h.StagingReserve, h.JS = 0, natstest.Bus(t, 8<<20) // the attempt is reported before etcd is asked
	if _, err := h.take(ctx, req, bus.Delivery{Attempt: 1}, "", time.Now()); err == nil || strings.Contains(err.Error(),
		kubermaticv1.ReasonClusterNamespaceMismatch) {
		t.Fatalf("take in the cluster's namespace = %v, want etcd's error (it was contacted)", err)
	}
}

// silentEtcd returns a Handler whose Cluster "c" points at an etcd endpoint that answers
// nothing, and a request for a config of it in cluster-c.
func silentEtcd(t *testing.T) (*Handler, *etcdbackupv1.BackupRequested) {
	t.Helper()
	scheme, err := kube.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	cluster := &kubermaticv1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: "c", Annotations: map[string]string{
		kubermaticv1.AnnotationEtcdEndpoints: "http://127.0.0.1:1", kubermaticv1.AnnotationEtcdClientSecret: "none"}}}
	h := New(Options{
		Reader:        fake.NewClientBuilder().WithScheme(scheme).WithObjects(cluster).Build(),
		MemberTimeout: 200 * time.Millisecond, Log: slog.New(slog.DiscardHandler),
	}, prometheus.NewRegistry())
	return h, &etcdbackupv1.BackupRequested{Cluster: "c", Config: &etcdbackupv1.ConfigRef{Namespace: "cluster-c",
		Name: "daily"}, BackupName: "daily-2026-11-29T02:00:00"}
}

// A request of a config being deleted is not taken, and its backup ends Failed in status, so
// that the config's deletion (which waits for Running backups) does not wait for it.
func TestRequestOfAConfigBeingDeletedEndsFailed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := natstest.Bus(t, 8<<20)
	h, req := silentEtcd(t)
	h.JS = js
	cfg := &kubermaticv1.EtcdBackupConfig{ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-c", Name: "daily",
		UID: "daily-uid", Finalizers: []string{kubermaticv1.DeleteAllBackupsFinalizer}},
		Spec: kubermaticv1.EtcdBackupConfigSpec{Cluster: corev1.ObjectReference{Name: "c"}}}
	c := h.Reader.(client.Client)
	if err := c.Create(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	req.Config.Uid = "daily-uid"
	if err := h.Handle(ctx, req, bus.Delivery{Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, bus.StreamStatus)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(ctx, bus.SubjectStatusAll)
	if err != nil {
		t.Fatalf("no status event: %v", err)
	}
	var ev etcdbackupv1.StatusEvent
	if err := bus.Decode(m.Data, m.Header.Get(bus.HeaderContentType), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.GetPhase() != etcdbackupv1.Phase_PHASE_FAILED || !strings.Contains(ev.GetMessage(),
		"being deleted") || ev.GetBackupName() != req.GetBackupName() {
		t.Fatalf("status %v, want the backup Failed because its config is being deleted", &ev)
	}
}

// A running snapshot reports its bytes streamed of etcd's database size, in its message and
// in structured fields, at least every ProgressEvery; the snapshot itself is whole.
func TestSnapshotReportsProgress(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	e := filledEtcd(t, ctx, 600) // about 20 MiB
	js := natstest.Bus(t, 256<<20)
	h, req := silentEtcd(t)
	h.JS, h.ProgressEvery, h.Level = js, time.Millisecond, backupformat.Level
	pointAt(t, ctx, h, e.Endpoint)
	ready, err := h.take(ctx, req, bus.Delivery{Attempt: 1}, "", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var reports int
	for _, ev := range natstest.StatusEvents(t, ctx, js, nil) {
		if !strings.HasPrefix(ev.GetMessage(), "taking snapshot: ") {
			continue
		}
		reports++
		t.Logf("%s (bytesDone %d, bytesTotal %d)", ev.GetMessage(), ev.GetBytesDone(), ev.GetBytesTotal())
		// The total is etcd's database size as its status reports it, near the snapshot's.
		if ev.GetBytesTotal() < ready.GetSnapshotSize()/2 || ev.GetBytesTotal() > 2*ready.GetSnapshotSize() ||
			ev.GetBytesDone() > ready.GetSnapshotSize() || !strings.Contains(ev.GetMessage(), " MiB (") {
			t.Fatalf("progress %q: %d of %d bytes; the snapshot had %d", ev.GetMessage(), ev.GetBytesDone(),
				ev.GetBytesTotal(), ready.GetSnapshotSize())
		}
	}
	if reports == 0 {
		t.Fatal("no progress report from a 20 MiB snapshot at a 1 ms interval")
	}
}

// What a failed snapshot becomes: configuration errors (the cluster's, the destination's) end
// the backup at once with their reason; etcd's and staging's are retried.
func TestFailureClasses(t *testing.T) {
	for _, tc := range []struct {
		err       error
		reason    string
		permanent bool
	}{
		{fmt.Errorf("%w: cluster %q does not exist", endpoints.ErrConfig, "c"), "config", true},
		{fmt.Errorf("encryption of destination %q: %w", "s3", destination.ErrEncryption), "EncryptionInvalid", true},
		{fmt.Errorf("%w: staging has 0 MiB free", ErrStagingFull), "staging-full", false},
		{fmt.Errorf("stream: %w", snapshot.ErrCorrupt), "corrupt", false},
		{errors.New("no healthy etcd member"), "etcd", false},
	} {
		reason, err := failures.Classify(tc.err)
		if reason != tc.reason || bus.IsPermanent(err) != tc.permanent {
			t.Errorf("%v: reason %q, permanent %v; want %q, %v", tc.err, reason, bus.IsPermanent(err), tc.reason, tc.permanent)
		}
	}
}

// filledEtcd starts an etcd holding n keys of 32 KiB.
func filledEtcd(t *testing.T, ctx context.Context, n int) *etcdtest.Etcd {
	t.Helper()
	e := etcdtest.Start(t)
	cli := e.Client(t)
	value := strings.Repeat("x", 32<<10)
	for i := range n {
		if _, err := cli.Put(ctx, fmt.Sprintf("/registry/k%04d", i), value+fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

// pointAt makes cluster "c" of h's reader reach its etcd at endpoint.
func pointAt(t *testing.T, ctx context.Context, h *Handler, endpoint string) {
	t.Helper()
	c := h.Reader.(client.Client)
	var cluster kubermaticv1.Cluster
	if err := c.Get(ctx, client.ObjectKey{Name: "c"}, &cluster); err != nil {
		t.Fatal(err)
	}
	cluster.Annotations[kubermaticv1.AnnotationEtcdEndpoints] = endpoint
	if err := c.Update(ctx, &cluster); err != nil {
		t.Fatal(err)
	}
}

// A request delivered again after its snapshot was staged whole (its acknowledgement lost)
// offers that staged snapshot again, with the record it was staged with: the object an upload
// may be reading is not replaced, and etcd is not asked (here it has gone away). A staged
// object without a record of the request (no SnapshotReady ever offered it) is no reuse: a
// new snapshot replaces it.
func TestRedeliveredRequestReusesItsStagedSnapshot(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	e := filledEtcd(t, ctx, 30)
	js := natstest.Bus(t, 64<<20)
	h, req := silentEtcd(t)
	h.JS, h.Level = js, backupformat.Level
	liveConfig(t, ctx, h, req, e.Endpoint)
	if err := h.Handle(ctx, req, bus.Delivery{Attempt: 1}); err != nil {
		t.Fatal(err)
	}
	store, err := js.ObjectStore(ctx, bus.StagingBucket)
	if err != nil {
		t.Fatal(err)
	}
	first, err := store.GetInfo(ctx, bus.MsgID(req))
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, bus.StreamSnapshots)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(ctx, bus.SubjectSnapshotReady)
	if err != nil {
		t.Fatal(err)
	}
	var offered etcdbackupv1.SnapshotReady
	if err := bus.Decode(m.Data, m.Header.Get(bus.HeaderContentType), &offered); err != nil {
		t.Fatal(err)
	}

	pointAt(t, ctx, h, "http://127.0.0.1:1") // etcd gone: only a reuse succeeds
	if err := h.Handle(ctx, req, bus.Delivery{Attempt: 2}); err != nil {
		t.Fatalf("redelivered request: %v, want the staged snapshot offered again", err)
	}
	again, err := store.GetInfo(ctx, bus.MsgID(req))
	if err != nil || again.NUID != first.NUID || again.Digest != first.Digest {
		t.Fatalf("after a redelivery the staged object is %+v (%v), want the first one (%s) kept", again, err, first.NUID)
	}
	if reused, err := h.staged(ctx, req); err != nil || !proto.Equal(reused, &offered) {
		t.Fatalf("the staged record %v (%v), want the SnapshotReady first offered %v", reused, err, &offered)
	}
	if n := testutil.ToFloat64(h.metrics.taken.WithLabelValues("reused")); n != 1 {
		t.Fatalf("snapshots reused: %v, want 1", n)
	}

	if _, err := staging.Put(ctx, js, bus.StagingBucket, bus.MsgID(req), "no record",
		bytes.NewReader([]byte("half of something"))); err != nil {
		t.Fatal(err)
	}
	if err := h.Handle(ctx, req, bus.Delivery{Attempt: 3}); err == nil {
		t.Fatal("a staged object without a record was offered as the request's snapshot")
	}
	pointAt(t, ctx, h, e.Endpoint)
	if err := h.Handle(ctx, req, bus.Delivery{Attempt: 4}); err != nil {
		t.Fatal(err)
	}
	if ready, err := h.staged(ctx, req); err != nil || ready == nil || ready.GetRevision() != offered.GetRevision() ||
		ready.GetKeyCount() != offered.GetKeyCount() {
		t.Fatalf("after a new snapshot the record is %v (%v), want one of etcd at revision %d", ready, err,
			offered.GetRevision())
	}
}

// One snapshot of a cluster at a time, whatever the replicas: a request whose cluster's lease
// another holds is retried after BusyRetry (ErrClusterBusy, etcd not contacted), and is taken
// once the lease is given back; the snapshot gives its lease back when it is done.
func TestOneSnapshotOfAClusterAtATime(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	e := filledEtcd(t, ctx, 10)
	js := natstest.Bus(t, 64<<20)
	leases, err := bus.OpenLeases(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	h, req := silentEtcd(t)
	h.JS, h.Level, h.Leases, h.BusyRetry, h.Holder = js, backupformat.Level, leases, 7*time.Second, "snapshotter-0"
	liveConfig(t, ctx, h, req, e.Endpoint)

	_, release, err := leases.Acquire(ctx, "c", "snapshotter-1, backup cluster-c/hourly-x")
	if err != nil {
		t.Fatal(err)
	}
	err = h.Handle(ctx, req, bus.Delivery{Attempt: 1})
	if !errors.Is(err, ErrClusterBusy) || !strings.Contains(err.Error(), "snapshotter-1, backup cluster-c/hourly-x") ||
		!strings.Contains(err.Error(), "tried again in 7s") {
		t.Fatalf("with the cluster's lease held: %v, want ErrClusterBusy naming the holder", err)
	}
	if reason, _ := failures.Classify(err); reason != "cluster-busy" || bus.IsPermanent(err) {
		t.Fatalf("a busy cluster is %q (permanent %v), want the transient cluster-busy", reason, bus.IsPermanent(err))
	}
	if meta, _ := staging.Metadata(ctx, js, bus.StagingBucket, bus.MsgID(req)); meta != nil {
		t.Fatal("a snapshot was staged while another held the cluster's lease")
	}
	// The lease is asked for only for a cluster the request may back up: one from another
	// namespace is refused as such, not told to wait for its turn.
	stray := proto.Clone(req).(*etcdbackupv1.BackupRequested)
	stray.Config.Namespace = "cluster-a"
	if _, err := h.take(ctx, stray, bus.Delivery{Attempt: 1}, "", time.Now()); errors.Is(err, ErrClusterBusy) ||
		!strings.Contains(err.Error(), kubermaticv1.ReasonClusterNamespaceMismatch) {
		t.Fatalf("a request from another namespace, the cluster's lease held: %v, want ClusterNamespaceMismatch", err)
	}
	release()
	if err := h.Handle(ctx, req, bus.Delivery{Attempt: 2}); err != nil {
		t.Fatalf("once the lease was given back: %v", err)
	}
	// The snapshot gave the lease back.
	_, release, err = leases.Acquire(ctx, "c", "snapshotter-1")
	if err != nil {
		t.Fatalf("after the snapshot the cluster's lease is still held: %v", err)
	}
	release()
}

// liveConfig creates req's config (cluster-c/daily of cluster c) and points cluster c at the
// etcd at endpoint: a request Handle takes.
func liveConfig(t *testing.T, ctx context.Context, h *Handler, req *etcdbackupv1.BackupRequested, endpoint string) {
	t.Helper()
	cfg := &kubermaticv1.EtcdBackupConfig{ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-c", Name: "daily",
		UID: "daily-uid"}, Spec: kubermaticv1.EtcdBackupConfigSpec{Cluster: corev1.ObjectReference{Name: "c"}}}
	if err := h.Reader.(client.Client).Create(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	req.Config.Uid = "daily-uid"
	pointAt(t, ctx, h, endpoint)
}

// A first attempt that ends within StartedAfter publishes no "taking snapshot" event (a
// status patch fewer for a quick backup); one that runs longer does, stamped with its start,
// and a retry does at once.
func TestOnlyASlowOrRetriedAttemptSaysItStarted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	starts := func(js jetstream.JetStream) []*etcdbackupv1.StatusEvent {
		t.Helper()
		var out []*etcdbackupv1.StatusEvent
		for _, ev := range natstest.StatusEvents(t, ctx, js, nil) {
			if strings.HasPrefix(ev.GetMessage(), "taking snapshot (attempt ") {
				out = append(out, ev)
			}
		}
		return out
	}
	// Quick: a small etcd, a first attempt, an hour to wait.
	e := filledEtcd(t, ctx, 4)
	h, req := silentEtcd(t)
	h.JS, h.StartedAfter, h.MaxAttempts, h.Level = natstest.Bus(t, 64<<20), time.Hour, 3, backupformat.Level
	pointAt(t, ctx, h, e.Endpoint)
	if _, err := h.take(ctx, req, bus.Delivery{Attempt: 1}, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	if got := starts(h.JS); len(got) != 0 {
		t.Fatalf("a quick first attempt said it started: %v", got)
	}
	// A retry says so at once.
	if _, err := h.take(ctx, req, bus.Delivery{Attempt: 2}, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	if got := starts(h.JS); len(got) != 1 || got[0].GetMessage() != "taking snapshot (attempt 2 of 3)" {
		t.Fatalf("a retry's start events: %v, want one of attempt 2", got)
	}
	// Slow: a member that answers nothing (the attempt fails after the member timeout, 200 ms),
	// a first attempt, 10 ms to wait.
	slow, sreq := silentEtcd(t)
	slow.JS, slow.StartedAfter, slow.MaxAttempts = natstest.Bus(t, 8<<20), 10*time.Millisecond, 3
	begun := time.Now()
	if _, err := slow.take(ctx, sreq, bus.Delivery{Attempt: 1}, "", time.Now()); err == nil {
		t.Fatal("a snapshot of an etcd that answers nothing succeeded")
	}
	got := starts(slow.JS)
	if len(got) != 1 || got[0].GetMessage() != "taking snapshot (attempt 1 of 3)" {
		t.Fatalf("a slow first attempt's start events: %v, want one", got)
	}
	if at := got[0].GetTime().AsTime(); at.Before(begun) || at.After(begun.Add(150*time.Millisecond)) {
		t.Fatalf("the start event is stamped %s, the attempt began at %s", at, begun)
	}
}
