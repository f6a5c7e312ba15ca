package web

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
	"golang.org/x/sync/singleflight"
)

// OIDCConfig is how the console reaches the seed's OpenID Connect provider (Dex in KKP).
type OIDCConfig struct {
	// IssuerURL is the provider's issuer; kube-apiserver's --oidc-issuer-url must be the same,
	// with --oidc-client-id the same as ClientID, so that it accepts the ID tokens.
	IssuerURL    string
	ClientID     string
	ClientSecret string
	// RedirectURL is this console's /oidc/callback as browsers reach it, registered with the
	// provider for the client.
	RedirectURL string
	// CAFile verifies the provider's certificate ("" : the system's roots).
	CAFile string
	Scopes []string
	// Name is the provider's name on the sign-in button.
	Name string
}

// DefaultOIDCScopes: the ID token with the user's email and groups, and a refresh token.
var DefaultOIDCScopes = []string{oidc.ScopeOpenID, "email", "profile", "groups", oidc.ScopeOfflineAccess}

// OIDC signs users in through an OpenID Connect provider with the authorization code flow and
// PKCE. The ID token becomes the user's bearer token for every API call, so Kubernetes RBAC
// decides by the provider's user and groups; the refresh token renews it shortly before it
// expires, and a provider that refuses the renewal ends the session.
type OIDC struct {
	cfg    OIDCConfig
	client *http.Client
	now    func() time.Time

	mu       sync.Mutex
	provider *oidc.Provider // discovered at the first sign-in, not at start: the provider may be down

	renewals singleflight.Group
	// renewed remembers each renewal for renewedFor, by a hash of the refresh token it used:
	// a page and its event stream that renew at once, or a browser that sends the old cookie
	// once more, get the same tokens instead of spending a rotated refresh token twice.
	renewedMu sync.Mutex
	renewed   map[[32]byte]renewal
}

type renewal struct {
	signin Signin
	err    error
	at     time.Time
}

const renewedFor = time.Minute

// NewOIDC checks cfg and prepares the provider's HTTP client.
func NewOIDC(cfg OIDCConfig) (*OIDC, error) {
	if cfg.IssuerURL == "" || cfg.ClientID == "" || cfg.RedirectURL == "" {
		return nil, errors.New("oidc: the issuer URL, the client id and the redirect URL are all needed")
	}
	if len(cfg.Scopes) == 0 {
		cfg.Scopes = DefaultOIDCScopes
	}
	if cfg.Name == "" {
		cfg.Name = "single sign-on"
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("oidc: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("oidc: %s holds no PEM certificate", cfg.CAFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &OIDC{cfg: cfg, client: &http.Client{Transport: tr, Timeout: 15 * time.Second}, now: time.Now,
		renewed: map[[32]byte]renewal{}}, nil
}

// Name is the provider's name for the sign-in page.
func (o *OIDC) Name() string { return o.cfg.Name }

func (o *OIDC) ctx(ctx context.Context) context.Context {
	return oidc.ClientContext(ctx, o.client)
}

// discover reads the provider's configuration once it answers.
func (o *OIDC) discover(ctx context.Context) (*oidc.Provider, *oauth2.Config, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.provider == nil {
		p, err := oidc.NewProvider(o.ctx(ctx), o.cfg.IssuerURL)
		if err != nil {
			return nil, nil, fmt.Errorf("the identity provider %s: %w", o.cfg.IssuerURL, err)
		}
		o.provider = p
	}
	return o.provider, &oauth2.Config{ClientID: o.cfg.ClientID, ClientSecret: o.cfg.ClientSecret,
		Endpoint: o.provider.Endpoint(), RedirectURL: o.cfg.RedirectURL, Scopes: o.cfg.Scopes}, nil
}

// AuthURL is where a browser signs in: the provider's authorization endpoint with state, the
// nonce its ID token must carry, and the PKCE challenge of verifier.
func (o *OIDC) AuthURL(ctx context.Context, state, nonce, verifier string) (string, error) {
	_, oc, err := o.discover(ctx)
	if err != nil {
		return "", err
	}
	return oc.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier), oidc.Nonce(nonce)), nil
}

// Exchange trades the callback's code for tokens, and checks the ID token (signature, issuer,
// audience, expiry, nonce).
func (o *OIDC) Exchange(ctx context.Context, code, verifier, nonce string) (Signin, error) {
	_, oc, err := o.discover(ctx)
	if err != nil {
		return Signin{}, err
	}
	tok, err := oc.Exchange(o.ctx(ctx), code, oauth2.VerifierOption(verifier))
	if err != nil {
		return Signin{}, fmt.Errorf("the identity provider refused the sign-in: %w", err)
	}
	si, err := o.signin(ctx, tok, "")
	if err != nil {
		return Signin{}, err
	}
	if si.nonce != nonce {
		return Signin{}, errors.New("the ID token is not the answer to this sign-in (nonce)")
	}
	if si.Refresh == "" {
		return Signin{}, errors.New("the identity provider gave no refresh token: the console asks for the " +
			oidc.ScopeOfflineAccess + " scope, which the provider must allow this client")
	}
	return si.Signin, nil
}

type checkedSignin struct {
	Signin
	nonce string
}

// signin checks the ID token of tok and makes the session's tokens; a renewal that brings no
// new refresh token keeps refresh.
func (o *OIDC) signin(ctx context.Context, tok *oauth2.Token, refresh string) (checkedSignin, error) {
	p, _, err := o.discover(ctx)
	if err != nil {
		return checkedSignin{}, err
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return checkedSignin{}, errors.New("the identity provider's answer holds no ID token")
	}
	idt, err := p.Verifier(&oidc.Config{ClientID: o.cfg.ClientID, Now: o.now}).Verify(o.ctx(ctx), raw)
	if err != nil {
		return checkedSignin{}, fmt.Errorf("the ID token: %w", err)
	}
	if tok.RefreshToken != "" {
		refresh = tok.RefreshToken
	}
	return checkedSignin{Signin: Signin{Token: raw, Refresh: refresh, Subject: idt.Subject, Issued: idt.IssuedAt,
		Expiry: idt.Expiry}, nonce: idt.Nonce}, nil
}

// ErrSigninEnded: the provider refused to renew the session (revoked, expired, or the user is
// gone): the user signs in again.
var ErrSigninEnded = errors.New("the identity provider no longer renews this sign-in")

// Renew trades a refresh token for a new ID token (and the rotated refresh token).
func (o *OIDC) Renew(ctx context.Context, refresh string) (Signin, error) {
	key := sha256.Sum256([]byte(refresh))
	now := o.now()
	o.renewedMu.Lock()
	for k, r := range o.renewed {
		if now.Sub(r.at) > renewedFor {
			delete(o.renewed, k)
		}
	}
	r, ok := o.renewed[key]
	o.renewedMu.Unlock()
	if ok {
		return r.signin, r.err
	}
	v, err, _ := o.renewals.Do(string(key[:]), func() (any, error) {
		// Not cancelled with the request that started it: the provider rotates the refresh
		// token as it answers, and an answer lost to a closed tab would end the session of
		// every request waiting on it. The client's timeout (15 s) bounds it.
		si, err := o.renew(context.WithoutCancel(ctx), refresh)
		// Only the provider's own answers are remembered: an outage is asked again.
		if err == nil || errors.Is(err, ErrSigninEnded) {
			o.renewedMu.Lock()
			o.renewed[key] = renewal{signin: si, err: err, at: o.now()}
			o.renewedMu.Unlock()
		}
		return si, err
	})
	return v.(Signin), err
}

func (o *OIDC) renew(ctx context.Context, refresh string) (Signin, error) {
	_, oc, err := o.discover(ctx)
	if err != nil {
		return Signin{}, err
	}
	// An expired token makes the token source go to the provider at once.
	tok, err := oc.TokenSource(o.ctx(ctx), &oauth2.Token{RefreshToken: refresh, Expiry: time.Unix(1, 0)}).Token()
	if err != nil {
		// The provider's refusal of this token (RFC 6749 5.2: 400, or 401 for the client);
		// anything else (429, 5xx, no answer) is an outage, and the current token serves on.
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil && (re.Response.StatusCode == http.StatusBadRequest ||
			re.Response.StatusCode == http.StatusUnauthorized) {
			return Signin{}, fmt.Errorf("%w: %s %s", ErrSigninEnded, re.ErrorCode, re.ErrorDescription)
		}
		return Signin{}, fmt.Errorf("renew the sign-in: %w", err)
	}
	si, err := o.signin(ctx, tok, refresh)
	if err != nil {
		return Signin{}, err
	}
	return si.Signin, nil
}

// RenewDue reports whether an OIDC session's ID token is near its end: within a quarter of its
// lifetime, at most a minute.
func RenewDue(si Signin, now time.Time) bool {
	if !si.OIDC() {
		return false
	}
	margin := min(time.Minute, si.Expiry.Sub(si.Issued)/4)
	return !now.Before(si.Expiry.Add(-margin))
}
