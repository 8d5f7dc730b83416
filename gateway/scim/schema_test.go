package scim

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestSchemaDefinitions(t *testing.T) {
	tests := []struct {
		schema *Schema
		path   string
		check  func(*Attribute) bool
		want   string
	}{
		{UserSchema, "id", func(a *Attribute) bool {
			return a.Mutability == ReadOnly && a.Returned == ReturnedAlways && a.CaseExact && a.Uniqueness == UniquenessServer
		}, "readOnly, always, caseExact, server-unique"},
		{UserSchema, "externalId", func(a *Attribute) bool { return a.CaseExact }, "caseExact"},
		{UserSchema, "USERNAME", func(a *Attribute) bool {
			return a.Name == "userName" && a.Required && !a.CaseExact && a.Uniqueness == UniquenessServer
		}, "required, caseExact false, server-unique"},
		{UserSchema, "password", func(a *Attribute) bool { return a.Mutability == WriteOnly && a.Returned == ReturnedNever }, "writeOnly, never"},
		{UserSchema, "active", func(a *Attribute) bool { return a.Type == TypeBoolean }, "boolean"},
		{UserSchema, "groups", func(a *Attribute) bool { return a.Mutability == ReadOnly && a.MultiValued && a.Sub("$ref") == nil }, "readOnly multi-valued without $ref (never returned)"},
		{UserSchema, "meta", func(a *Attribute) bool { return a.Mutability == ReadOnly && a.Sub("lastModified").Type == TypeDateTime }, "readOnly, lastModified dateTime"},
		{UserSchema, "addresses", func(a *Attribute) bool {
			return a.MultiValued && a.Sub("postalCode") != nil && a.Sub("PRIMARY").Type == TypeBoolean
		}, "postalCode, primary"},
		{UserSchema, "x509Certificates", func(a *Attribute) bool { return a.Sub("value").Type == TypeBinary }, "binary value"},
		{UserSchema, "name", func(a *Attribute) bool { return len(a.SubAttributes) == 6 && a.Sub("honorificSuffix") != nil }, "6 sub-attributes"},
		{GroupSchema, "displayName", func(a *Attribute) bool { return a.Required && !a.CaseExact && a.Uniqueness == UniquenessServer }, "required, server-unique (enforced)"},
		{GroupSchema, "members", func(a *Attribute) bool {
			return a.MultiValued && a.Sub("value").Mutability == Immutable && a.Sub("$ref") == nil
		}, "immutable value, no $ref (never returned)"},
		{EnterpriseUserSchema, "manager", func(a *Attribute) bool { return a.Sub("displayName").Mutability == ReadOnly && a.Sub("$ref") != nil }, "readOnly displayName"},
		{EnterpriseUserSchema, "employeeNumber", func(a *Attribute) bool { return a.Type == TypeString }, "string"},
	}
	for _, tt := range tests {
		a := tt.schema.Attr(tt.path)
		if a == nil || !tt.check(a) {
			t.Errorf("%s.Attr(%q) = %+v, want %s", tt.schema.Name, tt.path, a, tt.want)
		}
	}
	if UserSchema.Description != "User Account" || GroupSchema.Description != "Group" || EnterpriseUserSchema.Description != "Enterprise User" {
		t.Errorf("schema descriptions = %q, %q, %q", UserSchema.Description, GroupSchema.Description, EnterpriseUserSchema.Description)
	}
	if UserSchema.Attr("nosuch") != nil || (*Attribute)(nil).Sub("x") != nil || (*Schema)(nil).Attr("x") != nil {
		t.Errorf("lookups of absent attributes are not nil")
	}
}

func TestAttributeJSON(t *testing.T) {
	b, err := json.Marshal(UserSchema.Attr("emails").Sub("type"))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"name":"type","type":"string","multiValued":false,"description":"A label indicating the attribute's function.","required":false,"caseExact":false,"mutability":"readWrite","returned":"default","uniqueness":"none","canonicalValues":["work","home","other"]}`
	if string(b) != want {
		t.Errorf("json.Marshal(emails.type) = %s, want %s", b, want)
	}
	b, _ = json.Marshal(UserSchema)
	for _, s := range []string{`"id":"urn:ietf:params:scim:schemas:core:2.0:User"`, `"subAttributes":[`, `"referenceTypes":["external"]`} {
		if !strings.Contains(string(b), s) {
			t.Errorf("json.Marshal(UserSchema) lacks %s", s)
		}
	}
	if strings.Contains(string(b), "null") {
		t.Errorf("json.Marshal(UserSchema) contains null: Entra rejects nulls in /Schemas")
	}
}

func TestResourceTypes(t *testing.T) {
	custom := &Schema{ID: "urn:ietf:params:scim:schemas:extension:cybsafe:2.0:User", Name: "CybSafe"}
	rt := NewUserResourceType(custom, &Schema{ID: strings.ToUpper(SchemaEnterpriseUser)}, custom, nil)
	if rt.ID != "User" || rt.Endpoint != "/Users" || rt.Schema != UserSchema {
		t.Errorf("NewUserResourceType() = %+v", rt)
	}
	if len(rt.Extensions) != 2 || rt.Extensions[0] != EnterpriseUserSchema || rt.Extensions[1] != custom {
		t.Errorf("NewUserResourceType extensions = %v, want [enterprise, cybsafe]", rt.Extensions)
	}
	if rt.Extension(strings.ToLower(custom.ID)) != custom || rt.Extension("urn:nope") != nil {
		t.Errorf("Extension lookup failed")
	}
	g := NewGroupResourceType()
	if g.ID != "Group" || g.Endpoint != "/Groups" || len(g.Extensions) != 0 || g.Schema != GroupSchema {
		t.Errorf("NewGroupResourceType() = %+v", g)
	}
	b, _ := json.Marshal(rt)
	want := `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],"id":"User","name":"User","endpoint":"/Users","description":"User Account","schema":"urn:ietf:params:scim:schemas:core:2.0:User","schemaExtensions":[{"schema":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User","required":false},{"schema":"urn:ietf:params:scim:schemas:extension:cybsafe:2.0:User","required":false}]}`
	if string(b) != want {
		t.Errorf("json.Marshal(User resource type) = %s, want %s", b, want)
	}
}

func TestLookup(t *testing.T) {
	rt := NewUserResourceType()
	tests := []struct {
		path, want string // want: Name of the definition, "" for nil
	}{
		{"userName", "userName"},
		{"name.FAMILYNAME", "familyName"},
		{`emails[type eq "work"].value`, "value"},
		{"emails", "emails"},
		{"urn:ietf:params:scim:schemas:core:2.0:User:userName", "userName"},
		{"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.displayName", "displayName"},
		{"URN:IETF:PARAMS:SCIM:SCHEMAS:EXTENSION:ENTERPRISE:2.0:USER:department", "department"},
		{"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User", ""},
		{"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:userName", ""},
		{"urn:ietf:params:scim:schemas:extension:x:2.0:User:department", ""},
		{"department", ""},
		{"nosuch", ""},
		{"name.nosuch", ""},
	}
	for _, tt := range tests {
		p, err := ParsePath(tt.path)
		if err != nil {
			t.Fatalf("ParsePath(%q): %v", tt.path, err)
		}
		got := ""
		if a := rt.Lookup(p); a != nil {
			got = a.Name
		}
		if got != tt.want {
			t.Errorf("Lookup(%q) = %q, want %q", tt.path, got, tt.want)
		}
	}
	if (*ResourceType)(nil).Lookup(&Path{Attr: "userName"}) != nil {
		t.Errorf("nil ResourceType Lookup != nil")
	}
}
