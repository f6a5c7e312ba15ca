package web

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	authenticationv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"
)

// testProvider is an OpenID Connect provider for the console's unit tests: discovery, keys,
// an authorization endpoint that signs "alice" in at once, and a token endpoint for codes
// (with the PKCE check) and rotating refresh tokens. The end-to-end test runs Dex.
type testProvider struct {
	t      *testing.T
	srv    *httptest.Server
	signer jose.Signer
	key    *rsa.PrivateKey
	now    func() time.Time
	ttl    time.Duration

	mu    sync.Mutex
	codes map[string]grant // code -> its request
	// refresh tokens: live ones, and revoked ones
	refresh  map[string]bool
	issued   map[string]time.Time // ID token -> its expiry
	refreshN atomic.Int32
	// wrongNonce makes the next ID token carry another nonce.
	wrongNonce bool
	// sub is the user the ID tokens are about.
	sub  string
	down atomic.Bool
}

type grant struct {
	challenge, nonce, redirect string
}

func newTestProvider(t *testing.T, now func() time.Time) *testProvider {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key},
		(&jose.SignerOptions{}).WithHeader("kid", "k1"))
	if err != nil {
		t.Fatal(err)
	}
	p := &testProvider{t: t, signer: signer, key: key, now: now, ttl: 10 * time.Minute, codes: map[string]grant{},
		refresh: map[string]bool{}, issued: map[string]time.Time{}, sub: "alice-sub"}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": p.srv.URL, "authorization_endpoint": p.srv.URL + "/auth",
			"token_endpoint": p.srv.URL + "/token", "jwks_uri": p.srv.URL + "/keys",
			"id_token_signing_alg_values_supported": []string{"RS256"}})
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1",
			Algorithm: "RS256", Use: "sig"}}})
	})
	mux.HandleFunc("GET /auth", p.auth)
	mux.HandleFunc("POST /token", p.token)
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *testProvider) auth(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" || q.Get("client_id") != "console" {
		http.Error(w, "want PKCE S256 and client console", http.StatusBadRequest)
		return
	}
	code := rand.Text()
	p.mu.Lock()
	p.codes[code] = grant{challenge: q.Get("code_challenge"), nonce: q.Get("nonce"), redirect: q.Get("redirect_uri")}
	p.mu.Unlock()
	http.Redirect(w, r, q.Get("redirect_uri")+"?"+url.Values{"code": {code}, "state": {q.Get("state")}}.Encode(),
		http.StatusFound)
}

func (p *testProvider) token(w http.ResponseWriter, r *http.Request) {
	id, secret, ok := r.BasicAuth()
	if !ok || id != "console" || secret != "s3cret" {
		w.WriteHeader(http.StatusUnauthorized)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": "invalid_client"})
		return
	}
	_ = r.ParseForm()
	refuse := func(desc string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": "invalid_grant", "error_description": desc})
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var nonce string
	switch r.PostForm.Get("grant_type") {
	case "authorization_code":
		g, ok := p.codes[r.PostForm.Get("code")]
		delete(p.codes, r.PostForm.Get("code"))
		sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
		if !ok || base64.RawURLEncoding.EncodeToString(sum[:]) != g.challenge {
			refuse("unknown code or PKCE verifier")
			return
		}
		nonce = g.nonce
		if p.wrongNonce {
			nonce = "another"
		}
	case "refresh_token":
		p.refreshN.Add(1)
		rt := r.PostForm.Get("refresh_token")
		if !p.refresh[rt] {
			refuse("refresh token revoked")
			return
		}
		delete(p.refresh, rt) // rotated
	default:
		refuse("grant type")
		return
	}
	now := p.now()
	claims := map[string]any{"iss": p.srv.URL, "sub": p.sub, "aud": "console", "email": "alice@example.com",
		"iat": now.Unix(), "exp": now.Add(p.ttl).Unix()}
	if nonce != "" {
		claims["nonce"] = nonce
	}
	raw, err := jwt.Signed(p.signer).Claims(claims).Serialize()
	if err != nil {
		p.t.Error(err)
		return
	}
	rt := rand.Text()
	p.refresh[rt] = true
	p.issued[raw] = now.Add(p.ttl)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": "at-" + rt, "token_type": "Bearer",
		"expires_in": int(p.ttl.Seconds()), "refresh_token": rt, "id_token": raw})
}

// revokeAll revokes every refresh token.
func (p *testProvider) revokeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.refresh)
}

// accepts says whether an ID token is one the provider issued and it has not expired: the
// API server's TokenReview of it.
func (p *testProvider) accepts(token string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	exp, ok := p.issued[token]
	return ok && p.now().Before(exp)
}

// clock is a settable time.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// oidcServer is the console with OIDC sign-in against p, on one clock; the API server's
// TokenReview accepts what p issued.
func oidcServer(t *testing.T, c *clock) (*Server, http.Handler, *testProvider) {
	t.Helper()
	p := newTestProvider(t, c.now)
	s, h, kc := testServer(t)
	kc.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		tr := a.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenReview)
		if !p.accepts(tr.Spec.Token) {
			return false, nil, nil // the token reviews of testServer
		}
		tr.Status = authenticationv1.TokenReviewStatus{Authenticated: true,
			User: authenticationv1.UserInfo{Username: "alice"}}
		return true, tr, nil
	})
	sso, err := NewOIDC(OIDCConfig{IssuerURL: p.srv.URL, ClientID: "console", ClientSecret: "s3cret",
		RedirectURL: "http://console.example/oidc/callback", Name: "Test IdP"})
	if err != nil {
		t.Fatal(err)
	}
	sso.now = c.now
	s.OIDC, s.Now, s.Sessions.now, s.Auth.now = sso, c.now, c.now, c.now
	return s, h, p
}

// jar keeps the console's cookies between requests, as a browser would.
type jar map[string]*http.Cookie

func (j jar) do(t *testing.T, h http.Handler, target string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, target, nil)
	for _, c := range j {
		r.AddCookie(c)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	for _, c := range w.Result().Cookies() {
		if c.MaxAge < 0 {
			delete(j, c.Name)
		} else {
			j[c.Name] = c
		}
	}
	return w
}

// signIn runs the authorization code flow: the console's /oidc/login, the provider's /auth,
// and the console's callback; it returns the callback's response.
func signIn(t *testing.T, h http.Handler, j jar, next string) *httptest.ResponseRecorder {
	t.Helper()
	w := j.do(t, h, "/oidc/login?next="+url.QueryEscape(next))
	if w.Code != http.StatusFound {
		t.Fatalf("/oidc/login: %d %s", w.Code, w.Body)
	}
	auth := w.Header().Get("Location")
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
	resp, err := noRedirect.Get(auth)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cb, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || cb.Path != "/oidc/callback" {
		t.Fatalf("the provider sent the browser to %q (%v)", resp.Header.Get("Location"), err)
	}
	return j.do(t, h, cb.RequestURI())
}

// The whole life of an OIDC session: the code flow with PKCE lands on the page asked for; the
// ID token is renewed near its end with the rotated refresh token, keeping the form token;
// a provider that refuses the renewal ends the session and the sign-in page says so.
func TestOIDCSessionIsRenewedAndEndsWhenTheProviderRefuses(t *testing.T) {
	c := &clock{t: time.Now()}
	s, h, p := oidcServer(t, c)
	j := jar{}

	if w := j.do(t, h, "/login"); !strings.Contains(w.Body.String(), "Sign in with Test IdP") {
		t.Fatalf("the sign-in page offers no provider:\n%s", w.Body)
	}
	w := signIn(t, h, j, "/clusters/a")
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/clusters/a" {
		t.Fatalf("callback: %d to %q\n%s", w.Code, w.Header().Get("Location"), w.Body)
	}
	if _, ok := j[flowCookie]; ok {
		t.Error("the flow cookie outlived the callback")
	}
	first := j[CookieName]
	if first == nil {
		t.Fatal("no session cookie after the sign-in")
	}
	if strings.Contains(first.Value, ".") {
		t.Error("the session cookie looks like it carries the JWT in clear")
	}
	if w := j.do(t, h, "/"); w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "alice") {
		t.Fatalf("the signed-in page: %d\n%s", w.Code, w.Body)
	}
	si, err := s.Sessions.Open(requestWith(first))
	if err != nil || !si.OIDC() {
		t.Fatalf("the session: %+v, %v", si, err)
	}

	// Not yet due: no renewal. Within the last quarter of its life: renewed, same session ID.
	c.add(5 * time.Minute)
	j.do(t, h, "/")
	if n := p.refreshN.Load(); n != 0 || j[CookieName].Value != first.Value {
		t.Fatalf("renewed %d times half-way through the token's life", n)
	}
	c.add(4*time.Minute + 30*time.Second)
	if w := j.do(t, h, "/"); w.Code != http.StatusOK {
		t.Fatalf("the page at renewal: %d\n%s", w.Code, w.Body)
	}
	renewed, err := s.Sessions.Open(requestWith(j[CookieName]))
	if err != nil || p.refreshN.Load() != 1 || renewed.Token == si.Token || renewed.Refresh == si.Refresh {
		t.Fatalf("after renewal: %d refreshes, token changed %v, refresh rotated %v (%v)", p.refreshN.Load(),
			renewed.Token != si.Token, renewed.Refresh != si.Refresh, err)
	}
	if renewed.ID != si.ID || !renewed.Expires.Equal(si.Expires) {
		t.Error("the renewal changed the session's ID or its end: open forms would be refused")
	}
	// The browser that sends the old cookie once more gets the same renewal, not a second one.
	old := jar{CookieName: first}
	if w := old.do(t, h, "/"); w.Code != http.StatusOK || p.refreshN.Load() != 1 {
		t.Errorf("the old cookie again: %d, %d refreshes", w.Code, p.refreshN.Load())
	}

	// The provider is down near the end: the current token serves while it lasts.
	c.add(9*time.Minute + 30*time.Second)
	p.down.Store(true)
	if w := j.do(t, h, "/"); w.Code != http.StatusOK {
		t.Errorf("with the provider down before the token expired: %d", w.Code)
	}
	p.down.Store(false)

	// Revoked: the next renewal ends the session, for the page and its event stream alike.
	p.revokeAll()
	w = j.do(t, h, "/")
	if w.Code != http.StatusSeeOther || !strings.HasPrefix(w.Header().Get("Location"), "/login") {
		t.Fatalf("after the revocation: %d to %q", w.Code, w.Header().Get("Location"))
	}
	if _, ok := j[CookieName]; ok {
		t.Error("the ended session's cookie is still set")
	}
	if w := j.do(t, h, "/login"); !strings.Contains(w.Body.String(), "Your sign-in has ended") {
		t.Errorf("the sign-in page after the end:\n%s", w.Body)
	}
	// A new sign-in forgets the end.
	signIn(t, h, j, "/")
	if w := j.do(t, h, "/login"); strings.Contains(w.Body.String(), "has ended") {
		t.Error("the sign-in page still says the session ended after a new sign-in")
	}
}

// oidcSignedIn is a console signed in through the test provider, and its session.
func oidcSignedIn(t *testing.T) (*Server, *testProvider, Signin) {
	t.Helper()
	s, h, p := oidcServer(t, &clock{t: time.Now()})
	j := jar{}
	signIn(t, h, j, "/")
	si, err := s.Sessions.Open(requestWith(j[CookieName]))
	if err != nil {
		t.Fatal(err)
	}
	return s, p, si
}

func requestWith(c *http.Cookie) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.AddCookie(c)
	return r
}

// A callback is only accepted for the sign-in this browser started, with the nonce it sent.
func TestOIDCCallbackRefusesWhatItDidNotStart(t *testing.T) {
	c := &clock{t: time.Now()}
	_, h, p := oidcServer(t, c)

	// A callback with no flow cookie (another browser's code), or another state.
	for name, target := range map[string]string{
		"no flow":       "/oidc/callback?code=x&state=y",
		"another state": "",
	} {
		j := jar{}
		if target == "" {
			w := j.do(t, h, "/oidc/login?next=/")
			loc, _ := url.Parse(w.Header().Get("Location"))
			target = "/oidc/callback?code=x&state=" + loc.Query().Get("state") + "x"
		}
		w := j.do(t, h, target)
		if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "not started here") {
			t.Errorf("%s: %d\n%s", name, w.Code, w.Body)
		}
		if _, ok := j[CookieName]; ok {
			t.Errorf("%s: a session was set", name)
		}
	}

	// The flow is older than ten minutes.
	j := jar{}
	w := j.do(t, h, "/oidc/login?next=/")
	c.add(11 * time.Minute)
	loc, _ := url.Parse(w.Header().Get("Location"))
	if w := j.do(t, h, "/oidc/callback?code=x&state="+url.QueryEscape(loc.Query().Get("state"))); w.Code !=
		http.StatusBadRequest {
		t.Errorf("a stale flow: %d", w.Code)
	}

	// The provider says no.
	j = jar{}
	w = j.do(t, h, "/oidc/login?next=/")
	loc, _ = url.Parse(w.Header().Get("Location"))
	w = j.do(t, h, "/oidc/callback?error=access_denied&error_description=nope&state="+
		url.QueryEscape(loc.Query().Get("state")))
	if w.Code != http.StatusUnauthorized || !strings.Contains(w.Body.String(), "access_denied nope") {
		t.Errorf("the provider's refusal: %d\n%s", w.Code, w.Body)
	}

	// An ID token with another nonce (replayed from another sign-in).
	p.wrongNonce = true
	j = jar{}
	w = signIn(t, h, j, "/")
	if w.Code != http.StatusUnauthorized || !strings.Contains(w.Body.String(), "nonce") {
		t.Errorf("another nonce: %d\n%s", w.Code, w.Body)
	}
	if _, ok := j[CookieName]; ok {
		t.Error("another nonce: a session was set")
	}
}

// A page and its event stream that renew at once spend the refresh token once.
func TestOIDCRenewalsOfOneTokenAreOne(t *testing.T) {
	s, p, si := oidcSignedIn(t)
	var wg sync.WaitGroup
	tokens := make([]string, 8)
	for i := range tokens {
		wg.Go(func() {
			r, err := s.OIDC.Renew(t.Context(), si.Refresh)
			if err != nil {
				t.Error(err)
			}
			tokens[i] = r.Token
		})
	}
	wg.Wait()
	if n := p.refreshN.Load(); n != 1 {
		t.Errorf("%d refreshes for one token renewed 8 times at once", n)
	}
	for _, tok := range tokens {
		if tok != tokens[0] || tok == "" {
			t.Fatalf("the renewals gave different tokens: %v", tokens)
		}
	}
	if !RenewDue(si, si.Expiry.Add(-time.Minute)) || RenewDue(si, si.Expiry.Add(-3*time.Minute)) {
		t.Error("RenewDue: want the last quarter of the token's life, at most a minute")
	}
	if RenewDue(Signin{Token: "pasted"}, time.Now().Add(time.Hour)) {
		t.Error("a pasted token is never renewed")
	}
}

// A renewal that brings another user's ID token (a provider's mistake) ends the session; it is
// not used.
func TestOIDCRenewalOfAnotherUserEndsTheSession(t *testing.T) {
	c := &clock{t: time.Now()}
	_, h, p := oidcServer(t, c)
	j := jar{}
	signIn(t, h, j, "/")
	p.mu.Lock()
	p.sub = "mallory-sub"
	p.mu.Unlock()
	c.add(9*time.Minute + 30*time.Second)
	w := j.do(t, h, "/")
	if w.Code != http.StatusSeeOther || !strings.HasPrefix(w.Header().Get("Location"), "/login") ||
		p.refreshN.Load() != 1 {
		t.Fatalf("a renewal to another subject: %d to %q, %d refreshes", w.Code, w.Header().Get("Location"),
			p.refreshN.Load())
	}
	if _, ok := j[CookieName]; ok {
		t.Error("the session survived a renewal to another subject")
	}
}

// A renewal outlives the request that started it (a closed tab): the provider rotates the
// refresh token as it answers, and the answer must not be lost.
func TestOIDCRenewalIsNotCancelledWithItsRequest(t *testing.T) {
	s, p, si := oidcSignedIn(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	r, err := s.OIDC.Renew(ctx, si.Refresh)
	if err != nil || r.Token == "" || p.refreshN.Load() != 1 {
		t.Fatalf("a renewal whose request went away: %v, %d refreshes", err, p.refreshN.Load())
	}
}
