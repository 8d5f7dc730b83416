package mapping

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestDiff(t *testing.T) {
	tests := []struct {
		name     string
		old, new map[string]any
		want     map[string]Change
	}{
		{"equal", map[string]any{"a": "x", "n": int64(3)}, map[string]any{"a": "x", "n": int64(3)}, map[string]Change{}},
		{"nil/both", nil, nil, map[string]Change{}},
		{"number/jsonNumber", map[string]any{"n": int64(3)}, map[string]any{"n": json.Number("3")}, map[string]Change{}},
		{"number/float", map[string]any{"n": float64(3)}, map[string]any{"n": json.Number("3.0")}, map[string]Change{}},
		{"number/differs", map[string]any{"n": int64(3)}, map[string]any{"n": json.Number("4")}, map[string]Change{"n": {int64(3), json.Number("4")}}},
		{"number/notString", map[string]any{"n": int64(3)}, map[string]any{"n": "3"}, map[string]Change{"n": {int64(3), "3"}}},
		{"changed", map[string]any{"a": "x", "b": true}, map[string]any{"a": "y", "b": true}, map[string]Change{"a": {"x", "y"}}},
		{"added", map[string]any{}, map[string]any{"a": "x"}, map[string]Change{"a": {nil, "x"}}},
		{"removed", map[string]any{"a": "x"}, map[string]any{}, map[string]Change{"a": {"x", nil}}},
		{"null/absent", map[string]any{"a": nil}, map[string]any{}, map[string]Change{}},
		{"bool", map[string]any{"active": true}, map[string]any{"active": false}, map[string]Change{"active": {true, false}}},
		{"list/equal", map[string]any{"l": []any{"a", int64(1)}}, map[string]any{"l": []any{"a", json.Number("1")}}, map[string]Change{}},
		{"list/order", map[string]any{"l": []any{"a", "b"}}, map[string]any{"l": []any{"b", "a"}}, map[string]Change{"l": {[]any{"a", "b"}, []any{"b", "a"}}}},
		{"nested/equal", map[string]any{"o": map[string]any{"c": "x", "z": nil}}, map[string]any{"o": map[string]any{"c": "x"}}, map[string]Change{}},
		{"nested/changed",
			map[string]any{"o": map[string]any{"c": "x"}}, map[string]any{"o": map[string]any{"c": "y"}},
			map[string]Change{"o": {map[string]any{"c": "x"}, map[string]any{"c": "y"}}}},
		{"type/changed", map[string]any{"a": "true"}, map[string]any{"a": true}, map[string]Change{"a": {"true", true}}},
		{"typed/slice", map[string]any{"l": []string{"a"}}, map[string]any{"l": []any{"a"}}, map[string]Change{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Diff(tt.old, tt.new); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Diff(%v, %v) = %v, want %v", tt.old, tt.new, got, tt.want)
			}
		})
	}
}

// TestDiffJSON checks the shape of changes in an event.
func TestDiffJSON(t *testing.T) {
	b, err := json.Marshal(Diff(map[string]any{"a": "x"}, map[string]any{"b": int64(1)}))
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"a":{"old":"x","new":null},"b":{"old":null,"new":1}}`; string(b) != want {
		t.Errorf("json.Marshal(Diff) = %s, want %s", b, want)
	}
}
