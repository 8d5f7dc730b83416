package main

// The operator commands against the real binary: retry, backfill, history
// replay, reload (POST /admin/reload, and the SCIM credentials reloaded on
// SIGHUP under load), and the replay/discard bodies that require --all.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/scimgate/scimgate/outbox"
)

// opRig is the binary on a config file the test controls, with a
// receiver whose answer the test sets.
type opRig struct {
	*restoreRig
	config string
	status atomic.Int32 // the receiver's answer; 0 means 204
}

const opConfig = `data_dir: ${SCIMGATE_DATA_DIR}
scim:
  listen: ${SCIMGATE_LISTEN}
  auth:
    bearer_tokens: [%s]
admin:
  listen: ${SCIMGATE_ADMIN_LISTEN}
  tokens: ["${SCIMGATE_ADMIN_TOKEN}"]
outbox:
  backoff: [0s, 1h]     # a failed attempt waits an hour: only retry-now shortens it
  targets:
%s
`

func newOpRig(t *testing.T, targets string, tokens ...string) *opRig {
	r := &opRig{restoreRig: newRestoreRig(t)}
	r.rcv.status = func() int { return int(r.status.Load()) }
	r.config = filepath.Join(r.dataDir, "scimgate.yaml")
	r.writeConfig(targets, tokens...)
	r.env = append(r.env, "SCIMGATE_CONFIG="+r.config)
	return r
}

func (r *opRig) writeConfig(targets string, tokens ...string) {
	r.t.Helper()
	if len(tokens) == 0 {
		tokens = []string{e2eToken}
	}
	if targets == "" {
		targets = `    - {name: default, url: "${SCIMGATE_WEBHOOK_URL}", secrets: ["${SCIMGATE_WEBHOOK_SECRET}"]}`
	}
	q := make([]string, len(tokens))
	for i, tok := range tokens {
		q[i] = fmt.Sprintf("%q", tok)
	}
	if err := os.WriteFile(r.config, []byte(fmt.Sprintf(opConfig, strings.Join(q, ", "), targets)), 0o600); err != nil {
		r.t.Fatal(err)
	}
}

func (r *opRig) create(userName string) string {
	r.t.Helper()
	status, body, err := tryDo(r.g.scim, "POST", "/Users", fmt.Sprintf(`{"userName":%q,"title":"Engineer"}`, userName))
	if err != nil || status != 201 {
		r.t.Fatalf("create: %d %v %v", status, body, err)
	}
	return body["id"].(string)
}

// lastErrorAt is when target default's last failed attempt ended, from
// GET /admin/status (zero before any).
func (r *opRig) lastErrorAt() time.Time {
	r.t.Helper()
	req, _ := http.NewRequest("GET", r.g.admin+"/admin/status", nil)
	req.Header.Set("Authorization", "Bearer "+e2eToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		Targets []struct {
			Name        string    `json:"name"`
			LastErrorAt time.Time `json:"last_error_at"`
		} `json:"targets"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || resp.StatusCode != 200 {
		r.t.Fatalf("GET /admin/status: %d %v", resp.StatusCode, err)
	}
	for _, tg := range st.Targets {
		if tg.Name == "default" {
			return tg.LastErrorAt
		}
	}
	r.t.Fatalf("no target default in /admin/status: %+v", st)
	return time.Time{}
}

// waitFailedAfter waits until target default records a failed attempt
// that ended after since: the next attempt is then an hour away.
func (r *opRig) waitFailedAfter(since time.Time) {
	r.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !r.lastErrorAt().After(since) {
		if time.Now().After(deadline) {
			r.t.Fatalf("no failed attempt of target default recorded after %v", since)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// retry makes events waiting out a long backoff due now; resume does too.
func TestOperatorRetryNow(t *testing.T) {
	r := newOpRig(t, "")
	r.status.Store(503)
	r.start()
	defer r.stop()
	r.create("ada@example.com")
	r.waitFailedAfter(time.Time{}) // the first attempt failed; the next is an hour away
	r.status.Store(0)
	out := r.cli(0, "retry", "--target", "default")
	if !strings.Contains(out, "retrying 1 pending event(s) of target default now") {
		t.Errorf("retry: %s", out)
	}
	r.eventWithTitle("Engineer")

	r.cli(0, "pause", "--target", "default")
	r.status.Store(503)
	id := r.create("grace@example.com")
	before := r.lastErrorAt()
	r.cli(0, "resume", "--target", "default") // attempted now, fails: an hour away again
	r.waitFailedAfter(before)
	r.status.Store(0)
	if out := r.cli(0, "resume", "--target", "default"); !strings.Contains(out, "resumed; 1 pending event(s) are due now") {
		t.Errorf("resume: %s", out)
	}
	r.rcv.waitFor(t, "grace's user.created", 10*time.Second, hasEvent("user.created", id))
}

// Discarding or replaying everything needs --all; the API refuses empty
// and mistyped bodies with 400 and discards nothing.
func TestOperatorDeadLetterBodies(t *testing.T) {
	r := newOpRig(t, "")
	r.status.Store(400)
	r.start()
	defer r.stop()
	r.create("ada@example.com")
	r.create("grace@example.com")
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(r.cli(0, "dead-letters", "list"), "2 dead letter(s)") {
		if time.Now().After(deadline) {
			t.Fatal("no dead letters")
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, body := range []string{"", "{}", `{"ids":[]}`, `{"id":["evt_x"]}`, `{"all":false}`} {
		req, _ := http.NewRequest("POST", r.g.admin+"/admin/targets/default/discard", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+e2eToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Errorf("discard with body %q: %d, want 400", body, resp.StatusCode)
		}
	}
	if !strings.Contains(r.cli(0, "dead-letters", "list"), "2 dead letter(s)") {
		t.Fatal("a refused discard discarded")
	}
	r.status.Store(0)
	if out := r.cli(0, "dead-letters", "replay", "--all"); !strings.Contains(out, "replayed 2 dead letter(s)") {
		t.Errorf("replay --all: %s", out)
	}
	r.rcv.waitFor(t, "both users", 10*time.Second, func(evs []map[string]any) bool { return len(evs) >= 2 })
	r.status.Store(400)
	alan := r.create("alan@example.com")
	deadline = time.Now().Add(10 * time.Second)
	for !strings.Contains(r.cli(0, "dead-letters", "list"), "1 dead letter(s)") {
		if time.Now().After(deadline) {
			t.Fatal("alan's event not dead-lettered")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out := r.cli(0, "dead-letters", "discard", "--all"); !strings.Contains(out, "discarded 1 dead letter(s)") {
		t.Errorf("discard --all: %s", out)
	}
	// History replay leaves the discarded event out unless asked.
	r.status.Store(0)
	if out := r.cli(0, "replay", "--target", "default", "--after", "0"); !strings.Contains(out, "replaying 2 event(s)") ||
		!strings.Contains(out, "1 discarded event(s) skipped") {
		t.Errorf("replay --after 0 after a discard: %s", out)
	}
	if out := r.cli(0, "replay", "--target", "default", "--after", "0", "--include-discarded"); !strings.Contains(out, "replaying 3 event(s)") {
		t.Errorf("replay --include-discarded: %s", out)
	}
	r.rcv.waitFor(t, "alan, once discarded", 10*time.Second, hasEvent("user.created", alan))
}

// replay --after and --since re-deliver retained history with the same ids.
func TestOperatorHistoryReplay(t *testing.T) {
	r := newOpRig(t, "")
	r.start()
	defer r.stop()
	for _, n := range []string{"a", "b", "c"} {
		r.create(n + "@example.com")
	}
	r.rcv.waitFor(t, "three events", 10*time.Second, func(evs []map[string]any) bool { return len(evs) >= 3 })
	out := r.cli(0, "replay", "--target", "default", "--after", "1")
	if !strings.Contains(out, "replaying 2 event(s) to target default, sequences 2 to 3") {
		t.Errorf("replay --after 1: %s", out)
	}
	r.rcv.waitFor(t, "the replayed events", 10*time.Second, func(evs []map[string]any) bool { return len(evs) >= 5 })
	r.rcv.mu.Lock()
	for id, n := range r.rcv.ids {
		if n > 2 {
			t.Errorf("event %s delivered %d times", id, n)
		}
	}
	r.rcv.mu.Unlock()
	since := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	if out := r.cli(0, "replay", "--target", "default", "--since", since); !strings.Contains(out, "replaying 3 event(s)") {
		t.Errorf("replay --since: %s", out)
	}
}

// backfill sends a new target the whole state, then the live events.
func TestOperatorBackfill(t *testing.T) {
	r := newOpRig(t, "")
	r.start()
	r.create("ada@example.com")
	r.create("grace@example.com")
	r.eventWithTitle("Engineer")
	r.stop()
	secret, _ := outbox.NewSecret()
	late, lateSrv := newReceiver(t, secret)
	r.writeConfig(`    - {name: default, url: "${SCIMGATE_WEBHOOK_URL}", secrets: ["${SCIMGATE_WEBHOOK_SECRET}"]}
    - {name: late, url: "` + lateSrv.URL + `/hooks", secrets: ["` + secret + `"]}`)
	r.start()
	defer r.stop()
	if out := r.cli(0, "backfill", "--target", "late"); !strings.Contains(out, "backfill of target late started") {
		t.Errorf("backfill: %s", out)
	}
	late.waitFor(t, "snapshot.completed", 15*time.Second, func(evs []map[string]any) bool {
		for _, ev := range evs {
			if ev["type"] == "snapshot.completed" {
				return true
			}
		}
		return false
	})
	users := 0
	for _, ev := range late.events {
		if ev["type"] == "user.snapshot" {
			users++
		}
	}
	if users != 2 {
		t.Errorf("user.snapshot events: %d, want 2", users)
	}
}

// scimgate reload: applied changes listed; a bad config's problems
// printed, exit 1, the running config kept.
func TestOperatorReloadCommand(t *testing.T) {
	r := newOpRig(t, "")
	r.start()
	defer r.stop()
	r.writeConfig("", e2eToken, "another-token-0123456789abcdef")
	if out := r.cli(0, "reload"); !strings.Contains(out, "reloaded:") || !strings.Contains(out, "scim.auth.bearer_tokens") {
		t.Errorf("reload: %s", out)
	}
	os.WriteFile(r.config, []byte("scim:\n  listen: [\n"), 0o600)
	if out := r.cli(1, "reload"); !strings.Contains(out, "reload refused") || !strings.Contains(out, r.config) {
		t.Errorf("reload of a broken config: %s", out)
	}
	if status, _, err := tryDoAuth(r.g.scim, "another-token-0123456789abcdef", "GET", "/Users", ""); err != nil || status != 200 {
		t.Errorf("the reloaded token: %d %v", status, err)
	}
}

// Rotation without downtime (docs/operations.md, "Reloading"): rotate a SCIM
// token with SIGHUP while a client keeps calling, with no failed request.
func TestOperatorTokenRotationWithSIGHUP(t *testing.T) {
	const oldToken, newToken = "old-token-0123456789abcdef", "new-token-0123456789abcdef"
	r := newOpRig(t, "", oldToken)
	r.start()
	defer r.stop()
	var current atomic.Value
	current.Store(oldToken)
	var calls, failures atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				status, _, err := tryDoAuth(r.g.scim, current.Load().(string), "GET", "/Users?count=1", "")
				calls.Add(1)
				if err != nil || status != 200 {
					failures.Add(1)
					t.Errorf("request during rotation: %d %v", status, err)
				}
			}
		})
	}
	hup := func(want string) {
		t.Helper()
		n := strings.Count(r.g.out.String(), want)
		r.g.cmd.Process.Signal(syscall.SIGHUP)
		deadline := time.Now().Add(10 * time.Second)
		for strings.Count(r.g.out.String(), want) == n {
			if time.Now().After(deadline) {
				t.Fatalf("no %q after SIGHUP:\n%s", want, r.g.out)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// traffic waits until the clients have made 20 more requests: each
	// phase of the rotation is exercised however slow the machine is (a
	// fixed 200 ms could pass with none).
	traffic := func(phase string) {
		t.Helper()
		n := calls.Load()
		deadline := time.Now().Add(10 * time.Second)
		for calls.Load() < n+20 {
			if time.Now().After(deadline) {
				t.Fatalf("%d requests %s in 10 s, want 20", calls.Load()-n, phase)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	traffic("before the rotation")
	r.writeConfig("", oldToken, newToken) // 1. add the new token next to the old
	hup("configuration reloaded")
	traffic("with both tokens, the old one in use")
	current.Store(newToken) // 2. the IdP switches
	traffic("with both tokens, the new one in use")
	r.writeConfig("", newToken) // 3. remove the old one
	hup("configuration reloaded")
	traffic("with the new token only")
	close(stop)
	wg.Wait()
	if status, _, _ := tryDoAuth(r.g.scim, oldToken, "GET", "/Users", ""); status != 401 {
		t.Errorf("the removed token: %d, want 401", status)
	}
	t.Logf("%d requests during the rotation, %d failed", calls.Load(), failures.Load())
}

// The components reload with the signatures reload.go asserts: without
// them a reload reports those sections as needing a restart.
func TestOperatorReloadersPresent(t *testing.T) {
	secret, _ := outbox.NewSecret()
	a := startAppCfg(t, DefaultConfig(testEnv(t.TempDir(), "http://127.0.0.1:9/hooks", secret)), appOptions{})
	defer closeApp(t, a)
	if _, ok := any(a.dispatcher).(outboxReloader); !ok {
		t.Error("outbox.Dispatcher has no Reload(outbox.Config) ([]string, error)")
	}
	if _, ok := any(a.scim).(scimReloader); !ok {
		t.Error("gateway.Server has no Reload(gateway.Config) ([]string, error)")
	}
	if _, ok := any(a.admin).(adminReloader); !ok {
		t.Error("gateway.Admin has no Reload(gateway.AdminConfig) ([]string, error)")
	}
}
