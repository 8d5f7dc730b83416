package rest_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"gopkg.in/yaml.v3"

	"github.com/scimgate/scimgate/outbox"
	"github.com/scimgate/scimgate/outbox/rest"
)

// restNode parses a rest section.
func restNode(t testing.TB, src string) yaml.Node {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(src), &n); err != nil {
		t.Fatalf("yaml: %v", err)
	}
	return *n.Content[0]
}

func openDB(t testing.TB, path string) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(outbox.InitBuckets); err != nil {
		t.Fatal(err)
	}
	return db
}

// harness is a real dispatcher on a real bbolt file with one rest target.
type harness struct {
	t     testing.TB
	path  string
	db    *bolt.DB
	cfg   outbox.Config
	d     *outbox.Dispatcher
	stop  func()
	setup func(d *outbox.Dispatcher) // before Run
}

func testConfig(t testing.TB, section string) outbox.Config {
	cfg := outbox.DefaultConfig()
	cfg.Backoff = []time.Duration{0, 20 * time.Millisecond, 40 * time.Millisecond}
	cfg.MaxAttempts = 50
	cfg.MaxAge = time.Hour
	cfg.RetryAfterMax = time.Second
	cfg.Concurrency = 4
	cfg.PollInterval = 20 * time.Millisecond
	cfg.Targets = []outbox.Target{{Name: "app", Type: outbox.TypeRest, Timeout: 2 * time.Second, Rest: restNode(t, section)}}
	cfg.Transports = map[string]outbox.Transport{outbox.TypeRest: rest.Transport()}
	return cfg
}

func startHarness(t testing.TB, cfg outbox.Config) *harness {
	t.Helper()
	h := newHarness(t, cfg)
	h.run()
	return h
}

// newHarness is startHarness without starting the dispatcher (set setup).
func newHarness(t testing.TB, cfg outbox.Config) *harness {
	h := &harness{t: t, path: filepath.Join(t.TempDir(), "scimgate.db"), cfg: cfg}
	h.db = openDB(t, h.path)
	t.Cleanup(func() {
		h.stopRun()
		_ = h.db.Close()
	})
	return h
}

func (h *harness) run() {
	h.t.Helper()
	if err := h.cfg.Validate(); err != nil {
		h.t.Fatalf("Validate: %v", err)
	}
	d, err := outbox.NewDispatcher(h.db, h.cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), outbox.NewMetrics())
	if err != nil {
		h.t.Fatalf("NewDispatcher: %v", err)
	}
	if h.setup != nil {
		h.setup(d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	waitFor(h.t, "dispatcher ready", d.Ready)
	h.d = d
	h.stop = func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			h.t.Errorf("Run: %v", err)
		}
	}
}

// stopRun stops the dispatcher (as a process end would: the in-flight
// attempt is cancelled, its event stays pending).
func (h *harness) stopRun() {
	if h.stop != nil {
		h.stop()
		h.stop = nil
	}
}

func (h *harness) enqueue(evs ...outbox.Event) []outbox.Event {
	h.t.Helper()
	var out []outbox.Event
	err := h.db.Update(func(tx *bolt.Tx) error {
		out = out[:0]
		for _, ev := range evs {
			s, err := outbox.Enqueue(tx, ev, time.Now())
			if err != nil {
				return err
			}
			out = append(out, s)
		}
		tx.OnCommit(h.d.Notify)
		return nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return out
}

func (h *harness) status() outbox.TargetStatus {
	h.t.Helper()
	st, err := h.d.Status()
	if err != nil || len(st) != 1 {
		h.t.Fatalf("Status: %v %v", st, err)
	}
	return st[0]
}

// settled waits until n events were delivered or dead-lettered.
func (h *harness) settled(delivered, dead int) {
	h.t.Helper()
	waitFor(h.t, fmt.Sprintf("%d delivered, %d dead", delivered, dead), func() bool {
		s := h.status()
		return int(s.Delivered) == delivered && s.DeadLetters == dead && s.Backlog == 0
	})
}

func (h *harness) ids(key string) map[string]any {
	h.t.Helper()
	var out map[string]any
	err := h.d.State("app").View(func(tx *outbox.StateTx) error {
		v, err := tx.Get(rest.SpaceIDs, []byte(key))
		if err != nil || v == nil {
			return err
		}
		return json.Unmarshal(v, &out)
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return out
}

func (h *harness) reverse(key string) string {
	h.t.Helper()
	var out string
	err := h.d.State("app").View(func(tx *outbox.StateTx) error {
		v, err := tx.Get(rest.SpaceApp, []byte(key))
		out = string(v)
		return err
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return out
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func userEvent(typ, id, login string, extra string) outbox.Event {
	return outbox.Event{Type: typ, Resources: []string{"User/" + id},
		Data: json.RawMessage(fmt.Sprintf(`{"user":{"id":%q,"version":1,"login":%q,"first_name":"Ada","last_name":"Lovelace"%s}}`, id, login, extra))}
}

func memberEvent(typ, group, user string) outbox.Event {
	return outbox.Event{Type: typ, Resources: []string{"Group/" + group, "User/" + user},
		Data: json.RawMessage(fmt.Sprintf(`{"group":{"id":%q,"name":"Eng"},"user":{"id":%q}}`, group, user))}
}

func groupEvent(typ, id, name string) outbox.Event {
	return outbox.Event{Type: typ, Resources: []string{"Group/" + id},
		Data: json.RawMessage(fmt.Sprintf(`{"group":{"id":%q,"version":1,"name":%q}}`, id, name))}
}

// fakeApp is a small Redmine-shaped app: users by login, groups, members.
// It counts every request by "METHOD path" and can be told to fail.
type fakeApp struct {
	*httptest.Server
	mu      sync.Mutex
	nextID  int
	users   map[int]map[string]any
	groups  map[int]map[string]any
	members map[int]map[int]bool
	calls   map[string]int
	log     []string
	fail    func(r *http.Request) int // non-zero: answer this status
	apiKey  string
}

func newFakeApp(t testing.TB) *fakeApp {
	a := &fakeApp{nextID: 1, users: map[int]map[string]any{}, groups: map[int]map[string]any{},
		members: map[int]map[int]bool{}, calls: map[string]int{}, apiKey: "key-0123456789abcdef"}
	a.Server = httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(a.Close)
	return a
}

func (a *fakeApp) count(key string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.calls[key]
}

func (a *fakeApp) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	a.mu.Lock()
	defer a.mu.Unlock()
	key := r.Method + " " + r.URL.Path
	a.calls[key]++
	a.log = append(a.log, key)
	if a.fail != nil {
		if code := a.fail(r); code != 0 {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(code)
			fmt.Fprintf(w, `{"errors":["failing on purpose"]}`)
			return
		}
	}
	if r.Header.Get("X-Api-Key") != a.apiKey {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var in map[string]map[string]any
	_ = json.Unmarshal(body, &in)
	parts := strings.Split(strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/"), ".json"), "/")
	reply := func(code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		if v != nil {
			_ = json.NewEncoder(w).Encode(v)
		}
	}
	switch {
	case r.Method == "GET" && len(parts) == 1 && parts[0] == "users":
		list := []any{}
		for _, u := range a.users {
			if u["login"] == r.URL.Query().Get("name") {
				list = append(list, u)
			}
		}
		reply(200, map[string]any{"users": list})
	case r.Method == "POST" && len(parts) == 1 && parts[0] == "users":
		u := in["user"]
		for _, o := range a.users {
			if o["login"] == u["login"] {
				reply(422, map[string]any{"errors": []string{"Login has already been taken"}})
				return
			}
		}
		u["id"] = a.nextID
		a.users[a.nextID] = u
		a.nextID++
		reply(201, map[string]any{"user": u})
	case len(parts) == 2 && parts[0] == "users":
		id, _ := strconv.Atoi(parts[1])
		u, ok := a.users[id]
		if !ok {
			reply(404, nil)
			return
		}
		switch r.Method {
		case "PUT":
			for k, v := range in["user"] {
				u[k] = v
			}
			reply(204, nil)
		case "DELETE":
			delete(a.users, id)
			reply(204, nil)
		default:
			reply(200, map[string]any{"user": u})
		}
	case r.Method == "POST" && len(parts) == 1 && parts[0] == "groups":
		g := in["group"]
		g["id"] = a.nextID
		a.groups[a.nextID] = g
		a.members[a.nextID] = map[int]bool{}
		a.nextID++
		reply(201, map[string]any{"group": g})
	case len(parts) == 3 && parts[0] == "groups" && parts[2] == "users" && r.Method == "POST":
		gid, _ := strconv.Atoi(parts[1])
		var uin map[string]any
		_ = json.Unmarshal(body, &uin)
		uid, _ := uin["user_id"].(float64)
		if a.members[gid] == nil || a.users[int(uid)] == nil {
			reply(422, map[string]any{"errors": []string{"unknown group or user"}})
			return
		}
		a.members[gid][int(uid)] = true
		reply(204, nil)
	case len(parts) == 4 && parts[0] == "groups" && parts[2] == "users" && r.Method == "DELETE":
		gid, _ := strconv.Atoi(parts[1])
		uid, _ := strconv.Atoi(parts[3])
		if !a.members[gid][uid] {
			reply(404, nil)
			return
		}
		delete(a.members[gid], uid)
		reply(204, nil)
	default:
		reply(404, map[string]any{"error": "no route " + key})
	}
}

// appSection is the action file the tests run: Redmine's shape.
func appSection(url, key string) string {
	return `base_url: ` + url + `
headers: {X-Api-Key: "` + key + `"}
actions:
  user.created:
    - name: find
      method: GET
      path: '"/users.json"'
      query: {name: 'record.login'}
      save: {id: 'len(response.body.users) > 0 ? response.body.users[0].id : nil'}
    - name: create
      when: 'app.id == nil'
      method: POST
      path: '"/users.json"'
      body:
        user:
          login: 'record.login'
          firstname: 'default(record.first_name, "-")'
          lastname: 'default(record.last_name, "-")'
          admin: false
      save: {id: 'response.body.user.id'}
      outcomes:
        - {status: [422], then: retry}
  user.updated:
    - name: update
      method: PUT
      path: '"/users/" + urlPath(app.id) + ".json"'
      body: {user: {firstname: 'record.first_name'}}
  user.deleted:
    - name: delete
      method: DELETE
      path: '"/users/" + urlPath(app.id) + ".json"'
      outcomes: [{status: [404], then: ok}]
      forget: true
  group.created:
    - name: create
      method: POST
      path: '"/groups.json"'
      body: {group: {name: 'record.name'}}
      save: {id: 'response.body.group.id'}
  group.member_added:
    - name: add
      method: POST
      path: '"/groups/" + urlPath(app.id) + "/users.json"'
      body: {user_id: 'appId("User", user.id)'}
  group.member_removed:
    - name: remove
      method: DELETE
      path: '"/groups/" + urlPath(app.id) + "/users/" + urlPath(appId("User", user.id)) + ".json"'
      outcomes: [{status: [404], then: ok}]
`
}
