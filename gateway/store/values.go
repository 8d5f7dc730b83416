package store

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/scimgate/scimgate/gateway/scim"
)

// Values of every string attribute. Identifiers are held
// to a stricter rule (checkIdentifier: nothing invisible at all); every
// other string attribute — displayName, name.givenName, title, an
// address's formatted, an extension's department, a member's display —
// must not hold a control character other than TAB, LF and CR: not NUL,
// which PostgreSQL's text type refuses (a receiver would fail on the
// forwarded "\u0000" forever), nor the other C0 controls, DEL or the C1
// controls (U+0080–U+009F), which no IdP sends on purpose and which are
// invisible in every admin UI. TAB, LF and CR stay allowed: a multi-line
// addresses[].formatted is legitimate, PostgreSQL stores them, and JSON
// carries them escaped.

// refusedControl reports a character refused in every string attribute.
func refusedControl(r rune) bool {
	return r < 0x20 && r != '\t' && r != '\n' && r != '\r' || 0x7f <= r && r <= 0x9f
}

// checkStrings refuses a document in which a string value (or an attribute
// name) holds a refusedControl character, with a 400 invalidValue naming
// the attribute, the code point and its position, never the value. A value
// prev (the stored document; nil on create) already holds passes, so a
// resource stored before values were checked can still be changed
// otherwise.
func checkStrings(doc, prev map[string]any) error {
	var had map[string]bool
	return walkStrings(doc, "", func(attr, s string) error {
		i := strings.IndexFunc(s, refusedControl)
		if i < 0 {
			return nil
		}
		if had == nil {
			had = map[string]bool{}
			_ = walkStrings(prev, "", func(_, v string) error { had[v] = true; return nil })
		}
		if had[s] {
			return nil
		}
		return controlError(attr, s, i)
	})
}

// checkControl refuses one string attribute value as checkStrings does.
func checkControl(attr, s string) error {
	if i := strings.IndexFunc(s, refusedControl); i >= 0 {
		return controlError(attr, s, i)
	}
	return nil
}

func controlError(attr, s string, i int) error {
	r, _ := utf8.DecodeRuneInString(s[i:])
	what := "a control character"
	if r == 0 {
		what = "a NUL character"
	}
	return scim.Errorf(http.StatusBadRequest, scim.InvalidValue,
		"%s contains %s (U+%04X) at character %d; string attributes must not contain NUL or other control characters (tab, line feed and carriage return are allowed): correct the value in the identity provider",
		attr, what, r, utf8.RuneCountInString(s[:i])+1)
}

// walkStrings calls fn with the SCIM path of every string in v, and of
// every attribute name, in a stable order: "name.givenName",
// "emails[1].display", "urn:…:enterprise:2.0:User:department".
func walkStrings(v any, path string, fn func(attr, s string) error) error {
	return walk(v, path, false, fn)
}

// walk is walkStrings; urn says path is a top-level extension URN, whose
// attributes are named "<urn>:<attr>".
func walk(v any, path string, urn bool, fn func(attr, s string) error) error {
	switch v := v.(type) {
	case string:
		return fn(path, v)
	case []any:
		for i, e := range v {
			if err := walk(e, path+"["+strconv.Itoa(i)+"]", false, fn); err != nil {
				return err
			}
		}
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			sub := k
			switch {
			case path == "":
			case urn:
				sub = path + ":" + k
			default:
				sub = path + "." + k
			}
			if strings.IndexFunc(k, refusedControl) >= 0 {
				if err := fn(attributeNameOf(sub), k); err != nil {
					return err
				}
			}
			if err := walk(v[k], sub, path == "" && strings.HasPrefix(k, "urn:"), fn); err != nil {
				return err
			}
		}
	}
	return nil
}

func attributeNameOf(path string) string { return "the name of attribute " + strconv.Quote(path) }

// sizeSlack is how much an update may grow a resource past
// max_resource_bytes, or one already past it (stored before the bound, or
// under a larger one): the few bytes of a deactivation ("active": false is
// one byte longer) or a changed name, so such a resource can still be
// deactivated, shrunk or deleted; a list of values cannot grow it (that
// would take a write per 256 bytes).
const sizeSlack = 256

// checkSize refuses a client write that would store a resource of kind k
// (encoded as enc) larger than scim.limits.max_resource_bytes, with 413
// naming the limit and changing nothing. prev is the size of the stored
// form it replaces (0 on create).
func (s *Store) checkSize(k *kind, enc encoded, prev int) error {
	limit := s.lim.Load().MaxResourceBytes
	n := len(enc.full)
	if enc.full == nil {
		n = len(enc.head) + len(enc.tail) + 20
	}
	if n <= limit || prev > 0 && n <= prev+sizeSlack {
		return nil
	}
	return scim.Errorf(http.StatusRequestEntityTooLarge, "",
		"the %s would take %d bytes stored, more than the limit of %d (scim.limits.max_resource_bytes): send fewer values (emails, phone numbers, addresses, roles …) in the identity provider, or raise the limit",
		strings.ToLower(k.name), n, limit)
}
