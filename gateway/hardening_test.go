package gateway_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scimgate/scimgate/gateway"
	"github.com/scimgate/scimgate/gateway/store"
	"github.com/scimgate/scimgate/outbox"
)

// An empty or mistyped discard must not delete every dead
// letter; "all" has to be asked for.
func TestAdminBulkNeedsExplicitSelection(t *testing.T) {
	env := newAdminEnv(t)
	env.status.Store(400) // every delivery dead-letters
	for _, u := range []string{"ada@example.com", "grace@example.com", "linus@example.com"} {
		createUser(t, env.scim, u)
	}
	var list struct {
		DeadLetters []outbox.DeadLetter `json:"dead_letters"`
	}
	count := func() int {
		env.call(t, "GET", "/admin/targets/app/dead-letters", adminToken, &list)
		return len(list.DeadLetters)
	}
	waitUntil(t, "three dead letters", func() bool { return count() == 3 })
	for _, verb := range []string{"discard", "replay"} {
		for _, body := range []string{"", "{}", `{"ids":[]}`, `{"id":["evt_x"]}`, `{"all":false}`, `{"ids":[""]}`,
			`{"all":true,"ids":["evt_x"]}`, `{"all":true} {}`, "[]"} {
			code, resp := env.send(t, "POST", "/admin/targets/app/"+verb, adminToken, body, nil)
			if code != http.StatusBadRequest || !strings.Contains(resp, `{\"all\": true}`) {
				t.Errorf("%s with body %q = %d %s, want 400 telling how to select", verb, body, code, resp)
			}
			if n := count(); n != 3 {
				t.Fatalf("%s with body %q changed the dead letters: %d left, want 3", verb, body, n)
			}
		}
	}
	one := list.DeadLetters[0].Event.ID
	if code, resp := env.send(t, "POST", "/admin/targets/app/discard", adminToken, `{"ids":["`+one+`"]}`, nil); code != 200 || !strings.Contains(resp, `"discarded": 1`) {
		t.Fatalf("discard one = %d %s", code, resp)
	}
	if code, resp := env.send(t, "POST", "/admin/targets/app/discard", adminToken, `{"all":true}`, nil); code != 200 || !strings.Contains(resp, `"discarded": 2`) {
		t.Fatalf("discard all = %d %s", code, resp)
	}
	if n := count(); n != 0 {
		t.Errorf("%d dead letters after discarding all", n)
	}
}

// A wrong admin token says so, rather than "token required".
func TestAdminTokenMessages(t *testing.T) {
	env := newAdminEnv(t)
	for _, tc := range []struct{ token, want string }{
		{"", "admin token required"},
		{"wrong-token-0123456789", "invalid admin token"},
	} {
		code, body := env.call(t, "GET", "/admin/status", tc.token, nil)
		if code != 401 || !strings.Contains(body, tc.want) {
			t.Errorf("token %q: %d %s, want 401 %q", tc.token, code, body, tc.want)
		}
	}
}

// After a 401 the server closes the connection instead of
// waiting for the rest of a (possibly trickled) body.
func TestUnauthorizedClosesConnection(t *testing.T) {
	ts := newTestServer(t)
	for _, auth := range []string{"", "Authorization: Bearer wrong-token-0123456789\r\n"} {
		conn, err := net.Dial("tcp", ts.srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// Announce a 10 KB body and send none of it.
		fmt.Fprintf(conn, "POST /scim/v2/Users HTTP/1.1\r\nHost: x\r\n%sContent-Type: application/scim+json\r\nContent-Length: 10000\r\n\r\n", auth)
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 401 || !resp.Close {
			t.Errorf("auth %q: status %d, Connection close %v; want 401 and close", auth, resp.StatusCode, resp.Close)
		}
		start := time.Now()
		if _, err := conn.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("auth %q: read after 401 = %v, want EOF (connection closed)", auth, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("auth %q: connection closed only after %s", auth, d)
		}
	}
}

// A wrong method on an endpoint is 405 with Allow, not a
// 404 that says the endpoint does not exist.
func TestMethodNotAllowed(t *testing.T) {
	ts := newTestServer(t)
	for _, tc := range []struct{ method, path, allow string }{
		{"DELETE", "/Users", "GET, POST"},
		{"PUT", "/Groups", "GET, POST"},
		{"PATCH", "/Users/", "GET, POST"},
		{"POST", "/Users/some-id", "GET, PUT, PATCH, DELETE"},
		{"POST", "/Groups/some-id", "GET, PUT, PATCH, DELETE"},
		{"DELETE", "/ServiceProviderConfig", "GET"},
	} {
		r := ts.do(tc.method, tc.path, "")
		detail := r.scimError(t, http.StatusMethodNotAllowed, "")
		if got := r.header.Get("Allow"); got != tc.allow {
			t.Errorf("%s %s: Allow = %q, want %q", tc.method, tc.path, got, tc.allow)
		}
		if strings.Contains(detail, "no SCIM endpoint") {
			t.Errorf("%s %s: detail contradicts the endpoint: %s", tc.method, tc.path, detail)
		}
	}
	for _, path := range []string{"/.search", "/Users/.search", "/Groups/.search"} {
		ts.do("POST", path, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:SearchRequest"]}`).scimError(t, http.StatusNotImplemented, "")
	}
}

// A storage failure is 503 with a detail, so the IdP
// retries, rather than an opaque 500.
func TestStorageFailureIs503(t *testing.T) {
	ts := newTestServer(t)
	ts.store.Close() // the writer stops: every write fails as on a dead disk
	r := ts.do("POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ada@example.com"}`)
	detail := r.scimError(t, http.StatusServiceUnavailable, "")
	if !strings.Contains(detail, "retry") || r.header.Get("Retry-After") == "" {
		t.Errorf("503 detail %q, Retry-After %q: want a retry hint", detail, r.header.Get("Retry-After"))
	}
}

const coreUser = `"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"]`

// A body nested 10,000 levels deep is refused at decode
// time with 400 invalidSyntax (it used to be stored and then break every
// read of the user, every list page and every scanning filter), and a
// PATCH cannot deepen a document past the limit either.
func TestDepthLimit(t *testing.T) {
	ts := newTestServer(t)
	deep := `{` + coreUser + `,"userName":"deep@example.com","x":` + strings.Repeat("[", 9999) + strings.Repeat("]", 9999) + `}`
	detail := ts.do("POST", "/Users", deep).scimError(t, 400, "invalidSyntax")
	if !strings.Contains(detail, "max_depth") {
		t.Errorf("detail %q does not name scim.limits.max_depth", detail)
	}
	ok := `{` + coreUser + `,"userName":"ok@example.com","x":` + strings.Repeat("[", 30) + strings.Repeat("]", 30) + `}`
	id := ts.do("POST", "/Users", ok).must(t, 201).body["id"].(string)
	ts.do("PUT", "/Users/"+id, deep).scimError(t, 400, "invalidSyntax")
	// PATCH bodies are bounded the same way …
	ts.do("PATCH", "/Users/"+id, `{"Operations":[{"op":"add","path":"x","value":`+strings.Repeat("[", 5000)+strings.Repeat("]", 5000)+`}]}`).scimError(t, 400, "invalidSyntax")
	// (A PATCH cannot deepen a document past the limit either: with values
	// bounded by the body's depth and paths two levels deep it cannot reach
	// it at the default limit; scim's ApplyPatchLimits tests cover it.)
	// Everything stays readable.
	ts.do("GET", "/Users/"+id, "").must(t, 200)
	ts.do("GET", "/Users", "").must(t, 200)
	ts.do("GET", "/Users?filter="+url.QueryEscape("active eq true"), "").must(t, 200)
}

// Values are counted with and without a path, in POST and
// PUT bodies too, before anything reaches the store's writer.
func TestValuesCountedWithoutPath(t *testing.T) {
	ts := newTestServer(t)
	id := createUser(t, ts, "ada@example.com")
	emails := func(n int) string {
		var b strings.Builder
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"value":"u%d@example.com"}`, i)
		}
		return "[" + b.String() + "]"
	}
	many := emails(11000)
	ts.do("PATCH", "/Users/"+id, `{"Operations":[{"op":"add","value":{"emails":`+many+`}}]}`).scimError(t, 400, "tooMany")
	ts.do("PATCH", "/Users/"+id, `{"Operations":[{"op":"add","path":"emails","value":`+many+`}]}`).scimError(t, 400, "tooMany")
	ts.do("POST", "/Users", `{`+coreUser+`,"userName":"many@example.com","emails":`+many+`}`).scimError(t, 400, "tooMany")
	ts.do("PUT", "/Users/"+id, `{`+coreUser+`,"userName":"ada@example.com","emails":`+many+`}`).scimError(t, 400, "tooMany")
	g := ts.do("POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"Eng"}`).must(t, 201).body["id"].(string)
	var members strings.Builder
	for i := range 20000 {
		if i > 0 {
			members.WriteByte(',')
		}
		fmt.Fprintf(&members, `{"value":"m%d"}`, i)
	}
	ts.do("PATCH", "/Groups/"+g, `{"Operations":[{"op":"add","value":{"members":[`+members.String()+`]}}]}`).scimError(t, 400, "tooMany")
	// Within the limit, a large path-less add is linear and succeeds.
	start := time.Now()
	ts.do("PATCH", "/Users/"+id, `{"Operations":[{"op":"add","value":{"emails":`+emails(9000)+`}}]}`).must(t, 204)
	t.Logf("path-less add of 9,000 emails: %s", time.Since(start))
}

// A password is never stored or returned, however it is
// qualified, and no error detail quotes it.
func TestPasswordNeverStored(t *testing.T) {
	ts := newTestServer(t)
	for i, body := range []string{
		`{` + coreUser + `,"userName":"p0@example.com","urn:ietf:params:scim:schemas:core:2.0:User":{"password":"Hunter2-secret"}}`,
		`{` + coreUser + `,"userName":"p1@example.com","urn:ietf:params:scim:schemas:core:2.0:User:password":"Hunter2-secret"}`,
		`{` + coreUser + `,"userName":"p2@example.com","password":"Hunter2-secret"}`,
	} {
		r := ts.do("POST", "/Users", body)
		if strings.Contains(r.raw, "Hunter2") {
			t.Errorf("body %d: response quotes the password: %s", i, r.raw)
		}
		r.must(t, 201)
		id := r.body["id"].(string)
		ts.do("PATCH", "/Users/"+id, `{"Operations":[{"op":"replace","path":"urn:ietf:params:scim:schemas:core:2.0:User:password","value":"Hunter2-secret"},
			{"op":"replace","value":{"password":"Hunter2-secret"}}]}`).must(t, 204)
		stored, err := ts.store.GetUser(id)
		if err != nil {
			t.Fatal(err)
		}
		if raw, _ := json.Marshal(stored.Doc); strings.Contains(string(raw), "Hunter2") {
			t.Errorf("body %d: password stored: %s", i, raw)
		}
		if got := ts.do("GET", "/Users/"+id, "").raw; strings.Contains(got, "Hunter2") {
			t.Errorf("body %d: password returned: %s", i, got)
		}
	}
	// A write-only value of the wrong type is refused without being quoted.
	r := ts.do("POST", "/Users", `{`+coreUser+`,"userName":"p3@example.com","password":["Hunter2-secret"]}`)
	if strings.Contains(r.raw, "Hunter2") {
		t.Errorf("error quotes the password: %s", r.raw)
	}
}

// Responses carry the core URN and the declared
// extensions present, never schemas the server does not advertise.
func TestRenderedSchemas(t *testing.T) {
	ts := newTestServer(t)
	const ent = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
	r := ts.do("POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group","urn:example:undeclared:2.0:User"],
		"userName":"s@example.com","urn:example:undeclared:2.0:User":{"x":1}}`).must(t, 201)
	id := r.body["id"].(string)
	if got := fmt.Sprint(r.body["schemas"]); got != "[urn:ietf:params:scim:schemas:core:2.0:User]" {
		t.Errorf("POST schemas = %s", got)
	}
	ts.do("PATCH", "/Users/"+id, `{"Operations":[{"op":"add","path":"`+ent+`:department","value":"R&D"}]}`).must(t, 204)
	got := ts.do("GET", "/Users/"+id, "").must(t, 200)
	if dept, _ := got.body[ent].(map[string]any); !hasString(got.body["schemas"], ent) || dept["department"] != "R&D" {
		t.Errorf("after PATCH adding enterprise attributes: %s", got.raw)
	}
	g := ts.do("POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group","http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"],
		"displayName":"Eng","externalId":"e1"}`).must(t, 201)
	if got := fmt.Sprint(g.body["schemas"]); got != "[urn:ietf:params:scim:schemas:core:2.0:Group]" {
		t.Errorf("Entra group schemas = %s", got)
	}
	for _, l := range []string{"/Users", "/Groups"} {
		page := ts.do("GET", l, "").must(t, 200)
		for _, res := range page.body["Resources"].([]any) {
			for _, s := range res.(map[string]any)["schemas"].([]any) {
				if !strings.HasPrefix(s.(string), "urn:ietf:params:scim:schemas:") {
					t.Errorf("%s lists a resource with schema %v", l, s)
				}
			}
		}
	}
}

// One primary; no PATCH on schemas; the schema
// says what is enforced and returned; invalid UTF-8 is refused.
func TestSmallProtocolFixes(t *testing.T) {
	ts := newTestServer(t)
	r := ts.do("POST", "/Users", `{`+coreUser+`,"userName":"prim@example.com","emails":[
		{"value":"a@example.com","primary":true},{"value":"b@example.com","primary":true}]}`).must(t, 201)
	if get(r.body, "emails.0.primary") != true || get(r.body, "emails.1.primary") == true {
		t.Errorf("two primaries kept: %s", r.raw)
	}
	id := r.body["id"].(string)
	ts.do("PATCH", "/Users/"+id, `{"Operations":[{"op":"replace","path":"schemas","value":["urn:x"]}]}`).scimError(t, 400, "mutability")
	ts.do("POST", "/Users", "{"+coreUser+",\"userName\":\"bad\xff\xfeutf8\"}").scimError(t, 400, "invalidSyntax")
	ts.do("POST", "/Users", `{`+coreUser+`,"userName":"lone\ud800surrogate"}`).scimError(t, 400, "invalidSyntax")
	sch := ts.do("GET", "/Schemas/urn:ietf:params:scim:schemas:core:2.0:Group", "").must(t, 200)
	if !strings.Contains(sch.raw, `"name":"displayName"`) || strings.Contains(sch.raw, `"$ref"`) {
		t.Errorf("Group schema: %s", sch.raw)
	}
	for _, a := range sch.body["attributes"].([]any) {
		if m := a.(map[string]any); m["name"] == "displayName" && m["uniqueness"] != "server" {
			t.Errorf("Group displayName uniqueness = %v, want server", m["uniqueness"])
		}
	}
	if strings.Contains(ts.do("GET", "/Schemas/urn:ietf:params:scim:schemas:core:2.0:User", "").raw, `"$ref"`) {
		t.Error("User schema advertises groups.$ref, which is never returned")
	}
}

// groupWithMembers creates a group of n new users.
func groupWithMembers(t *testing.T, ts *testServer, name string, n int) (string, []string) {
	t.Helper()
	ids := make([]string, n)
	var members strings.Builder
	for i := range n {
		ids[i] = createUser(t, ts, fmt.Sprintf("%s-%d@example.com", name, i))
		if i > 0 {
			members.WriteByte(',')
		}
		fmt.Fprintf(&members, `{"value":%q}`, ids[i])
	}
	r := ts.do("POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"`+name+`","members":[`+members.String()+`]}`).must(t, 201)
	return r.body["id"].(string), ids
}

// A list response no
// longer cuts a page by its members (which skipped groups in Okta's
// import); it streams them, group by group, so every group comes whole,
// and scim.limits.max_members_per_list bounds nothing any more.
func TestGroupListStreamsMembers(t *testing.T) {
	ts := newTestServer(t, func(c *gateway.Config) { c.Limits.MaxMembersPerList = 50 })
	want := map[string]int{}
	for name, n := range map[string]int{"small1": 30, "small2": 30, "big": 70} {
		id, _ := groupWithMembers(t, ts, name, n)
		want[id] = n
	}
	for _, q := range []string{"", "?attributes=displayName,members", "?filter=displayName%20pr"} {
		page := ts.do("GET", "/Groups"+q, "").must(t, 200)
		res := page.body["Resources"].([]any)
		if page.body["totalResults"] != float64(3) || page.body["itemsPerPage"] != float64(3) || len(res) != 3 {
			t.Fatalf("GET /Groups%s: %s", q, page.raw)
		}
		for _, g := range res {
			gm := g.(map[string]any)
			if ms, _ := gm["members"].([]any); len(ms) != want[gm["id"].(string)] {
				t.Errorf("GET /Groups%s: group %v listed with %d members, want %d", q, gm["displayName"], len(ms), want[gm["id"].(string)])
			}
		}
	}
	page := ts.do("GET", "/Groups?attributes=displayName", "").must(t, 200)
	if strings.Contains(page.raw, `"members"`) || len(page.body["Resources"].([]any)) != 3 {
		t.Errorf("attributes=displayName: %s", page.raw)
	}
}

// Membership filters are served from the index; shapes it
// cannot serve are 400, never a silent empty result.
func TestMembershipFilters(t *testing.T) {
	ts := newTestServer(t)
	g, members := groupWithMembers(t, ts, "eng", 2)
	other, _ := groupWithMembers(t, ts, "ops", 1)
	u := members[0]
	for _, f := range []string{`members.value eq "` + u + `"`, `members[value eq "` + u + `"]`, `members eq "` + u + `"`,
		`id eq "` + g + `" and members eq "` + u + `"`, `displayName eq "eng" and members.value eq "` + u + `"`} {
		r := ts.do("GET", "/Groups?excludedAttributes=members&filter="+url.QueryEscape(f), "").must(t, 200)
		if r.body["totalResults"] != float64(1) || get(r.body, "Resources.0.id") != g {
			t.Errorf("%s: %s", f, r.raw)
		}
	}
	if r := ts.do("GET", "/Groups?filter="+url.QueryEscape(`id eq "`+other+`" and members eq "`+u+`"`), "").must(t, 200); r.body["totalResults"] != float64(0) {
		t.Errorf("membership in the other group: %s", r.raw)
	}
	r := ts.do("GET", "/Users?filter="+url.QueryEscape(`groups.value eq "`+g+`"`), "").must(t, 200)
	if r.body["totalResults"] != float64(2) {
		t.Errorf("users in group: %s", r.raw)
	}
	for _, f := range []string{`members.value co "x"`, `displayName eq "eng" or members eq "` + u + `"`, `not (members pr)`} {
		ts.do("GET", "/Groups?filter="+url.QueryEscape(f), "").scimError(t, 400, "invalidFilter")
	}
}

// One stale member id no longer blocks a full-membership
// PUT; scim.unknown_members: reject keeps the old strictness.
func TestUnknownMemberIDs(t *testing.T) {
	for _, mode := range []string{"ignore", "reject"} {
		t.Run(mode, func(t *testing.T) {
			ts := newTestServerOpts(t, store.Options{UnknownMembers: mode})
			u := createUser(t, ts, "ada@example.com")
			body := `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"Eng","members":[{"value":"` + u + `"},{"value":"deleted-out-of-band"}]}`
			r := ts.do("POST", "/Groups", body)
			if mode == "reject" {
				r.scimError(t, 400, "invalidValue")
				return
			}
			r.must(t, 201)
			assertMembers(t, ts, r.body["id"].(string), u)
		})
	}
}

// Look-alike names are one name; control and
// invisible characters are refused in identifiers; what was sent is kept.
func TestLookalikeNames(t *testing.T) {
	ts := newTestServer(t)
	r := ts.do("POST", "/Users", `{`+coreUser+`,"userName":"Ada@Example.com"}`).must(t, 201)
	if r.body["userName"] != "Ada@Example.com" {
		t.Errorf("userName as sent not kept: %v", r.body["userName"])
	}
	for _, name := range []string{"ada@example.com ", " ada@example.com", "ADA@EXAMPLE.COM"} {
		b, _ := json.Marshal(name)
		ts.do("POST", "/Users", `{`+coreUser+`,"userName":`+string(b)+`}`).scimError(t, 409, "uniqueness")
	}
	ts.do("POST", "/Users", `{`+coreUser+`,"userName":"caf\u00e9"}`).must(t, 201)
	ts.do("POST", "/Users", `{`+coreUser+`,"userName":"cafe\u0301"}`).scimError(t, 409, "uniqueness") // NFD é
	ts.do("POST", "/Users", `{`+coreUser+`,"userName":"sam"}`).must(t, 201)
	ts.do("POST", "/Users", `{`+coreUser+`,"userName":"\u017fam"}`).scimError(t, 409, "uniqueness") // long s folds to s
	for _, bad := range []string{`"\tada@example.com"`, `"zero\u200bwidth"`, `"nul\u0000byte"`, `"bidi\u202eevil"`} {
		ts.do("POST", "/Users", `{`+coreUser+`,"userName":`+bad+`}`).scimError(t, 400, "invalidValue")
	}
	ts.do("POST", "/Users", `{`+coreUser+`,"userName":"boss","emails":[{"value":"boss@x.com\u0000zzz"}]}`).scimError(t, 400, "invalidValue")
	ts.do("GET", "/Users?filter="+url.QueryEscape(`userName eq "ADA@example.com "`), "").must(t, 200)
}

// Members however qualified go to the membership index, not the document.
func TestQualifiedMembers(t *testing.T) {
	ts := newTestServer(t)
	u := createUser(t, ts, "ada@example.com")
	for i, body := range []string{
		`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"g0","urn:ietf:params:scim:schemas:core:2.0:Group:members":[{"value":"` + u + `"}]}`,
		`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"g1","urn:ietf:params:scim:schemas:core:2.0:Group":{"members":[{"value":"` + u + `"}]}}`,
	} {
		g := ts.do("POST", "/Groups", body).must(t, 201).body["id"].(string)
		assertMembers(t, ts, g, u)
		stored, err := ts.store.GetGroup(g, false)
		if err != nil {
			t.Fatal(err)
		}
		if raw, _ := json.Marshal(stored.Doc); strings.Contains(string(raw), u) {
			t.Errorf("body %d: members stored in the document: %s", i, raw)
		}
	}
}

// With the real server: a panic inside the store's writer,
// in the batches SCIM writes share, fails only the write that panicked
// (ErrInternal, rolled back); every SCIM write around it is acknowledged
// and readable, and the server keeps serving.
func TestWriterPanicWhileServing(t *testing.T) {
	ts := newTestServer(t)
	var wg sync.WaitGroup
	var created atomic.Int64
	for w := range 8 {
		wg.Go(func() {
			for i := range 25 {
				r := ts.do("POST", "/Users", fmt.Sprintf(`{"userName":"p%d-%d@example.com"}`, w, i))
				if r.status != 201 {
					t.Errorf("create beside a panicking write: %d %s", r.status, r.raw)
					return
				}
				created.Add(1)
			}
		})
	}
	for i := range 20 {
		wg.Go(func() {
			err := ts.store.Submit(func(tx *bolt.Tx) error {
				if _, err := tx.CreateBucketIfNotExists([]byte(fmt.Sprintf("panic-%d", i))); err != nil {
					return err
				}
				var m map[string]int
				m["boom"]++ // a real runtime panic after a write
				return nil
			})
			if !errors.Is(err, store.ErrInternal) {
				t.Errorf("the panicking write: %v; want store.ErrInternal", err)
			}
		})
	}
	wg.Wait()
	r := ts.do("GET", "/Users?count=1", "")
	if r.status != 200 || r.body["totalResults"] != float64(created.Load()) || created.Load() != 200 {
		t.Fatalf("after the panics: %d users listed, %d created; %d %s", r.body["totalResults"], created.Load(), r.status, r.raw)
	}
	err := ts.store.Submit(func(tx *bolt.Tx) error {
		for i := range 20 {
			if tx.Bucket([]byte(fmt.Sprintf("panic-%d", i))) != nil {
				return fmt.Errorf("the bucket of panicking write %d was committed", i)
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}
