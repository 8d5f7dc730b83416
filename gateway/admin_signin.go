package gateway

import (
	"net/http"
	"time"
)

// The console's sign-in limit: per client address, signInBurst failed
// admin-token sign-ins, then one more each signInEvery; beyond it every
// sign-in from that address (even with the right token) gets 429 with
// Retry-After until the budget refills. The address is the SCIM
// listener's notion of the client (its trusted proxies apply).
const (
	signInBurst = 5
	signInEvery = 12 * time.Second
)

// signInLimit is the console's SignInLimiter over the limiter the SCIM
// token endpoint uses, charged only by failures.
type signInLimit struct {
	a   *Admin
	lim *limiter
}

func newSignInLimit(a *Admin) *signInLimit {
	return &signInLimit{a: a, lim: newLimiter(1/signInEvery.Seconds(), signInBurst)}
}

func (s *signInLimit) key(r *http.Request) string {
	if s.a.scim != nil {
		return s.a.scim.auth.Load().client(r).String()
	}
	return r.RemoteAddr
}

// Wait returns how long r's address must wait before signing in (0: now).
func (s *signInLimit) Wait(r *http.Request) time.Duration {
	return s.lim.wait(s.key(r), time.Now())
}

// Failed charges r's address with a failed sign-in.
func (s *signInLimit) Failed(r *http.Request) { s.lim.reserve(s.key(r), time.Now()) }
