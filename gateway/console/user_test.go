package console_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/scimgate/scimgate/outbox"
	"github.com/scimgate/scimgate/outbox/rest"
)

// A user's page shows, per target, its app id (an action target's id map)
// and the last of its events the target has; each history row names the
// SCIM request that made it while the recent-requests ring still holds
// it, and says it is earlier than those kept once it has rolled out.
func TestUserAppIDsLastDeliveryAndRequests(t *testing.T) {
	var crmGot atomic.Int32
	crm := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		crmGot.Add(1)
		w.Header().Set("Content-Type", "application/json")
		if r.Method == "POST" {
			w.WriteHeader(201)
			io.WriteString(w, `{"id": 7}`)
			return
		}
		io.WriteString(w, `{}`)
	}))
	t.Cleanup(crm.Close)
	section := `base_url: ` + crm.URL + `
actions:
  user.created:
    - {name: create, method: POST, path: '"/users"', body: {login: '"x"'}, save: {id: 'response.body.id'}}
  user.updated:
    - {name: update, method: PUT, path: '"/users/" + urlPath(app.id)', body: {login: '"x"'}}
`
	var node yaml.Node
	if err := yaml.Unmarshal([]byte(section), &node); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, true, func(cfg *outbox.Config) {
		cfg.Transports[outbox.TypeRest] = rest.Transport()
		cfg.Targets = append(cfg.Targets, outbox.Target{Name: "crm", Type: outbox.TypeRest, Rest: *node.Content[0], Events: []string{"user.created", "user.updated"}})
	})
	b := e.browser(t)
	b.signIn()
	const user = `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"hedy","title":"%s"}`
	id := idRe.FindStringSubmatch(e.scimCall(t, "POST", "/Users", fmt.Sprintf(user, "Actor")))[1]
	for _, title := range []string{"Inventor", "Engineer"} {
		e.scimCall(t, "PUT", "/Users/"+id, fmt.Sprintf(user, title))
	}
	waitFor(t, "both targets have the three events", func() bool {
		st, _ := e.d.Status()
		return len(st) == 2 && st[0].Delivered == 3 && st[1].Delivered == 3 && st[0].Backlog == 0 && st[1].Backlog == 0
	})
	// Status counts a delivery when its outcome is known; the page reads
	// what is committed: wait until no event is pending in the file either.
	waitFor(t, "the outcomes committed", func() bool {
		for _, name := range []string{"app", "crm"} {
			if p, err := e.d.Pending(name, 0, 10); err != nil || len(p) > 0 {
				return false
			}
		}
		return true
	})
	_, body := b.get("/users/" + id)
	if !strings.Contains(body, `<code class="appid">{&#34;id&#34;:7}</code>`) {
		t.Errorf("the crm row lacks the app id 7:\n%s", body)
	}
	if !strings.Contains(body, "no id map (not an action target)") {
		t.Errorf("the webhook target's row does not say it keeps no id map:\n%s", body)
	}
	rows := strings.Split(body, `<tr class="ut">`)
	if len(rows) != 3 {
		t.Fatalf("%d target rows, want 2:\n%s", len(rows)-1, body)
	}
	for _, row := range rows[1:] {
		if !strings.Contains(row, "user.updated #") || !strings.Contains(row, "(version 3)") {
			t.Errorf("target row's last delivery is not the second update (version 3):\n%s", row)
		}
	}
	history := body[strings.Index(body, `id="history"`):]
	if n := strings.Count(history, "PUT /scim/v2/Users/:id → 200"); n != 2 {
		t.Errorf("%d history rows name their PUT, want 2:\n%s", n, history)
	}
	if !strings.Contains(history, "POST /scim/v2/Users → 201") {
		t.Errorf("the created row does not name its POST:\n%s", history)
	}

	// The activity page shows each write's resulting version.
	_, act := b.get("/activity")
	if !strings.Contains(act, `<td data-label="Version">3</td>`) {
		t.Errorf("activity lacks the PUT's version 3:\n%s", act)
	}

	// 100 more requests push the writes out of the ring.
	for range 100 {
		req, _ := http.NewRequest("GET", e.scim+"/Users/"+id, nil)
		req.Header.Set("Authorization", "Bearer "+scimToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	_, body = b.get("/users/" + id)
	history = body[strings.Index(body, `id="history"`):]
	if n := strings.Count(history, "earlier than the recent requests kept"); n != 3 || strings.Contains(history, "PUT /scim") {
		t.Errorf("%d rows say they are earlier than the requests kept, want 3:\n%s", n, history)
	}
}
