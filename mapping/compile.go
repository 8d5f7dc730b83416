package mapping

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/scimgate/scimgate/gateway/scim"
)

// Sentinel errors a FieldError unwraps to.
var (
	ErrMissing  = errors.New("missing")  // a needed option is absent
	ErrUnknown  = errors.New("unknown")  // an unknown type, transform, field or option value
	ErrInvalid  = errors.New("invalid")  // a path, pattern, format or default that does not parse or validate
	ErrConflict = errors.New("conflict") // a duplicate field, or options that exclude each other
	ErrCycle    = errors.New("template cycle")
	// ErrUnknownKey marks a key in the YAML that no option has (a typo,
	// usually); such an error is also ErrUnknown. The config loader's
	// unknown keys outside the mapping section are the same sentinel.
	ErrUnknownKey = errors.New("unknown key")
)

// FieldError is a problem with one option of the rules. Field is its path
// relative to the mapping section ("user[3].type"), so the caller can
// prefix "mapping." and point at the YAML line.
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }

// Unwrap returns the underlying error (wrapping one of the sentinels).
func (e *FieldError) Unwrap() error { return e.Err }

// ruleError is a compile error of one kind (a sentinel), with its own
// message and possibly a cause (such as the path parser's *scim.Error).
type ruleError struct {
	kind  error
	msg   string
	cause error
}

func (e *ruleError) Error() string { return e.msg }

func (e *ruleError) Unwrap() []error {
	if e.cause == nil {
		return []error{e.kind}
	}
	return []error{e.kind, e.cause}
}

// errf returns a ruleError of the given kind; a %w in format names its cause.
func errf(kind error, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &ruleError{kind: kind, msg: err.Error(), cause: errors.Unwrap(err)}
}

// Mapper maps SCIM resources to canonical records with compiled rules. It
// is safe for concurrent use.
type Mapper struct {
	user, group []*field // in evaluation order: a template after what it reads
	// userSame and groupSame are the fields with a same_as check, in rule
	// order: checked once every field is computed.
	userSame, groupSame []*field
	match               string
	extensions          []*scim.Schema
	groupExtensions     []*scim.Schema
	zones               zones
	// refFields are the top-level record fields that user references
	// output (Reference.Field), sorted: a change of one of them in a
	// user's record changes the users referencing it.
	refFields []string
	catalog   atomic.Pointer[[]CatalogType] // swapped by SetCatalog
	rulesSum  [32]byte                      // hash of the rules (rulesSum)
	fp        atomic.Pointer[string]        // Fingerprint: rulesSum and the catalog
}

// field is one compiled rule.
type field struct {
	to        string
	keys      []string // to, split at dots
	sources   []source
	constant  []any // the rule's value, when it has one
	hasConst  bool
	steps     []step
	deps      []int
	conv      converter
	def       any // the default, already converted
	hasDef    bool
	required  bool
	onInvalid invalidAction
	refBy     []string
	refField  []string // the referenced user's field to output, split at dots; nil: its SCIM id
	srcText   string   // "(from …)" for a missing value
	sameAs    *field   // the field this one must equal (same_as), or nil
	pos       int      // index in the evaluation order
}

// source is one compiled `from` path.
type source struct {
	path *scim.Path
	// bare reads the attribute itself when a path ends in ".value" and the
	// IdP sent a plain string ("manager": "123" instead of {"value": "123"}).
	bare *scim.Path
	text string
}

type invalidAction int

const (
	reject invalidAction = iota
	drop
	useDefault
)

// The values of Rules.Remap.
const (
	RemapOnChange = "on_change"
	RemapManual   = "manual"
)

// Match attributes and reference keys, in their canonical spelling.
var (
	matchNames = []string{"userName", "emails", "externalId"}
	byNames    = []string{"id", "externalId", "userName", "email"}
)

// Compile checks r and compiles it: paths, regular expressions, templates,
// date layouts and lookup tables are prepared once. Errors are *FieldError,
// joined with errors.Join when there are several.
func Compile(r Rules) (*Mapper, error) {
	m := &Mapper{match: "userName"}
	errs := slices.Clone(r.unknown) // keys no option has, from the YAML
	add := func(field string, err error) { errs = append(errs, &FieldError{Field: field, Err: err}) }
	if r.Match != "" {
		i := slices.IndexFunc(matchNames, func(n string) bool { return strings.EqualFold(n, r.Match) })
		if i < 0 {
			add("match", errf(ErrUnknown, "unknown match attribute %q (want one of %s)", r.Match, strings.Join(matchNames, ", ")))
		} else {
			m.match = matchNames[i]
		}
	}
	switch r.Remap {
	case "", RemapOnChange, RemapManual:
	default:
		add("remap", errf(ErrUnknown, "unknown remap %q (want on_change or manual)", r.Remap))
	}
	m.user, m.userSame = m.compileResource("user", r.User, add)
	m.group, m.groupSame = m.compileResource("group", r.Group, add)
	m.extensions = extensionSchemas(r, add)
	m.groupExtensions = groupExtensionSchemas(r)
	cat := compileCatalog(r.Catalog, add)
	m.catalog.Store(&cat)
	m.rulesSum = rulesSum(r)
	m.setFingerprint(cat)
	if len(errs) > 0 {
		// In the order of the rules, so of the file, however found.
		slices.SortStableFunc(errs, func(a, b error) int { return cmpField(fieldOf(a), fieldOf(b)) })
		return nil, errors.Join(errs...)
	}
	return m, nil
}

func fieldOf(err error) string {
	var fe *FieldError
	if errors.As(err, &fe) {
		return fe.Field
	}
	return ""
}

// cmpField orders the paths of errors as the section is written: match,
// user, group, extensions, catalog, then by index ("user[2]" before
// "user[10]"); the rest of a path does not order.
func cmpField(a, b string) int {
	rank := func(f string) (int, int) {
		name, rest, _ := strings.Cut(f, "[")
		sec := slices.Index([]string{"remap", "match", "user", "group", "extensions", "catalog"}, strings.SplitN(name, ".", 2)[0])
		i, _, _ := strings.Cut(rest, "]")
		n, err := strconv.Atoi(i)
		if err != nil {
			n = -1
		}
		return sec, n
	}
	sa, ia := rank(a)
	sb, ib := rank(b)
	if sa != sb {
		return sa - sb
	}
	return ia - ib
}

// compileResource compiles the rules of one resource and orders them so
// that a template comes after the fields it reads. It also returns the
// fields that carry a same_as check, in rule order.
func (m *Mapper) compileResource(kind string, rules []Rule, add func(string, error)) ([]*field, []*field) {
	names := make(map[string]int, len(rules))
	for i, r := range rules {
		at := fmt.Sprintf("%s[%d].to", kind, i)
		if err := checkName(r.To); err != nil {
			add(at, err)
			continue
		}
		if j, ok := names[r.To]; ok {
			add(at, errf(ErrConflict, "field %q is already set by %s[%d]", r.To, kind, j))
			continue
		}
		names[r.To] = i
	}
	// A field cannot be both a value and the object holding another.
	for i, r := range rules {
		if names[r.To] != i {
			continue
		}
		for p := r.To; ; {
			dot := strings.LastIndexByte(p, '.')
			if dot < 0 {
				break
			}
			p = p[:dot]
			if j, ok := names[p]; ok {
				add(fmt.Sprintf("%s[%d].to", kind, i), errf(ErrConflict, "field %q is inside %q, which %s[%d] sets to a value", r.To, p, kind, j))
			}
		}
	}
	fields := make([]*field, len(rules))
	for i, r := range rules {
		fields[i] = m.compileRule(fmt.Sprintf("%s[%d]", kind, i), r, names, add)
	}
	same := sameAs(kind, fields, rules, names, add)
	out := order(kind, fields, rules, add)
	if out != nil {
		m.referenceFields(kind, fields, rules, names, add)
	}
	for i, f := range out {
		f.pos = i
	}
	return out, same
}

// sameAs links each same_as to the field it names and reports unknown
// fields, a field named as its own same_as, and cycles. It returns the
// fields with a check, in rule order.
func sameAs(kind string, fields []*field, rules []Rule, names map[string]int, add func(string, error)) []*field {
	next := make([]int, len(rules)) // the rule a same_as names, or -1
	var same []*field
	for i, r := range rules {
		next[i] = -1
		if r.SameAs == "" {
			continue
		}
		at := fmt.Sprintf("%s[%d].same_as", kind, i)
		j, ok := names[r.SameAs]
		switch {
		case !ok:
			add(at, errf(ErrUnknown, "unknown field %q (same_as names another field of the same record, by its `to`)", r.SameAs))
			continue
		case j == i || r.SameAs == r.To:
			add(at, errf(ErrInvalid, "a field cannot be the same as itself (%q): name another field", r.SameAs))
			continue
		}
		next[i] = j
		if fields[i] != nil && fields[j] != nil {
			fields[i].sameAs = fields[j]
			same = append(same, fields[i])
		}
	}
	// Each rule names at most one other, so following same_as from a rule
	// either ends or comes back to a rule on the way.
	const (
		unseen = iota
		onPath
		done
	)
	state := make([]int, len(rules))
	for start := range rules {
		var path []int
		i := start
		for i >= 0 && state[i] == unseen {
			state[i] = onPath
			path = append(path, i)
			i = next[i]
		}
		if i >= 0 && state[i] == onPath {
			at := slices.Index(path, i)
			loop := make([]string, 0, len(path)-at+1)
			for _, k := range path[at:] {
				loop = append(loop, rules[k].To)
			}
			loop = append(loop, rules[i].To)
			add(fmt.Sprintf("%s[%d].same_as", kind, i), errf(ErrCycle, "same_as cycle: %s (equality goes both ways: one same_as is enough)", strings.Join(loop, " → ")))
		}
		for _, k := range path {
			state[k] = done
		}
	}
	return same
}

// referenceFields checks each reference's field against the other rules
// and links it: the field must be a rule of the resource that holds no
// reference and reads none through its templates, so a change of one
// user re-maps the users referencing it and stops there. It runs once the
// templates are known to have no cycle.
func (m *Mapper) referenceFields(kind string, fields []*field, rules []Rule, names map[string]int, add func(string, error)) {
	// readsRef reports whether rule i is, or reads through templates, a
	// reference; memo: 0 unknown, 1 no, 2 yes.
	memo := make([]int, len(rules))
	var readsRef func(i int) bool
	readsRef = func(i int) bool {
		if memo[i] == 0 {
			memo[i] = 1
			if rules[i].Reference != nil {
				memo[i] = 2
			} else if fields[i] != nil {
				for _, d := range fields[i].deps {
					if readsRef(d) {
						memo[i] = 2
						break
					}
				}
			}
		}
		return memo[i] == 2
	}
	for i, r := range rules {
		if r.Reference == nil || r.Reference.Field == "" {
			continue
		}
		at := fmt.Sprintf("%s[%d].reference.field", kind, i)
		name := r.Reference.Field
		j, ok := names[name]
		switch {
		case !ok:
			add(at, errf(ErrUnknown, "unknown field %q (field names a field of the referenced user's record, by its `to`; leave it out for the user's SCIM id)", name))
			continue
		case rules[j].Reference != nil:
			add(at, errf(ErrInvalid, "field %q is itself a reference: a reference outputs a field the referenced user's own rules make", name))
			continue
		case readsRef(j):
			add(at, errf(ErrInvalid, "field %q is a template that reads a reference: a reference outputs a field the referenced user's own rules make", name))
			continue
		}
		if fields[i] != nil {
			fields[i].refField = strings.Split(name, ".")
			top := fields[i].refField[0]
			if !slices.Contains(m.refFields, top) {
				m.refFields = append(m.refFields, top)
				slices.Sort(m.refFields)
			}
		}
	}
}

// checkName checks a `to`: non-empty dot-separated names.
func checkName(to string) error {
	if to == "" {
		return errf(ErrMissing, "every rule needs a field name (to:)")
	}
	for part := range strings.SplitSeq(to, ".") {
		if part == "" || strings.TrimSpace(part) != part {
			return errf(ErrInvalid, "invalid field name %q: want names separated by single dots, without spaces around them", to)
		}
	}
	return nil
}

func (m *Mapper) compileRule(at string, r Rule, names map[string]int, add func(string, error)) *field {
	f := &field{to: r.To, keys: strings.Split(r.To, "."), required: r.Required}
	ok := true
	fail := func(sub string, err error) {
		add(at+sub, err)
		ok = false
	}

	// Sources.
	for j, p := range r.From {
		sub := ".from"
		if len(r.From) > 1 {
			sub = fmt.Sprintf(".from[%d]", j)
		}
		s, err := compileSource(p)
		if err != nil {
			fail(sub, err)
			continue
		}
		f.sources = append(f.sources, s)
	}
	if r.Value != nil {
		if len(r.From) > 0 {
			fail(".value", errf(ErrConflict, "a rule has either from or value, not both"))
		}
		f.hasConst = true
		f.constant = asList(normalize(r.Value))
	}
	f.srcText = strings.Join(r.From, " or ")
	if r.Value != nil {
		f.srcText = "value"
	}

	// Transforms.
	hasTemplate := false
	for j, t := range r.Transforms {
		// A template is a source even when it does not compile.
		hasTemplate = hasTemplate || strings.EqualFold(t.Op, "template")
		s, tp, err := compileStep(t, names)
		if err != nil {
			fail(fmt.Sprintf(".transforms[%d]", j), err)
			continue
		}
		f.steps = append(f.steps, s)
		if tp != nil {
			f.deps = append(f.deps, tp.deps...)
			if f.srcText == "" {
				f.srcText = "template"
			}
		}
	}
	if len(r.From) == 0 && r.Value == nil && !hasTemplate {
		msg := "a rule needs from, value or a template transform"
		if r.Default != nil {
			msg += " (for a constant, use value instead of default)"
		}
		fail("", errf(ErrMissing, "%s", msg))
	}

	// Type.
	conv, err := m.compileType(r)
	if err != nil {
		var fe *FieldError
		if errors.As(err, &fe) {
			fail("."+fe.Field, fe.Err)
		} else {
			fail(".type", err)
		}
	}
	f.conv = conv

	// What to do with an invalid value.
	switch strings.ToLower(r.OnInvalid) {
	case "":
		f.onInvalid = drop
		if r.Required {
			f.onInvalid = reject
		}
	case "reject":
		f.onInvalid = reject
	case "drop":
		f.onInvalid = drop
		if r.Required {
			fail(".on_invalid", errf(ErrConflict, "a required field cannot be dropped (use reject or default)"))
		}
	case "default":
		f.onInvalid = useDefault
		if r.Default == nil {
			fail(".on_invalid", errf(ErrMissing, "on_invalid: default needs a default"))
		}
	default:
		fail(".on_invalid", errf(ErrUnknown, "unknown on_invalid %q (want reject, drop or default)", r.OnInvalid))
	}

	// Reference.
	if r.Reference != nil {
		if strings.HasPrefix(at, "group") {
			fail(".reference", errf(ErrConflict, "group rules cannot hold references"))
		}
		switch strings.ToLower(r.Type) {
		case "", "string", "email":
		default:
			fail(".reference", errf(ErrConflict, "a reference is a string or an email, not %s", r.Type))
		}
		by := r.Reference.By
		if len(by) == 0 {
			by = byNames
		}
		for j, b := range by {
			i := slices.IndexFunc(byNames, func(n string) bool { return strings.EqualFold(n, b) })
			if i < 0 {
				fail(fmt.Sprintf(".reference.by[%d]", j), errf(ErrUnknown, "unknown reference key %q (want one of %s)", b, strings.Join(byNames, ", ")))
				continue
			}
			f.refBy = append(f.refBy, byNames[i])
		}
	}

	// The default must be valid for the type: checked here, not per request.
	if r.Default != nil && conv != nil {
		vals := compact(asList(normalize(r.Default)))
		if len(vals) > 0 {
			v, verr := conv(vals)
			if verr != nil {
				fail(".default", errf(ErrInvalid, "invalid default: %s", verr.text(true)))
			}
			f.def, f.hasDef = v, true
		}
	}
	if !ok {
		return nil
	}
	return f
}

// compileSource parses one `from` path.
func compileSource(text string) (source, error) {
	p, err := scim.ParsePath(text)
	if err != nil {
		detail := err.Error()
		if se := (*scim.Error)(nil); errors.As(err, &se) {
			detail = se.Detail
		}
		msg := fmt.Sprintf("invalid path %q: %s", text, detail)
		if strings.HasPrefix(detail, "path ") { // the parser names the path itself
			msg = "invalid " + detail
		}
		return source{}, &ruleError{kind: ErrInvalid, msg: msg, cause: err}
	}
	s := source{path: p, text: text}
	if strings.EqualFold(p.Sub, "value") && len(text) > len(".value") && strings.EqualFold(text[len(text)-len(".value"):], ".value") {
		if bare, err := scim.ParsePath(text[:len(text)-len(".value")]); err == nil {
			s.bare = bare
		}
	}
	return s, nil
}

// compileType returns the converter of r's type and checks the options
// that belong to one type only. Errors about another option than type come
// back as *FieldError with the option name.
func (m *Mapper) compileType(r Rule) (converter, error) {
	typ := strings.ToLower(r.Type)
	if typ == "" {
		typ = "string"
	}
	if !slices.Contains(typeNames, typ) && typ != "boolean" && typ != "integer" {
		// The unknown type first: "format applies to type date only" on a
		// misspelt "datte" would send the reader the wrong way.
		return nil, errf(ErrUnknown, "unknown type %q (want one of %s)", r.Type, strings.Join(typeNames, ", "))
	}
	only := func(opt, owner string, set bool) error {
		if set && typ != owner {
			return &FieldError{Field: opt, Err: errf(ErrConflict, "%s applies to type %s only", opt, owner)}
		}
		return nil
	}
	if err := errors.Join(
		only("format", "date", r.Format != ""),
		only("output_format", "date", r.OutputFormat != ""),
		only("values", "enum", len(r.Values) > 0),
		only("pattern", "regex", r.Pattern != ""),
	); err != nil {
		// Report the first: one misplaced option per rule is enough to fix.
		var fe *FieldError
		errors.As(err, &fe)
		return nil, fe
	}
	switch typ {
	case "string":
		return scalar(convertString), nil
	case "bool", "boolean":
		return scalar(convertBool), nil
	case "int", "integer":
		return scalar(convertInt), nil
	case "email":
		return textual("is not an email address such as name@example.com", isEmail), nil
	case "date":
		return dateConverter(r.Format, r.OutputFormat)
	case "datetime":
		return textual("is not a date-time in RFC 3339 form such as 2024-01-02T15:04:05Z", isDateTime), nil
	case "timezone":
		return textual("is not an IANA time zone such as Europe/London", m.zones.valid), nil
	case "language":
		return textual("is not a BCP 47 language tag such as en-GB", isLanguage), nil
	case "country":
		return textual("is not an ISO 3166-1 alpha-2 country code such as GB", isCountry), nil
	case "enum":
		c, err := enumConverter(r.Values)
		if err != nil {
			return nil, &FieldError{Field: "values", Err: err}
		}
		return c, nil
	case "regex":
		c, err := regexConverter(r.Pattern)
		if err != nil {
			return nil, &FieldError{Field: "pattern", Err: err}
		}
		return c, nil
	case "list":
		return convertList, nil
	default: // "object", the last of typeNames
		return convertObject, nil
	}
}

// order sorts fields so that each comes after the fields its templates
// read, keeping the rules' order otherwise, and reports cycles.
func order(kind string, fields []*field, rules []Rule, add func(string, error)) []*field {
	done := make([]bool, len(fields))
	out := make([]*field, 0, len(fields))
	for progress := true; progress; {
		progress = false
		for i, f := range fields {
			if done[i] || f != nil && slices.ContainsFunc(f.deps, func(d int) bool { return !done[d] }) {
				continue
			}
			done[i], progress = true, true
			if f != nil {
				out = append(out, f)
			}
		}
	}
	if i := slices.Index(done, false); i >= 0 {
		add(fmt.Sprintf("%s[%d].transforms", kind, i), errf(ErrCycle, "template cycle: %s", cycle(i, fields, done, rules)))
		return nil
	}
	return out
}

// cycle describes a template cycle reachable from field start: "a → b → a".
// Every field not done reads another field not done, so following those
// reads must come back to a field already visited.
func cycle(start int, fields []*field, done []bool, rules []Rule) string {
	path := []int{start}
	seen := map[int]int{start: 0}
	for i := start; ; {
		next := fields[i].deps[slices.IndexFunc(fields[i].deps, func(d int) bool { return !done[d] })]
		if at, ok := seen[next]; ok {
			path = append(path[at:], next)
			break
		}
		seen[next] = len(path)
		path = append(path, next)
		i = next
	}
	names := make([]string, len(path))
	for k, i := range path {
		names[k] = rules[i].To
	}
	return strings.Join(names, " → ")
}

// asList turns a value into the list form values take through a rule.
func asList(v any) []any {
	if l, ok := v.([]any); ok {
		return l
	}
	return []any{v}
}

// compact returns vals without empty values, reusing vals only when
// nothing is removed.
func compact(vals []any) []any {
	for i, v := range vals {
		if isEmpty(v) {
			out := make([]any, 0, len(vals)-1)
			out = append(out, vals[:i]...)
			for _, w := range vals[i+1:] {
				if !isEmpty(w) {
					out = append(out, w)
				}
			}
			return out
		}
	}
	return vals
}
