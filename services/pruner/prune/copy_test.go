package prune

import (
	"bytes"
	"context"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/backupname"
	"github.com/etcd-backup/etcdbackup/pkg/destination"
	"github.com/etcd-backup/etcdbackup/pkg/natstest"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// copyTo makes destination "new" copy to destination "old" at bucket.
func copyTo(t *testing.T, p *Planner, bucket string) {
	t.Helper()
	c := p.Reader.(client.Client)
	var seed kubermaticv1.Seed
	if err := c.Get(context.Background(), types.NamespacedName{Namespace: "kubermatic", Name: "kubermatic"},
		&seed); err != nil {
		t.Fatal(err)
	}
	seed.Spec.EtcdBackupRestore.Destinations["new"].CopyTo = "old"
	seed.Spec.EtcdBackupRestore.Destinations["old"].BucketName = bucket
	if err := c.Update(context.Background(), &seed); err != nil {
		t.Fatal(err)
	}
	p.Destinations = destination.NewResolver(c, destination.Source{Seed: types.NamespacedName{Namespace: "kubermatic",
		Name: "kubermatic"}})
}

func keysIn(t *testing.T, b destination.Bucket) []string {
	t.Helper()
	var keys []string
	if err := b.List(context.Background(), "", func(o destination.ObjectInfo) error {
		keys = append(keys, o.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	sort.Strings(keys)
	return keys
}

// Every backup and journal segment in the destination is copied to the one it copies to
// (but a backup retention deletes this pass), verified; a segment the destination pruned goes
// from the copy; the copies are pruned by the config's retention on their own; the lag is 0.
// A copy destination that cannot be reached leaves the primary's retention running and says
// how much waits, since when.
func TestBackupsAreCopiedVerifiedAndRetainedOnTheirOwn(t *testing.T) {
	ctx := context.Background()
	p, cfg, s3 := fixture(t)
	p.JS = natstest.Bus(t, 8<<20)
	copyTo(t, p, "old-bucket")
	var names []string
	for i := range 3 {
		names = append(names, backup(t, s3, cfg, i, "new", "new-bucket"))
	}
	prefix := backupname.Prefix("c", cfg.Namespace, cfg.Name)
	put := func(bucket, key string) {
		if err := s3.Bucket(t, bucket).Put(ctx, key, bytes.NewReader([]byte(key)), int64(len(key)),
			destination.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	segment, pruned := prefix+"journal/1/00000000000000000001-00000000000000000009.zst",
		prefix+"journal/1/00000000000000000000-00000000000000000000.zst"
	put("new-bucket", segment)
	put("old-bucket", pruned)

	l, err := p.Plan(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	key := func(name string) string { return backupname.ObjectKey("c", cfg.Namespace, cfg.Name, name) }
	want := []string{key(names[1]), key(names[2]), segment}
	sort.Strings(want)
	if got := keysIn(t, s3.Bucket(t, "old-bucket")); !slices.Equal(got, want) {
		t.Fatalf("the copy holds %v, want %v (keep 2: the oldest is not copied, it goes)", got, want)
	}
	if c := l.Copy; c == nil || c.Copied != 3 || c.Missing != 0 || c.InCopy != 3 || c.Err != nil {
		t.Fatalf("copy %+v", l.Copy)
	}
	if ok, reason, _ := copyCondition(l.Copy, p.now()); !ok || reason != "Copied" {
		t.Errorf("condition %v %s, want True Copied", ok, reason)
	}
	lag := p.Metrics.copyLagSeconds.WithLabelValues(cfg.Namespace, cfg.Name)
	if v := testutil.ToFloat64(lag); v != 0 {
		t.Errorf("copy lag %v, want 0", v)
	}

	// The oldest goes from the destination (the deleter), a fourth backup comes: it is copied,
	// and the copies' retention keeps the newest two of them.
	if err := s3.Bucket(t, "new-bucket").Delete(ctx, key(names[0])); err != nil {
		t.Fatal(err)
	}
	names = append(names, backup(t, s3, cfg, 3, "new", "new-bucket"))
	if l, err = p.Plan(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	want = []string{key(names[2]), key(names[3]), segment}
	sort.Strings(want)
	if got := keysIn(t, s3.Bucket(t, "old-bucket")); !slices.Equal(got, want) {
		t.Fatalf("after a fourth backup the copy holds %v, want %v", got, want)
	}

	// The copy's bucket gone: the pass goes on, and says what waits, for how long (the
	// objects were stored now, by the bucket's clock).
	copyTo(t, p, "no-such-bucket")
	p.Now = func() time.Time { return time.Now().Add(time.Minute) }
	if l, err = p.Plan(ctx, cfg); err != nil {
		t.Fatalf("a copy destination down stopped the pass: %v", err)
	}
	ok, reason, msg := copyCondition(l.Copy, p.now())
	if ok || reason != "CopyPending" || !strings.Contains(msg, `not copied to destination "old" yet`) ||
		!strings.Contains(msg, "does not exist") {
		t.Errorf("condition %v %s %q", ok, reason, msg)
	}
	if v := testutil.ToFloat64(lag); v <= 0 {
		t.Errorf("copy lag %v, want how long the oldest object waited", v)
	}
}
