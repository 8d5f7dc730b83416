package scim

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Limits of ParseFilter and ParsePath.
const (
	maxFilterLen   = 4096 // bytes
	maxFilterDepth = 64   // nested parentheses, "not" and value filters
)

// opKind is a node kind of the filter AST: a logical operator, a value
// filter without comparison, or a comparison operator.
type opKind uint8

const (
	opAnd opKind = iota + 1
	opOr
	opNot
	opValuePath // emails[type eq "work"] on its own
	opPr
	opEq
	opNe
	opCo
	opSw
	opEw
	opGt
	opLt
	opGe
	opLe
)

var opNames = [...]string{opAnd: "and", opOr: "or", opNot: "not", opPr: "pr", opEq: "eq", opNe: "ne",
	opCo: "co", opSw: "sw", opEw: "ew", opGt: "gt", opLt: "lt", opGe: "ge", opLe: "le"}

// lookupOp returns the comparison operator named w (any case), or 0.
func lookupOp(w string) opKind {
	if len(w) != 2 {
		return 0
	}
	for k := opPr; k <= opLe; k++ {
		if strings.EqualFold(w, opNames[k]) {
			return k
		}
	}
	return 0
}

// isOrdering reports whether k is gt, lt, ge or le.
func (k opKind) isOrdering() bool { return k >= opGt && k <= opLe }

// valueKind is the JSON type of a filter's compValue.
type valueKind uint8

const (
	valString valueKind = iota + 1
	valNumber
	valBool
	valNull
)

// compValue is a filter's comparison value. For numbers s keeps the text as
// written, so String round-trips it.
type compValue struct {
	kind valueKind
	s    string    // string value, or number text
	n    float64   // number value
	b    bool      // boolean value
	t    time.Time // s parsed as a dateTime when tOK
	tOK  bool
}

// Filter is a parsed SCIM filter (RFC 7644 §3.4.2.2). The zero value is not
// useful; a Filter comes from ParseFilter or ParsePath and is immutable, so
// it is safe for concurrent use.
type Filter struct {
	op          opKind
	left, right *Filter // operands of and/or; left is the operand of not
	path        Path    // attribute of an attrExp or valuePath
	val         compValue
}

// ParseFilter parses a filter such as `userName eq "bjensen"`,
// `emails[type eq "work" and value co "@example.com"]`,
// `emails[type eq "work"].value eq "x"` or
// `name.FamilyName eq Employee and (emails.Value co example.com or not (title pr))`.
//
// Attribute names, operators and the logical operators are
// case-insensitive; "not" binds tighter than "and", which binds tighter than
// "or". A compValue is a JSON string, number, true, false or null, or, as
// Microsoft sends them, an unquoted token, which is a string unless it is
// one of the literals (in any case) or a JSON number. The input may be at
// most 4096 bytes and nest at most 64 levels. The error is an *Error with
// status 400 and scimType invalidFilter whose detail names the problem and
// its 0-based byte position, e.g. `filter "userName eq" is incomplete:
// expected a value after "eq" at position 11`.
func ParseFilter(s string) (*Filter, error) {
	p := parser{src: s, what: "filter", scimType: InvalidFilter}
	if len(s) > maxFilterLen {
		return nil, p.errorf("filter is %d bytes long; the limit is %d", len(s), maxFilterLen)
	}
	p.skipSpace()
	if p.pos == len(s) {
		return nil, p.errorf("filter is empty; expected an expression such as userName eq \"bjensen\"")
	}
	f, err := p.parseOr()
	if err != nil {
		return nil, err
	}
	p.skipSpace()
	if p.pos < len(s) {
		return nil, p.unexpected(`"and", "or" or the end of the filter`)
	}
	return f, nil
}

// parser is a recursive-descent parser for filters and paths.
type parser struct {
	src      string
	pos      int
	depth    int
	what     string // "filter" or "path", for error details
	scimType string
}

func (p *parser) errorf(format string, args ...any) *Error {
	return badRequest(p.scimType, format, args...)
}

// quoted returns the source for error details, shortened when long.
func (p *parser) quoted() string {
	s := p.src
	if len(s) > 120 {
		s = s[:120]
		for !utf8.ValidString(s) && len(s) > 0 {
			s = s[:len(s)-1]
		}
		return quote(s) + "…"
	}
	return quote(s)
}

// incomplete reports that the input ended where more was expected.
func (p *parser) incomplete(expected string) *Error {
	return p.errorf("%s %s is incomplete: expected %s at position %d", p.what, p.quoted(), expected, len(p.src))
}

// unexpected reports the token at p.pos, or incompleteness at the end.
func (p *parser) unexpected(expected string) *Error {
	if p.pos >= len(p.src) {
		return p.incomplete(expected)
	}
	tok := p.src[p.pos:]
	if n := p.scanWord(p.pos); n > p.pos {
		tok = p.src[p.pos:n]
	} else {
		_, size := utf8.DecodeRuneInString(tok)
		tok = tok[:size]
	}
	return p.errorf("%s %s: unexpected %s at position %d; expected %s", p.what, p.quoted(), quote(tok), p.pos, expected)
}

func (p *parser) skipSpace() {
	for p.pos < len(p.src) {
		switch p.src[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

// isDelim reports whether c ends a word.
func isDelim(c byte) bool {
	switch c {
	case ' ', '\t', '\n', '\r', '(', ')', '[', ']', '"':
		return true
	}
	return false
}

// scanWord returns the end of the word starting at i.
func (p *parser) scanWord(i int) int {
	for i < len(p.src) && !isDelim(p.src[i]) {
		i++
	}
	return i
}

func (p *parser) readWord() string {
	start := p.pos
	p.pos = p.scanWord(p.pos)
	return p.src[start:p.pos]
}

// peekWordFold reports whether the word at p.pos equals w case-insensitively.
func (p *parser) peekWordFold(w string) bool {
	end := p.scanWord(p.pos)
	return strings.EqualFold(p.src[p.pos:end], w)
}

func (p *parser) enter() *Error {
	p.depth++
	if p.depth > maxFilterDepth {
		return p.errorf("%s %s nests deeper than %d levels at position %d", p.what, p.quoted(), maxFilterDepth, p.pos)
	}
	return nil
}

// parseOr parses FILTER *("or" FILTER).
func (p *parser) parseOr() (*Filter, error) { return p.parseBinary("or", opOr, p.parseAnd) }

// parseAnd parses FILTER *("and" FILTER); and binds tighter than or.
func (p *parser) parseAnd() (*Filter, error) { return p.parseBinary("and", opAnd, p.parseUnary) }

// parseBinary parses operand *(word operand), left-associative.
func (p *parser) parseBinary(word string, op opKind, operand func() (*Filter, error)) (*Filter, error) {
	l, err := operand()
	if err != nil {
		return nil, err
	}
	for {
		p.skipSpace()
		if !p.peekWordFold(word) {
			return l, nil
		}
		p.pos += len(word)
		r, err := operand()
		if err != nil {
			return nil, err
		}
		l = &Filter{op: op, left: l, right: r}
	}
}

// parseUnary parses "not" "(" FILTER ")", "(" FILTER ")", an attrExp or a
// valuePath.
func (p *parser) parseUnary() (*Filter, error) {
	p.skipSpace()
	if p.pos >= len(p.src) {
		return nil, p.incomplete("an attribute name, \"(\" or \"not\"")
	}
	if p.peekWordFold("not") {
		save := p.pos
		p.pos += 3
		p.skipSpace()
		if p.pos < len(p.src) && p.src[p.pos] == '(' {
			g, err := p.parseGroup()
			if err != nil {
				return nil, err
			}
			return &Filter{op: opNot, left: g}, nil
		}
		p.pos = save // an attribute called "not"
	}
	if p.src[p.pos] == '(' {
		return p.parseGroup()
	}
	return p.parseAttrExp()
}

// parseGroup parses "(" FILTER ")" at p.pos.
func (p *parser) parseGroup() (*Filter, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	p.pos++ // (
	f, err := p.parseOr()
	if err != nil {
		return nil, err
	}
	p.skipSpace()
	if p.pos >= len(p.src) || p.src[p.pos] != ')' {
		return nil, p.unexpected(`")"`)
	}
	p.pos++
	p.depth--
	return f, nil
}

// parsePath parses attrPath ["[" valFilter "]" ["." subAttr]] at p.pos into
// path. bare allows a path that is only a schema URN.
func (p *parser) parsePath(path *Path, bare bool) error {
	start := p.pos
	w := p.readWord()
	if w == "" {
		return p.unexpected("an attribute name")
	}
	hasFilter := p.pos < len(p.src) && p.src[p.pos] == '['
	urn, name, sub, problem, at := splitAttrPath(w, bare && !hasFilter)
	if problem != "" {
		return p.errorf("%s %s: %s at position %d", p.what, p.quoted(), problem, start+at)
	}
	*path = Path{URN: urn, Attr: name, Sub: sub}
	if !hasFilter {
		return nil
	}
	if sub != "" {
		return p.errorf("%s %s: a value filter \"[…]\" must follow the attribute name, not the sub-attribute %s, at position %d", p.what, p.quoted(), quote(sub), p.pos)
	}
	if err := p.enter(); err != nil {
		return err
	}
	p.pos++ // [
	inner, err := p.parseOr()
	if err != nil {
		return err
	}
	p.skipSpace()
	if p.pos >= len(p.src) || p.src[p.pos] != ']' {
		return p.unexpected(`"]"`)
	}
	p.pos++
	p.depth--
	path.Filter = inner
	if p.pos < len(p.src) && p.src[p.pos] == '.' {
		p.pos++
		s := p.pos
		sub := p.readWord()
		if !validName(sub) {
			if sub == "" {
				return p.unexpected("a sub-attribute name after \".\"")
			}
			return p.errorf("%s %s: invalid sub-attribute name %s at position %d", p.what, p.quoted(), quote(sub), s)
		}
		path.Sub = sub
	}
	return nil
}

// parseAttrExp parses attrPath "pr", attrPath compareOp compValue, a
// valuePath, or Entra's valuePath "." subAttr compareOp compValue.
func (p *parser) parseAttrExp() (*Filter, error) {
	f := &Filter{}
	if err := p.parsePath(&f.path, false); err != nil {
		return nil, err
	}
	p.skipSpace()
	if f.path.Filter != nil && f.path.Sub == "" {
		if p.pos >= len(p.src) || p.src[p.pos] == ')' || p.src[p.pos] == ']' ||
			p.peekWordFold("and") || p.peekWordFold("or") {
			f.op = opValuePath
			return f, nil
		}
	}
	if p.pos >= len(p.src) {
		return nil, p.incomplete("an operator (eq, ne, co, sw, ew, gt, lt, ge, le or pr) after " + quote(f.path.String()))
	}
	opPos := p.pos
	w := p.readWord()
	op := lookupOp(w)
	if op == 0 {
		if w == "" {
			p.pos = opPos
			return nil, p.unexpected("an operator (eq, ne, co, sw, ew, gt, lt, ge, le or pr)")
		}
		return nil, p.errorf("%s %s: unknown operator %s at position %d; expected eq, ne, co, sw, ew, gt, lt, ge, le or pr",
			p.what, p.quoted(), quote(w), opPos)
	}
	f.op = op
	if op == opPr {
		return f, nil
	}
	p.skipSpace()
	if p.pos >= len(p.src) {
		return nil, p.incomplete("a value after " + quote(w))
	}
	if p.src[p.pos] == '"' {
		s, err := p.readString()
		if err != nil {
			return nil, err
		}
		f.val = stringValue(s)
		return f, nil
	}
	vPos := p.pos
	v := p.readWord()
	if v == "" {
		return nil, p.unexpected("a value after " + quote(w))
	}
	switch {
	case strings.EqualFold(v, "true"):
		f.val = compValue{kind: valBool, b: true}
	case strings.EqualFold(v, "false"):
		f.val = compValue{kind: valBool}
	case strings.EqualFold(v, "null"):
		f.val = compValue{kind: valNull}
	case isJSONNumber(v):
		n, err := strconv.ParseFloat(v, 64)
		if err != nil { // out of range: keep it as text
			f.val = stringValue(v)
			break
		}
		f.val = compValue{kind: valNumber, s: v, n: n}
	default:
		_ = vPos
		f.val = stringValue(v)
	}
	return f, nil
}

func stringValue(s string) compValue {
	v := compValue{kind: valString, s: s}
	v.t, v.tOK = parseDateTime(s)
	return v
}

// parseDateTime parses an xsd:dateTime / RFC 3339 value with any number of
// fractional digits. It rejects cheaply what cannot be one.
func parseDateTime(s string) (time.Time, bool) {
	if len(s) < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') {
		return time.Time{}, false
	}
	if s[10] != 'T' {
		s = s[:10] + "T" + s[11:]
	}
	if c := s[len(s)-1]; c == 'z' {
		s = s[:len(s)-1] + "Z"
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	return t, err == nil
}

// readString reads a JSON string literal at p.pos.
func (p *parser) readString() (string, error) {
	start := p.pos
	i := p.pos + 1
	// Fast path: no escapes.
	for i < len(p.src) {
		c := p.src[i]
		if c == '"' {
			p.pos = i + 1
			return p.src[start+1 : i], nil
		}
		if c == '\\' {
			break
		}
		i++
	}
	var b strings.Builder
	b.WriteString(p.src[start+1 : i])
	for i < len(p.src) {
		c := p.src[i]
		switch {
		case c == '"':
			p.pos = i + 1
			return b.String(), nil
		case c != '\\':
			b.WriteByte(c)
			i++
			continue
		}
		if i+1 >= len(p.src) {
			break
		}
		e := p.src[i+1]
		i += 2
		switch e {
		case '"', '\\', '/':
			b.WriteByte(e)
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'u':
			r, ok := hex4(p.src, i)
			if !ok {
				return "", p.errorf("%s %s: invalid \\u escape at position %d; expected four hex digits", p.what, p.quoted(), i-2)
			}
			i += 4
			if r >= 0xD800 && r < 0xDC00 && i+1 < len(p.src) && p.src[i] == '\\' && p.src[i+1] == 'u' {
				if r2, ok := hex4(p.src, i+2); ok && r2 >= 0xDC00 && r2 < 0xE000 {
					r = (r-0xD800)<<10 | (r2 - 0xDC00) + 0x10000
					i += 6
				}
			}
			if r >= 0xD800 && r < 0xE000 {
				// encoding/json would make it U+FFFD, so that two different
				// values compared equal.
				return "", p.errorf("%s %s: the escape at position %d is half of a UTF-16 surrogate pair without its other half; it is not a character",
					p.what, p.quoted(), i-6)
			}
			b.WriteRune(r)
		default:
			return "", p.errorf("%s %s: invalid escape \"\\%c\" at position %d; inside a quoted value use \\\" for a quote and \\\\ for a backslash",
				p.what, p.quoted(), e, i-2)
		}
	}
	p.pos = len(p.src)
	return "", p.errorf("%s %s is incomplete: the quoted value starting at position %d has no closing '\"'", p.what, p.quoted(), start)
}

func hex4(s string, i int) (rune, bool) {
	if i+4 > len(s) {
		return 0, false
	}
	var r rune
	for _, c := range []byte(s[i : i+4]) {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	return r, true
}

// isJSONNumber reports whether s is a JSON number (RFC 8259 §6).
func isJSONNumber(s string) bool {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && s[i] >= '1' && s[i] <= '9':
		i = skipDigits(s, i)
	default:
		return false
	}
	if i < len(s) && s[i] == '.' {
		d := i + 1
		if i = skipDigits(s, d); i == d {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		d := i
		if i = skipDigits(s, d); i == d {
			return false
		}
	}
	return i == len(s)
}

// skipDigits returns the index of the first byte at or after i of s that
// is not an ASCII digit.
func skipDigits(s string, i int) int {
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return i
}

// quote returns s as a JSON string literal, for filter text and details.
func quote(s string) string {
	var b strings.Builder
	writeQuoted(&b, s)
	return b.String()
}

func writeQuoted(b *strings.Builder, s string) {
	const hex = "0123456789abcdef"
	b.WriteByte('"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b.WriteString(s[start:i])
		switch c {
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			b.WriteString(`\u00`)
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xF])
		}
		start = i + 1
	}
	b.WriteString(s[start:])
	b.WriteByte('"')
}

// Precedences for String.
const (
	precOr = iota
	precAnd
	precNot
)

// String returns the canonical text of f: operators in lower case, string
// values quoted, single spaces. ParseFilter parses it back to a filter with
// the same String.
func (f *Filter) String() string {
	if f == nil {
		return ""
	}
	var b strings.Builder
	f.write(&b, precOr)
	return b.String()
}

func (f *Filter) write(b *strings.Builder, prec int) {
	switch f.op {
	case opOr, opAnd:
		my := precOr
		if f.op == opAnd {
			my = precAnd
		}
		if prec > my {
			b.WriteByte('(')
		}
		f.left.write(b, my)
		b.WriteByte(' ')
		b.WriteString(opNames[f.op])
		b.WriteByte(' ')
		f.right.write(b, my+1) // keeps a right-nested operand of equal precedence grouped
		if prec > my {
			b.WriteByte(')')
		}
	case opNot:
		b.WriteString("not (")
		f.left.write(b, precOr)
		b.WriteByte(')')
	case opValuePath:
		f.path.write(b)
	default:
		f.path.write(b)
		b.WriteByte(' ')
		b.WriteString(opNames[f.op])
		if f.op == opPr {
			return
		}
		b.WriteByte(' ')
		switch f.val.kind {
		case valString:
			writeQuoted(b, f.val.s)
		case valNumber:
			b.WriteString(f.val.s)
		case valBool:
			b.WriteString(strconv.FormatBool(f.val.b))
		case valNull:
			b.WriteString("null")
		}
	}
}

// Equality reports whether f is, or at the top level is an "and" that
// contains, a comparison `attr eq value` with a string (or number) value on
// a plain attribute path (userName, externalId, id, displayName,
// emails.value, urn:…:employeeNumber) or on Entra's valuePath with a
// sub-attribute (emails[type eq "work"].value, reported as Path{Attr:
// "emails", Filter: …, Sub: "value"}). It returns the first such comparison,
// left to right, so a store can find candidates by index; the caller must
// still run Match on them. A number is reported as written (externalId eq
// 1234 yields "1234").
func (f *Filter) Equality() (path *Path, value string, ok bool) {
	if f == nil {
		return nil, "", false
	}
	switch f.op {
	case opAnd:
		if path, value, ok = f.left.Equality(); ok {
			return path, value, ok
		}
		return f.right.Equality()
	case opEq:
		if f.val.kind != valString && f.val.kind != valNumber {
			return nil, "", false
		}
		if f.path.Filter != nil && f.path.Sub == "" {
			return nil, "", false
		}
		p := f.path
		return &p, f.val.s, true
	}
	return nil, "", false
}

// scope says where the attribute paths of a filter are resolved: against a
// resource type at the top level, or against the sub-attributes of parent
// inside a value filter.
type scope struct {
	rt     *ResourceType
	parent *Attribute
	inElem bool
}

// lookup returns the definition of p's attribute (sub-attribute when p.Sub
// is set) in sc, or nil.
func (sc scope) lookup(p *Path) *Attribute {
	if sc.inElem {
		a := sc.parent.Sub(p.Attr)
		if p.Sub != "" {
			return a.Sub(p.Sub)
		}
		return a
	}
	return sc.rt.Lookup(p)
}

// lookupAttr returns the definition of p's attribute, ignoring p.Sub.
func (sc scope) lookupAttr(p *Path) *Attribute {
	if sc.inElem {
		return sc.parent.Sub(p.Attr)
	}
	if sc.rt == nil || p.Attr == "" {
		return nil
	}
	return sc.rt.schemaFor(p.URN).Attr(p.Attr)
}

// isDateTime reports whether the attribute p names compares as a dateTime.
func (sc scope) isDateTime(p *Path, def *Attribute) bool {
	if def != nil {
		return def.Type == TypeDateTime
	}
	return !sc.inElem && strings.EqualFold(p.Attr, "meta") &&
		(strings.EqualFold(p.Sub, "created") || strings.EqualFold(p.Sub, "lastModified"))
}

// Validate checks f against rt: it rejects (with a 400 invalidFilter
// *Error) gt, ge, lt and le on boolean and binary attributes, comparisons
// of a complex attribute without a "value" sub-attribute (name eq "x") with
// anything but pr, and value filters on attributes that are not complex.
// Attributes rt does not define are accepted. A nil rt accepts everything.
func (f *Filter) Validate(rt *ResourceType) error {
	if f == nil || rt == nil {
		return nil
	}
	if err := f.validate(scope{rt: rt}); err != nil {
		return err
	}
	return nil
}

func (f *Filter) validate(sc scope) *Error {
	switch f.op {
	case opAnd, opOr:
		if err := f.left.validate(sc); err != nil {
			return err
		}
		return f.right.validate(sc)
	case opNot:
		return f.left.validate(sc)
	}
	if f.path.Filter != nil {
		parent := sc.lookupAttr(&f.path)
		if parent != nil && parent.Type != TypeComplex {
			return badRequest(InvalidFilter, "filter on %s: attribute %s is not complex, so it cannot take a value filter \"[…]\"",
				quote(f.path.String()), quote(parent.Name))
		}
		if parent != nil {
			if err := f.path.Filter.validate(scope{parent: parent, inElem: true}); err != nil {
				return err
			}
		}
		if f.op == opValuePath {
			return nil
		}
	}
	def := sc.lookup(&f.path)
	if def == nil || f.op == opPr {
		return nil
	}
	if def.Type == TypeComplex && f.path.Sub == "" {
		v := def.Sub("value")
		if v == nil {
			return badRequest(InvalidFilter, "filter %s compares the complex attribute %s as a whole; compare one of its sub-attributes instead (e.g. %s.%s)",
				quote(f.String()), quote(f.path.String()), f.path.Attr, firstSubName(def))
		}
		def = v
	}
	if f.op.isOrdering() && (def.Type == TypeBoolean || def.Type == TypeBinary) {
		return badRequest(InvalidFilter, "filter %s: operator %q cannot be used on the %s attribute %s; use eq or ne",
			quote(f.String()), opNames[f.op], def.Type, quote(f.path.String()))
	}
	return nil
}

func firstSubName(a *Attribute) string {
	if len(a.SubAttributes) > 0 {
		return a.SubAttributes[0].Name
	}
	return "value"
}

// Match reports whether doc satisfies f.
//
// String comparisons honour the attribute's caseExact (attributes rt does
// not define compare case-insensitively); dateTime attributes (meta.created,
// meta.lastModified and any attribute of type dateTime) compare
// chronologically when both sides parse as RFC 3339; numbers compare
// numerically; booleans by value, also when stored or given as "True" /
// "False". A multi-valued attribute matches if any element does; comparing
// a multi-valued complex attribute as a whole (emails co "x") compares the
// elements' "value" sub-attribute. pr means present and not null, "", [] or
// {}. ne is the negation of eq, so it matches when the attribute is absent.
// rt may be nil. A nil f matches every document.
func (f *Filter) Match(doc map[string]any, rt *ResourceType) bool {
	if f == nil {
		return true
	}
	return f.match(doc, scope{rt: rt})
}

func (f *Filter) match(doc map[string]any, sc scope) bool {
	switch f.op {
	case opAnd:
		return f.left.match(doc, sc) && f.right.match(doc, sc)
	case opOr:
		return f.left.match(doc, sc) || f.right.match(doc, sc)
	case opNot:
		return !f.left.match(doc, sc)
	case opNe:
		return !f.matchAttr(doc, sc, opEq)
	}
	return f.matchAttr(doc, sc, f.op)
}

// matchAttr evaluates an attrExp or valuePath with operator op (never ne).
func (f *Filter) matchAttr(doc map[string]any, sc scope, op opKind) bool {
	var rt *ResourceType
	if !sc.inElem {
		rt = sc.rt
	}
	c := doc
	if f.path.URN != "" && !sc.inElem {
		if c = container(doc, f.path.URN, rt); c == nil {
			return op == opEq && f.val.kind == valNull
		}
	}
	if f.path.Attr == "" {
		return false
	}
	raw, _ := Get(c, f.path.Attr)
	if op == opEq && f.val.kind == valNull {
		return !f.present(raw, sc)
	}
	if op == opPr {
		return f.present(raw, sc)
	}
	if raw == nil {
		return false
	}
	def := sc.lookup(&f.path)
	if f.path.Sub == "" && f.path.Filter == nil && def != nil && def.Type == TypeComplex {
		def = def.Sub("value")
	}
	dt := sc.isDateTime(&f.path, def)
	exact := def != nil && def.CaseExact
	arr, isArr := raw.([]any)
	if !isArr {
		return f.matchElem(raw, sc, op, exact, dt)
	}
	for _, e := range arr {
		if f.matchElem(e, sc, op, exact, dt) {
			return true
		}
	}
	return false
}

// matchElem evaluates f against one value (or element) of its attribute.
func (f *Filter) matchElem(e any, sc scope, op opKind, exact, dt bool) bool {
	if f.path.Filter != nil {
		m, ok := e.(map[string]any)
		if !ok || !f.path.Filter.match(m, scope{parent: sc.lookupAttr(&f.path), inElem: true}) {
			return false
		}
		if op == opValuePath {
			return true
		}
	}
	if m, ok := e.(map[string]any); ok {
		key := "value"
		if f.path.Sub != "" {
			key = f.path.Sub
		}
		v, _ := Get(m, key)
		if arr, ok := v.([]any); ok {
			for _, x := range arr {
				if f.val.compare(x, op, exact, dt) {
					return true
				}
			}
			return false
		}
		return f.val.compare(v, op, exact, dt)
	}
	if f.path.Sub != "" || f.path.Filter != nil {
		return false
	}
	return f.val.compare(e, op, exact, dt)
}

// present reports whether the attribute value raw is present for pr: not
// null, "", [] or {} (with a value filter: some element matches; with a
// sub-attribute: some element has it present).
func (f *Filter) present(raw any, sc scope) bool {
	if f.path.Filter == nil && f.path.Sub == "" {
		return isPresent(raw)
	}
	check := func(e any) bool {
		m, ok := e.(map[string]any)
		if !ok {
			return false
		}
		if f.path.Filter != nil && !f.path.Filter.match(m, scope{parent: sc.lookupAttr(&f.path), inElem: true}) {
			return false
		}
		if f.path.Sub == "" {
			return true
		}
		v, _ := Get(m, f.path.Sub)
		return isPresent(v)
	}
	if arr, ok := raw.([]any); ok {
		for _, e := range arr {
			if check(e) {
				return true
			}
		}
		return false
	}
	return check(raw)
}

// isPresent reports whether v is not null, "", [] or {}.
func isPresent(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case string:
		return x != ""
	case []any:
		for _, e := range x {
			if isPresent(e) {
				return true
			}
		}
		return false
	case map[string]any:
		for _, e := range x {
			if isPresent(e) {
				return true
			}
		}
		return false
	}
	return true
}

// number returns v as a float64 when it is a JSON number.
func number(v any) (float64, bool) {
	switch x := v.(type) {
	case json.Number:
		n, err := strconv.ParseFloat(string(x), 64)
		return n, err == nil
	case float64:
		return x, true
	case float32:
		return float64(x), true
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	case int32:
		return float64(x), true
	case uint64:
		return float64(x), true
	}
	return 0, false
}

// compare evaluates `v op cv` for one document value v.
func (cv *compValue) compare(v any, op opKind, exact, dt bool) bool {
	switch x := v.(type) {
	case nil:
		return false
	case string:
		switch cv.kind {
		case valBool:
			b, ok := ParseBool(x)
			return ok && op == opEq && b == cv.b
		case valNull:
			return false
		}
		if dt && cv.tOK {
			if t, ok := parseDateTime(x); ok {
				return compareOrdered(t.Compare(cv.t), op, x, cv.s, exact)
			}
		}
		return compareStrings(x, cv.s, op, exact)
	case bool:
		switch cv.kind {
		case valBool:
			return op == opEq && x == cv.b
		case valString:
			b, ok := ParseBool(cv.s)
			return ok && op == opEq && x == b
		}
		return false
	case map[string]any, []any:
		return false
	}
	n, ok := number(v)
	if !ok {
		return false
	}
	var want float64
	switch cv.kind {
	case valNumber:
		want = cv.n
	case valString:
		w, err := strconv.ParseFloat(cv.s, 64)
		if err != nil || !isJSONNumber(cv.s) {
			return compareStrings(numberText(v), cv.s, op, exact)
		}
		want = w
	default:
		return false
	}
	c := 0
	if n < want {
		c = -1
	} else if n > want {
		c = 1
	}
	return compareOrdered(c, op, "", "", true)
}

func numberText(v any) string {
	switch x := v.(type) {
	case json.Number:
		return string(x)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	}
	n, _ := number(v)
	return strconv.FormatFloat(n, 'g', -1, 64)
}

// compareOrdered evaluates op given the ordering c of two values; the
// substring operators fall back to the strings a and b.
func compareOrdered(c int, op opKind, a, b string, exact bool) bool {
	switch op {
	case opEq:
		return c == 0
	case opGt:
		return c > 0
	case opGe:
		return c >= 0
	case opLt:
		return c < 0
	case opLe:
		return c <= 0
	}
	return compareStrings(a, b, op, exact)
}

// compareStrings evaluates `a op b` for strings, case-insensitively unless
// exact.
func compareStrings(a, b string, op opKind, exact bool) bool {
	if exact {
		switch op {
		case opEq:
			return a == b
		case opCo:
			return strings.Contains(a, b)
		case opSw:
			return strings.HasPrefix(a, b)
		case opEw:
			return strings.HasSuffix(a, b)
		}
		return compareOrdered(strings.Compare(a, b), op, "", "", true)
	}
	switch op {
	case opEq:
		return strings.EqualFold(a, b)
	case opCo, opSw, opEw:
		if !isASCII(a) || !isASCII(b) {
			return compareStrings(strings.ToLower(a), strings.ToLower(b), op, true)
		}
		switch op {
		case opSw:
			return len(a) >= len(b) && strings.EqualFold(a[:len(b)], b)
		case opEw:
			return len(a) >= len(b) && strings.EqualFold(a[len(a)-len(b):], b)
		}
		return containsFoldASCII(a, b)
	}
	if !isASCII(a) || !isASCII(b) {
		return compareOrdered(strings.Compare(strings.ToLower(a), strings.ToLower(b)), op, "", "", true)
	}
	return compareOrdered(compareFoldASCII(a, b), op, "", "", true)
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

func lowerASCII(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + ('a' - 'A')
	}
	return c
}

func containsFoldASCII(s, sub string) bool {
	n := len(sub)
	if n == 0 {
		return true
	}
	first := lowerASCII(sub[0])
	for i := 0; i+n <= len(s); i++ {
		if lowerASCII(s[i]) == first && strings.EqualFold(s[i:i+n], sub) {
			return true
		}
	}
	return false
}

func compareFoldASCII(a, b string) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		ca, cb := lowerASCII(a[i]), lowerASCII(b[i])
		if ca != cb {
			if ca < cb {
				return -1
			}
			return 1
		}
	}
	switch {
	case len(a) < len(b):
		return -1
	case len(a) > len(b):
		return 1
	}
	return 0
}
