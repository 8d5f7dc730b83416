package mapping

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"

	"gopkg.in/yaml.v3"
)

// Fingerprint identifies what the mapping makes of a resource: the
// compiled rules (user, group, match) and the parts of the catalog that
// decide whether a user is accepted (types, attributes, required,
// multi-valued, value ids). Two mappers with the same fingerprint make the
// same record of the same resource (and accept the same resources); a
// change of anything else (descriptions, display names, extensions
// declared for /Schemas) keeps it. It is 16 lower-case hex digits. The
// store keeps it with every record, so a changed mapping is found and
// applied to the records already stored.
func (m *Mapper) Fingerprint() string {
	if p := m.fp.Load(); p != nil {
		return *p
	}
	return ""
}

// setFingerprint computes the fingerprint from the rules' sum and cat.
func (m *Mapper) setFingerprint(cat []CatalogType) {
	h := sha256.New()
	h.Write(m.rulesSum[:])
	type catValue struct {
		Name, Attribute string
		Required, Multi bool
		Values          []string
	}
	vals := make([]catValue, 0, len(cat))
	for _, t := range cat {
		v := catValue{Name: t.Name, Attribute: t.Attribute, Required: t.Required, Multi: t.IsMultiValued()}
		for _, x := range t.Values {
			v.Values = append(v.Values, x.ID)
		}
		vals = append(vals, v)
	}
	writeCanonical(h, vals)
	fp := hex.EncodeToString(h.Sum(nil)[:8])
	m.fp.Store(&fp)
}

// rulesSum is the hash of the parts of r that decide a record.
func rulesSum(r Rules) [32]byte {
	h := sha256.New()
	writeCanonical(h, struct {
		Match       string
		User, Group []Rule
	}{r.Match, r.User, r.Group})
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

// writeCanonical writes v to h as JSON (maps with sorted keys), or YAML
// when JSON cannot encode it.
func writeCanonical(h hash.Hash, v any) {
	if b, err := json.Marshal(v); err == nil {
		h.Write(b)
		return
	}
	if b, err := yaml.Marshal(v); err == nil {
		h.Write(b)
		return
	}
	fmt.Fprintf(h, "%v", v)
}
