package gateway_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"

	"github.com/scimgate/scimgate/gateway"
)

// fromAddr returns a client whose connections come from the loopback
// address ip (127.0.0.0/8 is all local on Linux), so one test can play
// several clients with different addresses.
func fromAddr(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return d.DialContext(ctx, network, addr)
	}}}
}

func send(t *testing.T, c *http.Client, method, u, body string, headers ...string) int {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// Behind a trusted proxy that appends X-Forwarded-For and
// passes a client's Forwarded header through (Go's httputil.ReverseProxy,
// here a real one in front of the gateway; nginx's
// proxy_add_x_forwarded_for, ingress-nginx and AWS ALB behave alike), a
// client-written "Forwarded: for=127.0.0.5" neither passes allowed_cidrs
// nor gives each token guess a fresh rate-limit bucket.
func TestForwardedBehindAppendingProxy(t *testing.T) {
	ts := newOAuthServer(t, func(c *gateway.Config) {
		c.TrustedProxies = []string{"127.0.0.1"} // the proxy's outgoing address
		c.Auth.BearerTokens = []gateway.BearerToken{{Token: gateway.HashToken(testToken), AllowedCIDRs: []string{"127.0.0.5"}}}
		c.Limits.TokenRatePerSecond, c.Limits.TokenBurst = 0.001, 10 // no refill during the test
	})
	target, err := url.Parse(ts.testServer.srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httptest.NewServer(httputil.NewSingleHostReverseProxy(target))
	t.Cleanup(proxy.Close)
	users := proxy.URL + "/scim/v2/Users"
	auth := "Bearer " + testToken

	attacker := fromAddr("127.0.0.2")
	for _, h := range [][]string{
		{"Forwarded", "for=127.0.0.5"},
		{"Forwarded", `for="127.0.0.5:4711";proto=https`},
		{"Forwarded", "for=127.0.0.5", "X-Real-IP", "127.0.0.5"},
		{"X-Forwarded-For", "127.0.0.5, 127.0.0.1"}, // prepended: the proxy appends 127.0.0.2 after it
	} {
		if code := send(t, attacker, "GET", users, "", append([]string{"Authorization", auth}, h...)...); code != http.StatusForbidden {
			t.Errorf("from 127.0.0.2 through the proxy with %q: %d, want 403 (the client's own header believed)", h, code)
		}
	}
	if code := send(t, fromAddr("127.0.0.5"), "GET", users, "", "Authorization", auth); code != http.StatusOK {
		t.Errorf("from the allowed 127.0.0.5 through the proxy: %d, want 200", code)
	}

	// 40 secret guesses, each claiming another address: one bucket, the
	// attacker's, so the burst of 10 is all it gets.
	token := proxy.URL + "/scim/v2/oauth/token"
	var refused, limited int
	for i := range 40 {
		form := url.Values{"grant_type": {"client_credentials"}, "client_id": {clientID}, "client_secret": {"guess-" + strings.Repeat("x", i+10)}}
		code := send(t, attacker, "POST", token, form.Encode(), "Content-Type", "application/x-www-form-urlencoded",
			"Forwarded", "for=10.0.0."+string(rune('0'+i%10))+string(rune('0'+i/10)))
		switch code {
		case http.StatusUnauthorized:
			refused++
		case http.StatusTooManyRequests:
			limited++
		default:
			t.Fatalf("guess %d: %d", i, code)
		}
	}
	if refused != 10 || limited != 30 {
		t.Errorf("40 guesses through the proxy with forged Forwarded headers: %d × 401, %d × 429; want 10 and 30", refused, limited)
	}
}

// The operator names the one header read; the others are
// ignored, whatever they say.
func TestForwardedHeaderChoice(t *testing.T) {
	allow := func(c *gateway.Config) {
		c.TrustedProxies = []string{"127.0.0.0/8"}
		c.Auth.BearerTokens = []gateway.BearerToken{{Token: gateway.HashToken(testToken), AllowedCIDRs: []string{"203.0.113.0/24"}}}
	}
	for _, tc := range []struct {
		header string // scim.forwarded_header; "" is the default
		h      []string
		want   int
	}{
		{"", []string{"X-Forwarded-For", "203.0.113.7"}, 200},
		{"", []string{"Forwarded", "for=203.0.113.7"}, 403},
		{"", []string{"X-Real-IP", "203.0.113.7"}, 403},
		{"Forwarded", []string{"Forwarded", "for=203.0.113.7"}, 200},
		{"Forwarded", []string{"Forwarded", "for=198.51.100.1, for=203.0.113.7"}, 200},
		{"Forwarded", []string{"Forwarded", "for=203.0.113.7, proto=https"}, 403}, // an element without for=: not believed past it
		{"Forwarded", []string{"X-Forwarded-For", "203.0.113.7"}, 403},
		{"forwarded", []string{"Forwarded", "for=203.0.113.7"}, 200}, // header names are case-insensitive
		{"X-Real-IP", []string{"X-Real-IP", "203.0.113.7"}, 200},
		{"X-Real-IP", []string{"X-Forwarded-For", "203.0.113.7"}, 403},
		{"X-Real-IP", []string{"Forwarded", "for=203.0.113.7"}, 403},
	} {
		ts := newOAuthServer(t, allow, func(c *gateway.Config) {
			if tc.header != "" {
				c.ForwardedHeader = tc.header
			}
		})
		if r := ts.do("GET", "/Users", "", tc.h...); r.status != tc.want {
			t.Errorf("forwarded_header %q, request with %q: %d, want %d", tc.header, tc.h, r.status, tc.want)
		}
	}
	c := gateway.DefaultConfig()
	c.ForwardedHeader = "X-Forwarded-For: 1"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "forwarded_header") {
		t.Errorf("an invalid header name: %v, want an error naming scim.forwarded_header", err)
	}
}
