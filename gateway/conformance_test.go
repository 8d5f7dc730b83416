package gateway_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/scimgate/scimgate/mapping"
)

// A page of GET /Groups holds the groups asked for, with
// all their members, however many members they have together, so Okta's
// import (startIndex advanced by count) reads every group. 101 users, 150
// groups of 101 members: 15,150 members in a walk at count=100.
func TestGroupPagesReturnGroupsAskedFor(t *testing.T) {
	ts := newTestServer(t)
	users := make([]string, 101)
	var members strings.Builder
	for i := range users {
		users[i] = createUser(t, ts, fmt.Sprintf("walk-%d@example.com", i))
		if i > 0 {
			members.WriteByte(',')
		}
		fmt.Fprintf(&members, `{"value":%q}`, users[i])
	}
	created := map[string]bool{}
	for i := range 150 {
		r := ts.do("POST", "/Groups", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"walk group %d","members":[%s]}`,
			i, members.String())).must(t, http.StatusCreated)
		created[r.body["id"].(string)] = true
	}

	// Okta's group import: startIndex=1&count=100, then startIndex += 100
	// while startIndex <= totalResults.
	seen := map[string]bool{}
	for start := 1; ; start += 100 {
		page := ts.do("GET", fmt.Sprintf("/Groups?startIndex=%d&count=100", start), "").must(t, http.StatusOK)
		total := int(page.body["totalResults"].(float64))
		res := page.body["Resources"].([]any)
		if want := min(100, 150-(start-1)); len(res) != want || page.body["itemsPerPage"] != float64(want) {
			t.Fatalf("startIndex=%d: %d groups, itemsPerPage %v; want %d", start, len(res), page.body["itemsPerPage"], want)
		}
		if page.body["startIndex"] != float64(start) {
			t.Errorf("startIndex = %v, want %d", page.body["startIndex"], start)
		}
		for _, g := range res {
			g := g.(map[string]any)
			id := g["id"].(string)
			if seen[id] {
				t.Errorf("group %s listed twice", id)
			}
			seen[id] = true
			ms, _ := g["members"].([]any)
			if len(ms) != 101 {
				t.Errorf("group %s listed with %d members, want 101", id, len(ms))
			}
		}
		if start+100 > total {
			break
		}
	}
	if len(seen) != len(created) {
		t.Fatalf("Okta's walk saw %d groups of %d", len(seen), len(created))
	}
	// A page that leaves the members out still pages by count.
	page := ts.do("GET", "/Groups?startIndex=1&count=100&excludedAttributes=members", "").must(t, http.StatusOK)
	if n := len(page.body["Resources"].([]any)); n != 100 || strings.Contains(page.raw, `"members"`) {
		t.Errorf("excludedAttributes=members: %d groups (want 100), members present: %v", n, strings.Contains(page.raw, `"members"`))
	}
}

// /ServiceProviderConfig declares only schemas a client
// can discover (python-scim's discovery rejected the undeclared limits
// extension); the limits are in the admin status instead.
func TestServiceProviderConfigSchemasDiscoverable(t *testing.T) {
	env := newAdminEnv(t)
	ts := env.scim
	spc := ts.do("GET", "/ServiceProviderConfig", "").must(t, http.StatusOK)
	schemas, _ := spc.body["schemas"].([]any)
	if len(schemas) == 0 {
		t.Fatalf("no schemas: %s", spc.raw)
	}
	for _, s := range schemas {
		urn := s.(string)
		if urn == "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig" {
			continue
		}
		if r := ts.do("GET", "/Schemas/"+urn, ""); r.status != http.StatusOK {
			t.Errorf("schemas names %s, which /Schemas does not serve (%d)", urn, r.status)
		}
	}
	for k := range spc.body {
		if strings.HasPrefix(k, "urn:") {
			t.Errorf("undeclared extension %s in /ServiceProviderConfig", k)
		}
	}
	var st struct {
		Limits map[string]int64 `json:"scim_limits"`
	}
	env.call(t, "GET", "/admin/status", adminToken, &st)
	for _, k := range []string{"max_operations", "max_values", "max_members", "max_body_bytes", "max_page_size"} {
		if st.Limits[k] <= 0 {
			t.Errorf("admin status scim_limits.%s = %d, want the limit in force (%v)", k, st.Limits[k], st.Limits)
		}
	}
}

// Attributes no schema defines — at the top level, inside
// a declared extension, as sub-attributes — are not returned, whether they
// came in a POST, a PUT or a PATCH (with or without a path), in a single
// resource or a list: one such user made strict clients reject the whole
// list.
func TestUnknownAttributesNotReturned(t *testing.T) {
	ts := newTestServer(t)
	const ent = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
	body := `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","` + ent + `"],"userName":"fav@example.com",
		"favouriteColour":"blue","name":{"givenName":"Fav","shoeSize":"42"},
		"emails":[{"value":"fav@example.com","type":"work","primary":true,"verifiedBy":"nobody"}],
		"` + ent + `":{"department":"RnD","favouriteColour":"green"}}`
	r := ts.do("POST", "/Users", body).must(t, http.StatusCreated)
	id := r.body["id"].(string)
	noUnknown := func(what string, raw string) {
		t.Helper()
		for _, s := range []string{"favouriteColour", "shoeSize", "verifiedBy", "flavour"} {
			if strings.Contains(raw, s) {
				t.Errorf("%s returns the unknown attribute %s: %s", what, s, raw)
			}
		}
	}
	noUnknown("POST", r.raw)
	if !strings.Contains(r.raw, `"department":"RnD"`) || !strings.Contains(r.raw, `"givenName":"Fav"`) {
		t.Errorf("POST lost known attributes: %s", r.raw)
	}
	noUnknown("GET", ts.do("GET", "/Users/"+id, "").must(t, http.StatusOK).raw)
	noUnknown("GET list", ts.do("GET", "/Users", "").must(t, http.StatusOK).raw)
	noUnknown("GET filtered list", ts.do("GET", `/Users?filter=userName%20eq%20%22fav@example.com%22`, "").must(t, http.StatusOK).raw)
	for _, op := range []string{
		`{"op":"add","path":"favouriteColour","value":"red"}`,
		`{"op":"replace","value":{"favouriteColour":"red","flavour":"mint"}}`,
		`{"op":"add","path":"` + ent + `:favouriteColour","value":"red"}`,
	} {
		r := ts.do("PATCH", "/Users/"+id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[`+op+`]}`)
		if r.status != http.StatusOK && r.status != http.StatusNoContent && r.status != http.StatusBadRequest {
			t.Fatalf("PATCH %s: %d %s", op, r.status, r.raw)
		}
		noUnknown("PATCH "+op, r.raw)
		noUnknown("GET after PATCH "+op, ts.do("GET", "/Users/"+id, "").must(t, http.StatusOK).raw)
	}
	noUnknown("PUT", ts.do("PUT", "/Users/"+id, body).must(t, http.StatusOK).raw)
	noUnknown("GET list", ts.do("GET", "/Users?attributes=favouriteColour,userName", "").must(t, http.StatusOK).raw)
	// Groups too.
	g := ts.do("POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"fav","favouriteColour":"blue"}`).must(t, http.StatusCreated)
	noUnknown("POST /Groups", g.raw)
	noUnknown("GET /Groups", ts.do("GET", "/Groups", "").must(t, http.StatusOK).raw)
}

// An extension the group rules read is a declared Group
// extension: in the Group resource type's schemaExtensions, on /Schemas,
// and returned with the group.
func TestGroupRuleExtensionsDeclared(t *testing.T) {
	const urn = "urn:ietf:params:scim:schemas:extension:acme:2.0:Group"
	rules := mapping.DefaultRules()
	rules.Group = append(rules.Group, mapping.Rule{To: "cost_center", From: mapping.StringList{urn + ":costCenter"}})
	ts := newTestServerRules(t, rules)
	rt := ts.do("GET", "/ResourceTypes/Group", "").must(t, http.StatusOK)
	if !strings.Contains(rt.raw, `"schema":"`+urn+`"`) {
		t.Errorf("Group resource type does not list %s: %s", urn, rt.raw)
	}
	sc := ts.do("GET", "/Schemas/"+urn, "").must(t, http.StatusOK)
	if !strings.Contains(sc.raw, `"name":"costCenter"`) {
		t.Errorf("/Schemas/%s lacks costCenter: %s", urn, sc.raw)
	}
	if all := ts.do("GET", "/Schemas", "").must(t, http.StatusOK); !strings.Contains(all.raw, `"id":"`+urn+`"`) {
		t.Errorf("/Schemas does not list %s", urn)
	}
	g := ts.do("POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group","`+urn+`"],"displayName":"acme",
		"`+urn+`":{"costCenter":"CC-7"}}`).must(t, http.StatusCreated)
	for _, r := range []response{g, ts.do("GET", "/Groups/"+g.body["id"].(string), "").must(t, http.StatusOK)} {
		ext, _ := r.body[urn].(map[string]any)
		if ext["costCenter"] != "CC-7" || !hasString(r.body["schemas"], urn) {
			t.Errorf("group returned without its extension: %s", r.raw)
		}
	}
}

// A user's ETag covers its groups (If-None-Match used to
// answer 304 with stale groups), and If-None-Match matches a list of tags
// and the strong form of a weak tag (weak comparison, RFC 9110 §13.1.2).
func TestUserETagCoversGroups(t *testing.T) {
	ts := newTestServer(t)
	uid := createUser(t, ts, "etag@example.com")
	get := func(headers ...string) response {
		t.Helper()
		r := ts.do("GET", "/Users/"+uid, "", headers...)
		if r.status == http.StatusOK {
			if meta, _ := r.body["meta"].(map[string]any); meta["version"] != r.header.Get("ETag") {
				t.Errorf("meta.version %v != ETag %q", meta["version"], r.header.Get("ETag"))
			}
		}
		return r
	}
	e1 := get().must(t, http.StatusOK).header.Get("ETag")
	get("If-None-Match", e1).must(t, http.StatusNotModified)

	g := ts.do("POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"etag-g","members":[{"value":"`+uid+`"}]}`).must(t, http.StatusCreated)
	gid := g.body["id"].(string)
	r := get("If-None-Match", e1)
	if r.status != http.StatusOK || !strings.Contains(r.raw, gid) {
		t.Fatalf("after joining a group, If-None-Match with the old tag: %d %s", r.status, r.raw)
	}
	e2 := r.header.Get("ETag")
	if e2 == e1 {
		t.Fatalf("ETag %s unchanged by a group change", e2)
	}
	// A list of tags; the strong form of the weak tag.
	get("If-None-Match", `W/"nope", `+e2).must(t, http.StatusNotModified)
	get("If-None-Match", strings.TrimPrefix(e2, "W/")).must(t, http.StatusNotModified)
	get("If-None-Match", `"nope"`).must(t, http.StatusOK)
	// The group renamed: the user's groups[].display changed, so its tag.
	ts.do("PATCH", "/Groups/"+gid, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"displayName","value":"etag-renamed"}]}`)
	r = get("If-None-Match", e2)
	if r.status != http.StatusOK || !strings.Contains(r.raw, "etag-renamed") {
		t.Fatalf("after the group's rename, If-None-Match with the old tag: %d %s", r.status, r.raw)
	}
	e3 := r.header.Get("ETag")
	// If-Match on a write compares the same tag.
	body := `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"etag@example.com","active":true,"title":"T"}`
	ts.do("PUT", "/Users/"+uid, body, "If-Match", e1).must(t, http.StatusPreconditionFailed)
	put := ts.do("PUT", "/Users/"+uid, body, "If-Match", e3).must(t, http.StatusOK)
	if put.header.Get("ETag") == e3 {
		t.Errorf("PUT kept the tag %s", e3)
	}
	// Removed from the group: the tag changes again.
	ts.do("PATCH", "/Groups/"+gid, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"remove","path":"members[value eq \"`+uid+`\"]"}]}`)
	if r := get("If-None-Match", put.header.Get("ETag")); r.status != http.StatusOK || strings.Contains(r.raw, gid) {
		t.Errorf("after leaving the group: %d %s", r.status, r.raw)
	}
	ts.do("DELETE", "/Users/"+uid, "", "If-Match", e3).must(t, http.StatusPreconditionFailed)
}

// The catalog endpoints honour attributes and
// excludedAttributes, on lists and on single values.
func TestCatalogProjection(t *testing.T) {
	ts := newEventServerRules(t, entitlementRules(t))
	for _, c := range []struct {
		path       string
		want, gone []string
	}{
		{"/Roles?attributes=displayName", []string{"id", "displayName", "schemas"}, []string{"description", "meta"}},
		{"/Roles?excludedAttributes=description,meta", []string{"id", "displayName"}, []string{"description", "meta"}},
		{"/Entitlements?attributes=type", []string{"id", "type"}, []string{"displayName", "description"}},
		{"/Roles/admin?attributes=description", []string{"id", "description"}, []string{"displayName", "meta"}},
		{"/Roles/admin?excludedAttributes=displayName", []string{"id", "description", "meta"}, []string{"displayName"}},
	} {
		r := ts.do("GET", c.path, "").must(t, http.StatusOK)
		docs := []any{r.body}
		if res, ok := r.body["Resources"].([]any); ok {
			docs = res
		}
		if len(docs) == 0 {
			t.Fatalf("%s: no resources: %s", c.path, r.raw)
		}
		for _, d := range docs {
			d := d.(map[string]any)
			for _, k := range c.want {
				if _, ok := d[k]; !ok {
					t.Errorf("%s: %s missing: %v", c.path, k, d)
				}
			}
			for _, k := range c.gone {
				if _, ok := d[k]; ok {
					t.Errorf("%s: %s returned: %v", c.path, k, d)
				}
			}
		}
	}
}

// With a single-valued catalog type, an add while a
// value is set replaces it (RFC 7644 §3.5.2.1 for single values), so an
// identity provider that changes a role as two PATCHes works in either
// order: add then remove, remove then add. The replacement's event says
// the old value went.
func TestSingleValuedCatalogAddReplaces(t *testing.T) {
	rules := entitlementRules(t)
	single := false
	rules.Catalog[0].MultiValued = &single // Role
	es := newEventServerRules(t, rules)
	id := createUserWith(t, es.testServer, `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"sv@example.com","active":true,
		"roles":[{"value":"editor"}],"entitlements":[{"value":"reports"}]}`)
	es.settle(t, 1)
	patch := func(ops string) response {
		t.Helper()
		return es.do("PATCH", "/Users/"+id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[`+ops+`]}`)
	}
	roles := func() []string {
		t.Helper()
		r := es.do("GET", "/Users/"+id, "").must(t, http.StatusOK)
		var out []string
		rs, _ := r.body["roles"].([]any)
		for _, e := range rs {
			out = append(out, e.(map[string]any)["value"].(string))
		}
		return out
	}
	change := func(ev event) string { return string(ev.Changes["roles"]) }

	// Add before remove: the add replaces editor, the remove finds nothing.
	patch(`{"op":"add","path":"roles","value":[{"value":"admin"}]}`).must(t, http.StatusNoContent)
	if got := roles(); len(got) != 1 || got[0] != "admin" {
		t.Fatalf("after add: roles %v, want [admin]", got)
	}
	evs := es.settle(t, 1)
	if c := change(evs[0]); !strings.Contains(c, `"old":["editor"]`) || !strings.Contains(c, `"new":["admin"]`) {
		t.Errorf("add's event: %s %s", evs[0].Type, c)
	}
	patch(`{"op":"remove","path":"roles[value eq \"editor\"]"}`).must(t, http.StatusNoContent)
	if got := roles(); len(got) != 1 || got[0] != "admin" {
		t.Fatalf("after remove of the old value: roles %v, want [admin]", got)
	}
	es.settle(t, 0)

	// Remove before add.
	patch(`{"op":"remove","path":"roles[value eq \"admin\"]"}`).must(t, http.StatusNoContent)
	patch(`{"op":"add","path":"roles","value":[{"value":"viewer"}]}`).must(t, http.StatusNoContent)
	if got := roles(); len(got) != 1 || got[0] != "viewer" {
		t.Fatalf("remove then add: roles %v, want [viewer]", got)
	}
	es.settle(t, 2)

	// A no-path add carries the same rule; two values of the type in one
	// request are still refused; the multi-valued type accumulates.
	patch(`{"op":"add","value":{"roles":[{"value":"editor"}]}}`).must(t, http.StatusNoContent)
	if got := roles(); len(got) != 1 || got[0] != "editor" {
		t.Fatalf("no-path add: roles %v, want [editor]", got)
	}
	patch(`{"op":"add","path":"roles","value":[{"value":"admin"},{"value":"viewer"}]}`).scimError(t, http.StatusBadRequest, "invalidValue")
	patch(`{"op":"add","path":"entitlements","value":[{"value":"billing"}]}`).must(t, http.StatusNoContent)
	if r := es.do("GET", "/Users/"+id, "").must(t, http.StatusOK); !strings.Contains(r.raw, "reports") || !strings.Contains(r.raw, "billing") {
		t.Errorf("multi-valued entitlements replaced: %s", r.raw)
	}
	es.settle(t, 2)
}

// manager.displayName is read-only (RFC 7643 §4.3): no
// write sets it. A PATCH naming it is refused with 400 mutability, as a
// path naming any read-only attribute is; inside a manager value (Okta's
// POST and PUT send {"value": …, "displayName": …}; a PATCH may too) it is
// ignored, as RFC 7644 §3.5.1 says for PUT, so those requests still work.
func TestManagerDisplayNameReadOnly(t *testing.T) {
	ts := newTestServer(t)
	const ent = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
	r := ts.do("POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","`+ent+`"],"userName":"mgr@example.com",
		"`+ent+`":{"manager":{"value":"boss-1","displayName":"Boss"}}}`).must(t, http.StatusCreated)
	id := r.body["id"].(string)
	manager := func() map[string]any {
		t.Helper()
		ext, _ := ts.do("GET", "/Users/"+id, "").must(t, http.StatusOK).body[ent].(map[string]any)
		m, _ := ext["manager"].(map[string]any)
		return m
	}
	if m := manager(); m["value"] != "boss-1" || m["displayName"] != nil {
		t.Errorf("after POST: manager %v, want value boss-1 and no displayName", m)
	}
	patch := func(ops string) response {
		t.Helper()
		return ts.do("PATCH", "/Users/"+id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[`+ops+`]}`)
	}
	for _, op := range []string{
		`{"op":"replace","path":"` + ent + `:manager.displayName","value":"Evil"}`,
		`{"op":"add","path":"` + ent + `:manager.displayName","value":"Evil"}`,
		`{"op":"remove","path":"` + ent + `:manager.displayName"}`,
	} {
		patch(op).scimError(t, http.StatusBadRequest, "mutability")
	}
	patch(`{"op":"replace","path":"`+ent+`:manager","value":{"value":"boss-2","displayName":"Evil"}}`).must(t, http.StatusNoContent)
	if m := manager(); m["value"] != "boss-2" || m["displayName"] != nil {
		t.Errorf("after PATCH of the manager: %v, want value boss-2 and no displayName", m)
	}
	patch(`{"op":"replace","value":{"`+ent+`":{"manager":{"value":"boss-3","displayName":"Evil"}}}}`).must(t, http.StatusNoContent)
	if m := manager(); m["value"] != "boss-3" || m["displayName"] != nil {
		t.Errorf("after a no-path PATCH: %v, want value boss-3 and no displayName", m)
	}
	ts.do("PUT", "/Users/"+id, `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","`+ent+`"],"userName":"mgr@example.com",
		"`+ent+`":{"manager":{"value":"boss-4","displayName":"Evil"}}}`).must(t, http.StatusOK)
	if m := manager(); m["value"] != "boss-4" || m["displayName"] != nil {
		t.Errorf("after PUT: %v, want value boss-4 and no displayName", m)
	}
}

// The discovery endpoints refuse a filter
// with 403 (RFC 7644 §4), and /Me, which scimgate does not implement,
// answers 501 (RFC 7644 §3.11), whatever the method.
func TestDiscoveryFilterForbiddenAndMe(t *testing.T) {
	ts := newTestServer(t)
	for _, p := range []string{"/Schemas", "/ResourceTypes", "/ServiceProviderConfig", "/Schemas/urn:ietf:params:scim:schemas:core:2.0:User", "/ResourceTypes/User"} {
		ts.do("GET", p+`?filter=id%20eq%20%22User%22`, "").scimError(t, http.StatusForbidden, "")
		ts.do("GET", p, "").must(t, http.StatusOK)
	}
	for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
		body := ""
		if m != "GET" && m != "DELETE" {
			body = `{}`
		}
		for _, p := range []string{"/Me", "/me", "/Me/x"} {
			if r := ts.do(m, p, body); r.status != http.StatusNotImplemented {
				t.Errorf("%s %s = %d, want 501: %s", m, p, r.status, r.raw)
			}
		}
	}
}
