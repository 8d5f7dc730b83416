package mapping

import (
	"errors"
	"strings"
	"testing"

	"github.com/scimgate/scimgate/gateway/scim"
)

func catalogRules() Rules {
	no := false
	return Rules{
		User: []Rule{
			{To: "login", From: StringList{"userName"}, Required: true},
			{To: "roles", From: StringList{"roles.value"}, Type: "list"},
			{To: "entitlements", From: StringList{"entitlements.value"}, Type: "list"},
		},
		Catalog: []CatalogType{
			{Name: "Role", Attribute: "roles", Values: []CatalogValue{{ID: "admin", DisplayName: "Administrator"}, {ID: "editor"}, {ID: "viewer"}}},
			{Name: "Entitlement", Kind: "entitlement", Values: []CatalogValue{{ID: "reports"}, {ID: "billing"}}},
			{Name: "Plan", Kind: "entitlement", Required: true, MultiValued: &no, Values: []CatalogValue{{ID: "basic"}, {ID: "pro"}}},
		},
	}
}

func TestCatalogCompileDefaults(t *testing.T) {
	m, err := Compile(catalogRules())
	if err != nil {
		t.Fatal(err)
	}
	cat := m.Catalog()
	if len(cat) != 3 {
		t.Fatalf("catalog has %d types", len(cat))
	}
	if r := cat[0]; r.Kind != KindRole || r.Endpoint != "/Roles" || r.Schema() != SchemaOktaRole || !r.IsMultiValued() {
		t.Errorf("Role = %+v", r)
	}
	if e := cat[1]; e.Attribute != "entitlements" || e.Endpoint != "/Entitlements" || e.Schema() != SchemaOktaEntitlement {
		t.Errorf("Entitlement = %+v", e)
	}
	if cat[0].Values[1].DisplayName != "editor" {
		t.Errorf("display name default = %q", cat[0].Values[1].DisplayName)
	}
}

func TestCatalogCompileErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cat  []CatalogType
		want string
	}{
		{"no name", []CatalogType{{Kind: "role", Values: []CatalogValue{{ID: "a"}}}}, "catalog[0].name"},
		{"reserved", []CatalogType{{Name: "User", Kind: "role", Values: []CatalogValue{{ID: "a"}}}}, "serves itself"},
		{"no kind", []CatalogType{{Name: "Role", Values: []CatalogValue{{ID: "a"}}}}, "catalog[0].kind"},
		{"bad attribute", []CatalogType{{Name: "Role", Attribute: "groups", Values: []CatalogValue{{ID: "a"}}}}, "use roles or entitlements"},
		{"no values", []CatalogType{{Name: "Role", Kind: "role"}}, "catalog[0].values"},
		{"duplicate id", []CatalogType{{Name: "Role", Kind: "role", Values: []CatalogValue{{ID: "a"}, {ID: "A"}}}}, "values[1].id"},
		{"shared id", []CatalogType{{Name: "License", Kind: "entitlement", Values: []CatalogValue{{ID: "a"}}},
			{Name: "Seat", Kind: "entitlement", Values: []CatalogValue{{ID: "a"}}}}, "unique across its types"},
		{"duplicate endpoint", []CatalogType{{Name: "Role", Kind: "role", Values: []CatalogValue{{ID: "a"}}},
			{Name: "Other", Kind: "role", Endpoint: "/roles", Values: []CatalogValue{{ID: "b"}}}}, "catalog[1].endpoint"},
		{"control char", []CatalogType{{Name: "Role", Kind: "role", Values: []CatalogValue{{ID: "a\u200bb"}}}}, "format character"},
	} {
		_, err := Compile(Rules{User: []Rule{{To: "login", From: StringList{"userName"}}}, Catalog: tc.cat})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Compile = %v, want an error mentioning %q", tc.name, err, tc.want)
		}
	}
}

func TestCatalogValidation(t *testing.T) {
	m, err := Compile(catalogRules())
	if err != nil {
		t.Fatal(err)
	}
	user := func(roles, ents []any, active bool) map[string]any {
		return map[string]any{"userName": "ada", "active": active, "roles": roles, "entitlements": ents}
	}
	v := func(s string) map[string]any { return map[string]any{"value": s} }
	for _, tc := range []struct {
		name      string
		doc       map[string]any
		wantErr   string // "" = accepted
		wantRoles []any
	}{
		{"ok", user([]any{v("admin"), v("viewer")}, []any{v("reports"), v("pro")}, true), "", []any{"admin", "viewer"}},
		{"entra single role, other case", user([]any{map[string]any{"primary": true, "type": "WindowsAzureActiveDirectoryRole", "value": "Admin"}},
			[]any{v("basic")}, true), "", []any{"Admin"}},
		{"unknown role", user([]any{v("root")}, []any{v("basic")}, true), `roles: unknown value "root" (valid: admin, editor, viewer)`, nil},
		{"two plans", user(nil, []any{v("basic"), v("pro")}, true), "at most one Plan may be assigned, got basic, pro", nil},
		{"plan required", user(nil, []any{v("reports")}, true), "a Plan is required (one of basic, pro)", nil},
		{"inactive needs no plan", user(nil, nil, false), "", nil},
		{"same value twice counts once", user(nil, []any{v("pro"), v("pro")}, true), "", nil},
	} {
		res, err := m.MapUser(tc.doc, nil)
		if tc.wantErr == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			} else if tc.wantRoles != nil && !equal(res.Record["roles"], tc.wantRoles) {
				t.Errorf("%s: record roles = %v, want %v", tc.name, res.Record["roles"], tc.wantRoles)
			}
			continue
		}
		var rej *Rejection
		var se *scim.Error
		if !errors.As(err, &rej) || !errors.As(err, &se) || se.ScimType != scim.InvalidValue || !strings.Contains(se.Detail, tc.wantErr) {
			t.Errorf("%s: error %v, want 400 invalidValue containing %q", tc.name, err, tc.wantErr)
		}
	}
}

func TestRemovedValues(t *testing.T) {
	old := []CatalogType{{Name: "Role", Attribute: "roles", Values: []CatalogValue{{ID: "admin"}, {ID: "editor"}}}}
	next := []CatalogType{{Name: "Role", Attribute: "roles", Values: []CatalogValue{{ID: "Admin"}}}}
	got := RemovedValues(old, next)
	if len(got) != 1 || got[0] != (RemovedValue{Type: "Role", Attribute: "roles", ID: "editor"}) {
		t.Errorf("RemovedValues = %+v", got)
	}
}
