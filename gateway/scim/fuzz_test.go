package scim

import (
	"encoding/json"
	"errors"
	"testing"
)

// checkErr asserts that err is a 400 *Error with a scimType (and, when
// want is set, that scimType).
func checkErr(t *testing.T, what string, err error, want string) {
	t.Helper()
	var se *Error
	if !errors.As(err, &se) {
		t.Fatalf("%s error %v (%T) is not a *scim.Error", what, err, err)
	}
	if se.Status != 400 || se.ScimType == "" || (want != "" && se.ScimType != want) || se.Detail == "" {
		t.Fatalf("%s error = %d %q %q, want 400 %s with a detail", what, se.Status, se.ScimType, se.Detail, want)
	}
}

var filterSeeds = []string{
	`userName eq "bjensen"`,
	`userName Eq "x" AND not (title pr) or emails[type eq "work" and value co "@x"]`,
	`emails[type eq "work"].value eq "x@example.com"`,
	`name.FamilyName eq Employee and (emails.Value co example.com or emails.Value co example.org)`,
	`meta.Created gt 2015-10-10T14:38:21.8617979-07:00`,
	`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq "m"`,
	`displayName eq "a \"b\" \u00e9 \ud83d\ude00"`,
	`loginCount ge -1.5e3 and active eq True and title eq null`,
	`((a pr))`, `not(a pr)`, `a eq`, `(`, `[`, `"`, `a[b[c pr]]`, `a eq "\`,
	"userName eq \"\x01\"", "a eq \xff", `x eq 1e999`,
}

func FuzzParseFilter(f *testing.F) {
	for _, s := range filterSeeds {
		f.Add(s)
	}
	user := mustDoc(f, sampleUser)
	rt := NewUserResourceType()
	f.Fuzz(func(t *testing.T, s string) {
		flt, err := ParseFilter(s)
		if err != nil {
			checkErr(t, "ParseFilter", err, InvalidFilter)
			return
		}
		_ = flt.Match(user, rt)
		_ = flt.Match(user, nil)
		if err := flt.Validate(rt); err != nil {
			checkErr(t, "Validate", err, InvalidFilter)
		}
		if p, _, ok := flt.Equality(); ok && p == nil {
			t.Fatalf("Equality() ok with nil path")
		}
		s1 := flt.String()
		if len(s1) > maxFilterLen {
			return // escaping can grow the text past the limit
		}
		g, err := ParseFilter(s1)
		if err != nil {
			t.Fatalf("ParseFilter(%q) = %v; it is the String() of ParseFilter(%q)", s1, err, s)
		}
		if s2 := g.String(); s2 != s1 {
			t.Fatalf("ParseFilter(%q).String() = %q, want %q", s1, s2, s1)
		}
	})
}

var pathSeeds = []string{
	"userName", "name.givenName", `members[value eq "2819c223"]`, `emails[type eq "work"].value`,
	"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
	"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User", "urn:acme:custom", "urn:x:1bad",
	"a.b.c", "emails[", "emails.value[type eq 1]", " x ", "$ref", "urn:",
}

func FuzzParsePath(f *testing.F) {
	for _, s := range pathSeeds {
		f.Add(s)
	}
	user := mustDoc(f, sampleUser)
	rt := NewUserResourceType()
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePath(s)
		if err != nil {
			checkErr(t, "ParsePath", err, InvalidPath)
			return
		}
		_ = p.Values(user)
		_ = rt.Lookup(p)
		s1 := p.String()
		if len(s1) > maxFilterLen {
			return
		}
		q, err := ParsePath(s1)
		if err != nil {
			t.Fatalf("ParsePath(%q) = %v; it is the String() of ParsePath(%q)", s1, err, s)
		}
		if s2 := q.String(); s2 != s1 {
			t.Fatalf("ParsePath(%q).String() = %q, want %q", s1, s2, s1)
		}
	})
}

var patchSeeds = []string{
	`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"active":false}}]}`,
	`{"Operations":[{"op":"Replace","path":"active","value":"False"}]}`,
	`{"Operations":[{"op":"Add","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager","value":"m"}]}`,
	`{"Operations":[{"op":"Replace","path":"emails[type eq \"work\"].value","value":"a@b.c"},{"op":"replace","value":{"name.givenName":"K","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber":"A"}}]}`,
	`{"Operations":[{"op":"Remove","path":"members","value":[{"value":"u1091"}]}]}`,
	`{"Operations":[{"op":"remove","path":"members[value eq \"x\"]"},{"op":"add","path":"members","value":[{"value":"y","display":"d"}]}]}`,
	`{"Operations":[{"op":"add","path":"emails","value":[{"value":"b","primary":"True"}]}]}`,
	`{"Operations":[{"op":"remove","path":"userName"}]}`,
	`{"Operations":[{"op":"add","value":{"urn:acme:custom":{"x":"1"}}}]}`,
	`{"Operations":[{"op":"replace","path":"name","value":{"givenName":null}}]}`,
	`{"Operations":[{"op":"add","path":"addresses[type eq \"work\" and primary eq true]","value":{"region":"R"}}]}`,
	`{"Operations":[{"op":"replace","path":"emails.type","value":"other"},{"op":"remove","path":"emails.type"}]}`,
	`{"Operations":[]}`, `[]`, `{`, `{"Operations":[{"op":1}]}`,
}

func FuzzParsePatch(f *testing.F) {
	for _, s := range patchSeeds {
		f.Add([]byte(s))
	}
	user := mustDoc(f, sampleUser)
	group := mustDoc(f, sampleGroup)
	userBefore, groupBefore := canon(f, user), canon(f, group)
	users, groups := NewUserResourceType(), NewGroupResourceType()
	f.Fuzz(func(t *testing.T, body []byte) {
		ops, err := ParsePatch(body)
		if err != nil {
			checkErr(t, "ParsePatch", err, "")
			return
		}
		for _, op := range ops {
			if op.Path == nil {
				continue
			}
			s1 := op.Path.String()
			if len(s1) > maxFilterLen {
				continue
			}
			if q, err := ParsePath(s1); err != nil || q.String() != s1 {
				t.Fatalf("ParsePath(%q) = %v, %v; want round trip", s1, q, err)
			}
		}
		opsBefore := canon(t, opValues(ops))
		for _, c := range []struct {
			doc map[string]any
			rt  *ResourceType
		}{{user, users}, {group, groups}, {user, nil}} {
			got, err := ApplyPatch(c.doc, ops, c.rt)
			if err != nil {
				checkErr(t, "ApplyPatch", err, "")
				continue
			}
			if _, err := json.Marshal(got); err != nil {
				t.Fatalf("ApplyPatch result does not marshal: %v", err)
			}
			// The result must not share maps or slices with the operations.
			taint(got)
			if canon(t, opValues(ops)) != opsBefore {
				t.Fatalf("ApplyPatch result aliases operation values")
			}
		}
		if canon(t, user) != userBefore || canon(t, group) != groupBefore {
			t.Fatalf("ApplyPatch modified its input document")
		}
	})
}

func FuzzNormalize(f *testing.F) {
	f.Add([]byte(sampleUser))
	f.Add([]byte(`{"userName":123,"active":"True","emails":"x","urn:x:y":{"a":null}}`))
	users := NewUserResourceType()
	f.Fuzz(func(t *testing.T, body []byte) {
		var doc map[string]any
		if json.Unmarshal(body, &doc) != nil {
			return
		}
		got, err := Normalize(doc, users)
		if err != nil {
			checkErr(t, "Normalize", err, InvalidValue)
			return
		}
		_ = Project(got, users, []string{"userName", "emails[type eq \"work\"].value"}, nil)
		_ = Project(got, users, nil, []string{"name.givenName", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"})
	})
}

func opValues(ops []Operation) []any {
	vs := make([]any, len(ops))
	for i, op := range ops {
		vs[i] = op.Value
	}
	return vs
}

// taint marks every object and array in v.
func taint(v any) {
	switch x := v.(type) {
	case map[string]any:
		for _, e := range x {
			taint(e)
		}
		x["\x00tainted"] = true
	case []any:
		for i, e := range x {
			taint(e)
			x[i] = e
		}
		if len(x) > 0 {
			x[0] = "tainted"
		}
	}
}
