package gateway_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/scimgate/scimgate/mapping"
)

// entitlementRules are the mapping section of examples/entitlements.yaml,
// so the example and these tests cannot drift apart.
func entitlementRules(t *testing.T) mapping.Rules {
	t.Helper()
	raw, err := os.ReadFile("../examples/entitlements.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Mapping mapping.Rules `yaml:"mapping"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	return doc.Mapping
}

func createUserWith(t *testing.T, ts *testServer, body string) string {
	t.Helper()
	r := ts.do("POST", "/Users", body).must(t, http.StatusCreated)
	return r.body["id"].(string)
}

// Okta Identity Governance's discovery sequence — ResourceTypes,
// Schemas, each type's endpoint — then a PATCH assigning roles, and the
// event the app receives.
func TestOktaEntitlementDiscovery(t *testing.T) {
	es := newEventServerRules(t, entitlementRules(t))

	rts := es.do("GET", "/ResourceTypes", "").must(t, 200)
	byID := map[string]map[string]any{}
	for _, r := range rts.body["Resources"].([]any) {
		m := r.(map[string]any)
		byID[m["id"].(string)] = m
	}
	if rt := byID["Role"]; rt == nil || rt["endpoint"] != "/Roles" || rt["schema"] != mapping.SchemaOktaRole {
		t.Errorf("Role resource type = %v", rt)
	}
	if rt := byID["Entitlement"]; rt == nil || rt["endpoint"] != "/Entitlements" || rt["schema"] != mapping.SchemaOktaEntitlement {
		t.Errorf("Entitlement resource type = %v", rt)
	}
	es.do("GET", "/ResourceTypes/Role", "").must(t, 200)
	schemas := es.do("GET", "/Schemas", "").must(t, 200)
	for _, urn := range []string{mapping.SchemaOktaRole, mapping.SchemaOktaEntitlement, "urn:ietf:params:scim:schemas:core:2.0:User"} {
		if !strings.Contains(schemas.raw, `"id":"`+urn+`"`) {
			t.Errorf("/Schemas lacks %s", urn)
		}
	}
	es.do("GET", "/Schemas/"+mapping.SchemaOktaRole, "").must(t, 200)

	// Okta's "Entitlements Test": count=1&startIndex=1 → itemsPerPage 1.
	page := es.do("GET", "/Roles?count=1&startIndex=1", "").must(t, 200)
	if page.body["itemsPerPage"] != float64(1) || page.body["totalResults"] != float64(3) || page.body["startIndex"] != float64(1) {
		t.Errorf("/Roles page = %s", page.raw)
	}
	first := page.body["Resources"].([]any)[0].(map[string]any)
	if first["id"] != "admin" || first["displayName"] != "Administrator" || !hasString(first["schemas"], mapping.SchemaOktaRole) {
		t.Errorf("first role = %v", first)
	}
	ents := es.do("GET", "/Entitlements", "").must(t, 200)
	if ents.body["totalResults"] != float64(2) || get(ents.body, "Resources.0.type") != "Entitlement" {
		t.Errorf("/Entitlements = %s", ents.raw)
	}
	for _, f := range []string{`displayName eq "Editor"`, `id eq "editor"`} {
		r := es.do("GET", "/Roles?filter="+url.QueryEscape(f), "").must(t, 200)
		if r.body["totalResults"] != float64(1) || get(r.body, "Resources.0.id") != "editor" {
			t.Errorf("filter %s = %s", f, r.raw)
		}
	}
	es.do("GET", "/Roles/viewer", "").must(t, 200)
	es.do("GET", "/roles/viewer", "").must(t, 200) // endpoint names are case-insensitive
	es.do("GET", "/Roles/root", "").scimError(t, 404, "")
	for _, m := range []string{"POST", "PUT", "PATCH", "DELETE"} {
		if r := es.do(m, "/Roles", `{}`); r.status != 405 || r.header.Get("Allow") != "GET" {
			t.Errorf("%s /Roles = %d Allow %q, want 405 GET", m, r.status, r.header.Get("Allow"))
		}
	}

	id := createUserWith(t, es.testServer, createAda)
	es.settle(t, 1)
	es.do("PATCH", "/Users/"+id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[
		{"op":"add","path":"roles","value":[{"value":"admin","display":"Administrator"},{"value":"viewer"}]},
		{"op":"add","path":"entitlements","value":[{"value":"reports","type":"Entitlement"}]}]}`).must(t, 204)
	evs := es.settle(t, 1)
	if evs[0].Type != "user.updated" {
		t.Fatalf("event %s, want user.updated", evs[0].Type)
	}
	var change struct{ Old, New []string }
	if err := json.Unmarshal(evs[0].Changes["roles"], &change); err != nil || strings.Join(change.New, ",") != "admin,viewer" || change.Old != nil {
		t.Errorf("roles change = %s (%v)", evs[0].Changes["roles"], err)
	}
	if got := evs[0].Data["user"]["entitlements"]; got == nil {
		t.Errorf("record without entitlements: %v", evs[0].Data["user"])
	}

	// An unknown value is refused, naming it and the valid ones; nothing changes.
	detail := es.do("PATCH", "/Users/"+id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[
		{"op":"add","path":"roles","value":[{"value":"root"}]}]}`).scimError(t, 400, "invalidValue")
	if !strings.Contains(detail, `"root"`) || !strings.Contains(detail, "admin, editor, viewer") {
		t.Errorf("detail = %q", detail)
	}
	if got := es.do("GET", "/Users/"+id, "").must(t, 200).raw; strings.Contains(got, "root") {
		t.Errorf("refused value stored: %s", got)
	}
	es.settle(t, 0)
}

// Entra assigns app roles with SingleAppRoleAssignment (roles
// with primary true, then PATCH on roles[primary eq "True"].value) and
// AppRoleAssignmentsComplex (add and remove in the roles list).
func TestEntraAppRoles(t *testing.T) {
	es := newEventServerRules(t, entitlementRules(t))
	id := createUserWith(t, es.testServer, `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
		"externalId":"0a21f0f2","userName":"grace@contoso.com","active":true,"meta":{"resourceType":"User"},
		"roles":[{"primary":true,"type":"WindowsAzureActiveDirectoryRole","value":"Admin"}]}`)
	evs := es.settle(t, 1)
	if got := evs[0].Data["user"]["roles"]; !equalJSON(got, []any{"Admin"}) {
		t.Errorf("created with roles %v, want [Admin] (catalog ids match case-insensitively)", got)
	}
	patch := func(ops string) response {
		return es.do("PATCH", "/Users/"+id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[`+ops+`]}`)
	}
	patch(`{"op":"Replace","path":"roles[primary eq \"True\"].value","value":"editor"}`).must(t, 204)
	evs = es.settle(t, 1)
	if evs[0].Type != "user.updated" || !strings.Contains(string(evs[0].Changes["roles"]), `"new":["editor"]`) {
		t.Errorf("single-role replace: %s %s", evs[0].Type, evs[0].Changes["roles"])
	}
	patch(`{"op":"Add","path":"roles","value":[{"primary":false,"type":"WindowsAzureActiveDirectoryRole","display":"Viewer","value":"viewer"}]}`).must(t, 204)
	evs = es.settle(t, 1)
	if !strings.Contains(string(evs[0].Changes["roles"]), `"new":["editor","viewer"]`) {
		t.Errorf("complex add: %s", evs[0].Changes["roles"])
	}
	patch(`{"op":"Remove","path":"roles[value eq \"viewer\"]"}`).must(t, 204)
	evs = es.settle(t, 1)
	if !strings.Contains(string(evs[0].Changes["roles"]), `"new":["editor"]`) {
		t.Errorf("complex remove: %s", evs[0].Changes["roles"])
	}
	patch(`{"op":"Replace","path":"roles[primary eq \"True\"].value","value":"Superuser"}`).scimError(t, 400, "invalidValue")
	es.settle(t, 0)
}

func equalJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}
