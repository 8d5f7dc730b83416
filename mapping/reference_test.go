package mapping

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// recordResolver knows users by id and by userName, with their records.
type recordResolver map[string]map[string]any // id → record

func (r recordResolver) ResolveUser(by, value string) (string, bool) {
	for id, rec := range r {
		if by == "id" && id == value || by == "userName" && strings.EqualFold(rec["login"].(string), value) {
			return id, true
		}
	}
	return "", false
}

func (r recordResolver) UserRecord(id string) (map[string]any, bool) {
	rec, ok := r[id]
	return rec, ok
}

const referenceFieldRules = `
user:
  - {to: login, from: userName}
  - {to: email, from: emails.value, type: email}
  - {to: level, from: x-level, type: int}
  - {to: address.city, from: addresses.locality}
  - {to: manager_id, from: manager.value, reference: {by: [id, userName]}}
  - {to: manager_login, from: manager.value, reference: {by: [id, userName], field: login}}
  - {to: manager_email, from: manager.value, reference: {by: [id, userName], field: email}}
  - {to: manager_level, from: manager.value, reference: {by: [id, userName], field: level}}
  - {to: manager_city, from: manager.value, reference: {by: [id, userName], field: address.city}}
`

// TestReferenceField: a reference with a field outputs that field of the
// referenced user's record instead of its SCIM id.
func TestReferenceField(t *testing.T) {
	var rules Rules
	if err := yaml.Unmarshal([]byte(referenceFieldRules), &rules); err != nil {
		t.Fatal(err)
	}
	m, err := Compile(rules)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := m.ReferencedFields(), []string{"address", "email", "level", "login"}; !slices.Equal(got, want) {
		t.Errorf("ReferencedFields = %v, want %v", got, want)
	}
	boss := map[string]any{"login": "boss", "email": "boss@example.com", "level": int64(3), "address": map[string]any{"city": "Leeds"}}
	res := recordResolver{"u-boss": boss}
	doc := map[string]any{"userName": "ann", "manager": map[string]any{"value": "boss"}}

	r, err := m.MapUser(doc, res)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"login": "ann", "manager_id": "u-boss", "manager_login": "boss",
		"manager_email": "boss@example.com", "manager_level": int64(3), "manager_city": "Leeds"}
	if !reflect.DeepEqual(r.Record, want) {
		t.Errorf("record = %v, want %v", r.Record, want)
	}
	for _, ref := range r.Refs {
		if !ref.Resolved || ref.ID != "u-boss" || ref.By != "userName" {
			t.Errorf("ref %+v, want resolved to u-boss by userName", ref)
		}
	}
	if len(r.Refs) != 5 {
		t.Errorf("%d refs, want 5", len(r.Refs))
	}

	// The record is a copy: changing it leaves the manager's alone.
	boss["level"] = int64(4)
	if r.Record["manager_level"] != int64(3) {
		t.Errorf("record shares the manager's values")
	}

	// A manager without the field: resolved, the field left out.
	delete(boss, "email")
	r, err = m.MapUser(doc, res)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := r.Record["manager_email"]; ok || r.Record["manager_login"] != "boss" {
		t.Errorf("record = %v, want manager_login and no manager_email", r.Record)
	}

	// Not found: pending, every reference field left out.
	r, err = m.MapUser(map[string]any{"userName": "bob", "manager": "nobody"}, res)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Record) != 1 || len(r.Refs) != 5 || r.Refs[0].Resolved {
		t.Errorf("record %v refs %+v, want only login and five pending refs", r.Record, r.Refs)
	}

	// A Resolver that cannot read records resolves the id only.
	r, err = m.MapUser(doc, testResolver{"id": {"boss": "u-boss"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Record) != 2 || r.Record["manager_id"] != "u-boss" {
		t.Errorf("record = %v, want login and manager_id only", r.Record)
	}
}

func TestReferenceFieldErrors(t *testing.T) {
	ref := func(field string) *Reference { return &Reference{Field: field} }
	tests := []struct {
		name  string
		rules []Rule
		at    string
		want  error
		text  string
	}{
		{"unknown", []Rule{{To: "login", From: StringList{"userName"}}, {To: "m", From: StringList{"manager.value"}, Reference: ref("logn")}},
			"user[1].reference.field", ErrUnknown, `unknown field "logn"`},
		{"itself", []Rule{{To: "m", From: StringList{"manager.value"}, Reference: ref("m")}},
			"user[0].reference.field", ErrInvalid, `field "m" is itself a reference`},
		{"another reference", []Rule{{To: "a", From: StringList{"manager.value"}, Reference: &Reference{}}, {To: "b", From: StringList{"manager.value"}, Reference: ref("a")}},
			"user[1].reference.field", ErrInvalid, `field "a" is itself a reference`},
		{"template of a reference", []Rule{
			{To: "a", From: StringList{"manager.value"}, Reference: &Reference{}},
			{To: "t", Transforms: Transforms{{Op: "template", Arg: "x{{u}}"}}},
			{To: "u", Transforms: Transforms{{Op: "template", Arg: "{{a}}"}}},
			{To: "b", From: StringList{"manager.value"}, Reference: ref("t")}},
			"user[3].reference.field", ErrInvalid, `field "t" is a template that reads a reference`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(Rules{User: tt.rules})
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tt.at || !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.text) {
				t.Errorf("Compile = %v, want a FieldError at %s wrapping %v saying %q", err, tt.at, tt.want, tt.text)
			}
		})
	}
	// A template that reads plain fields is fine.
	_, err := Compile(Rules{User: []Rule{
		{To: "login", From: StringList{"userName"}},
		{To: "t", Transforms: Transforms{{Op: "template", Arg: "<{{login}}>"}}},
		{To: "b", From: StringList{"manager.value"}, Reference: ref("t")}}})
	if err != nil {
		t.Errorf("Compile(reference to a template of plain fields) = %v", err)
	}
}
