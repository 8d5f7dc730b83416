package scim

import (
	"strings"
)

// Path is an attribute path of RFC 7644 §3.5.2 (PATH = attrPath / valuePath
// [subAttr]), also used by filters (attrPath, and Entra's valuePath with a
// sub-attribute), by Project and by the mapping package.
//
// A URN-qualified path keeps the schema URN in URN: the URN is everything up
// to the last ':' before the attribute name, so
// "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value"
// is URN "urn:…:enterprise:2.0:User", Attr "manager", Sub "value". A path
// that is only a schema URN (its last segment follows a version segment such
// as "2.0", e.g. "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User")
// has URN set to the whole string and Attr == ""; it names the extension
// object itself.
type Path struct {
	URN    string  // schema URN prefix as written, "" when absent
	Attr   string  // attribute name as written, e.g. "emails"; "" for a bare URN
	Filter *Filter // value filter of a valuePath (emails[type eq "work"]), nil otherwise
	Sub    string  // sub-attribute as written, e.g. "value"; "" when absent
}

// ParsePath parses a PATCH path or an attribute path such as "userName",
// "name.givenName", "members[value eq \"2819c223\"]",
// "emails[type eq \"work\"].value" or
// "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager".
// Surrounding white space is ignored. The error is an *Error with status 400
// and scimType invalidPath whose detail names the problem and its position.
func ParsePath(s string) (*Path, error) {
	p := parser{src: s, what: "path", scimType: InvalidPath}
	if len(s) > maxFilterLen {
		return nil, p.errorf("path is %d bytes long; the limit is %d", len(s), maxFilterLen)
	}
	p.skipSpace()
	if p.pos == len(s) {
		return nil, p.errorf("path is empty; expected an attribute name such as \"userName\" or \"members[value eq \\\"id\\\"]\"")
	}
	var path Path
	if err := p.parsePath(&path, true); err != nil {
		return nil, err
	}
	p.skipSpace()
	if p.pos < len(s) {
		return nil, p.unexpected("the end of the path")
	}
	return &path, nil
}

// String returns the canonical text of p, which ParsePath parses back to an
// equal Path.
func (p *Path) String() string {
	var b strings.Builder
	p.write(&b)
	return b.String()
}

func (p *Path) write(b *strings.Builder) {
	if p.URN != "" {
		b.WriteString(p.URN)
		if p.Attr != "" {
			b.WriteByte(':')
		}
	}
	b.WriteString(p.Attr)
	if p.Filter != nil {
		b.WriteByte('[')
		p.Filter.write(b, precOr)
		b.WriteByte(']')
	}
	if p.Sub != "" {
		b.WriteByte('.')
		b.WriteString(p.Sub)
	}
}

// Values returns the values p reaches in doc. For a multi-valued attribute
// the result holds each element (only those matching p.Filter when set; with
// p.Sub the sub-attribute of each instead); for a single-valued attribute it
// holds the value (or its sub-attribute). Missing and null values are left
// out; a missing attribute yields nil. Keys are matched case-insensitively.
// A URN prefix selects the extension object under that key; the core User
// and Group URNs select the top level; a bare URN path yields the extension
// object itself.
func (p *Path) Values(doc map[string]any) []any {
	c := container(doc, p.URN, nil)
	if c == nil {
		return nil
	}
	if p.Attr == "" {
		return []any{c}
	}
	v, ok := Get(c, p.Attr)
	if !ok || v == nil {
		return nil
	}
	var out []any
	add := func(x any) {
		if p.Filter != nil {
			m, ok := x.(map[string]any)
			if !ok || !p.Filter.match(m, scope{inElem: true}) {
				return
			}
		}
		if p.Sub == "" {
			if x != nil {
				out = append(out, x)
			}
			return
		}
		m, ok := x.(map[string]any)
		if !ok {
			return
		}
		sv, ok := Get(m, p.Sub)
		if !ok || sv == nil {
			return
		}
		if arr, ok := sv.([]any); ok {
			for _, e := range arr {
				if e != nil {
					out = append(out, e)
				}
			}
			return
		}
		out = append(out, sv)
	}
	if arr, ok := v.([]any); ok {
		for _, e := range arr {
			add(e)
		}
	} else {
		add(v)
	}
	return out
}

// isCoreURN reports whether urn names a core schema (the top level of a
// document): rt's core schema, or the core User or Group schema.
func isCoreURN(urn string, rt *ResourceType) bool {
	if strings.EqualFold(urn, SchemaUser) || strings.EqualFold(urn, SchemaGroup) {
		return true
	}
	return rt != nil && rt.Schema != nil && strings.EqualFold(urn, rt.Schema.ID)
}

// container returns the object attributes under urn live in: doc itself
// for "" or a core URN, else the extension object (nil when absent or not an
// object).
func container(doc map[string]any, urn string, rt *ResourceType) map[string]any {
	if urn == "" || isCoreURN(urn, rt) {
		return doc
	}
	v, _ := Get(doc, urn)
	m, _ := v.(map[string]any)
	return m
}

// isNameStart and isNameChar follow RFC 7643 §2.1 ATTRNAME (ALPHA followed
// by ALPHA, DIGIT, "-" or "_"), plus "$" to start "$ref".
func isNameStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '$'
}

func isNameChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

// validName reports whether s is an ATTRNAME.
func validName(s string) bool {
	if s == "" || !isNameStart(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if !isNameChar(s[i]) {
			return false
		}
	}
	return true
}

// hasURNPrefix reports whether s starts with "urn:" in any case.
func hasURNPrefix(s string) bool {
	return len(s) >= 4 && strings.EqualFold(s[:4], "urn:")
}

// isVersion reports whether seg looks like a schema version ("2.0", "1").
func isVersion(seg string) bool {
	if seg == "" {
		return false
	}
	for i := 0; i < len(seg); i++ {
		if c := seg[i]; !(c >= '0' && c <= '9' || c == '.') {
			return false
		}
	}
	return seg[0] != '.'
}

// validURN reports whether urn is "urn:" followed by at least one non-empty
// segment, with no empty segments.
func validURN(urn string) bool {
	if !hasURNPrefix(urn) || len(urn) == 4 {
		return false
	}
	for _, seg := range strings.Split(urn[4:], ":") {
		if seg == "" {
			return false
		}
	}
	return true
}

// splitAttrPath splits the text of an attrPath without a value filter
// ("urn:…:User:name.givenName") into its URN, attribute and sub-attribute.
// When bare is true, a whole URN ending in "<version>:<Name>" is accepted as
// a bare URN. It returns a description of the problem and the offset (into
// w) where it is, or "" when w is valid.
func splitAttrPath(w string, bare bool) (urn, name, sub, problem string, at int) {
	rest := w
	off := 0
	if hasURNPrefix(w) {
		k := strings.LastIndexByte(w, ':')
		urn, rest, off = w[:k], w[k+1:], k+1
		if bare && validURN(w) && strings.IndexByte(rest, '.') < 0 {
			prev := urn[strings.LastIndexByte(urn, ':')+1:]
			if isVersion(prev) || !validName(rest) {
				return w, "", "", "", 0
			}
		}
		if !validURN(urn) {
			return "", "", "", "invalid schema URN prefix " + quote(w[:k]), 0
		}
	}
	name = rest
	if i := strings.IndexByte(rest, '.'); i >= 0 {
		name, sub = rest[:i], rest[i+1:]
		if !validName(sub) {
			if j := strings.IndexByte(sub, '.'); j >= 0 && validName(sub[:j]) {
				return "", "", "", "attribute path " + quote(w) + " is nested too deeply; at most one sub-attribute (\"name.givenName\") is allowed", off + i + 1 + j
			}
			return "", "", "", "invalid sub-attribute name " + quote(sub) + " (names start with a letter and contain only letters, digits, \"-\" and \"_\")", off + i + 1
		}
	}
	if !validName(name) {
		if name == "" {
			return "", "", "", "missing attribute name in " + quote(w), off
		}
		return "", "", "", "invalid attribute name " + quote(name) + " (names start with a letter and contain only letters, digits, \"-\" and \"_\")", off
	}
	return urn, name, sub, "", 0
}
