package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/e2e/sandbox"
	"github.com/etcd-backup/etcdbackup/pkg/bus"
	etcdbackupv1 "github.com/etcd-backup/etcdbackup/proto/etcdbackup/v1"
	"github.com/nats-io/nats.go"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// chromiumPath is Debian's Chromium (make test installs it: hack/chromium.sh), or
// $ETCDBACKUP_CHROMIUM.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, c := range []string{os.Getenv("ETCDBACKUP_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if c == "" {
			continue
		}
		if p, err := exec.LookPath(c); err == nil {
			return p
		}
	}
	t.Fatal("chromium is missing: install the Debian package chromium (make test does, as root) or set " +
		"ETCDBACKUP_CHROMIUM")
	return ""
}

// browser starts headless Chromium with a fresh profile; the flags keep it off the network
// it cannot reach here. extra adds flags.
func browser(t *testing.T, ctx context.Context, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(1280, 900),
	)
	opts = append(opts, extra...)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	bctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return bctx
}

// consoleUser makes a user of one cluster: a ServiceAccount (its token is the bearer token
// signed in with) that may manage backups and restores in the cluster's namespace and read
// that one Cluster — the rights KKP gives a project's members.
func consoleUser(t *testing.T, ctx context.Context, name, cluster string) string {
	t.Helper()
	const ns = "console-users"
	if err := env.Client.Create(ctx,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if err := env.Client.Create(ctx, sa); err != nil {
		t.Fatal(err)
	}
	if err := env.GrantClusterUser(ctx, "console-test-"+name, rbacv1.Subject{Kind: rbacv1.ServiceAccountKind,
		Namespace: ns, Name: name}, cluster); err != nil {
		t.Fatal(err)
	}
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(3600))}}
	if err := env.Client.SubResource("token").Create(ctx, sa, tr); err != nil {
		t.Fatal(err)
	}
	return tr.Status.Token
}

// page drives one browser tab against the console.
type page struct {
	t    *testing.T
	ctx  context.Context
	base string
	// shots is where screenshots go: $ETCDBACKUP_SCREENSHOTS (make screenshots: docs/console),
	// else the test's temp dir.
	shots   string
	weights []pageWeight
}

// pageWeight is what one page cost the browser, from the Navigation and Paint Timing APIs.
type pageWeight struct {
	Path       string  `json:"path"`
	HTML       int     `json:"html"`
	Total      int     `json:"total"`
	FirstPaint float64 `json:"fcp"`
	Loaded     float64 `json:"loaded"`
}

func (p *page) run(steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	if err := chromedp.Do(p.ctx, steps...); err != nil {
		p.t.Fatalf("browser: %v\n%s", err, p.text("body"))
	}
}

// css is a CSS selector.
func css(sel string) chromedp.CSS { return chromedp.CSS(sel) }

// open navigates to path and waits for its heading.
func (p *page) open(path string) {
	p.t.Helper()
	p.run(chromedp.Navigate(p.base+path), chromedp.WaitVisible(css("h1")))
	p.measure()
}

// measure records the weight and first paint of the page just loaded, and checks that every
// control of the page has a label.
func (p *page) measure() {
	p.t.Helper()
	const controlsWithoutLabel = `[...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]
		.filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
			&& !(e.tagName === 'BUTTON' && e.textContent.trim()))
		.map(e => e.outerHTML)`
	if unlabelled := evalJS[[]string](p, controlsWithoutLabel); len(unlabelled) > 0 {
		p.t.Errorf("%s: controls without a label: %v", p.text("h1"), unlabelled)
	}
	p.weights = append(p.weights, evalJS[pageWeight](p, `(() => {
		const n = performance.getEntriesByType('navigation')[0];
		const res = performance.getEntriesByType('resource');
		const fcp = performance.getEntriesByName('first-contentful-paint')[0];
		return {path: location.pathname, html: n.decodedBodySize,
			total: n.decodedBodySize + res.reduce((a, r) => a + r.decodedBodySize, 0),
			fcp: fcp ? fcp.startTime : -1, loaded: n.loadEventEnd};
	})()`))
}

// text is the text of the first element sel matches, "" if none (it does not wait).
func (p *page) text(sel string) string {
	s, _ := chromedp.Run(p.ctx,
		chromedp.Evaluate[string](fmt.Sprintf(`(document.querySelector(%q) || {}).innerText || ''`, sel)))
	return s
}

// evalJS evaluates a JavaScript expression in the page.
func evalJS[T any](p *page, js string, opts ...chromedp.EvaluateOption) T {
	p.t.Helper()
	v, err := chromedp.Run(p.ctx, chromedp.Evaluate[T](js, opts...))
	if err != nil {
		p.t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

// waitFor polls a JavaScript condition in the page (no reload) until it is true.
func (p *page) waitFor(what, js string, timeout time.Duration) {
	p.t.Helper()
	err := sandbox.Poll(p.ctx, timeout, 50*time.Millisecond, func() (bool, error) {
		ok, err := chromedp.Run(p.ctx, chromedp.Evaluate[bool](js))
		if err != nil {
			return false, err
		}
		return ok, fmt.Errorf("not yet")
	})
	if err != nil {
		p.t.Fatalf("waiting for %s: %v\npage: %s", what, err, p.text("main"))
	}
}

func (p *page) shot(name string) {
	p.t.Helper()
	png, err := chromedp.Run(p.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p.shots, name+".png"), png, 0o644); err != nil {
		p.t.Fatal(err)
	}
}

func (p *page) signIn(token string) {
	p.t.Helper()
	p.open("/login")
	p.run(chromedp.SendKeys(css("#token"), token), chromedp.Click(css("#sign-in")),
		chromedp.WaitVisible(css("header .user")))
}

func (p *page) signOut() {
	p.t.Helper()
	p.run(chromedp.Click(css("header form button")), chromedp.WaitVisible(css("#token")))
}

// status is the HTTP status of a GET from inside the page (with its session cookie).
func (p *page) status(path string) int {
	p.t.Helper()
	return evalJS[int](p,
		fmt.Sprintf(`fetch(%q, {credentials: 'same-origin'})
			.then(r => { const c = r.status; if (r.body) r.body.cancel(); return c; })`, path), chromedp.EvalAwaitPromise)
}

// The seed document's flows in a real browser: a project member signs in with their token,
// adds a weekly backup, is refused a bad cron next to the field, takes a one-time backup and
// watches it turn Completed live, restores the cluster from it and watches the phases live;
// they cannot see or change another member's cluster, which the API server refuses in its
// own words, and that member cannot see theirs.
func TestConsoleFlowsInABrowser(t *testing.T) {
	ctx := testContext(t, 6*time.Minute)
	dumpLogsOnFailure(t)
	consoles := env.ServicesOf("console")
	if len(consoles) == 0 {
		t.Fatal("no console runs in the sandbox")
	}
	const mine, theirs = "console-a", "console-b"
	k, _ := startEtcdCluster(t, ctx, mine, nil)
	mustAddCluster(t, ctx, theirs, env.DemoEtcd.Endpoint)
	alice := consoleUser(t, ctx, "alice", mine)
	bob := consoleUser(t, ctx, "bob", theirs)

	shots := os.Getenv("ETCDBACKUP_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	}
	p := &page{t: t, ctx: browser(t, ctx), base: consoles[0].URL, shots: shots}

	// Signed out, every page leads to the sign-in; a token the API server refuses is refused.
	p.open("/clusters/" + mine)
	if !strings.HasPrefix(p.text("h1"), "Sign in") {
		t.Fatalf("a signed-out visit shows %q, want the sign-in", p.text("h1"))
	}
	p.run(chromedp.SendKeys(css("#token"), "not-a-token"), chromedp.Click(css("#sign-in")),
		chromedp.WaitVisible(css("#page-error")))
	if msg := p.text("#page-error"); !strings.Contains(msg, "does not accept") {
		t.Errorf("a bad token says %q", msg)
	}
	p.shot("sign-in")

	// Alice may not list Clusters: the page says so and opens hers by name.
	p.signIn(alice)
	p.open("/")
	if note := p.text("#clusters-forbidden"); !strings.Contains(note, "forbidden") {
		t.Errorf("the clusters page for a user who may not list them says %q", note)
	}
	p.run(chromedp.SendKeys(css("#open-cluster"), mine), chromedp.Submit(css("#open-cluster")),
		chromedp.WaitVisible(css("#add-config")))
	p.measure()
	p.shot("cluster")

	// Add an automatic backup with the weekly preset.
	p.run(chromedp.Click(css("#add-config")), chromedp.WaitVisible(css("#config-form")))
	p.measure()
	p.run(chromedp.Click(css("#preset-weekly")), chromedp.SendKeys(css("#name"), "weekly"))
	sched, keep := evalJS[string](p, `document.querySelector('#schedule').value`), evalJS[string](p,
		`document.querySelector('#keep').value`)
	if sched != "0 1 * * 0" || keep != "4" {
		t.Errorf("the weekly preset filled schedule %q and keep %q", sched, keep)
	}
	p.shot("add-backup-weekly")
	p.run(chromedp.Click(css("#save-config")), chromedp.WaitVisible(css("#backups-h")))
	var weekly kubermaticv1.EtcdBackupConfig
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "cluster-" + mine, Name: "weekly"}, &weekly); err != nil {
		t.Fatalf("the weekly config was not created: %v", err)
	}
	if weekly.Spec.Schedule != "0 1 * * 0" || weekly.Spec.Keep == nil || *weekly.Spec.Keep != 4 ||
		weekly.Spec.Destination != sandbox.Destination || weekly.Spec.Cluster.Name != mine {
		t.Errorf("the weekly config's spec: %+v", weekly.Spec)
	}

	// A bad cron is refused next to its field, and nothing is created.
	p.open("/clusters/" + mine + "/configs/new")
	p.run(chromedp.SendKeys(css("#name"), "bad-cron"), chromedp.Click(css("#preset-custom")),
		chromedp.SetValue(css("#schedule"), "61 * * * *"), chromedp.Click(css("#save-config")),
		chromedp.WaitVisible(css("#schedule-error")))
	if msg := p.text("#schedule-error"); !strings.Contains(msg, "Not a schedule") || !strings.Contains(msg, "61") {
		t.Errorf("the bad cron's field error says %q", msg)
	}
	if invalid := evalJS[string](p,
		`document.querySelector('#schedule').getAttribute('aria-invalid') || ''`); invalid != "true" {
		t.Errorf("the schedule field is not marked invalid (aria-invalid %q)", invalid)
	}
	p.shot("bad-cron")
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "cluster-" + mine, Name: "bad-cron"},
		&kubermaticv1.EtcdBackupConfig{}); !apierrors.IsNotFound(err) {
		t.Errorf("a config with a bad cron was created: %v", err)
	}

	// A one-time backup: it appears and turns Completed on the open page, without a reload.
	// The delay from the status event on the bus to the page is measured here.
	completedAt := make(chan time.Time, 16)
	var watched sync.Map // backup name -> when its Completed event arrived
	nc, err := env.NATSClient(bus.IdentityWatcher)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sub, err := nc.Subscribe(bus.SubjectStatusAll, func(m *nats.Msg) {
		var ev etcdbackupv1.StatusEvent
		if bus.Decode(m.Data, m.Header.Get(bus.HeaderContentType),
			&ev) == nil && ev.GetPhase() == etcdbackupv1.Phase_PHASE_COMPLETED &&
			ev.GetStage() == etcdbackupv1.Stage_STAGE_UPLOADER && ev.GetConfig().GetNamespace() == "cluster-"+mine {
			watched.Store(ev.GetBackupName(), time.Now())
			completedAt <- time.Now()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	p.open("/clusters/" + mine)
	p.run(chromedp.Click(css("#take-backup")), chromedp.WaitVisible(css("#backups-h")))
	p.measure()
	evalJS[string](p, `window.__sameDocument = 'yes'`)
	oneTime := evalJS[string](p, `location.pathname.split('/').pop()`)
	if !strings.HasPrefix(oneTime, "snapshot-") {
		t.Fatalf("the one-time backup went to %q", oneTime)
	}
	p.waitFor("the backup to turn Completed live",
		`(() => { const r = document.querySelector('tr[data-backup] .phase');
			return !!r && r.textContent.trim() === 'Completed'; })()`, 90*time.Second)
	same := evalJS[string](p, `window.__sameDocument || 'reloaded'`)
	if same != "yes" {
		t.Error("the page reloaded to show the backup: it should update in place")
	}
	backupName := evalJS[string](p, `document.querySelector('tr[data-backup]').dataset.backup`)
	updatedAt := evalJS[int64](p, `Number(document.querySelector('tr[data-backup]').dataset.updatedAt || 0)`)
	arrived, ok := watched.Load(backupName)
	if !ok || updatedAt == 0 {
		t.Errorf("backup %s: Completed seen on the bus %v, on the page at %d", backupName, ok, updatedAt)
	} else {
		delay := time.UnixMilli(updatedAt).Sub(arrived.(time.Time))
		t.Logf("status event to browser: %s (bus arrival to the row's update)", delay)
	}
	var cfg kubermaticv1.EtcdBackupConfig
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "cluster-" + mine, Name: oneTime},
		&cfg); err != nil || cfg.Spec.Schedule != "" || cfg.Spec.Keep != nil {
		t.Errorf("the one-time backup's config: %+v, %v (want no schedule and no keep)", cfg.Spec, err)
	}
	// The timeline draws the backup: a bar of its stored size, whose title says it.
	p.waitFor("the timeline's bar of the backup", fmt.Sprintf(`(() => {
		const bar = document.querySelector('#timeline rect.backup[data-backup=' + CSS.escape(%q) + ']');
		return !!bar && Number(bar.dataset.size) > 0 && bar.querySelector('title').textContent.includes('stored');
	})()`, backupName), 30*time.Second)
	p.shot("one-time-backup-completed")

	// Restore from it. A typo in the confirmation is refused; the phases show live.
	k.HoldSteps()
	released := false
	defer func() {
		if !released {
			k.ReleaseSteps()
		}
	}()
	p.run(chromedp.Click(css(`tr[data-backup] a.button`)), chromedp.WaitVisible(css("#restore-form")))
	p.measure()
	p.run(chromedp.SendKeys(css("#confirm"), "console-x"), chromedp.Click(css("#start-restore")),
		chromedp.WaitVisible(css("#confirm-error")))
	var restores kubermaticv1.EtcdRestoreList
	if err := env.Client.List(ctx, &restores,
		client.InNamespace("cluster-"+mine)); err != nil || len(restores.Items) != 0 {
		t.Fatalf("a mistyped confirmation created restores: %d, %v", len(restores.Items), err)
	}
	p.shot("restore-confirm")
	// By keyboard alone: the cluster's name, then Enter.
	evalJS[string](p, `document.querySelector('#confirm').value = ''`)
	p.run(chromedp.SendKeys(css("#confirm"), mine+"\r"), chromedp.WaitVisible(css("#restore-phase")))
	p.measure()
	evalJS[string](p, `window.__sameDocument = 'yes'`)
	p.waitFor("the restore rebuilding, with each member's download",
		`(() => document.querySelector('#restore-phase').textContent.trim() === 'StsRebuilding'
			&& /fetched etcd-0 .*, etcd-1 .*, etcd-2 \d+ of \d+ K?i?B/
				.test(document.querySelector('#restore-progress').textContent))()`,
		2*time.Minute)
	if v := evalJS[[]float64](p, `(() => { const b = document.querySelector('#restore-bar');
		return b ? [b.value, b.max] : []; })()`); len(v) != 2 || v[1] <= 0 || v[0] > v[1] {
		t.Errorf("the restore's progress bar: %v, want a value of a positive max", v)
	}
	p.shot("restore-rebuilding")
	k.ReleaseSteps()
	released = true
	p.waitFor("the restore Completed", `document.querySelector('#restore-phase').textContent.trim() === 'Completed'`,
		2*time.Minute)
	// The final progress comes from status, which the page fetches again after the event.
	p.waitFor("the restore's final progress",
		`document.querySelector('#restore-progress').textContent.trim() === 'done: members restored 3/3'`, 30*time.Second)
	same = evalJS[string](p, `window.__sameDocument || 'reloaded'`)
	if same != "yes" {
		t.Error("the restore page reloaded: it should follow the phases in place")
	}
	seen := evalJS[[]string](p, `[...document.querySelectorAll('#phase-log li')].map(li => li.dataset.phase)`)
	if i := slices.Index(seen, kubermaticv1.RestorePhaseStsRebuilding); i < 0 || !slices.Contains(seen[i:],
		kubermaticv1.RestorePhaseCompleted) {
		t.Errorf("phases seen live: %v, want StsRebuilding then Completed", seen)
	}
	p.shot("restore-completed")

	// Bob's cluster: Alice can neither see nor change it, in the API server's words, and gets
	// none of its status events.
	p.open("/clusters/" + theirs)
	if msg := p.text("#page-error"); !strings.Contains(msg, "The API server says") || !strings.Contains(msg, "forbidden") {
		t.Errorf("alice opening bob's cluster sees %q", msg)
	}
	p.open("/clusters/" + theirs + "/configs/new")
	p.run(chromedp.SendKeys(css("#name"), "intruder"), chromedp.Click(css("#preset-daily")),
		chromedp.Click(css("#save-config")), chromedp.WaitVisible(css("#page-error")))
	if msg := p.text("#page-error"); !strings.Contains(msg,
		`etcdbackupconfigs.kubermatic.k8c.io is forbidden: User "system:serviceaccount:console-users:alice" cannot create`) {
		t.Errorf("alice creating a config in bob's cluster sees %q", msg)
	}
	p.shot("forbidden")
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "cluster-" + theirs, Name: "intruder"},
		&kubermaticv1.EtcdBackupConfig{}); !apierrors.IsNotFound(err) {
		t.Errorf("alice created a config in bob's cluster: %v", err)
	}
	if code := p.status("/events?namespace=cluster-" + theirs); code != 403 {
		t.Errorf("alice's event stream of bob's namespace: HTTP %d, want 403", code)
	}
	if code := p.status("/events?namespace=cluster-" + mine); code != 200 {
		t.Errorf("alice's event stream of her own namespace: HTTP %d, want 200", code)
	}

	// And Bob sees nothing of Alice's.
	p.signOut()
	p.signIn(bob)
	p.open("/clusters/" + mine)
	if msg := p.text("#page-error"); !strings.Contains(msg, "forbidden") {
		t.Errorf("bob opening alice's cluster sees %q", msg)
	}
	if code := p.status("/events?namespace=cluster-" + mine); code != 403 {
		t.Errorf("bob's event stream of alice's namespace: HTTP %d, want 403", code)
	}
	p.open("/clusters/" + theirs)
	if body := p.text("main"); strings.Contains(body, "weekly") || strings.Contains(body, oneTime) {
		t.Errorf("bob's cluster page shows alice's configs:\n%s", body)
	}

	// The console counted its requests and streams, and dropped nothing here.
	if n := metricSum(t, ctx, "console", "etcdbackup_console_requests_total",
		map[string]string{"route": "GET /clusters/{cluster}", "code": "200"}); n < 2 {
		t.Errorf("etcdbackup_console_requests_total of the cluster page: %v", n)
	}
	if n := metricSum(t, ctx, "console", "etcdbackup_console_requests_total", map[string]string{"route": "GET /events",
		"code": "403"}); n < 2 {
		t.Errorf("etcdbackup_console_requests_total of refused event streams: %v", n)
	}
	if n := metricSum(t, ctx, "console", "etcdbackup_console_events_dropped_total",
		map[string]string{"reason": "slow-client"}); n != 0 {
		t.Errorf("%v events dropped for slow browsers", n)
	}
	for _, w := range p.weights {
		t.Logf("page %-45s html %6d B, with css+js %6d B, first paint %5.0f ms, loaded %5.0f ms", w.Path, w.HTML, w.Total,
			w.FirstPaint, w.Loaded)
	}
	select {
	case <-completedAt:
	default:
		t.Error("no Completed status event of the one-time backup arrived on the bus")
	}
}
