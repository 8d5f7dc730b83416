package scim

import "strings"

// Project renders a resource about to be returned: it applies the
// attributes and excludedAttributes query parameters (RFC 7644 §3.4.2.5,
// §3.9) and returns the result; doc is never modified. The gateway calls it
// for every resource it returns.
//
// "schemas" is rendered, not echoed: rt's core schema URN followed by each
// of rt's declared extensions (in rt.Extensions order) whose object is in
// the result. Extension data under an undeclared URN (and any other key
// containing ':', such as Entra's
// "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group")
// stays stored but is left out, so strict clients accept the resource; it
// reappears once the mapping declares the extension. Attributes the schema
// does not define are left out in the same way: at the top level (other
// than the common id, externalId and meta), in a declared extension that
// defines attributes, and as sub-attributes of a complex attribute that
// defines its sub-attributes.
//
// With attributes, only the named attributes are kept, plus "schemas" and
// the attributes whose definition says returned "always" (id). meta is
// returned "default", so it is dropped unless named. Names may be full
// paths: "name.givenName" keeps only that sub-attribute, "emails" the whole
// attribute, `emails[type eq "work"]` only the matching elements,
// "urn:…:enterprise:2.0:User:department" one extension attribute and the bare
// URN the whole extension. excludedAttributes removes the named paths
// unless they are returned "always". Attributes returned "never"
// (password) are always removed, and returned "request" ones unless named.
// Names are compared case-insensitively; unparsable names are ignored. An
// extension or complex attribute left empty by projection is dropped.
//
// A nil rt projects generically and keeps "schemas" and every extension
// as stored.
func Project(doc map[string]any, rt *ResourceType, attributes, excluded []string) map[string]any {
	var incl, excl []*Path
	for _, s := range attributes {
		for _, part := range splitList(s) {
			if p, err := ParsePath(part); err == nil {
				incl = append(incl, p)
			}
		}
	}
	for _, s := range excluded {
		for _, part := range splitList(s) {
			if p, err := ParsePath(part); err == nil {
				excl = append(excl, p)
			}
		}
	}
	typed := rt != nil && rt.Schema != nil
	out := make(map[string]any, len(doc))
	for k, v := range doc {
		if strings.EqualFold(k, "schemas") {
			if !typed {
				out[k] = DeepCopy(v)
			}
			continue
		}
		if typed && strings.IndexByte(k, ':') >= 0 {
			s := rt.Extension(k)
			if m, ok := v.(map[string]any); ok && s != nil {
				if ext := projectObject(m, s.ID, s, incl, excl); len(ext) > 0 {
					out[s.ID] = ext
				}
			}
			continue // undeclared: kept in storage, not rendered
		}
		if hasURNPrefix(k) && !typed {
			if m, ok := v.(map[string]any); ok {
				if ext := projectObject(m, k, nil, incl, excl); len(ext) > 0 {
					out[k] = ext
				}
				continue
			}
		}
		var def *Attribute
		if typed {
			if def = rt.Schema.Attr(k); def == nil && !isCommonAttr(k) {
				continue // undefined: kept in storage, not rendered
			}
		}
		if pv, ok := projectAttr(k, v, def, "", incl, excl); ok {
			out[k] = pv
		}
	}
	if typed {
		schemas := []any{rt.Schema.ID}
		for _, s := range rt.Extensions {
			if _, ok := out[s.ID]; ok {
				schemas = append(schemas, s.ID)
			}
		}
		out["schemas"] = schemas
	}
	return out
}

// splitList splits a comma-separated attribute list, honouring quotes and
// brackets (emails[type eq "a,b"]).
func splitList(s string) []string {
	if !strings.Contains(s, ",") {
		if t := strings.TrimSpace(s); t != "" {
			return []string{t}
		}
		return nil
	}
	var out []string
	depth, inStr, start := 0, false, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case inStr:
			if c == '\\' {
				i++
			} else if c == '"' {
				inStr = false
			}
		case c == '"':
			inStr = true
		case c == '[':
			depth++
		case c == ']':
			depth--
		case c == ',' && depth <= 0:
			if t := strings.TrimSpace(s[start:i]); t != "" {
				out = append(out, t)
			}
			start = i + 1
		}
	}
	if t := strings.TrimSpace(s[start:]); t != "" {
		out = append(out, t)
	}
	return out
}

// projectObject projects an extension object stored under urn.
func projectObject(m map[string]any, urn string, schema *Schema, incl, excl []*Path) map[string]any {
	whole := func(ps []*Path) bool {
		for _, p := range ps {
			if p.Attr == "" && strings.EqualFold(p.URN, urn) ||
				p.Filter == nil && p.Sub == "" && strings.EqualFold(p.URN+":"+p.Attr, urn) {
				return true
			}
		}
		return false
	}
	if whole(excl) {
		return nil
	}
	in := incl
	if whole(incl) {
		in = nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		def := schema.Attr(k)
		if def == nil && schema != nil && len(schema.Attributes) > 0 {
			continue // undefined in a declared extension: not rendered
		}
		if pv, ok := projectAttr(k, v, def, urn, in, excl); ok {
			out[k] = pv
		}
	}
	return out
}

// pathsFor returns the paths of ps that name attribute k in the object of
// urn ("" for the top level).
func pathsFor(ps []*Path, k, urn string) []*Path {
	var out []*Path
	for _, p := range ps {
		if p.Attr == "" || !strings.EqualFold(p.Attr, k) {
			continue
		}
		if urn == "" && (p.URN == "" || isCoreURN(p.URN, nil)) ||
			urn != "" && strings.EqualFold(p.URN, urn) {
			out = append(out, p)
		}
	}
	return out
}

// projectAttr projects one attribute k with value v and reports whether it
// stays. incl nil means "no attributes parameter".
func projectAttr(k string, v any, def *Attribute, urn string, incl, excl []*Path) (any, bool) {
	returned := ReturnedDefault
	switch {
	case def != nil && def.Returned != "":
		returned = def.Returned
	case def == nil && urn == "" && k == "id":
		returned = ReturnedAlways // RFC 7643 §3.1, also without a schema
	}
	if returned == ReturnedNever {
		return nil, false
	}
	mine := pathsFor(incl, k, urn)
	switch {
	case returned == ReturnedAlways:
		return DeepCopy(v), true
	case len(incl) > 0 && len(mine) == 0:
		return nil, false
	case len(incl) == 0 && returned == ReturnedRequest && len(mine) == 0:
		return nil, false
	}
	out := dropUndefinedSubs(DeepCopy(v), def)
	if len(mine) > 0 && !anyWhole(mine) {
		out = keepOnly(out, mine, def)
	}
	for _, p := range pathsFor(excl, k, urn) {
		if p.Filter == nil && p.Sub == "" {
			return nil, false
		}
		out = removeSelected(out, p, def)
	}
	if !isPresentContainer(out) {
		return nil, false
	}
	return out, true
}

// isCommonAttr reports whether k is one of the common attributes every
// resource has (RFC 7643 §3.1), also where a schema does not list them.
func isCommonAttr(k string) bool {
	return strings.EqualFold(k, "id") || strings.EqualFold(k, "externalId") || strings.EqualFold(k, "meta")
}

// dropUndefinedSubs removes from v (a copy) the sub-attributes def does not
// define, in a complex value or in each element of a multi-valued one; a
// definition without sub-attributes keeps everything.
func dropUndefinedSubs(v any, def *Attribute) any {
	if def == nil || len(def.SubAttributes) == 0 {
		return v
	}
	clean := func(m map[string]any) {
		for k := range m {
			if def.Sub(k) == nil {
				delete(m, k)
			}
		}
	}
	switch x := v.(type) {
	case map[string]any:
		clean(x)
	case []any:
		for _, e := range x {
			if m, ok := e.(map[string]any); ok {
				clean(m)
			}
		}
	}
	return v
}

func anyWhole(ps []*Path) bool {
	for _, p := range ps {
		if p.Filter == nil && p.Sub == "" {
			return true
		}
	}
	return false
}

// isPresentContainer reports false for an object or array that projection
// emptied; scalars (including "") stay.
func isPresentContainer(v any) bool {
	switch x := v.(type) {
	case map[string]any:
		return len(x) > 0
	case []any:
		return len(x) > 0
	}
	return true
}

// keepOnly reduces v (a copy) to what the paths select: for a complex value
// the named sub-attributes; for a multi-valued one the elements matching a
// value filter, reduced to the named sub-attributes.
func keepOnly(v any, ps []*Path, def *Attribute) any {
	elem := func(m map[string]any) map[string]any {
		var subs []string
		sel := false
		for _, p := range ps {
			if p.Filter != nil && !p.Filter.match(m, scope{parent: def, inElem: true}) {
				continue
			}
			if p.Sub == "" {
				return m // a matching value filter without sub keeps the element
			}
			sel = true
			subs = append(subs, p.Sub)
		}
		if !sel {
			return nil
		}
		out := make(map[string]any, len(subs))
		for _, s := range subs {
			if key, ok := findKey(m, s); ok {
				out[key] = m[key]
			}
		}
		return out
	}
	switch x := v.(type) {
	case map[string]any:
		if r := elem(x); r != nil {
			return r
		}
		return map[string]any{}
	case []any:
		out := make([]any, 0, len(x))
		for _, e := range x {
			if m, ok := e.(map[string]any); ok {
				if r := elem(m); len(r) > 0 {
					out = append(out, r)
				}
			}
		}
		return out
	}
	return nil // a scalar has no sub-attributes
}

// removeSelected removes what an excludedAttributes path with a filter or
// sub-attribute selects from v (a copy).
func removeSelected(v any, p *Path, def *Attribute) any {
	match := func(m map[string]any) bool {
		return p.Filter == nil || p.Filter.match(m, scope{parent: def, inElem: true})
	}
	switch x := v.(type) {
	case map[string]any:
		if match(x) {
			if p.Sub == "" {
				return map[string]any{}
			}
			deleteKey(x, p.Sub)
		}
		return x
	case []any:
		out := make([]any, 0, len(x))
		for _, e := range x {
			m, ok := e.(map[string]any)
			if !ok || !match(m) {
				out = append(out, e)
				continue
			}
			if p.Sub != "" {
				deleteKey(m, p.Sub)
				if len(m) > 0 {
					out = append(out, m)
				}
			}
		}
		return out
	}
	return v
}
