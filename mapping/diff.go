package mapping

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
)

// Change is the old and new value of one record field; nil for a field
// added or removed.
type Change struct {
	Old any `json:"old"`
	New any `json:"new"`
}

// Diff returns the top-level fields of two records whose values differ,
// each with its old and new value; an empty map when they are equal.
// Values compare as JSON does: int64(3) equals json.Number("3") and
// float64(3), and a field set to null equals a field that is absent.
func Diff(old, new map[string]any) map[string]Change {
	d := make(map[string]Change)
	for k, o := range old {
		if n := new[k]; !equal(o, n) {
			d[k] = Change{Old: o, New: n}
		}
	}
	for k, n := range new {
		if _, ok := old[k]; !ok && n != nil {
			d[k] = Change{Old: nil, New: n}
		}
	}
	return d
}

// equal compares two decoded JSON-like values.
func equal(a, b any) bool {
	switch a := a.(type) {
	case nil:
		return b == nil
	case string:
		s, ok := b.(string)
		return ok && a == s
	case bool:
		x, ok := b.(bool)
		return ok && a == x
	case map[string]any:
		m, ok := b.(map[string]any)
		if !ok || len(nonNull(a)) != len(nonNull(m)) {
			return false
		}
		for k, v := range a {
			if !equal(v, m[k]) {
				return false
			}
		}
		return true
	case []any:
		l, ok := b.([]any)
		if !ok || len(a) != len(l) {
			return false
		}
		for i := range a {
			if !equal(a[i], l[i]) {
				return false
			}
		}
		return true
	}
	if x, ok := number(a); ok {
		y, ok := number(b)
		return ok && x.eq(y)
	}
	// Anything else (a typed slice, a struct): compare the JSON.
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && bytes.Equal(ja, jb)
}

// nonNull returns the keys of m whose values are not null.
func nonNull(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k, v := range m {
		if v != nil {
			keys = append(keys, k)
		}
	}
	return keys
}

// num is a JSON number, exact when it is an integer.
type num struct {
	i     int64
	f     float64
	isInt bool
}

func (x num) eq(y num) bool {
	if x.isInt && y.isInt {
		return x.i == y.i
	}
	return x.float() == y.float()
}

func (x num) float() float64 {
	if x.isInt {
		return float64(x.i)
	}
	return x.f
}

func number(v any) (num, bool) {
	switch v := v.(type) {
	case int64:
		return num{i: v, isInt: true}, true
	case int:
		return num{i: int64(v), isInt: true}, true
	case int32:
		return num{i: int64(v), isInt: true}, true
	case float64:
		if v == math.Trunc(v) && math.Abs(v) < 1<<63 {
			return num{i: int64(v), isInt: true}, true
		}
		return num{f: v}, true
	case json.Number:
		if i, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			return num{i: i, isInt: true}, true
		}
		f, err := v.Float64()
		if err != nil {
			return num{}, false
		}
		return number(f)
	}
	return num{}, false
}
