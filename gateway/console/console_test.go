package console_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/scimgate/scimgate/gateway"
	"github.com/scimgate/scimgate/gateway/console"
	"github.com/scimgate/scimgate/gateway/store"
	"github.com/scimgate/scimgate/mapping"
	"github.com/scimgate/scimgate/outbox"
	"github.com/scimgate/scimgate/outbox/webhook"
)

const (
	adminToken = "admin-token-0123456789abcdef"
	scimToken  = "scim-token-0123456789abcdef0"
	apiToken   = "api-token-0123456789abcdef00"
)

// syncBuffer is a log the test reads while the gateway writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// env is a SCIM server, a dispatcher delivering to a receiver whose answer
// the test sets, and the admin listener with the console, over one bbolt
// file.
type env struct {
	admin, scim string
	status      atomic.Int32
	got         atomic.Int32
	d           *outbox.Dispatcher
	st          *store.Store
	db          *bolt.DB
	log         *syncBuffer
}

// newEnv builds the env; opts change the outbox config (rcv is the
// receiver's URL) before the dispatcher is built.
func newEnv(t testing.TB, consoleOn bool, opts ...func(cfg *outbox.Config)) *env {
	t.Helper()
	e := &env{log: &syncBuffer{}}
	e.status.Store(204)
	db, err := bolt.Open(filepath.Join(t.TempDir(), "scimgate.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Update(func(tx *bolt.Tx) error {
		if err := store.InitBuckets(tx); err != nil {
			return err
		}
		return outbox.InitBuckets(tx)
	}); err != nil {
		t.Fatal(err)
	}
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		s := int(e.status.Load())
		if s < 300 {
			e.got.Add(1)
		}
		w.WriteHeader(s)
		io.WriteString(w, `{"error":"no such department"}`)
	}))
	t.Cleanup(rcv.Close)
	logger := slog.New(slog.NewTextHandler(e.log, nil))
	secret, _ := outbox.NewSecret()
	ocfg := outbox.DefaultConfig()
	ocfg.Transports = map[string]outbox.Transport{outbox.TypeWebhook: webhook.Transport()}
	ocfg.PollInterval = 20 * time.Millisecond
	ocfg.Targets = []outbox.Target{{Name: "app", URL: rcv.URL + "/hooks", Secrets: []string{secret}, Timeout: 2 * time.Second}}
	for _, o := range opts {
		o(&ocfg)
	}
	d, err := outbox.NewDispatcher(db, ocfg, logger, outbox.NewMetrics())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	mapper, err := mapping.Compile(mapping.DefaultRules())
	if err != nil {
		t.Fatal(err)
	}
	feed := outbox.NewFeed(db, outbox.FeedConfig{})
	st := store.New(db, mapper, store.Options{OnCommit: func() { d.Notify(); feed.Notify() }})
	t.Cleanup(st.Close)
	d.SetSnapshot(st.Snapshot)
	gcfg := gateway.DefaultConfig()
	gcfg.Auth.BearerTokens = gateway.Tokens(gateway.HashToken(scimToken))
	srv := gateway.NewServer(gcfg, st, logger, gateway.NewMetrics())
	srv.SetMapper(mapper)
	scimSrv := httptest.NewServer(srv)
	t.Cleanup(scimSrv.Close)
	acfg := gateway.DefaultAdminConfig()
	acfg.Tokens = []string{gateway.HashToken(adminToken)}
	acfg.Console = consoleOn
	api := gateway.DefaultAPIConfig()
	api.Tokens = []string{gateway.HashToken(apiToken)}
	admin := gateway.NewAdmin(acfg, gateway.AdminDeps{DB: db, Store: st, SCIM: srv, Dispatcher: d, Gatherer: prometheus.NewRegistry(),
		Logger: logger, Version: "test", API: api, Feed: feed})
	adminSrv := httptest.NewServer(admin)
	t.Cleanup(adminSrv.Close)
	e.admin, e.scim, e.d, e.st, e.db = adminSrv.URL, scimSrv.URL+"/scim/v2", d, st, db
	waitFor(t, "the dispatcher runs", d.Ready)
	return e
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// browser is a client with a cookie jar that does not follow redirects.
type browser struct {
	t    *testing.T
	base string
	c    *http.Client
}

func (e *env) browser(t *testing.T) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, base: e.admin, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

func (b *browser) do(req *http.Request) (*http.Response, string) {
	b.t.Helper()
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp, string(raw)
}

func (b *browser) get(path string) (*http.Response, string) {
	b.t.Helper()
	req, _ := http.NewRequest("GET", b.base+path, nil)
	return b.do(req)
}

func (b *browser) post(path string, form url.Values) (*http.Response, string) {
	b.t.Helper()
	req, _ := http.NewRequest("POST", b.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

var csrfRe = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

// signIn signs in with the admin token and returns the page's CSRF token.
func (b *browser) signIn() string {
	b.t.Helper()
	resp, _ := b.post("/signin", url.Values{"token": {adminToken}, "next": {"/"}})
	if resp.StatusCode != http.StatusSeeOther {
		b.t.Fatalf("sign in: %d, want 303", resp.StatusCode)
	}
	resp, body := b.get("/")
	if resp.StatusCode != 200 {
		b.t.Fatalf("overview after sign-in: %d", resp.StatusCode)
	}
	m := csrfRe.FindStringSubmatch(body)
	if m == nil {
		b.t.Fatalf("no CSRF token on the overview:\n%s", body)
	}
	return m[1]
}

func (e *env) scimCall(t *testing.T, method, path, body string) string {
	t.Helper()
	req, _ := http.NewRequest(method, e.scim+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+scimToken)
	req.Header.Set("Content-Type", "application/scim+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	return string(raw)
}

var idRe = regexp.MustCompile(`"id"\s*:\s*"([^"]+)"`)

func TestSignInSessionAndSignOut(t *testing.T) {
	e := newEnv(t, true)
	b := e.browser(t)
	resp, _ := b.get("/")
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/signin") {
		t.Fatalf("GET / without a session: %d %q, want a redirect to /signin", resp.StatusCode, resp.Header.Get("Location"))
	}
	for _, h := range []string{"Content-Security-Policy", "X-Frame-Options"} {
		if resp.Header.Get(h) == "" {
			t.Errorf("%s missing", h)
		}
	}
	if csp := resp.Header.Get("Content-Security-Policy"); strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("CSP %q is not strict", csp)
	}
	if got := resp.Header.Get("X-Frame-Options"); got != "DENY" {
		t.Errorf("X-Frame-Options %q", got)
	}
	// The SCIM token and the app API token open nothing.
	for name, tok := range map[string]string{"SCIM": scimToken, "app API": apiToken, "wrong": "nope"} {
		resp, body := b.post("/signin", url.Values{"token": {tok}})
		if resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 {
			t.Errorf("sign in with the %s token: %d, cookies %v; want 401 and none", name, resp.StatusCode, resp.Cookies())
		}
		if !strings.Contains(body, "not an admin token") {
			t.Errorf("sign-in refusal does not say why:\n%s", body)
		}
		req, _ := http.NewRequest("GET", e.admin+"/", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		if resp, _ := b.do(req); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET / with the %s token as bearer: %d, want 401", name, resp.StatusCode)
		}
	}
	resp, _ = b.post("/signin", url.Values{"token": {adminToken}, "next": {"/users"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/users" {
		t.Fatalf("sign in: %d → %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	var ck *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == console.CookieName {
			ck = c
		}
	}
	if ck == nil || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Secure || ck.MaxAge <= 0 || ck.Expires.IsZero() {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, not Secure over plain HTTP, with an expiry", ck)
	}
	if strings.Contains(e.log.String(), ck.Value) {
		t.Error("the session cookie's value is in the log")
	}
	// An open redirect is not followed.
	if resp, _ := b.post("/signin", url.Values{"token": {adminToken}, "next": {"//evil.example/"}}); resp.Header.Get("Location") != "/" {
		t.Errorf("next=//evil.example/ redirected to %q", resp.Header.Get("Location"))
	}
	csrf := b.signIn()
	resp, body := b.get("/")
	if resp.StatusCode != 200 || !strings.Contains(body, `id="health"`) || !strings.Contains(body, ">app</a>") {
		t.Fatalf("overview: %d\n%s", resp.StatusCode, body)
	}
	if strings.Contains(body, "<script") {
		t.Error("the overview holds a script")
	}
	// A bearer header opens pages too.
	req, _ := http.NewRequest("GET", e.admin+"/", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	if resp, _ := (&http.Client{}).Do(req); resp.StatusCode != 200 {
		t.Errorf("GET / with the admin token as bearer: %d", resp.StatusCode)
	}
	// Sign-out without the CSRF token is refused; with it, the session ends.
	if resp, _ := b.post("/signout", nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("sign out without CSRF: %d, want 403", resp.StatusCode)
	}
	u, _ := url.Parse(e.admin)
	live := b.c.Jar.Cookies(u)
	if len(live) != 1 {
		t.Fatalf("cookies before sign-out: %v", live)
	}
	if resp, _ := b.post("/signout", url.Values{"csrf": {csrf}}); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("sign out: %d", resp.StatusCode)
	}
	if resp, _ := b.get("/"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("GET / after sign-out: %d, want a redirect to sign in", resp.StatusCode)
	}
	// The signed-out cookie no longer opens anything, even replayed by hand.
	req, _ = http.NewRequest("GET", e.admin+"/", nil)
	req.AddCookie(&http.Cookie{Name: console.CookieName, Value: live[0].Value})
	if resp, _ := b.do(req); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("GET / with a signed-out cookie: %d, want a redirect to sign in", resp.StatusCode)
	}
}

func TestCSRFAndActionsLogged(t *testing.T) {
	e := newEnv(t, true)
	b := e.browser(t)
	csrf := b.signIn()
	paused := func() bool {
		st, err := e.d.Status()
		if err != nil {
			t.Fatal(err)
		}
		return st[0].Paused
	}
	for name, form := range map[string]url.Values{"no token": {}, "a wrong token": {"csrf": {strings.Repeat("0", len(csrf))}}} {
		resp, body := b.post("/targets/app/pause", form)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "CSRF") {
			t.Errorf("pause with %s: %d %s, want 403 naming CSRF", name, resp.StatusCode, body)
		}
		if paused() {
			t.Fatalf("a POST with %s paused the target", name)
		}
	}
	resp, _ := b.post("/targets/app/pause", url.Values{"csrf": {csrf}})
	if resp.StatusCode != http.StatusSeeOther || !paused() {
		t.Fatalf("pause with the CSRF token: %d, paused %v", resp.StatusCode, paused())
	}
	_, body := b.get("/targets/app")
	if !strings.Contains(body, "paused from the console") || !strings.Contains(body, `id="resume"`) {
		t.Errorf("target page after pause:\n%s", body)
	}
	resp, _ = b.post("/targets/app/resume", url.Values{"csrf": {csrf}})
	if resp.StatusCode != http.StatusSeeOther || paused() {
		t.Fatalf("resume: %d, paused %v", resp.StatusCode, paused())
	}
	// Discard without the confirmation changes nothing.
	if resp, _ := b.post("/targets/app/discard", url.Values{"csrf": {csrf}}); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("discard without confirm: %d, want 400", resp.StatusCode)
	}
	log := e.log.String()
	m := regexp.MustCompile(`console: signed in" component=admin session=([0-9a-f]+)`).FindStringSubmatch(log)
	if m == nil {
		t.Fatalf("no sign-in line in the log:\n%s", log)
	}
	for _, action := range []string{"pause", "resume"} {
		if !strings.Contains(log, `"console: action" component=admin session=`+m[1]+" action="+action) {
			t.Errorf("action %s not logged with session %s:\n%s", action, m[1], log)
		}
	}
	// A bearer client needs no CSRF token (a browser never sends the header by itself).
	req, _ := http.NewRequest("POST", e.admin+"/targets/app/pause", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	if resp, _ := b.do(req); resp.StatusCode != http.StatusSeeOther || !paused() {
		t.Errorf("pause with the admin bearer token: %d", resp.StatusCode)
	}
	req, _ = http.NewRequest("POST", e.admin+"/targets/app/resume", nil)
	req.Header.Set("Authorization", "Bearer "+scimToken)
	if resp, _ := b.do(req); resp.StatusCode != http.StatusUnauthorized || !paused() {
		t.Errorf("resume with the SCIM token: %d, want 401 and still paused", resp.StatusCode)
	}
}

func TestDeadLetterOpenAndReplay(t *testing.T) {
	e := newEnv(t, true)
	b := e.browser(t)
	csrf := b.signIn()
	e.status.Store(400)
	e.scimCall(t, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ada@example.com"}`)
	waitFor(t, "a dead letter", func() bool { st, _ := e.d.Status(); return st[0].DeadLetters == 1 })
	_, body := b.get("/")
	if !strings.Contains(body, "Not healthy") || !strings.Contains(body, "app: dead letters") {
		t.Errorf("overview with a dead letter:\n%s", body)
	}
	_, body = b.get("/targets/app")
	m := regexp.MustCompile(`href="(/targets/app/dead-letters/[^"]+)"`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no dead letter link on the target page:\n%s", body)
	}
	_, body = b.get(m[1])
	for _, want := range []string{`id="status">400<`, "no such department", "user.created"} {
		if !strings.Contains(body, want) {
			t.Errorf("dead letter page lacks %q:\n%s", want, body)
		}
	}
	e.status.Store(204)
	resp, _ := b.post(m[1]+"/replay", url.Values{"csrf": {csrf}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("replay: %d", resp.StatusCode)
	}
	waitFor(t, "the replayed event delivered", func() bool { return e.got.Load() == 1 })
	_, body = b.get("/targets/app")
	if !strings.Contains(body, "No dead letters") {
		t.Errorf("target page after replay:\n%s", body)
	}
	if _, body := b.get("/targets/nope"); !strings.Contains(body, "unknown target") {
		t.Errorf("unknown target page:\n%s", body)
	}
}

func TestUsersSearchMapPreviewAndActivity(t *testing.T) {
	e := newEnv(t, true)
	b := e.browser(t)
	csrf := b.signIn()
	out := e.scimCall(t, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"grace","externalId":"00u42",
		"emails":[{"value":"grace@example.com","type":"work"}],"name":{"givenName":"Grace","familyName":"Hopper"}}`)
	id := idRe.FindStringSubmatch(out)[1]
	gout := e.scimCall(t, "POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"Engineering","members":[{"value":"`+id+`"}]}`)
	gid := idRe.FindStringSubmatch(gout)[1]
	e.scimCall(t, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"linus"}`)
	for _, q := range []string{"grace", "grace@example.com", "00u42", id} {
		_, body := b.get("/users?q=" + url.QueryEscape(q))
		if !strings.Contains(body, `href="/users/`+id+`">grace<`) || strings.Contains(body, "linus") {
			t.Errorf("search %q:\n%s", q, body)
		}
	}
	if _, body := b.get("/users?q=nobody"); !strings.Contains(body, `id="nousers"`) {
		t.Errorf("search nobody:\n%s", body)
	}
	_, body := b.get("/users/" + id)
	for _, want := range []string{`&#34;userName&#34;: &#34;grace&#34;`, `&#34;login&#34;: &#34;grace&#34;`, `&#34;first_name&#34;: &#34;Grace&#34;`, `href="/groups/` + gid + `">Engineering<`} {
		if !strings.Contains(body, want) {
			t.Errorf("user page lacks %s:\n%s", want, body)
		}
	}
	for _, q := range []string{"Engineering", gid} {
		if _, body := b.get("/groups?q=" + url.QueryEscape(q)); !strings.Contains(body, `href="/groups/`+gid+`">Engineering<`) {
			t.Errorf("group search %q:\n%s", q, body)
		}
	}
	if _, body := b.get("/groups?q=nothing"); !strings.Contains(body, `id="nogroups"`) {
		t.Errorf("group search for nothing:\n%s", body)
	}
	if _, body := b.get("/groups/" + gid); !strings.Contains(body, `href="/users/`+id+`"`) {
		t.Errorf("group page:\n%s", body)
	}
	// The mapping preview: a record, then a rejection naming the field.
	_, body = b.post("/map", url.Values{"csrf": {csrf}, "kind": {"auto"}, "payload": {`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"x","emails":[{"value":"not an email","type":"work"}]}`}})
	if !strings.Contains(body, `id="mapped"`) || !strings.Contains(body, "email") {
		t.Errorf("map preview of a valid user:\n%s", body)
	}
	_, body = b.post("/map", url.Values{"csrf": {csrf}, "kind": {"User"}, "payload": {`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"name":{"givenName":"Nobody"}}`}})
	if !regexp.MustCompile(`id="rejected">rejected \(400[^<]*userName`).MatchString(body) {
		t.Errorf("map preview without userName does not name the field:\n%s", body)
	}
	if resp, _ := b.post("/map", url.Values{"payload": {"{}"}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("map without CSRF: %d", resp.StatusCode)
	}
	_, body = b.get("/activity")
	if !strings.Contains(body, "/scim/v2/Users") || !strings.Contains(body, "<code>"+gid+"</code>") && !strings.Contains(body, ">201<") {
		t.Errorf("activity:\n%s", body)
	}
	if strings.Contains(body, "grace@example.com") {
		t.Error("activity shows an email")
	}
}

func TestConsoleOff(t *testing.T) {
	e := newEnv(t, false)
	b := e.browser(t)
	if resp, _ := b.get("/"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET / with the console off: %d, want 404", resp.StatusCode)
	}
	if resp, _ := b.get("/healthz"); resp.StatusCode != 200 {
		t.Errorf("/healthz: %d", resp.StatusCode)
	}
}

func TestAdminRoutesKeepTheirAnswers(t *testing.T) {
	e := newEnv(t, true)
	b := e.browser(t)
	for path, want := range map[string]int{"/healthz": 200, "/admin/status": 401, "/v1/users": 401, "/nope": 404} {
		if resp, _ := b.get(path); resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
}

func TestDiscardRetryBackfillButtons(t *testing.T) {
	e := newEnv(t, true)
	b := e.browser(t)
	csrf := b.signIn()
	e.status.Store(400)
	e.scimCall(t, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"zed"}`)
	waitFor(t, "a dead letter", func() bool { st, _ := e.d.Status(); return st[0].DeadLetters == 1 })
	list, err := e.d.DeadLetters("app", 0, 10)
	if err != nil || len(list) != 1 {
		t.Fatalf("dead letters: %v %v", list, err)
	}
	path := "/targets/app/dead-letters/" + list[0].Event.ID
	// The confirmation page holds the form; without its box ticked nothing goes.
	if _, body := b.get(path + "/discard"); !strings.Contains(body, `name="confirm" value="yes"`) || !strings.Contains(body, `action="`+path+`/discard"`) {
		t.Fatalf("confirmation page:\n%s", body)
	}
	if resp, _ := b.post(path+"/discard", url.Values{"csrf": {csrf}}); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("discard without confirm: %d, want 400", resp.StatusCode)
	}
	if st, _ := e.d.Status(); st[0].DeadLetters != 1 {
		t.Fatal("an unconfirmed discard discarded")
	}
	resp, _ := b.post(path+"/discard", url.Values{"csrf": {csrf}, "confirm": {"yes"}})
	if resp.StatusCode != http.StatusSeeOther || !strings.Contains(resp.Header.Get("Location"), "discard") {
		t.Fatalf("discard: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if st, _ := e.d.Status(); st[0].DeadLetters != 0 {
		t.Errorf("dead letters after discard: %d", st[0].DeadLetters)
	}
	if resp, _ := b.get(path); resp.StatusCode != http.StatusNotFound {
		t.Errorf("the discarded dead letter's page: %d, want 404", resp.StatusCode)
	}
	// Retry now and backfill.
	e.status.Store(204)
	if resp, _ := b.post("/targets/app/retry", url.Values{"csrf": {csrf}}); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("retry: %d", resp.StatusCode)
	}
	resp, _ = b.post("/targets/app/backfill", url.Values{"csrf": {csrf}})
	if resp.StatusCode != http.StatusSeeOther || !strings.Contains(resp.Header.Get("Location"), "backfill") {
		t.Fatalf("backfill: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	waitFor(t, "the backfill delivers the user", func() bool { return e.got.Load() >= 1 })
	if _, body := b.get("/targets/app"); !strings.Contains(body, "Backfill: ") {
		t.Errorf("target page does not show the backfill:\n%s", body)
	}
	if resp, _ := b.post("/targets/app/explode", url.Values{"csrf": {csrf}}); resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown action: %d", resp.StatusCode)
	}
}

func TestUserHistoryAfterThreeChanges(t *testing.T) {
	e := newEnv(t, true)
	b := e.browser(t)
	b.signIn()
	const user = `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"hedy","title":"%s"}`
	id := idRe.FindStringSubmatch(e.scimCall(t, "POST", "/Users", fmt.Sprintf(user, "Actor")))[1]
	e.scimCall(t, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"other"}`)
	for _, title := range []string{"Inventor", "Engineer", "Pioneer"} {
		e.scimCall(t, "PUT", "/Users/"+id, fmt.Sprintf(user, title))
	}
	_, body := b.get("/users/" + id)
	if n := strings.Count(body, `<tr class="change">`); n != 4 {
		t.Fatalf("history rows: %d, want 4 (created and three updates):\n%s", n, body)
	}
	for _, want := range []string{"title: &#34;Engineer&#34; → &#34;Pioneer&#34;", "title: &#34;Inventor&#34; → &#34;Engineer&#34;",
		"title: &#34;Actor&#34; → &#34;Inventor&#34;", "user.created"} {
		if !strings.Contains(body, want) {
			t.Errorf("history lacks %s:\n%s", want, body)
		}
	}
	if strings.Index(body, "Pioneer&#34;</div>") > strings.Index(body, "user.created") {
		t.Error("history is not newest first")
	}
}
