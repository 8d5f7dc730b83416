package mapping

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/scimgate/scimgate/gateway/scim"
)

// TestSameAs checks how same_as compares the values of two fields.
func TestSameAs(t *testing.T) {
	tests := []struct {
		name  string
		rules []Rule
		doc   string
		want  string // "" when the mapping succeeds, else the error detail
	}{
		{"text/case", []Rule{
			{To: "login", From: StringList{"userName"}, SameAs: "email"},
			{To: "email", From: StringList{"emails.value"}},
		}, `{"userName": "Ann@Example.COM", "emails": [{"value": "ann@example.com"}]}`, ""},
		{"text/differs", []Rule{
			{To: "login", From: StringList{"userName"}, SameAs: "email"},
			{To: "email", From: StringList{`emails[type eq "work"].value`, "emails.value"}},
		}, `{"userName": "jdoe", "emails": [{"value": "jdoe@corp.com", "type": "work"}]}`,
			`login: "jdoe" must equal email "jdoe@corp.com" (from userName and emails[type eq "work"].value)`},
		{"text/transforms", []Rule{ // compared after the transforms and the type
			{To: "login", From: StringList{"userName"}, Transforms: Transforms{{Op: "trim"}}, SameAs: "email"},
			{To: "email", From: StringList{"emails.value"}, Type: "email"},
		}, `{"userName": "  ann@example.com ", "emails": [{"value": "ann@example.com"}]}`, ""},
		{"later/field", []Rule{ // the field named may come later in the rules
			{To: "email", From: StringList{"emails.value"}, SameAs: "login"},
			{To: "login", From: StringList{"userName"}},
		}, `{"userName": "a@x.io", "emails": [{"value": "b@x.io"}]}`,
			`email: "b@x.io" must equal login "a@x.io" (from emails.value and userName)`},
		{"number/text", []Rule{
			{To: "n", From: StringList{"x"}, Type: "int", SameAs: "s"},
			{To: "s", From: StringList{"y"}},
		}, `{"x": "1001", "y": 1001}`, ""},
		{"number/float", []Rule{
			{To: "n", From: StringList{"x"}, Type: "int", SameAs: "f"},
			{To: "f", From: StringList{"y"}, Type: "object"},
		}, `{"x": 3, "y": 3.0}`, ""},
		{"bool/text", []Rule{
			{To: "a", From: StringList{"active"}, Type: "bool", SameAs: "b"},
			{To: "b", From: StringList{"x"}},
		}, `{"active": true, "x": "TRUE"}`, ""},
		{"bool/differs", []Rule{
			{To: "a", From: StringList{"active"}, Type: "bool", SameAs: "b"},
			{To: "b", From: StringList{"x"}, Type: "bool"},
		}, `{"active": true, "x": false}`, `a: true must equal b false (from active and x)`},
		{"list", []Rule{
			{To: "a", From: StringList{"x"}, Type: "list", SameAs: "b"},
			{To: "b", From: StringList{"y"}, Type: "list"},
		}, `{"x": ["p", "q"], "y": ["p", "r"]}`, `a: a list must equal b a list (from x and y)`},
		{"absent/other", []Rule{ // nothing to compare: required says whether a field must be there
			{To: "login", From: StringList{"userName"}, SameAs: "email"},
			{To: "email", From: StringList{"emails.value"}},
		}, `{"userName": "jdoe"}`, ""},
		{"absent/self", []Rule{
			{To: "login", From: StringList{"userName"}, SameAs: "email"},
			{To: "email", From: StringList{"emails.value"}},
		}, `{"emails": [{"value": "jdoe@corp.com"}]}`, ""},
		{"value/template", []Rule{
			{To: "first", From: StringList{"name.givenName"}},
			{To: "greeting", Transforms: Transforms{{Op: "template", Arg: "Hi {{first}}"}}, SameAs: "fixed"},
			{To: "fixed", Value: "hi ann"},
		}, `{"name": {"givenName": "Bob"}}`, `greeting: "Hi Bob" must equal fixed "hi ann" (from template and value)`},
		{"with/other/problems", []Rule{ // every problem is listed
			{To: "login", From: StringList{"userName"}, Required: true, SameAs: "email"},
			{To: "email", From: StringList{"emails.value"}},
			{To: "dept", From: StringList{"x"}, Required: true},
		}, `{"userName": "a", "emails": [{"value": "b"}]}`,
			`dept: a value is required (from x); login: "a" must equal email "b" (from userName and emails.value)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Compile(Rules{User: tt.rules})
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			var doc map[string]any
			dec := json.NewDecoder(strings.NewReader(tt.doc))
			dec.UseNumber()
			if err := dec.Decode(&doc); err != nil {
				t.Fatal(err)
			}
			res, err := m.MapUser(doc, nil)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("MapUser = %v, want a record", err)
				}
				return
			}
			var se *scim.Error
			if !errors.As(err, &se) || se.Status != 400 || se.ScimType != scim.InvalidValue || se.Detail != tt.want {
				t.Fatalf("MapUser = %+v, %v; want 400 invalidValue %q", res.Record, err, tt.want)
			}
		})
	}
}

// TestSameAsNoCost checks that rules without same_as allocate nothing
// more for it.
func TestSameAsNoCost(t *testing.T) {
	m, err := Compile(DefaultRules())
	if err != nil {
		t.Fatal(err)
	}
	if m.userSame != nil || m.groupSame != nil {
		t.Errorf("same_as checks %v %v for rules without same_as", m.userSame, m.groupSame)
	}
}
