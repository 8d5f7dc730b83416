package scim

import "strings"

// CountValues returns the number of elements of every array in v, at any
// depth: the values a POST or PUT body, or an operation's value, asks the
// store to hold. The gateway compares it with scim.limits.max_values
// before anything reaches the store's single writer, so a path-less PATCH
// or a body of 30,000 emails is refused (400 tooMany) as its pathed form is.
// It is linear in the size of v.
func CountValues(v any) int {
	n := 0
	switch x := v.(type) {
	case map[string]any:
		for _, e := range x {
			n += CountValues(e)
		}
	case []any:
		n = len(x)
		for _, e := range x {
			n += CountValues(e)
		}
	}
	return n
}

// CountPatchValues returns the sum of CountValues over the operations'
// values: path-less and pathed operations count the same.
func CountPatchValues(ops []Operation) int {
	n := 0
	for _, op := range ops {
		n += CountValues(op.Value)
	}
	return n
}

// CountPatchAttrValues returns the number of values the operations carry
// for the top-level attribute attr (e.g. "members", for
// scim.limits.max_members): for an operation whose path names attr
// (unqualified or with a core schema URN), the elements of its value (1
// for a single value, 0 for none); for a path-less operation, those of its
// value's attr key, however qualified ("members",
// "urn:…:core:2.0:Group:members", or inside a "urn:…:core:2.0:Group"
// object).
func CountPatchAttrValues(ops []Operation, attr string) int {
	n := 0
	for _, op := range ops {
		if op.Path != nil {
			if strings.EqualFold(op.Path.Attr, attr) && (op.Path.URN == "" || isCoreURN(op.Path.URN, nil)) {
				n += len(toList(op.Value))
			}
			continue
		}
		m, _ := op.Value.(map[string]any)
		n += countAttr(m, attr)
	}
	return n
}

// countAttr counts the values of attr in a path-less operation's object.
func countAttr(m map[string]any, attr string) int {
	n := 0
	for k, v := range m {
		switch {
		case strings.EqualFold(k, attr):
			n += len(toList(v))
		case isCoreURN(k, nil):
			if cm, ok := v.(map[string]any); ok {
				for ck, cv := range cm {
					if strings.EqualFold(ck, attr) {
						n += len(toList(cv))
					}
				}
			}
		case hasURNPrefix(k):
			if i := strings.LastIndexByte(k, ':'); isCoreURN(k[:i], nil) && strings.EqualFold(k[i+1:], attr) {
				n += len(toList(v))
			}
		}
	}
	return n
}
