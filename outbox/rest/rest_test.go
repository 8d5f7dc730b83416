package rest_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scimgate/scimgate/outbox"
	"github.com/scimgate/scimgate/outbox/rest"
)

// TestValidateEveryErrorWithLines: one Validate reports every problem of
// a broken action file, each with the YAML line it is on.
func TestValidateEveryErrorWithLines(t *testing.T) {
	src := `base_url: http://127.0.0.1:1
colour: blue
actions:
  user.created:
    - name: find
      method: FETCH
      path: '"/users.json"'
      query: {name: 'record.login +'}
    - name: find
      method: POST
      path: 'nosuch.path'
      body: {user: {login: 'lower(record.login)', x: 'shout(record.login)'}}
      save: {id: 'response.body.id'}
      outcomes: [{status: [422], then: maybe}]
  user.renamed:
    - {name: x, method: GET, path: '"/"'}
  user.deleted:
    - {name: d, method: DELETE, path: '"/u/" + urlPath(app.id)', save: {x: 'response.status'}, when: '"yes"'}
    - {name: e, method: GET, path: '"/" + response.body'}
`
	tg := outbox.Target{Name: "app", Type: outbox.TypeRest, Rest: restNode(t, src)}
	errs := rest.Validate(tg, "outbox.targets[0]")
	want := []struct{ field, text string }{
		{"outbox.targets[0].rest", `line 2: unknown key "colour"`},
		{"outbox.targets[0].rest.actions[user.created][0].method", `line 6: "FETCH"`},
		{"outbox.targets[0].rest.actions[user.created][0].query.name", `line 8: expression: unexpected token EOF (1:14)`},
		{"outbox.targets[0].rest.actions[user.created][1].name", `line 9: "find": a step of this action has that name already`},
		{"outbox.targets[0].rest.actions[user.created][1].path", `line 11: expression: unknown name nosuch (1:1)`},
		{"outbox.targets[0].rest.actions[user.created][1].body.user.x", `line 12: expression: unknown name shout`},
		{"outbox.targets[0].rest.actions[user.created][1].outcomes[0].then", `line 14: "maybe": use ok, done, retry or dead`},
		{"outbox.targets[0].rest.actions[user.renamed]", `line 16: "user.renamed" is not an event type`},
		{"outbox.targets[0].rest.actions[user.deleted][0].when", `line 18: expression: expected bool, but got string`},
		{"outbox.targets[0].rest.actions[user.deleted][1].path", `line 19: expression: unknown name response`},
	}
	got := map[string]string{}
	for _, e := range errs {
		var fe *outbox.FieldError
		if !errors.As(e, &fe) || !errors.Is(e, outbox.ErrInvalid) {
			t.Errorf("%v: not an invalid FieldError", e)
			continue
		}
		var le *rest.LineError
		if !errors.As(e, &le) || le.Line == 0 {
			t.Errorf("%v: no line", e)
		}
		got[fe.Field] += fe.Err.Error() + "\n"
	}
	for _, w := range want {
		if !strings.Contains(got[w.field], w.text) {
			t.Errorf("%s: got %q, want %q", w.field, got[w.field], w.text)
		}
	}
	if len(errs) != len(want) {
		for _, e := range errs {
			t.Log(e)
		}
		t.Errorf("%d errors, want %d", len(errs), len(want))
	}
	// An expression's literal (a password expanded from ${VAR}) is never
	// echoed, even in a syntax error about it.
	bad := outbox.Target{Name: "app", Type: outbox.TypeRest, Rest: restNode(t, "base_url: http://x\nactions:\n  user.created: [{name: a, method: POST, path: '\"/\"', form: {pw: '\"hunter2-pw\" \"x\"'}}]\n")}
	badErrs := rest.Validate(bad, "p")
	if len(badErrs) != 1 {
		t.Errorf("a syntax error: %v", badErrs)
	}
	for _, e := range badErrs {
		t.Log(e)
		if strings.Contains(e.Error(), "hunter2") {
			t.Errorf("the literal leaked: %v", e)
		}
	}
	// The good file has none.
	if errs := rest.Validate(outbox.Target{Name: "app", Type: outbox.TypeRest, Rest: restNode(t, appSection("http://x", "k"))}, "p"); len(errs) != 0 {
		t.Errorf("appSection: %v", errs)
	}
}

// TestUserLifecycleAndAdopt: creates through the lookup-then-create pair
// (an account that exists already is adopted, not duplicated), updates and
// deletes by the saved app id, the reverse map, and forget.
func TestUserLifecycleAndAdopt(t *testing.T) {
	app := newFakeApp(t)
	app.users[100] = map[string]any{"id": 100, "login": "grace"} // exists before us
	h := startHarness(t, testConfig(t, appSection(app.URL, app.apiKey)))
	h.enqueue(userEvent("user.created", "u1", "ada", ""), userEvent("user.created", "u2", "grace", ""),
		userEvent("user.updated", "u1", "ada", ""), userEvent("user.deleted", "u2", "grace", ""))
	h.settled(4, 0)
	if got := h.ids("User/u1"); got["id"] != float64(1) {
		t.Errorf("ids[User/u1] = %v, want id 1", got)
	}
	if got := h.reverse("User/1"); got != "u1" {
		t.Errorf("app[User/1] = %q, want u1", got)
	}
	if app.count("POST /users.json") != 1 {
		t.Errorf("creates = %d, want 1 (grace adopted, not created)", app.count("POST /users.json"))
	}
	if app.count("DELETE /users/100.json") != 1 || app.users[100] != nil {
		t.Errorf("grace (adopted as 100) not deleted: %v", app.log)
	}
	if got := h.ids("User/u2"); got != nil {
		t.Errorf("ids[User/u2] = %v after forget", got)
	}
	if got := h.reverse("User/100"); got != "" {
		t.Errorf("app[User/100] = %q after forget", got)
	}
	if app.count("PUT /users/1.json") != 1 {
		t.Errorf("update: %v", app.log)
	}
}

// TestFailingWriteOneRequestPerAttempt: a write that keeps failing reaches
// the app exactly once per attempt (go-retryablehttp repeats no write),
// then dead-letters with the request as rendered — the API key redacted —
// and the start of the app's answer.
func TestFailingWriteOneRequestPerAttempt(t *testing.T) {
	app := newFakeApp(t)
	app.fail = func(r *http.Request) int {
		if r.Method == "POST" {
			return http.StatusServiceUnavailable
		}
		return 0
	}
	cfg := testConfig(t, appSection(app.URL, app.apiKey))
	cfg.MaxAttempts = 3
	h := startHarness(t, cfg)
	evs := h.enqueue(userEvent("user.created", "u1", "ada", ""))
	h.settled(0, 1)
	if n := app.count("POST /users.json"); n != 3 {
		t.Errorf("the app received %d POSTs, want 3 (one per attempt)", n)
	}
	if n := app.count("GET /users.json"); n != 3 {
		t.Errorf("lookups = %d, want 3: a GET step runs again on every attempt (a create answered 422 is found by it)", n)
	}
	dl, err := h.d.DeadLetter("app", evs[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"step create (line", "POST " + app.URL + "/users.json", "X-Api-Key: [redacted]",
		`"login":"ada"`, "503 Service Unavailable", "failing on purpose"} {
		if !strings.Contains(dl.ResponseBody, want) {
			t.Errorf("dead letter body lacks %q:\n%s", want, dl.ResponseBody)
		}
	}
	if strings.Contains(dl.ResponseBody+dl.LastError, app.apiKey) {
		t.Errorf("the API key leaked into the dead letter:\n%s\n%s", dl.ResponseBody, dl.LastError)
	}
	if dl.LastStatus != 503 || !strings.Contains(dl.LastError, "step create: POST") {
		t.Errorf("dead letter status %d error %q", dl.LastStatus, dl.LastError)
	}
}

// TestRedeliveryKeepsProgress: the first step's success is durable; a
// retry, and a restart of the gateway while the second step fails (a
// crash-like redelivery), resume at the second step.
func TestRedeliveryKeepsProgress(t *testing.T) {
	app := newFakeApp(t)
	failing := true
	app.fail = func(r *http.Request) int {
		if failing && r.Method == "POST" && strings.HasSuffix(r.URL.Path, "/users.json") && strings.HasPrefix(r.URL.Path, "/groups/") {
			return http.StatusBadGateway
		}
		return 0
	}
	section := appSection(app.URL, app.apiKey) + `  user.reactivated:
    - name: create
      method: POST
      path: '"/users.json"'
      body: {user: {login: 'record.login'}}
      save: {id: 'response.body.user.id'}
    - name: join
      method: POST
      path: '"/groups/" + urlPath(appId("Group", "g1")) + "/users.json"'
      body: {user_id: 'app.id'}
`
	h := startHarness(t, testConfig(t, section))
	h.enqueue(groupEvent("group.created", "g1", "Eng"))
	h.settled(1, 0)
	h.enqueue(userEvent("user.reactivated", "u1", "ada", ""))
	waitFor(t, "the join failing twice", func() bool { return app.count("POST /groups/1/users.json") >= 2 })
	h.stopRun() // the process ends mid-event
	h.run()
	waitFor(t, "another failed join after the restart", func() bool { return app.count("POST /groups/1/users.json") >= 4 })
	app.mu.Lock()
	failing = false
	app.mu.Unlock()
	h.settled(2, 0)
	waitFor(t, "u1 in g1", func() bool {
		app.mu.Lock()
		defer app.mu.Unlock()
		return app.members[1][2]
	})
	if n := app.count("POST /users.json"); n != 1 {
		t.Errorf("the create ran %d times, want 1 (its progress survived retries and the restart)", n)
	}
}

// TestMembershipTranslatesBothSides: a member event uses the group's id
// (app) and the user's (appId); a member whose user has no app id waits,
// then dead-letters naming it, and the app never sees the request.
func TestMembershipTranslatesBothSides(t *testing.T) {
	app := newFakeApp(t)
	cfg := testConfig(t, appSection(app.URL, app.apiKey))
	cfg.MaxAttempts = 3
	h := startHarness(t, cfg)
	h.enqueue(userEvent("user.created", "u1", "ada", ""), groupEvent("group.created", "g1", "Eng"),
		memberEvent("group.member_added", "g1", "u1"))
	h.settled(3, 0)
	uid, gid := h.ids("User/u1")["id"].(float64), h.ids("Group/g1")["id"].(float64)
	app.mu.Lock()
	ok := app.members[int(gid)][int(uid)]
	app.mu.Unlock()
	if !ok || uid == gid {
		t.Fatalf("user %v not in group %v: %v", uid, gid, app.log)
	}
	h.enqueue(memberEvent("group.member_removed", "g1", "u1"), memberEvent("group.member_removed", "g1", "u1"))
	h.settled(5, 0) // the second is a 404: already gone, ok
	if n := app.count(fmt.Sprintf("DELETE /groups/%v/users/%v.json", gid, uid)); n != 2 {
		t.Errorf("removes = %d: %v", n, app.log)
	}
	evs := h.enqueue(memberEvent("group.member_added", "g1", "nobody"))
	h.settled(5, 1)
	dl, err := h.d.DeadLetter("app", evs[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(dl.LastError, "app id of User/nobody not known yet") || dl.Attempts != 3 {
		t.Errorf("dead letter: %d attempts, %q", dl.Attempts, dl.LastError)
	}
	if n := app.count(fmt.Sprintf("POST /groups/%v/users.json", gid)); n != 1 {
		t.Errorf("the app saw %d adds, want 1", n)
	}
}

// TestOutcomeOnBody: an app that answers 200 with an error in the body is
// classified by the outcome's condition.
func TestOutcomeOnBody(t *testing.T) {
	srv := newFakeApp(t)
	srv.fail = func(r *http.Request) int { return 0 }
	section := `base_url: ` + srv.URL + `
headers: {X-Api-Key: "` + srv.apiKey + `"}
actions:
  user.updated:
    - name: rpc
      method: GET
      path: '"/users.json"'
      query: {name: 'record.login'}
      outcomes:
        - {when: 'len(response.body.users) == 0', then: dead}
`
	cfg := testConfig(t, section)
	h := startHarness(t, cfg)
	evs := h.enqueue(userEvent("user.updated", "u1", "nobody", ""))
	h.settled(0, 1)
	dl, _ := h.d.DeadLetter("app", evs[0].ID)
	if dl.LastStatus != 200 || !strings.Contains(dl.ResponseBody, `{"users":[]}`) {
		t.Errorf("dead letter: %d %q", dl.LastStatus, dl.ResponseBody)
	}
	_ = time.Second
}

// TestBackfillCreatesAdoptsAndSetsMembers: a backfill through an action
// target creates every user (adopting one the app has already), creates
// the group, and sets its members with one request per member (for_each
// over the snapshot's members, each translated by appId).
func TestBackfillCreatesAdoptsAndSetsMembers(t *testing.T) {
	app := newFakeApp(t)
	app.users[100] = map[string]any{"id": 100, "login": "grace"}
	section := appSection(app.URL, app.apiKey) + `  user.snapshot:
    - name: find
      method: GET
      path: '"/users.json"'
      query: {name: 'record.login'}
      save: {id: 'len(response.body.users) > 0 ? response.body.users[0].id : nil'}
    - name: create
      when: 'app.id == nil'
      method: POST
      path: '"/users.json"'
      body: {user: {login: 'record.login'}}
      save: {id: 'response.body.user.id'}
  group.snapshot:
    - {name: create, method: POST, path: '"/groups.json"', body: {group: {name: 'record.name'}}, save: {id: 'response.body.group.id'}}
  group.members_snapshot:
    - name: add
      for_each: 'filter(members, .type == "User")'
      method: POST
      path: '"/groups/" + urlPath(app.id) + "/users.json"'
      body: {user_id: 'appId("User", item.id)'}
`
	h := newHarness(t, testConfig(t, section))
	h.setup = func(d *outbox.Dispatcher) {
		d.SetSnapshot(func(tx *bolt.Tx, emit func(outbox.Event) error) error {
			evs := []outbox.Event{{Type: "snapshot.started", Data: json.RawMessage(`{"sequence":0,"users":3,"groups":1}`)}}
			for _, u := range []string{"ada", "grace", "linus"} {
				evs = append(evs, outbox.Event{Type: "user.snapshot", Resources: []string{"User/" + u},
					Data: json.RawMessage(fmt.Sprintf(`{"user":{"id":%q,"login":%q}}`, u, u))})
			}
			evs = append(evs, outbox.Event{Type: "group.snapshot", Resources: []string{"Group/g1"}, Data: json.RawMessage(`{"group":{"id":"g1","name":"Eng"}}`)},
				outbox.Event{Type: "group.members_snapshot", Resources: []string{"Group/g1"},
					Data: json.RawMessage(`{"group":{"id":"g1","name":"Eng"},"members":[{"id":"ada","type":"User"},{"id":"grace","type":"User"},{"id":"linus","type":"User"},{"id":"g2","type":"Group"}],"chunk":{"index":0,"count":1}}`)},
				outbox.Event{Type: "snapshot.completed", Data: json.RawMessage(`{"sequence":0}`)})
			for _, ev := range evs {
				if err := emit(ev); err != nil {
					return err
				}
			}
			return nil
		})
	}
	h.run()
	if _, err := h.d.Backfill("app"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the backfill done", func() bool {
		s := h.status()
		return s.Backfill != nil && s.Backfill.State == outbox.BackfillDone
	})
	if s := h.status(); s.DeadLetters != 0 {
		t.Fatalf("dead letters: %+v", s)
	}
	app.mu.Lock()
	defer app.mu.Unlock()
	if len(app.users) != 3 || app.calls["POST /users.json"] != 2 {
		t.Errorf("users %v, creates %d: want ada and linus created, grace adopted", app.users, app.calls["POST /users.json"])
	}
	gid := int(h.ids("Group/g1")["id"].(float64))
	want := map[int]bool{100: true, int(h.ids("User/ada")["id"].(float64)): true, int(h.ids("User/linus")["id"].(float64)): true}
	if fmt.Sprint(app.members[gid]) != fmt.Sprint(want) {
		t.Errorf("members of %d = %v, want %v", gid, app.members[gid], want)
	}
}

// TestCrashWindowAdopts: the app creates the account but its answer never
// arrives (the gateway dies first); the redelivered event's lookup finds
// the account and links it: one account, its id in the map.
func TestCrashWindowAdopts(t *testing.T) {
	app := newFakeApp(t)
	hang := make(chan struct{})
	var once sync.Once
	app.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" {
			first := false
			once.Do(func() { first = true })
			if first {
				rec := httptest.NewRecorder()
				app.serve(rec, r) // the app commits the account…
				<-hang            // …and the answer is lost with the process
				return
			}
		}
		app.serve(w, r)
	})
	h := startHarness(t, testConfig(t, appSection(app.URL, app.apiKey)))
	h.enqueue(userEvent("user.created", "u1", "ada", ""))
	waitFor(t, "the account created", func() bool {
		app.mu.Lock()
		defer app.mu.Unlock()
		return len(app.users) == 1
	})
	h.stopRun()
	close(hang)
	h.run()
	h.settled(1, 0)
	if n := app.count("POST /users.json"); n != 1 {
		t.Errorf("creates = %d, want 1 (the redelivery adopts)", n)
	}
	if got := h.ids("User/u1"); got["id"] != float64(1) {
		t.Errorf("ids[User/u1] = %v", got)
	}
}

// TestEventCauseInExpressions: an action reads event.cause ("mapping" for
// the events a remap after a mapping change emits; empty for an identity
// provider's write) and can act on it.
func TestEventCauseInExpressions(t *testing.T) {
	srv := newFakeApp(t)
	srv.fail = func(r *http.Request) int { return 0 }
	section := `base_url: ` + srv.URL + `
headers: {X-Api-Key: "` + srv.apiKey + `"}
actions:
  user.updated:
    - name: rpc
      method: GET
      path: '"/users.json"'
      query: {name: 'record.login'}
      outcomes:
        - {when: 'event.cause == "mapping"', then: dead}
`
	h := startHarness(t, testConfig(t, section))
	remapped := userEvent("user.updated", "u1", "ada", "")
	remapped.Cause = "mapping"
	evs := h.enqueue(remapped, userEvent("user.updated", "u2", "bob", ""))
	h.settled(1, 1)
	if _, err := h.d.DeadLetter("app", evs[0].ID); err != nil {
		t.Errorf("the event with cause mapping is not the dead letter: %v", err)
	}
	if _, err := h.d.DeadLetter("app", evs[1].ID); err == nil {
		t.Error("the event without a cause was dead-lettered")
	}
}
