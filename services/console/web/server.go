// Package web is the console: server-rendered pages for the seed document's flows (clusters
// and their backup configs, a config's backups, adding or editing a config with presets,
// one-time backups, restores), a Server-Sent Events stream of status events per namespace,
// and the sign-in that makes every Kubernetes call with the user's own bearer token.
package web

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	kubermaticv1 "github.com/etcd-backup/etcdbackup/api/v1"
	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// UserClients returns a Kubernetes client that authenticates as the holder of token.
type UserClients func(token string) (client.Client, error)

// Server serves the console.
type Server struct {
	Log      *slog.Logger
	Sessions *Sessions
	// OIDC signs users in through the seed's OpenID Connect provider (nil: bearer tokens only).
	OIDC  *OIDC
	Auth  *Authenticator
	Users UserClients
	// Destinations lists the Seed's destination names and its default (names only: nothing
	// else of a destination reaches a page).
	Destinations func(ctx context.Context) (names []string, def string, err error)
	Hub          *Hub
	// Heartbeat is how often an idle event stream gets a comment (and access is checked again).
	Heartbeat time.Duration
	// Now is the clock (nil: time.Now).
	Now func() time.Time

	tmpl     map[string]*template.Template
	requests *prometheus.CounterVec
}

// Handler returns the console's routes.
func (s *Server) Handler(reg prometheus.Registerer) (http.Handler, error) {
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "etcdbackup_console_requests_total",
		Help: "Requests to the console by route pattern and HTTP status code."}, []string{"route", "code"})
	if err := reg.Register(s.requests); err != nil {
		return nil, err
	}
	if err := s.parse(); err != nil {
		return nil, err
	}
	static, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	handle := func(pattern string, h http.HandlerFunc) {
		mux.Handle(pattern, s.observe(pattern, h))
	}
	handle("GET /static/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		http.StripPrefix("/static/", http.FileServerFS(static)).ServeHTTP(w, r)
	})
	handle("GET /login", s.loginPage)
	handle("POST /login", s.login)
	handle("POST /logout", s.logout)
	handle("GET /oidc/login", s.oidcLogin)
	handle("GET /oidc/callback", s.oidcCallback)
	handle("GET /{$}", s.page(s.clusters))
	handle("GET /go", s.page(s.goToCluster))
	handle("GET /clusters/{cluster}", s.page(s.cluster))
	handle("GET /clusters/{cluster}/configs/new", s.page(s.newConfig))
	handle("POST /clusters/{cluster}/configs", s.page(s.createConfig))
	handle("GET /clusters/{cluster}/configs/{config}", s.page(s.config))
	handle("GET /clusters/{cluster}/configs/{config}/edit", s.page(s.editConfig))
	handle("POST /clusters/{cluster}/configs/{config}", s.page(s.updateConfig))
	handle("POST /clusters/{cluster}/backups", s.page(s.oneTimeBackup))
	handle("GET /clusters/{cluster}/restore", s.page(s.confirmRestore))
	handle("POST /clusters/{cluster}/restores", s.page(s.createRestore))
	handle("GET /clusters/{cluster}/restores", s.page(s.restores))
	handle("GET /clusters/{cluster}/restores/{restore}", s.page(s.restore))
	handle("GET /events", s.events)
	return securityHeaders(mux), nil
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// securityHeaders: no framing, no inline script, no sniffing, no referrer to other sites; and
// a POST that a browser says comes from another origin is refused (the sign-in form too,
// which has no session to carry a form token).
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			if origin := r.Header.Get("Origin"); origin != "" {
				if u, err := url.Parse(origin); err != nil || u.Host != r.Host {
					http.Error(w, "cross-origin form posts are refused", http.StatusForbidden)
					return
				}
			}
		}
		w.Header().Set("Content-Security-Policy",
			"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "same-origin")
		h.ServeHTTP(w, r)
	})
}

type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// Flush lets the event stream through the recorder.
func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *Server) observe(route string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w}
		h(rec, r)
		if rec.code == 0 {
			rec.code = http.StatusOK
		}
		s.requests.WithLabelValues(route, strconv.Itoa(rec.code)).Inc()
	})
}

// session is a signed-in request: the user, their client and their form token.
type session struct {
	Signin
	User   User
	Client client.Client
	CSRF   string
}

type handler func(w http.ResponseWriter, r *http.Request, sess *session) error

// page runs h for a signed-in user; anyone else goes to the sign-in page. A POST must carry
// the session's form token. Errors from the API server are shown as the API server said them.
func (s *Server) page(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sess, err := s.session(w, r)
		if err != nil {
			if r.Method == http.MethodGet {
				http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			s.fail(w, r, nil, http.StatusUnauthorized, "Sign in again: "+err.Error())
			return
		}
		if r.Method == http.MethodPost {
			if err := r.ParseForm(); err != nil {
				s.fail(w, r, sess, http.StatusBadRequest, err.Error())
				return
			}
			if !s.Sessions.CheckCSRF(sess.ID, r.PostForm.Get("csrf")) {
				s.fail(w, r, sess, http.StatusForbidden,
					"The form is out of date or was not sent by this console; reload the page and try again.")
				return
			}
		}
		if err := h(w, r, sess); err != nil {
			s.apiError(w, r, sess, err)
		}
	}
}

// user is who the request's session belongs to, as the API server says now (cached).
func (s *Server) user(w http.ResponseWriter, r *http.Request) (Signin, User, error) {
	si, err := s.signin(w, r)
	if err != nil {
		return Signin{}, User{}, err
	}
	u, err := s.Auth.Review(r.Context(), si.Token)
	return si, u, err
}

// signin opens the request's session and renews an OIDC session's ID token near its end,
// writing the renewed session to w. A provider that refuses the renewal ends the session
// (ErrSigninEnded); one that does not answer leaves the current token in use until it expires.
func (s *Server) signin(w http.ResponseWriter, r *http.Request) (Signin, error) {
	si, err := s.Sessions.Open(r)
	if err != nil || s.OIDC == nil || !RenewDue(si, s.now()) {
		return si, err
	}
	renewed, err := s.OIDC.Renew(r.Context(), si.Refresh)
	switch {
	case errors.Is(err, ErrSigninEnded):
		s.Sessions.End(w)
		return Signin{}, err
	case err != nil && s.now().Before(si.Expiry):
		s.Log.Warn("oidc renewal failed; the current ID token serves until it expires", "err", err)
		return si, nil
	case err != nil:
		return Signin{}, err
	}
	if renewed.Subject != si.Subject {
		// OpenID Connect Core 12.2: a renewed ID token's sub is the signed-in user's.
		s.Log.Warn("oidc renewal brought another user's ID token; the session ends", "subject", renewed.Subject)
		s.Sessions.End(w)
		return Signin{}, fmt.Errorf("%w: the renewed ID token is another user's", ErrSigninEnded)
	}
	renewed.ID, renewed.Expires = si.ID, si.Expires
	if err := s.Sessions.Set(w, renewed); err != nil {
		return Signin{}, err
	}
	return renewed, nil
}

func (s *Server) session(w http.ResponseWriter, r *http.Request) (*session, error) {
	si, u, err := s.user(w, r)
	if err != nil {
		return nil, err
	}
	c, err := s.Users(si.Token)
	if err != nil {
		return nil, err
	}
	return &session{Signin: si, User: u, Client: c, CSRF: s.Sessions.CSRF(si.ID)}, nil
}

// errInput is a request the console refuses itself, with the reason for the user.
type errInput struct{ msg string }

func (e errInput) Error() string { return e.msg }

func refuse(format string, args ...any) error { return errInput{fmt.Sprintf(format, args...)} }

// apiError shows an error: the API server's own message and code, or the console's reason.
func (s *Server) apiError(w http.ResponseWriter, r *http.Request, sess *session, err error) {
	var in errInput
	var st apierrors.APIStatus
	switch {
	case errors.As(err, &in):
		s.fail(w, r, sess, http.StatusBadRequest, in.msg)
	case errors.As(err, &st) && st.Status().Code != 0:
		s.fail(w, r, sess, int(st.Status().Code), "The API server says: "+st.Status().Message)
	default:
		s.Log.Warn("request failed", "path", r.URL.Path, "user", userName(sess), "err", err)
		s.fail(w, r, sess, http.StatusBadGateway, "The console could not reach the API server: "+err.Error())
	}
}

func userName(sess *session) string {
	if sess == nil {
		return ""
	}
	return sess.User.Name
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, sess *session, code int, msg string) {
	s.render(w, r, code, "error", view{Title: http.StatusText(code), Session: sess, Error: msg})
}

// view is what every page gets.
type view struct {
	Title   string
	Session *session
	// Live is the namespace whose status events the page follows ("" for none).
	Live  string
	Error string
	Data  any
	// Since is when the page's data was read, in Unix milliseconds, less a margin: its event
	// stream starts with the events from then (Hub.JoinSince).
	Since int64
}

// sinceMargin is how far before the render a live page's events start: the page's data was
// read from the API just before, and an event the status did not show yet must not be missed.
const sinceMargin = 5 * time.Second

func (s *Server) render(w http.ResponseWriter, r *http.Request, code int, name string, v view) {
	t, ok := s.tmpl[name]
	if !ok {
		http.Error(w, "no page "+name, http.StatusInternalServerError)
		return
	}
	if v.Live != "" && v.Since == 0 {
		v.Since = time.Now().Add(-sinceMargin).UnixMilli()
	}
	var b strings.Builder
	if err := t.ExecuteTemplate(&b, "layout", v); err != nil {
		s.Log.Error("render", "page", name, "err", err)
		http.Error(w, "the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(b.String()))
}

var funcs = template.FuncMap{
	"when": func(t any) string {
		switch v := t.(type) {
		case time.Time:
			if v.IsZero() {
				return ""
			}
			return v.UTC().Format("2006-01-02 15:04:05")
		}
		return ""
	},
	"lower":      strings.ToLower,
	"join":       strings.Join,
	"progressOf": progressOf,
}

func (s *Server) parse() error {
	pages, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return err
	}
	s.tmpl = map[string]*template.Template{}
	for _, p := range pages {
		name := strings.TrimSuffix(strings.TrimPrefix(p, "templates/"), ".html")
		if name == "layout" || strings.HasPrefix(name, "_") {
			continue
		}
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/_*.html", p)
		if err != nil {
			return fmt.Errorf("template %s: %w", name, err)
		}
		s.tmpl[name] = t
	}
	return nil
}

// clusterName is the {cluster} of the path, refused unless it is a valid object name.
func clusterName(r *http.Request) (string, error) {
	name := r.PathValue("cluster")
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return "", refuse("%q is not a cluster name: %s", name, strings.Join(errs, "; "))
	}
	return name, nil
}

// clusterOf returns the cluster of the path and its namespace: the Cluster's own
// status.namespaceName when the user may read it, else KKP's cluster-<name>.
func clusterOf(ctx context.Context, r *http.Request, sess *session) (*kubermaticv1.Cluster, string, error) {
	name, err := clusterName(r)
	if err != nil {
		return nil, "", err
	}
	var c kubermaticv1.Cluster
	err = sess.Client.Get(ctx, client.ObjectKey{Name: name}, &c)
	switch {
	case err == nil:
		return &c, c.NamespaceName(), nil
	case apierrors.IsForbidden(err):
		c.Name = name
		return nil, c.NamespaceName(), nil
	case apierrors.IsNotFound(err):
		return nil, "", refuse("There is no cluster %s.", name)
	}
	return nil, "", err
}
