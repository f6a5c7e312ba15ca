package web

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// CookieName is the session cookie: the user's bearer token (and an OIDC sign-in's refresh
// token), sealed (AES-GCM) with the session key, HttpOnly and SameSite=Lax. The console keeps
// no session state of its own, so any replica serves any request.
const CookieName = "etcdbackup_session"

// User is who a token belongs to, as the API server's TokenReview says.
type User struct {
	Name   string
	UID    string
	Groups []string
	Extra  map[string]authenticationv1.ExtraValue
}

// Sessions seals a user's token into the session cookie and opens it again.
type Sessions struct {
	aead cipher.AEAD
	mac  []byte
	TTL  time.Duration
	// Secure marks the cookie Secure (served over TLS).
	Secure bool
	now    func() time.Time
}

// NewSessions derives the cookie keys from key (32 bytes or more). Every replica behind one
// Service must have the same key (--session-key-file).
func NewSessions(key []byte, ttl time.Duration, secure bool) (*Sessions, error) {
	if len(key) < 32 {
		return nil, fmt.Errorf("session key: %d bytes, want at least 32", len(key))
	}
	enc := sha256.Sum256(append([]byte("etcdbackup-console seal "), key...))
	mac := sha256.Sum256(append([]byte("etcdbackup-console csrf "), key...))
	block, err := aes.NewCipher(enc[:])
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Sessions{aead: aead, mac: mac[:], TTL: ttl, Secure: secure, now: time.Now}, nil
}

// Signin is what a session cookie holds: the bearer token every API call is made with and,
// for a sign-in through the OIDC provider, the refresh token that renews it.
type Signin struct {
	// Token is the bearer token: pasted, or the provider's ID token.
	Token string `json:"t"`
	// ID names the session for its form token (CSRF); it stays when the ID token is renewed.
	ID string `json:"i"`
	// Expires ends the session (--session-ttl after the sign-in), renewed or not.
	Expires time.Time `json:"e"`
	// Refresh is the provider's refresh token ("" for a pasted token).
	Refresh string `json:"r,omitempty"`
	// Subject is the ID token's sub: a renewal must bring the same user's token.
	Subject string `json:"s,omitempty"`
	// Issued and Expiry are the ID token's iat and exp (zero for a pasted token).
	Issued time.Time `json:"n,omitzero"`
	Expiry time.Time `json:"x,omitzero"`
}

// OIDC reports whether the session came from the OIDC provider (and can be renewed).
func (s Signin) OIDC() bool { return s.Refresh != "" }

// Set writes the session cookie for si; a new sign-in gets its ID and its end.
func (s *Sessions) Set(w http.ResponseWriter, si Signin) error {
	if si.ID == "" {
		id := make([]byte, 16)
		if _, err := rand.Read(id); err != nil {
			return err
		}
		si.ID = base64.RawURLEncoding.EncodeToString(id)
	}
	if si.Expires.IsZero() {
		si.Expires = s.now().Add(s.TTL)
	}
	value, err := s.seal(CookieName, si)
	if err != nil {
		return err
	}
	s.cookie(w, &http.Cookie{Name: CookieName, Value: value, Path: "/", Expires: si.Expires})
	return nil
}

// seal encrypts v's JSON under the session key, bound to name.
func (s *Sessions) seal(name string, v any) (string, error) {
	plain, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(s.aead.Seal(nonce, nonce, plain, []byte(name))), nil
}

// open decrypts a value seal made for name into v.
func (s *Sessions) open(name, value string, v any) error {
	raw, err := base64.RawURLEncoding.DecodeString(value)
	if err != nil || len(raw) < s.aead.NonceSize() {
		return ErrNoSession
	}
	plain, err := s.aead.Open(nil, raw[:s.aead.NonceSize()], raw[s.aead.NonceSize():], []byte(name))
	if err != nil {
		return ErrNoSession
	}
	if err := json.Unmarshal(plain, v); err != nil {
		return ErrNoSession
	}
	return nil
}

// cookie sets c as every cookie of the console is: HttpOnly, SameSite=Lax, Secure over HTTPS.
func (s *Sessions) cookie(w http.ResponseWriter, c *http.Cookie) {
	c.HttpOnly, c.Secure, c.SameSite = true, s.Secure, http.SameSiteLaxMode
	http.SetCookie(w, c)
}

// remove removes the cookie name of path.
func (s *Sessions) remove(w http.ResponseWriter, name, path string) {
	s.cookie(w, &http.Cookie{Name: name, Path: path, MaxAge: -1})
}

// Clear removes the session cookie.
func (s *Sessions) Clear(w http.ResponseWriter) { s.remove(w, CookieName, "/") }

// endedCookie tells the sign-in page that the provider ended the session (and not the user):
// the renewal that found out may have been an event stream's, which shows no page.
const endedCookie = "etcdbackup_ended"

// End removes the session cookie of a sign-in the provider no longer renews, and leaves word
// for the sign-in page.
func (s *Sessions) End(w http.ResponseWriter) {
	s.Clear(w)
	s.cookie(w, &http.Cookie{Name: endedCookie, Value: "1", Path: "/", MaxAge: 600})
}

// Ended reports whether the provider ended the request's last session (in the last 10
// minutes, and no sign-in since): the sign-in page says so, however often it is loaded.
func (s *Sessions) Ended(r *http.Request) bool {
	_, err := r.Cookie(endedCookie)
	return err == nil
}

// ForgetEnded forgets an ended session, at the next sign-in or sign-out.
func (s *Sessions) ForgetEnded(w http.ResponseWriter, r *http.Request) {
	if !s.Ended(r) {
		return
	}
	s.remove(w, endedCookie, "/")
}

// ErrNoSession: no cookie, or one that is not ours, or expired.
var ErrNoSession = errors.New("not signed in")

// Open reads the request's session cookie.
func (s *Sessions) Open(r *http.Request) (Signin, error) {
	c, err := r.Cookie(CookieName)
	if err != nil {
		return Signin{}, ErrNoSession
	}
	var si Signin
	if err := s.open(CookieName, c.Value, &si); err != nil {
		return Signin{}, err
	}
	if si.Token == "" || si.ID == "" || !s.now().Before(si.Expires) {
		return Signin{}, ErrNoSession
	}
	return si, nil
}

// CSRF is the form token of a session: an HMAC of its ID, so a page of another site cannot
// post a form in the user's name. It outlives the renewal of an ID token.
func (s *Sessions) CSRF(id string) string {
	m := hmac.New(sha256.New, s.mac)
	m.Write([]byte(id))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// CheckCSRF reports whether the posted form token belongs to the session.
func (s *Sessions) CheckCSRF(id, posted string) bool {
	return hmac.Equal([]byte(s.CSRF(id)), []byte(posted))
}

// Authenticator says who a bearer token belongs to (TokenReview) and what they may do
// (SubjectAccessReview), each answer cached for TTL, keyed by a hash of the token or by user.
type Authenticator struct {
	Client kubernetes.Interface
	TTL    time.Duration
	now    func() time.Time

	mu      sync.Mutex
	reviews map[[32]byte]cachedUser
	access  map[string]cachedAccess
}

type cachedUser struct {
	user  User
	err   error
	until time.Time
}

type cachedAccess struct {
	allowed bool
	until   time.Time
}

// NewAuthenticator returns an Authenticator that asks the API server through c.
func NewAuthenticator(c kubernetes.Interface, ttl time.Duration) *Authenticator {
	return &Authenticator{Client: c, TTL: ttl, now: time.Now, reviews: map[[32]byte]cachedUser{},
		access: map[string]cachedAccess{}}
}

// ErrUnauthenticated: the API server does not accept the token.
var ErrUnauthenticated = errors.New("the API server does not accept this token")

// Review returns the token's user.
func (a *Authenticator) Review(ctx context.Context, token string) (User, error) {
	key := sha256.Sum256([]byte(token))
	now := a.now()
	a.mu.Lock()
	c, ok := a.reviews[key]
	a.mu.Unlock()
	if ok && now.Before(c.until) {
		return c.user, c.err
	}
	tr, err := a.Client.AuthenticationV1().TokenReviews().Create(ctx,
		&authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil {
		return User{}, fmt.Errorf("token review: %w", err)
	}
	var u User
	var rerr error
	if !tr.Status.Authenticated {
		rerr = ErrUnauthenticated
		if tr.Status.Error != "" {
			rerr = fmt.Errorf("%w: %s", ErrUnauthenticated, tr.Status.Error)
		}
	} else {
		ui := tr.Status.User
		u = User{Name: ui.Username, UID: ui.UID, Groups: ui.Groups, Extra: ui.Extra}
	}
	a.mu.Lock()
	a.reviews[key] = cachedUser{user: u, err: rerr, until: now.Add(a.TTL)}
	a.sweep(now)
	a.mu.Unlock()
	return u, rerr
}

// MayWatch reports whether u may get EtcdBackupConfigs in namespace: who may see a
// namespace's status events.
func (a *Authenticator) MayWatch(ctx context.Context, u User, namespace string) (bool, error) {
	key := u.Name + "\x00" + u.UID + "\x00" + strings.Join(u.Groups, ",") + "\x00" + namespace
	now := a.now()
	a.mu.Lock()
	c, ok := a.access[key]
	a.mu.Unlock()
	if ok && now.Before(c.until) {
		return c.allowed, nil
	}
	extra := map[string]authorizationv1.ExtraValue{}
	for k, v := range u.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	sar, err := a.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx,
		&authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: u.Name, UID: u.UID, Groups: u.Groups, Extra: extra,
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: namespace, Verb: "get",
				Group: "kubermatic.k8c.io", Resource: "etcdbackupconfigs"},
		}}, metav1.CreateOptions{})
	if err != nil {
		return false, fmt.Errorf("subject access review: %w", err)
	}
	a.mu.Lock()
	a.access[key] = cachedAccess{allowed: sar.Status.Allowed, until: now.Add(a.TTL)}
	a.mu.Unlock()
	return sar.Status.Allowed, nil
}

// sweep forgets expired reviews; a.mu is held.
func (a *Authenticator) sweep(now time.Time) {
	if len(a.reviews) < 1024 && len(a.access) < 4096 {
		return
	}
	for k, c := range a.reviews {
		if !now.Before(c.until) {
			delete(a.reviews, k)
		}
	}
	for k, c := range a.access {
		if !now.Before(c.until) {
			delete(a.access, k)
		}
	}
}
