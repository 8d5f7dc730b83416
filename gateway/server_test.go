package gateway_test

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scimgate/scimgate/gateway"
	"github.com/scimgate/scimgate/gateway/store"
	"github.com/scimgate/scimgate/internal/dbtest"
	"github.com/scimgate/scimgate/mapping"
	"github.com/scimgate/scimgate/outbox"
)

const testToken = "test-token-0123456789abcdef"

// mustOpenDB returns a bbolt file in t.TempDir() with the store's and the
// outbox's buckets, checked for consistency and closed when the test ends.
func mustOpenDB(t testing.TB) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "scimgate.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if err := store.InitBuckets(tx); err != nil {
			return err
		}
		return outbox.InitBuckets(tx)
	})
	if err != nil {
		t.Fatal(err)
	}
	dbtest.CloseWhenDone(t, db)
	return db
}

// testServer is the SCIM API over a real store on a real bbolt file.
type testServer struct {
	t     testing.TB
	url   string
	store *store.Store
	srv   *httptest.Server
}

func newTestServer(t *testing.T, mutate ...func(*gateway.Config)) *testServer {
	t.Helper()
	return newTestServerRules(t, mapping.DefaultRules(), mutate...)
}

func newTestServerRules(t *testing.T, rules mapping.Rules, mutate ...func(*gateway.Config)) *testServer {
	t.Helper()
	return newTestServerFull(t, rules, store.Options{}, mutate...)
}

// newTestServerOpts is newTestServer with store options.
func newTestServerOpts(t *testing.T, opts store.Options, mutate ...func(*gateway.Config)) *testServer {
	t.Helper()
	return newTestServerFull(t, mapping.DefaultRules(), opts, mutate...)
}

func newTestServerFull(t *testing.T, rules mapping.Rules, opts store.Options, mutate ...func(*gateway.Config)) *testServer {
	t.Helper()
	db := mustOpenDB(t)
	mapper, err := mapping.Compile(rules)
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(db, mapper, opts)
	t.Cleanup(st.Close)
	cfg := gateway.DefaultConfig()
	cfg.Auth.BearerTokens = gateway.Tokens(gateway.HashToken(testToken))
	for _, m := range mutate {
		m(&cfg)
	}
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv := httptest.NewServer(gateway.NewServer(cfg, st, logger, nil))
	t.Cleanup(srv.Close)
	return &testServer{t: t, url: srv.URL + "/scim/v2", store: st, srv: srv}
}

// response is one decoded SCIM answer.
type response struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (ts *testServer) do(method, path, body string, headers ...string) response {
	ts.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, ts.url+path, rd)
	if err != nil {
		ts.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	if body != "" {
		req.Header.Set("Content-Type", "application/scim+json; charset=utf-8")
	}
	req.Header.Set("User-Agent", "Okta SCIM Client 1.0.0")
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i+1] == "" {
			req.Header.Del(headers[i])
		} else {
			req.Header.Set(headers[i], headers[i+1])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		ts.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := response{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &r.body); err != nil {
			ts.t.Fatalf("%s %s: response is not a JSON object: %v\n%s", method, path, err, raw)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/scim+json" {
			ts.t.Errorf("%s %s: Content-Type = %q, want application/scim+json", method, path, ct)
		}
	}
	return r
}

// must fails the test unless the status is want.
func (r response) must(t testing.TB, want int) response {
	t.Helper()
	if r.status != want {
		t.Fatalf("status = %d, want %d; body: %s", r.status, want, r.raw)
	}
	return r
}

// scimError checks an RFC 7644 §3.12 error body.
func (r response) scimError(t *testing.T, status int, scimType string) string {
	t.Helper()
	r.must(t, status)
	if got := r.body["status"]; got != fmt.Sprint(status) {
		t.Errorf("error status = %#v, want string %q", got, fmt.Sprint(status))
	}
	if !hasString(r.body["schemas"], "urn:ietf:params:scim:api:messages:2.0:Error") {
		t.Errorf("error schemas = %v", r.body["schemas"])
	}
	if got, _ := r.body["scimType"].(string); got != scimType {
		t.Errorf("scimType = %q, want %q (detail %v)", got, scimType, r.body["detail"])
	}
	detail, _ := r.body["detail"].(string)
	if detail == "" {
		t.Errorf("error without detail: %s", r.raw)
	}
	return detail
}

func hasString(v any, want string) bool {
	list, _ := v.([]any)
	for _, e := range list {
		if e == want {
			return true
		}
	}
	return false
}

// get reads a dotted path ("name.givenName", "emails.0.value") from a body.
func get(v any, path string) any {
	for _, p := range strings.Split(path, ".") {
		switch x := v.(type) {
		case map[string]any:
			v = x[p]
		case []any:
			var i int
			if _, err := fmt.Sscan(p, &i); err != nil || i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}

func (ts *testServer) count(path string) int {
	ts.t.Helper()
	r := ts.do("GET", path+"?count=0", "").must(ts.t, 200)
	return int(r.body["totalResults"].(float64))
}

// oktaCreate is the exact body of Okta's create (Assign user in
// docs/okta.md, "What Okta sends, and what scimgate answers").
const oktaCreate = `{
  "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
  "userName": "Test.User@okta.local",
  "name": {"givenName": "Test", "familyName": "User"},
  "emails": [{"primary": true, "value": "test.user@okta.local", "type": "work"}],
  "displayName": "Test User",
  "locale": "en-US",
  "externalId": "00ujl29u0le5T6Aj10h7",
  "groups": [],
  "password": "1mz050nq",
  "active": true
}`

func createUser(t *testing.T, ts *testServer, userName string) string {
	t.Helper()
	body := fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":%q,
		"name":{"givenName":"G","familyName":"F"},"emails":[{"primary":true,"value":%q,"type":"work"}],"active":true}`, userName, strings.ToLower(userName))
	r := ts.do("POST", "/Users", body).must(t, 201)
	return r.body["id"].(string)
}

func createGroup(t *testing.T, ts *testServer, name string, members ...string) string {
	t.Helper()
	var ms []string
	for _, m := range members {
		ms = append(ms, fmt.Sprintf(`{"value":%q}`, m))
	}
	r := ts.do("POST", "/Groups", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":%q,"members":[%s]}`,
		name, strings.Join(ms, ","))).must(t, 201)
	return r.body["id"].(string)
}

func TestOktaTestConnectionWithNoUsers(t *testing.T) {
	ts := newTestServer(t)
	// §1.3(a): both probes, on an empty store.
	for _, path := range []string{"/Users?startIndex=1&count=2", "/Groups?startIndex=1&count=100"} {
		r := ts.do("GET", path, "", "Content-Type", "").must(t, 200)
		if !hasString(r.body["schemas"], "urn:ietf:params:scim:api:messages:2.0:ListResponse") {
			t.Errorf("%s: schemas = %v", path, r.body["schemas"])
		}
		for _, k := range []string{"totalResults", "startIndex", "itemsPerPage"} {
			if _, ok := r.body[k].(float64); !ok {
				t.Errorf("%s: %s = %#v, want a JSON number", path, k, r.body[k])
			}
		}
		if res, ok := r.body["Resources"].([]any); !ok || len(res) != 0 {
			t.Errorf("%s: Resources = %#v, want []", path, r.body["Resources"])
		}
	}
}

func TestOktaAssignUser(t *testing.T) {
	ts := newTestServer(t)
	// §1.3(d) pre-check, URL-encoded, no match → 200 and an empty list.
	r := ts.do("GET", "/Users?filter=userName%20eq%20%22test.user%40okta.local%22&startIndex=1&count=100", "").must(t, 200)
	if r.body["totalResults"] != 0.0 {
		t.Fatalf("pre-check totalResults = %v, want 0", r.body["totalResults"])
	}
	r = ts.do("POST", "/Users", oktaCreate).must(t, 201)
	id, _ := r.body["id"].(string)
	if id == "" {
		t.Fatal("created user has no id")
	}
	if r.body["userName"] != "Test.User@okta.local" {
		t.Errorf("userName = %v, want the case sent", r.body["userName"])
	}
	if _, ok := r.body["password"]; ok || strings.Contains(r.raw, "1mz050nq") {
		t.Error("password returned")
	}
	if loc := r.header.Get("Location"); loc == "" || loc != get(r.body, "meta.location") {
		t.Errorf("Location %q != meta.location %v", loc, get(r.body, "meta.location"))
	}
	if get(r.body, "meta.resourceType") != "User" || get(r.body, "meta.version") != r.header.Get("ETag") {
		t.Errorf("meta = %v, ETag %q", r.body["meta"], r.header.Get("ETag"))
	}
	// Duplicate in any case → 409 uniqueness.
	dup := strings.Replace(oktaCreate, "Test.User@okta.local", "TEST.USER@OKTA.LOCAL", 1)
	ts.do("POST", "/Users", dup).scimError(t, 409, "uniqueness")
	// SPEC test 9: case-insensitive lookup finds the user.
	r = ts.do("GET", "/Users?filter="+url.QueryEscape(`userName eq "TEST.USER@OKTA.LOCAL"`), "").must(t, 200)
	if r.body["totalResults"] != 1.0 || get(r.body, "Resources.0.id") != id {
		t.Errorf("case-insensitive filter: %s", r.raw)
	}
	// Stored password is nowhere to be read, including the raw store.
	if got := ts.do("GET", "/Users/"+id, "").must(t, 200); strings.Contains(got.raw, "1mz050nq") {
		t.Error("password readable")
	}
}

func TestOktaProfilePushAndLifecycle(t *testing.T) {
	ts := newTestServer(t)
	created := ts.do("POST", "/Users", oktaCreate).must(t, 201)
	id := created.body["id"].(string)
	// §1.3(f): Okta PUTs back what we returned, with id, meta and groups,
	// and without "active".
	put := fmt.Sprintf(`{
  "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
  "id": %q,
  "userName": "Test.User@okta.local",
  "name": {"givenName": "Another", "middleName": "Excited", "familyName": "User"},
  "emails": [{"primary": true, "value": "test.user@okta.local", "type": "work", "display": "test.user@okta.local"}],
  "groups": [],
  "meta": {"resourceType": "User", "location": "https://elsewhere/Users/x"}
}`, id)
	r := ts.do("PUT", "/Users/"+id, put).must(t, 200)
	if get(r.body, "name.givenName") != "Another" || r.body["active"] != true || r.body["id"] != id {
		t.Errorf("after PUT: %s", r.raw)
	}
	if get(r.body, "meta.version") == get(created.body, "meta.version") {
		t.Error("version did not grow")
	}
	// The same PUT again changes nothing: same version.
	again := ts.do("PUT", "/Users/"+id, put).must(t, 200)
	if get(again.body, "meta.version") != get(r.body, "meta.version") {
		t.Errorf("repeated PUT bumped version %v → %v", get(r.body, "meta.version"), get(again.body, "meta.version"))
	}
	// §1.3(g) OIN deactivate: PATCH without path.
	ts.do("PATCH", "/Users/"+id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
 "Operations":[{"op":"replace","value":{"active":false}}]}`).must(t, 204)
	r = ts.do("GET", "/Users/"+id, "").must(t, 200)
	if r.body["active"] != false {
		t.Fatalf("after deactivate: active = %v", r.body["active"])
	}
	// Soft: still found by filter.
	if ts.do("GET", "/Users?filter="+url.QueryEscape(`userName eq "test.user@okta.local"`), "").body["totalResults"] != 1.0 {
		t.Error("deactivated user not found by filter")
	}
	// Reactivate keeps the same id (CRUD suite 9-11).
	ts.do("PATCH", "/Users/"+id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
 "Operations":[{"op":"replace","value":{"active":true}}]}`).must(t, 204)
	if ts.do("GET", "/Users/"+id, "").body["active"] != true {
		t.Error("reactivate failed")
	}
	// AIW deactivate: GET then PUT with active:false.
	aiw := strings.Replace(put, `"groups": [],`, `"groups": [], "active": false,`, 1)
	if r := ts.do("PUT", "/Users/"+id, aiw).must(t, 200); r.body["active"] != false {
		t.Errorf("AIW PUT active:false → %v", r.body["active"])
	}
	// Password sync PATCH is accepted and nothing is stored.
	ts.do("PATCH", "/Users/"+id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
 "Operations":[{"op":"replace","value":{"password":"n3wpassw0rd"}}]}`).must(t, 204)
	if r := ts.do("GET", "/Users/"+id, ""); strings.Contains(r.raw, "n3wpassw0rd") {
		t.Error("password stored")
	}
	// Unknown id: 404 with detail and status "404" (SPEC tests 4 and 12).
	ts.do("GET", "/Users/010101001010101011001010101011", "").scimError(t, 404, "")
	ts.do("PUT", "/Users/00919288221112222", put).scimError(t, 404, "")
	ts.do("PATCH", "/Users/00919288221112222", `{"Operations":[{"op":"replace","value":{"active":false}}]}`).scimError(t, 404, "")
}

func TestOktaGroupPush(t *testing.T) {
	ts := newTestServer(t)
	u1 := createUser(t, ts, "u1@example.com")
	u2 := createUser(t, ts, "u2@example.com")
	u3 := createUser(t, ts, "u3@example.com")
	// §1.3(h): lookup, create with members:[], read.
	r := ts.do("GET", "/Groups?filter=displayName%20eq%20%22Test%20SCIMv2%22&startIndex=1&count=100", "").must(t, 200)
	if r.body["totalResults"] != 0.0 {
		t.Fatalf("group pre-check: %s", r.raw)
	}
	r = ts.do("POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"Test SCIMv2","members":[]}`).must(t, 201)
	gid := r.body["id"].(string)
	ts.do("GET", "/Groups/"+gid, "").must(t, 200)
	ts.do("POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"test scimv2"}`).scimError(t, 409, "uniqueness")
	// OIN membership change: remove + add in one request.
	ts.do("PATCH", "/Groups/"+gid, fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
 "Operations":[
   {"op":"remove","path":"members[value eq \"%s\"]"},
   {"op":"add","path":"members","value":[{"value":%q,"display":"u1"},{"value":%q,"display":"u2"}]}]}`, u3, u1, u2)).must(t, 204)
	assertMembers(t, ts, gid, u1, u2)
	// The display Okta sent is what the group shows (Entra: stored as sent).
	if r := ts.do("GET", "/Groups/"+gid, "").must(t, 200); !strings.Contains(r.raw, `"display":"u1"`) || !strings.Contains(r.raw, `"display":"u2"`) {
		t.Errorf("member display not kept: %s", r.raw)
	}
	// Full push.
	ts.do("PATCH", "/Groups/"+gid, fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
 "Operations":[{"op":"replace","path":"members","value":[{"value":%q,"display":"x"},{"value":%q,"display":"y"}]}]}`, u2, u3)).must(t, 204)
	assertMembers(t, ts, gid, u2, u3)
	// Rename with no path and the id in the value (sent on every membership change).
	ts.do("PATCH", "/Groups/"+gid, fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
 "Operations":[{"op":"replace","value":{"id":%q,"displayName":"Test SCIMv2 renamed"}}]}`, gid)).must(t, 204)
	r = ts.do("GET", "/Groups/"+gid, "").must(t, 200)
	if r.body["displayName"] != "Test SCIMv2 renamed" {
		t.Errorf("rename: %s", r.raw)
	}
	// The user's groups attribute is derived.
	if u := ts.do("GET", "/Users/"+u2, "").must(t, 200); get(u.body, "groups.0.value") != gid {
		t.Errorf("user groups = %v", u.body["groups"])
	}
	// AIW: PUT with the full membership.
	ts.do("PUT", "/Groups/"+gid, fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"Test SCIMv2","members":[{"value":%q,"display":"u1"}]}`, u1)).must(t, 200)
	assertMembers(t, ts, gid, u1)
	// Unknown member ids are ignored by default: nothing
	// changes, and the request succeeds.
	ts.do("PATCH", "/Groups/"+gid, `{"Operations":[{"op":"add","path":"members","value":[{"value":"nope"}]}]}`).must(t, 204)
	assertMembers(t, ts, gid, u1)
	// Delete → 204, then 404 and gone from lists and from the user's groups.
	ts.do("DELETE", "/Groups/"+gid, "").must(t, 204)
	ts.do("GET", "/Groups/"+gid, "").scimError(t, 404, "")
	if ts.count("/Groups") != 0 {
		t.Error("deleted group still listed")
	}
	if u := ts.do("GET", "/Users/"+u1, "").must(t, 200); u.body["groups"] != nil {
		t.Errorf("user still has groups %v", u.body["groups"])
	}
}

func assertMembers(t *testing.T, ts *testServer, gid string, want ...string) {
	t.Helper()
	r := ts.do("GET", "/Groups/"+gid, "").must(t, 200)
	got := map[string]bool{}
	list, _ := r.body["members"].([]any)
	for _, m := range list {
		got[get(m, "value").(string)] = true
	}
	if len(got) != len(want) {
		t.Fatalf("members = %v, want %v", got, want)
	}
	for _, w := range want {
		if !got[w] {
			t.Fatalf("members = %v, want %v", got, want)
		}
	}
}

func TestEntraShapes(t *testing.T) {
	ts := newTestServer(t)
	// Test connection: filter on a random GUID → 200 + empty (never 404),
	// with the unknown query parameter Entra may forward.
	r := ts.do("GET", "/Users?aadOptscim062020&filter="+url.QueryEscape(`userName eq "0b5f6e8e-8a3c-4e2f-9d0b-5a3c2e1f0d9c"`), "").must(t, 200)
	if r.body["totalResults"] != 0.0 {
		t.Fatal(r.raw)
	}
	// Entra's user create, with explicit nulls and roles:[].
	r = ts.do("POST", "/Users/", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
 "externalId":"0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef","userName":"Test_User_ab6490ee@testuser.com","active":true,
 "addresses":null,"title":null,
 "emails":[{"primary":true,"type":"work","value":"Test_User_fd0ea19b@testuser.com"}],
 "meta":{"resourceType":"User"},
 "name":{"formatted":"givenName familyName","familyName":"familyName","givenName":"givenName"},"roles":[]}`).must(t, 201)
	id := r.body["id"].(string)
	if _, ok := r.body["title"]; ok {
		t.Errorf("explicit null stored: %s", r.raw)
	}
	// Matching by externalId, unquoted as in Entra's docs, and by work email.
	for _, f := range []string{`externalId eq 0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef`, `externalId eq "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef"`,
		`emails[type eq "work"].value eq "test_user_fd0ea19b@testuser.com"`} {
		if r := ts.do("GET", "/Users?filter="+url.QueryEscape(f), "").must(t, 200); r.body["totalResults"] != 1.0 {
			t.Errorf("filter %s: %s", f, r.raw)
		}
	}
	// Disable, default shape: capitalised op, string "False".
	ts.do("PATCH", "/Users/"+id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","path":"active","value":"False"}]}`).must(t, 204)
	if r := ts.do("GET", "/Users/"+id, ""); r.body["active"] != false {
		t.Fatalf("active = %#v after \"False\"", r.body["active"])
	}
	// Add single-valued, replace multiple (incl. enterprise URN path).
	ts.do("PATCH", "/Users/"+id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Add","path":"nickName","value":"Babs"}]}`).must(t, 204)
	ts.do("PATCH", "/Users/"+id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[
  {"op":"Replace","path":"displayName","value":"Pvlo"},
  {"op":"Replace","path":"emails[type eq \"work\"].value","value":"TestBcwqnm@test.microsoft.com"},
  {"op":"Replace","path":"name.givenName","value":"Gtfd"},
  {"op":"Replace","path":"name.familyName","value":"Pkqf"},
  {"op":"Replace","path":"externalId","value":"Eqpj"},
  {"op":"Replace","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber","value":"Eqpj"}]}`).must(t, 204)
	r = ts.do("GET", "/Users/"+id, "").must(t, 200)
	for path, want := range map[string]any{"nickName": "Babs", "displayName": "Pvlo", "emails.0.value": "TestBcwqnm@test.microsoft.com",
		"name.givenName": "Gtfd", "externalId": "Eqpj", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User.employeeNumber": "Eqpj"} {
		var got any
		if p, sub, ok := strings.Cut(path, ".employeeNumber"); ok && sub == "" {
			got = get(r.body[p], "employeeNumber")
		} else {
			got = get(r.body, path)
		}
		if got != want {
			t.Errorf("%s = %v, want %v", path, got, want)
		}
	}
	// Flagged shape: no-path replace with dotted and URN keys.
	ts.do("PATCH", "/Users/"+id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[
  {"op":"replace","value":{"displayName":"Bjfe","name.givenName":"Kkom","name.familyName":"Unua",
     "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber":"Aklq"}}]}`).must(t, 204)
	r = ts.do("GET", "/Users/"+id, "").must(t, 200)
	if get(r.body, "name.givenName") != "Kkom" || r.body["displayName"] != "Bjfe" ||
		get(r.body["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"], "employeeNumber") != "Aklq" {
		t.Errorf("flagged no-path replace: %s", r.raw)
	}
	// Work email on a user without one: replace creates it.
	u2 := createUser(t, ts, "nomail@example.com")
	ts.do("PATCH", "/Users/"+u2, `{"Operations":[{"op":"remove","path":"emails"}]}`).must(t, 204)
	ts.do("PATCH", "/Users/"+u2, `{"Operations":[{"op":"Replace","path":"emails[type eq \"work\"].value","value":"new@example.com"}]}`).must(t, 204)
	if r := ts.do("GET", "/Users/"+u2, ""); get(r.body, "emails.0.value") != "new@example.com" {
		t.Errorf("work email not created: %s", r.raw)
	}
	// Manager as a bare string, then removed with "".
	mgrPath := "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager"
	ts.do("PATCH", "/Users/"+id, fmt.Sprintf(`{"Operations":[{"op":"Add","path":%q,"value":%q}]}`, mgrPath, u2)).must(t, 204)
	r = ts.do("GET", "/Users/"+id, "")
	if get(r.body["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"], "manager.value") != u2 {
		t.Errorf("manager: %s", r.raw)
	}
	ts.do("PATCH", "/Users/"+id, fmt.Sprintf(`{"Operations":[{"op":"Replace","path":%q,"value":""}]}`, mgrPath)).must(t, 204)
	r = ts.do("GET", "/Users/"+id, "")
	if get(r.body["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"], "manager") != nil {
		t.Errorf("manager not removed: %s", r.raw)
	}
	// Groups: Entra's create body (extra schema URN, externalId, no members).
	r = ts.do("POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group","http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"],
 "externalId":"8aa1a0c0-c4c3-4bc0-b4a5-2ef676900159","displayName":"displayName","meta":{"resourceType":"Group"}}`).must(t, 201)
	gid := r.body["id"].(string)
	// Add several members with $ref null, then remove one with the default value-list shape.
	ts.do("PATCH", "/Groups/"+gid, fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Add","path":"members","value":[{"$ref":null,"value":%q},{"$ref":null,"value":%q}]}]}`, id, u2)).must(t, 204)
	ts.do("PATCH", "/Groups/"+gid, fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Remove","path":"members","value":[{"value":%q}]}]}`, id)).must(t, 204)
	assertMembers(t, ts, gid, u2)
	// Group lookup excluding members.
	r = ts.do("GET", "/Groups?excludedAttributes=members&filter="+url.QueryEscape(`displayName eq "displayName"`), "").must(t, 200)
	if r.body["totalResults"] != 1.0 || get(r.body, "Resources.0.members") != nil {
		t.Errorf("excludedAttributes=members: %s", r.raw)
	}
	if r := ts.do("GET", "/Groups/"+gid+"?excludedAttributes=members", "").must(t, 200); r.body["members"] != nil {
		t.Errorf("excludedAttributes=members on GET by id: %s", r.raw)
	}
	// Hard delete: 204, then 404, and gone from lists and memberships.
	ts.do("DELETE", "/Users/"+u2, "").must(t, 204)
	ts.do("GET", "/Users/"+u2, "").scimError(t, 404, "")
	assertMembers(t, ts, gid)
	if n := ts.count("/Users"); n != 1 {
		t.Errorf("users after delete = %d, want 1", n)
	}
}

func TestAuth(t *testing.T) {
	ts := newTestServer(t, func(c *gateway.Config) {
		c.Auth.BearerTokens = append(c.Auth.BearerTokens, gateway.Tokens("second-token-0123456789")...)
		c.Auth.Basic = []gateway.BasicCredential{{Username: "key", Password: gateway.HashToken("secret-0123456789abcdef")}}
	})
	for name, auth := range map[string]string{"none": "", "garbage": "non-token", "wrong": "Bearer wrong-token-0123456789",
		"basicWrong": "Basic a2V5Ond yb25n"} {
		t.Run(name, func(t *testing.T) {
			r := ts.do("GET", "/Users", "", "Authorization", auth)
			r.scimError(t, 401, "")
			if r.header.Get("WWW-Authenticate") == "" {
				t.Error("no WWW-Authenticate")
			}
		})
	}
	ts.do("GET", "/Users", "", "Authorization", "Bearer second-token-0123456789").must(t, 200)
	ts.do("GET", "/Users", "", "Authorization", "bearer "+testToken).must(t, 200)
	ts.do("GET", "/Users", "", "Authorization", "Basic a2V5OnNlY3JldC0wMTIzNDU2Nzg5YWJjZGVm").must(t, 200) // key:secret-0123456789abcdef
	// Discovery is authenticated too.
	ts.do("GET", "/ServiceProviderConfig", "", "Authorization", "").scimError(t, 401, "")
}

func TestBadInputChangesNothing(t *testing.T) {
	ts := newTestServer(t, func(c *gateway.Config) { c.Limits.MaxBodyBytes = 4096 })
	id := createUser(t, ts, "keep@example.com")
	before := ts.do("GET", "/Users/"+id, "").must(t, 200).raw
	cases := []struct {
		name, method, path, body string
		headers                  []string
		status                   int
		scimType                 string
	}{
		{"malformedJSON", "POST", "/Users", `{"userName": "x",`, nil, 400, "invalidSyntax"},
		{"junk", "POST", "/Users", `{"acve": tre}`, nil, 400, "invalidSyntax"},
		{"array", "POST", "/Users", `[1,2]`, nil, 400, "invalidSyntax"},
		{"noUserName", "POST", "/Users", `{"active":true}`, nil, 400, "invalidValue"},
		{"userNameNumber", "POST", "/Users", `{"userName":42}`, nil, 400, "invalidValue"},
		{"activeMaybe", "POST", "/Users", `{"userName":"m@example.com","active":"maybe"}`, nil, 400, "invalidValue"},
		{"putNoUserName", "PUT", "/Users/" + id, `{"userame":"x"}`, nil, 400, "invalidValue"},
		{"contentType", "POST", "/Users", `{"userName":"ct@example.com"}`, []string{"Content-Type", "text/plain"}, 415, ""},
		{"tooLarge", "POST", "/Users", `{"userName":"big@example.com","title":"` + strings.Repeat("x", 5000) + `"}`, nil, 413, ""},
		{"badFilter", "GET", "/Users?filter=" + url.QueryEscape(`userName eq`), "", nil, 400, "invalidFilter"},
		{"badFilterOp", "GET", "/Users?filter=" + url.QueryEscape(`userName xx "a"`), "", nil, 400, "invalidFilter"},
		{"boolOrdering", "GET", "/Users?filter=" + url.QueryEscape(`active gt true`), "", nil, 400, "invalidFilter"},
		{"badPatchPath", "PATCH", "/Users/" + id, `{"Operations":[{"op":"replace","path":"emails[type eq","value":"x"}]}`, nil, 400, "invalidPath"},
		{"badPatchOp", "PATCH", "/Users/" + id, `{"Operations":[{"op":"frobnicate","path":"title","value":"x"}]}`, nil, 400, "invalidValue"},
		{"removeNoPath", "PATCH", "/Users/" + id, `{"Operations":[{"op":"remove"}]}`, nil, 400, "noTarget"},
		{"removeUserName", "PATCH", "/Users/" + id, `{"Operations":[{"op":"remove","path":"userName"}]}`, nil, 400, "mutability"},
		{"patchNoOps", "PATCH", "/Users/" + id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"]}`, nil, 400, "invalidValue"},
		{"patchAtomic", "PATCH", "/Users/" + id, `{"Operations":[{"op":"replace","path":"title","value":"Boss"},{"op":"remove","path":"userName"}]}`, nil, 400, "mutability"},
		{"badCount", "GET", "/Users?count=many", "", nil, 400, "invalidValue"},
		{"ifMatch", "PUT", "/Users/" + id, `{"userName":"keep@example.com","title":"x"}`, []string{"If-Match", `W/"999"`}, 412, ""},
		{"discoveryWrite", "POST", "/Schemas", `{}`, nil, 405, ""},
		{"unknownEndpoint", "GET", "/Nope", "", nil, 404, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ts.do(c.method, c.path, c.body, c.headers...).scimError(t, c.status, c.scimType)
		})
	}
	if after := ts.do("GET", "/Users/"+id, "").must(t, 200).raw; after != before {
		t.Errorf("bad input changed the user:\nbefore %s\nafter  %s", before, after)
	}
	if n := ts.count("/Users"); n != 1 {
		t.Errorf("users = %d, want 1", n)
	}
}

func TestDiscovery(t *testing.T) {
	ts := newTestServer(t)
	r := ts.do("GET", "/ServiceProviderConfig", "").must(t, 200)
	if get(r.body, "patch.supported") != true || get(r.body, "bulk.supported") != false || get(r.body, "etag.supported") != true ||
		get(r.body, "authenticationSchemes.0.type") != "oauthbearertoken" {
		t.Errorf("ServiceProviderConfig: %s", r.raw)
	}
	r = ts.do("GET", "/ResourceTypes", "").must(t, 200)
	if get(r.body, "Resources.0.endpoint") != "/Users" || get(r.body, "Resources.0.schemaExtensions.0.schema") != "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User" {
		t.Errorf("ResourceTypes: %s", r.raw)
	}
	ts.do("GET", "/ResourceTypes/Group", "").must(t, 200)
	r = ts.do("GET", "/Schemas", "").must(t, 200)
	if !strings.Contains(r.raw, "User Account") || r.body["totalResults"].(float64) < 3 {
		t.Errorf("Schemas: %s", r.raw[:min(len(r.raw), 300)])
	}
	r = ts.do("GET", "/Schemas/urn:ietf:params:scim:schemas:core:2.0:Group", "").must(t, 200)
	if r.body["id"] != "urn:ietf:params:scim:schemas:core:2.0:Group" {
		t.Errorf("Schemas/Group: %s", r.raw)
	}
	for _, p := range []string{"/ServiceProviderConfig", "/ResourceTypes", "/Schemas"} {
		ts.do("POST", p, `{}`).scimError(t, 405, "")
	}
}

func TestPagingIsStableAndCounted(t *testing.T) {
	ts := newTestServer(t)
	var ids []string
	for i := range 25 {
		ids = append(ids, createUser(t, ts, fmt.Sprintf("user%02d@example.com", i)))
	}
	ts.do("DELETE", "/Users/"+ids[3], "").must(t, 204)
	ids = append(ids[:3], ids[4:]...)
	var got []string
	for start := 1; ; start += 10 {
		r := ts.do("GET", fmt.Sprintf("/Users?startIndex=%d&count=10", start), "").must(t, 200)
		if r.body["startIndex"] != float64(start) || r.body["totalResults"] != 24.0 {
			t.Fatalf("page %d: %v %v", start, r.body["startIndex"], r.body["totalResults"])
		}
		list := r.body["Resources"].([]any)
		if r.body["itemsPerPage"] != float64(len(list)) {
			t.Fatalf("itemsPerPage %v != %d", r.body["itemsPerPage"], len(list))
		}
		for _, u := range list {
			got = append(got, get(u, "id").(string))
		}
		if start+10 > 24 {
			break
		}
	}
	if strings.Join(got, ",") != strings.Join(ids, ",") {
		t.Errorf("paged ids in a different order or incomplete:\n got %v\nwant %v", got, ids)
	}
	// count=0 returns only the total; startIndex<1 is 1; count is capped.
	r := ts.do("GET", "/Users?count=0", "").must(t, 200)
	if r.body["totalResults"] != 24.0 || len(r.body["Resources"].([]any)) != 0 {
		t.Errorf("count=0: %s", r.raw)
	}
	if r := ts.do("GET", "/Users?startIndex=-5&count=1", "").must(t, 200); r.body["startIndex"] != 1.0 {
		t.Errorf("startIndex=-5 → %v", r.body["startIndex"])
	}
	// Filtered paging.
	r = ts.do("GET", "/Users?startIndex=2&count=2&filter="+url.QueryEscape(`userName sw "user1"`), "").must(t, 200)
	if r.body["totalResults"] != 10.0 || r.body["itemsPerPage"] != 2.0 {
		t.Errorf("filtered page: %s", r.raw)
	}
}

func TestProjectionETagAndMeta(t *testing.T) {
	ts := newTestServer(t)
	id := ts.do("POST", "/Users", oktaCreate).must(t, 201).body["id"].(string)
	r := ts.do("GET", "/Users/"+id+"?attributes=userName,emails", "").must(t, 200)
	if r.body["id"] != id || r.body["userName"] == nil || r.body["emails"] == nil || r.body["name"] != nil || r.body["displayName"] != nil {
		t.Errorf("attributes=userName,emails: %s", r.raw)
	}
	r = ts.do("GET", "/Users?excludedAttributes=emails,name", "").must(t, 200)
	if get(r.body, "Resources.0.emails") != nil || get(r.body, "Resources.0.id") != id {
		t.Errorf("excludedAttributes: %s", r.raw)
	}
	r = ts.do("GET", "/Users?attributes="+url.QueryEscape(`emails[type eq "work"]`), "").must(t, 200)
	if get(r.body, "Resources.0.emails.0.value") != "test.user@okta.local" {
		t.Errorf("attributes with a value filter: %s", r.raw)
	}
	full := ts.do("GET", "/Users/"+id, "").must(t, 200)
	etag := full.header.Get("ETag")
	if etag == "" || get(full.body, "meta.version") != etag {
		t.Fatalf("ETag %q vs meta.version %v", etag, get(full.body, "meta.version"))
	}
	for _, k := range []string{"created", "lastModified"} {
		if _, err := time.Parse(time.RFC3339, get(full.body, "meta."+k).(string)); err != nil {
			t.Errorf("meta.%s: %v", k, err)
		}
	}
	ts.do("GET", "/Users/"+id, "", "If-None-Match", etag).must(t, 304)
	ts.do("PATCH", "/Users/"+id, `{"Operations":[{"op":"replace","path":"title","value":"Engineer"}]}`, "If-Match", etag).must(t, 204)
	ts.do("PATCH", "/Users/"+id, `{"Operations":[{"op":"replace","path":"title","value":"Manager"}]}`, "If-Match", etag).scimError(t, 412, "")
	// PATCH with attributes returns the resource (RFC 7644 §3.5.2).
	r = ts.do("PATCH", "/Users/"+id+"?attributes=title", `{"Operations":[{"op":"replace","path":"title","value":"CTO"}]}`).must(t, 200)
	if r.body["title"] != "CTO" {
		t.Errorf("PATCH ?attributes: %s", r.raw)
	}
	// An undeclared extension is stored (so it round-trips once the mapping
	// declares it) but not returned: strict clients reject a resource whose
	// schemas the server does not advertise.
	const custom = "urn:ietf:params:scim:schemas:extension:custom:2.0:User"
	r = ts.do("PATCH", "/Users/"+id+"?attributes="+custom,
		`{"Operations":[{"op":"add","value":{"`+custom+`":{"badge":"B-7"}}}]}`).must(t, 200)
	if _, ok := r.body[custom]; ok || hasString(r.body["schemas"], custom) {
		t.Errorf("undeclared extension returned: %s", r.raw)
	}
	stored, err := ts.store.GetUser(id)
	if err != nil {
		t.Fatal(err)
	}
	if get(stored.Doc[custom], "badge") != "B-7" {
		t.Errorf("undeclared extension not stored: %v", stored.Doc)
	}
}

func TestPatchResponseResource(t *testing.T) {
	ts := newTestServer(t, func(c *gateway.Config) { c.PatchResponse = "resource" })
	id := createUser(t, ts, "p@example.com")
	r := ts.do("PATCH", "/Users/"+id, `{"Operations":[{"op":"replace","value":{"active":false}}]}`).must(t, 200)
	if r.body["active"] != false {
		t.Errorf("PATCH resource response: %s", r.raw)
	}
}

func TestRateLimit(t *testing.T) {
	ts := newTestServer(t, func(c *gateway.Config) { c.Limits.RatePerSecond, c.Limits.Burst = 1, 2 })
	var limited response
	for range 5 {
		if r := ts.do("GET", "/Users", ""); r.status == 429 {
			limited = r
			break
		}
	}
	if limited.status != 429 {
		t.Fatal("no 429 after a burst of 5 at 1 request/s")
	}
	limited.scimError(t, 429, "")
	if limited.header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newHTTPServer serves h on loopback until the test or benchmark ends.
func newHTTPServer(tb testing.TB, h http.Handler) string {
	srv := httptest.NewServer(h)
	tb.Cleanup(srv.Close)
	return srv.URL
}

func TestMatchAttribute(t *testing.T) {
	for _, c := range []struct{ match, first, second string }{
		{"emails", `{"userName":"a1","emails":[{"value":"Same@Example.com","type":"work"}]}`, `{"userName":"a2","emails":[{"value":"same@example.com","type":"work"}]}`},
		{"externalId", `{"userName":"b1","externalId":"00u1"}`, `{"userName":"b2","externalId":"00u1"}`},
	} {
		t.Run(c.match, func(t *testing.T) {
			rules := mapping.DefaultRules()
			rules.Match = c.match
			ts := newTestServerRules(t, rules)
			ts.do("POST", "/Users", c.first).must(t, 201)
			ts.do("POST", "/Users", c.second).scimError(t, 409, "uniqueness")
			if n := ts.count("/Users"); n != 1 {
				t.Errorf("users = %d, want 1", n)
			}
		})
	}
	// With the default (userName), two users may share an email.
	ts := newTestServer(t)
	ts.do("POST", "/Users", `{"userName":"c1","emails":[{"value":"x@example.com"}]}`).must(t, 201)
	ts.do("POST", "/Users", `{"userName":"c2","emails":[{"value":"x@example.com"}]}`).must(t, 201)
}

func TestPendingManagerResolvedWhenManagerArrives(t *testing.T) {
	ts := newTestServer(t)
	ent := "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
	// Reports first, naming their manager by email (Okta maps whatever the admin chose).
	var reports []string
	for i := range 3 {
		r := ts.do("POST", "/Users", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User",%q],
			"userName":"report%d@example.com",%q:{"manager":{"value":"Boss@Example.com"}}}`, ent, i, ent)).must(t, 201)
		reports = append(reports, r.body["id"].(string))
	}
	for _, id := range reports {
		rec := userRecord(t, ts, id)
		if _, ok := rec["manager_id"]; ok {
			t.Fatalf("manager resolved before the manager exists: %v", rec)
		}
	}
	boss := ts.do("POST", "/Users", `{"userName":"the.boss","emails":[{"value":"boss@example.com","type":"work"}]}`).must(t, 201).body["id"].(string)
	for _, id := range reports {
		rec := userRecord(t, ts, id)
		if rec["manager_id"] != boss {
			t.Errorf("report %s: manager_id = %v, want %s", id, rec["manager_id"], boss)
		}
	}
	// The stored SCIM document still says what Okta sent.
	r := ts.do("GET", "/Users/"+reports[0], "").must(t, 200)
	if get(r.body[ent], "manager.value") != "Boss@Example.com" {
		t.Errorf("SCIM manager changed: %s", r.raw)
	}
	// A manager given by SCIM id resolves at once.
	r = ts.do("POST", "/Users", fmt.Sprintf(`{"userName":"direct","%s":{"manager":%q}}`, ent, boss)).must(t, 201)
	if rec := userRecord(t, ts, r.body["id"].(string)); rec["manager_id"] != boss {
		t.Errorf("manager by id: %v", rec)
	}
}

// userRecord is the canonical record of a user, as events carry it.
func userRecord(t *testing.T, ts *testServer, id string) map[string]any {
	t.Helper()
	raw, err := ts.store.UserRecord(id)
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(raw, &rec); err != nil {
		t.Fatal(err)
	}
	return rec
}
