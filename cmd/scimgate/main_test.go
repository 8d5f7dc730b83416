package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scimgate/scimgate/outbox"
)

const e2eToken = "e2e-token-0123456789abcdef"

// receiver is a webhook endpoint that verifies signatures and records
// events; it answers with status() (204 when nil).
type receiver struct {
	t       *testing.T
	secret  string
	mu      sync.Mutex
	events  []map[string]any
	ids     map[string]int
	refused int // requests answered with status() other than 204
	status  func() int
	arrived chan struct{}
}

func newReceiver(t *testing.T, secret string) (*receiver, *httptest.Server) {
	r := &receiver{t: t, secret: secret, ids: map[string]int{}, arrived: make(chan struct{}, 1<<16)}
	srv := httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(srv.Close)
	return r, srv
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	if r.status != nil {
		if s := r.status(); s != 0 && s != 204 {
			r.mu.Lock()
			r.refused++
			r.mu.Unlock()
			w.WriteHeader(s)
			return
		}
	}
	if err := outbox.Verify([]string{r.secret}, req.Header, body, time.Now()); err != nil {
		r.t.Errorf("signature: %v", err)
		w.WriteHeader(401)
		return
	}
	var ev map[string]any
	if err := json.Unmarshal(body, &ev); err != nil {
		r.t.Errorf("event body: %v", err)
	}
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.ids[req.Header.Get("webhook-id")]++
	r.mu.Unlock()
	r.arrived <- struct{}{}
	w.WriteHeader(204)
}

// waitFor waits until pred holds over the events received so far.
func (r *receiver) waitFor(t *testing.T, what string, timeout time.Duration, pred func([]map[string]any) bool) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		r.mu.Lock()
		ok := pred(r.events)
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.arrived:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			r.mu.Lock()
			defer r.mu.Unlock()
			t.Fatalf("timed out waiting for %s; received %d events", what, len(r.events))
		}
	}
}

func hasEvent(typ, userID string) func([]map[string]any) bool {
	return func(evs []map[string]any) bool {
		for _, ev := range evs {
			if ev["type"] == typ {
				if d, _ := ev["data"].(map[string]any); d != nil {
					if u, _ := d["user"].(map[string]any); u != nil && u["id"] == userID {
						return true
					}
				}
			}
		}
		return false
	}
}

func testEnv(dataDir, webhook, secret string) func(string) string {
	env := map[string]string{
		"SCIMGATE_LISTEN": "127.0.0.1:0", "SCIMGATE_ADMIN_LISTEN": "127.0.0.1:0", "SCIMGATE_DATA_DIR": dataDir,
		"SCIMGATE_SCIM_TOKEN": e2eToken, "SCIMGATE_ADMIN_TOKEN": e2eToken,
		"SCIMGATE_WEBHOOK_URL": webhook, "SCIMGATE_WEBHOOK_SECRET": secret,
	}
	return func(k string) string { return env[k] }
}

func startApp(t *testing.T, getenv func(string) string) *app {
	t.Helper()
	cfg := DefaultConfig(getenv)
	cfg.Outbox.Backoff = []time.Duration{0, 50 * time.Millisecond}
	if err := prepareSecrets(&cfg, io.Discard); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate("(test)", nil); err != nil {
		t.Fatal(err)
	}
	a, err := newApp(cfg, slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})), appOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	return a
}

func scimDo(t *testing.T, base, method, path, body string) (int, map[string]any) {
	t.Helper()
	return scimAuthDo(t, base, "Bearer "+e2eToken, method, path, body)
}

// scimAuthDo makes one SCIM request with the given Authorization header and
// returns the status and the decoded body.
func scimAuthDo(t *testing.T, base, auth, method, path, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
	req.Header.Set("Authorization", auth)
	req.Header.Set("Content-Type", "application/scim+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func TestEventsArriveSignedAndSurviveRestart(t *testing.T) {
	secret, _ := outbox.NewSecret()
	var down sync.Mutex
	failing := true
	rcv, srv := newReceiver(t, secret)
	rcv.status = func() int {
		down.Lock()
		defer down.Unlock()
		if failing {
			return 503
		}
		return 204
	}
	dir := t.TempDir()
	getenv := testEnv(dir, srv.URL+"/hooks", secret)

	a := startApp(t, getenv)
	base := "http://" + a.SCIMAddr() + "/scim/v2"
	status, user := scimDo(t, base, "POST", "/Users", `{"userName":"ada@example.com","name":{"givenName":"Ada","familyName":"Lovelace"},
		"emails":[{"value":"ada@example.com","type":"work","primary":true}],"active":true}`)
	if status != 201 {
		t.Fatalf("create: %d %v", status, user)
	}
	id := user["id"].(string)
	// The receiver is down: once it has refused the event, the event is
	// pending. Stop the gateway.
	deadline := time.Now().Add(10 * time.Second)
	for {
		rcv.mu.Lock()
		refused := rcv.refused
		rcv.mu.Unlock()
		if refused > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the receiver was never asked")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := a.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	rcv.mu.Lock()
	got := len(rcv.events)
	rcv.mu.Unlock()
	if got != 0 {
		t.Fatalf("events delivered while receiver answered 503: %d", got)
	}
	// Restart on the same data dir with the receiver up: the event arrives.
	down.Lock()
	failing = false
	down.Unlock()
	a = startApp(t, getenv)
	defer a.Close(context.Background())
	rcv.waitFor(t, "user.created after restart", 10*time.Second, hasEvent("user.created", id))
	base = "http://" + a.SCIMAddr() + "/scim/v2"
	// A deactivate and an unchanged PUT: exactly one more event.
	scimDo(t, base, "PATCH", "/Users/"+id, `{"Operations":[{"op":"replace","value":{"active":false}}]}`)
	_, cur := scimDo(t, base, "GET", "/Users/"+id, "")
	body, _ := json.Marshal(cur)
	for range 3 {
		if s, _ := scimDo(t, base, "PUT", "/Users/"+id, string(body)); s != 200 {
			t.Fatalf("PUT: %d", s)
		}
	}
	rcv.waitFor(t, "user.deactivated", 10*time.Second, hasEvent("user.deactivated", id))
	// Deliberately real time: an event for an unchanged PUT, the defect,
	// would arrive within this window (nothing signals its absence).
	time.Sleep(300 * time.Millisecond)
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	var types []string
	for _, ev := range rcv.events {
		types = append(types, ev["type"].(string))
	}
	if strings.Join(types, ",") != "user.created,user.deactivated" {
		t.Errorf("events = %v, want user.created,user.deactivated (unchanged PUTs emit nothing)", types)
	}
}

// ---- tests that use the real binary ----

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// buildBinary builds scimgate once per test run, the way the Dockerfile does.
func buildBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "scimgate-bin")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "scimgate")
		cmd := exec.Command("go", "build", "-trimpath", "-o", binPath, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// freePort returns a loopback address free now, for a process the test
// starts next. It is taken below Linux's ephemeral range (32768–60999):
// a port from ":0" is an ephemeral one, which another process's outgoing
// connection can take as its source port before the binary binds it (a CI
// run met "address already in use" that way).
func freePort(t *testing.T) string {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 100 {
		port := 20000 + rand.IntN(12000)
		if portsGiven[port] {
			continue // a binary given it may be down between a kill and its restart
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		if l, err := net.Listen("tcp", addr); err == nil {
			l.Close()
			portsGiven[port] = true
			return addr
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// portsGiven are the ports freePort has handed out in this process: never
// twice, since a test that restarts a binary on its ports leaves them free
// for a moment (a crash test's restart once met its admin port taken).
var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// binaryGateway runs the real binary.
type binaryGateway struct {
	cmd   *exec.Cmd
	scim  string
	admin string
	out   *syncBuffer
}

func startBinary(t *testing.T, bin string, env []string, scimAddr, adminAddr string) *binaryGateway {
	t.Helper()
	cmd := exec.Command(bin, "serve")
	cmd.Env = append(env, "SCIMGATE_LISTEN="+scimAddr, "SCIMGATE_ADMIN_LISTEN="+adminAddr)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	g := &binaryGateway{cmd: cmd, scim: "http://" + scimAddr + "/scim/v2", admin: "http://" + adminAddr, out: out}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(g.admin + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return g
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Kill()
	cmd.Wait()
	t.Fatalf("binary did not become ready:\n%s", out)
	return nil
}

func (g *binaryGateway) kill() {
	g.cmd.Process.Kill() // SIGKILL: no shutdown code runs
	g.cmd.Wait()
}

// tryDo is a SCIM request that reports transport errors instead of failing
// (the crash test kills the server under it).
func tryDo(base, method, path, body string) (int, map[string]any, error) {
	return tryDoAuth(base, e2eToken, method, path, body)
}

func tryDoAuth(base, token, method, path, body string) (int, map[string]any, error) {
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/scim+json")
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out, nil
}

var httpClient = &http.Client{Timeout: 10 * time.Second}
