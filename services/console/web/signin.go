package web

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
)

// The sign-in pages: a bearer token in, a sealed session cookie out.

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusOK, "login", view{Title: "Sign in",
		Data: loginData{Next: safeNext(r.URL.Query().Get("next"))}})
}

type loginData struct{ Next string }

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
		s.render(w, r, http.StatusUnprocessableEntity, "login", view{Title: "Sign in", Error: "Paste a bearer token.",
			Data: loginData{Next: next}})
		return
	}
	if _, err := s.Auth.Review(r.Context(), token); err != nil {
		code := http.StatusUnauthorized
		if !errors.Is(err, ErrUnauthenticated) {
			code = http.StatusBadGateway
		}
		s.render(w, r, code, "login", view{Title: "Sign in", Error: err.Error(), Data: loginData{Next: next}})
		return
	}
	if err := s.Sessions.Set(w, token); err != nil {
		s.fail(w, r, nil, http.StatusInternalServerError, err.Error())
		return
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	s.Sessions.Clear(w)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}
