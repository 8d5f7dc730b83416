package scim

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// secret is the password of the reproductions; no result or error detail
// may contain it.
const secret = "Secr3t-Pa55"

// applyJSON parses body and applies it to doc.
func applyJSON(t *testing.T, doc, body string, rt *ResourceType, lim Limits) (map[string]any, error) {
	t.Helper()
	ops, err := ParsePatchLimits([]byte(body), lim)
	if err != nil {
		t.Fatalf("ParsePatchLimits(%s): %v", body, err)
	}
	return ApplyPatchLimits(mustDoc(t, doc), ops, rt, lim)
}

// A password arrives qualified with the core URN, in POST,
// PUT and PATCH with and without path. It is accepted and never stored.
func TestPasswordNeverStored(t *testing.T) {
	users := NewUserResourceType()
	for _, body := range []string{
		`{"userName":"u","password":"` + secret + `"}`,
		`{"userName":"u","PassWord":"` + secret + `"}`,
		`{"userName":"u","urn:ietf:params:scim:schemas:core:2.0:User":{"password":"` + secret + `"}}`,
		`{"userName":"u","URN:IETF:PARAMS:SCIM:SCHEMAS:CORE:2.0:USER":{"Password":"` + secret + `"}}`,
		`{"userName":"u","urn:ietf:params:scim:schemas:core:2.0:User:password":"` + secret + `"}`,
		`{"userName":"u","password":12345}`,
		`{"userName":"u","password":{"value":"` + secret + `"}}`,
	} {
		got, err := Normalize(mustDoc(t, body), users)
		if err != nil {
			t.Errorf("Normalize(%s) error = %v, want the password dropped", body, err)
			continue
		}
		if g := canon(t, got); g != `{"userName":"u"}` {
			t.Errorf("Normalize(%s) = %s, want {\"userName\":\"u\"}", body, g)
		}
	}
	for _, ops := range []string{
		`{"op":"replace","value":{"password":"` + secret + `"}}`,
		`{"op":"replace","path":"password","value":"` + secret + `"}`,
		`{"op":"add","path":"urn:ietf:params:scim:schemas:core:2.0:User:password","value":"` + secret + `"}`,
		`{"op":"replace","value":{"urn:ietf:params:scim:schemas:core:2.0:User":{"password":"` + secret + `"}}}`,
		`{"op":"replace","value":{"urn:ietf:params:scim:schemas:core:2.0:User:password":"` + secret + `"}}`,
		`{"op":"replace","value":{"urn:ietf:params:scim:schemas:core:2.0:User:password":{"x":"` + secret + `"}}}`,
		`{"op":"replace","path":"urn:ietf:params:scim:schemas:core:2.0:User","value":{"password":"` + secret + `"}}`,
		`{"op":"replace","path":"password","value":12345}`,
		`{"op":"remove","path":"password"}`,
	} {
		body := `{"Operations":[` + ops + `]}`
		got, err := applyJSON(t, `{"userName":"u"}`, body, users, Limits{})
		if err != nil {
			t.Errorf("ApplyPatch(%s) error = %v, want the password dropped", body, err)
			continue
		}
		if g := canon(t, got); g != `{"userName":"u"}` {
			t.Errorf("ApplyPatch(%s) = %s, want {\"userName\":\"u\"}", body, g)
		}
	}
	// A release-1 record that holds a password under the core URN: not
	// rendered, and gone from storage at the next PATCH (the store
	// normalises the result).
	stored := mustDoc(t, `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"id":"1","userName":"u","urn:ietf:params:scim:schemas:core:2.0:User":{"password":"`+secret+`"}}`)
	if g := canon(t, Project(stored, users, nil, nil)); strings.Contains(g, secret) {
		t.Errorf("Project rendered a stored password: %s", g)
	}
	next, err := ApplyPatch(stored, []Operation{{Op: "replace", Path: &Path{Attr: "title"}, Value: "T"}}, users)
	if err == nil {
		next, err = Normalize(next, users)
	}
	if err != nil || strings.Contains(canon(t, next), secret) {
		t.Errorf("PATCH of a record with a stored password = %v, %v; want it dropped", next, err)
	}
}

// Error details never quote the value of a write-only or unknown attribute
// (the release-1 detail for a core-URN-qualified password quoted it).
func TestErrorsDoNotQuoteValues(t *testing.T) {
	users := NewUserResourceType()
	for _, body := range []string{
		`{"userName":"u","urn:ietf:params:scim:schemas:extension:acme:2.0:User":"` + secret + `"}`,
		`{"userName":"u","urn:ietf:params:scim:schemas:core:2.0:User":"` + secret + `"}`,
		`{"userName":"u","urn:ietf:params:scim:schemas:core:2.0:User:name.givenName":"` + secret + `"}`,
		`{"userName":"u","urn:ietf:params:scim:schemas:core:2.0:Group":"` + secret + `"}`,
	} {
		_, err := Normalize(mustDoc(t, body), users)
		if err == nil {
			t.Errorf("Normalize(%s) accepted it", body)
			continue
		}
		if se := scimErr(t, err); se.Status != 400 || se.ScimType != InvalidValue || strings.Contains(se.Detail, secret) {
			t.Errorf("Normalize(%s) error = %d %s %q, want 400 invalidValue without the value", body, se.Status, se.ScimType, se.Detail)
		}
	}
	for _, ops := range []string{
		`{"op":"replace","value":"` + secret + `"}`,
		`{"op":"replace","path":"secretThing[type eq \"x\"]","value":"` + secret + `"}`,
		`{"op":"add","path":"urn:ietf:params:scim:schemas:extension:acme:2.0:User","value":"` + secret + `"}`,
		`{"op":"add","path":"urn:ietf:params:scim:schemas:core:2.0:User","value":"` + secret + `"}`,
		`{"op":"add","value":{"urn:ietf:params:scim:schemas:core:2.0:User":"` + secret + `"}}`,
	} {
		body := `{"Operations":[` + ops + `]}`
		_, err := applyJSON(t, `{"userName":"u","secretThing":[{"type":"x","v":"1"}]}`, body, users, Limits{})
		if err == nil {
			t.Errorf("ApplyPatch(%s) accepted it", body)
			continue
		}
		if se := scimErr(t, err); se.Status != 400 || strings.Contains(se.Detail, secret) {
			t.Errorf("ApplyPatch(%s) error = %d %q, want 400 without the value", body, se.Status, se.Detail)
		}
	}
	// Known attributes still say what was sent: it helps the admin.
	_, err := Normalize(mustDoc(t, `{"userName":"u","active":"maybe"}`), users)
	if se := scimErr(t, err); !strings.Contains(se.Detail, `"maybe"`) {
		t.Errorf("Normalize active error %q does not quote the wrong value of a known attribute", se.Detail)
	}
}

// The core URN is the core namespace; declared extensions take qualified
// keys; the other core schema's URN is no namespace of a User.
func TestNormalizeCoreURN(t *testing.T) {
	users := NewUserResourceType()
	groups := NewGroupResourceType()
	tests := []struct {
		name string
		rt   *ResourceType
		in   string
		want string
	}{
		{"core object merges", users, `{"userName":"u","urn:ietf:params:scim:schemas:core:2.0:User":{"title":"T","NAME":{"givenName":"G"},"id":"x","schemas":["y"]}}`,
			`{"userName":"u","title":"T","name":{"givenName":"G"}}`},
		{"core-qualified keys", users, `{"urn:ietf:params:scim:schemas:core:2.0:User:userName":"u","urn:ietf:params:scim:schemas:core:2.0:User:active":"True"}`,
			`{"userName":"u","active":true}`},
		{"group core object", groups, `{"urn:ietf:params:scim:schemas:core:2.0:Group":{"displayName":"G"}}`, `{"displayName":"G"}`},
		{"extension-qualified keys", users, `{"userName":"u","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department":"D","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"costCenter":"C"}}`,
			`{"userName":"u","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"costCenter":"C","department":"D"}}`},
		{"extension-qualified manager string", users, `{"userName":"u","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager":"m"}`,
			`{"userName":"u","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"manager":{"value":"m"}}}`},
		{"group URN on a user is an undeclared extension", users, `{"userName":"u","urn:ietf:params:scim:schemas:core:2.0:Group":{"displayName":"G"}}`,
			`{"userName":"u","urn:ietf:params:scim:schemas:core:2.0:Group":{"displayName":"G"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Normalize(mustDoc(t, tt.in), tt.rt)
			if err != nil {
				t.Fatalf("Normalize(%s) error = %v", tt.in, err)
			}
			if g, w := canon(t, got), canonJSON(t, tt.want); g != w {
				t.Errorf("Normalize(%s)\n = %s\nwant %s", tt.in, g, w)
			}
		})
	}
	for _, in := range []string{
		`{"userName":"u","urn:ietf:params:scim:schemas:core:2.0:User":{"userName":"v"}}`,
		`{"userName":"u","urn:ietf:params:scim:schemas:core:2.0:User:USERNAME":"v"}`,
		`{"userName":"u","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"D"},"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department":"E"}`,
	} {
		_, err := Normalize(mustDoc(t, in), users)
		if err == nil || !strings.Contains(scimErr(t, err).Detail, "given twice") {
			t.Errorf("Normalize(%s) error = %v, want given twice", in, err)
		}
	}
}

func TestApplyPatchCoreURN(t *testing.T) {
	users := NewUserResourceType()
	got, err := applyJSON(t, `{"userName":"u"}`, `{"Operations":[
  {"op":"add","value":{"urn:ietf:params:scim:schemas:core:2.0:User":{"title":"T","id":"ignored"}}},
  {"op":"replace","path":"urn:ietf:params:scim:schemas:core:2.0:User","value":{"nickName":"N"}},
  {"op":"replace","value":{"urn:ietf:params:scim:schemas:core:2.0:User:displayName":"D"}}]}`, users, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if g, w := canon(t, got), `{"displayName":"D","nickName":"N","title":"T","userName":"u"}`; g != w {
		t.Errorf("ApplyPatch with the core URN = %s, want %s", g, w)
	}
	_, err = applyJSON(t, `{"userName":"u"}`, `{"Operations":[{"op":"remove","path":"urn:ietf:params:scim:schemas:core:2.0:User"}]}`, users, Limits{})
	if se := scimErr(t, err); se.ScimType != InvalidPath {
		t.Errorf("remove of the core URN = %v, want 400 invalidPath", err)
	}
}

// PATCH on "schemas" stores nothing. The IdPs' documented traffic
// (docs/okta.md, docs/entra.md) never sends it as a path, so it is refused;
// in a path-less value it is ignored, as before.
func TestApplyPatchSchemasPath(t *testing.T) {
	users := NewUserResourceType()
	for _, op := range []string{
		`{"op":"replace","path":"schemas","value":["urn:evil"]}`,
		`{"op":"add","path":"Schemas","value":"urn:evil"}`,
		`{"op":"remove","path":"schemas"}`,
		`{"op":"replace","path":"urn:ietf:params:scim:schemas:core:2.0:User:schemas","value":[]}`,
	} {
		_, err := applyJSON(t, `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"u"}`, `{"Operations":[`+op+`]}`, users, Limits{})
		if err == nil {
			t.Errorf("ApplyPatch(%s) accepted it", op)
			continue
		}
		if se := scimErr(t, err); se.ScimType != Mutability || !strings.Contains(se.Detail, `"schemas"`) {
			t.Errorf("ApplyPatch(%s) error = %s %q, want mutability naming \"schemas\"", op, se.ScimType, se.Detail)
		}
	}
	got, err := applyJSON(t, `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"u"}`,
		`{"Operations":[{"op":"replace","value":{"schemas":["urn:evil"],"title":"T"}}]}`, users, Limits{})
	if err != nil || canon(t, got["schemas"]) != `["urn:ietf:params:scim:schemas:core:2.0:User"]` {
		t.Errorf("path-less schemas = %v, %v; want it ignored", got, err)
	}
}

// The nesting bound, through PATCH: a value added at a nested path deepens the
// document past the limit although the body is within it.
func TestApplyPatchDepth(t *testing.T) {
	users := NewUserResourceType()
	value := strings.Repeat("[", 29) + strings.Repeat("]", 29) // body depth 3+29 = 32
	body := `{"Operations":[{"op":"add","path":"urn:ietf:params:scim:schemas:extension:acme:2.0:User:tags[type eq \"x\"].v","value":` + value + `}]}`
	_, err := applyJSON(t, `{"userName":"u"}`, body, users, Limits{})
	if err == nil {
		t.Fatalf("ApplyPatch made a document 33 levels deep")
	}
	if se := scimErr(t, err); se.Status != 400 || !strings.Contains(se.Detail, "scim.limits.max_depth") || !strings.Contains(se.Detail, "32") {
		t.Errorf("ApplyPatch error = %d %q, want 400 naming the limit", se.Status, se.Detail)
	}
	got, err := applyJSON(t, `{"userName":"u"}`, body, users, Limits{MaxDepth: 40})
	if err != nil || Depth(got, 40) != 33 {
		t.Errorf("ApplyPatchLimits(MaxDepth 40) = depth %d, %v; want 33, nil", Depth(got, 40), err)
	}
	// The body itself is bounded by the same limit.
	deep := `{"Operations":[{"op":"add","path":"x","value":` + strings.Repeat("[", 30) + strings.Repeat("]", 30) + `}]}`
	if _, err := ParsePatch([]byte(deep)); err == nil || !strings.Contains(err.Error(), "scim.limits.max_depth") {
		t.Errorf("ParsePatch of a 33-deep body = %v, want the depth error", err)
	}
	if _, err := ParsePatchLimits([]byte(deep), Limits{MaxDepth: 33}); err != nil {
		t.Errorf("ParsePatchLimits(MaxDepth 33) = %v", err)
	}
	for _, bad := range []string{"{\"Operations\":[{\"op\":\"add\",\"path\":\"title\",\"value\":\"a\xffb\"}]}",
		`{"Operations":[{"op":"add","path":"title","value":"\udead"}]}`} {
		_, err := ParsePatch([]byte(bad))
		if se := scimErr(t, err); se.ScimType != InvalidSyntax || !strings.Contains(se.Detail, "PATCH body") {
			t.Errorf("ParsePatch(%q) = %v, want invalidSyntax", bad, err)
		}
	}
}

// At most one primary per multi-valued attribute.
func TestOnePrimary(t *testing.T) {
	users := NewUserResourceType()
	got, err := Normalize(mustDoc(t, `{"userName":"u",
  "emails":[{"value":"a","primary":true},{"value":"b","primary":"True"},{"value":"c"},{"value":"d","primary":true}],
  "phoneNumbers":[{"value":"1","primary":false},{"value":"2","primary":true},{"value":"3","primary":true}]}`), users)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"emails":[{"primary":true,"value":"a"},{"primary":false,"value":"b"},{"value":"c"},{"primary":false,"value":"d"}],"phoneNumbers":[{"primary":false,"value":"1"},{"primary":true,"value":"2"},{"primary":false,"value":"3"}],"userName":"u"}`
	if g := canon(t, got); g != want {
		t.Errorf("Normalize with several primaries\n = %s\nwant %s", g, want)
	}
	doc := `{"userName":"u","emails":[{"value":"w","type":"work","primary":true},{"value":"h","type":"home"}]}`
	tests := []struct{ name, op, want string }{
		{"replace list keeps the first", `{"op":"replace","path":"emails","value":[{"value":"x","primary":true},{"value":"y","primary":true}]}`,
			`[{"primary":true,"value":"x"},{"primary":false,"value":"y"}]`},
		{"filtered primary takes over", `{"op":"replace","path":"emails[type eq \"home\"].primary","value":true}`,
			`[{"primary":false,"type":"work","value":"w"},{"primary":true,"type":"home","value":"h"}]`},
		{"filtered element replaced as primary", `{"op":"replace","path":"emails[type eq \"home\"]","value":{"value":"h2","type":"home","primary":true}}`,
			`[{"primary":false,"type":"work","value":"w"},{"primary":true,"type":"home","value":"h2"}]`},
		{"primary on every element keeps the first", `{"op":"replace","path":"emails.primary","value":true}`,
			`[{"primary":true,"type":"work","value":"w"},{"primary":false,"type":"home","value":"h"}]`},
		{"add of several primaries: the first takes over", `{"op":"add","path":"emails","value":[{"value":"p","primary":true},{"value":"q","primary":true}]}`,
			`[{"primary":false,"type":"work","value":"w"},{"type":"home","value":"h"},{"primary":true,"value":"p"},{"primary":false,"value":"q"}]`},
		{"path-less add", `{"op":"add","value":{"emails":[{"value":"p","primary":true}]}}`,
			`[{"primary":false,"type":"work","value":"w"},{"type":"home","value":"h"},{"primary":true,"value":"p"}]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := applyJSON(t, doc, `{"Operations":[`+tt.op+`]}`, users, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if g := canon(t, got["emails"]); g != tt.want {
				t.Errorf("emails = %s, want %s", g, tt.want)
			}
		})
	}
}

// The schemas attribute is rendered from the data and declared
// extensions; undeclared extension data stays stored but is not returned.
func TestProjectSchemas(t *testing.T) {
	custom := &Schema{ID: "urn:ietf:params:scim:schemas:extension:cybsafe:2.0:User", Name: "CybSafe",
		Attributes: []*Attribute{str("costCentre", "")}}
	users, groups := NewUserResourceType(custom), NewGroupResourceType()
	tests := []struct {
		name string
		rt   *ResourceType
		doc  string
		want string
	}{
		{"undeclared extension URN and data", users,
			`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:ietf:params:scim:schemas:extension:undeclared:2.0:User"],"id":"1","userName":"u",
  "urn:ietf:params:scim:schemas:extension:undeclared:2.0:User":{"x":"1"},"meta":{"resourceType":"User","version":"W/\"3\""}}`,
			`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"id":"1","userName":"u","meta":{"resourceType":"User","version":"W/\"3\""}}`},
		{"entra group URN", groups,
			`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group","http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"],"id":"g","displayName":"G"}`,
			`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"id":"g","displayName":"G"}`},
		{"group URN on a user", users, `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"id":"1","userName":"u"}`,
			`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"id":"1","userName":"u"}`},
		{"no schemas stored", groups, `{"id":"g","displayName":"G"}`, `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"id":"g","displayName":"G"}`},
		{"declared extensions present, in declaration order", users,
			`{"schemas":["urn:x"],"id":"1","userName":"u","URN:IETF:PARAMS:SCIM:SCHEMAS:EXTENSION:CYBSAFE:2.0:USER":{"costCentre":"42"},
  "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"D"}}`,
			`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User","urn:ietf:params:scim:schemas:extension:cybsafe:2.0:User"],
  "id":"1","userName":"u","urn:ietf:params:scim:schemas:extension:cybsafe:2.0:User":{"costCentre":"42"},"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"D"}}`},
		{"declared in schemas but absent", users, `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],"id":"1","userName":"u"}`,
			`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"id":"1","userName":"u"}`},
		{"keys with colons are not attributes", groups, `{"id":"g","displayName":"G","http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group":{"a":1}}`,
			`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"id":"g","displayName":"G"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := mustDoc(t, tt.doc)
			before := canon(t, doc)
			if g, w := canon(t, Project(doc, tt.rt, nil, nil)), canonJSON(t, tt.want); g != w {
				t.Errorf("Project(%s)\n = %s\nwant %s", tt.doc, g, w)
			}
			if canon(t, doc) != before {
				t.Errorf("Project modified doc")
			}
		})
	}
	// A PATCH that adds enterprise attributes makes the enterprise URN
	// appear; the stored (undeclared) data round-trips once declared.
	stored := mustDoc(t, `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"id":"1","userName":"u","urn:ietf:params:scim:schemas:extension:acme:2.0:User":{"x":"1"}}`)
	next, err := ApplyPatch(stored, []Operation{{Op: "add", Value: map[string]any{SchemaEnterpriseUser + ":department": "D"}}}, users)
	if err != nil {
		t.Fatal(err)
	}
	if got := canon(t, Project(next, users, nil, nil)["schemas"]); got != `["urn:ietf:params:scim:schemas:core:2.0:User","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]` {
		t.Errorf("schemas after the PATCH = %s", got)
	}
	acme := &Schema{ID: "urn:ietf:params:scim:schemas:extension:acme:2.0:User"}
	if got := canon(t, Project(next, NewUserResourceType(acme), nil, nil)); !strings.Contains(got, `"urn:ietf:params:scim:schemas:extension:acme:2.0:User":{"x":"1"}`) {
		t.Errorf("declared later, the stored extension is not rendered: %s", got)
	}
}

// Values count the same with and without a path, in POST
// and PUT bodies and at any depth.
func TestCountValues(t *testing.T) {
	tests := []struct {
		doc  string
		want int
	}{
		{`{"userName":"u"}`, 0},
		{`{"emails":[{"value":"a"},{"value":"b"}],"roles":[]}`, 2},
		{`{"a":[[1,2],[3]],"b":{"c":[{"d":[1]}]}}`, 2 + 2 + 1 + 1 + 1},
		{`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"members":[{"value":"1"},{"value":"2"},{"value":"3"}]}`, 4},
	}
	for _, tt := range tests {
		if got := CountValues(mustDoc(t, tt.doc)); got != tt.want {
			t.Errorf("CountValues(%s) = %d, want %d", tt.doc, got, tt.want)
		}
	}
	if got := CountValues("x"); got != 0 {
		t.Errorf("CountValues(scalar) = %d", got)
	}
	// The reproductions: 11,000 emails and 20,000 members without a path
	// count as with one.
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
	for _, c := range []struct {
		attr string
		n    int
	}{{"emails", 11000}, {"members", 20000}} {
		list := emails(c.n)
		pathed, err := ParsePatch([]byte(`{"Operations":[{"op":"add","path":"` + c.attr + `","value":` + list + `}]}`))
		if err != nil {
			t.Fatal(err)
		}
		for _, body := range []string{
			`{"Operations":[{"op":"add","value":{"` + c.attr + `":` + list + `}}]}`,
			`{"Operations":[{"op":"add","value":{"urn:ietf:params:scim:schemas:core:2.0:Group:` + c.attr + `":` + list + `}}]}`,
			`{"Operations":[{"op":"add","value":{"urn:ietf:params:scim:schemas:core:2.0:Group":{"` + c.attr + `":` + list + `}}}]}`,
		} {
			ops, err := ParsePatch([]byte(body))
			if err != nil {
				t.Fatal(err)
			}
			if got, want := CountPatchValues(ops), CountPatchValues(pathed); got != want || got != c.n {
				t.Errorf("CountPatchValues(path-less %s ×%d) = %d, pathed %d, want %d", c.attr, c.n, got, want, c.n)
			}
			if got, want := CountPatchAttrValues(ops, c.attr), CountPatchAttrValues(pathed, c.attr); got != want || got != c.n {
				t.Errorf("CountPatchAttrValues(path-less %s ×%d) = %d, pathed %d, want %d", c.attr, c.n, got, want, c.n)
			}
			if got := CountPatchAttrValues(ops, "other"); got != 0 {
				t.Errorf("CountPatchAttrValues(other) = %d", got)
			}
		}
		doc, err := DecodeObject([]byte(`{"displayName":"g","`+c.attr+`":`+list+`}`), 0)
		if err != nil || CountValues(doc) != c.n {
			t.Errorf("CountValues(POST body with %d %s) = %d, %v", c.n, c.attr, CountValues(doc), err)
		}
	}
	ops, _ := ParsePatch([]byte(`{"Operations":[{"op":"add","path":"members","value":"one"},{"op":"remove","path":"members[value eq \"x\"]"},{"op":"add","path":"urn:ietf:params:scim:schemas:core:2.0:Group:members","value":[{"value":"a"},{"value":"b"}]}]}`))
	if got := CountPatchAttrValues(ops, "members"); got != 3 {
		t.Errorf("CountPatchAttrValues(mixed) = %d, want 3", got)
	}
}

func TestSplitAttr(t *testing.T) {
	groups := NewGroupResourceType()
	tests := []struct {
		in, value, rest string
		found           bool
	}{
		{`{"displayName":"g","members":[{"value":"a"}]}`, `[{"value":"a"}]`, `{"displayName":"g"}`, true},
		{`{"displayName":"g","MEMBERS":[]}`, `[]`, `{"displayName":"g"}`, true},
		{`{"displayName":"g"}`, `null`, `{"displayName":"g"}`, false},
		{`{"urn:ietf:params:scim:schemas:core:2.0:Group:members":[{"value":"a"}],"displayName":"g"}`, `[{"value":"a"}]`, `{"displayName":"g"}`, true},
		{`{"urn:ietf:params:scim:schemas:core:2.0:Group":{"members":"a","displayName":"g"}}`, `"a"`,
			`{"urn:ietf:params:scim:schemas:core:2.0:Group":{"displayName":"g"}}`, true},
		{`{"urn:ietf:params:scim:schemas:extension:x:2.0:Group":{"members":"a"}}`, `null`, `{"urn:ietf:params:scim:schemas:extension:x:2.0:Group":{"members":"a"}}`, false},
	}
	for _, tt := range tests {
		in := mustDoc(t, tt.in)
		before := canon(t, in)
		v, found, rest, err := SplitAttr(in, "members", groups)
		if err != nil || found != tt.found || canon(t, v) != tt.value || canon(t, rest) != canonJSON(t, tt.rest) {
			t.Errorf("SplitAttr(%s) = %s, %v, %s, %v; want %s, %v, %s", tt.in, canon(t, v), found, canon(t, rest), err, tt.value, tt.found, tt.rest)
		}
		if canon(t, in) != before {
			t.Errorf("SplitAttr modified its input")
		}
	}
	_, _, _, err := SplitAttr(mustDoc(t, `{"members":[],"urn:ietf:params:scim:schemas:core:2.0:Group:members":[]}`), "members", groups)
	if err == nil || !strings.Contains(err.Error(), "given twice") {
		t.Errorf("SplitAttr of members given twice = %v", err)
	}
}

// /Schemas renders these definitions; it must say what
// the gateway does.
func TestSchemasSayWhatIsEnforced(t *testing.T) {
	b, err := json.Marshal(GroupSchema.Attr("displayName"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"uniqueness":"server"`) {
		t.Errorf("Group displayName = %s, want uniqueness server (409 on a duplicate)", b)
	}
	for _, a := range []*Attribute{GroupSchema.Attr("members"), UserSchema.Attr("groups")} {
		b, _ := json.Marshal(a)
		if strings.Contains(string(b), `"$ref"`) {
			t.Errorf("%s advertises $ref, which is never returned: %s", a.Name, b)
		}
	}
	// Members keep their other sub-attributes and a $ref sent by Entra is
	// still accepted (generically) and dropped when null.
	got, err := Normalize(mustDoc(t, `{"displayName":"g","members":[{"value":"u","$ref":"https://x/Users/u","display":"d"}]}`), NewGroupResourceType())
	if err != nil || canon(t, got) != `{"displayName":"g","members":[{"$ref":"https://x/Users/u","display":"d","value":"u"}]}` {
		t.Errorf("Normalize(members with $ref) = %s, %v", canon(t, got), err)
	}
	// displayName is an identifier now: a number is refused like userName.
	if _, err := Normalize(mustDoc(t, `{"displayName":42}`), NewGroupResourceType()); err == nil {
		t.Errorf("Group displayName as a number accepted")
	}
}
