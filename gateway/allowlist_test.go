package gateway_test

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/scimgate/scimgate/gateway"
)

// A credential with allowed_cidrs used from elsewhere gets 403 on
// every route; the same credential from an allowed address works.
func TestAllowedCIDRs(t *testing.T) {
	const basicUser, basicPass = "okta-key", "basic-secret-0123456789"
	ts := newOAuthServer(t, func(c *gateway.Config) {
		c.Auth.BearerTokens = []gateway.BearerToken{
			{Token: gateway.HashToken(testToken), AllowedCIDRs: []string{"10.0.0.0/8"}},
			{Token: gateway.HashToken("local-token-0123456789"), AllowedCIDRs: []string{"127.0.0.1"}},
		}
		c.Auth.Basic = []gateway.BasicCredential{{Username: basicUser, Password: gateway.HashToken(basicPass), AllowedCIDRs: []string{"192.0.2.0/24"}}}
		c.Auth.OAuthClients[0].AllowedCIDRs = []string{"2001:db8::/32"}
	})
	routes := []struct{ method, path, body string }{
		{"GET", "/Users", ""}, {"POST", "/Users", createAda}, {"GET", "/Users/x", ""}, {"DELETE", "/Users/x", ""},
		{"GET", "/Groups", ""}, {"GET", "/ServiceProviderConfig", ""}, {"GET", "/Schemas", ""}, {"GET", "/ResourceTypes", ""},
		{"GET", "/NoSuchThing", ""},
	}
	for _, rt := range routes {
		detail := ts.do(rt.method, rt.path, rt.body).scimError(t, http.StatusForbidden, "")
		if !strings.Contains(detail, "127.0.0.1") || !strings.Contains(detail, "allowed_cidrs") {
			t.Errorf("%s %s: 403 detail %q should name the address and allowed_cidrs", rt.method, rt.path, detail)
		}
		basic := ts.do(rt.method, rt.path, rt.body, "Authorization", "Basic "+basicAuth(basicUser, basicPass))
		basic.scimError(t, http.StatusForbidden, "")
	}
	bearer(t, ts.testServer, "local-token-0123456789", "GET", "/Users", "").must(t, 200)
	code, body, _ := ts.tokenRequest(t, url.Values{"grant_type": {"client_credentials"}}, clientID, clientSecret)
	if code != 400 || body["error"] != "unauthorized_client" { // RFC 6749 §5.2
		t.Errorf("token request from outside the client's allowed_cidrs = %d %v, want 400 unauthorized_client", code, body)
	}
}

// Behind a trusted proxy the client address is the nearest
// untrusted hop of X-Forwarded-For (the header read by default);
// from anyone else the header is ignored.
func TestTrustedProxies(t *testing.T) {
	allow := func(c *gateway.Config) {
		c.Auth.BearerTokens = []gateway.BearerToken{{Token: gateway.HashToken(testToken), AllowedCIDRs: []string{"203.0.113.0/24"}}}
	}
	behind := newOAuthServer(t, allow, func(c *gateway.Config) { c.TrustedProxies = []string{"127.0.0.0/8", "10.1.0.0/16"} })
	for _, tc := range []struct {
		header, value string
		want          int
	}{
		{"X-Forwarded-For", "203.0.113.7", 200},
		{"X-Forwarded-For", "203.0.113.7, 10.1.2.3", 200},       // through a second trusted proxy
		{"X-Forwarded-For", "198.51.100.1", 403},                // outside
		{"X-Forwarded-For", "203.0.113.7, 198.51.100.1", 403},   // a client cannot prepend its way in
		{"Forwarded", `for=203.0.113.7;proto=https`, 403},       // not the header named (see TestForwardedHeaderChoice)
		{"Forwarded", `for=198.51.100.1, for=203.0.113.7`, 403}, // the same
		{"X-Forwarded-For", "not-an-address", 403},              // unparseable: stop at the proxy itself
		{"", "", 403}, // the proxy's own address
	} {
		r := behind.do("GET", "/Users", "", tc.header, tc.value)
		if tc.header == "" {
			r = behind.do("GET", "/Users", "")
		}
		if r.status != tc.want {
			t.Errorf("behind a trusted proxy, %s: %s → %d, want %d", tc.header, tc.value, r.status, tc.want)
		}
	}
	direct := newOAuthServer(t, allow) // no trusted proxies: headers are not believed
	for _, h := range [][2]string{{"X-Forwarded-For", "203.0.113.7"}, {"Forwarded", "for=203.0.113.7"}} {
		direct.do("GET", "/Users", "", h[0], h[1]).scimError(t, http.StatusForbidden, "")
	}
}

func basicAuth(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
}
