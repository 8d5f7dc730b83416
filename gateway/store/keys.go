package store

import (
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"unicode"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/text/cases"
	"golang.org/x/text/unicode/norm"
	"golang.org/x/text/unicode/rangetable"

	"github.com/scimgate/scimgate/gateway/scim"
)

// Index keys. Every uniqueness check and every lookup derives its key from
// the value the client sent through one of the two functions below, so a
// userName, a group's displayName, an email, a reference's value and the
// `userName eq` point lookup all agree on what "the same" means. The client's
// value itself is kept as sent, for display and in the document.

// foldKey is the key of a case-insensitive identifier (userName, group
// displayName, email, reference values): invisible characters removed (see
// invisible; new values containing them are refused, old ones still index
// consistently), surrounding white space trimmed, Unicode NFC, then full
// case folding (cases.Fold: "ſam" and "SAM" both give "sam", "Straße" gives
// "strasse"), recomposed to NFC because folding can decompose, and last
// each rune replaced by its case class's representative (caseClass).
func foldKey(s string) string {
	if isASCIIPrintable(s) { // the common case: nothing invisible, no allocation beyond lower-casing
		return lowerASCII(strings.TrimSpace(s))
	}
	s = strings.TrimSpace(stripInvisible(s))
	if isASCIIPrintable(s) {
		return lowerASCII(s)
	}
	// A Caser keeps state, so each call makes its own.
	return caseClasses(norm.NFC.String(cases.Fold().String(norm.NFC.String(s))))
}

// caseClasses makes foldKey idempotent by construction. cases.Fold is not:
// for Cherokee it maps each small letter to its capital (as Unicode's
// CaseFolding.txt does) and each capital back to the small letter, so
// "ꮪ" → "Ꮪ" → "ꮪ", and two names differing only in Cherokee case could
// get different keys. Every rune Fold leaves unfixed is replaced by the
// smallest rune of its simple case class (unicode.SimpleFold's orbit), the
// one representative every member of the class maps to; a rune of such a
// class is replaced by the same representative whatever Fold did to it
// first. Runes Fold fixes (every ASCII letter, "é", "ß"'s "ss") are kept,
// so keys written by schema 2 are unchanged except where they held such a
// class (the schema 3 migration re-keys them).
func caseClasses(s string) string {
	unstable := unstableFold()
	i := strings.IndexFunc(s, func(r rune) bool { return unstable[r] })
	if i < 0 {
		return s
	}
	return s[:i] + strings.Map(func(r rune) rune {
		if unstable[r] {
			return classMin(r)
		}
		return r
	}, s[i:])
}

// classMin returns the smallest rune of r's simple case-folding orbit.
func classMin(r rune) rune {
	min := r
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		if f < min {
			min = f
		}
	}
	return min
}

// unstableFold is the set of runes that belong to a case class in which
// cases.Fold does not settle: folding a rune of the class gives a rune that
// folding changes again. Computed once from the tables (about 2,800 runes
// have a case class; 172, the Cherokee letters, are unstable with
// golang.org/x/text v0.43.0).
var unstableFold = sync.OnceValue(func() map[rune]bool {
	set := map[rune]bool{}
	fold := cases.Fold()
	for r := rune(0x80); r <= unicode.MaxRune; r++ {
		if unicode.SimpleFold(r) == r {
			continue
		}
		f := fold.String(string(r))
		if fold.String(f) == f {
			continue
		}
		set[r] = true
		for g := unicode.SimpleFold(r); g != r; g = unicode.SimpleFold(g) {
			set[g] = true
		}
	}
	return set
})

// exactKey is the key of a case-exact identifier: externalId, which RFC 7643
// §3.1 declares caseExact. Trimmed and NFC (the same characters in another
// encoding are the same identifier), not folded.
func exactKey(s string) string {
	if isASCIIPrintable(s) {
		return strings.TrimSpace(s)
	}
	s = strings.TrimSpace(stripInvisible(s))
	if isASCIIPrintable(s) {
		return s
	}
	return norm.NFC.String(s)
}

// invisible reports the characters refused in identifiers: control
// characters (Cc, NUL and TAB included), the line and paragraph separators,
// and every Unicode Default_Ignorable_Code_Point — characters a renderer
// shows as nothing: the format characters (Cf: zero-width space, joiners,
// word joiner, BOM, soft hyphen, bidirectional controls), the variation
// selectors (U+FE00–FE0F, U+E0100–E01EF, the Mongolian ones), and the
// Other_Default_Ignorable_Code_Point ones (U+034F combining grapheme
// joiner, the Hangul fillers U+115F, U+1160, U+3164, U+FFA0, tags and the
// code points reserved for more of them). They make look-alike duplicates,
// and a NUL would break the value 0x00 id layout of the index keys.
//
// Default_Ignorable_Code_Point is derived (Unicode's DerivedCoreProperties)
// as Other_Default_Ignorable_Code_Point + Cf + Variation_Selector, less a
// few visible format characters (Cf: U+FFF9–FFFB, Egyptian format
// controls, prepended concatenation marks) and White_Space; all of Cf stays
// refused here, so the set is that union, built from the unicode package's
// tables (the Unicode version Go ships), not a list of our own.
func invisible(r rune) bool {
	if r < 0x80 {
		return r < 0x20 || r == 0x7f
	}
	return unicode.Is(refusedTable, r)
}

// refusedTable is what invisible refuses beyond ASCII.
var refusedTable = rangetable.Merge(unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp,
	unicode.Other_Default_Ignorable_Code_Point, unicode.Variation_Selector)

func stripInvisible(s string) string {
	if strings.IndexFunc(s, invisible) < 0 {
		return s
	}
	return strings.Map(func(r rune) rune {
		if invisible(r) {
			return -1
		}
		return r
	}, s)
}

// isASCIIPrintable reports whether s is only 0x20–0x7E: none of them is
// invisible (controls are below 0x20 and 0x7F).
func isASCIIPrintable(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f {
			return false
		}
	}
	return true
}

func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}

// checkIdentifier refuses an identifier value that contains an invisible
// character, with a 400 invalidValue naming the attribute, the character's
// class and code point and its position, never the value itself (it may be
// an email address).
func checkIdentifier(attr, value string) error {
	if isASCIIPrintable(value) { // printable ASCII holds no invisible character
		return nil
	}
	pos := 0
	for _, r := range value {
		pos++
		if !invisible(r) {
			continue
		}
		class := "a format (invisible) character"
		switch {
		case r == 0:
			class = "a NUL character"
		case unicode.IsControl(r):
			class = "a control character"
		case r == 0x200b || r == 0x200c || r == 0x200d || r == 0x2060 || r == 0xfeff:
			class = "a zero-width character"
		case (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) || r == 0x200e || r == 0x200f || r == 0x061c:
			class = "a bidirectional control character"
		case r == 0x2028 || r == 0x2029:
			class = "a line or paragraph separator"
		case unicode.Is(unicode.Variation_Selector, r):
			class = "a variation selector (invisible)"
		case unicode.Is(unicode.Other_Default_Ignorable_Code_Point, r):
			class = "a default-ignorable (invisible) character"
		}
		return scim.Errorf(http.StatusBadRequest, scim.InvalidValue,
			"%s contains %s (U+%04X) at character %d; identifiers must not contain control, zero-width, bidirectional formatting or other invisible (Unicode default-ignorable) characters: correct the value in the identity provider",
			attr, class, r, pos)
	}
	return nil
}

// checkID refuses a resource id (from a URL path or a member value) that
// could not be an id: ids are never empty and never contain invisible
// characters.
func checkID(attr, id string) error {
	if id == "" {
		return scim.Errorf(http.StatusBadRequest, scim.InvalidValue, "%s is empty: give the id scimgate returned", attr)
	}
	return checkIdentifier(attr, id)
}

// userIdentifiers checks the identifying attributes of a user document:
// userName, externalId and every email value. Values that prev (the
// stored document; nil on create) already has pass: a user stored before
// values were checked can still be deactivated or changed otherwise.
func userIdentifiers(doc, prev map[string]any) error {
	if err := checkChanged("userName", stringAttr(doc, "userName"), stringAttr(prev, "userName")); err != nil {
		return err
	}
	if err := checkChanged("externalId", externalIDOf(doc), externalIDOf(prev)); err != nil {
		return err
	}
	had := map[string]bool{}
	for _, e := range emailValues(prev) {
		had[e] = true
	}
	for i, e := range emailValues(doc) {
		if !had[e] {
			if err := checkIdentifier(fmt.Sprintf("emails[%d].value", i), e); err != nil {
				return err
			}
		}
	}
	return nil
}

// groupIdentifiers checks a group's displayName and externalId, as
// userIdentifiers does.
func groupIdentifiers(doc, prev map[string]any) error {
	if err := checkChanged("displayName", stringAttr(doc, "displayName"), stringAttr(prev, "displayName")); err != nil {
		return err
	}
	return checkChanged("externalId", externalIDOf(doc), externalIDOf(prev))
}

func checkChanged(attr, value, prev string) error {
	if value == prev {
		return nil
	}
	return checkIdentifier(attr, value)
}

func stringAttr(doc map[string]any, attr string) string {
	if doc == nil {
		return ""
	}
	v, _ := scim.Get(doc, attr)
	s, _ := v.(string)
	return s
}

// emailValues returns a user's email values as sent.
func emailValues(doc map[string]any) []string {
	if doc == nil {
		return nil
	}
	var out []string
	v, _ := scim.Get(doc, "emails")
	list, _ := v.([]any)
	for _, e := range list {
		m, _ := e.(map[string]any)
		if s := stringAttr(m, "value"); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// idsByPrefix returns the ids under "value 0x00 id" keys of b. The id part
// must be a whole id (no further 0x00): a value that once contained a NUL
// (written before values were checked) can never make a lookup of a shorter
// value return "rest 0x00 id".
func idsByPrefix(b *bolt.Bucket, value string) []string {
	var ids []string
	scanPrefix(b, value, func(id, _ []byte) bool {
		ids = append(ids, string(id))
		return true
	})
	return ids
}

// scanPrefix calls fn for each "head 0x00 tail" key of b, in key order,
// with the tail (a whole id: never empty, never containing 0x00) and the
// value, until fn returns false. Slices are valid only inside fn.
func scanPrefix(b *bolt.Bucket, head string, fn func(tail, v []byte) bool) {
	prefix := []byte(head + "\x00")
	c := b.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if tail := k[len(prefix):]; len(tail) > 0 && bytes.IndexByte(tail, 0) < 0 && !fn(tail, v) {
			return
		}
	}
}
