package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// actionApp is a small app with a users API; it records every request.
type actionApp struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []string
	next int
}

func newActionApp(t *testing.T) *actionApp {
	a := &actionApp{next: 7}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		a.mu.Lock()
		defer a.mu.Unlock()
		a.reqs = append(a.reqs, r.Method+" "+r.URL.RequestURI()+" "+string(body))
		if r.Header.Get("X-Api-Key") != "k-secret-123" {
			w.WriteHeader(401)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method == "GET":
			fmt.Fprint(w, `{"users":[]}`)
		case r.Method == "POST":
			w.WriteHeader(201)
			fmt.Fprintf(w, `{"user":{"id":%d}}`, a.next)
			a.next++
		default:
			w.WriteHeader(204)
		}
	}))
	t.Cleanup(a.Close)
	return a
}

func (a *actionApp) requests() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.reqs...)
}

const actionConfig = `data_dir: %s
outbox:
  backoff: [0s, 50ms]
  targets:
    - name: app
      type: rest
      rest:
        base_url: ${APP_URL}
        headers: {X-Api-Key: "${APP_KEY}"}
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
              body: {user: {login: 'record.login', firstname: 'default(record.first_name, "-")'}}
              save: {id: 'response.body.user.id'}
          user.updated:
            - {name: update, method: PUT, path: '"/users/" + urlPath(app.id) + ".json"', body: {user: {login: 'record.login'}}}
`

func writeActionConfig(t *testing.T, dir, extra string) string {
	t.Helper()
	p := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(p, []byte(fmt.Sprintf(actionConfig, filepath.Join(dir, "data"))+extra), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func runBinary(t *testing.T, bin string, env []string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String(), errOut.String()
}

// TestActionsValidateNamesLines: `scimgate validate` reports every error
// of an action file at its own line.
func TestActionsValidateNamesLines(t *testing.T) {
	dir := t.TempDir()
	cfg := writeActionConfig(t, dir, `          user.deleted:
            - {name: del, method: DELETE, path: '"/users/" + urlPath(app.idd) + nosuch'}
            - {name: del2, method: PURGE, path: '"/"'}
`)
	env := func(k string) string {
		return map[string]string{"APP_URL": "http://127.0.0.1:1", "APP_KEY": "k", "SCIMGATE_SCIM_TOKEN": e2eToken}[k]
	}
	code, _, stderr := runCLI(t, env, "validate", "--config", cfg)
	for _, want := range []string{
		cfg + `:26: outbox.targets[0].rest.actions[user.deleted][0].path: invalid: line 26: expression: unknown name nosuch`,
		cfg + `:27: outbox.targets[0].rest.actions[user.deleted][1].method: invalid: line 27: "PURGE"`,
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks\n%s\n---\n%s", want, stderr)
		}
	}
	if code != 1 {
		t.Errorf("exit %d", code)
	}
}

// TestActionsThroughTheBinary: the real gateway provisions a SCIM user
// into the app through the action (the id map saves its id); stopped,
// `scimgate ids` prints the map both ways, and `scimgate actions test`
// prints an update's request using the saved id, sending nothing — then,
// with --send, sends it.
func TestActionsThroughTheBinary(t *testing.T) {
	bin := buildBinary(t)
	app := newActionApp(t)
	dir := t.TempDir()
	cfg := writeActionConfig(t, dir, "")
	env := []string{"SCIMGATE_CONFIG=" + cfg, "APP_URL=" + app.URL, "APP_KEY=k-secret-123",
		"SCIMGATE_SCIM_TOKEN=" + e2eToken, "SCIMGATE_ADMIN_TOKEN=" + e2eToken, "HOME=" + dir}
	g := startBinary(t, bin, env, freePort(t), freePort(t))
	code, user := scimDo(t, g.scim, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ada@example.com","name":{"givenName":"Ada","familyName":"Lovelace"}}`)
	if code != 201 {
		g.kill()
		t.Fatalf("create user: %d %v", code, user)
	}
	id := user["id"].(string)
	deadline := time.Now().Add(10 * time.Second)
	for len(app.requests()) < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	// The id map commit follows the response: wait until the admin API
	// lists the saved id.
	for len(idLines(t, g.admin)) < 1 {
		if time.Now().After(deadline) {
			g.kill()
			t.Fatal("the id map saved no id")
		}
		time.Sleep(20 * time.Millisecond)
	}
	g.kill()
	reqs := app.requests()
	if len(reqs) != 2 || !strings.HasPrefix(reqs[0], "GET /users.json?name=ada%40example.com") ||
		!strings.HasPrefix(reqs[1], `POST /users.json {"user":{"login":"ada@example.com","firstname":"Ada"}}`) {
		t.Fatalf("the app saw %q", reqs)
	}

	code, out, errOut := runBinary(t, bin, env, "ids", "--target", "app")
	if code != 0 || out != "User/"+id+" {\"id\":7}\n" {
		t.Errorf("ids: %d %q %q", code, out, errOut)
	}
	code, out, _ = runBinary(t, bin, env, "ids", "--target", "app", "--app-id", "7")
	if code != 0 || !strings.HasPrefix(out, "User/"+id+" ") {
		t.Errorf("ids --app-id 7: %d %q", code, out)
	}
	if code, _, errOut := runBinary(t, bin, env, "ids", "--target", "app", "--app-id", "8"); code != 1 || !strings.Contains(errOut, "not in the id map") {
		t.Errorf("ids --app-id 8: %d %q", code, errOut)
	}

	code, out, errOut = runBinary(t, bin, env, "actions", "test", "--target", "app", "--event", "user.updated", "--user", id)
	if code != 0 || !strings.Contains(out, "PUT "+app.URL+"/users/7.json") || !strings.Contains(out, `{"user":{"login":"ada@example.com"}}`) ||
		!strings.Contains(out, "X-Api-Key: [redacted]") || strings.Contains(out, "k-secret-123") {
		t.Errorf("actions test: %d\n%s\n%s", code, out, errOut)
	}
	if n := len(app.requests()); n != 2 {
		t.Errorf("the dry run sent %d requests", n-2)
	}
	rec := filepath.Join(dir, "rec.json")
	if err := os.WriteFile(rec, []byte(`{"id":"x1","login":"bob"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = runBinary(t, bin, env, "actions", "test", "--target", "app", "--event", "user.created", "--record", rec, "--send")
	if code != 0 || !strings.Contains(out, "→ 201 Created: ok") || !strings.Contains(out, "saved id = 8") {
		t.Errorf("actions test --send: %d\n%s\n%s", code, out, errOut)
	}
	if n := len(app.requests()); n != 4 {
		t.Errorf("--send: the app saw %d requests, want 4", n)
	}
	if _, out, _ := runBinary(t, bin, env, "ids", "--target", "app"); strings.Contains(out, "x1") {
		t.Errorf("--send without --link wrote the id map: %q", out)
	}
	if err := os.WriteFile(rec, []byte(`{"id":"x2","login":"cy"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = runBinary(t, bin, env, "actions", "test", "--target", "app", "--event", "user.created", "--record", rec, "--send", "--link")
	if code != 0 || !strings.Contains(out, "saved id = 9") {
		t.Errorf("actions test --send --link: %d\n%s\n%s", code, out, errOut)
	}
	if code, out, _ := runBinary(t, bin, env, "ids", "--target", "app", "x2"); code != 0 || out != "User/x2 {\"id\":9}\n" {
		t.Errorf("after --link: ids x2 = %d %q", code, out)
	}
}
