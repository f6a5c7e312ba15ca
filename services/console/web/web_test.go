package web

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	backupv1 "github.com/etcd-backup/etcdbackup/api/etcdbackup/v1"
	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	"github.com/etcd-backup/etcdbackup/pkg/kube"
	"github.com/etcd-backup/etcdbackup/pkg/natstest"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8sfake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

func newSessions(t *testing.T) *Sessions {
	t.Helper()
	s, err := NewSessions([]byte(strings.Repeat("k", 32)), time.Hour, false)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func cookieOf(t *testing.T, s *Sessions, token string) *http.Cookie {
	t.Helper()
	w := httptest.NewRecorder()
	if err := s.Set(w, Signin{Token: token, ID: "id-" + token}); err != nil {
		t.Fatal(err)
	}
	for _, c := range w.Result().Cookies() {
		if c.Name == CookieName {
			return c
		}
	}
	t.Fatal("no session cookie set")
	return nil
}

func TestSessionsSealTheTokenAndRefuseAnythingElse(t *testing.T) {
	s := newSessions(t)
	c := cookieOf(t, s, "secret-token")
	if strings.Contains(c.Value, "secret-token") || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode {
		t.Fatalf("cookie %+v: the token must be sealed, HttpOnly, SameSite=Lax", c)
	}
	req := func(c *http.Cookie) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		if c != nil {
			r.AddCookie(c)
		}
		return r
	}
	if si, err := s.Open(req(c)); err != nil || si.Token != "secret-token" || si.ID != "id-secret-token" {
		t.Fatalf("Open = %+v, %v", si, err)
	}
	tampered := *c
	tampered.Value = c.Value[:len(c.Value)-2] + "AA"
	other, _ := NewSessions([]byte(strings.Repeat("x", 32)), time.Hour, false)
	for name, r := range map[string]*http.Request{
		"no cookie":           req(nil),
		"a tampered cookie":   req(&tampered),
		"another key's seal":  req(cookieOf(t, other, "secret-token")),
		"not base64":          req(&http.Cookie{Name: CookieName, Value: "%%%"}),
		"a plain token value": req(&http.Cookie{Name: CookieName, Value: "secret-token"}),
	} {
		if _, err := s.Open(r); !errors.Is(err, ErrNoSession) {
			t.Errorf("%s: %v, want ErrNoSession", name, err)
		}
	}
	s.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	if _, err := s.Open(req(c)); !errors.Is(err, ErrNoSession) {
		t.Errorf("an expired session: %v", err)
	}
	if _, err := NewSessions([]byte("short"), time.Hour, false); err == nil {
		t.Error("a short session key was accepted")
	}
}

func TestCSRFBelongsToItsSession(t *testing.T) {
	s := newSessions(t)
	if !s.CheckCSRF("a", s.CSRF("a")) || s.CheckCSRF("a", s.CSRF("b")) || s.CheckCSRF("a", "") {
		t.Fatal("a form token must match its own session only")
	}
}

func TestSafeNextStaysOnTheConsole(t *testing.T) {
	for in, want := range map[string]string{
		"/clusters/a": "/clusters/a", "": "/", "https://evil.example/": "/", "//evil.example/x": "/", "/\\evil": "/",
		"/clusters/a?b=c#d": "/clusters/a?b=c#d",
		// Browsers drop tabs and newlines inside a URL: each of these is "//evil.example" to them.
		"/\t/evil.example": "/", "/\n/evil.example": "/", "/\r/evil.example": "/", "/%09/evil.example": "/%09/evil.example",
		"/\x00/evil": "/", "/\x7f/evil": "/",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

func statusEvent(ns string, stage etcdbackupv1.Stage, phase etcdbackupv1.Phase) *etcdbackupv1.StatusEvent {
	return &etcdbackupv1.StatusEvent{Config: &etcdbackupv1.ConfigRef{Namespace: ns, Name: "daily"},
		BackupName: "daily-1", Stage: stage, Phase: phase}
}

// Each browser gets the events of the namespace it watches only; a full buffer drops and
// counts instead of blocking the others.
func TestHubSendsEachNamespaceItsOwnEvents(t *testing.T) {
	h := NewHub(1, prometheus.NewRegistry())
	dropped := h.droppedCounts
	a, b := h.Join("cluster-a"), h.Join("cluster-b")
	h.Publish(statusEvent("cluster-a", etcdbackupv1.Stage_STAGE_UPLOADER, etcdbackupv1.Phase_PHASE_COMPLETED))
	select {
	case data := <-a.C:
		if !strings.Contains(string(data), `"namespace":"cluster-a"`) || !strings.Contains(string(data),
			`"phase":"completed"`) {
			t.Errorf("cluster-a got %s", data)
		}
	default:
		t.Fatal("cluster-a got nothing")
	}
	if len(b.C) != 0 {
		t.Fatalf("cluster-b got cluster-a's event: %s", <-b.C)
	}
	h.Publish(statusEvent("cluster-a", etcdbackupv1.Stage_STAGE_UPLOADER, etcdbackupv1.Phase_PHASE_RUNNING))
	h.Publish(statusEvent("cluster-a", etcdbackupv1.Stage_STAGE_UPLOADER, etcdbackupv1.Phase_PHASE_RUNNING))
	h.Publish(statusEvent("Not A Namespace", etcdbackupv1.Stage_STAGE_UPLOADER, etcdbackupv1.Phase_PHASE_RUNNING))
	if d := dropped(); d[DropSlowClient] != 1 || d[DropInvalid] != 1 {
		t.Errorf("dropped %v, want one for the slow client and one invalid", d)
	}
	h.Leave(a)
	h.Leave(b)
	if h.Clients() != 0 {
		t.Errorf("%d clients after both left", h.Clients())
	}
}

// A browser joins a moment after its page was rendered: the events of its namespace since the
// render are handed to it first, in order, then the live ones; none from before, none of
// another namespace, none twice (the race that left a quick backup Running on the page).
func TestHubHandsAJoiningPageTheEventsSinceItsRender(t *testing.T) {
	h := NewHub(16, prometheus.NewRegistry())
	h.Publish(statusEvent("cluster-a", etcdbackupv1.Stage_STAGE_SNAPSHOTTER, etcdbackupv1.Phase_PHASE_FAILED))
	rendered := time.Now()
	h.Publish(statusEvent("cluster-a", etcdbackupv1.Stage_STAGE_SNAPSHOTTER, etcdbackupv1.Phase_PHASE_RUNNING))
	h.Publish(statusEvent("cluster-b", etcdbackupv1.Stage_STAGE_UPLOADER, etcdbackupv1.Phase_PHASE_COMPLETED))
	h.Publish(statusEvent("cluster-a", etcdbackupv1.Stage_STAGE_UPLOADER, etcdbackupv1.Phase_PHASE_COMPLETED))
	c := h.JoinSince("cluster-a", rendered)
	h.Publish(statusEvent("cluster-a", etcdbackupv1.Stage_STAGE_PRUNER, etcdbackupv1.Phase_PHASE_COMPLETED))
	var got []string
	for len(c.C) > 0 {
		var e Event
		if err := json.Unmarshal(<-c.C, &e); err != nil {
			t.Fatal(err)
		}
		got = append(got, e.Namespace+" "+e.Stage+" "+e.Phase)
	}
	want := []string{"cluster-a snapshotter running", "cluster-a uploader completed", "cluster-a pruner completed"}
	if !slices.Equal(got, want) {
		t.Fatalf("a page rendered before the last three events of its namespace got %q, want %q", got, want)
	}
	if late := h.JoinSince("cluster-a", time.Now().Add(time.Second)); len(late.C) != 0 {
		t.Fatalf("a page rendered after every event got %d of them", len(late.C))
	}
	if plain := h.Join("cluster-a"); len(plain.C) != 0 {
		t.Fatalf("Join without a render time got %d old events", len(plain.C))
	}
}

// The hub's one subscription, on a real in-process NATS: an event reaches the browsers of its
// namespace only from its own stage's subject; a forged one is dropped and counted.
func TestHubSubscriptionBelievesOnlyEachStagesOwnSubject(t *testing.T) {
	srv := natstest.RunJetStream(t)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	h := NewHub(8, prometheus.NewRegistry())
	dropped := h.droppedCounts
	if _, err := h.Subscribe(nc); err != nil {
		t.Fatal(err)
	}
	c := h.Join("cluster-a")
	defer h.Leave(c)
	send := func(subject string, ev *etcdbackupv1.StatusEvent) {
		t.Helper()
		data, ct, err := bus.Encode(ev, true)
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(subject)
		m.Data = data
		m.Header.Set(bus.HeaderContentType, ct)
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	forged := statusEvent("cluster-a", etcdbackupv1.Stage_STAGE_UPLOADER, etcdbackupv1.Phase_PHASE_COMPLETED)
	forged.BackupName = "forged"
	send("etcdbackup.status.snapshotter", forged)
	send("etcdbackup.status.uploader", statusEvent("cluster-a", etcdbackupv1.Stage_STAGE_UPLOADER,
		etcdbackupv1.Phase_PHASE_COMPLETED))
	if err := nc.Publish("etcdbackup.status.uploader", []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case data := <-c.C:
		if !strings.Contains(string(data), `"backupName":"daily-1"`) {
			t.Fatalf("the browser got %s, want the uploader's own event", data)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the uploader's event did not reach the browser")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := dropped()[DropWrongStage] + dropped()[DropUndecodable]
		if n == 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond) // polling for the hub to count both, not waiting for it
	}
	if d := dropped(); d[DropWrongStage] != 1 || d[DropUndecodable] != 1 || len(c.C) != 0 {
		t.Fatalf("dropped %v, %d more events for the browser; want the forged and the undecodable one dropped", d, len(c.C))
	}
}

func TestConfigFormChecksWhatTheSchedulerWould(t *testing.T) {
	for _, tc := range []struct {
		name  string
		form  url.Values
		sched string
		bad   []string
	}{
		{"the weekly preset", url.Values{"name": {"weekly"}, "preset": {"weekly"}, "keep": {"4"}, "destination": {"s3"}},
			"0 1 * * 0", nil},
		{"a custom @every", url.Values{"name": {"often"}, "preset": {"custom"}, "schedule": {"@every 20m"}, "keep": {"20"},
			"destination": {"s3"}}, "@every 20m", nil},
		{"a bad cron", url.Values{"name": {"x"}, "preset": {"custom"}, "schedule": {"61 * * * *"}, "keep": {"1"},
			"destination": {"s3"}}, "61 * * * *", []string{"schedule"}},
		{"an empty custom schedule", url.Values{"name": {"x"}, "preset": {"custom"}, "keep": {"1"}, "destination": {"s3"}},
			"", []string{"schedule"}},
		{"an unknown preset", url.Values{"name": {"x"}, "preset": {"hourly"}, "keep": {"1"}, "destination": {"s3"}}, "",
			[]string{"schedule"}},
		{"keep 0, a bad name, another destination", url.Values{"name": {"Bad_Name"}, "preset": {"daily"}, "keep": {"0"},
			"destination": {"elsewhere"}}, "0 1 * * *", []string{"name", "keep", "destination"}},
	} {
		f := configForm{Destinations: []string{"s3"}, Errors: map[string]string{}}
		f.read(tc.form)
		if f.Schedule != tc.sched {
			t.Errorf("%s: schedule %q, want %q", tc.name, f.Schedule, tc.sched)
		}
		if len(f.Errors) != len(tc.bad) {
			t.Errorf("%s: errors %v, want on %v", tc.name, f.Errors, tc.bad)
		}
		for _, field := range tc.bad {
			if f.Errors[field] == "" {
				t.Errorf("%s: no error on %s (%v)", tc.name, field, f.Errors)
			}
		}
	}
}

// testServer is the console on fake clients: the TokenReview knows one token, "alice", and
// the SubjectAccessReview allows alice namespace cluster-a only.
func testServer(t *testing.T, objs ...client.Object) (*Server, http.Handler, *k8sfake.Clientset) {
	t.Helper()
	kc := k8sfake.NewClientset()
	kc.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		tr := a.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenReview)
		if tr.Spec.Token == "alice" {
			tr.Status = authenticationv1.TokenReviewStatus{Authenticated: true,
				User: authenticationv1.UserInfo{Username: "alice"}}
		}
		return true, tr, nil
	})
	kc.PrependReactor("create", "subjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		sar := a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SubjectAccessReview)
		sar.Status.Allowed = sar.Spec.User == "alice" && sar.Spec.ResourceAttributes.Namespace == "cluster-a"
		return true, sar, nil
	})
	scheme, err := kube.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).WithStatusSubresource(
		&kubermaticv1.EtcdBackupConfig{}).Build()
	s := &Server{
		Log: slog.New(slog.DiscardHandler), Sessions: newSessions(t), Auth: NewAuthenticator(kc, time.Minute),
		Users:        func(string) (client.Client, error) { return c, nil },
		Destinations: func(context.Context) ([]string, string, error) { return []string{"archive", "s3"}, "s3", nil },
		Hub:          NewHub(8, prometheus.NewRegistry()), Heartbeat: 20 * time.Millisecond,
	}
	h, err := s.Handler(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return s, h, kc
}

func do(t *testing.T, h http.Handler, s *Server, method, target, token string,
	form url.Values) *httptest.ResponseRecorder {
	t.Helper()
	var body io.Reader
	if form != nil {
		if token != "" {
			form.Set("csrf", s.Sessions.CSRF("id-"+token))
		}
		body = strings.NewReader(form.Encode())
	}
	r := httptest.NewRequest(method, target, body)
	if form != nil {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if token != "" {
		r.AddCookie(cookieOf(t, s.Sessions, token))
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestPagesNeedASessionAndPostsTheirFormToken(t *testing.T) {
	s, h, _ := testServer(t)
	if w := do(t, h, s, http.MethodGet, "/clusters/a", "",
		nil); w.Code != http.StatusSeeOther || !strings.HasPrefix(w.Header().Get("Location"), "/login?next=") {
		t.Errorf("signed out: %d to %q", w.Code, w.Header().Get("Location"))
	}
	if w := do(t, h, s, http.MethodGet, "/clusters/a", "mallory", nil); w.Code != http.StatusSeeOther {
		t.Errorf("a token the API does not accept: %d", w.Code)
	}
	if w := do(t, h, s, http.MethodPost, "/login", "",
		url.Values{"token": {"mallory"}}); w.Code != http.StatusUnauthorized {
		t.Errorf("signing in with a bad token: %d", w.Code)
	}
	if w := do(t, h, s, http.MethodPost, "/login", "", url.Values{"token": {"alice"},
		"next": {"//evil.example"}}); w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/" ||
		len(w.Result().Cookies()) != 1 {
		t.Errorf("signing in: %d to %q", w.Code, w.Header().Get("Location"))
	}
	// A post without the session's form token is refused before anything is created.
	r := httptest.NewRequest(http.MethodPost, "/clusters/a/backups", strings.NewReader("destination=s3&csrf=forged"))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.AddCookie(cookieOf(t, s.Sessions, "alice"))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusForbidden {
		t.Errorf("a post with a forged form token: %d", w.Code)
	}
	if got := w.Header().Get("Content-Security-Policy"); !strings.Contains(got, "default-src 'self'") {
		t.Errorf("Content-Security-Policy %q", got)
	}
	// A sign-in posted from another site's page is refused (login CSRF); from this one it works.
	for origin, want := range map[string]int{"https://evil.example": http.StatusForbidden,
		"http://example.com": http.StatusSeeOther} {
		r := httptest.NewRequest(http.MethodPost, "/login", strings.NewReader("token=alice"))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.Header.Set("Origin", origin)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != want {
			t.Errorf("sign-in posted from %s: %d, want %d", origin, w.Code, want)
		}
	}
}

func TestOneTimeBackupAndRestoreAreCheckedAgainstTheAPI(t *testing.T) {
	cfg := &kubermaticv1.EtcdBackupConfig{ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-a", Name: "daily"},
		Spec: kubermaticv1.EtcdBackupConfigSpec{Cluster: clusterRef("a"), Schedule: "0 1 * * *"},
		Status: kubermaticv1.EtcdBackupConfigStatus{LastBackups: []kubermaticv1.BackupStatus{
			{BackupName: "daily-ok", BackupPhase: kubermaticv1.PhaseCompleted, Destination: "archive"},
			{BackupName: "daily-failed", BackupPhase: kubermaticv1.PhaseFailed},
		}}}
	s, h, _ := testServer(t, &kubermaticv1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: "a"}}, cfg)
	s.Now = func() time.Time { return time.Date(2026, 11, 29, 9, 30, 0, 0, time.UTC) }
	if w := do(t, h, s, http.MethodPost, "/clusters/a/backups", "alice",
		url.Values{"destination": {"nowhere"}}); w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(),
		"not one of the Seed") {
		t.Errorf("a one-time backup to an unknown destination: %d", w.Code)
	}
	w := do(t, h, s, http.MethodPost, "/clusters/a/backups", "alice", url.Values{"destination": {"archive"}})
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/clusters/a/configs/snapshot-20261129-093000" {
		t.Fatalf("a one-time backup: %d to %q\n%s", w.Code, w.Header().Get("Location"), w.Body.String())
	}
	c, _ := s.Users("alice")
	var snap kubermaticv1.EtcdBackupConfig
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: "cluster-a", Name: "snapshot-20261129-093000"},
		&snap); err != nil || snap.Spec.Schedule != "" || snap.Spec.Destination != "archive" ||
		snap.Spec.Cluster.Name != "a" {
		t.Fatalf("one-time config %+v, %v", snap.Spec, err)
	}
	for _, tc := range []struct {
		name string
		form url.Values
		code int
		says string
	}{
		{"a failed backup", url.Values{"config": {"daily"}, "backup": {"daily-failed"}, "confirm": {"a"}},
			http.StatusBadRequest, "only a Completed backup"},
		{"a backup the config does not list", url.Values{"config": {"daily"}, "backup": {"daily-gone"}, "confirm": {"a"}},
			http.StatusBadRequest, "has no backup"},
		{"a mistyped cluster", url.Values{"config": {"daily"}, "backup": {"daily-ok"}, "confirm": {"b"}},
			http.StatusUnprocessableEntity, "Type a, the name"},
	} {
		if w := do(t, h, s, http.MethodPost, "/clusters/a/restores", "alice",
			tc.form); w.Code != tc.code || !strings.Contains(w.Body.String(), tc.says) {
			t.Errorf("%s: %d, want %d saying %q\n%s", tc.name, w.Code, tc.code, tc.says, w.Body.String())
		}
	}
	var restores kubermaticv1.EtcdRestoreList
	if err := c.List(context.Background(), &restores); err != nil || len(restores.Items) != 0 {
		t.Fatalf("refused restores created %d restores (%v)", len(restores.Items), err)
	}
	if w := do(t, h, s, http.MethodPost, "/clusters/a/restores", "alice", url.Values{"config": {"daily"},
		"backup": {"daily-ok"}, "confirm": {"a"}}); w.Code != http.StatusSeeOther {
		t.Fatalf("a confirmed restore: %d\n%s", w.Code, w.Body.String())
	}
	if err := c.List(context.Background(), &restores); err != nil || len(restores.Items) != 1 {
		t.Fatalf("%d restores (%v)", len(restores.Items), err)
	}
	if rs := restores.Items[0]; rs.Spec.BackupName != "daily-ok" || rs.Spec.Destination != "archive" ||
		rs.Spec.Cluster.Name != "a" || rs.Namespace != "cluster-a" {
		t.Errorf("restore %s/%s: %+v", rs.Namespace, rs.Name, rs.Spec)
	}
}

// A continuous config's page shows its restorable window and a form for a time; the restore
// created names the config and carries the target, and a config without a journal, a target
// that is no time or another cluster's config are refused before anything is created.
func TestPointInTimeRestoreFromTheConsole(t *testing.T) {
	window := "restorable from 2026-12-05T09:00:00Z to 2026-12-05T14:03:12Z (revisions 120 to 9041)"
	continuous := &kubermaticv1.EtcdBackupConfig{ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-a", Name: "daily"},
		Spec: kubermaticv1.EtcdBackupConfigSpec{Cluster: clusterRef("a"), Schedule: "0 1 * * *",
			Destination: "archive"},
		Status: kubermaticv1.EtcdBackupConfigStatus{Conditions: map[string]kubermaticv1.EtcdBackupConfigCondition{
			kubermaticv1.ConditionContinuousBackup: {Status: "True", Reason: kubermaticv1.ReasonRestorable,
				Message: window}}}}
	plain := &kubermaticv1.EtcdBackupConfig{ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-a", Name: "weekly"},
		Spec: kubermaticv1.EtcdBackupConfigSpec{Cluster: clusterRef("a"), Schedule: "0 1 * * 0"}}
	other := &kubermaticv1.EtcdBackupConfig{ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-a", Name: "stray"},
		Spec:   kubermaticv1.EtcdBackupConfigSpec{Cluster: clusterRef("b"), Schedule: "0 1 * * *"},
		Status: continuous.Status}
	s, h, _ := testServer(t, &kubermaticv1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: "a"}}, continuous, plain, other)

	page := do(t, h, s, http.MethodGet, "/clusters/a/configs/daily", "alice", nil)
	shown := `id="pit-window" data-section="pit-window" data-status="True">` + window
	if page.Code != http.StatusOK || !strings.Contains(page.Body.String(), shown) ||
		!strings.Contains(page.Body.String(), `id="restore-to"`) {
		t.Fatalf("the continuous config's page: %d, want its window and a time field\n%s", page.Code, page.Body.String())
	}
	if page := do(t, h, s, http.MethodGet, "/clusters/a/configs/weekly", "alice", nil); page.Code != http.StatusOK ||
		strings.Contains(page.Body.String(), `id="pit-form"`) {
		t.Errorf("a config without a journal offers a point-in-time restore: %d", page.Code)
	}
	confirm := do(t, h, s, http.MethodGet, "/clusters/a/restore?config=daily&to=2026-12-05T14:03:11Z", "alice", nil)
	if confirm.Code != http.StatusOK || !strings.Contains(confirm.Body.String(), "<b>2026-12-05T14:03:11Z</b>") ||
		!strings.Contains(confirm.Body.String(), window) ||
		!strings.Contains(confirm.Body.String(), `name="to" value="2026-12-05T14:03:11Z"`) {
		t.Fatalf("the confirmation of a point-in-time restore: %d\n%s", confirm.Code, confirm.Body.String())
	}
	for _, tc := range []struct {
		name string
		form url.Values
		code int
		says string
	}{
		{"a config without a journal", url.Values{"config": {"weekly"}, "to": {"2026-12-05T14:03:11Z"},
			"confirm": {"a"}}, http.StatusBadRequest, "has no continuous backup"},
		{"a target that is no time", url.Values{"config": {"daily"}, "to": {"yesterday at two"}, "confirm": {"a"}},
			http.StatusBadRequest, "neither an RFC 3339 time"},
		{"a revision that is none", url.Values{"config": {"daily"}, "to": {"revision:-3"}, "confirm": {"a"}},
			http.StatusBadRequest, "n a positive integer"},
		{"another cluster's config", url.Values{"config": {"stray"}, "to": {"2026-12-05T14:03:11Z"},
			"confirm": {"a"}}, http.StatusBadRequest, "is for cluster b, not a"},
		{"a mistyped cluster", url.Values{"config": {"daily"}, "to": {"2026-12-05T14:03:11Z"}, "confirm": {"b"}},
			http.StatusUnprocessableEntity, "Type a, the name"},
	} {
		if w := do(t, h, s, http.MethodPost, "/clusters/a/restores", "alice",
			tc.form); w.Code != tc.code || !strings.Contains(w.Body.String(), tc.says) {
			t.Errorf("%s: %d, want %d saying %q\n%s", tc.name, w.Code, tc.code, tc.says, w.Body.String())
		}
	}
	c, _ := s.Users("alice")
	var restores kubermaticv1.EtcdRestoreList
	if err := c.List(context.Background(), &restores); err != nil || len(restores.Items) != 0 {
		t.Fatalf("refused restores created %d restores (%v)", len(restores.Items), err)
	}
	if w := do(t, h, s, http.MethodPost, "/clusters/a/restores", "alice", url.Values{"config": {"daily"},
		"to": {" revision:9000 "}, "confirm": {"a"}}); w.Code != http.StatusSeeOther {
		t.Fatalf("a confirmed point-in-time restore: %d\n%s", w.Code, w.Body.String())
	}
	if err := c.List(context.Background(), &restores); err != nil || len(restores.Items) != 1 {
		t.Fatalf("%d restores (%v)", len(restores.Items), err)
	}
	if rs := restores.Items[0]; rs.Spec.BackupName != "daily" || rs.Spec.Destination != "archive" ||
		rs.Spec.Cluster.Name != "a" || rs.Annotations[kubermaticv1.AnnotationRestoreTo] != "revision:9000" {
		t.Errorf("restore %s/%s: %+v %v", rs.Namespace, rs.Name, rs.Spec, rs.Annotations)
	}
}

// The event stream: only for a namespace the user may get configs in, with the hub's events
// of that namespace, and the browser leaves the hub when the request ends.
func TestEventStreamFollowsAccess(t *testing.T) {
	s, h, _ := testServer(t)
	if w := do(t, h, s, http.MethodGet, "/events?namespace=cluster-b", "alice", nil); w.Code != http.StatusForbidden {
		t.Errorf("another namespace's events: %d", w.Code)
	}
	if w := do(t, h, s, http.MethodGet, "/events?namespace=../x", "alice", nil); w.Code != http.StatusBadRequest {
		t.Errorf("a bad namespace: %d", w.Code)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/events?namespace=cluster-a", nil)
	req.AddCookie(cookieOf(t, s.Sessions, "alice"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Hub.Clients() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond) // polling for the browser to join, not waiting for it
	}
	s.Hub.Publish(statusEvent("cluster-b", etcdbackupv1.Stage_STAGE_UPLOADER, etcdbackupv1.Phase_PHASE_COMPLETED))
	s.Hub.Publish(statusEvent("cluster-a", etcdbackupv1.Stage_STAGE_UPLOADER, etcdbackupv1.Phase_PHASE_COMPLETED))
	buf := make([]byte, 0, 4096)
	for !strings.Contains(string(buf), "event: status") && time.Now().Before(deadline) {
		chunk := make([]byte, 1024)
		n, err := resp.Body.Read(chunk)
		buf = append(buf, chunk[:n]...)
		if err != nil {
			break
		}
	}
	got := string(buf)
	if !strings.Contains(got, `"namespace":"cluster-a"`) || strings.Contains(got, "cluster-b") {
		t.Fatalf("stream of cluster-a carried:\n%s", got)
	}
	resp.Body.Close()
	cancel()
	for s.Hub.Clients() != 0 && time.Now().Before(deadline.Add(5*time.Second)) {
		time.Sleep(5 * time.Millisecond) // polling for the closed stream to leave
	}
	if n := s.Hub.Clients(); n != 0 {
		t.Errorf("%d browsers in the hub after the stream closed", n)
	}
}

// Editing changes the spec's schedule, keep and destination and nothing else; the edit form
// shows a preset schedule as its preset.
func TestEditConfigUpdatesTheSpec(t *testing.T) {
	keep := 20
	cfg := &kubermaticv1.EtcdBackupConfig{ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-a", Name: "daily",
		Labels: map[string]string{"team": "x"}},
		Spec: kubermaticv1.EtcdBackupConfigSpec{Cluster: clusterRef("a"), Schedule: "0 1 * * 0", Keep: &keep,
			Destination: "s3"}}
	s, h, _ := testServer(t, &kubermaticv1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: "a"}}, cfg)
	w := do(t, h, s, http.MethodGet, "/clusters/a/configs/daily/edit", "alice", nil)
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(),
		`value="weekly" id="preset-weekly" data-schedule="0 1 * * 0" data-keep="4" checked`) {
		t.Fatalf("edit form: %d\n%s", w.Code, w.Body.String())
	}
	if w := do(t, h, s, http.MethodPost, "/clusters/a/configs/daily", "alice", url.Values{"preset": {"custom"},
		"schedule": {"@every 1h"}, "keep": {"0"},
		"destination": {"archive"}}); w.Code != http.StatusUnprocessableEntity || !strings.Contains(w.Body.String(),
		`id="keep-error"`) {
		t.Fatalf("keep 0: %d", w.Code)
	}
	if w := do(t, h, s, http.MethodPost, "/clusters/a/configs/daily", "alice", url.Values{"preset": {"custom"},
		"schedule": {"@every 1h"}, "keep": {"3"}, "destination": {"archive"}}); w.Code != http.StatusSeeOther {
		t.Fatalf("edit: %d\n%s", w.Code, w.Body.String())
	}
	c, _ := s.Users("alice")
	var got kubermaticv1.EtcdBackupConfig
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(cfg), &got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.Schedule != "@every 1h" || *got.Spec.Keep != 3 || got.Spec.Destination != "archive" ||
		got.Spec.Cluster.Name != "a" || got.Labels["team"] != "x" {
		t.Errorf("after the edit: %+v, labels %v", got.Spec, got.Labels)
	}
	// A config of another cluster is not edited through this one's path.
	if w := do(t, h, s, http.MethodGet, "/clusters/b/configs/daily/edit", "alice", nil); w.Code == http.StatusOK {
		t.Errorf("editing cluster a's config under cluster b: %d", w.Code)
	}
}

// droppedCounts is how many events the hub dropped, by reason.
func (h *Hub) droppedCounts() map[string]int {
	out := map[string]int{}
	for _, r := range []string{DropSlowClient, DropUndecodable, DropWrongStage, DropInvalid} {
		out[r] = int(testutil.ToFloat64(h.dropped.WithLabelValues(r)))
	}
	return out
}

// A config's page says what keeps each backup: keep's newest, and each tier of its tiered
// retention; an annotation that does not parse is shown, with what it means.
func TestConfigPageShowsWhatEachTierKeeps(t *testing.T) {
	hour := time.Now().UTC().Truncate(time.Hour) // the current hour's start
	entry := func(at time.Time) kubermaticv1.BackupStatus {
		return kubermaticv1.BackupStatus{BackupName: "daily-" + at.Format("2006-01-02T15:04:05"),
			ScheduledTime: metav1.NewTime(at), BackupPhase: kubermaticv1.PhaseCompleted}
	}
	var entries []kubermaticv1.BackupStatus
	for i := range 6 { // every 30 minutes from the current hour's start back
		entries = append(entries, entry(hour.Add(-time.Duration(i)*30*time.Minute)))
	}
	keep := 1
	cfg := &kubermaticv1.EtcdBackupConfig{ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-a", Name: "daily",
		Annotations: map[string]string{kubermaticv1.AnnotationRetention: "hourly=2"}},
		Spec:   kubermaticv1.EtcdBackupConfigSpec{Cluster: clusterRef("a"), Schedule: "*/30 * * * *", Keep: &keep},
		Status: kubermaticv1.EtcdBackupConfigStatus{LastBackups: entries}}
	bad := cfg.DeepCopy()
	bad.Name, bad.Annotations = "weekly", map[string]string{kubermaticv1.AnnotationRetention: "yearly=2"}
	s, h, _ := testServer(t, &kubermaticv1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: "a"}}, cfg, bad)

	page := do(t, h, s, http.MethodGet, "/clusters/a/configs/daily", "alice", nil)
	body := page.Body.String()
	if page.Code != http.StatusOK || !strings.Contains(body, `retention <code id="retention">hourly=2</code>`) {
		t.Fatalf("the page: %d, want the retention shown\n%s", page.Code, body)
	}
	// The newest is kept by keep and the hourly tier (it is its hour's newest); the newest of the
	// hour before by the hourly tier; the others by nothing.
	for i, want := range []string{"keep, hourly", "hourly", "", "", "", ""} {
		row := `<tr data-backup="` + entries[i].BackupName + `"`
		at := strings.Index(body, row)
		if at < 0 {
			t.Fatalf("no row for %s", entries[i].BackupName)
		}
		if cell := `<td class="kept-by">` + want + `</td>`; !strings.Contains(body[at:at+600], cell) {
			t.Errorf("%s: want %s\n%s", entries[i].BackupName, cell, body[at:at+600])
		}
	}
	page = do(t, h, s, http.MethodGet, "/clusters/a/configs/weekly", "alice", nil)
	if !strings.Contains(page.Body.String(), `id="retention-error"`) ||
		!strings.Contains(page.Body.String(), `&#34;yearly&#34; is not a tier`) {
		t.Errorf("a config whose retention does not parse: the page does not say so\n%s", page.Body.String())
	}
}

// Who may list DeletedBackupSets (the Seed's operators) sees the backups of deleted configs
// with their expiry on the clusters page; who may not sees no such section.
func TestClustersPageListsTheBackupsOfDeletedConfigs(t *testing.T) {
	expires := time.Date(2026, 12, 13, 10, 0, 0, 0, time.UTC)
	set := &backupv1.DeletedBackupSet{ObjectMeta: metav1.ObjectMeta{Name: "cluster-a.daily.12345678"},
		Spec: backupv1.DeletedBackupSetSpec{Namespace: "cluster-a", Config: "daily", Cluster: "a",
			DeletedAt: metav1.NewTime(expires.Add(-7 * 24 * time.Hour)), Expires: metav1.NewTime(expires),
			Backups: []backupv1.DeletedBackup{{Name: "daily-2026-12-06T01:00:00"}, {Name: "daily-2026-12-05T01:00:00"}}}}
	s, h, _ := testServer(t, set)
	body := do(t, h, s, http.MethodGet, "/", "alice", nil).Body.String()
	at := strings.Index(body, `data-deleted-set="cluster-a.daily.12345678"`)
	if at < 0 || !strings.Contains(body, `id="deleted-backups"`) {
		t.Fatalf("no row for the deleted config's backups\n%s", body)
	}
	row := body[at:min(len(body), at+800)]
	for _, want := range []string{"daily-2026-12-06T01:00:00", "<td>2</td>",
		`<td class="expires">2026-12-13 10:00:00 UTC</td>`} {
		if !strings.Contains(row, want) {
			t.Errorf("the row does not show %q\n%s", want, row)
		}
	}

	scheme, err := kube.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	forbidden := fake.NewClientBuilder().WithScheme(scheme).WithInterceptorFuncs(interceptor.Funcs{
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			if _, ok := list.(*backupv1.DeletedBackupSetList); ok {
				return apierrors.NewForbidden(schema.GroupResource{Group: "etcdbackup.k8c.io",
					Resource: "deletedbackupsets"}, "", errors.New("alice may not"))
			}
			return c.List(ctx, list, opts...)
		}}).Build()
	s.Users = func(string) (client.Client, error) { return forbidden, nil }
	page := do(t, h, s, http.MethodGet, "/", "alice", nil)
	if page.Code != http.StatusOK || strings.Contains(page.Body.String(), `id="deleted-backups"`) {
		t.Errorf("a user who may not list the sets: %d, and the section shown", page.Code)
	}
}

// A restore's page offers to undo it from the backup taken just before it; the link opens the
// usual confirmation of a restore of that backup.
func TestRestorePageOffersTheUndo(t *testing.T) {
	const backup = "pre-restore-wrong-2026-12-06T11:00:00"
	cfg := &kubermaticv1.EtcdBackupConfig{ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-a",
		Name: kubermaticv1.PreRestoreConfig("wrong")}, Spec: kubermaticv1.EtcdBackupConfigSpec{Cluster: clusterRef("a")},
		Status: kubermaticv1.EtcdBackupConfigStatus{LastBackups: []kubermaticv1.BackupStatus{{BackupName: backup,
			BackupPhase: kubermaticv1.PhaseCompleted}}}}
	rs := &kubermaticv1.EtcdRestore{ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-a", Name: "wrong"},
		Spec:   kubermaticv1.EtcdRestoreSpec{Cluster: clusterRef("a"), BackupName: "daily-2026-12-01T01:00:00"},
		Status: kubermaticv1.EtcdRestoreStatus{Phase: kubermaticv1.RestorePhaseCompleted, PreRestoreBackup: backup}}
	skipped := rs.DeepCopy()
	skipped.Name, skipped.Status.PreRestoreBackup, skipped.Status.PreRestoreSkipped = "rescue", "", "etcd is not healthy"
	s, h, _ := testServer(t, &kubermaticv1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: "a"}}, cfg, rs, skipped)
	body := do(t, h, s, http.MethodGet, "/clusters/a/restores/wrong", "alice", nil).Body.String()
	undo := "/clusters/a/restore?config=pre-restore-wrong&amp;backup=" + strings.ReplaceAll(backup, ":", "%3a")
	if !strings.Contains(body, `id="pre-restore"`) || !strings.Contains(body, undo) {
		t.Fatalf("no undo link %s\n%s", undo, body)
	}
	if page := do(t, h, s, http.MethodGet, strings.ReplaceAll(undo, "&amp;", "&"), "alice", nil); page.Code !=
		http.StatusOK || !strings.Contains(page.Body.String(), backup) {
		t.Errorf("the undo link: %d\n%s", page.Code, page.Body.String())
	}
	body = do(t, h, s, http.MethodGet, "/clusters/a/restores/rescue", "alice", nil).Body.String()
	if !strings.Contains(body, `id="pre-restore-skipped"`) || !strings.Contains(body, "etcd is not healthy") {
		t.Errorf("a restore without a pre-restore backup does not say why\n%s", body)
	}
}
