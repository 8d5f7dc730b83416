package main

import (
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

const idsAPIToken = "api-token-0123456789abcdef"

// idsGet is a GET on the admin listener; it returns the status and the
// body, decoded into out when the status is 200.
func idsGet(t *testing.T, base, path, token string, out any) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", base+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode == 200 {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("GET %s: %v\n%s", path, err, raw)
		}
	}
	return resp.StatusCode, string(raw)
}

type idsPageT struct {
	Entries []struct {
		Type   string         `json:"type"`
		ID     string         `json:"id"`
		Values map[string]any `json:"values"`
	} `json:"entries"`
	Next *string `json:"next"`
}

// idLines is the id map as `Type/ID values` lines, through the admin API.
func idLines(t *testing.T, admin string) []string {
	t.Helper()
	var p idsPageT
	if code, body := idsGet(t, admin, "/admin/targets/app/ids", e2eToken, &p); code != 200 {
		t.Fatalf("ids: %d %s", code, body)
	}
	var out []string
	for _, e := range p.Entries {
		v, _ := json.Marshal(e.Values)
		out = append(out, e.Type+"/"+e.ID+" "+string(v))
	}
	return out
}

// TestIDMapSurfaces: through the real binary and a real app, the action
// target's id map is listed (paged) and looked up both ways by
// GET /admin/targets/{t}/ids behind the admin token; the app API adds app
// ids to records on ?include=app_ids:app and names an unknown target in a
// 400; /admin/status and `scimgate status` show the map's size and the
// request counters; `scimgate ids` reads through the admin API while the
// gateway holds the data dir. The map then survives online compaction,
// backup + restore (a user created after the backup is gone from it
// again) and a restart: the same entries each time.
func TestIDMapSurfaces(t *testing.T) {
	bin := buildBinary(t)
	app := newActionApp(t)
	dir := t.TempDir()
	cfg := writeActionConfig(t, dir, "")
	env := []string{"SCIMGATE_CONFIG=" + cfg, "APP_URL=" + app.URL, "APP_KEY=k-secret-123", "SCIMGATE_API_TOKEN=" + idsAPIToken,
		"SCIMGATE_SCIM_TOKEN=" + e2eToken, "SCIMGATE_ADMIN_TOKEN=" + e2eToken, "HOME=" + dir}
	adminAddr := freePort(t)
	cliEnv := append(append([]string(nil), env...), "SCIMGATE_ADMIN_LISTEN="+adminAddr)
	g := startBinary(t, bin, env, freePort(t), adminAddr)
	defer func() { g.kill() }()
	ids := map[string]bool{}
	for _, name := range []string{"ada", "bob", "cy"} {
		code, user := scimDo(t, g.scim, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"`+name+`@example.com"}`)
		if code != 201 {
			t.Fatalf("create %s: %d %v", name, code, user)
		}
		ids[user["id"].(string)] = true
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(idLines(t, g.admin)) < 3 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	before := idLines(t, g.admin)
	if len(before) != 3 {
		t.Fatalf("id map: %q", before)
	}
	appIDs := map[string]string{} // scim id → app id
	var all idsPageT
	idsGet(t, g.admin, "/admin/targets/app/ids", e2eToken, &all)
	for _, e := range all.Entries {
		if e.Type != "User" || !ids[e.ID] {
			t.Errorf("entry %+v is none of the users created", e)
		}
		appIDs[e.ID] = jsonString(e.Values["id"])
	}

	// Paged: two pages of 2 and 1, in the same order as the whole list.
	var p1, p2 idsPageT
	idsGet(t, g.admin, "/admin/targets/app/ids?limit=2", e2eToken, &p1)
	if len(p1.Entries) != 2 || p1.Next == nil {
		t.Fatalf("page 1: %+v", p1)
	}
	idsGet(t, g.admin, "/admin/targets/app/ids?limit=2&after="+*p1.Next, e2eToken, &p2)
	if len(p2.Entries) != 1 || p2.Next != nil || p2.Entries[0].ID != all.Entries[2].ID || p1.Entries[1].ID != all.Entries[1].ID {
		t.Errorf("page 2: %+v (page 1 %+v)", p2, p1)
	}
	// Look-ups both ways.
	one := all.Entries[1]
	var got idsPageT
	if code, body := idsGet(t, g.admin, "/admin/targets/app/ids?scim_id="+one.ID, e2eToken, &got); code != 200 || len(got.Entries) != 1 || !reflect.DeepEqual(got.Entries[0].Values, one.Values) {
		t.Errorf("scim_id: %d %s", code, body)
	}
	got = idsPageT{}
	if code, body := idsGet(t, g.admin, "/admin/targets/app/ids?app_id="+appIDs[one.ID], e2eToken, &got); code != 200 || len(got.Entries) != 1 || got.Entries[0].ID != one.ID {
		t.Errorf("app_id: %d %s", code, body)
	}
	for path, want := range map[string]string{
		"/admin/targets/app/ids?app_id=999":     "not in the id map of target app",
		"/admin/targets/app/ids?scim_id=nobody": "not in the id map of target app",
		"/admin/targets/nosuch/ids":             `unknown target: \"nosuch\"`,
	} {
		if code, body := idsGet(t, g.admin, path, e2eToken, nil); code != 404 || !strings.Contains(body, want) {
			t.Errorf("%s: %d %s", path, code, body)
		}
	}
	if code, _ := idsGet(t, g.admin, "/admin/targets/app/ids", "", nil); code != 401 {
		t.Errorf("without the admin token: %d", code)
	}
	if code, _ := idsGet(t, g.admin, "/admin/targets/app/ids", idsAPIToken, nil); code != 401 {
		t.Errorf("with the app API token: %d", code)
	}

	// The app API: app ids in records on request.
	var users struct {
		Data []map[string]any `json:"data"`
	}
	if code, body := idsGet(t, g.admin, "/v1/users?include=app_ids:app", idsAPIToken, &users); code != 200 || len(users.Data) != 3 {
		t.Fatalf("/v1/users?include: %d %s", code, body)
	}
	for _, u := range users.Data {
		a, _ := u["app_ids"].(map[string]any)["app"].(map[string]any)
		if a == nil || jsonString(a["id"]) != appIDs[u["id"].(string)] || u["login"] == nil {
			t.Errorf("record with app ids: %v", u)
		}
	}
	var rec map[string]any
	if code, body := idsGet(t, g.admin, "/v1/users/"+one.ID+"?include=app_ids:app", idsAPIToken, &rec); code != 200 ||
		jsonString(rec["app_ids"].(map[string]any)["app"].(map[string]any)["id"]) != appIDs[one.ID] || rec["id"] != one.ID {
		t.Errorf("/v1/users/{id}?include: %d %s", code, body)
	}
	if code, body := idsGet(t, g.admin, "/v1/users", idsAPIToken, nil); code != 200 || strings.Contains(body, "app_ids") {
		t.Errorf("without include: %d %s", code, body)
	}
	if code, body := idsGet(t, g.admin, "/v1/users?include=app_ids:nosuch", idsAPIToken, nil); code != 400 || !strings.Contains(body, "no target named nosuch") {
		t.Errorf("include of an unknown target: %d %s", code, body)
	}

	// Status: the map's size and the request counters (3 finds, 3 creates).
	var st struct {
		Targets []struct {
			Name      string `json:"name"`
			IDMapSize *int   `json:"id_map_size"`
			Requests  *struct {
				Requests uint64            `json:"requests"`
				Outcomes map[string]uint64 `json:"outcomes"`
				Steps    map[string]struct {
					Requests           uint64            `json:"requests"`
					Outcomes           map[string]uint64 `json:"outcomes"`
					MeanLatencySeconds float64           `json:"mean_latency_seconds"`
				} `json:"steps"`
			} `json:"requests"`
		} `json:"targets"`
	}
	idsGet(t, g.admin, "/admin/status", e2eToken, &st)
	if len(st.Targets) != 1 || st.Targets[0].IDMapSize == nil || *st.Targets[0].IDMapSize != 3 || st.Targets[0].Requests == nil ||
		st.Targets[0].Requests.Requests != 6 || st.Targets[0].Requests.Outcomes["ok"] != 6 ||
		st.Targets[0].Requests.Steps["find"].Requests != 3 || st.Targets[0].Requests.Steps["create"].Outcomes["ok"] != 3 ||
		st.Targets[0].Requests.Steps["create"].MeanLatencySeconds <= 0 {
		t.Errorf("status: %+v", st.Targets)
	}
	code, out, errOut := runBinary(t, bin, cliEnv, "status")
	if code != 0 || !strings.Contains(out, "ACTION TARGET") || !strings.Contains(oneSpaced(out), "app 3 6 6 0 0 0 0 0 step create 3 3 0 0 0 0 ") ||
		!strings.Contains(oneSpaced(out), " step find 3 3 0 0 0 0 ") {
		t.Errorf("scimgate status: %d\n%s\n%s", code, out, errOut)
	}

	// `scimgate ids` while the gateway runs: through the admin API.
	code, out, errOut = runBinary(t, bin, cliEnv, "ids", "--target", "app")
	if code != 0 || out != strings.Join(before, "\n")+"\n" {
		t.Errorf("ids (running): %d %q %q", code, out, errOut)
	}
	code, out, _ = runBinary(t, bin, cliEnv, "ids", "--target", "app", "--app-id", appIDs[one.ID])
	if code != 0 || !strings.HasPrefix(out, "User/"+one.ID+" ") {
		t.Errorf("ids --app-id (running): %d %q", code, out)
	}
	if code, _, errOut := runBinary(t, bin, cliEnv, "ids", "--target", "app", "--app-id", "999"); code != 1 || !strings.Contains(errOut, "not in the id map of target app") {
		t.Errorf("ids --app-id 999 (running): %d %q", code, errOut)
	}

	// A group's members carry their app ids; the group itself has none
	// (null: the target keeps no entry for it).
	code, group := scimDo(t, g.scim, "POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"eng","members":[{"value":"`+one.ID+`"}]}`)
	if code != 201 {
		t.Fatalf("create group: %d %v", code, group)
	}
	var members struct {
		Data []map[string]any `json:"data"`
	}
	if code, body := idsGet(t, g.admin, "/v1/groups/"+group["id"].(string)+"/members?include=app_ids:app", idsAPIToken, &members); code != 200 || len(members.Data) != 1 ||
		members.Data[0]["type"] != "user" || jsonString(members.Data[0]["user"].(map[string]any)["app_ids"].(map[string]any)["app"].(map[string]any)["id"]) != appIDs[one.ID] {
		t.Errorf("members?include: %d %s", code, body)
	}
	if code, body := idsGet(t, g.admin, "/v1/groups?include=app_ids:app", idsAPIToken, nil); code != 200 || !strings.Contains(oneSpaced(body), `"app_ids": { "app": null }`) {
		t.Errorf("groups?include: %d %s", code, body)
	}

	// Backup, then a fourth user the backup does not hold.
	backup := filepath.Join(dir, "backup.db")
	if code, out, errOut := runBinary(t, bin, cliEnv, "backup", backup); code != 0 {
		t.Fatalf("backup: %d %s %s", code, out, errOut)
	}
	if code, user := scimDo(t, g.scim, "POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"dee@example.com"}`); code != 201 {
		t.Fatalf("create dee: %d %v", code, user)
	}
	deadline = time.Now().Add(10 * time.Second)
	for len(idLines(t, g.admin)) < 4 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	withDee := idLines(t, g.admin)
	if len(withDee) != 4 {
		t.Fatalf("after the fourth user: %q", withDee)
	}
	// Online compaction keeps it.
	if code, out, errOut := runBinary(t, bin, cliEnv, "compact", "--force"); code != 0 || !strings.Contains(out, "compacted") {
		t.Fatalf("compact --force: %d %s %s", code, out, errOut)
	}
	if after := idLines(t, g.admin); !reflect.DeepEqual(after, withDee) {
		t.Errorf("after compaction:\n%q\nbefore:\n%q", after, withDee)
	}
	g.cmd.Process.Signal(syscall.SIGTERM)
	g.cmd.Wait()
	// Restore: the backup's three entries, offline and after a start.
	if code, out, errOut := runBinary(t, bin, cliEnv, "restore", backup); code != 0 {
		t.Fatalf("restore: %d %s %s", code, out, errOut)
	}
	code, out, errOut = runBinary(t, bin, cliEnv, "ids", "--target", "app")
	if code != 0 || out != strings.Join(before, "\n")+"\n" {
		t.Errorf("ids after restore (stopped): %d %q %q", code, out, errOut)
	}
	g = startBinary(t, bin, env, freePort(t), adminAddr)
	if after := idLines(t, g.admin); !reflect.DeepEqual(after, before) {
		t.Errorf("after restore and start:\n%q\nbefore:\n%q", after, before)
	}
}

// jsonString is a JSON number or string as text.
func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return strings.Trim(string(b), `"`)
}

func oneSpaced(s string) string { return strings.Join(strings.Fields(s), " ") }
