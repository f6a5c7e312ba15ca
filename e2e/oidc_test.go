package e2e

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	dexapi "github.com/dexidp/dex/api/v2"
	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/etcd-backup/etcdbackup/e2e/sandbox"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protowire"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// oidcTokenTTL is how long the sandbox's Dex ID tokens last (main_test.go): short, so the
// console's renewal happens within a test.
const oidcTokenTTL = 20 * time.Second

// errNotYet is a poll's reason to try again.
var errNotYet = errors.New("not yet")

// trustCert makes Chromium accept the TLS certificate in file (Dex's, self-signed) and no
// other: --ignore-certificate-errors-spki-list pins its public key.
func trustCert(t *testing.T, file string) chromedp.ExecAllocatorOption {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", file)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return chromedp.Flag("ignore-certificate-errors-spki-list", base64.StdEncoding.EncodeToString(sum[:]))
}

// sessionCookie is the console's session cookie in the browser ("" when there is none).
func (p *page) sessionCookie() string {
	p.t.Helper()
	res, err := chromedp.Call(p.ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{p.base}})
	if err != nil {
		p.t.Fatalf("cookies: %v", err)
	}
	for _, c := range res.Cookies {
		if c.Name == "etcdbackup_session" {
			return c.Value
		}
	}
	return ""
}

// dexSubject is the sub claim Dex gives a user of its password database: its internal
// IDTokenSubject message (user_id 1, conn_id 2), protobuf, base64url. Dex's API names users by it.
func dexSubject(userID, connector string) string {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, userID)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendString(b, connector)
	return base64.RawURLEncoding.EncodeToString(b)
}

// A project member signs in to the console through Dex in a real browser: the authorization
// code flow with PKCE, the provider's own login page (which refuses a wrong password first).
// The ID token is their credential with kube-apiserver, which was started with
// --oidc-issuer-url: RBAC by their OIDC group lets them see their cluster's configs and
// refuses another's in the API server's words. Their session outlives its first ID token
// (renewed with the refresh token), and ends when Dex revokes the refresh.
func TestConsoleSignInThroughOIDC(t *testing.T) {
	ctx := testContext(t, 4*time.Minute)
	dumpLogsOnFailure(t)
	consoles := env.ServicesOf("console")
	if len(consoles) == 0 || consoles[0].URL != env.ConsoleURL {
		t.Fatalf("the sandbox's first console must serve at Dex's redirect %s", env.ConsoleURL)
	}
	const mine, theirs = "oidc-a", "oidc-b"
	mustAddCluster(t, ctx, mine, env.DemoEtcd.Endpoint)
	mustAddCluster(t, ctx, theirs, env.DemoEtcd.Endpoint)
	if err := env.GrantClusterUser(ctx, "oidc-operators", sandbox.OIDCGroupSubject(), mine); err != nil {
		t.Fatal(err)
	}
	for ns, name := range map[string]string{mine: "nightly", theirs: "theirs-nightly"} {
		cfg := &kubermaticv1.EtcdBackupConfig{ObjectMeta: metav1.ObjectMeta{Namespace: "cluster-" + ns, Name: name},
			Spec: kubermaticv1.EtcdBackupConfigSpec{Name: name, Schedule: "0 1 * * *",
				Cluster: corev1.ObjectReference{Kind: "Cluster", Name: ns}, Destination: sandbox.Destination}}
		if err := env.Client.Create(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	shots := os.Getenv("ETCDBACKUP_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	}
	p := &page{t: t, ctx: browser(t, ctx, trustCert(t, env.Dex.CA)), base: env.ConsoleURL, shots: shots}

	// Signed out, the sign-in page offers Dex, and bearer tokens for service accounts.
	p.open("/clusters/" + mine)
	if got := p.text("#sign-in-oidc"); got != "Sign in with Dex" {
		t.Fatalf("the sign-in page's provider button says %q\n%s", got, p.text("main"))
	}
	p.shot("oidc-sign-in")
	p.run(chromedp.Click(css("#sign-in-oidc")), chromedp.WaitVisible(css("#login")))
	if at := evalJS[string](p, "location.href"); !strings.HasPrefix(at, env.Dex.Issuer) {
		t.Fatalf("the sign-in went to %s, want Dex at %s", at, env.Dex.Issuer)
	}
	// Dex's own page refuses a wrong password; nothing reaches the console.
	p.run(chromedp.SendKeys(css("#login"), sandbox.OIDCUser), chromedp.SendKeys(css("#password"), "wrong"),
		chromedp.Click(css("#submit-login")), chromedp.WaitVisible(css("#login-error")))
	if c := p.sessionCookie(); c != "" {
		t.Fatal("a wrong password at Dex left a console session")
	}
	// Dex shows its form again with the login filled in and the password empty.
	p.run(chromedp.SendKeys(css("#password"), env.Dex.Password))
	p.shot("oidc-dex-login")
	p.run(chromedp.Click(css("#submit-login")), chromedp.WaitVisible(css("header .user")))
	signedIn := time.Now()
	if who := p.text("header .user b"); who != sandbox.OIDCUser {
		t.Errorf("signed in as %q, want %s (kube-apiserver's --oidc-username-claim=email)", who, sandbox.OIDCUser)
	}
	if path := evalJS[string](p, "location.pathname"); path != "/clusters/"+mine {
		t.Errorf("after the sign-in the console shows %s, want the page asked for, /clusters/%s", path, mine)
	}
	if body := p.text("main"); !strings.Contains(body, "nightly") || strings.Contains(body, "theirs-nightly") {
		t.Errorf("the user's cluster page:\n%s", body)
	}
	p.shot("oidc-signed-in")
	first := p.sessionCookie()
	if first == "" {
		t.Fatal("no session cookie after the sign-in")
	}

	// Another cluster: refused by the API server, to the OIDC user by name; no status events.
	p.open("/clusters/" + theirs)
	if msg := p.text("#page-error"); !strings.Contains(msg, "The API server says") ||
		!strings.Contains(msg, `is forbidden: User "`+sandbox.OIDCUser+`" cannot`) {
		t.Errorf("the OIDC user opening another's cluster sees %q", msg)
	}
	if code := p.status("/events?namespace=cluster-" + theirs); code != 403 {
		t.Errorf("the event stream of another's namespace: HTTP %d, want 403", code)
	}
	if code := p.status("/events?namespace=cluster-" + mine); code != 200 {
		t.Errorf("the event stream of the user's namespace: HTTP %d, want 200", code)
	}

	// The session outlives its first ID token: pages keep loading past its expiry, with a
	// renewed cookie.
	err := sandbox.Poll(ctx, oidcTokenTTL+40*time.Second, 500*time.Millisecond, func() (bool, error) {
		p.open("/clusters/" + mine)
		if who := p.text("header .user b"); who != sandbox.OIDCUser {
			t.Fatalf("%s after the sign-in the page shows no user:\n%s", time.Since(signedIn), p.text("main"))
		}
		return time.Since(signedIn) > oidcTokenTTL+2*time.Second && p.sessionCookie() != first,
			errNotYet
	})
	if err != nil {
		t.Fatalf("the session was not renewed past its first ID token: %v", err)
	}
	if !strings.Contains(p.text("main"), "nightly") {
		t.Errorf("with the renewed token the cluster page shows:\n%s", p.text("main"))
	}

	// Dex revokes the user's refresh token: at the next renewal the console ends the session.
	conn, err := grpc.NewClient(env.Dex.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := dexapi.NewDexClient(conn).RevokeRefresh(ctx, &dexapi.RevokeRefreshReq{
		UserId: dexSubject(sandbox.OIDCUserID, "local"), ClientId: sandbox.OIDCClientID})
	if err != nil || resp.NotFound {
		t.Fatalf("Dex's RevokeRefresh: %v, not found %v", err, resp.GetNotFound())
	}
	err = sandbox.Poll(ctx, oidcTokenTTL+30*time.Second, 500*time.Millisecond, func() (bool, error) {
		p.open("/clusters/" + mine)
		return evalJS[string](p, "location.pathname") == "/login", errNotYet
	})
	if err != nil {
		t.Fatalf("the session outlived the revoked refresh token: %v\n%s", err, p.text("main"))
	}
	if msg := p.text("#page-error"); !strings.Contains(msg, "Your sign-in has ended") {
		t.Errorf("after the revocation the sign-in page says %q", msg)
	}
	if c := p.sessionCookie(); c != "" {
		t.Error("the ended session's cookie is still set")
	}
	p.shot("oidc-ended")
}
