package scim

import (
	"strings"
	"testing"
)

const entURN = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"

func TestParsePath(t *testing.T) {
	tests := []struct {
		in                     string
		urn, attr, filter, sub string
		str                    string // String(); "" means in
	}{
		{in: "userName", attr: "userName"},
		{in: "  userName ", attr: "userName", str: "userName"},
		{in: "name.givenName", attr: "name", sub: "givenName"},
		{in: "name.FamilyName", attr: "name", sub: "FamilyName"},
		{in: "members", attr: "members"},
		{in: "members.$ref", attr: "members", sub: "$ref"},
		{in: `members[value eq "2819c223-7f76-453a-919d-413861904646"]`, attr: "members", filter: `value eq "2819c223-7f76-453a-919d-413861904646"`},
		{in: `emails[type eq "work"].value`, attr: "emails", filter: `type eq "work"`, sub: "value"},
		{in: `emails[type eq "work" and primary eq true].display`, attr: "emails", filter: `type eq "work" and primary eq true`, sub: "display"},
		{in: `addresses[type EQ work]`, attr: "addresses", filter: `type eq "work"`, str: `addresses[type eq "work"]`},
		{in: `members[value eq "a]b"]`, attr: "members", filter: `value eq "a]b"`},
		{in: entURN + ":manager", urn: entURN, attr: "manager"},
		{in: entURN + ":manager.value", urn: entURN, attr: "manager", sub: "value"},
		{in: entURN + ":employeeNumber", urn: entURN, attr: "employeeNumber"},
		{in: entURN, urn: entURN},
		{in: "urn:ietf:params:scim:schemas:core:2.0:User:userName", urn: "urn:ietf:params:scim:schemas:core:2.0:User", attr: "userName"},
		{in: "urn:ietf:params:scim:schemas:extension:cybsafe:2.0:User:costCentre", urn: "urn:ietf:params:scim:schemas:extension:cybsafe:2.0:User", attr: "costCentre"},
		{in: "urn:ietf:params:scim:schemas:extension:cybsafe:2.0:User", urn: "urn:ietf:params:scim:schemas:extension:cybsafe:2.0:User"},
		{in: `urn:x:2.0:Foo:emails[type eq "a:b"].value`, urn: "urn:x:2.0:Foo", attr: "emails", filter: `type eq "a:b"`, sub: "value"},
		{in: "urn:acme:custom", urn: "urn:acme", attr: "custom"}, // see ApplyPatch for bare undeclared URNs
		{in: "x-custom_attr2", attr: "x-custom_attr2"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			p, err := ParsePath(tt.in)
			if err != nil {
				t.Fatalf("ParsePath(%q) error = %v", tt.in, err)
			}
			f := ""
			if p.Filter != nil {
				f = p.Filter.String()
			}
			if p.URN != tt.urn || p.Attr != tt.attr || f != tt.filter || p.Sub != tt.sub {
				t.Errorf("ParsePath(%q) = {URN:%q Attr:%q Filter:%q Sub:%q}, want {%q %q %q %q}",
					tt.in, p.URN, p.Attr, f, p.Sub, tt.urn, tt.attr, tt.filter, tt.sub)
			}
			want := tt.str
			if want == "" {
				want = tt.in
			}
			if got := p.String(); got != want {
				t.Errorf("ParsePath(%q).String() = %q, want %q", tt.in, got, want)
			}
			q, err := ParsePath(p.String())
			if err != nil || q.String() != p.String() {
				t.Errorf("ParsePath(%q) = %v, %v; want round trip", p.String(), q, err)
			}
		})
	}
}

func TestParsePathErrors(t *testing.T) {
	tests := []struct{ in, detail string }{
		{"", "empty"},
		{"   ", "empty"},
		{"1abc", `invalid attribute name "1abc"`},
		{"name.", "invalid sub-attribute"},
		{".name", "missing attribute name"},
		{"a.b.c", "nested too deeply"},
		{"emails[", "incomplete"},
		{`emails[type eq "work"`, `expected "]"`},
		{`emails[type eq]`, `expected a value after "eq"`},
		{`emails[type eq "work"]x`, `unexpected "x"`},
		{`emails[type eq "work"].`, "sub-attribute name"},
		{`emails.value[type eq "work"]`, "must follow the attribute name"},
		{"user name", `unexpected "name"`},
		{"urn::x", "invalid schema URN"},
		{"na me", "unexpected"},
		{"a(b)", "unexpected"},
		{strings.Repeat("a", 5000), "limit is 4096"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			p, err := ParsePath(tt.in)
			if err == nil {
				t.Fatalf("ParsePath(%q) = %v, want error", tt.in, p)
			}
			se := scimErr(t, err)
			if se.Status != 400 || se.ScimType != InvalidPath {
				t.Errorf("ParsePath(%q) error = %d %s, want 400 invalidPath", tt.in, se.Status, se.ScimType)
			}
			if !strings.Contains(se.Detail, tt.detail) {
				t.Errorf("ParsePath(%q) detail = %q, want it to contain %q", tt.in, se.Detail, tt.detail)
			}
		})
	}
}

func TestPathValues(t *testing.T) {
	user := mustDoc(t, sampleUser)
	tests := []struct {
		path string
		want string // canonical JSON of the result
	}{
		{"userName", `["bjensen@example.com"]`},
		{"USERNAME", `["bjensen@example.com"]`},
		{"name.givenName", `["Barbara"]`},
		{"name.GIVENNAME", `["Barbara"]`},
		{"emails.value", `["bjensen@example.com","babs@jensen.org"]`},
		{`emails[type eq "work"].value`, `["bjensen@example.com"]`},
		{`emails[type eq "WORK"].value`, `["bjensen@example.com"]`},
		{`emails[type eq "home"]`, `[{"type":"home","value":"babs@jensen.org"}]`},
		{`emails[type eq "other"].value`, `null`},
		{"emails.display", `null`},
		{"phoneNumbers", `[{"type":"work","value":"555-555-8377"}]`},
		{"roles", `null`},
		{"nosuch", `null`},
		{"userName.x", `null`},
		{entURN + ":department", `["Tour Operations"]`},
		{entURN + ":manager.value", `["26118915-6090-4610-87e4-49d8ca9f808d"]`},
		{strings.ToUpper(entURN) + ":Manager.Value", `["26118915-6090-4610-87e4-49d8ca9f808d"]`},
		{"urn:ietf:params:scim:schemas:core:2.0:User:userName", `["bjensen@example.com"]`},
		{"urn:ietf:params:scim:schemas:extension:acme:2.0:User:x", `null`},
		{entURN, `[{"department":"Tour Operations","employeeNumber":"701984","manager":{"displayName":"John Smith","value":"26118915-6090-4610-87e4-49d8ca9f808d"}}]`},
		{"active", `[true]`},
		{"loginCount", `[42]`},
	}
	for _, tt := range tests {
		p, err := ParsePath(tt.path)
		if err != nil {
			t.Fatalf("ParsePath(%q): %v", tt.path, err)
		}
		if got := canon(t, p.Values(user)); got != tt.want {
			t.Errorf("ParsePath(%q).Values(user) = %s, want %s", tt.path, got, tt.want)
		}
	}
}
