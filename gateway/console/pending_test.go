package console_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// A paused target's pending events are listed on its page, a page of 50 at
// a time, each openable; the admin API lists the same, paged by position.
func TestPendingListOpenAndPaged(t *testing.T) {
	e := newEnv(t, true)
	b := e.browser(t)
	b.signIn()
	if err := e.d.Pause("app", "test"); err != nil {
		t.Fatal(err)
	}
	for i := range 55 {
		e.scimCall(t, "POST", "/Users", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"u%02d@example.com"}`, i))
	}
	_, body := b.get("/targets/app")
	links := regexp.MustCompile(`class="pe" href="(/targets/app/pending/(\d+))"`).FindAllStringSubmatch(body, -1)
	if len(links) != 50 {
		t.Fatalf("first page lists %d pending events, want 50:\n%s", len(links), body)
	}
	m := regexp.MustCompile(`href="/targets/app\?pafter=(\d+)">Next pending page`).FindStringSubmatch(body)
	if m == nil || m[1] != links[49][2] {
		t.Fatalf("no next pending page link after position %s:\n%s", links[49][2], body)
	}
	_, body2 := b.get("/targets/app?pafter=" + m[1])
	if n := strings.Count(body2, `class="pe"`); n != 5 || strings.Contains(body2, "Next pending page") {
		t.Errorf("second page lists %d pending events (want 5, no next link):\n%s", n, body2)
	}
	resp, ev := b.get(links[0][1])
	if resp.StatusCode != 200 || !strings.Contains(ev, "user.created") || !strings.Contains(ev, "u00@example.com") || !strings.Contains(ev, `id="pstate">`) {
		t.Errorf("pending event page: %d\n%s", resp.StatusCode, ev)
	}
	if resp, _ := b.get("/targets/app/pending/999999"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("a position with nothing pending: %d, want 404", resp.StatusCode)
	}

	api := func(path string) (int, map[string]json.RawMessage) {
		req, _ := http.NewRequest("GET", e.admin+path, nil)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, raw := b.do(req)
		var out map[string]json.RawMessage
		_ = json.Unmarshal([]byte(raw), &out)
		return resp.StatusCode, out
	}
	code, out := api("/admin/targets/app/pending?limit=50")
	var list []struct {
		Position uint64 `json:"position"`
		State    string `json:"state"`
	}
	if err := json.Unmarshal(out["pending"], &list); code != 200 || err != nil || len(list) != 50 || string(out["next_after"]) != links[49][2] {
		t.Fatalf("GET pending: %d, %d events, next_after %s (want 50 and %s)", code, len(list), out["next_after"], links[49][2])
	}
	code, out = api("/admin/targets/app/pending?after=" + string(out["next_after"]))
	if err := json.Unmarshal(out["pending"], &list); code != 200 || err != nil || len(list) != 5 || out["next_after"] != nil {
		t.Errorf("second page: %d, %d events, next_after %s (want 5, none)", code, len(list), out["next_after"])
	}
	if code, out := api("/admin/targets/app/pending/" + links[3][2]); code != 200 || !strings.Contains(string(out["event"]), "user.created") {
		t.Errorf("GET one pending event: %d %s", code, out)
	}
	for path, want := range map[string]int{"/admin/targets/app/pending?limit=0": 400, "/admin/targets/app/pending?after=x": 400,
		"/admin/targets/nope/pending": 404, "/admin/targets/app/pending/1x": 400, "/admin/targets/app/pending/999999": 404} {
		if code, out := api(path); code != want || out["error"] == nil {
			t.Errorf("GET %s: %d %s, want %d with an error", path, code, out, want)
		}
	}
}

// A backfill's snapshot events, spooled behind a paused target, are listed
// after the log's events, as many as the backlog counts, and open.
func TestPendingListsSnapshotEvents(t *testing.T) {
	e := newEnv(t, true)
	b := e.browser(t)
	b.signIn()
	if err := e.d.Pause("app", "test"); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		e.scimCall(t, "POST", "/Users", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"u%02d@example.com"}`, i))
	}
	if _, err := e.d.Backfill("app"); err != nil {
		t.Fatal(err)
	}
	var types []string
	waitFor(t, "3 log events and 5 snapshot events listed, as the backlog counts", func() bool {
		list, err := e.d.Pending("app", 0, 100)
		st, _ := e.d.Status()
		if err != nil || len(list) != 8 || st[0].Backlog != 8 {
			return false
		}
		types = types[:0]
		for _, p := range list {
			types = append(types, p.Event.Type)
		}
		return true
	})
	want := "user.created user.created user.created snapshot.started user.snapshot user.snapshot user.snapshot snapshot.completed"
	if got := strings.Join(types, " "); got != want {
		t.Errorf("pending in order: %s, want %s", got, want)
	}
	_, body := b.get("/targets/app")
	links := regexp.MustCompile(`class="pe" href="(/targets/app/pending/\d+)"`).FindAllStringSubmatch(body, -1)
	if len(links) != 8 {
		t.Fatalf("%d pending links, want 8:\n%s", len(links), body)
	}
	if resp, ev := b.get(links[5][1]); resp.StatusCode != 200 || !strings.Contains(ev, "user.snapshot") {
		t.Errorf("a snapshot event's page: %d\n%s", resp.StatusCode, ev)
	}
}
