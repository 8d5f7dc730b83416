package scim

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// deepBody returns a body nested n levels deep (the nesting that used to
// exhaust the decoder): a top-level object plus n-1 nested arrays in an
// unknown attribute.
func deepBody(n int) []byte {
	return []byte(`{"userName":"deep","x":` + strings.Repeat("[", n-1) + strings.Repeat("]", n-1) + `}`)
}

func TestDecodeObject(t *testing.T) {
	tests := []struct {
		name string
		body string
		max  int
		want string // canonical JSON
	}{
		{"okta create", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ada@example.com","active":true}`, 0,
			`{"active":true,"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ada@example.com"}`},
		{"numbers stay exact", `{"n":12345678901234567890,"f":1.50}`, 0, `{"f":1.50,"n":12345678901234567890}`},
		{"surrogate pair", `{"displayName":"\ud83d\ude00 \u00e9"}`, 0, `{"displayName":"😀 é"}`},
		{"escaped quote and backslash before a quote", `{"a":"x\\","b":"\"[{"}`, 1, `{"a":"x\\","b":"\"[{"}`},
		{"brackets inside strings do not count", `{"a":"[[[[[[[[[[[[{{{{{{{{"}`, 1, `{"a":"[[[[[[[[[[[[{{{{{{{{"}`},
		{"at the limit", `{"a":[[{"b":[]}]]}`, 5, `{"a":[[{"b":[]}]]}`},
		{"default limit 32", string(deepBody(32)), 0, canon(t, mustDoc(t, string(deepBody(32))))},
		{"trailing white space", "{}\n\t ", 0, `{}`},
		{"raw UTF-8", `{"name":"Zoë Ünal 日本"}`, 0, `{"name":"Zoë Ünal 日本"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc, err := DecodeObject([]byte(tt.body), tt.max)
			if err != nil {
				t.Fatalf("DecodeObject(%s) error = %v", tt.body, err)
			}
			if got := canon(t, doc); got != tt.want {
				t.Errorf("DecodeObject(%s) = %s, want %s", tt.body, got, tt.want)
			}
		})
	}
	doc, _ := DecodeObject([]byte(`{"n":1001}`), 0)
	if _, ok := doc["n"].(json.Number); !ok {
		t.Errorf("DecodeObject number is %T, want json.Number", doc["n"])
	}
}

func TestDecodeObjectErrors(t *testing.T) {
	tests := []struct {
		name   string
		body   string
		max    int
		detail []string
	}{
		{"10,000 deep", string(deepBody(10000)), 0, []string{"nested more than 32 levels", "scim.limits.max_depth", "at byte 54"}},
		{"one past the limit", `{"a":[[{"b":[]}]]}`, 4, []string{"nested more than 4 levels", "scim.limits.max_depth"}},
		{"33 with the default", string(deepBody(33)), 0, []string{"more than 32"}},
		{"objects count", `{"a":{"b":{"c":{}}}}`, 3, []string{"more than 3"}},
		{"invalid UTF-8 in a value", "{\"userName\":\"ada\xff@example.com\"}", 0, []string{"not valid UTF-8", "at byte 16"}},
		{"invalid UTF-8 in a key", "{\"user\xc3Name\":\"a\"}", 0, []string{"not valid UTF-8"}},
		{"UTF-8 encoded surrogate", "{\"a\":\"\xed\xa0\x80\"}", 0, []string{"not valid UTF-8"}},
		{"overlong encoding", "{\"a\":\"\xc0\xaf\"}", 0, []string{"not valid UTF-8"}},
		{"invalid UTF-8 outside strings", "{\"a\":1\xff}", 0, []string{"not valid UTF-8"}},
		{"lone high surrogate", `{"displayName":"\ud800"}`, 0, []string{`\ud800`, "surrogate", "at byte 16"}},
		{"lone low surrogate", `{"displayName":"a\uDC00b"}`, 0, []string{`\uDC00`, "surrogate"}},
		{"high then not low", `{"displayName":"\ud800\u0041"}`, 0, []string{"surrogate"}},
		{"two highs", `{"displayName":"\ud800\ud800"}`, 0, []string{"surrogate"}},
		{"high at end of input", `{"displayName":"\ud83d`, 0, []string{"surrogate"}},
		{"surrogate in a key", `{"\udfff":1}`, 0, []string{"surrogate"}},
		{"empty", ``, 0, []string{"empty"}},
		{"white space only", " \n", 0, []string{"empty"}},
		{"null", `null`, 0, []string{"must be a JSON object", "got null"}},
		{"array", `[{"userName":"a"}]`, 0, []string{"must be a JSON object", "got an array"}},
		{"string", `"Secr3t-value"`, 0, []string{"got a string"}},
		{"trailing object", `{"a":1} {"b":2}`, 0, []string{"data after the JSON object"}},
		{"trailing garbage", `{"a":1}x`, 0, []string{"data after the JSON object"}},
		{"truncated", `{"a":[1,2`, 0, []string{"truncated"}},
		{"syntax", `{"acve": tre}`, 0, []string{"not valid JSON", "at byte"}},
		{"bad escape", `{"a":"\q"}`, 0, []string{"not valid JSON"}},
		{"short \\u escape", `{"a":"\u12"}`, 0, []string{"not valid JSON"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc, err := DecodeObject([]byte(tt.body), tt.max)
			if err == nil {
				t.Fatalf("DecodeObject = %s, want error", canon(t, doc))
			}
			se := scimErr(t, err)
			if se.Status != 400 || se.ScimType != InvalidSyntax {
				t.Errorf("DecodeObject error = %d %s, want 400 invalidSyntax", se.Status, se.ScimType)
			}
			for _, d := range tt.detail {
				if !strings.Contains(se.Detail, d) {
					t.Errorf("DecodeObject detail %q lacks %q", se.Detail, d)
				}
			}
			if strings.Contains(se.Detail, "Secr3t") {
				t.Errorf("DecodeObject detail %q quotes the body", se.Detail)
			}
		})
	}
}

// The depth check is a linear pre-scan: a megabyte of brackets is refused
// at once, without a decode (encoding/json would stop at 10,000 levels with
// its own "exceeded max depth").
func TestDecodeObjectDeepIsLinear(t *testing.T) {
	body := []byte(`{"a":` + strings.Repeat("[", 1<<20) + `}`)
	start := time.Now()
	_, err := DecodeObject(body, 0)
	if el := time.Since(start); el > time.Second {
		t.Errorf("DecodeObject of a 1 MiB deep body took %v", el)
	}
	if se := scimErr(t, err); !strings.Contains(se.Detail, "scim.limits.max_depth") {
		t.Errorf("DecodeObject error = %v, want the depth limit", err)
	}
}

// Two different names must not become one: encoding/json
// alone turns both into "\ufffd".
func TestDecodeObjectNoReplacement(t *testing.T) {
	var std1, std2 map[string]any
	a, b := `{"userName":"\ud800"}`, "{\"userName\":\"\xff\"}"
	if json.Unmarshal([]byte(a), &std1) != nil || json.Unmarshal([]byte(b), &std2) != nil || std1["userName"] != std2["userName"] {
		t.Fatalf("encoding/json no longer folds both into U+FFFD: %q %q", std1["userName"], std2["userName"])
	}
	for _, body := range []string{a, b} {
		if _, err := DecodeObject([]byte(body), 0); err == nil {
			t.Errorf("DecodeObject(%q) accepted a body encoding/json would alter", body)
		}
	}
}

func TestDepth(t *testing.T) {
	tests := []struct {
		doc   string
		limit int
		want  int
	}{
		{`{}`, 0, 1},
		{`{"a":1}`, 0, 1},
		{`{"a":[]}`, 0, 2},
		{`{"a":[{"b":[1]}],"c":{}}`, 0, 4},
		{string(deepBody(40)), 0, 33}, // stops counting past the limit
		{string(deepBody(40)), 50, 40},
		{string(deepBody(40)), 3, 4},
	}
	for _, tt := range tests {
		if got := Depth(mustDoc(t, tt.doc), tt.limit); got != tt.want {
			t.Errorf("Depth(%.40s…, %d) = %d, want %d", tt.doc, tt.limit, got, tt.want)
		}
	}
	if got := Depth("x", 0); got != 0 {
		t.Errorf("Depth(scalar) = %d, want 0", got)
	}
}
