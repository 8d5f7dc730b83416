package gateway_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"unicode"
)

// defaultIgnorable is Unicode's derived Default_Ignorable_Code_Point
// (DerivedCoreProperties.txt: Other_Default_Ignorable_Code_Point + Cf +
// Variation_Selector - White_Space - FFF9..FFFB - Egyptian format controls
// - Prepended_Concatenation_Mark), built here from the unicode package's
// property tables independently of the store's code.
func defaultIgnorable(r rune) bool {
	if !unicode.In(r, unicode.Other_Default_Ignorable_Code_Point, unicode.Cf, unicode.Variation_Selector) {
		return false
	}
	return !unicode.In(r, unicode.White_Space, unicode.Prepended_Concatenation_Mark) &&
		!(0xfff9 <= r && r <= 0xfffb) && !(0x13430 <= r && r <= 0x1343f)
}

// An identifier holding any Default_Ignorable_Code_Point
// — the U+034F, U+3164, U+FE0F, the Hangul fillers, variation
// selectors — is refused with 400 invalidValue naming the attribute and
// the code point, through the real server, so no look-alike userName,
// email or group name can be stored; the same names without them still
// work.
func TestDefaultIgnorableIdentifiers(t *testing.T) {
	ts := newTestServer(t)
	ts.do("POST", "/Users", `{`+coreUser+`,"userName":"ada@example.com"}`).must(t, 201)
	examples := []rune{0x034f, 0x3164, 0xfe0f, 0xfe00, 0x115f, 0x1160, 0xffa0, 0x180b, 0x180f, 0xe0100, 0xe01ef, 0xe0001, 0xe0041, 0x2065, 0xfff0, 0x17b4, 0x00ad}
	for _, r := range examples {
		if !defaultIgnorable(r) {
			t.Fatalf("U+%04X is not Default_Ignorable_Code_Point: fix the test", r)
		}
		name, _ := json.Marshal("ad" + string(r) + "a@example.com")
		detail := ts.do("POST", "/Users", `{`+coreUser+`,"userName":`+string(name)+`}`).scimError(t, 400, "invalidValue")
		if want := fmt.Sprintf("U+%04X", r); !strings.Contains(detail, "userName") || !strings.Contains(detail, want) {
			t.Errorf("U+%04X in userName: detail %q should name userName and %s", r, detail, want)
		}
		email, _ := json.Marshal("grace" + string(r) + "@example.com")
		ts.do("POST", "/Users", `{`+coreUser+`,"userName":"grace@example.com","emails":[{"value":`+string(email)+`}]}`).scimError(t, 400, "invalidValue")
		group, _ := json.Marshal("admins" + string(r))
		ts.do("POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":`+string(group)+`}`).scimError(t, 400, "invalidValue")
	}
	// Every Default_Ignorable_Code_Point, not only the examples: a PATCH
	// of userName to "x<rune>y" is refused for each (one request per run
	// of 200 runes would hide which one passed, so each is checked on its
	// own; about 4,200 runes, PATCH refusals write nothing).
	u := ts.do("POST", "/Users", `{`+coreUser+`,"userName":"patched@example.com"}`).must(t, 201).body["id"].(string)
	passed := 0
	for r := rune(0x80); r <= unicode.MaxRune; r++ {
		if !defaultIgnorable(r) {
			continue
		}
		v, _ := json.Marshal("x" + string(r) + "y")
		resp := ts.do("PATCH", "/Users/"+u, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"userName","value":`+string(v)+`}]}`)
		if resp.status != 400 {
			if passed++; passed <= 5 {
				t.Errorf("userName with U+%04X: %d, want 400", r, resp.status)
			}
		}
	}
	if passed > 0 {
		t.Errorf("%d Default_Ignorable_Code_Points accepted in userName", passed)
	}
	ts.do("POST", "/Users", `{`+coreUser+`,"userName":"grace@example.com","emails":[{"value":"grace@example.com"}]}`).must(t, 201)
}

// NUL and the other control characters (but TAB, LF and
// CR) are refused in every string attribute, not only in identifiers, with
// 400 invalidValue naming the attribute; the refused write changes
// nothing. A multi-line address and a tab are kept.
func TestControlCharactersInStrings(t *testing.T) {
	ts := newTestServer(t)
	const ent = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
	for _, tc := range []struct{ body, attr, cp string }{
		{`"displayName":"Ada\u0000Lovelace"`, "displayName", "U+0000"},
		{`"name":{"givenName":"A\u0007da","familyName":"Lovelace"}`, "name.givenName", "U+0007"},
		{`"title":"Countess\u001b[31m"`, "title", "U+001B"},
		{`"nickName":"Ada\u007f"`, "nickName", "U+007F"},
		{`"displayName":"Ada\u0085"`, "displayName", "U+0085"},
		{`"emails":[{"value":"ada@example.com","type":"work\u0000"}]`, "emails[0].type", "U+0000"},
		{`"addresses":[{"formatted":"1 Main St\u0000","type":"work"}]`, "addresses[0].formatted", "U+0000"},
		{`"` + ent + `":{"department":"R\u0000D"}`, ent + ":department", "U+0000"},
	} {
		body := `{` + coreUser + `,"userName":"ada@example.com",` + tc.body + `}`
		detail := ts.do("POST", "/Users", body).scimError(t, 400, "invalidValue")
		if !strings.Contains(detail, tc.attr+" contains") || !strings.Contains(detail, tc.cp) {
			t.Errorf("%s: detail %q should name %s and %s", tc.body, detail, tc.attr, tc.cp)
		}
	}
	// TAB, LF and CR are allowed.
	u := ts.do("POST", "/Users", `{`+coreUser+`,"userName":"ada@example.com","displayName":"Ada Lovelace","title":"Countess\tof Lovelace",`+
		`"addresses":[{"formatted":"12 St James's Square\r\nLondon","type":"home"}]}`).must(t, 201).body["id"].(string)

	patch := func(op string) response {
		return ts.do("PATCH", "/Users/"+u, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[`+op+`]}`)
	}
	for _, tc := range []struct{ op, attr string }{
		{`{"op":"replace","path":"displayName","value":"Ada\u0000"}`, "displayName"},
		{`{"op":"replace","path":"name.givenName","value":"\u0000"}`, "name.givenName"},
		{`{"op":"replace","value":{"title":"x\u0001"}}`, "title"},
		{`{"op":"add","path":"phoneNumbers","value":[{"value":"+44\u0000","type":"work"}]}`, "phoneNumbers[0].value"},
	} {
		detail := patch(tc.op).scimError(t, 400, "invalidValue")
		if !strings.Contains(detail, tc.attr+" contains") {
			t.Errorf("PATCH %s: detail %q should name %s", tc.op, detail, tc.attr)
		}
	}
	got := ts.do("GET", "/Users/"+u, "").must(t, 200).body
	if got["displayName"] != "Ada Lovelace" || got["title"] != "Countess\tof Lovelace" || got["phoneNumbers"] != nil {
		t.Errorf("after refused PATCHes the user changed: %v", got)
	}
	// A group's displayName is an identifier; a member's display is a
	// string attribute.
	ts.do("POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"admins","members":[{"value":"`+u+`","display":"Ada\u0000"}]}`).
		scimError(t, 400, "invalidValue")
	g := ts.do("POST", "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"admins"}`).must(t, 201).body["id"].(string)
	detail := ts.do("PATCH", "/Groups/"+g, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"add","path":"members","value":[{"value":"`+u+`","display":"Ada\u0002"}]}]}`).
		scimError(t, 400, "invalidValue")
	if !strings.Contains(detail, "members[0].display") {
		t.Errorf("member display detail %q should name members[0].display", detail)
	}
}
