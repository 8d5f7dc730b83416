package console_test

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
)

// Failed admin-token sign-ins from one address are limited: five are
// answered 401, then every sign-in from it, even with the right token, is
// 429 with a Retry-After, whatever X-Forwarded-For claims (no proxy is
// trusted); successful sign-ins cost nothing.
func TestSignInRateLimit(t *testing.T) {
	e := newEnv(t, true)
	b := e.browser(t)
	for i := range 8 {
		if resp, _ := b.post("/signin", url.Values{"token": {adminToken}}); resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("good sign-in %d: %d, want 303", i, resp.StatusCode)
		}
	}
	for i := range 5 {
		if resp, _ := b.post("/signin", url.Values{"token": {scimToken}}); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("failed sign-in %d: %d, want 401", i+1, resp.StatusCode)
		}
	}
	for _, tok := range []string{"wrong", adminToken} {
		req, _ := http.NewRequest("POST", e.admin+"/signin", strings.NewReader(url.Values{"token": {tok}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Forwarded-For", "203.0.113.9")
		resp, body := b.do(req)
		secs, err := strconv.Atoi(resp.Header.Get("Retry-After"))
		if resp.StatusCode != http.StatusTooManyRequests || err != nil || secs < 1 || secs > 12 || len(resp.Cookies()) != 0 {
			t.Errorf("sign-in with %q after 5 failures: %d, Retry-After %q, cookies %v; want 429, 1-12 s, none",
				tok, resp.StatusCode, resp.Header.Get("Retry-After"), resp.Cookies())
		}
		if !strings.Contains(body, "Too many failed sign-ins") {
			t.Errorf("429 page does not say why:\n%s", body)
		}
	}
	if !strings.Contains(e.log.String(), "too many failed sign-ins") {
		t.Error("the refusals are not logged")
	}
}
