package rest

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/scimgate/scimgate/outbox"
)

// authorize sets a request's credentials (basic, bearer, oauth2); a
// session's are in its cookies and in the headers its steps render.
func (s *Sender) authorize(ctx context.Context, req *http.Request) error {
	a := &s.cfg.auth
	switch a.kind {
	case "basic":
		req.SetBasicAuth(a.username, a.password)
	case "bearer":
		req.Header.Set("Authorization", "Bearer "+a.token)
	case "oauth2":
		tok, err := s.tokenSource().Token()
		if err != nil {
			return fmt.Errorf("oauth2 token from %s: %s", redactURL(a.tokenURL), s.redact(transportText(err)))
		}
		s.addSecret(tok.AccessToken)
		tok.SetAuthHeader(req)
	}
	return nil
}

// tokenSource is the cached client-credentials token source (the token is
// fetched once and reused until it expires or the app answers 401).
func (s *Sender) tokenSource() oauth2.TokenSource {
	s.oauthMu.Lock()
	defer s.oauthMu.Unlock()
	if s.oauth == nil {
		a := &s.cfg.auth
		cc := &clientcredentials.Config{ClientID: a.clientID, ClientSecret: a.clientSecret, TokenURL: a.tokenURL, Scopes: a.scopes}
		// The token endpoint is reached with the target's client (its TLS,
		// rate limit and concurrency), outside any one event's context.
		s.oauth = cc.TokenSource(context.WithValue(context.Background(), oauth2.HTTPClient, s.hc))
	}
	return s.oauth
}

// needsRenew reports whether rs says the credentials are stale: a 401 with
// oauth2; a renew_on status or expired_when with a session.
func (s *Sender) needsRenew(r *run, st *step, rs *response) (bool, error) {
	a := &s.cfg.auth
	switch a.kind {
	case "oauth2":
		return rs.status == http.StatusUnauthorized, nil
	case "session":
		if slices.Contains(a.renewOn, rs.status) {
			return true, nil
		}
		if a.expiredWhen != nil {
			r.env["response"] = rs.value()
			v, err := r.eval(st, "auth.session.expired_when", a.expiredWhen)
			delete(r.env, "response")
			if err != nil {
				return false, err
			}
			b, _ := v.(bool)
			return b, nil
		}
	}
	return false, nil
}

// invalidate drops the credentials of generation gen (a concurrent
// renewal may have replaced them already).
func (s *Sender) invalidate(gen int) {
	switch s.cfg.auth.kind {
	case "oauth2":
		s.oauthMu.Lock()
		s.oauth = nil
		s.oauthMu.Unlock()
	case "session":
		s.sessMu.Lock()
		if s.sessGen == gen {
			s.session = nil
			s.jar.reset()
			s.logger.Info("The app ended the session; logging in again", "target", s.cfg.target, "session", gen)
		}
		s.sessMu.Unlock()
	}
}

func (s *Sender) sessionValues() map[string]any {
	s.sessMu.Lock()
	defer s.sessMu.Unlock()
	if s.session == nil {
		return map[string]any{}
	}
	return maps.Clone(s.session)
}

// ensureSession logs in when the target uses a session and has none; it
// returns the session's generation. Events share one session; one login
// runs at a time.
func (s *Sender) ensureSession(ctx context.Context) (int, error) {
	if s.cfg.auth.kind != "session" {
		return 0, nil
	}
	s.sessMu.Lock()
	defer s.sessMu.Unlock()
	if s.session != nil {
		return s.sessGen, nil
	}
	if !s.send {
		s.session = map[string]any{}
		return s.sessGen, nil
	}
	sess := map[string]any{}
	r := &run{s: s, ctx: ctx, app: map[string]any{}, prog: progress{Done: map[string]map[string]any{}}}
	r.env = map[string]any{"event": map[string]any{}, "record": map[string]any{}, "app": r.app,
		"steps": map[string]any{}, "session": sess, "changes": map[string]any{}, "previous": map[string]any{},
		"appId": r.appID, "appIdOr": r.appIDOr}
	for _, st := range s.cfg.auth.sessionSteps {
		if st.when != nil {
			v, err := r.eval(st, "when", st.when)
			if err != nil {
				return 0, loginErr(err)
			}
			if b, _ := v.(bool); !b {
				continue
			}
		}
		rq, err := r.render(st)
		if err != nil {
			return 0, loginErr(err)
		}
		rs, err := s.do(ctx, s.cfg.target, "login."+st.name, rq)
		if err != nil {
			return 0, loginErr(err)
		}
		r.env["response"] = rs.value()
		then, err := r.classify(st, rs)
		if err != nil {
			return 0, loginErr(err)
		}
		metrics.requests.WithLabelValues(s.cfg.target, "login."+st.name, string(then)).Inc()
		switch then {
		case ThenRetry, ThenDead:
			shown := *rq // a login's body carries the credentials
			if len(shown.body) > 0 {
				shown.body = []byte("(a login request's body is not shown)")
			}
			se := &outbox.StatusError{StatusCode: rs.status, Body: s.deadLetter(st, &shown, rs)}
			var e error = &stepError{step: "login." + st.name, method: rq.method, url: redactURL(rq.url), se: se, then: then}
			if then == ThenDead {
				e = outbox.Permanent(e)
			}
			return 0, loginErr(e)
		}
		saved := map[string]any{}
		for _, kv := range st.save {
			v, err := r.eval(st, "save."+kv.key, kv.prog)
			if err != nil {
				return 0, loginErr(err)
			}
			sess[kv.key] = v
			saved[kv.key] = v
			s.addSecret(toString(v))
		}
		r.env["steps"].(map[string]any)[st.name] = saved
		delete(r.env, "response")
		if then == ThenDone {
			break
		}
	}
	s.session = sess
	s.sessGen++
	s.logger.Info("Logged in to the app (session)", "target", s.cfg.target, "session", s.sessGen)
	return s.sessGen, nil
}

func loginErr(err error) error {
	w := fmt.Errorf("session login: %w", err)
	if outbox.IsPermanent(err) {
		return outbox.Permanent(w)
	}
	return w
}

type tokenSource = oauth2.TokenSource
