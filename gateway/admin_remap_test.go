package gateway_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// TestAdminRemapPreview: POST /admin/remap/preview maps the stored users
// with the candidate mapping and answers the counts; a candidate with
// problems or no mapping is a 400 naming them; nothing is written.
func TestAdminRemapPreview(t *testing.T) {
	env := newAdminEnv(t)
	for i := range 5 {
		title := ""
		if i%2 == 0 {
			title = `,"title":"Engineer"`
		}
		if r := env.scim.do("POST", "/Users", fmt.Sprintf(`{"userName":"p%d@example.com"%s}`, i, title)); r.status != 201 {
			t.Fatalf("create: %d %s", r.status, r.body)
		}
	}
	candidate := `user:
  - {to: login, from: userName, required: true}
  - {to: title, from: title, required: true, transforms: [upper]}
`
	body, _ := json.Marshal(map[string]any{"mapping": candidate, "examples": 1})
	var p struct {
		Users, Changed, Rejected int
		UserFields               map[string]int `json:"user_fields"`
		Examples                 []any
		Rejections               []struct {
			ID      string
			Reasons []string
		}
	}
	if code, raw := env.send(t, "POST", "/admin/remap/preview", adminToken, string(body), &p); code != http.StatusOK {
		t.Fatalf("preview: %d %s", code, raw)
	}
	// Default mapping → candidate: every accepted user loses the default
	// fields it had (email, active …) and upper-cases its title.
	if p.Users != 5 || p.Changed != 3 || p.Rejected != 2 || len(p.Rejections) != 2 || len(p.Examples) != 1 || p.UserFields["title"] != 3 {
		t.Errorf("preview: %+v", p)
	}
	if r := p.Rejections[0]; len(r.Reasons) != 1 || r.Reasons[0] != "title: a value is required (from title)" {
		t.Errorf("rejection: %+v", r)
	}
	for _, bad := range []struct{ body, want string }{
		{`{"mapping": "user:\n  - {to: login, from: userName, type: nope}\n"}`, `mapping.user[0].type`},
		{`{"mapping": ""}`, `the candidate mapping is empty`},
		{`{"rules": "x"}`, `unknown field`},
	} {
		code, raw := env.send(t, "POST", "/admin/remap/preview", adminToken, bad.body, nil)
		if code != http.StatusBadRequest || !strings.Contains(raw, bad.want) {
			t.Errorf("%s: %d %s, want 400 naming %q", bad.body, code, raw, bad.want)
		}
	}
	if code, _ := env.send(t, "POST", "/admin/remap/preview", "", string(body), nil); code != http.StatusUnauthorized {
		t.Errorf("without a token: %d", code)
	}
	// Nothing to remap: the records are on the mapping in force.
	var out struct{ Started bool }
	if code, raw := env.call(t, "POST", "/admin/remap", adminToken, &out); code != 200 || out.Started {
		t.Errorf("remap: %d %s", code, raw)
	}
}
