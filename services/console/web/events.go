package web

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// events streams the status events of one namespace to a signed-in user who may get
// EtcdBackupConfigs there (SubjectAccessReview, cached), as Server-Sent Events: event
// "status", data an Event. Access is checked again at every heartbeat; a user who lost it is
// disconnected. A closed tab leaves the hub at once; nothing is subscribed on NATS per tab.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	// No Kubernetes client: the stream reads nothing with the user's token, it only asks
	// whether the user may see the namespace.
	si, user, err := s.user(w, r)
	if err != nil {
		http.Error(w, "sign in first: "+err.Error(), http.StatusUnauthorized)
		return
	}
	ns := r.URL.Query().Get("namespace")
	if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		http.Error(w, fmt.Sprintf("namespace %q: %s", ns, strings.Join(errs, "; ")), http.StatusBadRequest)
		return
	}
	allowed, err := s.Auth.MayWatch(r.Context(), user, ns)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	if !allowed {
		http.Error(w, fmt.Sprintf("%s may not get etcdbackupconfigs in namespace %s", user.Name, ns), http.StatusForbidden)
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	// The page says when it was rendered: the events since then come first.
	var since time.Time
	if ms, err := strconv.ParseInt(r.URL.Query().Get("since"), 10, 64); err == nil && ms > 0 {
		since = time.UnixMilli(ms)
	}
	c := s.Hub.JoinSince(ns, since)
	defer s.Hub.Leave(c)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	// The browser reconnects 2 s after a drop; the page reloads its data when it does.
	fmt.Fprint(w, "retry: 2000\n: connected\n\n")
	flusher.Flush()
	s.stream(w, flusher, r, c, func() verdict { return s.stillAllowed(r, si, user, ns) })
}

// verdict is what a heartbeat finds.
type verdict int

const (
	keep verdict = iota
	// revoked: the user lost access; the page stops following.
	revoked
	// renew: the session's ID token is near its end; the stream ends without a word, the
	// browser connects again (retry) and that request renews the session's cookie.
	renew
)

// stream writes c's events to w until the request ends, with a heartbeat that first asks
// allowed, and ends the stream: with a "revoked" event when access is gone, quietly when the
// session needs renewing.
func (s *Server) stream(w http.ResponseWriter, flusher http.Flusher, r *http.Request, c *Client,
	allowed func() verdict) {
	beat := s.Heartbeat
	if beat <= 0 {
		beat = 15 * time.Second
	}
	t := time.NewTicker(beat)
	defer t.Stop()
	for {
		var err error
		select {
		case <-r.Context().Done():
			return
		case data := <-c.C:
			_, err = fmt.Fprintf(w, "event: status\ndata: %s\n\n", data)
		case <-t.C:
			switch allowed() {
			case renew:
				return
			case revoked:
				fmt.Fprint(w, "event: revoked\ndata: {}\n\n")
				flusher.Flush()
				return
			}
			_, err = fmt.Fprint(w, ": heartbeat\n\n")
		}
		if err != nil {
			return
		}
		flusher.Flush()
	}
}

// stillAllowed says whether the token is still valid and its user may still watch ns; an
// API server that does not answer leaves the stream open.
func (s *Server) stillAllowed(r *http.Request, si Signin, user User, ns string) verdict {
	if RenewDue(si, s.now()) {
		return renew
	}
	_, rerr := s.Auth.Review(r.Context(), si.Token)
	ok, err := s.Auth.MayWatch(r.Context(), user, ns)
	if !errors.Is(rerr, ErrUnauthenticated) && (err != nil || ok) {
		return keep
	}
	return revoked
}
