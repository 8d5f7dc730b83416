package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scimgate/scimgate/internal/redminetest"
)

// The Redmine example (examples/redmine.yaml) against a real Redmine
// (Debian's redmine package, started per test by internal/redminetest)
// through the real binary. Redmine's state is read through Redmine's own
// API and compared with the gateway's (its SCIM API), never with our logs.
//
// Without Redmine installed these tests skip with one line; with CI set
// (.ci/run sets it and installs Redmine) they fail instead.

// redmineGateway is the binary serving examples/redmine.yaml (or a variant
// of it) against one Redmine.
type redmineGateway struct {
	t   *testing.T
	rm  *redminetest.Redmine
	bin string
	cfg string
	env []string
	g   *binaryGateway

	lastUsers  map[string]wantUser // the gateway's state at the last waitRedmineMatches
	lastGroups map[string][]string
}

// redmineConfig writes examples/redmine.yaml with the retry schedule made
// fast (a test cannot wait minutes) and edit applied to its text.
func redmineConfig(t *testing.T, edit func(string) string) string {
	t.Helper()
	b, err := os.ReadFile(examplePath("redmine"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	fast := "backoff: [0s, 100ms, 250ms, 500ms, 1s]"
	re := regexp.MustCompile(`(?m)^(\s*)backoff: \[.*\]$`)
	if !re.MatchString(text) {
		t.Fatal("examples/redmine.yaml has no backoff line to speed up")
	}
	text = re.ReplaceAllString(text, "${1}"+fast)
	text = strings.Replace(text, "max_attempts: 20", "max_attempts: 1000", 1)
	if edit != nil {
		text = edit(text)
	}
	p := filepath.Join(t.TempDir(), "redmine.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func startRedmineGateway(t *testing.T, rm *redminetest.Redmine, cfg string) *redmineGateway {
	t.Helper()
	bin := buildBinary(t)
	env := append(os.Environ(), "SCIMGATE_CONFIG="+cfg, "SCIMGATE_DATA_DIR="+t.TempDir(),
		"SCIMGATE_SCIM_TOKEN="+e2eToken, "SCIMGATE_ADMIN_TOKEN="+e2eToken,
		"REDMINE_URL="+rm.URL, "REDMINE_API_KEY="+rm.APIKey)
	r := &redmineGateway{t: t, rm: rm, bin: bin, cfg: cfg, env: env}
	r.start()
	t.Cleanup(func() {
		if r.g != nil {
			r.g.kill()
		}
	})
	return r
}

func (r *redmineGateway) start() {
	r.t.Helper()
	r.g = startBinary(r.t, r.bin, r.env, freePort(r.t), freePort(r.t))
}

// kill9 kills the gateway with SIGKILL and starts it again on the same data.
func (r *redmineGateway) kill9() {
	r.t.Helper()
	r.g.kill()
	r.start()
}

// do is one SCIM request that must get one of the wanted statuses.
func (r *redmineGateway) do(method, path, body string, want ...int) map[string]any {
	r.t.Helper()
	status, out, err := tryDo(r.g.scim, method, path, body)
	if err != nil {
		r.t.Fatalf("%s %s: %v", method, path, err)
	}
	if !slices.Contains(want, status) {
		r.t.Fatalf("%s %s: status %d, want %v: %v", method, path, status, want, out)
	}
	return out
}

// cli runs a scimgate admin command against the running gateway.
func (r *redmineGateway) cli(args ...string) (string, error) {
	cmd := exec.Command(r.bin, append(args, "--admin", r.g.admin, "--token", e2eToken)...)
	cmd.Env = r.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func userJSON(login, given, family string, active bool) string {
	return fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":%q,
		"name":{"givenName":%q,"familyName":%q},"emails":[{"value":%q,"type":"work","primary":true}],"active":%v}`,
		login, given, family, login, active)
}

func patchActive(active bool) string {
	return fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"active":%v}}]}`, active)
}

func patchMembers(op string, ids ...string) string {
	var vals []string
	for _, id := range ids {
		vals = append(vals, fmt.Sprintf(`{"value":%q}`, id))
	}
	return fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":%q,"path":"members","value":[%s]}]}`,
		op, strings.Join(vals, ","))
}

func patchRemoveMember(id string) string {
	return fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"remove","path":"members[value eq \"%s\"]"}]}`, id)
}

func groupJSON(name string, members ...string) string {
	var vals []string
	for _, id := range members {
		vals = append(vals, fmt.Sprintf(`{"value":%q}`, id))
	}
	return fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":%q,"members":[%s]}`,
		name, strings.Join(vals, ","))
}

// wantUser is a Redmine account as the gateway's state says it must be.
type wantUser struct {
	login, first, last, mail string
	status                   int
}

// gatewayState reads the gateway's users and groups (SCIM) and says what
// Redmine must hold: accounts by lower-cased login, and group name →
// sorted member logins.
func (r *redmineGateway) gatewayState() (map[string]wantUser, map[string][]string) {
	r.t.Helper()
	users := map[string]wantUser{}
	loginOf := map[string]string{}
	list := r.do("GET", "/Users?startIndex=1&count=1000", "", 200)
	res, _ := list["Resources"].([]any)
	if total, _ := list["totalResults"].(float64); int(total) != len(res) {
		r.t.Fatalf("more users than one page: %v", total)
	}
	for _, x := range res {
		u := x.(map[string]any)
		name, _ := u["name"].(map[string]any)
		w := wantUser{login: u["userName"].(string), status: redminetest.StatusActive}
		w.first, _ = name["givenName"].(string)
		w.last, _ = name["familyName"].(string)
		if emails, _ := u["emails"].([]any); len(emails) > 0 {
			w.mail, _ = emails[0].(map[string]any)["value"].(string)
		}
		if u["active"] == false {
			w.status = redminetest.StatusLocked
		}
		users[strings.ToLower(w.login)] = w
		loginOf[u["id"].(string)] = strings.ToLower(w.login)
	}
	groups := map[string][]string{}
	list = r.do("GET", "/Groups?startIndex=1&count=1000", "", 200)
	res, _ = list["Resources"].([]any)
	for _, x := range res {
		g := x.(map[string]any)
		members := []string{}
		ms, _ := g["members"].([]any)
		for _, m := range ms {
			if l, ok := loginOf[m.(map[string]any)["value"].(string)]; ok {
				members = append(members, l)
			}
		}
		slices.Sort(members)
		groups[g["displayName"].(string)] = members
	}
	return users, groups
}

// redmineDiff compares Redmine with the gateway's state; "" when they
// match. Accounts named in others (the admin, accounts of other tests) are
// left out; any other extra account is a difference, and so is a login
// held twice.
func redmineDiff(t *testing.T, rm *redminetest.Redmine, users map[string]wantUser, groups map[string][]string, others ...string) string {
	t.Helper()
	var diffs []string
	loginByID := map[int]string{}
	seen := map[string]bool{}
	for _, u := range rm.Users(t) {
		l := strings.ToLower(u.Login)
		loginByID[u.ID] = l
		if l == "admin" || slices.Contains(others, l) {
			continue
		}
		if seen[l] {
			diffs = append(diffs, "login held twice: "+l)
		}
		seen[l] = true
		w, ok := users[l]
		if !ok {
			diffs = append(diffs, fmt.Sprintf("extra account in Redmine: %s (id %d, status %d)", u.Login, u.ID, u.Status))
			continue
		}
		got := wantUser{login: l, first: u.Firstname, last: u.Lastname, mail: strings.ToLower(u.Mail), status: u.Status}
		w.login, w.mail = l, strings.ToLower(w.mail)
		if got != w {
			diffs = append(diffs, fmt.Sprintf("account %s: Redmine has %+v, want %+v", l, got, w))
		}
	}
	for l := range users {
		if !seen[l] {
			diffs = append(diffs, "missing in Redmine: "+l)
		}
	}
	gotGroups := map[string][]string{}
	for _, g := range rm.Groups(t) {
		if _, dup := gotGroups[g.Name]; dup {
			diffs = append(diffs, "group held twice: "+g.Name)
		}
		members := []string{}
		for _, id := range g.UserIDs {
			members = append(members, loginByID[id])
		}
		slices.Sort(members)
		gotGroups[g.Name] = members
	}
	for name, want := range groups {
		got, ok := gotGroups[name]
		switch {
		case !ok:
			diffs = append(diffs, "group missing in Redmine: "+name)
		case !slices.Equal(got, want):
			diffs = append(diffs, fmt.Sprintf("group %s: Redmine members %v, want %v", name, got, want))
		}
	}
	for name := range gotGroups {
		if _, ok := groups[name]; !ok {
			diffs = append(diffs, "extra group in Redmine: "+name)
		}
	}
	slices.Sort(diffs)
	return strings.Join(diffs, "\n")
}

// waitRedmineMatches waits until Redmine matches the gateway's state.
func (r *redmineGateway) waitRedmineMatches(timeout time.Duration, others ...string) {
	r.t.Helper()
	users, groups := r.gatewayState()
	r.lastUsers, r.lastGroups = users, groups
	deadline := time.Now().Add(timeout)
	for {
		diff := redmineDiff(r.t, r.rm, users, groups, others...)
		if diff == "" {
			return
		}
		if time.Now().After(deadline) {
			dl, _ := r.cli("dead-letters", "list", "--target", "redmine")
			st, _ := r.cli("status")
			r.t.Fatalf("Redmine does not match the gateway after %v:\n%s\n\ndead letters:\n%s\nstatus:\n%s\ngateway log (tail):\n%s",
				timeout, diff, dl, st, lastBytes(r.g.out.String(), 3000))
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// dryRunDone is how `scimgate actions test` (without --send) ends when
// every step rendered.
const dryRunDone = "result: every step rendered"

func lastBytes(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// TestRedmineExample: a small Okta-shaped run through the binary and
// examples/redmine.yaml ends with Redmine's accounts, groups and
// memberships exactly as the gateway has them: creates, a profile update,
// a deactivation (locked) and a reactivation (unlocked), a user locked for
// good, a deleted user (deleted in Redmine), a group with members added and
// removed and renamed, a group as a member (left out: Redmine has no
// nested groups), a deleted group; an account that existed in Redmine
// before with the same login is adopted (same Redmine id, brought up to
// date), not duplicated.
func TestRedmineExample(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a real Redmine")
	}
	rm := redminetest.Start(t)
	old := rm.CreateUser(t, redminetest.User{Login: "grace@example.com", Firstname: "Old", Lastname: "Name", Mail: "grace@example.com"})
	r := startRedmineGateway(t, rm, redmineConfig(t, nil))

	ada := r.do("POST", "/Users", userJSON("ada@example.com", "Ada", "Lovelace", true), 201)["id"].(string)
	grace := r.do("POST", "/Users", userJSON("grace@example.com", "Grace", "Hopper", true), 201)["id"].(string)
	bob := r.do("POST", "/Users", userJSON("bob@example.com", "Bob", "Builder", true), 201)["id"].(string)
	carol := r.do("POST", "/Users", userJSON("carol@example.com", "Carol", "Shaw", true), 201)["id"].(string)
	eng := r.do("POST", "/Groups", groupJSON("Engineering", ada, grace), 201)["id"].(string)
	ops := r.do("POST", "/Groups", groupJSON("Ops", carol, bob), 201)["id"].(string)
	r.waitRedmineMatches(2 * time.Minute)

	if u := rm.UserByLogin(t, "grace@example.com"); u == nil || u.ID != old.ID {
		t.Fatalf("the existing account was not adopted: Redmine has %+v, the existing one was id %d", u, old.ID)
	}

	r.do("PUT", "/Users/"+ada, userJSON("ada@example.com", "Ada", "King", true), 200)
	r.do("PATCH", "/Users/"+ada, patchActive(false), 200, 204)
	r.do("PATCH", "/Users/"+bob, patchActive(false), 200, 204)
	r.do("PATCH", "/Groups/"+eng, patchMembers("add", bob, carol), 200, 204)
	r.do("PATCH", "/Groups/"+eng, patchRemoveMember(grace), 200, 204)
	r.do("PATCH", "/Groups/"+eng, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"displayName":"Engineering & Research"}}]}`, 200, 204)
	r.do("PATCH", "/Groups/"+eng, patchMembers("add", ops), 200, 204) // nested: Redmine has no such thing, left out
	r.do("DELETE", "/Users/"+carol, "", 204)
	r.do("DELETE", "/Groups/"+ops, "", 204)
	r.do("PATCH", "/Users/"+ada, patchActive(true), 200, 204)
	r.waitRedmineMatches(2 * time.Minute)

	if u := rm.UserByLogin(t, "carol@example.com"); u != nil {
		t.Errorf("deleted user's account still in Redmine: %+v", u)
	}
	if u := rm.UserByLogin(t, "bob@example.com"); u == nil || u.Status != redminetest.StatusLocked {
		t.Errorf("deactivated bob: %+v, want locked", u)
	}
	if out, err := r.cli("dead-letters", "list", "--target", "redmine", "--json"); err != nil || strings.Contains(out, `evt_`) {
		t.Errorf("dead letters after a clean run (err %v):\n%s", err, out)
	}

	// The dry run of every event type the example handles, from the stopped
	// gateway's data (its records and id map): each prints its requests
	// with Redmine's ids in them, and nothing changes in Redmine.
	r.g.kill()
	before := redmineDiff(t, rm, r.lastUsers, r.lastGroups)
	adaID := rm.UserByLogin(t, "ada@example.com").ID
	var engID int
	for _, g := range rm.Groups(t) {
		engID = g.ID
	}
	for typ, want := range map[string]string{
		"user.created":         "PUT " + rm.URL + fmt.Sprintf("/users/%d.json", adaID), // known: brought up to date, not created
		"user.snapshot":        "PUT " + rm.URL + fmt.Sprintf("/users/%d.json", adaID),
		"user.updated":         "PUT " + rm.URL + fmt.Sprintf("/users/%d.json", adaID),
		"user.deactivated":     `"status":3`,
		"user.reactivated":     `"status":1`,
		"user.deleted":         "DELETE " + rm.URL + fmt.Sprintf("/users/%d.json", adaID),
		"group.created":        "step create: skipped", // known: nothing to send
		"group.snapshot":       "PUT " + rm.URL + fmt.Sprintf("/groups/%d.json", engID),
		"group.updated":        "PUT " + rm.URL + fmt.Sprintf("/groups/%d.json", engID),
		"group.deleted":        "DELETE " + rm.URL + fmt.Sprintf("/groups/%d.json", engID),
		"group.member_added":   "GET " + rm.URL + fmt.Sprintf("/groups/%d.json?include=users", engID),
		"group.member_removed": "DELETE " + rm.URL + fmt.Sprintf("/groups/%d/users/%d.json", engID, adaID),
	} {
		args := []string{"actions", "test", "--target", "redmine", "--event", typ}
		if strings.HasPrefix(typ, "user.") || strings.HasPrefix(typ, "group.member") {
			args = append(args, "--user", ada)
		}
		if strings.HasPrefix(typ, "group.") {
			args = append(args, "--group", eng)
		}
		if typ == "group.updated" {
			f := filepath.Join(t.TempDir(), "changes.json")
			os.WriteFile(f, []byte(`{"name":{"old":"Engineering","new":"Engineering & Research"}}`), 0o600)
			args = append(args, "--changes", f)
		}
		cmd := exec.Command(r.bin, args...)
		cmd.Env = r.env
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), want) || !strings.Contains(string(out), dryRunDone) {
			t.Errorf("dry run of %s (err %v): want %q and done:\n%s", typ, err, want, out)
		}
		if strings.Contains(string(out), rm.APIKey) {
			t.Errorf("dry run of %s prints the API key", typ)
		}
	}
	if after := redmineDiff(t, rm, r.lastUsers, r.lastGroups); after != before {
		t.Errorf("the dry run changed Redmine:\n%s", after)
	}
}

// TestRedmineDeadLetterReplay: a misconfigured step (a wrong path) makes
// Redmine answer 404; the event is dead-lettered at once and its detail
// shows the request as rendered (method, URL, body, the API key redacted)
// and Redmine's answer. The path fixed in the file, a reload, and
// `dead-letters replay` delivers it: the account appears in Redmine.
func TestRedmineDeadLetterReplay(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a real Redmine")
	}
	rm := redminetest.Start(t)
	good := redmineConfig(t, nil)
	goodText, _ := os.ReadFile(good)
	broken := strings.Replace(string(goodText), `path: '"/users.json"'
              body:`, `path: '"/user.json"'
              body:`, 1)
	if broken == string(goodText) {
		t.Fatal("could not break the create step's path")
	}
	if err := os.WriteFile(good, []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}
	r := startRedmineGateway(t, rm, good)

	r.do("POST", "/Users", userJSON("dora@example.com", "Dora", "Explorer", true), 201)
	var eventID string
	deadline := time.Now().Add(time.Minute)
	for eventID == "" {
		out, err := r.cli("dead-letters", "list", "--target", "redmine", "--json")
		if err != nil {
			t.Fatalf("dead-letters list: %v\n%s", err, out)
		}
		if m := regexp.MustCompile(`"(?:event_)?id":\s*"(evt_[^"]+)"`).FindStringSubmatch(out); m != nil {
			eventID = m[1]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no dead letter for the broken create:\n%s\ngateway log:\n%s", out, lastBytes(r.g.out.String(), 3000))
		}
		time.Sleep(200 * time.Millisecond)
	}
	show, err := r.cli("dead-letters", "show", eventID, "--target", "redmine")
	if err != nil {
		t.Fatalf("dead-letters show: %v\n%s", err, show)
	}
	var letter struct {
		LastStatus   int    `json:"last_status"`
		ResponseBody string `json:"response_body"`
	}
	if err := json.Unmarshal([]byte(show), &letter); err != nil {
		t.Fatalf("dead-letters show (JSON): %v\n%s", err, show)
	}
	if letter.LastStatus != 404 {
		t.Errorf("dead letter's status %d, want Redmine's 404", letter.LastStatus)
	}
	// The request as rendered, then Redmine's answer.
	for _, want := range []string{"step create", "POST " + rm.URL + "/user.json", "X-Redmine-Api-Key: [redacted]",
		`"login":"dora@example.com"`, `"mail":"dora@example.com"`, "--- response\n404", `"error":"Not Found"`} {
		if !strings.Contains(letter.ResponseBody, want) {
			t.Errorf("the dead letter's detail lacks %q:\n%s", want, letter.ResponseBody)
		}
	}
	if strings.Contains(show, rm.APIKey) {
		t.Errorf("the dead letter shows the API key:\n%s", show)
	}
	if u := rm.UserByLogin(t, "dora@example.com"); u != nil {
		t.Fatalf("account created despite the broken path: %+v", u)
	}

	// Fix the file, reload (SIGHUP), replay.
	if err := os.WriteFile(good, goodText, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := r.cli("reload"); err != nil {
		t.Fatalf("reload: %v\n%s", err, out)
	}
	if out, err := r.cli("dead-letters", "replay", "--all", "--target", "redmine"); err != nil {
		t.Fatalf("dead-letters replay: %v\n%s", err, out)
	}
	r.waitRedmineMatches(time.Minute)
	if out, _ := r.cli("dead-letters", "list", "--target", "redmine", "--json"); strings.Contains(out, eventID) {
		t.Errorf("still dead-lettered after the replay:\n%s", out)
	}
}

// TestRedmineBackfill: a gateway that ran for a while without sending
// Redmine anything gets the Redmine target's events switched on (reload)
// and `scimgate backfill --target redmine`: the snapshot creates the
// accounts and groups Redmine lacks, adopts the account and the group that
// exist with the same login and name (same Redmine ids, brought up to
// date), and sets every group's members exactly (an account of Redmine's
// own in the adopted group is taken out); live changes follow.
func TestRedmineBackfill(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a real Redmine")
	}
	rm := redminetest.Start(t)
	henryOld := rm.CreateUser(t, redminetest.User{Login: "henry@example.com", Firstname: "Old", Lastname: "Name", Mail: "henry@example.com", Status: redminetest.StatusLocked})
	zed := rm.CreateUser(t, redminetest.User{Login: "zed", Firstname: "Zed", Lastname: "Local", Mail: "zed@example.org"})
	designOld := rm.CreateGroup(t, "Design", henryOld.ID, zed.ID)

	cfg := redmineConfig(t, nil)
	live, _ := os.ReadFile(cfg)
	off := strings.Replace(string(live), `events: ["user.*", "group.*"]`, `events: ["none.none"]`, 1)
	if off == string(live) {
		t.Fatal("could not switch the target's events off")
	}
	if err := os.WriteFile(cfg, []byte(off), 0o600); err != nil {
		t.Fatal(err)
	}
	r := startRedmineGateway(t, rm, cfg)
	var ids []string
	for i, login := range []string{"henry@example.com", "ivy@example.com", "jack@example.com", "kim@example.com", "lee@example.com"} {
		ids = append(ids, r.do("POST", "/Users", userJSON(login, fmt.Sprintf("Name%d", i), "Backfilled", i != 3), 201)["id"].(string))
	}
	r.do("POST", "/Groups", groupJSON("Design", ids[0], ids[1]), 201)
	qa := r.do("POST", "/Groups", groupJSON("QA", ids[2], ids[3]), 201)["id"].(string)
	time.Sleep(500 * time.Millisecond) // would anything reach Redmine? (nothing is subscribed)
	if n := len(rm.Users(t)); n != 3 {
		t.Fatalf("Redmine has %d accounts before the backfill, want its own 3", n)
	}

	if err := os.WriteFile(cfg, live, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := r.cli("reload"); err != nil {
		t.Fatalf("reload: %v\n%s", err, out)
	}
	if out, err := r.cli("backfill", "--target", "redmine"); err != nil {
		t.Fatalf("backfill: %v\n%s", err, out)
	}
	r.waitRedmineMatches(2*time.Minute, "zed")
	if u := rm.UserByLogin(t, "henry@example.com"); u == nil || u.ID != henryOld.ID || u.Firstname != "Name0" || u.Status != redminetest.StatusActive {
		t.Errorf("henry not adopted and brought up to date: %+v (was id %d)", u, henryOld.ID)
	}
	for _, g := range rm.Groups(t) {
		if g.Name == "Design" && g.ID != designOld {
			t.Errorf("group Design not adopted: id %d, was %d", g.ID, designOld)
		}
	}

	// Live changes after the snapshot.
	r.do("PATCH", "/Groups/"+qa, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"displayName":"Quality"}}]}`, 200, 204)
	r.do("PATCH", "/Groups/"+qa, patchMembers("add", ids[4]), 200, 204)
	r.do("PATCH", "/Users/"+ids[1], patchActive(false), 200, 204)
	r.waitRedmineMatches(2*time.Minute, "zed")
}

// TestRedmineOktaRun is the end-to-end run, scaled down by
// default: users are created, updated, deactivated, reactivated and
// deleted, 5 groups get members added and removed and one is renamed, an
// account that existed in Redmine is adopted; meanwhile the gateway is
// killed with SIGKILL (while deliveries to Redmine are in flight) and
// restarted, and Redmine itself is stopped for a while and restarted
// (events wait and retry, nothing dead-letters). At the end Redmine's
// accounts, groups and memberships match the gateway's exactly (no
// duplicate account, no lost change), and a final update of every user
// lands on the right account (the id map is complete).
//
// Default: 30 users, 3 kills, Redmine down 3 s (plus its boot). The full
// run (200 users, 10 kills, Redmine down a minute):
//
//	SCIMGATE_REDMINE_FULL=1 go test -run TestRedmineOktaRun -timeout 30m ./cmd/scimgate
func TestRedmineOktaRun(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a real Redmine")
	}
	n, kills, outage := 30, 3, 3*time.Second
	if os.Getenv("SCIMGATE_REDMINE_FULL") != "" {
		n, kills, outage = 200, 10, time.Minute
	}
	rm := redminetest.Start(t)
	login := func(i int) string { return fmt.Sprintf("user%03d@example.com", i) }
	adopted := rm.CreateUser(t, redminetest.User{Login: login(7), Firstname: "Pre", Lastname: "Existing", Mail: login(7)})
	r := startRedmineGateway(t, rm, redmineConfig(t, nil))

	ids := make([]string, n)
	var groups [5]string
	var phases []func()
	for b := range 5 { // creates, in 5 batches
		phases = append(phases, func() {
			for i := b * n / 5; i < (b+1)*n/5; i++ {
				ids[i] = r.do("POST", "/Users", userJSON(login(i), fmt.Sprintf("First%d", i), "Created", true), 201)["id"].(string)
			}
		})
	}
	phases = append(phases,
		func() { // 5 groups with members
			for g := range groups {
				var members []string
				for i := g; i < n; i += 5 {
					members = append(members, ids[i])
				}
				groups[g] = r.do("POST", "/Groups", groupJSON(fmt.Sprintf("Team %d", g), members...), 201)["id"].(string)
			}
		},
		func() { // profile updates
			for i := 0; i < n; i += 3 {
				r.do("PUT", "/Users/"+ids[i], userJSON(login(i), fmt.Sprintf("First%d", i), "Updated", true), 200)
			}
		},
		func() { // deactivations
			for i := 1; i < n; i += 4 {
				r.do("PATCH", "/Users/"+ids[i], patchActive(false), 200, 204)
			}
		},
		func() { // Redmine down: membership changes wait
			rm.Stop()
			for g := range groups {
				r.do("PATCH", "/Groups/"+groups[g], patchMembers("add", ids[(g+1)%n], ids[(g+2)%n]), 200, 204)
				r.do("PATCH", "/Groups/"+groups[g], patchRemoveMember(ids[g]), 200, 204)
			}
			time.Sleep(outage)
			rm.Restart()
		},
		func() { // reactivations
			for i := 1; i < n; i += 8 {
				r.do("PATCH", "/Users/"+ids[i], patchActive(true), 200, 204)
			}
		},
		func() { // a rename
			r.do("PATCH", "/Groups/"+groups[2], `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"displayName":"Team Two (renamed)"}}]}`, 200, 204)
		},
		func() { // deletes (Entra deletes; Okta deactivates)
			for i := 5; i < n; i += 10 {
				r.do("DELETE", "/Users/"+ids[i], "", 204)
				ids[i] = ""
			}
		},
	)
	// Kill -9 after evenly spread phases, a moment into the deliveries.
	killAfter := map[int]bool{}
	for k := range kills {
		killAfter[(k*len(phases))/kills] = true
	}
	killed := 0
	for p, phase := range phases {
		phase()
		if killAfter[p] {
			time.Sleep(time.Duration(50+p*37%250) * time.Millisecond)
			r.kill9()
			killed++
		}
	}
	for killed < kills { // more kills than phases (the full run): kill during the catch-up
		time.Sleep(300 * time.Millisecond)
		r.kill9()
		killed++
	}
	r.waitRedmineMatches(10 * time.Minute)

	// The id map is complete: an update of every user reaches its account.
	for i, id := range ids {
		if id != "" {
			active := !(i%4 == 1 && i%8 != 1)
			r.do("PUT", "/Users/"+id, userJSON(login(i), fmt.Sprintf("Final%d", i), "Updated", active), 200)
		}
	}
	r.waitRedmineMatches(5 * time.Minute)
	if u := rm.UserByLogin(t, login(7)); u == nil || u.ID != adopted.ID {
		t.Errorf("the existing account of %s was not adopted: %+v (was id %d)", login(7), u, adopted.ID)
	}
	if out, err := r.cli("dead-letters", "list", "--target", "redmine", "--json"); err != nil || strings.Contains(out, "evt_") {
		t.Errorf("dead letters after the run (err %v):\n%s", err, out)
	}

	// The id map, read with `scimgate ids` from the stopped gateway's data
	// dir: exactly every live user and group, each with its Redmine id.
	want := map[string]string{}
	for i, id := range ids {
		if id != "" {
			want["User/"+id] = login(i)
		}
	}
	for g, id := range groups {
		want["Group/"+id] = fmt.Sprintf("Team %d", g)
	}
	want["Group/"+groups[2]] = "Team Two (renamed)"
	r.g.kill()
	r.checkIDMap(want)
	t.Logf("Redmine run: %d users, 5 groups, %d kill -9, Redmine down %v; Redmine matches the gateway", n, killed, outage)
}

// checkIDMap compares `scimgate ids --target redmine` (the gateway
// stopped) with want: "User/<scim id>" → login, "Group/<scim id>" → name;
// each entry's app id must be the Redmine id of that login or name.
func (r *redmineGateway) checkIDMap(want map[string]string) {
	r.t.Helper()
	cmd := exec.Command(r.bin, "ids", "--target", "redmine")
	cmd.Env = r.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.t.Fatalf("scimgate ids: %v\n%s", err, out)
	}
	redmineID := map[string]int{}
	for _, u := range r.rm.Users(r.t) {
		redmineID["User/"+strings.ToLower(u.Login)] = u.ID
	}
	for _, g := range r.rm.Groups(r.t) {
		redmineID["Group/"+g.Name] = g.ID
	}
	got := map[string]bool{}
	for line := range strings.Lines(strings.TrimSpace(string(out))) {
		key, val, _ := strings.Cut(strings.TrimSpace(line), " ")
		var saved struct {
			ID int `json:"id"`
		}
		if err := json.Unmarshal([]byte(val), &saved); err != nil {
			r.t.Errorf("ids line %q: %v", line, err)
			continue
		}
		got[key] = true
		name, ok := want[key]
		if !ok {
			r.t.Errorf("id map has %s, which the gateway no longer has", line)
			continue
		}
		typ, _, _ := strings.Cut(key, "/")
		if typ == "User" {
			name = strings.ToLower(name)
		}
		if rid := redmineID[typ+"/"+name]; saved.ID == 0 || saved.ID != rid {
			r.t.Errorf("id map: %s (%s) → Redmine id %d, but Redmine has it as %d", key, name, saved.ID, rid)
		}
	}
	for key, name := range want {
		if !got[key] {
			r.t.Errorf("id map lacks %s (%s)", key, name)
		}
	}
}

// TestRedmineExampleDryRun: `scimgate actions test` prints the requests of
// examples/redmine.yaml's event types from record files, touching nothing
// (no Redmine needed: the URL is never called). The types whose requests
// need the resource's own Redmine id (updates, locks, renames, members)
// wait for it ("not known yet") without an id map; TestRedmineExample runs
// the dry run of every type against its stopped gateway's data instead.
func TestRedmineExampleDryRun(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	user := `{"id":"u-1","version":2,"login":"ada@example.com","email":"ada@example.com","first_name":"Ada","last_name":"Lovelace","active":true}`
	group := `{"id":"g-1","version":1,"name":"Engineering"}`
	events := map[string]string{
		"user.created":           `{"data":{"user":` + user + `}}`,
		"user.snapshot":          `{"data":{"user":` + user + `}}`,
		"user.deleted":           `{"data":{"user":` + user + `}}`,
		"group.created":          `{"data":{"group":` + group + `}}`,
		"group.snapshot":         `{"data":{"group":` + group + `}}`,
		"group.deleted":          `{"data":{"group":` + group + `}}`,
		"group.member_removed":   `{"data":{"group":` + group + `,"user":` + user + `}}`,
		"group.members_snapshot": `{"data":{"group":` + group + `,"members":[{"id":"u-1","type":"User"}],"chunk":{"index":0,"count":1}}}`,
	}
	// What each type must print (a request line of its main write).
	wantLine := map[string]string{
		"user.created":           "POST http://redmine.invalid/users.json",
		"user.snapshot":          "POST http://redmine.invalid/users.json",
		"group.created":          "POST http://redmine.invalid/groups.json",
		"group.snapshot":         "POST http://redmine.invalid/groups.json",
		"group.members_snapshot": "PUT http://redmine.invalid/groups/",
	}
	env := append(os.Environ(), "SCIMGATE_DATA_DIR="+dir, "REDMINE_URL=http://redmine.invalid", "REDMINE_API_KEY=secret-key-0123456789")
	for typ, ev := range events {
		f := filepath.Join(dir, typ+".json")
		if err := os.WriteFile(f, []byte(ev), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "actions", "test", "--config", examplePath("redmine"), "--target", "redmine", "--event", typ, "--record", f)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("%s: %v\n%s", typ, err, out)
			continue
		}
		text := string(out)
		if w := wantLine[typ]; w != "" && !strings.Contains(text, w) {
			t.Errorf("%s: the dry run does not show %q:\n%s", typ, w, text)
		}
		if strings.Contains(text, "secret-key-0123456789") {
			t.Errorf("%s: the dry run prints the API key:\n%s", typ, text)
		}
		if !strings.Contains(text, dryRunDone) {
			t.Errorf("%s: the dry run did not complete:\n%s", typ, text)
		}
	}
}
