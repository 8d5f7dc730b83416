package scim

import "strings"

// Normalize prepares a resource a client sent in a POST or PUT body for
// storage. It returns a new map (doc is not modified) in which
//   - known attribute names, sub-attribute names and extension URNs take the
//     schema's case ("USERNAME" → "userName", "Primary" → "primary");
//   - the core schema URN is the top level: the members of an object under
//     the key "urn:ietf:params:scim:schemas:core:2.0:User" and keys such as
//     "urn:ietf:params:scim:schemas:core:2.0:User:title" are top-level
//     attributes, and "<declared extension URN>:<attribute>" keys go into
//     that extension;
//   - read-only attributes (id, meta, groups) and sub-attributes
//     (manager.displayName) and write-only or never returned ones
//     (password), however qualified, are removed;
//   - booleans given as "True"/"False" strings become bools;
//   - a manager given as a bare string becomes {"value": s};
//   - explicit nulls are dropped, at any depth;
//   - in a multi-valued attribute at most one element is primary (RFC 7643
//     §2.4): the first with primary true keeps it, the others get false;
//   - "schemas" is kept as sent (Project renders it from the data);
//     attributes the schema does not define and extension objects under
//     undeclared URNs are kept generically.
//
// A wrongly typed value of a known attribute (userName as a number or an
// object, active as "maybe", emails as a string) or a known attribute given
// twice (in different case, or plain and URN-qualified) is an *Error with
// status 400 and scimType invalidValue naming the attribute and the
// expected type; the value of a write-only or unknown attribute is never
// quoted. Normalize does not check that required attributes are present;
// use Missing for that. A nil rt only drops nulls.
func Normalize(doc map[string]any, rt *ResourceType) (map[string]any, error) {
	out := make(map[string]any, len(doc))
	if rt == nil || rt.Schema == nil {
		for k, v := range doc {
			switch {
			case v == nil:
			case strings.EqualFold(k, "schemas"):
				out[k] = DeepCopy(v)
			default:
				out[k] = dropNulls(v)
			}
		}
		return out, nil
	}
	n := normalizer{rt: rt, out: out, seen: make(map[string]string, len(doc))}
	for _, k := range sortedKeys(doc) {
		v := doc[k]
		if v == nil {
			continue
		}
		var err *Error
		switch {
		case strings.EqualFold(k, "schemas"):
			out[k] = DeepCopy(v)
		case isOwnCore(k, rt):
			err = n.coreObject(k, v)
		case hasURNPrefix(k):
			err = n.qualified(k, v)
		default:
			err = n.attr(k, v, k)
		}
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// normalizer builds Normalize's result; seen maps a canonical attribute
// name (an extension's lower-case URN) to the key it came from.
type normalizer struct {
	rt   *ResourceType
	out  map[string]any
	seen map[string]string
}

// coreObject merges an object under the core schema URN key into the top
// level.
func (n *normalizer) coreObject(k string, v any) *Error {
	m, ok := v.(map[string]any)
	if !ok {
		return badRequest(InvalidValue, "%s must be an object of %s attributes, got %s; or send the attributes at the top level",
			quote(k), n.rt.Schema.Name, describeType(v))
	}
	for _, ck := range sortedKeys(m) {
		if m[ck] == nil || strings.EqualFold(ck, "schemas") {
			continue
		}
		if hasURNPrefix(ck) {
			return badRequest(InvalidValue, "the key %s inside %s is not an attribute name", quote(ck), quote(k))
		}
		if err := n.attr(ck, m[ck], k+":"+ck); err != nil {
			return err
		}
	}
	return nil
}

// qualified handles a URN key: an attribute qualified with the core or a
// declared extension URN, or an extension object.
func (n *normalizer) qualified(k string, v any) *Error {
	if i := strings.LastIndexByte(k, ':'); i > 0 {
		urn, name := k[:i], k[i+1:]
		switch {
		case isOwnCore(urn, n.rt):
			if !validName(name) {
				return badRequest(InvalidValue, "the key %s is not an attribute of %s; send sub-attributes inside their attribute, e.g. \"name\": {\"givenName\": …}",
					quote(k), n.rt.Schema.Name)
			}
			return n.attr(name, v, k)
		case n.rt.Extension(urn) != nil && validName(name) && n.rt.Extension(k) == nil:
			return n.extAttr(n.rt.Extension(urn), name, v, k)
		}
	}
	return n.extension(k, v)
}

// attr adds the top-level attribute k (written as label).
func (n *normalizer) attr(k string, v any, label string) *Error {
	def := n.rt.Schema.Attr(k)
	if def == nil {
		if prev, dup := n.seen[k]; dup {
			return badRequest(InvalidValue, "attribute %s is given twice, as %s and %s; send it once", quote(k), quote(prev), quote(label))
		}
		n.seen[k] = label
		n.out[k] = dropNulls(v)
		return nil
	}
	if prev, dup := n.seen[def.Name]; dup {
		return badRequest(InvalidValue, "attribute %s is given twice, as %s and %s; send it once", quote(def.Name), quote(prev), quote(label))
	}
	n.seen[def.Name] = label
	if def.Mutability == ReadOnly || notStored(def) {
		return nil
	}
	cv, err := coerceAttr(def, v, def.Name, false)
	if err != nil {
		return err
	}
	n.out[def.Name] = cv
	return nil
}

// extension adds an extension object under the URN k.
func (n *normalizer) extension(k string, v any) *Error {
	m, ok := v.(map[string]any)
	if !ok {
		return badRequest(InvalidValue, "extension %s must be an object of its attributes, got %s", quote(k), describeType(v))
	}
	key := k
	var defs []*Attribute
	if s := n.rt.Extension(k); s != nil {
		key, defs = s.ID, s.Attributes
	}
	lk := strings.ToLower(key)
	if prev, dup := n.seen[lk]; dup {
		return badRequest(InvalidValue, "extension %s is given twice, as %s and %s; send it once", quote(key), quote(prev), quote(k))
	}
	n.seen[lk] = k
	ext, err := coerceObject(defs, m, key)
	if err != nil {
		return err
	}
	for _, d := range defs {
		if d.Mutability == ReadOnly {
			deleteKey(ext, d.Name)
		}
	}
	return n.mergeExt(key, ext, k)
}

// extAttr adds one attribute of the declared extension s, given as the key
// "<URN>:<name>".
func (n *normalizer) extAttr(s *Schema, name string, v any, label string) *Error {
	def := s.Attr(name)
	if def != nil {
		name = def.Name
		if def.Mutability == ReadOnly || notStored(def) {
			return nil
		}
	}
	cv, err := coerceAttr(def, v, s.ID+":"+name, false)
	if err != nil {
		return err
	}
	return n.mergeExt(s.ID, map[string]any{name: cv}, label)
}

// mergeExt merges attrs into the extension object at key; an attribute
// present in both is given twice.
func (n *normalizer) mergeExt(key string, attrs map[string]any, label string) *Error {
	cur, _ := n.out[key].(map[string]any)
	if cur == nil {
		if len(attrs) > 0 {
			n.out[key] = attrs
		}
		return nil
	}
	for a, v := range attrs {
		if _, dup := cur[a]; dup {
			return badRequest(InvalidValue, "attribute %s is given twice, in %s and as %s; send it once", quote(key+":"+a), quote(key), quote(label))
		}
		cur[a] = v
	}
	return nil
}

// notStored reports whether values of def are never kept: write-only or
// never returned attributes (password). They are accepted and dropped.
func notStored(def *Attribute) bool {
	return def != nil && (def.Mutability == WriteOnly || def.Returned == ReturnedNever)
}

// isOwnCore reports whether urn is rt's core schema URN, whose attributes
// live at the top level of a document (either core URN when rt is nil).
func isOwnCore(urn string, rt *ResourceType) bool {
	if rt == nil || rt.Schema == nil {
		return isCoreURN(urn, nil)
	}
	return strings.EqualFold(urn, rt.Schema.ID)
}

// onePrimary leaves at most one element of list with primary true: the
// first of those prefer selects (nil: none), else the first; the others get
// primary false.
func onePrimary(list []any, prefer func(i int) bool) {
	keep := -1
	for i, e := range list {
		if isPrimary(e) && (keep < 0 || prefer != nil && prefer(i) && !prefer(keep)) {
			keep = i
		}
	}
	for i, e := range list {
		if i != keep && isPrimary(e) {
			m := e.(map[string]any)
			k, _ := findKey(m, "primary")
			m[k] = false
		}
	}
}

// Missing returns the name of the first required attribute of rt's core
// schema (other than read-only ones such as id) that doc lacks or has empty
// (null, "", [] or {}), and "" when all are present. The gateway answers a
// POST or PUT without userName (or a Group without displayName) with
// 400 invalidValue naming it.
func Missing(doc map[string]any, rt *ResourceType) string {
	if rt == nil || rt.Schema == nil {
		return ""
	}
	for _, d := range rt.Schema.Attributes {
		if !d.Required || d.Mutability == ReadOnly {
			continue
		}
		if v, _ := Get(doc, d.Name); !isPresent(v) {
			return d.Name
		}
	}
	return ""
}

// SplitAttr takes the top-level attribute attr out of obj (a POST or PUT
// body, or the value of a path-less PATCH operation) however it is
// qualified: attr in any case, "<core URN>:attr", or attr inside an object
// under the core URN key. It returns attr's value, whether it was there,
// and a shallow copy of obj without it (obj is not modified). Given more
// than once, it is a 400 invalidValue *Error. rt selects the core URN (nil:
// either). The store uses it to keep group members, which live in its
// membership index, out of the stored document, as Normalize would merge a
// qualified "members" into it.
func SplitAttr(obj map[string]any, attr string, rt *ResourceType) (value any, found bool, rest map[string]any, err error) {
	rest = make(map[string]any, len(obj))
	var from string
	take := func(v any, label string) error {
		if found {
			return badRequest(InvalidValue, "attribute %s is given twice, as %s and %s; send it once", quote(attr), quote(from), quote(label))
		}
		value, found, from = v, true, label
		return nil
	}
	for _, k := range sortedKeys(obj) {
		v := obj[k]
		switch {
		case strings.EqualFold(k, attr):
			err = take(v, k)
		case isOwnCore(k, rt):
			m, ok := v.(map[string]any)
			if !ok {
				rest[k] = v // Normalize reports it
				continue
			}
			cm := make(map[string]any, len(m))
			for _, ck := range sortedKeys(m) {
				if strings.EqualFold(ck, attr) {
					if err = take(m[ck], k+":"+ck); err != nil {
						break
					}
					continue
				}
				cm[ck] = m[ck]
			}
			rest[k] = cm
		case hasURNPrefix(k) && strings.LastIndexByte(k, ':') > 0 &&
			isOwnCore(k[:strings.LastIndexByte(k, ':')], rt) && strings.EqualFold(k[strings.LastIndexByte(k, ':')+1:], attr):
			err = take(v, k)
		default:
			rest[k] = v
		}
		if err != nil {
			return nil, false, nil, err
		}
	}
	return value, found, rest, nil
}
