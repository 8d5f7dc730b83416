package scim

import "strings"

// Normalize prepares a resource a client sent in a POST or PUT body for
// storage. It returns a new map (doc is not modified) in which
//   - known attribute names, sub-attribute names and extension URNs take the
//     schema's case ("USERNAME" → "userName", "Primary" → "primary");
//   - read-only attributes (id, meta, groups) and password (writeOnly,
//     returned never) are removed; read-only sub-attributes are kept;
//   - booleans given as "True"/"False" strings become bools;
//   - a manager given as a bare string becomes {"value": s};
//   - explicit nulls are dropped, at any depth;
//   - "schemas" is kept as sent; attributes the schema does not define and
//     extension objects under undeclared URNs are kept generically.
//
// A wrongly typed value of a known attribute (userName as a number or an
// object, active as "maybe", emails as a string) or a known attribute given
// twice in different case is an *Error with status 400 and scimType
// invalidValue naming the attribute and the expected type. Normalize does
// not check that required attributes are present; use Missing for that. A
// nil rt only drops nulls.
func Normalize(doc map[string]any, rt *ResourceType) (map[string]any, error) {
	out := make(map[string]any, len(doc))
	seen := make(map[string]string, len(doc))
	for _, k := range sortedKeys(doc) {
		v := doc[k]
		if v == nil {
			continue
		}
		if strings.EqualFold(k, "schemas") {
			out[k] = DeepCopy(v)
			continue
		}
		if rt == nil {
			out[k] = dropNulls(v)
			continue
		}
		if hasURNPrefix(k) && !isCoreURN(k, rt) {
			m, ok := v.(map[string]any)
			if !ok {
				return nil, badRequest(InvalidValue, "extension %s must be an object, got %s", quote(k), describe(v))
			}
			key := k
			var defs []*Attribute
			if s := rt.Extension(k); s != nil {
				key, defs = s.ID, s.Attributes
			}
			if prev, dup := seen[strings.ToLower(key)]; dup {
				return nil, badRequest(InvalidValue, "extension %s is given twice, as %s and %s; send it once", quote(key), quote(prev), quote(k))
			}
			seen[strings.ToLower(key)] = k
			ext, err := coerceObject(defs, m, key)
			if err != nil {
				return nil, err
			}
			for _, d := range defs {
				if d.Mutability == ReadOnly || d.Returned == ReturnedNever {
					deleteKey(ext, d.Name)
				}
			}
			if len(ext) > 0 {
				out[key] = ext
			}
			continue
		}
		def := rt.Schema.Attr(k)
		if def == nil {
			out[k] = dropNulls(v)
			continue
		}
		if prev, dup := seen[def.Name]; dup {
			return nil, badRequest(InvalidValue, "attribute %s is given twice, as %s and %s; send it once", quote(def.Name), quote(prev), quote(k))
		}
		seen[def.Name] = k
		if def.Mutability == ReadOnly || def.Returned == ReturnedNever {
			continue
		}
		cv, err := coerceAttr(def, v, def.Name, false)
		if err != nil {
			return nil, err
		}
		out[def.Name] = cv
	}
	return out, nil
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
