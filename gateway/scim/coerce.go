package scim

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"
)

// describe names the JSON type of v for error details.
func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		if len(x) > 40 {
			return "the string " + quote(x[:40]) + "…"
		}
		return "the string " + quote(x)
	case bool:
		return fmt.Sprintf("the boolean %t", x)
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	}
	if _, ok := number(v); ok {
		return "the number " + numberText(v)
	}
	return fmt.Sprintf("a value of type %T", v)
}

// valueDesc describes v for an error about attribute def: with its value
// (short strings quoted) for attributes the schema defines, by its type
// alone for unknown (def nil) and write-only ones, whose values may be
// secrets.
func valueDesc(def *Attribute, v any) string {
	if def == nil || notStored(def) {
		return describeType(v)
	}
	return describe(v)
}

// typeWant describes what a value of def must look like.
func typeWant(def *Attribute) string {
	switch def.Type {
	case TypeBoolean:
		return "a boolean (true or false)"
	case TypeInteger:
		return "an integer"
	case TypeDecimal:
		return "a number"
	case TypeComplex:
		return "an object"
	case TypeDateTime:
		return "a date-time string such as \"2026-01-02T15:04:05Z\""
	case TypeReference:
		return "a URI string"
	case TypeBinary:
		return "a base64 string"
	}
	return "a string"
}

// isManager reports whether def (or, when undefined, the name) is the
// enterprise-style manager attribute that Entra sends as a bare id.
func isManager(def *Attribute, name string) bool {
	if def != nil {
		return def.Type == TypeComplex && !def.MultiValued && strings.EqualFold(def.Name, "manager")
	}
	return strings.EqualFold(name, "manager")
}

// isEmpty reports whether v clears an attribute: null or "".
func isEmpty(v any) bool {
	if v == nil {
		return true
	}
	s, ok := v.(string)
	return ok && s == ""
}

// coerceSingle checks one value (an element, for a multi-valued attribute)
// against def and returns what to store: booleans given as "True"/"False"
// become bools, a manager given as a string becomes {"value": s}, complex
// values get canonical sub-attribute names with nulls dropped. name is the
// attribute path for error details. def nil keeps v generically.
func coerceSingle(def *Attribute, v any, name string) (any, *Error) {
	if def == nil {
		return dropNulls(v), nil
	}
	bad := func() *Error {
		return badRequest(InvalidValue, "attribute %s must be %s, got %s", quote(name), typeWant(def), valueDesc(def, v))
	}
	switch def.Type {
	case TypeBoolean:
		b, ok := ParseBool(v)
		if !ok {
			return nil, bad()
		}
		return b, nil
	case TypeInteger:
		n, ok := number(v)
		if !ok || n != math.Trunc(n) {
			return nil, bad()
		}
		return v, nil
	case TypeDecimal:
		if _, ok := number(v); !ok {
			return nil, bad()
		}
		return v, nil
	case TypeComplex:
		if s, ok := v.(string); ok && isManager(def, def.Name) {
			return map[string]any{"value": s}, nil
		}
		m, ok := v.(map[string]any)
		if !ok {
			return nil, bad()
		}
		return coerceObject(def.SubAttributes, m, name)
	default: // string, reference, binary, dateTime
		if n, ok := v.(json.Number); ok && def.Type == TypeString && def.Uniqueness != UniquenessServer {
			// An Okta profile attribute of type number mapped to a string
			// attribute (employeeNumber: 1001) is stored as its text;
			// identifiers such as userName must be strings.
			return n.String(), nil
		}
		if _, ok := v.(string); !ok {
			return nil, bad()
		}
		return v, nil
	}
}

// coerceObject returns a copy of m with the known attributes of defs under
// their canonical names and coerced, unknown ones kept generically, and
// nulls, write-only and read-only attributes dropped (manager.displayName:
// the server's to set, ignored in what a client sends, as RFC 7644 §3.5.1
// says for PUT). Two keys naming the same known attribute are an error.
func coerceObject(defs []*Attribute, m map[string]any, name string) (map[string]any, *Error) {
	out := make(map[string]any, len(m))
	var seen map[string]string
	for _, k := range sortedKeys(m) {
		v := m[k]
		if v == nil {
			continue
		}
		def := findAttr(defs, k)
		if def == nil {
			out[k] = dropNulls(v)
			continue
		}
		if prev, dup := seen[def.Name]; dup {
			return nil, badRequest(InvalidValue, "attribute %s is given twice, as %s and %s; send it once",
				quote(joinName(name, def.Name)), quote(prev), quote(k))
		}
		if seen == nil {
			seen = make(map[string]string, len(m))
		}
		seen[def.Name] = k
		if notStored(def) || def.Mutability == ReadOnly {
			continue
		}
		cv, err := coerceAttr(def, v, joinName(name, def.Name), false)
		if err != nil {
			return nil, err
		}
		if cv != nil {
			out[def.Name] = cv
		}
	}
	return out, nil
}

func joinName(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}

// coerceAttr checks a whole attribute value against def: a multi-valued
// attribute must be an array (wrapElems also accepts a single element, and a
// string as {"value": s} for a complex one), its null elements are dropped.
func coerceAttr(def *Attribute, v any, name string, wrapElems bool) (any, *Error) {
	if def == nil || !def.MultiValued {
		return coerceSingle(def, v, name)
	}
	arr, ok := v.([]any)
	if !ok {
		if !wrapElems {
			return nil, badRequest(InvalidValue, "attribute %s is multi-valued and must be an array of %s, got %s",
				quote(name), typeWant(def), valueDesc(def, v))
		}
		arr = []any{v}
	}
	out := make([]any, 0, len(arr))
	for _, e := range arr {
		if e == nil {
			continue
		}
		if s, ok := e.(string); ok && wrapElems && def.Type == TypeComplex && def.Sub("value") != nil {
			e = map[string]any{"value": s}
		}
		ce, err := coerceSingle(def, e, name)
		if err != nil {
			return nil, err
		}
		out = append(out, ce)
	}
	if def.Type == TypeComplex && def.Sub("primary") != nil {
		onePrimary(out, nil)
	}
	return out, nil
}

// dropNulls returns a deep copy of v without null object members and null
// array elements.
func dropNulls(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			if e != nil {
				m[k] = dropNulls(e)
			}
		}
		return m
	case []any:
		s := make([]any, 0, len(x))
		for _, e := range x {
			if e != nil {
				s = append(s, dropNulls(e))
			}
		}
		return s
	}
	return DeepCopy(v)
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
