package scim

import (
	"encoding/json"
	"strings"
)

// ListResponse is a SCIM list response (RFC 7644 §3.4.2). The counts are
// JSON integers and Resources is always present ("Resources": [] when
// empty).
type ListResponse struct {
	Schemas      []string `json:"schemas"`
	TotalResults int      `json:"totalResults"`
	StartIndex   int      `json:"startIndex"`
	ItemsPerPage int      `json:"itemsPerPage"`
	Resources    []any    `json:"Resources"`
}

// NewListResponse returns a ListResponse for one page: total is the size of
// the whole result set, startIndex the 1-based index of the first resource
// as requested, resources the page. ItemsPerPage is len(resources), and
// Resources is non-nil.
func NewListResponse(total, startIndex int, resources []any) ListResponse {
	if resources == nil {
		resources = []any{}
	}
	return ListResponse{
		Schemas:      []string{SchemaListResponse},
		TotalResults: total,
		StartIndex:   startIndex,
		ItemsPerPage: len(resources),
		Resources:    resources,
	}
}

// ParseBool coerces a JSON value to a bool: true and false, and the strings
// "true" and "false" in any case (Entra sends "True" and "False"). ok is
// false for anything else.
func ParseBool(v any) (b bool, ok bool) {
	switch x := v.(type) {
	case bool:
		return x, true
	case string:
		switch {
		case strings.EqualFold(x, "true"):
			return true, true
		case strings.EqualFold(x, "false"):
			return false, true
		}
	}
	return false, false
}

// Get returns doc[key], looking key up case-insensitively (RFC 7643 §2.1).
// An exact match wins; otherwise the first case-insensitive match in map
// order is returned.
func Get(doc map[string]any, key string) (any, bool) {
	if v, ok := doc[key]; ok {
		return v, true
	}
	for k, v := range doc {
		if strings.EqualFold(k, key) {
			return v, true
		}
	}
	return nil, false
}

// findKey returns the key of doc that equals key case-insensitively (key
// itself when it is present as written).
func findKey(doc map[string]any, key string) (string, bool) {
	if _, ok := doc[key]; ok {
		return key, true
	}
	for k := range doc {
		if strings.EqualFold(k, key) {
			return k, true
		}
	}
	return "", false
}

// DeepCopy returns a deep copy of a JSON value: maps and slices are copied
// recursively, scalars (strings, json.Number, numbers, bools, nil) are
// returned as they are.
func DeepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		if x == nil {
			return x
		}
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = DeepCopy(e)
		}
		return m
	case []any:
		if x == nil {
			return x
		}
		s := make([]any, len(x))
		for i, e := range x {
			s[i] = DeepCopy(e)
		}
		return s
	case []map[string]any:
		s := make([]any, len(x))
		for i, e := range x {
			s[i] = DeepCopy(e)
		}
		return s
	case []string:
		s := make([]any, len(x))
		for i, e := range x {
			s[i] = e
		}
		return s
	}
	return v
}

// deepEqual reports whether two JSON values are equal; numbers compare by
// value whatever their Go type.
func deepEqual(a, b any) bool {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || !deepEqual(v, w) {
				return false
			}
		}
		return true
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !deepEqual(x[i], y[i]) {
				return false
			}
		}
		return true
	case string:
		y, ok := b.(string)
		return ok && x == y
	case bool:
		y, ok := b.(bool)
		return ok && x == y
	case nil:
		return b == nil
	}
	n, ok := number(a)
	if !ok {
		return false
	}
	if _, isNum := b.(json.Number); isNum || b != nil {
		m, ok := number(b)
		return ok && n == m
	}
	return false
}
