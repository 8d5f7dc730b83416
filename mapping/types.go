package mapping

import (
	"encoding/json"
	"math"
	"net/mail"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/text/language"
)

// valueError is a value a type or transform rejects. msg continues the
// value's description: `"12/03/2024"` + ` is not a date in the form yyyy-MM-dd`.
type valueError struct {
	val any
	msg string
}

// text renders the error with the value (for the IdP) or without it (for
// warnings, which end up in logs).
func (e *valueError) text(withValue bool) string {
	return describe(e.val, withValue) + " " + e.msg
}

// describe names a value in an error: quoted text, a number, "an object".
func describe(v any, withValue bool) string {
	switch v := v.(type) {
	case map[string]any:
		return "an object"
	case []any:
		return "a list"
	case nil:
		return "null"
	case string:
		if !withValue {
			return "the value"
		}
		const max = 64
		if len(v) > max {
			cut := max
			for cut > 0 && !utf8.RuneStart(v[cut]) {
				cut--
			}
			return strconv.Quote(v[:cut]) + "…"
		}
		return strconv.Quote(v)
	}
	if !withValue {
		return "the value"
	}
	s, _ := toText(v)
	return s
}

// converter checks and converts the non-empty values a rule produced into
// the record's value.
type converter func(vals []any) (any, *valueError)

// typeNames lists the types in the order the docs present them.
var typeNames = []string{"string", "bool", "int", "email", "date", "datetime", "timezone",
	"language", "country", "enum", "regex", "list", "object"}

// toText turns a scalar into text; objects and lists are not text.
func toText(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case json.Number:
		return string(v), true
	case bool:
		return strconv.FormatBool(v), true
	case int64:
		return strconv.FormatInt(v, 10), true
	case int:
		return strconv.Itoa(v), true
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), true
	}
	return "", false
}

// scalar adapts a one-value check to a converter: a scalar type takes the
// first value of a multi-valued source.
func scalar(f func(v any) (any, *valueError)) converter {
	return func(vals []any) (any, *valueError) { return f(vals[0]) }
}

// textual adapts a check of text to a converter; msg describes a value
// that fails it ("is not an integer").
func textual(msg string, f func(s string) (string, bool)) converter {
	return scalar(func(v any) (any, *valueError) {
		s, ok := toText(v)
		if ok {
			if out, ok := f(s); ok {
				if _, isString := v.(string); isString && out == s {
					return v, nil // already boxed: no allocation
				}
				return out, nil
			}
		}
		return nil, &valueError{val: v, msg: msg}
	})
}

func convertString(v any) (any, *valueError) {
	if _, ok := v.(string); ok {
		return v, nil
	}
	if s, ok := toText(v); ok {
		return s, nil
	}
	return nil, &valueError{val: v, msg: "is not text"}
}

// toBool accepts JSON booleans and the strings "true"/"false" in any case
// (Entra and some Okta templates send "False").
func toBool(v any) (bool, bool) {
	switch v := v.(type) {
	case bool:
		return v, true
	case string:
		switch {
		case strings.EqualFold(v, "true"):
			return true, true
		case strings.EqualFold(v, "false"):
			return false, true
		}
	}
	return false, false
}

func convertBool(v any) (any, *valueError) {
	if b, ok := toBool(v); ok {
		return b, nil
	}
	return nil, &valueError{val: v, msg: "is not a boolean (true or false)"}
}

func convertInt(v any) (any, *valueError) {
	switch n := v.(type) {
	case int64:
		return n, nil
	case int:
		return int64(n), nil
	case json.Number:
		if i, err := strconv.ParseInt(string(n), 10, 64); err == nil {
			return i, nil
		}
		if f, err := n.Float64(); err == nil && f == math.Trunc(f) && math.Abs(f) < 1<<63 {
			return int64(f), nil
		}
	case float64:
		if n == math.Trunc(n) && math.Abs(n) < 1<<63 {
			return int64(n), nil
		}
	case string:
		if i, err := strconv.ParseInt(n, 10, 64); err == nil {
			return i, nil
		}
	}
	return nil, &valueError{val: v, msg: "is not an integer"}
}

// isEmail accepts a bare RFC 5322 addr-spec: no display name, no angle
// brackets, nothing around it.
func isEmail(s string) (string, bool) {
	a, err := mail.ParseAddress(s)
	if err != nil || a.Name != "" || a.Address != s {
		return "", false
	}
	return s, true
}

func isDateTime(s string) (string, bool) {
	if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
		return "", false
	}
	return s, true
}

// zones caches time zone names that time.LoadLocation accepted: it reads
// the zoneinfo database on every call.
type zones struct{ ok sync.Map }

func (z *zones) valid(s string) (string, bool) {
	if _, ok := z.ok.Load(s); ok {
		return s, true
	}
	// "" and "Local" load without error but name no zone.
	if s == "" || s == "Local" {
		return "", false
	}
	if _, err := time.LoadLocation(s); err != nil {
		return "", false
	}
	z.ok.Store(s, struct{}{})
	return s, true
}

// isLanguage accepts a BCP 47 tag ("en_US" too) and returns its canonical
// form ("en-us" → "en-US").
func isLanguage(s string) (string, bool) {
	tag, err := language.Parse(s)
	if err != nil || tag == language.Und {
		return "", false
	}
	return tag.String(), true
}

// isCountry accepts an ISO 3166-1 alpha-2 code in any case and returns it
// in upper case.
func isCountry(s string) (string, bool) {
	if len(s) != 2 {
		return "", false
	}
	b := [2]byte{upper(s[0]), upper(s[1])}
	if _, ok := countries[string(b[:])]; !ok {
		return "", false
	}
	if b[0] == s[0] && b[1] == s[1] {
		return s, true
	}
	return string(b[:]), true
}

func upper(c byte) byte {
	if 'a' <= c && c <= 'z' {
		return c - 'a' + 'A'
	}
	return c
}

func convertList(vals []any) (any, *valueError) {
	out := make([]any, len(vals))
	for i, v := range vals {
		out[i] = normalize(v)
	}
	return out, nil
}

func convertObject(vals []any) (any, *valueError) {
	if len(vals) == 1 {
		return normalize(vals[0]), nil
	}
	return convertList(vals)
}

// enumConverter matches values case-insensitively and returns the
// canonical spelling.
func enumConverter(values []string) (converter, error) {
	if len(values) == 0 {
		return nil, errf(ErrMissing, "type enum needs values: [...]")
	}
	folded := make(map[string]string, len(values))
	for _, v := range values {
		k := strings.ToLower(v)
		if prev, ok := folded[k]; ok {
			return nil, errf(ErrConflict, "enum values %q and %q differ only in case", prev, v)
		}
		folded[k] = v
	}
	return textual("is not one of "+strings.Join(values, ", "), func(s string) (string, bool) {
		if c, ok := folded[s]; ok {
			return c, true
		}
		c, ok := folded[strings.ToLower(s)]
		return c, ok
	}), nil
}

func regexConverter(pattern string) (converter, error) {
	if pattern == "" {
		return nil, errf(ErrMissing, "type regex needs a pattern")
	}
	if _, err := regexp.Compile(pattern); err != nil {
		return nil, errf(ErrInvalid, "invalid pattern: %w", err)
	}
	re, err := regexp.Compile(`^(?:` + pattern + `)$`)
	if err != nil {
		return nil, errf(ErrInvalid, "invalid pattern: %w", err)
	}
	return textual("does not match the pattern "+pattern, func(s string) (string, bool) {
		return s, re.MatchString(s)
	}), nil
}

// dateLayout is a date format such as "yyyy-MM-dd" compiled into tokens
// and literals. Go layouts are not used because a literal such as "Jan" or
// "1" would be read as a layout element.
type dateLayout struct {
	text  string
	parts []datePart
}

type datePart struct {
	tok byte // 'y', 'M', 'd', or 0 for a literal
	lit string
}

func (p datePart) width() int {
	if p.tok == 'y' {
		return 4
	}
	return 2
}

func parseDateLayout(format string) (*dateLayout, error) {
	l := &dateLayout{text: format}
	seen := map[byte]bool{}
	for i := 0; i < len(format); {
		c := format[i]
		if isLetter(c) {
			n := 1
			for i+n < len(format) && format[i+n] == c {
				n++
			}
			tok := format[i : i+n]
			switch tok {
			case "yyyy", "MM", "dd":
			default:
				return nil, errf(ErrInvalid, "invalid date format %q: %q is not a token (use yyyy, MM and dd; letters cannot be literals)", format, tok)
			}
			if seen[c] {
				return nil, errf(ErrInvalid, "invalid date format %q: %s appears twice", format, tok)
			}
			seen[c] = true
			l.parts = append(l.parts, datePart{tok: c})
			i += n
			continue
		}
		j := i
		for j < len(format) && !isLetter(format[j]) {
			j++
		}
		l.parts = append(l.parts, datePart{lit: format[i:j]})
		i = j
	}
	if !seen['y'] || !seen['M'] || !seen['d'] {
		return nil, errf(ErrInvalid, "invalid date format %q: want each of yyyy, MM and dd", format)
	}
	return l, nil
}

func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

// parse reads a date in the layout and checks that it exists: inForm
// reports whether s has the layout's form, ok whether it also names a day
// of the calendar (not 2024-02-30, 2024-13-01 or year 0).
func (l *dateLayout) parse(s string) (y, m, d int, ok bool) {
	y, m, d, inForm := l.read(s)
	if !inForm || y < 1 || m < 1 || m > 12 || d < 1 {
		return 0, 0, 0, false
	}
	// time.Date normalises 31 April into 1 May: a date that moves is invalid.
	t := time.Date(y, time.Month(m), d, 0, 0, 0, 0, time.UTC)
	return y, m, d, t.Day() == d
}

// read reads the numbers of a date in the layout without checking that
// they make a day; inForm reports whether s has the layout's form.
func (l *dateLayout) read(s string) (y, m, d int, inForm bool) {
	for _, p := range l.parts {
		if p.tok == 0 {
			if !strings.HasPrefix(s, p.lit) {
				return 0, 0, 0, false
			}
			s = s[len(p.lit):]
			continue
		}
		w := p.width()
		if len(s) < w {
			return 0, 0, 0, false
		}
		n := 0
		for i := range w {
			c := s[i]
			if c < '0' || c > '9' {
				return 0, 0, 0, false
			}
			n = n*10 + int(c-'0')
		}
		s = s[w:]
		switch p.tok {
		case 'y':
			y = n
		case 'M':
			m = n
		case 'd':
			d = n
		}
	}
	return y, m, d, s == ""
}

func (l *dateLayout) format(y, m, d int) string {
	b := make([]byte, 0, len(l.text))
	for _, p := range l.parts {
		switch p.tok {
		case 0:
			b = append(b, p.lit...)
		case 'y':
			b = appendPadded(b, y, 4)
		case 'M':
			b = appendPadded(b, m, 2)
		case 'd':
			b = appendPadded(b, d, 2)
		}
	}
	return string(b)
}

func appendPadded(b []byte, n, w int) []byte {
	s := strconv.Itoa(n)
	for range w - len(s) {
		b = append(b, '0')
	}
	return append(b, s...)
}

func dateConverter(format, output string) (converter, error) {
	if format == "" {
		format = "yyyy-MM-dd"
	}
	in, err := parseDateLayout(format)
	if err != nil {
		return nil, &FieldError{Field: "format", Err: err}
	}
	out := in
	if output != "" && output != format {
		if out, err = parseDateLayout(output); err != nil {
			return nil, &FieldError{Field: "output_format", Err: err}
		}
	}
	notInForm := "is not a date in the form " + format
	return scalar(func(v any) (any, *valueError) {
		s, ok := toText(v)
		if !ok {
			return nil, &valueError{val: v, msg: notInForm}
		}
		y, m, d, ok := in.parse(s)
		switch {
		case !ok:
			if _, _, _, inForm := in.read(s); inForm {
				return nil, &valueError{val: v, msg: "is not a valid date: that day does not exist"}
			}
			return nil, &valueError{val: v, msg: notInForm}
		case out != in:
			return out.format(y, m, d), nil
		case isString(v):
			return v, nil // already boxed: no allocation
		}
		return s, nil
	}), nil
}

// normalize turns a decoded value into the record's value types: numbers
// become int64 (or float64), YAML times become text, and maps and lists
// are copied so the record never shares memory with the SCIM document.
func normalize(v any) any {
	switch v := v.(type) {
	case json.Number:
		if i, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			return i
		}
		if f, err := v.Float64(); err == nil {
			return f
		}
		return string(v)
	case int:
		return int64(v)
	case int32:
		return int64(v)
	case uint64:
		if v <= math.MaxInt64 {
			return int64(v)
		}
		return float64(v)
	case float32:
		return float64(v)
	case time.Time:
		if v.Equal(time.Date(v.Year(), v.Month(), v.Day(), 0, 0, 0, 0, time.UTC)) {
			return v.Format(time.DateOnly)
		}
		return v.Format(time.RFC3339Nano)
	case map[string]any:
		m := make(map[string]any, len(v))
		for k, x := range v {
			m[k] = normalize(x)
		}
		return m
	case []any:
		l := make([]any, len(v))
		for i, x := range v {
			l[i] = normalize(x)
		}
		return l
	}
	return v
}
