package mapping

import (
	"net/http"
	"slices"
	"strings"

	"github.com/scimgate/scimgate/gateway/scim"
)

// Result is the outcome of mapping one resource.
type Result struct {
	// Record is the canonical record: field → string, bool, int64,
	// float64, []any or map[string]any. It marshals to JSON.
	Record map[string]any `json:"record"`
	// Refs lists the reference fields, resolved or not.
	Refs []Ref `json:"refs,omitempty"`
	// Warnings name optional fields dropped (or defaulted) because their
	// value was invalid. They carry no values: they may be logged.
	Warnings []string `json:"warnings,omitempty"`
	// WarnedFields are the record fields of Warnings, one per warning, for
	// logs and metrics (never a value).
	WarnedFields []string `json:"-"`
}

// Rejection is the error MapUser and MapGroup return when the record cannot
// be made. It unwraps to the *scim.Error the client sees (400 invalidValue,
// naming each field and its problem); Fields lists the record fields
// involved, for logs and metrics.
type Rejection struct {
	Fields []string
	Err    *scim.Error
	// Reasons are the problems without the values involved (as warnings
	// are written): what a log or a list of rejected resources may show.
	Reasons []string
}

// problemList collects a mapping's problems twice: for the identity
// provider, with the values, and without them, for logs.
type problemList struct{ full, quiet []string }

func (p *problemList) add(full, quiet string) {
	p.full = append(p.full, full)
	p.quiet = append(p.quiet, quiet)
}

func (e *Rejection) Error() string { return e.Err.Error() }

// Unwrap returns the *scim.Error.
func (e *Rejection) Unwrap() error { return e.Err }

// Ref is a reference field and what it points at. With Reference.Field the
// record holds a field of that user's record, but ID is still its SCIM id.
type Ref struct {
	// Field is the record field (the rule's `to`).
	Field string `json:"field"`
	// By is the key that matched ("id", "externalId", "userName" or
	// "email"); empty when the reference is not resolved.
	By string `json:"by,omitempty"`
	// Value is the value read from the SCIM resource.
	Value string `json:"value"`
	// ID is the referenced user's SCIM id when resolved.
	ID string `json:"id,omitempty"`
	// Resolved reports whether a user was found. An unresolved reference
	// leaves the field out of the record; the store keeps it pending and
	// maps the user again when a user with that Value arrives.
	Resolved bool `json:"resolved"`
}

// Resolver finds the user a reference points at. The store implements it
// inside its transaction. by is "id", "externalId", "userName" or "email".
type Resolver interface {
	ResolveUser(by, value string) (id string, ok bool)
}

// RecordResolver is a Resolver that also reads a user's canonical record,
// which a reference with a field (Reference.Field) outputs from. With a
// Resolver that is not one, such a reference resolves (Ref.ID) but leaves
// its field out of the record.
type RecordResolver interface {
	Resolver
	UserRecord(id string) (record map[string]any, ok bool)
}

// ReferencedFields returns the top-level record fields that user
// references output (Reference.Field), sorted. When one of them changes in
// a user's record, the users whose references resolved to that user must
// be mapped again; a reference to the SCIM id needs no such thing.
func (m *Mapper) ReferencedFields() []string { return slices.Clone(m.refFields) }

// MapUser maps a SCIM User document (decoded by encoding/json with
// UseNumber; attribute names in any case) to its canonical record. res may
// be nil: references then stay unresolved.
//
// A required field that is missing, a field whose invalid value is to be
// rejected, or a field that differs from its same_as field makes MapUser
// return a *scim.Error with status 400 and scimType invalidValue whose
// detail names each such field, its source path, the value's problem and
// the expected form, separated by "; ".
//
// With a catalog (Rules.Catalog), the user's roles and entitlements must be
// values it lists, at most one per type that is not multi-valued, and at
// least one per required type while the user is active; a violation is
// rejected the same way, naming the attribute and the valid values.
func (m *Mapper) MapUser(doc map[string]any, res Resolver) (Result, error) {
	problems, attrs := m.checkCatalog(doc)
	return m.run(m.user, m.userSame, doc, res, problems, attrs)
}

// MapGroup maps a SCIM Group document to its canonical record, with the
// same errors as MapUser. Group rules cannot hold references.
func (m *Mapper) MapGroup(doc map[string]any) (Result, error) {
	return m.run(m.group, m.groupSame, doc, nil, problemList{}, nil)
}

// MatchAttribute returns the SCIM attribute that identifies an existing
// user: "userName", "emails" or "externalId".
func (m *Mapper) MatchAttribute() string { return m.match }

func (m *Mapper) run(fieldList, same []*field, doc map[string]any, res Resolver, problems problemList, fields []string) (Result, error) {
	r := Result{Record: make(map[string]any, len(fieldList))}
	var froms []string // where each field's value came from, for same_as
	if len(same) > 0 {
		froms = make([]string, len(fieldList))
	}
	for i, f := range fieldList {
		n := len(problems.full)
		from := f.eval(&r, &problems, doc, res)
		if len(problems.full) > n {
			fields = append(fields, f.to)
		}
		if froms != nil {
			froms[i] = from
		}
	}
	for _, f := range same {
		if p := f.checkSame(r.Record, froms, true); p != "" {
			problems.add(p, f.checkSame(r.Record, froms, false))
			fields = append(fields, f.to)
		}
	}
	if len(problems.full) > 0 {
		return Result{}, &Rejection{Fields: fields, Reasons: problems.quiet,
			Err: scim.Errorf(http.StatusBadRequest, scim.InvalidValue, "%s", strings.Join(problems.full, "; "))}
	}
	return r, nil
}

// checkSame compares f's value with that of its same_as field and returns
// the problem, or "" when they are equal or either is not in the record.
func (f *field) checkSame(rec map[string]any, froms []string, withValues bool) string {
	a, ok := lookup(rec, f.keys)
	if !ok {
		return ""
	}
	b, ok := lookup(rec, f.sameAs.keys)
	if !ok {
		return ""
	}
	// Text case-insensitively; a number or boolean also equals its text.
	if x, ok := toText(a); ok {
		if y, ok := toText(b); ok && strings.EqualFold(x, y) {
			return ""
		}
	}
	if equal(a, b) { // 3 and 3.0; lists and objects
		return ""
	}
	return f.to + ": " + describe(a, withValues) + " must equal " + f.sameAs.to + " " + describe(b, withValues) +
		" (from " + froms[f.pos] + " and " + froms[f.sameAs.pos] + ")"
}

// eval maps one field into r.Record, or adds to r.Warnings or problems. It
// returns where the value set came from (a path, "value", "template" or
// "default"), or "" when the field was left out.
func (f *field) eval(r *Result, problems *problemList, doc map[string]any, res Resolver) string {
	vals, from := f.read(doc)
	for _, s := range f.steps {
		var verr *valueError
		if vals, verr = s(vals, r.Record); verr != nil {
			if !f.invalid(r, problems, verr, from) {
				return ""
			}
			vals = nil // on_invalid: default
			break
		}
	}
	var v any
	switch {
	case len(vals) > 0:
		var verr *valueError
		if v, verr = f.conv(vals); verr != nil {
			if !f.invalid(r, problems, verr, from) {
				return ""
			}
			v, from = clone(f.def), "default"
		}
	case f.hasDef:
		v, from = clone(f.def), "default"
	case f.required:
		p := f.to + ": a value is required (from " + f.srcText + ")"
		problems.add(p, p)
		return ""
	default:
		return ""
	}
	if f.refBy != nil {
		ref := Ref{Field: f.to}
		ref.Value, _ = v.(string)
		for _, by := range f.refBy {
			if res == nil {
				break
			}
			if id, ok := res.ResolveUser(by, ref.Value); ok {
				ref.By, ref.ID, ref.Resolved = by, id, true
				break
			}
		}
		r.Refs = append(r.Refs, ref)
		if !ref.Resolved {
			return ""
		}
		v = ref.ID
		if f.refField != nil {
			// The referenced user's field as its own rules made it; left
			// out when that user has none (or res cannot read records).
			rr, ok := res.(RecordResolver)
			if !ok {
				return ""
			}
			rec, ok := rr.UserRecord(ref.ID)
			if !ok {
				return ""
			}
			if v, ok = lookup(rec, f.refField); !ok {
				return ""
			}
			v = normalize(v) // a copy, with the record's number types
		}
	}
	set(r.Record, f.keys, v)
	return from
}

// invalid handles a value the rule rejects. It reports whether the rule
// goes on with its default.
func (f *field) invalid(r *Result, problems *problemList, verr *valueError, from string) bool {
	switch f.onInvalid {
	case drop:
		r.Warnings = append(r.Warnings, f.to+": dropped: "+verr.text(false)+" (from "+from+")")
		r.WarnedFields = append(r.WarnedFields, f.to)
		return false
	case useDefault:
		r.Warnings = append(r.Warnings, f.to+": default used: "+verr.text(false)+" (from "+from+")")
		r.WarnedFields = append(r.WarnedFields, f.to)
		return true
	}
	problems.add(f.to+": "+verr.text(true)+" (from "+from+")", f.to+": "+verr.text(false)+" (from "+from+")")
	return false
}

// read returns the non-empty values of the first source that has any, and
// that source's text.
func (f *field) read(doc map[string]any) ([]any, string) {
	if f.hasConst {
		return compact(f.constant), "value"
	}
	for _, s := range f.sources {
		if vals := compact(s.path.Values(doc)); len(vals) > 0 {
			return vals, s.text
		}
		if s.bare == nil {
			continue
		}
		// A plain string where {"value": …} was expected.
		var vals []any
		for _, v := range s.bare.Values(doc) {
			if _, ok := toText(v); ok && !isEmpty(v) {
				vals = append(vals, v)
			}
		}
		if len(vals) > 0 {
			return vals, s.text
		}
	}
	return nil, f.srcText
}

// lookup returns the value at the dotted field keys, if there is one.
func lookup(rec map[string]any, keys []string) (any, bool) {
	for _, k := range keys[:len(keys)-1] {
		next, ok := rec[k].(map[string]any)
		if !ok {
			return nil, false
		}
		rec = next
	}
	v, ok := rec[keys[len(keys)-1]]
	return v, ok && v != nil
}

// set stores v at the dotted field keys, creating nested objects.
func set(rec map[string]any, keys []string, v any) {
	for _, k := range keys[:len(keys)-1] {
		next, ok := rec[k].(map[string]any)
		if !ok {
			next = make(map[string]any)
			rec[k] = next
		}
		rec = next
	}
	rec[keys[len(keys)-1]] = v
}

// clone copies the lists and objects of a compiled default so that no two
// records share them.
func clone(v any) any {
	switch v.(type) {
	case []any, map[string]any:
		return normalize(v)
	}
	return v
}
