package web

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// The sign-in pages: a bearer token in, or a sign-in through the OIDC provider; a sealed
// session cookie out.

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	var msg string
	if s.Sessions.Ended(r) {
		msg = "Your sign-in has ended: the identity provider no longer renews it. Sign in again."
	}
	s.render(w, r, http.StatusOK, "login", s.loginView(safeNext(r.URL.Query().Get("next")), msg))
}

func (s *Server) loginView(next, msg string) view {
	d := loginData{Next: next}
	if s.OIDC != nil {
		d.Provider = s.OIDC.Name()
	}
	return view{Title: "Sign in", Error: msg, Data: d}
}

type loginData struct {
	Next string
	// Provider names the OIDC provider ("" : bearer tokens only).
	Provider string
}

// safeNext keeps a post-sign-in redirect on this console: a path on it, else "/". Browsers
// drop tabs and newlines from a URL and read a backslash as a slash, so "/\t/evil.example"
// and "/\\evil.example" would leave it; a path with any of them, or that parses with a scheme
// or host, is refused.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.ContainsFunc(next, func(r rune) bool {
		return r < 0x20 || r == 0x7f || r == '\\'
	}) {
		return "/"
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || strings.HasPrefix(u.Path, "//") ||
		strings.HasPrefix(next, "//") {
		return "/"
	}
	return next
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		s.fail(w, r, nil, http.StatusBadRequest, err.Error())
		return
	}
	token := strings.TrimSpace(r.PostForm.Get("token"))
	next := safeNext(r.PostForm.Get("next"))
	if token == "" {
		s.render(w, r, http.StatusUnprocessableEntity, "login", s.loginView(next, "Paste a bearer token."))
		return
	}
	if _, err := s.Auth.Review(r.Context(), token); err != nil {
		code := http.StatusUnauthorized
		if !errors.Is(err, ErrUnauthenticated) {
			code = http.StatusBadGateway
		}
		s.render(w, r, code, "login", s.loginView(next, err.Error()))
		return
	}
	s.Sessions.ForgetEnded(w, r)
	if err := s.Sessions.Set(w, Signin{Token: token}); err != nil {
		s.fail(w, r, nil, http.StatusInternalServerError, err.Error())
		return
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	s.Sessions.Clear(w)
	s.Sessions.ForgetEnded(w, r)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// flowCookie carries an OIDC sign-in from /oidc/login to /oidc/callback, sealed like the
// session: the state, the nonce and the PKCE verifier never leave the browser unsealed.
const flowCookie = "etcdbackup_oidc"

// flowTTL is how long a user has at the provider's login page.
const flowTTL = 10 * time.Minute

type flow struct {
	State    string    `json:"s"`
	Nonce    string    `json:"n"`
	Verifier string    `json:"v"`
	Next     string    `json:"x"`
	Expires  time.Time `json:"e"`
}

func randomString() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// oidcLogin starts a sign-in through the provider: authorization code flow with PKCE.
func (s *Server) oidcLogin(w http.ResponseWriter, r *http.Request) {
	next := safeNext(r.URL.Query().Get("next"))
	if s.OIDC == nil {
		s.render(w, r, http.StatusNotFound, "login", s.loginView(next, "This console has no identity provider: "+
			"sign in with a bearer token."))
		return
	}
	f := flow{Verifier: oauth2.GenerateVerifier(), Next: next, Expires: s.now().Add(flowTTL)}
	var err error
	if f.State, err = randomString(); err == nil {
		f.Nonce, err = randomString()
	}
	if err != nil {
		s.fail(w, r, nil, http.StatusInternalServerError, err.Error())
		return
	}
	to, err := s.OIDC.AuthURL(r.Context(), f.State, f.Nonce, f.Verifier)
	if err != nil {
		s.Log.Warn("oidc sign-in", "err", err)
		s.render(w, r, http.StatusBadGateway, "login", s.loginView(next, "The console could not reach "+err.Error()))
		return
	}
	value, err := s.Sessions.seal(flowCookie, f)
	if err != nil {
		s.fail(w, r, nil, http.StatusInternalServerError, err.Error())
		return
	}
	// Lax: the provider's redirect back is a top-level GET from another site, which carries it.
	s.Sessions.cookie(w, &http.Cookie{Name: flowCookie, Value: value, Path: "/oidc/", MaxAge: int(flowTTL.Seconds())})
	http.Redirect(w, r, to, http.StatusFound)
}

// oidcCallback finishes a sign-in: the state must be this browser's, the code is exchanged
// with the PKCE verifier, the ID token checked, and the API server asked whether it accepts it.
func (s *Server) oidcCallback(w http.ResponseWriter, r *http.Request) {
	if s.OIDC == nil {
		http.NotFound(w, r)
		return
	}
	s.Sessions.remove(w, flowCookie, "/oidc/")
	q := r.URL.Query()
	var f flow
	c, err := r.Cookie(flowCookie)
	if err == nil {
		err = s.Sessions.open(flowCookie, c.Value, &f)
	}
	if err != nil || !s.now().Before(f.Expires) || f.State == "" ||
		subtle.ConstantTimeCompare([]byte(f.State), []byte(q.Get("state"))) != 1 {
		s.render(w, r, http.StatusBadRequest, "login", s.loginView("/",
			"This sign-in was not started here, or took longer than 10 minutes: sign in again."))
		return
	}
	if e := q.Get("error"); e != "" {
		s.render(w, r, http.StatusUnauthorized, "login", s.loginView(f.Next,
			"The identity provider refused the sign-in: "+e+" "+q.Get("error_description")))
		return
	}
	si, err := s.OIDC.Exchange(r.Context(), q.Get("code"), f.Verifier, f.Nonce)
	if err != nil {
		s.Log.Warn("oidc sign-in", "err", err)
		s.render(w, r, http.StatusUnauthorized, "login", s.loginView(f.Next, err.Error()))
		return
	}
	if _, err := s.Auth.Review(r.Context(), si.Token); err != nil {
		code := http.StatusUnauthorized
		if !errors.Is(err, ErrUnauthenticated) {
			code = http.StatusBadGateway
		}
		s.render(w, r, code, "login", s.loginView(f.Next, "The identity provider signed you in, but "+err.Error()+
			" (kube-apiserver's --oidc-issuer-url and --oidc-client-id must name this provider and client)"))
		return
	}
	s.Sessions.ForgetEnded(w, r)
	if err := s.Sessions.Set(w, si); err != nil {
		s.fail(w, r, nil, http.StatusInternalServerError, err.Error())
		return
	}
	http.Redirect(w, r, f.Next, http.StatusSeeOther)
}
