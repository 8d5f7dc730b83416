package gateway_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scimgate/scimgate/gateway"
)

const apiToken = "api-token-0123456789abcdef"

func newAPIEnv(t *testing.T) *adminEnv {
	t.Helper()
	api := gateway.DefaultAPIConfig()
	api.Tokens = []string{gateway.HashToken(apiToken)}
	return newAdminEnvAPI(t, api)
}

type apiPage struct {
	Data       []map[string]any `json:"data"`
	NextCursor *string          `json:"next_cursor"`
	Sequence   uint64           `json:"sequence"`
}

func (env *adminEnv) apiGet(t *testing.T, path string) apiPage {
	t.Helper()
	var p apiPage
	code, body := env.call(t, "GET", path, apiToken, &p)
	if code != 200 {
		t.Fatalf("GET %s = %d %s", path, code, body)
	}
	return p
}

// all follows next_cursor to the end and returns every record's id.
func (env *adminEnv) all(t *testing.T, path string) []string {
	t.Helper()
	var ids []string
	cursor := ""
	for range 1000 {
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		p := env.apiGet(t, path+sep+"limit=2&cursor="+url.QueryEscape(cursor))
		for _, r := range p.Data {
			id, _ := r["id"].(string)
			if id == "" { // members: {"type":"user","user":{…}}
				id, _ = r[r["type"].(string)].(map[string]any)["id"].(string)
			}
			ids = append(ids, id)
		}
		if p.NextCursor == nil {
			return ids
		}
		cursor = *p.NextCursor
	}
	t.Fatal("paging does not end")
	return nil
}

// The directory as canonical records, cursor-paged.
func TestAppAPIDirectory(t *testing.T) {
	env := newAPIEnv(t)
	var users []string
	for i := range 5 {
		users = append(users, createUser(t, env.scim, fmt.Sprintf("u%d@example.com", i)))
	}
	env.scim.do("PATCH", "/Users/"+users[1], `{"Operations":[{"op":"replace","path":"active","value":false}]}`).must(t, 204)
	g := env.scim.do("POST", "/Groups", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"Eng","members":[{"value":%q},{"value":%q},{"value":%q}]}`,
		users[0], users[2], users[4])).must(t, 201).body["id"].(string)

	if got := env.all(t, "/v1/users"); strings.Join(got, ",") != strings.Join(users, ",") {
		t.Errorf("users in creation order = %v, want %v", got, users)
	}
	first := env.apiGet(t, "/v1/users?limit=1")
	if first.Data[0]["login"] != "u0@example.com" || first.Data[0]["version"] == nil || first.Sequence == 0 {
		t.Errorf("record = %v, sequence %d", first.Data[0], first.Sequence)
	}
	if got := env.all(t, "/v1/users?active=false"); len(got) != 1 || got[0] != users[1] {
		t.Errorf("inactive users = %v", got)
	}
	if got := env.all(t, "/v1/users?updated_since="+url.QueryEscape(time.Now().Add(time.Hour).Format(time.RFC3339))); len(got) != 0 {
		t.Errorf("users updated in the future = %v", got)
	}
	members := env.all(t, "/v1/groups/"+g+"/members") // in id order
	slices.Sort(members)
	want := []string{users[0], users[2], users[4]}
	slices.Sort(want)
	if !slices.Equal(members, want) {
		t.Errorf("members = %v, want %v", members, want)
	}
	if got := env.all(t, "/v1/users/"+users[2]+"/groups"); len(got) != 1 || got[0] != g {
		t.Errorf("user's groups = %v", got)
	}
	if got := env.all(t, "/v1/groups"); len(got) != 1 || got[0] != g {
		t.Errorf("groups = %v", got)
	}
	var rec map[string]any
	if code, body := env.call(t, "GET", "/v1/users/"+users[3], apiToken, &rec); code != 200 || rec["id"] != users[3] {
		t.Errorf("one user: %d %s", code, body)
	}
	if code, body := env.call(t, "GET", "/v1/groups/"+g, apiToken, &rec); code != 200 || rec["name"] != "Eng" {
		t.Errorf("one group: %d %s", code, body)
	}
	for _, bad := range []struct {
		path string
		code int
	}{
		{"/v1/users/no-such-id", 404}, {"/v1/groups/no-such-id", 404}, {"/v1/groups/no-such-id/members", 404},
		{"/v1/users?limit=0", 400}, {"/v1/users?limit=x", 400}, {"/v1/users?cursor=garbage", 400},
		{"/v1/users?active=maybe", 400}, {"/v1/users?updated_since=yesterday", 400}, {"/v1/groups?active=true", 400},
		{"/v1/nothing", 404},
	} {
		code, body := env.call(t, "GET", bad.path, apiToken, nil)
		var e struct{ Error string }
		if json.Unmarshal([]byte(body), &e); code != bad.code || e.Error == "" {
			t.Errorf("GET %s = %d %s, want %d with a message", bad.path, code, body, bad.code)
		}
	}
}

// The app token reads /v1/ only; the admin and SCIM tokens do
// not read /v1/.
func TestAppAPITokens(t *testing.T) {
	env := newAPIEnv(t)
	for _, tc := range []struct {
		path, token string
		want        int
	}{
		{"/v1/users", apiToken, 200},
		{"/v1/users", adminToken, 401},
		{"/v1/users", testToken, 401},
		{"/v1/users", "", 401},
		{"/admin/status", apiToken, 401},
		{"/admin/status", adminToken, 200},
	} {
		if code, body := env.call(t, "GET", tc.path, tc.token, nil); code != tc.want {
			t.Errorf("GET %s with %q = %d %s, want %d", tc.path, tc.token, code, body, tc.want)
		}
	}
	off := newAdminEnv(t) // no api.tokens
	if code, body := off.call(t, "GET", "/v1/users", apiToken, nil); code != 401 || !strings.Contains(body, "api.tokens") {
		t.Errorf("API without tokens: %d %s", code, body)
	}
}
