package scim

import "strings"

// Conjuncts returns the terms of f's top-level "and" chain, left to right:
// `a and (b and c)` gives [a, b, c]; a filter that is not an "and" gives
// [f]. A nil f gives nil.
func (f *Filter) Conjuncts() []*Filter {
	if f == nil {
		return nil
	}
	if f.op != opAnd {
		return []*Filter{f}
	}
	return append(f.left.Conjuncts(), f.right.Conjuncts()...)
}

// And joins filters with "and", left-associatively, skipping nils. It
// returns nil when there is nothing to join.
func And(fs ...*Filter) *Filter {
	var out *Filter
	for _, f := range fs {
		switch {
		case f == nil:
		case out == nil:
			out = f
		default:
			out = &Filter{op: opAnd, left: out, right: f}
		}
	}
	return out
}

// MembershipValue reports whether f is an equality on the multi-valued
// reference attribute attr ("members" of a Group, "groups" of a User) in one
// of the shapes identity providers send: `attr eq "id"`, `attr.value eq
// "id"` or `attr[value eq "id"]` (attr optionally qualified with a core
// schema URN). It returns the id compared with.
func (f *Filter) MembershipValue(attr string) (string, bool) {
	if f == nil || (f.path.URN != "" && !isCoreSchemaURN(f.path.URN)) || !strings.EqualFold(f.path.Attr, attr) {
		return "", false
	}
	switch {
	case f.op == opEq && f.path.Filter == nil && (f.path.Sub == "" || strings.EqualFold(f.path.Sub, "value")):
		if f.val.kind == valString || f.val.kind == valNumber {
			return f.val.s, true
		}
	case f.op == opValuePath && f.path.Sub == "":
		in := f.path.Filter
		if in != nil && in.op == opEq && in.path.Filter == nil && in.path.URN == "" &&
			strings.EqualFold(in.path.Attr, "value") && in.path.Sub == "" &&
			(in.val.kind == valString || in.val.kind == valNumber) {
			return in.val.s, true
		}
	}
	return "", false
}

// Mentions reports whether any attribute path in f, at any depth, names the
// top-level attribute attr (case-insensitively, unqualified or with a core
// schema URN).
func (f *Filter) Mentions(attr string) bool {
	if f == nil {
		return false
	}
	switch f.op {
	case opAnd, opOr:
		return f.left.Mentions(attr) || f.right.Mentions(attr)
	case opNot:
		return f.left.Mentions(attr)
	}
	return (f.path.URN == "" || isCoreSchemaURN(f.path.URN)) && strings.EqualFold(f.path.Attr, attr)
}

func isCoreSchemaURN(urn string) bool {
	return strings.EqualFold(urn, SchemaUser) || strings.EqualFold(urn, SchemaGroup)
}
