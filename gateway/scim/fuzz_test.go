package scim

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"unicode/utf8"
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
	f.Add([]byte(`{"userName":"u","urn:ietf:params:scim:schemas:core:2.0:User":{"password":"p","title":"T"},"urn:ietf:params:scim:schemas:core:2.0:User:password":"p"}`))
	f.Add([]byte(`{"userName":"u","emails":[{"value":"a","primary":true},{"value":"b","primary":"True"}],"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department":"D"}`))
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
		checkStored(t, "Normalize", got, users)
		_ = Project(got, users, []string{"userName", "emails[type eq \"work\"].value"}, nil)
		_ = Project(got, users, nil, []string{"name.givenName", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"})
		checkRendered(t, Project(got, users, nil, nil), users)
	})
}

// checkStored asserts what Normalize guarantees for storage: no password
// however qualified, at most one primary per multi-valued attribute.
func checkStored(t *testing.T, what string, doc map[string]any, rt *ResourceType) {
	t.Helper()
	for k, v := range doc {
		if strings.EqualFold(k, "password") || strings.EqualFold(k, rt.Schema.ID+":password") {
			t.Fatalf("%s kept %s", what, k)
		}
		if m, ok := v.(map[string]any); ok && isOwnCore(k, rt) {
			if _, ok := Get(m, "password"); ok {
				t.Fatalf("%s kept a password under %s", what, k)
			}
		}
		def := rt.Schema.Attr(k)
		if list, ok := v.([]any); ok && def != nil && def.MultiValued && def.Sub("primary") != nil {
			n := 0
			for _, e := range list {
				if isPrimary(e) {
					n++
				}
			}
			if n > 1 {
				t.Fatalf("%s kept %d primary %s", what, n, k)
			}
		}
	}
}

// checkRendered asserts what Project guarantees: schemas is the core URN
// then declared extensions present, and nothing else carries a ':'.
func checkRendered(t *testing.T, out map[string]any, rt *ResourceType) {
	t.Helper()
	schemas, _ := out["schemas"].([]any)
	if len(schemas) == 0 || schemas[0] != rt.Schema.ID {
		t.Fatalf("Project schemas = %v, want %s first", out["schemas"], rt.Schema.ID)
	}
	for _, s := range schemas[1:] {
		id, _ := s.(string)
		if rt.Extension(id) == nil || out[id] == nil {
			t.Fatalf("Project schemas lists %v, which is not a declared extension present in %v", s, out)
		}
	}
	for k := range out {
		if strings.IndexByte(k, ':') >= 0 && rt.Extension(k) == nil {
			t.Fatalf("Project rendered undeclared %s", k)
		}
		if strings.EqualFold(k, "password") {
			t.Fatalf("Project rendered %s", k)
		}
	}
}

var decodeSeeds = []string{
	sampleUser, sampleGroup,
	string(deepBody(40)), string(deepBody(33)), string(deepBody(32)),
	`{"displayName":"\ud800"}`, `{"a":"\udc00\ud800"}`, `{"a":"\ud83d\ude00"}`, `{"a":"\ud83d`,
	"{\"userName\":\"ada\xff\"}", "{\"a\":\"\xed\xa0\x80\"}", "{\"a\":1\xff}",
	`{"a":"[[[{{{\"\\"}`, `{"a":1} {}`, `[]`, `null`, ``, `{"n":12345678901234567890,"f":-0.0e-0}`,
}

// FuzzDecodeObject: never panics; errors are 400 invalidSyntax; an
// accepted document is an object within the depth limit whose strings are
// valid UTF-8, equal to what encoding/json decodes from the same bytes (so
// nothing was replaced), and it re-encodes and decodes back the same.
func FuzzDecodeObject(f *testing.F) {
	for _, s := range decodeSeeds {
		f.Add([]byte(s), uint8(0))
	}
	f.Add([]byte(`{"a":[[{"b":[]}]]}`), uint8(4))
	f.Fuzz(func(t *testing.T, body []byte, limit uint8) {
		max := int(limit % 40)
		doc, err := DecodeObject(body, max)
		if err != nil {
			checkErr(t, "DecodeObject", err, InvalidSyntax)
			return
		}
		if max <= 0 {
			max = DefaultMaxDepth
		}
		if doc == nil || Depth(doc, max) > max {
			t.Fatalf("DecodeObject accepted a document %d deep with limit %d", Depth(doc, max), max)
		}
		if !json.Valid(body) {
			t.Fatalf("DecodeObject accepted invalid JSON %q", body)
		}
		walkStrings(doc, func(s string) {
			if !utf8.ValidString(s) {
				t.Fatalf("DecodeObject kept invalid UTF-8 %q", s)
			}
		})
		std := json.NewDecoder(bytes.NewReader(body))
		std.UseNumber()
		var want map[string]any
		if err := std.Decode(&want); err != nil {
			t.Fatalf("encoding/json refuses what DecodeObject accepted: %v", err)
		}
		got := canon(t, doc)
		if w := canon(t, want); got != w {
			t.Fatalf("DecodeObject = %s, encoding/json = %s", got, w)
		}
		again, err := DecodeObject([]byte(got), max)
		if err != nil || canon(t, again) != got {
			t.Fatalf("re-decoding %s = %v, %v", got, again, err)
		}
	})
}

func walkStrings(v any, fn func(string)) {
	switch x := v.(type) {
	case string:
		fn(x)
	case map[string]any:
		for k, e := range x {
			fn(k)
			walkStrings(e, fn)
		}
	case []any:
		for _, e := range x {
			walkStrings(e, fn)
		}
	}
}

// countArrayValues counts the values directly inside arrays from the JSON
// tokens, independently of CountValues; -1 when an object repeats a key
// (decoding keeps the last value, so the tokens over-count).
func countArrayValues(t *testing.T, body []byte) int {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	type level struct {
		array, wantKey bool
		keys           map[string]bool
	}
	var stack []level
	n := 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return n
		}
		if err != nil {
			t.Fatalf("token: %v", err)
		}
		if d, ok := tok.(json.Delim); ok && (d == ']' || d == '}') {
			stack = stack[:len(stack)-1]
			continue
		}
		if len(stack) > 0 {
			top := &stack[len(stack)-1]
			switch {
			case top.array:
				n++
			case top.wantKey:
				top.wantKey = false
				k := tok.(string)
				if top.keys[k] {
					return -1
				}
				top.keys[k] = true
				continue
			default:
				top.wantKey = true
			}
		}
		if d, ok := tok.(json.Delim); ok {
			stack = append(stack, level{array: d == '[', wantKey: d == '{', keys: map[string]bool{}})
		}
	}
}

// FuzzCountValues: CountValues of a decoded body equals the number of array
// values in its tokens; the PATCH counts never panic and agree with it.
func FuzzCountValues(f *testing.F) {
	for _, s := range decodeSeeds {
		f.Add([]byte(s))
	}
	for _, s := range patchSeeds {
		f.Add([]byte(s))
	}
	f.Add([]byte(`{"Operations":[{"op":"add","value":{"members":[{"value":"a"},{"value":"b"}]}},{"op":"add","path":"members","value":"c"}]}`))
	f.Add([]byte(`{"":[{}],"":{}}`)) // a repeated key: decoding keeps the last
	f.Fuzz(func(t *testing.T, body []byte) {
		doc, err := DecodeObject(body, 0)
		if err != nil {
			return
		}
		if got, want := CountValues(doc), countArrayValues(t, body); want >= 0 && got != want {
			t.Fatalf("CountValues = %d, want %d (from the tokens of %s)", got, want, body)
		}
		ops, err := ParsePatch(body)
		if err != nil {
			return
		}
		all := CountPatchValues(ops)
		if ops, _ := Get(doc, "Operations"); all > CountValues(ops) {
			t.Fatalf("CountPatchValues = %d, more than the body's %d", all, CountValues(ops))
		}
		if m := CountPatchAttrValues(ops, "members"); m < 0 || m > all+len(ops)*2 {
			t.Fatalf("CountPatchAttrValues = %d with %d values in %d operations", m, all, len(ops))
		}
	})
}

// FuzzApplyPatchDecoded runs the store's sequence on decoded input:
// DecodeObject, Normalize, ParsePatchLimits, ApplyPatchLimits, Normalize,
// Project. Never panics; every error is a 400 *Error; the result is within
// the depth limit, marshals, holds no password and renders valid schemas;
// the input is not modified.
func FuzzApplyPatchDecoded(f *testing.F) {
	deepValue := strings.Repeat("[", 29) + strings.Repeat("]", 29)
	for _, c := range [][2]string{
		{sampleUser, patchSeeds[0]},
		{sampleUser, `{"Operations":[{"op":"replace","value":{"urn:ietf:params:scim:schemas:core:2.0:User":{"password":"p","title":"T"}}}]}`},
		{sampleUser, `{"Operations":[{"op":"add","path":"urn:ietf:params:scim:schemas:core:2.0:User:password","value":"p"}]}`},
		{sampleUser, `{"Operations":[{"op":"replace","path":"schemas","value":[]}]}`},
		{sampleUser, `{"Operations":[{"op":"replace","path":"emails[type eq \"home\"].primary","value":true}]}`},
		{sampleUser, `{"Operations":[{"op":"add","path":"urn:ietf:params:scim:schemas:extension:acme:2.0:User:tags[type eq \"x\"].v","value":` + deepValue + `}]}`},
		{sampleUser, `{"Operations":[{"op":"add","value":{"emails":[{"value":"x","primary":true},{"value":"y","primary":true}]}}]}`},
		{sampleGroup, `{"Operations":[{"op":"add","path":"members","value":[{"value":"u1091","display":"z"},{"value":"n"}]}]}`},
		{string(deepBody(32)), `{"Operations":[{"op":"add","path":"x","value":[1]}]}`},
		{`{"userName":"u","urn:ietf:params:scim:schemas:core:2.0:User":{"password":"p"}}`, `{"Operations":[{"op":"remove","path":"title"}]}`},
	} {
		f.Add([]byte(c[0]), []byte(c[1]))
	}
	users, groups := NewUserResourceType(), NewGroupResourceType()
	f.Fuzz(func(t *testing.T, docBody, patchBody []byte) {
		doc, err := DecodeObject(docBody, 0)
		if err != nil {
			return
		}
		ops, err := ParsePatchLimits(patchBody, Limits{})
		if err != nil {
			checkErr(t, "ParsePatchLimits", err, "")
			return
		}
		for _, rt := range []*ResourceType{users, groups} {
			stored, err := Normalize(doc, rt)
			if err != nil {
				checkErr(t, "Normalize", err, InvalidValue)
				continue
			}
			before := canon(t, stored)
			got, err := ApplyPatchLimits(stored, ops, rt, Limits{})
			if canon(t, stored) != before {
				t.Fatalf("ApplyPatchLimits modified its input")
			}
			if err != nil {
				checkErr(t, "ApplyPatchLimits", err, "")
				continue
			}
			if d := Depth(got, DefaultMaxDepth); d > DefaultMaxDepth {
				t.Fatalf("ApplyPatchLimits result is %d deep", d)
			}
			if _, err := json.Marshal(got); err != nil {
				t.Fatalf("ApplyPatchLimits result does not marshal: %v", err)
			}
			if _, ok := Get(got, "password"); ok && rt == users {
				t.Fatalf("ApplyPatchLimits stored a password: %s", canon(t, got))
			}
			next, err := Normalize(got, rt)
			if err != nil {
				checkErr(t, "Normalize after PATCH", err, InvalidValue)
				continue
			}
			checkStored(t, "Normalize after PATCH", next, rt)
			checkRendered(t, Project(next, rt, nil, nil), rt)
		}
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
