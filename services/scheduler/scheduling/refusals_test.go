package scheduling

import (
	"context"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/kube"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

// A config the seed must not run as written is refused on its status, with a Warning Event,
// and nothing is queued: a schedule more frequent than --min-interval, keep beyond MaxKeep
// (KKP's CRD takes any integer), a destination that is no destination name, a tiered
// retention that does not parse.
func TestConfigRefusals(t *testing.T) {
	created := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name     string
		schedule string
		keep     int
		dest     string
		// retention is the tiered retention annotation ("": none).
		retention string
		reason    string
		says      string
	}{
		{name: "every second", schedule: "@every 1s", keep: 5, reason: kubermaticv1.ReasonScheduleTooFrequent,
			says: "1s apart"},
		{name: "every minute", schedule: "* * * * *", keep: 5, reason: kubermaticv1.ReasonScheduleTooFrequent,
			says: "1m0s apart"},
		{name: "twice an hour at five past and ten past", schedule: "5,10 * * * *", keep: 5,
			reason: kubermaticv1.ReasonScheduleTooFrequent, says: "5m0s apart"},
		{name: "at the floor", schedule: "@every 10m", keep: 5, reason: kubermaticv1.ReasonScheduled},
		{name: "keep beyond the maximum", schedule: "@daily", keep: kubermaticv1.MaxKeep + 1,
			reason: kubermaticv1.ReasonInvalidKeep, says: "from 1 to 1000"},
		{name: "keep near 2^62", schedule: "@daily", keep: math.MaxInt64 / 2, reason: kubermaticv1.ReasonInvalidKeep,
			says: "from 1 to 1000"},
		{name: "keep at the maximum", schedule: "@daily", keep: kubermaticv1.MaxKeep, reason: kubermaticv1.ReasonScheduled},
		{name: "a destination that is no name", schedule: "@daily", keep: 5, dest: "S3 Main",
			reason: kubermaticv1.ReasonInvalidDestination, says: `"S3 Main" is not a destination name`},
		{name: "a retention tier that is none", schedule: "@daily", keep: 5, retention: "hourly=24,yearly=2",
			reason: kubermaticv1.ReasonInvalidRetention, says: `"yearly" is not a tier`},
		{name: "retention tiers beyond the maximum", schedule: "@daily", keep: 5, retention: "hourly=900,daily=900",
			reason: kubermaticv1.ReasonInvalidRetention, says: "more than 1000"},
		{name: "tiered retention", schedule: "@daily", keep: 5, retention: "hourly=24,daily=7,weekly=4,monthly=12",
			reason: kubermaticv1.ReasonScheduled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &kubermaticv1.EtcdBackupConfig{
				ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-c", Name: "daily",
					CreationTimestamp: metav1.NewTime(created)},
				Spec: kubermaticv1.EtcdBackupConfigSpec{Cluster: corev1.ObjectReference{Name: "c"}, Schedule: tc.schedule,
					Keep: &tc.keep, Destination: tc.dest},
			}
			if tc.retention != "" {
				cfg.Annotations = map[string]string{kubermaticv1.AnnotationRetention: tc.retention}
			}
			r, q, rec := refusalReconciler(t, cfg)
			req := ctrl.Request{NamespacedName: client.ObjectKeyFromObject(cfg)}
			if _, err := r.Reconcile(context.Background(), req); err != nil {
				t.Fatal(err)
			}
			var got kubermaticv1.EtcdBackupConfig
			if err := r.Client.Get(context.Background(), client.ObjectKeyFromObject(cfg), &got); err != nil {
				t.Fatal(err)
			}
			cond := got.Status.Condition(kubermaticv1.ConditionSchedulingActive)
			if cond == nil || cond.Reason != tc.reason || !strings.Contains(cond.Message, tc.says) {
				t.Fatalf("condition %+v, want reason %s saying %q", cond, tc.reason, tc.says)
			}
			if tc.reason == kubermaticv1.ReasonScheduled {
				return
			}
			if cond.Status != corev1.ConditionFalse || len(q.reqs) != 0 {
				t.Fatalf("condition %s, %d backups queued; want False and none", cond.Status, len(q.reqs))
			}
			select {
			case ev := <-rec.Events:
				if !strings.HasPrefix(ev, corev1.EventTypeWarning+" "+tc.reason+" ") {
					t.Fatalf("event %q, want a Warning %s", ev, tc.reason)
				}
			default:
				t.Fatal("no Event")
			}
		})
	}
}

func refusalReconciler(t *testing.T, cfg *kubermaticv1.EtcdBackupConfig) (*Reconciler, *queue,
	*events.FakeRecorder) {
	t.Helper()
	scheme, err := kube.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithStatusSubresource(cfg).WithObjects(cfg,
		&kubermaticv1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: "c"}}).Build()
	q := &queue{}
	rec := events.NewFakeRecorder(10)
	now := cfg.CreationTimestamp.Add(time.Hour)
	return &Reconciler{Client: c, Recorder: rec, Now: func() time.Time { return now }, Log: slog.New(slog.DiscardHandler),
		Metrics: NewMetrics(prometheus.NewRegistry()),
		Planner: &Planner{Reader: c, Destinations: oneDestination{}, Queue: q, MinInterval: 10 * time.Minute}}, q, rec
}
