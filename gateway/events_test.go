package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scimgate/scimgate/gateway"
	"github.com/scimgate/scimgate/gateway/store"
	"github.com/scimgate/scimgate/mapping"
	"github.com/scimgate/scimgate/outbox"
)

// event is a delivered webhook body.
type event struct {
	ID       string                     `json:"id"`
	Type     string                     `json:"type"`
	Sequence uint64                     `json:"sequence"`
	Data     map[string]map[string]any  `json:"data"`
	Changes  map[string]json.RawMessage `json:"changes"`
}

// eventServer is the SCIM API with a running dispatcher delivering to a
// recording receiver.
type eventServer struct {
	*testServer
	mapper *mapping.Mapper
	mu     sync.Mutex
	events []event
}

func newEventServer(t *testing.T) *eventServer {
	t.Helper()
	return newEventServerRules(t, mapping.DefaultRules())
}

// newEventServerRules is newEventServer with other mapping rules (and the
// catalog they hold).
func newEventServerRules(t *testing.T, rules mapping.Rules) *eventServer {
	t.Helper()
	db := mustOpenDB(t)
	es := &eventServer{}
	secret, _ := outbox.NewSecret()
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := outbox.Verify([]string{secret}, r.Header, body, time.Now()); err != nil {
			t.Errorf("signature: %v", err)
		}
		var ev event
		if err := json.Unmarshal(body, &ev); err != nil {
			t.Errorf("event: %v", err)
		}
		es.mu.Lock()
		es.events = append(es.events, ev)
		es.mu.Unlock()
		w.WriteHeader(204)
	}))
	t.Cleanup(rcv.Close)
	cfg := testOutboxConfig()
	cfg.PollInterval = 20 * time.Millisecond
	cfg.Targets = []outbox.Target{{Name: "app", URL: rcv.URL, Secrets: []string{secret}, Timeout: 5 * time.Second}}
	d, err := outbox.NewDispatcher(db, cfg, discardLogger(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	// Registered after mustOpenDB's cleanup, so it runs before the db closes.
	t.Cleanup(func() { cancel(); <-done })
	mapper, err := mapping.Compile(rules)
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(db, mapper, store.Options{OnCommit: d.Notify})
	t.Cleanup(st.Close)
	gcfg := gateway.DefaultConfig()
	gcfg.Auth.BearerTokens = gateway.Tokens(gateway.HashToken(testToken))
	gs := gateway.NewServer(gcfg, st, discardLogger(), nil)
	gs.SetMapper(mapper)
	es.mapper = mapper
	srv := httptest.NewServer(gs)
	t.Cleanup(srv.Close)
	es.testServer = &testServer{t: t, url: srv.URL + "/scim/v2", store: st, srv: srv}
	return es
}

// settle waits until n events have arrived and no more follow, and
// returns them in sequence order.
func (es *eventServer) settle(t *testing.T, n int) []event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		es.mu.Lock()
		got := len(es.events)
		es.mu.Unlock()
		if got >= n || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(150 * time.Millisecond) // anything extra would show up now
	es.mu.Lock()
	defer es.mu.Unlock()
	evs := append([]event(nil), es.events...)
	sort.Slice(evs, func(i, j int) bool { return evs[i].Sequence < evs[j].Sequence })
	if len(evs) != n {
		t.Fatalf("got %d events, want %d: %v", len(evs), n, types(evs))
	}
	es.events = nil
	return evs
}

func types(evs []event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Type)
	}
	return out
}

func wantTypes(t *testing.T, evs []event, want ...string) {
	t.Helper()
	if got := strings.Join(types(evs), ","); got != strings.Join(want, ",") {
		t.Errorf("events = %s\n  want   %s", got, strings.Join(want, ","))
	}
}

func TestEventsOnlyForRealChanges(t *testing.T) {
	es := newEventServer(t)
	created := es.do("POST", "/Users", oktaCreate).must(t, 201)
	id := created.body["id"].(string)
	evs := es.settle(t, 1)
	wantTypes(t, evs, "user.created")
	if u := evs[0].Data["user"]; u["id"] != id || u["login"] != "Test.User@okta.local" || u["version"] != 1.0 {
		t.Errorf("user.created data = %v", u)
	}

	// Okta's profile push: GET then PUT back what we returned, three times.
	for range 3 {
		got := es.do("GET", "/Users/"+id, "").must(t, 200)
		body, _ := json.Marshal(got.body)
		es.do("PUT", "/Users/"+id, string(body)).must(t, 200)
	}
	// A change the mapping does not read (nickName): stored, no event.
	es.do("PATCH", "/Users/"+id, `{"Operations":[{"op":"add","path":"nickName","value":"Testy"}]}`).must(t, 204)
	// A real change: one user.updated with the diff.
	es.do("PATCH", "/Users/"+id, `{"Operations":[{"op":"replace","path":"title","value":"Engineer"}]}`).must(t, 204)
	evs = es.settle(t, 1)
	wantTypes(t, evs, "user.updated")
	if string(evs[0].Changes["title"]) != `{"old":null,"new":"Engineer"}` || len(evs[0].Changes) != 1 {
		t.Errorf("changes = %v", evs[0].Changes)
	}
	if evs[0].Data["user"]["version"].(float64) <= 1 {
		t.Errorf("version did not grow: %v", evs[0].Data["user"]["version"])
	}
	// Deactivate with another change: one user.deactivated carrying both.
	es.do("PATCH", "/Users/"+id, `{"Operations":[{"op":"replace","value":{"active":false,"title":"Former"}}]}`).must(t, 204)
	es.do("PATCH", "/Users/"+id, `{"Operations":[{"op":"replace","value":{"active":false}}]}`).must(t, 204) // again: nothing
	es.do("PATCH", "/Users/"+id, `{"Operations":[{"op":"replace","value":{"active":true}}]}`).must(t, 204)
	evs = es.settle(t, 2)
	wantTypes(t, evs, "user.deactivated", "user.reactivated")
	if _, ok := evs[0].Changes["title"]; !ok {
		t.Errorf("deactivation lost the other change: %v", evs[0].Changes)
	}
	es.do("DELETE", "/Users/"+id, "").must(t, 204)
	wantTypes(t, es.settle(t, 1), "user.deleted")
}

func TestGroupMembershipEvents(t *testing.T) {
	es := newEventServer(t)
	var users []string
	for i := range 4 {
		users = append(users, createUser(t, es.testServer, fmt.Sprintf("m%d@example.com", i)))
	}
	es.settle(t, 4)
	gid := createGroup(t, es.testServer, "Engineering", users[0], users[1])
	evs := es.settle(t, 3)
	wantTypes(t, evs, "group.created", "group.member_added", "group.member_added")
	if evs[1].Data["group"]["id"] != gid || evs[1].Data["user"]["id"] != users[0] {
		t.Errorf("member_added data = %v", evs[1].Data)
	}
	// Okta's rename sent with every membership change, same name: nothing.
	es.do("PATCH", "/Groups/"+gid, fmt.Sprintf(`{"Operations":[{"op":"replace","value":{"id":%q,"displayName":"Engineering"}}]}`, gid)).must(t, 204)
	// Re-adding a member, removing a non-member: nothing.
	es.do("PATCH", "/Groups/"+gid, fmt.Sprintf(`{"Operations":[{"op":"add","path":"members","value":[{"value":%q}]},
		{"op":"remove","path":"members[value eq \"%s\"]"}]}`, users[0], users[3])).must(t, 204)
	// Full replace {0,1} → {1,2,3}: exactly remove 0, add 2 and 3.
	es.do("PATCH", "/Groups/"+gid, fmt.Sprintf(`{"Operations":[{"op":"replace","path":"members","value":[{"value":%q},{"value":%q},{"value":%q}]}]}`,
		users[1], users[2], users[3])).must(t, 204)
	evs = es.settle(t, 3)
	wantTypes(t, evs, "group.member_removed", "group.member_added", "group.member_added")
	if evs[0].Data["user"]["id"] != users[0] {
		t.Errorf("removed %v, want %s", evs[0].Data["user"]["id"], users[0])
	}
	// AIW PUT with the full membership {1,2,3} and a new name: rename only.
	es.do("PUT", "/Groups/"+gid, fmt.Sprintf(`{"displayName":"Eng","members":[{"value":%q},{"value":%q},{"value":%q}]}`, users[3], users[2], users[1])).must(t, 200)
	evs = es.settle(t, 1)
	wantTypes(t, evs, "group.updated")
	if string(evs[0].Changes["name"]) != `{"old":"Engineering","new":"Eng"}` {
		t.Errorf("rename changes = %v", evs[0].Changes)
	}
	// Deleting a user removes it from the group first.
	es.do("DELETE", "/Users/"+users[3], "").must(t, 204)
	wantTypes(t, es.settle(t, 2), "group.member_removed", "user.deleted")
	// Deleting the group: the removes, then the delete.
	es.do("DELETE", "/Groups/"+gid, "").must(t, 204)
	wantTypes(t, es.settle(t, 3), "group.member_removed", "group.member_removed", "group.deleted")
}

func TestManagerResolutionEmitsUpdate(t *testing.T) {
	es := newEventServer(t)
	ent := "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
	report := es.do("POST", "/Users", fmt.Sprintf(`{"userName":"report@example.com",%q:{"manager":{"value":"boss@example.com"}}}`, ent)).must(t, 201).body["id"].(string)
	es.settle(t, 1)
	boss := es.do("POST", "/Users", `{"userName":"boss@example.com"}`).must(t, 201).body["id"].(string)
	evs := es.settle(t, 2)
	wantTypes(t, evs, "user.created", "user.updated")
	if evs[1].Data["user"]["id"] != report || string(evs[1].Changes["manager_id"]) != fmt.Sprintf(`{"old":null,"new":%q}`, boss) {
		t.Errorf("report update = %+v", evs[1])
	}
}
