package rest_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scimgate/scimgate/outbox"
	"github.com/scimgate/scimgate/outbox/rest"
)

// sender builds a rest sender without a dispatcher (no id map).
func sender(t *testing.T, section string) outbox.Sender {
	t.Helper()
	tg := outbox.Target{Name: "app", Type: outbox.TypeRest, Timeout: 2 * time.Second, Rest: restNode(t, section)}
	if errs := rest.Validate(tg, "t"); len(errs) > 0 {
		t.Fatalf("Validate: %v", errs)
	}
	s, err := rest.New(tg, outbox.Env{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.(interface{ Close() error }).Close() })
	return s
}

func ev(typ, id string) outbox.Event {
	e := userEvent(typ, id, "ada", "")
	e.ID = "evt_" + id
	return e
}

// TestAuthStaticBasicBearer: each kind of credentials reaches the app and
// none appears in an error.
func TestAuthStaticBasicBearer(t *testing.T) {
	var got []string
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Header.Get("Authorization")+"|"+r.Header.Get("X-Key"))
		mu.Unlock()
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, `{"error":"nope"}`)
	}))
	defer srv.Close()
	action := "\nactions:\n  user.updated:\n    - {name: put, method: PUT, path: '\"/u/\" + record.id', body: {a: 'record.login'}}\n"
	for _, c := range []struct{ auth, want, secret string }{
		{"headers: {X-Key: static-secret-1}", "|static-secret-1", "static-secret-1"},
		{"auth: {basic: {username: bob, password: pass-word-2}}", "Basic Ym9iOnBhc3Mtd29yZC0y|", "pass-word-2"},
		{"auth: {bearer: {token: tok-en-3}}", "Bearer tok-en-3|", "tok-en-3"},
	} {
		s := sender(t, "base_url: "+srv.URL+"\n"+c.auth+action)
		err := s.Send(context.Background(), ev("user.updated", "u1"))
		if !outbox.IsPermanent(err) {
			t.Errorf("%s: 403 gave %v, want a dead letter", c.auth, err)
		}
		var se *outbox.StatusError
		if !errors.As(err, &se) || se.StatusCode != 403 || !strings.Contains(se.Body, `{"error":"nope"}`) {
			t.Errorf("%s: %#v", c.auth, se)
		}
		if strings.Contains(err.Error()+se.Body, c.secret) {
			t.Errorf("%s: secret in %q / %q", c.auth, err, se.Body)
		}
		mu.Lock()
		if len(got) == 0 || got[len(got)-1] != c.want {
			t.Errorf("%s: app saw %q, want %q", c.auth, got, c.want)
		}
		mu.Unlock()
	}
}

// TestOAuth2ClientCredentials: the token is fetched once and reused; a 401
// fetches a new one and repeats the request once.
func TestOAuth2ClientCredentials(t *testing.T) {
	var fetches, calls atomic.Int32
	var revoked atomic.Bool
	tokens := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := fetches.Add(1)
		if u, p, _ := r.BasicAuth(); u != "cid" || p != "csecret-xyz" {
			w.WriteHeader(401)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":"at-%d-abcdef","token_type":"Bearer","expires_in":3600}`, n)
	}))
	defer tokens.Close()
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if revoked.Load() && r.Header.Get("Authorization") == "Bearer at-1-abcdef" {
			w.WriteHeader(401)
			return
		}
		w.WriteHeader(204)
	}))
	defer app.Close()
	s := sender(t, `base_url: `+app.URL+`
auth: {oauth2: {token_url: `+tokens.URL+`, client_id: cid, client_secret: csecret-xyz, scopes: [users]}}
actions:
  user.updated: [{name: put, method: PUT, path: '"/u"'}]
`)
	for i := range 3 {
		if err := s.Send(context.Background(), ev("user.updated", fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if fetches.Load() != 1 || calls.Load() != 3 {
		t.Errorf("fetches %d calls %d, want 1 and 3", fetches.Load(), calls.Load())
	}
	revoked.Store(true)
	if err := s.Send(context.Background(), ev("user.updated", "x")); err != nil {
		t.Fatal(err)
	}
	if fetches.Load() != 2 || calls.Load() != 5 {
		t.Errorf("after a 401: fetches %d calls %d, want 2 and 5", fetches.Load(), calls.Load())
	}
}

// TestSessionLogin: a login sequence (a login token first, then a form
// post whose cookie and token are kept) runs once for many events, and
// again when the app answers 401.
func TestSessionLogin(t *testing.T) {
	var logins, calls atomic.Int32
	var session atomic.Value
	session.Store("")
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/login-token":
			fmt.Fprint(w, `{"csrf":"c-123"}`)
		case "/login":
			if r.PostFormValue("user") != "svc" || r.PostFormValue("password") != "pw-secret-9" || r.PostFormValue("csrf") != "c-123" {
				w.WriteHeader(403)
				return
			}
			n := logins.Add(1)
			sid := fmt.Sprintf("sid-%d-long", n)
			session.Store(sid)
			http.SetCookie(w, &http.Cookie{Name: "sid", Value: sid})
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"token":"tk-%s"}`, sid)
		default:
			calls.Add(1)
			c, err := r.Cookie("sid")
			if err != nil || c.Value != session.Load().(string) || r.Header.Get("X-Token") != "tk-"+c.Value {
				w.WriteHeader(401)
				return
			}
			w.WriteHeader(204)
		}
	}))
	defer app.Close()
	s := sender(t, `base_url: `+app.URL+`
auth:
  session:
    steps:
      - {name: csrf, method: GET, path: '"/login-token"', save: {csrf: 'response.body.csrf'}}
      - name: login
        method: POST
        path: '"/login"'
        form: {user: '"svc"', password: '"pw-secret-9"', csrf: 'steps.csrf.csrf'}
        save: {token: 'response.body.token'}
    renew_on: [401]
actions:
  user.updated: [{name: put, method: PUT, path: '"/u"', headers: {X-Token: 'session.token'}}]
`)
	for i := range 3 {
		if err := s.Send(context.Background(), ev("user.updated", fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if logins.Load() != 1 || calls.Load() != 3 {
		t.Errorf("logins %d calls %d, want 1 and 3", logins.Load(), calls.Load())
	}
	session.Store("expired-elsewhere")
	if err := s.Send(context.Background(), ev("user.updated", "x")); err != nil {
		t.Fatal(err)
	}
	if logins.Load() != 2 || calls.Load() != 5 {
		t.Errorf("after a 401: logins %d calls %d, want 2 and 5", logins.Load(), calls.Load())
	}
}

// TestRateLimitConcurrencyIdempotency: requests of one target keep to its
// rate and concurrency; a write carries Idempotency-Key; a 429's
// Retry-After reaches the engine.
func TestRateLimitConcurrencyIdempotency(t *testing.T) {
	var inFlight, peak atomic.Int32
	var mu sync.Mutex
	var keys []string
	var times []time.Time
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		mu.Lock()
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		times = append(times, time.Now())
		mu.Unlock()
		time.Sleep(5 * time.Millisecond)
		if r.URL.Path == "/slow-down" {
			w.Header().Set("Retry-After", "7")
			w.WriteHeader(429)
			return
		}
		w.WriteHeader(204)
	}))
	defer app.Close()
	s := sender(t, `base_url: `+app.URL+`
rate_limit: {per_second: 50, burst: 1}
concurrency: 2
idempotency_key: true
actions:
  user.updated: [{name: put, method: PUT, path: '"/u"'}]
  user.deleted: [{name: del, method: DELETE, path: '"/slow-down"'}]
`)
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() {
			if err := s.Send(context.Background(), ev("user.updated", fmt.Sprint(i))); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if p := peak.Load(); p > 2 {
		t.Errorf("%d requests in flight, concurrency is 2", p)
	}
	mu.Lock()
	span := times[len(times)-1].Sub(times[0])
	// 10 requests at 50/s, burst 1: 9 intervals of 20 ms (180 ms) between
	// the limiter's grants; the app's clock sees them with scheduling jitter,
	// so allow a third less. Without the limit they take about 25 ms.
	if span < 120*time.Millisecond {
		t.Errorf("10 requests in %v at 50/s", span)
	}
	if keys[0] == "" || !strings.HasPrefix(keys[0], "evt_") {
		t.Errorf("Idempotency-Key %q", keys[0])
	}
	mu.Unlock()
	err := s.Send(context.Background(), ev("user.deleted", "z"))
	var se *outbox.StatusError
	if !errors.As(err, &se) || outbox.IsPermanent(err) || se.RetryAfter != 7*time.Second {
		t.Errorf("429: %v %#v", err, se)
	}
}

// TestReadsRetryInProcessWritesDoNot: a GET answered 502 is repeated by
// go-retryablehttp within the attempt; a PUT is sent once per attempt.
func TestReadsRetryInProcessWritesDoNot(t *testing.T) {
	var gets, puts atomic.Int32
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "GET" {
			if gets.Add(1) < 3 {
				w.WriteHeader(502)
				return
			}
			_ = json.NewEncoder(w).Encode(map[string]any{"id": 5})
			return
		}
		puts.Add(1)
		w.WriteHeader(502)
	}))
	defer app.Close()
	s := sender(t, `base_url: `+app.URL+`
actions:
  user.updated:
    - {name: get, method: GET, path: '"/u"', save: {id: 'response.body.id'}}
    - {name: put, method: PUT, path: '"/u/" + str(steps.get.id)'}
`)
	err := s.Send(context.Background(), ev("user.updated", "1"))
	if err == nil || outbox.IsPermanent(err) || !strings.Contains(err.Error(), "step put: PUT") {
		t.Fatalf("Send = %v, want a retryable failure of put", err)
	}
	if gets.Load() != 3 || puts.Load() != 1 {
		t.Errorf("gets %d puts %d, want 3 (two in-process retries) and 1", gets.Load(), puts.Load())
	}
}

// TestTransportErrorsClassified: a refused connection retries; a server
// whose certificate is not trusted dead-letters.
func TestTransportErrorsClassified(t *testing.T) {
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer tlsSrv.Close()
	action := "\nactions:\n  user.updated: [{name: put, method: PUT, path: '\"/u?token=sekrit\"'}]\n"
	err := sender(t, "base_url: "+tlsSrv.URL+action).Send(context.Background(), ev("user.updated", "1"))
	if !outbox.IsPermanent(err) || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("untrusted certificate: %v, want permanent", err)
	}
	err = sender(t, "base_url: http://127.0.0.1:1"+action).Send(context.Background(), ev("user.updated", "1"))
	if err == nil || outbox.IsPermanent(err) || strings.Contains(err.Error(), "sekrit") {
		t.Errorf("refused: %v, want a retry without the query", err)
	}
}

// TestTLSClientCertificate: ca_file trusts the app's certificate, and
// cert_file/key_file present ours.
func TestTLSClientCertificate(t *testing.T) {
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "scimgate-client"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	write := func(name, typ string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	certFile, keyFile := write("c.pem", "CERTIFICATE", der), write("k.pem", "EC PRIVATE KEY", kder)
	var cn atomic.Value
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cn.Store(r.TLS.PeerCertificates[0].Subject.CommonName)
		w.WriteHeader(204)
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAnyClientCert}
	srv.StartTLS()
	defer srv.Close()
	caFile := write("ca.pem", "CERTIFICATE", srv.Certificate().Raw)
	s := sender(t, "base_url: "+srv.URL+"\ntls: {ca_file: "+caFile+", cert_file: "+certFile+", key_file: "+keyFile+"}\n"+
		"actions:\n  user.updated: [{name: put, method: PUT, path: '\"/u\"'}]\n")
	if err := s.Send(context.Background(), ev("user.updated", "1")); err != nil {
		t.Fatal(err)
	}
	if cn.Load() != "scimgate-client" {
		t.Errorf("client certificate %v", cn.Load())
	}
}

// TestExpressionErrorsAndMetrics: an expression that fails at run time
// (an index out of range) dead-letters naming the step, the field and the
// line, without a request; for_each sends one request per item; the
// collectors count requests by target, step and outcome.
func TestExpressionErrorsAndMetrics(t *testing.T) {
	var paths []string
	var mu sync.Mutex
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.Method+" "+r.URL.EscapedPath())
		mu.Unlock()
		w.WriteHeader(204)
	}))
	defer app.Close()
	s := sender(t, `base_url: `+app.URL+`
actions:
  user.updated:
    - name: roles
      method: PUT
      for_each: 'record.roles'
      path: '"/roles/" + urlPath(item)'
    - name: bad
      method: PUT
      path: '"/u"'
      body:
        first: 'record.roles[5]'
`)
	e := userEvent("user.updated", "m1", "ada", `,"roles":["a b","c"]`)
	e.ID = "evt_m1"
	err := s.Send(context.Background(), e)
	if !outbox.IsPermanent(err) || !strings.Contains(err.Error(), "step bad: body.first (line 12)") {
		t.Fatalf("Send = %v", err)
	}
	mu.Lock()
	if strings.Join(paths, ",") != "PUT /roles/a%20b,PUT /roles/c" {
		t.Errorf("the app saw %v", paths)
	}
	mu.Unlock()
	reg := prometheus.NewRegistry()
	reg.MustRegister(rest.Collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var ok float64
	for _, mf := range mfs {
		if mf.GetName() != "scimgate_rest_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			if l["target"] == "app" && l["step"] == "roles" && l["outcome"] == "ok" {
				ok = m.GetCounter().GetValue()
			}
		}
	}
	if ok < 2 {
		t.Errorf("scimgate_rest_requests_total{step=roles,outcome=ok} = %v, want ≥ 2", ok)
	}
}

// TestSessionExpiredWhenAndFailedLogin: an app that answers 200 with
// "session expired" in the body is logged into again (expired_when); a
// refused login dead-letters without showing the credentials it sent.
func TestSessionExpiredWhenAndFailedLogin(t *testing.T) {
	var logins atomic.Int32
	var valid atomic.Value
	valid.Store("")
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/login":
			if r.PostFormValue("password") != "pw-very-secret" {
				w.WriteHeader(401)
				fmt.Fprint(w, `{"error":"bad password"}`)
				return
			}
			tok := fmt.Sprintf("t%d-abcdef", logins.Add(1))
			valid.Store(tok)
			fmt.Fprintf(w, `{"token":%q}`, tok)
		default:
			if r.Header.Get("X-Token") != valid.Load().(string) {
				fmt.Fprint(w, `{"error":"session expired"}`)
				return
			}
			fmt.Fprint(w, `{"ok":true}`)
		}
	}))
	defer app.Close()
	section := func(pw string) string {
		return `base_url: ` + app.URL + `
auth:
  session:
    steps: [{name: login, method: POST, path: '"/login"', form: {password: '"` + pw + `"'}, save: {token: 'response.body.token'}}]
    expired_when: 'response.body?.error == "session expired"'
actions:
  user.updated: [{name: put, method: PUT, path: '"/u"', headers: {X-Token: 'session.token'}}]
`
	}
	s := sender(t, section("pw-very-secret"))
	if err := s.Send(context.Background(), ev("user.updated", "1")); err != nil {
		t.Fatal(err)
	}
	valid.Store("rotated")
	if err := s.Send(context.Background(), ev("user.updated", "2")); err != nil {
		t.Fatal(err)
	}
	if logins.Load() != 2 {
		t.Errorf("logins = %d, want 2 (the expired session renewed)", logins.Load())
	}
	err := sender(t, section("pw-wrong-guess")).Send(context.Background(), ev("user.updated", "3"))
	var se *outbox.StatusError
	if !outbox.IsPermanent(err) || !errors.As(err, &se) || se.StatusCode != 401 || !strings.Contains(err.Error(), "session login") {
		t.Fatalf("refused login: %v", err)
	}
	if strings.Contains(se.Body+err.Error(), "pw-wrong-guess") || !strings.Contains(se.Body, "bad password") {
		t.Errorf("dead letter of a refused login:\n%s", se.Body)
	}
}
