package gateway_test

import (
	"strings"
	"testing"
)

// TestIncludeAppIDsRefusals: ?include names an action target; anything
// else is a 400 that says what to write (also on a path whose id does not
// exist: the parameter is checked first); a webhook target keeps no id
// map, which the admin API's /ids answers with a 404 naming it; bad ids
// parameters are 400s. An empty include adds nothing.
func TestIncludeAppIDsRefusals(t *testing.T) {
	env := newAPIEnv(t)
	env.scim.do("POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ada@example.com"}`).must(t, 201)
	for path, want := range map[string]string{
		"/v1/users?include=app_ids:nosuch":            "include app_ids:nosuch: no target named nosuch",
		"/v1/users?include=app_ids:app":               "include app_ids:app: target app keeps no id map (only type: rest does)",
		"/v1/groups?include=ids":                      "include ids: use app_ids:TARGET",
		"/v1/users?include=app_ids:":                  "include app_ids:: use app_ids:TARGET",
		"/v1/users/nobody?include=app_ids:nosuch":     "no target named nosuch",
		"/v1/groups/g/members?include=app_ids:nosuch": "no target named nosuch",
	} {
		code, body := env.call(t, "GET", path, apiToken, nil)
		if code != 400 || !strings.Contains(body, want) {
			t.Errorf("GET %s = %d %s, want 400 %q", path, code, body, want)
		}
	}
	if p := env.apiGet(t, "/v1/users?include="); len(p.Data) != 1 || p.Data[0]["app_ids"] != nil {
		t.Errorf("empty include: %v", p.Data)
	}
	if code, body := env.call(t, "GET", "/admin/targets/app/ids", adminToken, nil); code != 404 || !strings.Contains(body, "keeps no id map") {
		t.Errorf("ids of a webhook target: %d %s", code, body)
	}
	if code, body := env.call(t, "GET", "/admin/targets/app/ids?limit=0", adminToken, nil); code != 400 || !strings.Contains(body, "limit") {
		t.Errorf("limit=0: %d %s", code, body)
	}
	if code, body := env.call(t, "GET", "/admin/targets/app/ids?scim_id=a&app_id=b", adminToken, nil); code != 400 {
		t.Errorf("scim_id and app_id: %d %s", code, body)
	}
}
