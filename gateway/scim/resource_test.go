package scim

import (
	"encoding/json"
	"testing"
)

func TestNewListResponse(t *testing.T) {
	tests := []struct {
		total, start int
		res          []any
		want         string
	}{
		{0, 1, nil, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:ListResponse"],"totalResults":0,"startIndex":1,"itemsPerPage":0,"Resources":[]}`},
		{5, 3, []any{map[string]any{"id": "a"}, map[string]any{"id": "b"}},
			`{"schemas":["urn:ietf:params:scim:api:messages:2.0:ListResponse"],"totalResults":5,"startIndex":3,"itemsPerPage":2,"Resources":[{"id":"a"},{"id":"b"}]}`},
	}
	for _, tt := range tests {
		b, err := json.Marshal(NewListResponse(tt.total, tt.start, tt.res))
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != tt.want {
			t.Errorf("NewListResponse(%d, %d, …) = %s, want %s", tt.total, tt.start, b, tt.want)
		}
	}
}

func TestParseBool(t *testing.T) {
	tests := []struct {
		in    any
		b, ok bool
	}{
		{true, true, true}, {false, false, true}, {"True", true, true}, {"FALSE", false, true},
		{"true", true, true}, {"yes", false, false}, {1, false, false}, {nil, false, false}, {"", false, false},
	}
	for _, tt := range tests {
		if b, ok := ParseBool(tt.in); b != tt.b || ok != tt.ok {
			t.Errorf("ParseBool(%#v) = %v, %v, want %v, %v", tt.in, b, ok, tt.b, tt.ok)
		}
	}
}

func TestGet(t *testing.T) {
	doc := map[string]any{"userName": "a", "Title": "t"}
	tests := []struct {
		key  string
		want any
		ok   bool
	}{
		{"userName", "a", true}, {"USERNAME", "a", true}, {"title", "t", true}, {"nope", nil, false},
	}
	for _, tt := range tests {
		if v, ok := Get(doc, tt.key); v != tt.want || ok != tt.ok {
			t.Errorf("Get(%q) = %v, %v, want %v, %v", tt.key, v, ok, tt.want, tt.ok)
		}
	}
}

func TestDeepCopy(t *testing.T) {
	orig := mustDoc(t, sampleUser)
	orig["tags"] = []string{"a"}
	cp := DeepCopy(orig).(map[string]any)
	if canon(t, cp) != canon(t, orig) {
		t.Fatalf("DeepCopy = %s, want %s", canon(t, cp), canon(t, orig))
	}
	cp["name"].(map[string]any)["givenName"] = "X"
	cp["emails"].([]any)[0].(map[string]any)["value"] = "X"
	if orig["name"].(map[string]any)["givenName"] != "Barbara" || orig["emails"].([]any)[0].(map[string]any)["value"] == "X" {
		t.Errorf("DeepCopy shares nested values with the original")
	}
	for _, v := range []any{nil, "s", json.Number("1"), 1.5, true} {
		if DeepCopy(v) != v {
			t.Errorf("DeepCopy(%#v) = %#v", v, DeepCopy(v))
		}
	}
}
