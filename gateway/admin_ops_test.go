package gateway_test

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scimgate/scimgate/gateway"
	"github.com/scimgate/scimgate/outbox"
)

// Retry now, and resume retrying too, instead of waiting out the
// backoff schedule (5 s, 5 min, 30 min …).
func TestAdminRetryNow(t *testing.T) {
	env := newAdminEnv(t)
	env.status.Store(503)
	createUser(t, env.scim, "ada@example.com")
	var st struct {
		Targets []outbox.TargetStatus `json:"targets"`
	}
	waitUntil(t, "a failed attempt", func() bool {
		env.call(t, "GET", "/admin/status", adminToken, &st)
		return st.Targets[0].LastStatus == 503
	})
	env.status.Store(204)
	start := time.Now()
	code, body := env.send(t, "POST", "/admin/targets/app/retry", adminToken, "{}", nil)
	if code != 200 || !strings.Contains(body, `"retried": 1`) {
		t.Fatalf("retry = %d %s", code, body)
	}
	waitUntil(t, "delivery after retry", func() bool { return env.got.Load() == 1 })
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("delivered %s after retry; the backoff would have been 5 s", d)
	}
	for _, bad := range []string{`{"id":["x"]}`, `{"ids":["evt_nope"]}`, `[]`} {
		if code, body := env.send(t, "POST", "/admin/targets/app/retry", adminToken, bad, nil); code != 400 && code != 404 {
			t.Errorf("retry %s = %d %s, want 400 or 404", bad, code, body)
		}
	}
	// Resume retries what was backed off before the pause. (An event not
	// yet admitted to the target when resume comes is not counted: it is
	// sent at once anyway.)
	env.status.Store(503)
	createUser(t, env.scim, "grace@example.com")
	waitUntil(t, "a failed attempt", func() bool {
		env.call(t, "GET", "/admin/status", adminToken, &st)
		return st.Targets[0].LastStatus == 503
	})
	env.call(t, "POST", "/admin/targets/app/pause", adminToken, nil)
	env.status.Store(204)
	start = time.Now()
	if code, body := env.call(t, "POST", "/admin/targets/app/resume", adminToken, nil); code != 200 || !strings.Contains(body, `"retried": 1`) {
		t.Fatalf("resume = %d %s", code, body)
	}
	waitUntil(t, "delivery after resume", func() bool { return env.got.Load() == 2 })
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("delivered %s after resume; the backoff would have been 5 s", d)
	}
}

// History replay re-delivers with the original ids; backfill
// sends a snapshot; bad requests say what to send.
func TestAdminHistoryAndBackfill(t *testing.T) {
	env := newAdminEnv(t)
	u := createUser(t, env.scim, "ada@example.com")
	env.scim.do("POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"Eng","members":[{"value":"`+u+`"}]}`).must(t, 201)
	waitUntil(t, "three deliveries", func() bool { return env.got.Load() == 3 })
	first := env.delivered(t)

	code, body := env.send(t, "POST", "/admin/targets/app/history", adminToken, `{"after":0}`, nil)
	var hr outbox.HistoryResult
	if code != 200 || json.Unmarshal([]byte(body), &hr) != nil || hr.Replayed != 3 {
		t.Fatalf("history = %d %s", code, body)
	}
	waitUntil(t, "history redelivered", func() bool { return env.got.Load() == 6 })
	again := env.delivered(t)[3:]
	// Unrelated resources are delivered in parallel: compare in sequence order.
	bySeq := func(evs []delivered) []delivered {
		slices.SortFunc(evs, func(a, b delivered) int { return cmp.Compare(a.Sequence, b.Sequence) })
		return evs
	}
	first, again = bySeq(first), bySeq(again)
	for i := range first {
		if again[i].ID != first[i].ID {
			t.Errorf("redelivery %d has id %s, want the original %s", i, again[i].ID, first[i].ID)
		}
	}
	for _, bad := range []string{"", "{}", `{"after":1,"since":"2026-01-01T00:00:00Z"}`, `{"since":"yesterday"}`, `{"from":1}`} {
		if code, body := env.send(t, "POST", "/admin/targets/app/history", adminToken, bad, nil); code != 400 || !strings.Contains(body, "after") {
			t.Errorf("history %q = %d %s, want 400 saying what to send", bad, code, body)
		}
	}

	code, body = env.call(t, "POST", "/admin/targets/app/backfill", adminToken, nil)
	if code != http.StatusAccepted || !strings.Contains(body, `"backfill"`) {
		t.Fatalf("backfill = %d %s", code, body)
	}
	waitUntil(t, "the snapshot", func() bool {
		evs := env.delivered(t)
		return len(evs) > 0 && evs[len(evs)-1].Type == outbox.TypeSnapshotCompleted
	})
	var types []string
	for _, ev := range env.delivered(t)[6:] {
		types = append(types, ev.Type)
	}
	if got := strings.Join(types, " "); got != "snapshot.started user.snapshot group.snapshot group.members_snapshot snapshot.completed" {
		t.Errorf("snapshot events = %s", got)
	}
	if code, _ := env.call(t, "POST", "/admin/targets/nope/backfill", adminToken, nil); code != 404 {
		t.Errorf("backfill of an unknown target = %d, want 404", code)
	}
}

// POST /admin/reload reports what changed, or why it refused.
func TestAdminReload(t *testing.T) {
	env := newAdminEnv(t)
	env.reload = func() ([]string, error) { return []string{"scim.auth.bearer_tokens: 1 → 2"}, nil }
	if code, body := env.call(t, "POST", "/admin/reload", adminToken, nil); code != 200 || !strings.Contains(body, "bearer_tokens: 1 → 2") {
		t.Errorf("reload = %d %s", code, body)
	}
	env.reload = func() ([]string, error) {
		return nil, errors.Join(errors.New("c.yaml:4: scim.listen: invalid"), errors.New("c.yaml:9: outbox.targets[0].url: required"))
	}
	code, body := env.call(t, "POST", "/admin/reload", adminToken, nil)
	if code != 400 || !strings.Contains(body, "running one kept") || !strings.Contains(body, "targets[0].url") {
		t.Errorf("refused reload = %d %s", code, body)
	}
	if code, _ := env.call(t, "POST", "/admin/reload", "", nil); code != 401 {
		t.Errorf("reload without the admin token = %d", code)
	}
}

type delivered struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Sequence uint64 `json:"sequence"`
}

func (env *adminEnv) delivered(t *testing.T) []delivered {
	t.Helper()
	env.mu.Lock()
	defer env.mu.Unlock()
	out := make([]delivered, len(env.bodies))
	for i, b := range env.bodies {
		if err := json.Unmarshal([]byte(b), &out[i]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// The feed returns the webhook envelopes byte for byte, in
// sequence order; a long poll returns soon after a commit; types filter;
// a cursor in a restore gap is gone.
func TestEventFeed(t *testing.T) {
	env := newAPIEnv(t)
	u := createUser(t, env.scim, "ada@example.com")
	env.scim.do("PATCH", "/Users/"+u, `{"Operations":[{"op":"replace","path":"title","value":"CTO"}]}`).must(t, 204)
	env.scim.do("POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"Eng","members":[{"value":"`+u+`"}]}`).must(t, 201)
	waitUntil(t, "four deliveries", func() bool { return env.got.Load() == 4 })

	var page struct {
		Data []json.RawMessage `json:"data"`
		Next uint64            `json:"next"`
	}
	if code, body := env.call(t, "GET", "/v1/events?after=0", apiToken, &page); code != 200 || len(page.Data) != 4 {
		t.Fatalf("feed = %d %s", code, body)
	}
	// Events of different resources may arrive in either order (ordering
	// is per resource): compare each with the body of the same id.
	env.mu.Lock()
	byID := map[string]string{}
	for _, b := range env.bodies {
		var ev struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal([]byte(b), &ev)
		byID[ev.ID] = b
	}
	env.mu.Unlock()
	var prev uint64
	for i, raw := range page.Data {
		var ev struct {
			ID  string `json:"id"`
			Seq uint64 `json:"sequence"`
		}
		if err := json.Unmarshal(raw, &ev); err != nil || ev.Seq <= prev {
			t.Errorf("feed event %d: sequence %d after %d (%v): not in sequence order", i, ev.Seq, prev, err)
		}
		prev = ev.Seq
		if string(raw) != byID[ev.ID] {
			t.Errorf("feed event %d differs from the webhook body:\n%s\n%s", i, raw, byID[ev.ID])
		}
	}
	if code, _ := env.call(t, "GET", fmt.Sprintf("/v1/events?after=%d&types=group.*", 0), apiToken, &page); code != 200 || len(page.Data) != 2 {
		t.Errorf("group.* = %d events", len(page.Data))
	}
	// A long poll returns within 100 ms of the commit that wakes it.
	next := page.Next
	done := make(chan time.Time, 1)
	go func() {
		var p struct{ Data []json.RawMessage }
		env.call(t, "GET", fmt.Sprintf("/v1/events?after=%d&wait=20s", next), apiToken, &p)
		if len(p.Data) != 1 {
			t.Errorf("long poll returned %d events", len(p.Data))
		}
		done <- time.Now()
	}()
	// Deliberately real time: the long poll has to be waiting when the
	// commit comes (nothing shows that it is), else it would return at once
	// and the test would not see a wake-up.
	time.Sleep(300 * time.Millisecond)
	committed := time.Now()
	env.scim.do("PATCH", "/Users/"+u, `{"Operations":[{"op":"replace","path":"title","value":"CEO"}]}`).must(t, 204)
	select {
	case at := <-done:
		if d := at.Sub(committed); d > 100*time.Millisecond {
			t.Errorf("long poll returned %s after the commit", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("long poll not woken by the commit")
	}
	// A cursor in a restore gap: the events after it are gone.
	var tail uint64
	err := env.db.Update(func(tx *bolt.Tx) error {
		tail = outbox.Tail(tx)
		_, err := outbox.RaiseSequence(tx, tail+1000)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	code, body := env.call(t, "GET", fmt.Sprintf("/v1/events?after=%d", tail+10), apiToken, nil)
	if code != http.StatusGone || !strings.Contains(body, "/v1/users") {
		t.Errorf("cursor in a restore gap = %d %s, want 410 telling to reload from /v1/users", code, body)
	}
	for _, bad := range []string{"after=x", "limit=0", "limit=5000", "wait=forever"} {
		if code, _ := env.call(t, "GET", "/v1/events?"+bad, apiToken, nil); code != 400 {
			t.Errorf("%s = %d, want 400", bad, code)
		}
	}
}

// Admin and app API tokens rotate on reload, atomically.
func TestAdminTokenReload(t *testing.T) {
	env := newAPIEnv(t)
	const newAdmin, newAPI = "admin-token-rotated-0123456789", "api-token-rotated-0123456789"
	cfg := gateway.AdminConfig{Listen: "127.0.0.1:0", Tokens: []string{gateway.HashToken(adminToken), gateway.HashToken(newAdmin)}}
	cfg.ReadTimeout, cfg.WriteTimeout, cfg.IdleTimeout, cfg.MaxConnections = time.Second, time.Second, time.Second, 1
	api := gateway.DefaultAPIConfig()
	api.Tokens = []string{gateway.HashToken(newAPI)}
	changes, err := env.adminAPI.Reload(cfg, api)
	if err != nil || strings.Join(changes, "; ") != "admin.tokens: 1 → 2; api.tokens: changed (1)" {
		t.Fatalf("Reload = %q, %v", changes, err)
	}
	for _, tc := range []struct {
		path, token string
		want        int
	}{
		{"/admin/status", adminToken, 200}, {"/admin/status", newAdmin, 200},
		{"/v1/users", apiToken, 401}, {"/v1/users", newAPI, 200},
	} {
		if code, _ := env.call(t, "GET", tc.path, tc.token, nil); code != tc.want {
			t.Errorf("after reload, %s with %q = %d, want %d", tc.path, tc.token, code, tc.want)
		}
	}
	bad := cfg
	bad.Tokens = []string{"short"}
	if _, err := env.adminAPI.Reload(bad, api); err == nil {
		t.Error("Reload accepted an invalid token")
	}
	if code, _ := env.call(t, "GET", "/admin/status", newAdmin, nil); code != 200 {
		t.Error("a refused reload changed the tokens")
	}
}

// Through the admin API: a history replay skips an event
// whose dead letter was discarded, and re-sends it with include_discarded.
func TestAdminHistorySkipsDiscarded(t *testing.T) {
	env := newAdminEnv(t)
	env.status.Store(400) // dead-letters at once
	createUser(t, env.scim, "ada@example.com")
	var st struct {
		Targets []outbox.TargetStatus `json:"targets"`
	}
	waitUntil(t, "a dead letter", func() bool {
		env.call(t, "GET", "/admin/status", adminToken, &st)
		return st.Targets[0].DeadLetters == 1
	})
	if code, body := env.send(t, "POST", "/admin/targets/app/discard", adminToken, `{"all":true}`, nil); code != 200 || !strings.Contains(body, `"discarded": 1`) {
		t.Fatalf("discard = %d %s", code, body)
	}
	env.status.Store(204)
	code, body := env.send(t, "POST", "/admin/targets/app/history", adminToken, `{"after":0}`, nil)
	var hr outbox.HistoryResult
	if code != 200 || json.Unmarshal([]byte(body), &hr) != nil || hr.Replayed != 0 || hr.SkippedDiscarded != 1 {
		t.Fatalf("history = %d %s, want nothing replayed and the discarded event skipped", code, body)
	}
	code, body = env.send(t, "POST", "/admin/targets/app/history", adminToken, `{"after":0,"include_discarded":true}`, nil)
	if code != 200 || json.Unmarshal([]byte(body), &hr) != nil || hr.Replayed != 1 {
		t.Fatalf("history with include_discarded = %d %s", code, body)
	}
	waitUntil(t, "the discarded event re-sent", func() bool { return env.got.Load() == 1 })
}
