package gateway_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/scimgate/scimgate/gateway"
	"github.com/scimgate/scimgate/gateway/store"
	"github.com/scimgate/scimgate/mapping"
)

const (
	clientID     = "entra-provisioning"
	clientSecret = "client-secret-0123456789abcdef"
)

// oauthServer is the SCIM API with one OAuth client, a controllable clock
// and direct access to the Server for reloads.
type oauthServer struct {
	*testServer
	srv *gateway.Server
	cfg gateway.Config

	mu  sync.Mutex
	now time.Time
}

func newOAuthServer(t *testing.T, mutate ...func(*gateway.Config)) *oauthServer {
	t.Helper()
	db := mustOpenDB(t)
	mapper, err := mapping.Compile(mapping.DefaultRules())
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(db, mapper, store.Options{})
	t.Cleanup(st.Close)
	cfg := gateway.DefaultConfig()
	cfg.Auth.BearerTokens = gateway.Tokens(gateway.HashToken(testToken))
	cfg.Auth.OAuthClients = []gateway.OAuthClient{{ClientID: clientID, ClientSecrets: []string{gateway.HashToken(clientSecret)}}}
	for _, m := range mutate {
		m(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	os := &oauthServer{cfg: cfg, now: time.Now()}
	os.srv = gateway.NewServer(cfg, st, slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError})), nil)
	os.srv.SetClock(func() time.Time { os.mu.Lock(); defer os.mu.Unlock(); return os.now })
	hs := httptest.NewServer(os.srv)
	t.Cleanup(hs.Close)
	os.testServer = &testServer{t: t, url: hs.URL + "/scim/v2", store: st, srv: hs}
	return os
}

func (os *oauthServer) advance(d time.Duration) {
	os.mu.Lock()
	os.now = os.now.Add(d)
	os.mu.Unlock()
}

func (os *oauthServer) tokenURL() string { return os.url + "/oauth/token" }

// tokenRequest posts a raw form to the token endpoint.
func (os *oauthServer) tokenRequest(t *testing.T, form url.Values, basicID, basicSecret string) (int, map[string]any, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("POST", os.tokenURL(), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basicID != "" {
		req.SetBasicAuth(url.QueryEscape(basicID), url.QueryEscape(basicSecret))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatalf("token endpoint answered non-JSON %d: %s", resp.StatusCode, raw)
	}
	return resp.StatusCode, body, resp.Header
}

const createAda = `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ada@example.com","active":true}`

// The standard Go client obtains a token and provisions with it,
// with the client authenticated in the header and in the body.
func TestOAuthClientCredentials(t *testing.T) {
	os := newOAuthServer(t)
	for i, style := range []oauth2.AuthStyle{oauth2.AuthStyleInHeader, oauth2.AuthStyleInParams} {
		cc := clientcredentials.Config{ClientID: clientID, ClientSecret: clientSecret, TokenURL: os.tokenURL(), AuthStyle: style}
		tok, err := cc.Token(context.Background())
		if err != nil {
			t.Fatalf("style %d: token: %v", style, err)
		}
		if !strings.HasPrefix(tok.AccessToken, "sgat_") || tok.TokenType != "Bearer" || time.Until(tok.Expiry) < 50*time.Minute {
			t.Errorf("style %d: token %+v", style, tok)
		}
		client := cc.Client(context.Background())
		body := strings.Replace(createAda, "ada@", []string{"ada@", "grace@"}[i]+"", 1)
		req, _ := http.NewRequest("POST", os.url+"/Users", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/scim+json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Errorf("style %d: POST /Users with the access token = %d, want 201", style, resp.StatusCode)
		}
	}
	code, body, h := os.tokenRequest(t, url.Values{"grant_type": {"client_credentials"}, "scope": {"anything"}}, clientID, clientSecret)
	if code != 200 || body["expires_in"] != float64(3600) || body["token_type"] != "Bearer" || h.Get("Cache-Control") != "no-store" ||
		!strings.HasPrefix(h.Get("Content-Type"), "application/json") || body["scope"] != "scim" {
		t.Errorf("token response %d %v %v", code, body, h)
	}
	// The discovery document says how to authenticate.
	r := os.do("GET", "/ServiceProviderConfig", "").must(t, 200)
	if !strings.Contains(r.raw, `"type":"oauth2"`) {
		t.Errorf("ServiceProviderConfig does not advertise oauth2: %s", r.raw)
	}
}

// Each failure gets the RFC's error.
func TestOAuthErrors(t *testing.T) {
	os := newOAuthServer(t)
	grant := url.Values{"grant_type": {"client_credentials"}}
	for _, tc := range []struct {
		name       string
		form       url.Values
		id, secret string
		status     int
		code       string
	}{
		{"wrong secret", grant, clientID, "wrong-secret-0123456789", 401, "invalid_client"},
		{"unknown client", grant, "nobody", clientSecret, 401, "invalid_client"},
		{"no credentials", grant, "", "", 401, "invalid_client"},
		{"wrong grant", url.Values{"grant_type": {"password"}, "username": {"x"}}, clientID, clientSecret, 400, "unsupported_grant_type"},
		{"no grant", url.Values{}, clientID, clientSecret, 400, "invalid_request"},
		{"repeated parameter", url.Values{"grant_type": {"client_credentials", "client_credentials"}}, clientID, clientSecret, 400, "invalid_request"},
		{"secret in body wrong", url.Values{"grant_type": {"client_credentials"}, "client_id": {clientID}, "client_secret": {"nope-0123456789abcdef"}}, "", "", 401, "invalid_client"},
	} {
		code, body, h := os.tokenRequest(t, tc.form, tc.id, tc.secret)
		if code != tc.status || body["error"] != tc.code || body["error_description"] == "" {
			t.Errorf("%s: %d %v, want %d %s with a description", tc.name, code, body, tc.status, tc.code)
		}
		if code == 401 && !strings.HasPrefix(h.Get("WWW-Authenticate"), "Basic") {
			t.Errorf("%s: 401 without a Basic challenge: %q", tc.name, h.Get("WWW-Authenticate"))
		}
		if strings.Contains(body["error_description"].(string), tc.secret) && tc.secret != "" {
			t.Errorf("%s: the error quotes the secret", tc.name)
		}
	}
	// Not form-encoded.
	req, _ := http.NewRequest("POST", os.tokenURL(), strings.NewReader(`{"grant_type":"client_credentials"}`))
	req.Header.Set("Content-Type", "application/json")
	req.SetBasicAuth(clientID, clientSecret)
	resp, _ := http.DefaultClient.Do(req)
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("JSON body = %d, want 400", resp.StatusCode)
	}
	// Wrong method.
	resp, _ = http.Get(os.tokenURL())
	resp.Body.Close()
	if resp.StatusCode != 405 || resp.Header.Get("Allow") != "POST" {
		t.Errorf("GET token endpoint = %d Allow %q, want 405 POST", resp.StatusCode, resp.Header.Get("Allow"))
	}
}

func bearer(t *testing.T, ts *testServer, token, method, path, body string) response {
	t.Helper()
	return ts.do(method, path, body, "Authorization", "Bearer "+token)
}

// An expired token and a token whose client (or secret) was
// removed get RFC 6750 invalid_token.
func TestOAuthTokenLifecycle(t *testing.T) {
	os := newOAuthServer(t)
	token := func() string {
		code, body, _ := os.tokenRequest(t, url.Values{"grant_type": {"client_credentials"}}, clientID, clientSecret)
		if code != 200 {
			t.Fatalf("token: %d %v", code, body)
		}
		return body["access_token"].(string)
	}
	tok := token()
	bearer(t, os.testServer, tok, "GET", "/Users", "").must(t, 200)

	os.advance(59 * time.Minute)
	bearer(t, os.testServer, tok, "GET", "/Users", "").must(t, 200)
	os.advance(2 * time.Minute)
	r := bearer(t, os.testServer, tok, "GET", "/Users", "")
	r.scimError(t, 401, "")
	if h := r.header.Get("WWW-Authenticate"); !strings.Contains(h, `error="invalid_token"`) || !strings.Contains(h, "expired") {
		t.Errorf("expired token challenge = %q", h)
	}
	// A tampered token is invalid, not expired.
	tok = token()
	r = bearer(t, os.testServer, tok[:len(tok)-2]+"xx", "GET", "/Users", "")
	if h := r.header.Get("WWW-Authenticate"); r.status != 401 || !strings.Contains(h, `error="invalid_token"`) || strings.Contains(h, "expired") {
		t.Errorf("tampered token: %d %q", r.status, h)
	}

	// Rotating the secret: a token issued with a secret that stays valid
	// keeps working; removing that secret revokes it.
	cfg := os.cfg
	cfg.Auth.OAuthClients = []gateway.OAuthClient{{ClientID: clientID, ClientSecrets: []string{gateway.HashToken(clientSecret), gateway.HashToken("second-secret-0123456789")}}}
	changes, err := os.srv.Reload(cfg)
	if err != nil || len(changes) == 0 || strings.Contains(strings.Join(changes, " "), "secret-0123") {
		t.Fatalf("Reload = %v, %v", changes, err)
	}
	bearer(t, os.testServer, tok, "GET", "/Users", "").must(t, 200)
	cfg.Auth.OAuthClients[0].ClientSecrets = []string{gateway.HashToken("second-secret-0123456789")}
	if _, err := os.srv.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	bearer(t, os.testServer, tok, "GET", "/Users", "").scimError(t, 401, "")
	// Removing the client revokes its tokens.
	code, body, _ := os.tokenRequest(t, url.Values{"grant_type": {"client_credentials"}}, clientID, "second-secret-0123456789")
	if code != 200 {
		t.Fatalf("token with the new secret: %d %v", code, body)
	}
	tok = body["access_token"].(string)
	bearer(t, os.testServer, tok, "GET", "/Users", "").must(t, 200)
	cfg.Auth.OAuthClients = nil
	if _, err := os.srv.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	r = bearer(t, os.testServer, tok, "GET", "/Users", "")
	r.scimError(t, 401, "")
	if h := r.header.Get("WWW-Authenticate"); !strings.Contains(h, `error="invalid_token"`) {
		t.Errorf("revoked token challenge = %q", h)
	}
	// An invalid config is refused and the running one kept.
	bad := cfg
	bad.Auth.OAuthClients = []gateway.OAuthClient{{ClientID: "x"}}
	if _, err := os.srv.Reload(bad); err == nil {
		t.Error("Reload accepted a client without secrets")
	}
	bearer(t, os.testServer, testToken, "GET", "/Users", "").must(t, 200)
}

// The token endpoint is rate-limited per client address.
func TestOAuthTokenRateLimit(t *testing.T) {
	os := newOAuthServer(t, func(c *gateway.Config) { c.Limits.TokenRatePerSecond, c.Limits.TokenBurst = 0.1, 3 })
	var last int
	var body map[string]any
	var h http.Header
	for range 4 {
		last, body, h = os.tokenRequest(t, url.Values{"grant_type": {"client_credentials"}}, clientID, clientSecret)
	}
	if last != 429 || body["error"] != "slow_down" || h.Get("Retry-After") == "" {
		t.Errorf("4th token request in a burst of 3: %d %v Retry-After %q", last, body, h.Get("Retry-After"))
	}
}

// A secret removed and then added back does not revive
// the tokens issued under it before its removal; a token issued after it
// came back works.
func TestOAuthReAddedSecretKeepsTokensDead(t *testing.T) {
	os := newOAuthServer(t)
	const other = "other-secret-0123456789abcdef"
	token := func(secret string) string {
		t.Helper()
		code, body, _ := os.tokenRequest(t, url.Values{"grant_type": {"client_credentials"}}, clientID, secret)
		if code != 200 {
			t.Fatalf("token: %d %v", code, body)
		}
		return body["access_token"].(string)
	}
	reload := func(secrets ...string) {
		t.Helper()
		cfg := os.cfg
		cfg.Auth.OAuthClients = []gateway.OAuthClient{{ClientID: clientID}}
		for _, s := range secrets {
			cfg.Auth.OAuthClients[0].ClientSecrets = append(cfg.Auth.OAuthClients[0].ClientSecrets, gateway.HashToken(s))
		}
		if _, err := os.srv.Reload(cfg); err != nil {
			t.Fatal(err)
		}
	}
	old := token(clientSecret)
	bearer(t, os.testServer, old, "GET", "/Users", "").must(t, 200)
	reload(other) // clientSecret removed
	bearer(t, os.testServer, old, "GET", "/Users", "").scimError(t, 401, "")
	reload(other, clientSecret) // and added back
	bearer(t, os.testServer, old, "GET", "/Users", "").scimError(t, 401, "")
	fresh := token(clientSecret)
	bearer(t, os.testServer, fresh, "GET", "/Users", "").must(t, 200)
	// A secret kept across a reload keeps its tokens.
	kept := token(other)
	reload(other)
	bearer(t, os.testServer, kept, "GET", "/Users", "").must(t, 200)
	bearer(t, os.testServer, fresh, "GET", "/Users", "").scimError(t, 401, "")
}

// Two token requests in the same second (here the same
// instant: the clock is frozen) get different tokens, both valid.
func TestOAuthTokensCarryTheirOwnRandomness(t *testing.T) {
	os := newOAuthServer(t)
	seen := map[string]bool{}
	for i := range 3 {
		code, body, _ := os.tokenRequest(t, url.Values{"grant_type": {"client_credentials"}}, clientID, clientSecret)
		if code != 200 {
			t.Fatalf("token %d: %d %v", i, code, body)
		}
		tok := body["access_token"].(string)
		if seen[tok] {
			t.Fatalf("token request %d at the same instant got a token already issued", i)
		}
		seen[tok] = true
		bearer(t, os.testServer, tok, "GET", "/Users", "").must(t, 200)
	}
}
