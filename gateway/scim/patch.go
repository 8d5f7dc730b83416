package scim

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
)

// Operation is one PATCH operation (RFC 7644 §3.5.2).
type Operation struct {
	Op    string // "add", "remove" or "replace" (lower-cased)
	Path  *Path  // nil when the operation has no path
	Value any    // decoded JSON value (json.Number for numbers), nil when absent or null
}

// ParsePatch is ParsePatchLimits with the default Limits.
func ParsePatch(body []byte) ([]Operation, error) {
	return ParsePatchLimits(body, Limits{})
}

// ParsePatchLimits decodes a PatchOp request body (RFC 7644 §3.5.2). It
// accepts "Operations" and the members of an operation in any key case, op
// values in any case ("Replace"), and a missing "schemas"; when "schemas" is
// present it must contain SchemaPatchOp. Unknown members (Entra's "name", a
// top-level "id") are ignored. An empty or null "path" counts as absent.
// The body gets the checks of DecodeObject first: nesting within
// lim.MaxDepth, valid UTF-8, no unpaired surrogate escapes.
//
// Errors are *Error with status 400: malformed JSON, a body nested too
// deeply or not UTF-8, or one that is not a PatchOp message → invalidSyntax;
// no operations, an unknown op or a missing value for add/replace →
// invalidValue; a bad path → invalidPath; remove without a path → noTarget.
// Details name the operation's index.
func ParsePatchLimits(body []byte, lim Limits) ([]Operation, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, badRequest(InvalidSyntax, "PATCH body is empty; expected a PatchOp message with \"Operations\"")
	}
	v, derr := decodeJSON(body, lim.maxDepth(), "PATCH body")
	if derr != nil {
		return nil, derr
	}
	msg, ok := v.(map[string]any)
	if !ok {
		return nil, badRequest(InvalidSyntax, "PATCH body must be a JSON object with \"schemas\" and \"Operations\", got %s", describe(v))
	}
	if s, ok := Get(msg, "schemas"); ok && s != nil {
		if !containsString(s, SchemaPatchOp) {
			return nil, badRequest(InvalidValue, "PATCH body \"schemas\" must contain %s", quote(SchemaPatchOp))
		}
	}
	raw, _ := Get(msg, "Operations")
	if raw == nil {
		return nil, badRequest(InvalidValue, "PATCH body has no \"Operations\"; send at least one operation")
	}
	list, ok := raw.([]any)
	if !ok {
		return nil, badRequest(InvalidSyntax, "PATCH \"Operations\" must be an array, got %s", describe(raw))
	}
	if len(list) == 0 {
		return nil, badRequest(InvalidValue, "PATCH \"Operations\" is empty; send at least one operation")
	}
	ops := make([]Operation, 0, len(list))
	for i, e := range list {
		m, ok := e.(map[string]any)
		if !ok {
			return nil, badRequest(InvalidSyntax, "Operations[%d] must be an object with \"op\", \"path\" and \"value\", got %s", i, describe(e))
		}
		var op Operation
		rawOp, _ := Get(m, "op")
		name, _ := rawOp.(string)
		op.Op = strings.ToLower(strings.TrimSpace(name))
		switch op.Op {
		case "add", "remove", "replace":
		default:
			return nil, badRequest(InvalidValue, "Operations[%d]: unknown op %s; expected \"add\", \"remove\" or \"replace\"", i, describe(rawOp))
		}
		if rp, _ := Get(m, "path"); rp != nil {
			ps, ok := rp.(string)
			if !ok {
				return nil, badRequest(InvalidPath, "Operations[%d]: \"path\" must be a string, got %s", i, describe(rp))
			}
			if strings.TrimSpace(ps) != "" {
				p, err := ParsePath(ps)
				if err != nil {
					e := err.(*Error)
					return nil, badRequest(InvalidPath, "Operations[%d]: %s", i, e.Detail)
				}
				op.Path = p
			}
		}
		val, hasValue := Get(m, "value")
		op.Value = val
		switch {
		case op.Op == "remove" && op.Path == nil:
			return nil, badRequest(NoTarget, "Operations[%d]: remove needs a \"path\" naming what to remove, e.g. \"members[value eq \\\"id\\\"]\"", i)
		case op.Op != "remove" && !hasValue:
			return nil, badRequest(InvalidValue, "Operations[%d]: %s needs a \"value\"", i, op.Op)
		}
		ops = append(ops, op)
	}
	return ops, nil
}

func containsString(v any, s string) bool {
	switch x := v.(type) {
	case []any:
		for _, e := range x {
			if es, ok := e.(string); ok && strings.EqualFold(es, s) {
				return true
			}
		}
	case []string:
		for _, e := range x {
			if strings.EqualFold(e, s) {
				return true
			}
		}
	case string:
		return strings.EqualFold(x, s)
	}
	return false
}

// ApplyPatch is ApplyPatchLimits with the default Limits.
func ApplyPatch(doc map[string]any, ops []Operation, rt *ResourceType) (map[string]any, error) {
	return ApplyPatchLimits(doc, ops, rt, Limits{})
}

// ApplyPatchLimits applies ops in order to a deep copy of doc and returns
// the copy; doc is never modified. If an operation fails, the *Error (status
// 400) is returned and nothing is applied. rt may be nil, in which case
// attributes are applied generically (no type coercion, no mutability, no
// write-only attributes). A result nested deeper than lim.MaxDepth (a value
// added at a nested path deepens the document) is refused with 400
// invalidValue naming scim.limits.max_depth.
//
// Beyond RFC 7644 §3.5.2 it accepts what Okta and Entra ID send:
//   - without a path, the value is an object whose keys may be plain,
//     dotted ("name.givenName") or URN-qualified (a whole extension URN
//     merges its object into the extension); read-only attributes (id,
//     meta, groups) and "schemas" in it are ignored;
//   - "True"/"False" strings for boolean attributes; a bare string (or a
//     one-element array) for manager, which becomes {"value": s};
//   - null or "" on add/replace clears an optional attribute;
//   - replace on emails[type eq "work"].value with no work email appends
//     {"type": "work", "value": …};
//   - remove on "members" with a value list removes only those members;
//   - add on a multi-valued complex attribute with a string value adds
//     {"value": s}.
//
// The core schema URN names the top level: a path-less value's key
// "urn:ietf:params:scim:schemas:core:2.0:User" merges its object into the
// top level, and "urn:…:core:2.0:User:title" is "title". Write-only or never
// returned attributes (password), however qualified, are accepted and not
// stored. "schemas" cannot be a path (400 mutability): it is rendered from
// the data (see Project), and in a path-less value it is ignored.
//
// Adding an element deep-equal to an existing one is a no-op; adding a
// member whose value is already a member updates that member. A new
// element with primary true clears primary on the others, and at most one
// element of a multi-valued attribute stays primary: of those an operation
// sets, the first. Removing the last element of an attribute, or the last
// sub-attribute of a complex attribute or extension, removes the attribute.
func ApplyPatchLimits(doc map[string]any, ops []Operation, rt *ResourceType, lim Limits) (map[string]any, error) {
	return ApplyPatchEach(doc, ops, rt, lim, nil)
}

// ApplyPatchEach is ApplyPatchLimits with a hook: each (when not nil) is
// called before operation i with the document as it stands (the working
// copy, never doc), and the function it returns (when not nil) once the
// operation has been applied; that function may change the document in
// place. The store uses it for a rule that depends on what one operation
// did: an add on a single-valued catalog type replaces its value.
func ApplyPatchEach(doc map[string]any, ops []Operation, rt *ResourceType, lim Limits, each func(i int, doc map[string]any) func()) (map[string]any, error) {
	out, _ := DeepCopy(doc).(map[string]any)
	if out == nil {
		out = make(map[string]any)
	}
	for i, op := range ops {
		var after func()
		if each != nil {
			after = each(i, out)
		}
		a := applier{rt: rt, index: i}
		if err := a.apply(out, op); err != nil {
			return nil, err
		}
		if after != nil {
			after()
		}
	}
	if limit := lim.maxDepth(); Depth(out, limit) > limit {
		return nil, badRequest(InvalidValue, "PATCH would nest the resource more than %d levels deep (objects and arrays), the limit set by scim.limits.max_depth: add flatter values", limit)
	}
	return out, nil
}

// applier applies one operation.
type applier struct {
	rt    *ResourceType
	index int
}

func (a *applier) errorf(scimType, format string, args ...any) *Error {
	e := badRequest(scimType, format, args...)
	e.Detail = "Operations[" + strconv.Itoa(a.index) + "]: " + e.Detail
	return e
}

func (a *applier) apply(doc map[string]any, op Operation) *Error {
	name := strings.ToLower(op.Op)
	if p := op.Path; p != nil && p.Attr != "" && strings.EqualFold(p.Attr, "schemas") && (p.URN == "" || isOwnCore(p.URN, a.rt)) {
		return a.errorf(Mutability, "%s on \"schemas\": scimgate sets \"schemas\" from the extensions the resource has, so it cannot be changed; remove this operation", name)
	}
	switch name {
	case "add", "replace":
		if op.Path == nil {
			return a.applyObject(doc, name, op.Value)
		}
		return a.set(doc, name, op.Path, op.Value, true)
	case "remove":
		if op.Path == nil {
			return a.errorf(NoTarget, "remove needs a \"path\" naming what to remove")
		}
		return a.remove(doc, op.Path, op.Value)
	}
	return a.errorf(InvalidValue, "unknown op %s; expected \"add\", \"remove\" or \"replace\"", quote(op.Op))
}

// applyObject applies an add or replace without a path.
func (a *applier) applyObject(doc map[string]any, op string, value any) *Error {
	m, ok := value.(map[string]any)
	if !ok {
		return a.errorf(InvalidValue, "%s without a \"path\" needs an object \"value\" such as {\"active\": false}, got %s", op, describeType(value))
	}
	// Sorted so that "name" is applied before "name.givenName".
	for _, k := range sortedKeys(m) {
		if strings.EqualFold(k, "schemas") {
			continue
		}
		p, err := ParsePath(k)
		if err != nil {
			return a.errorf(InvalidPath, "the key %s of \"value\" is not an attribute path: %s", quote(k), err.(*Error).Detail)
		}
		if err := a.set(doc, op, p, m[k], false); err != nil {
			return err
		}
	}
	return nil
}

// bareURN returns the extension URN when p names a whole extension object:
// a bare URN path, or a URN whose last segment ParsePath took for an
// attribute name ("urn:acme:custom") when rt declares it, doc has it, or
// (withObject) the object value is for an unknown schema.
func (a *applier) bareURN(doc map[string]any, p *Path, withObject bool) (string, bool) {
	if p.Attr == "" {
		return p.URN, true
	}
	if p.URN == "" || p.Filter != nil || p.Sub != "" {
		return "", false
	}
	full := p.URN + ":" + p.Attr
	if a.rt.Extension(full) != nil {
		return full, true
	}
	if _, ok := findKey(doc, full); ok {
		return full, true
	}
	if withObject && !isOwnCore(p.URN, a.rt) && a.rt.Extension(p.URN) == nil {
		if _, ok := findKey(doc, p.URN); !ok {
			return full, true
		}
	}
	return "", false
}

// extKey returns the key the extension urn is (or will be) stored under.
func (a *applier) extKey(doc map[string]any, urn string) string {
	if k, ok := findKey(doc, urn); ok {
		return k
	}
	if s := a.rt.Extension(urn); s != nil {
		return s.ID
	}
	return urn
}

// target resolves the object p's attribute lives in, creating an extension
// object when create is set. It returns nil when there is none.
func (a *applier) target(doc map[string]any, urn string, create bool) (map[string]any, string) {
	if urn == "" || isOwnCore(urn, a.rt) {
		return doc, ""
	}
	key := a.extKey(doc, urn)
	if m, ok := doc[key].(map[string]any); ok {
		return m, key
	}
	if !create {
		return nil, key
	}
	m := make(map[string]any)
	doc[key] = m
	return m, key
}

// readOnlySub reports whether sub-attribute sub of def is read-only
// (manager.displayName): a path naming it is refused as a read-only
// attribute's is, and in a value it is ignored (see coerceObject).
func readOnlySub(def *Attribute, sub string) bool {
	sd := def.Sub(sub)
	return sd != nil && sd.Mutability == ReadOnly
}

// def returns the definition of p's attribute (not its sub-attribute).
func (a *applier) def(p *Path) *Attribute {
	if a.rt == nil {
		return nil
	}
	return a.rt.schemaFor(p.URN).Attr(p.Attr)
}

// set applies an add or replace of value at p. explicit is false for the
// keys of a path-less operation, whose read-only attributes are skipped.
func (a *applier) set(doc map[string]any, op string, p *Path, value any, explicit bool) *Error {
	_, isObj := value.(map[string]any)
	if urn, ok := a.bareURN(doc, p, isObj); ok {
		return a.setExtension(doc, op, urn, value)
	}
	def := a.def(p)
	if notStored(def) {
		return nil // password: accepted, never stored
	}
	if def != nil && (def.Mutability == ReadOnly || p.Sub != "" && readOnlySub(def, p.Sub)) {
		if !explicit {
			return nil
		}
		return a.errorf(Mutability, "attribute %s is read-only and cannot be changed", quote(p.String()))
	}
	clear := isEmpty(value)
	c, extKey := a.target(doc, p.URN, !clear)
	if c == nil {
		return nil // clearing inside an absent extension
	}
	defer dropEmptyExtension(doc, extKey)
	key, exists := findKey(c, p.Attr)
	if !exists {
		key = p.Attr
		if def != nil {
			key = def.Name
		}
	}
	name := p.String()
	switch {
	case p.Filter != nil:
		return a.setFiltered(c, key, op, p, def, value)
	case p.Sub != "":
		return a.setSub(c, key, p, def, value)
	}
	if clear {
		if def != nil && def.Required {
			return a.errorf(Mutability, "attribute %s is required and cannot be cleared", quote(name))
		}
		delete(c, key)
		return nil
	}
	cur := c[key]
	if isManager(def, p.Attr) {
		value = managerValue(value)
		if isEmpty(value) {
			delete(c, key)
			return nil
		}
	}
	_, curArr := cur.([]any)
	_, valArr := value.([]any)
	if (def != nil && def.MultiValued) || (def == nil && (curArr || valArr)) {
		var list []any
		if def == nil {
			list = toList(dropNulls(value))
		} else {
			items, err := coerceAttr(def, value, name, true)
			if err != nil {
				return a.wrap(err)
			}
			list = items.([]any)
		}
		if op == "replace" {
			c[key] = list
			return nil
		}
		if cur == nil && len(list) == 0 {
			return nil // adding nothing to an absent attribute
		}
		merged := addElements(toList(cur), list, def)
		if merged == nil {
			merged = []any{}
		}
		c[key] = merged
		return nil
	}
	_, curObj := cur.(map[string]any)
	if (def != nil && def.Type == TypeComplex) || (def == nil && curObj && isObj) {
		vm, ok := value.(map[string]any)
		if !ok {
			return a.errorf(InvalidValue, "attribute %s must be an object, got %s", quote(name), valueDesc(def, value))
		}
		obj, _ := cur.(map[string]any)
		if obj == nil {
			obj = make(map[string]any)
		}
		for _, k := range sortedKeys(vm) {
			var sub *Attribute
			if def != nil {
				sub = def.Sub(k)
			}
			if err := a.setKey(obj, k, sub, vm[k], joinName(name, k)); err != nil {
				return err
			}
		}
		if len(obj) == 0 {
			delete(c, key)
		} else {
			c[key] = obj
		}
		return nil
	}
	cv, err := coerceSingle(def, value, name)
	if err != nil {
		return a.wrap(err)
	}
	c[key] = cv
	return nil
}

// objectValue is value coerced to the object that op on name needs.
func (a *applier) objectValue(op, name string, def *Attribute, value any) (map[string]any, *Error) {
	v, err := coerceSingle(def, value, name)
	if err != nil {
		return nil, a.wrap(err)
	}
	vm, ok := v.(map[string]any)
	if !ok {
		return nil, a.errorf(InvalidValue, "%s on %s needs an object value, got %s", op, quote(name), valueDesc(def, value))
	}
	return vm, nil
}

// wrap prefixes an error from coerce with the operation index.
func (a *applier) wrap(err *Error) *Error {
	e := *err
	e.Detail = "Operations[" + strconv.Itoa(a.index) + "]: " + e.Detail
	return &e
}

// setKey sets (or, for null and "", deletes) obj's member k, found
// case-insensitively, coercing the value by def.
func (a *applier) setKey(obj map[string]any, k string, def *Attribute, v any, name string) *Error {
	if notStored(def) {
		return nil
	}
	key, ok := findKey(obj, k)
	if !ok {
		key = k
		if def != nil {
			key = def.Name
		}
	}
	if isEmpty(v) {
		delete(obj, key)
		return nil
	}
	cv, err := coerceAttr(def, v, name, false)
	if err != nil {
		return a.wrap(err)
	}
	obj[key] = cv
	return nil
}

// setSub sets p.Sub of the attribute at c[key] (of every element when it is
// multi-valued), creating the attribute when absent.
func (a *applier) setSub(c map[string]any, key string, p *Path, def *Attribute, value any) *Error {
	sub := def.Sub(p.Sub)
	name := p.String()
	switch cur := c[key].(type) {
	case []any:
		if len(cur) == 0 {
			return a.errorf(NoTarget, "attribute %s has no values to set %s on", quote(p.Attr), quote(p.Sub))
		}
		for _, e := range cur {
			if m, ok := e.(map[string]any); ok {
				if err := a.setKey(m, p.Sub, sub, value, name); err != nil {
					return err
				}
			}
		}
		onePrimary(cur, nil)
		return nil
	case map[string]any:
		if err := a.setKey(cur, p.Sub, sub, value, name); err != nil {
			return err
		}
		if len(cur) == 0 {
			delete(c, key)
		}
		return nil
	}
	if isEmpty(value) {
		return nil
	}
	m := make(map[string]any)
	if err := a.setKey(m, p.Sub, sub, value, name); err != nil {
		return err
	}
	if def != nil && def.MultiValued {
		c[key] = []any{m}
	} else {
		c[key] = m
	}
	return nil
}

// setFiltered applies add/replace on a valuePath (with or without a
// sub-attribute).
func (a *applier) setFiltered(c map[string]any, key, op string, p *Path, def *Attribute, value any) *Error {
	name := p.String()
	list := toList(c[key])
	sc := scope{parent: def, inElem: true}
	matched := 0
	hit := make(map[int]bool)
	for i, e := range list {
		m, ok := e.(map[string]any)
		if !ok || !p.Filter.match(m, sc) {
			continue
		}
		matched++
		hit[i] = true
		if p.Sub != "" {
			if err := a.setKey(m, p.Sub, def.Sub(p.Sub), value, name); err != nil {
				return err
			}
			continue
		}
		if isEmpty(value) {
			return a.errorf(InvalidValue, "%s on %s needs an object value, got %s", op, quote(name), valueDesc(def, value))
		}
		vm, err := a.objectValue(op, name, def, value)
		if err != nil {
			return err
		}
		if op == "replace" {
			list[i] = vm
			continue
		}
		for k, x := range vm {
			kk, ok := findKey(m, k)
			if !ok {
				kk = k
			}
			m[kk] = x
		}
	}
	if matched > 0 {
		onePrimary(list, func(i int) bool { return hit[i] })
		c[key] = list
		return nil
	}
	if isEmpty(value) {
		return nil // nothing to clear
	}
	// No element matches: Entra expects emails[type eq "work"].value to
	// create the work email. Build it from the filter's equality terms.
	if p.Sub == "" && op == "replace" {
		return a.errorf(NoTarget, "no value of %s matches the filter [%s]", quote(p.Attr), p.Filter.String())
	}
	elem := make(map[string]any)
	if !p.Filter.equalityTerms(elem, def) {
		return a.errorf(NoTarget, "no value of %s matches the filter [%s], and a new value cannot be built from it (only \"and\"-joined eq comparisons can)",
			quote(p.Attr), p.Filter.String())
	}
	if p.Sub != "" {
		if err := a.setKey(elem, p.Sub, def.Sub(p.Sub), value, name); err != nil {
			return err
		}
	} else {
		vm, err := a.objectValue(op, name, def, value)
		if err != nil {
			return err
		}
		for k, x := range vm {
			elem[k] = x
		}
	}
	c[key] = addElements(list, []any{elem}, def)
	return nil
}

// equalityTerms adds to elem the attr eq value comparisons of an
// "and"-joined filter and reports whether f consists only of those.
func (f *Filter) equalityTerms(elem map[string]any, parent *Attribute) bool {
	switch f.op {
	case opAnd:
		return f.left.equalityTerms(elem, parent) && f.right.equalityTerms(elem, parent)
	case opEq:
		if f.path.Filter != nil || f.path.Sub != "" || f.path.URN != "" {
			return false
		}
		name := f.path.Attr
		if d := parent.Sub(name); d != nil {
			name = d.Name
		}
		switch f.val.kind {
		case valString:
			elem[name] = f.val.s
		case valNumber:
			elem[name] = json.Number(f.val.s)
		case valBool:
			elem[name] = f.val.b
		default:
			return false
		}
		return true
	}
	return false
}

// setExtension applies add/replace of a whole extension object: its keys
// are merged (null and "" clear them); null or "" removes the extension.
func (a *applier) setExtension(doc map[string]any, op, urn string, value any) *Error {
	if isOwnCore(urn, a.rt) {
		return a.setCore(doc, op, urn, value)
	}
	key := a.extKey(doc, urn)
	if isEmpty(value) {
		delete(doc, key)
		return nil
	}
	m, ok := value.(map[string]any)
	if !ok {
		return a.errorf(InvalidValue, "extension %s must be an object of its attributes, got %s", quote(urn), describeType(value))
	}
	for _, k := range sortedKeys(m) {
		sp, err := ParsePath(k)
		if err != nil || sp.URN != "" {
			return a.errorf(InvalidPath, "the key %s in extension %s is not an attribute name", quote(k), quote(urn))
		}
		sp.URN = urn
		if err := a.set(doc, op, sp, m[k], false); err != nil {
			return err
		}
	}
	if _, ok := doc[key]; !ok && len(m) == 0 {
		doc[key] = map[string]any{}
	}
	return nil
}

// setCore applies add/replace of an object under the core schema URN: its
// keys are top-level attributes.
func (a *applier) setCore(doc map[string]any, op, urn string, value any) *Error {
	m, ok := value.(map[string]any)
	if !ok {
		return a.errorf(InvalidValue, "%s names the core schema; its value must be an object of attributes, got %s", quote(urn), describeType(value))
	}
	for _, k := range sortedKeys(m) {
		if strings.EqualFold(k, "schemas") {
			continue
		}
		sp, err := ParsePath(k)
		if err != nil || sp.URN != "" {
			return a.errorf(InvalidPath, "the key %s in %s is not an attribute name", quote(k), quote(urn))
		}
		if err := a.set(doc, op, sp, m[k], false); err != nil {
			return err
		}
	}
	return nil
}

// dropEmptyExtension removes the extension object at key when it is empty.
func dropEmptyExtension(doc map[string]any, key string) {
	if key == "" {
		return
	}
	if m, ok := doc[key].(map[string]any); ok && len(m) == 0 {
		delete(doc, key)
	}
}

// managerValue turns the shapes Entra sends for manager into an object: a
// bare id string becomes {"value": id}, a one-element array its element.
func managerValue(v any) any {
	switch x := v.(type) {
	case string:
		if x == "" {
			return ""
		}
		return map[string]any{"value": x}
	case []any:
		for _, e := range x {
			if e != nil {
				return managerValue(e)
			}
		}
		return nil
	}
	return v
}

// toList returns an attribute value as a list of elements.
func toList(v any) []any {
	switch x := v.(type) {
	case nil:
		return nil
	case []any:
		return x
	}
	return []any{v}
}

// addElements appends items to list, skipping those deep-equal to an
// existing element. For members, an item whose value is already a member
// updates that member instead (the earliest such element, unless a
// deep-equal one comes before it). An added element with primary true
// clears primary on the other elements.
//
// It runs in time linear in the size of list and items: elements are found
// through an index of their comparison keys, not by comparing each item
// with each element (a path-less add of 30,000 emails took 30 s inside the
// store's writer).
func addElements(list, items []any, def *Attribute) []any {
	if len(items) == 0 {
		return list
	}
	byValue := def != nil && strings.EqualFold(def.Name, "members")
	ix := newElemIndex(list, byValue)
	for _, it := range items {
		im, isMap := it.(map[string]any)
		d, v := ix.findEqual(it), -1
		if byValue && isMap {
			v = ix.findSameValue(im)
		}
		switch {
		case d >= 0 && (v < 0 || d <= v):
			continue // already there
		case v >= 0:
			em := ix.list[v].(map[string]any)
			for k, x := range im {
				kk, ok := findKey(em, k)
				if !ok {
					kk = k
				}
				em[kk] = x
			}
			ix.reindex(v)
			continue
		}
		ix.append(it)
		if isMap {
			if p, _ := Get(im, "primary"); p == true {
				ix.clearPrimaryExcept(len(ix.list) - 1)
			}
		}
	}
	return ix.list
}

// elemIndex indexes the elements of a multi-valued attribute by comparison
// key (elemKey: equal for deepEqual values) and, for members, by the key of
// their non-empty "value"; buckets hold indices in ascending order, so the
// earliest match is found first. It also tracks which elements are primary.
type elemIndex struct {
	list    []any
	keys    []string // elemKey of each element
	deep    map[string][]int
	byValue bool
	vkeys   []string // key of each element's "value", "" when it has none
	vals    map[string][]int
	primary map[int]bool // elements whose primary is true
}

func newElemIndex(list []any, byValue bool) *elemIndex {
	ix := &elemIndex{
		list:    list[:len(list):len(list)], // appends never write into the caller's array
		keys:    make([]string, 0, len(list)),
		deep:    make(map[string][]int, len(list)),
		byValue: byValue,
		primary: map[int]bool{},
	}
	if byValue {
		ix.vkeys = make([]string, 0, len(list))
		ix.vals = make(map[string][]int, len(list))
	}
	for i := range list {
		ix.indexNew(i)
	}
	return ix
}

// append adds e at the end of the list and indexes it.
func (ix *elemIndex) append(e any) {
	ix.list = append(ix.list, e)
	ix.indexNew(len(ix.list) - 1)
}

// indexNew indexes the element at i, the highest index so far.
func (ix *elemIndex) indexNew(i int) {
	e := ix.list[i]
	k := elemKey(e)
	ix.keys = append(ix.keys, k)
	ix.deep[k] = append(ix.deep[k], i)
	if ix.byValue {
		vk := valueKey(e)
		ix.vkeys = append(ix.vkeys, vk)
		if vk != "" {
			ix.vals[vk] = append(ix.vals[vk], i)
		}
	}
	if isPrimary(e) {
		ix.primary[i] = true
	}
}

// reindex updates the index after the element at i changed.
func (ix *elemIndex) reindex(i int) {
	e := ix.list[i]
	if k := elemKey(e); k != ix.keys[i] {
		moveIndex(ix.deep, ix.keys[i], k, i)
		ix.keys[i] = k
	}
	if ix.byValue {
		if vk := valueKey(e); vk != ix.vkeys[i] {
			moveIndex(ix.vals, ix.vkeys[i], vk, i)
			ix.vkeys[i] = vk
		}
	}
	if isPrimary(e) {
		ix.primary[i] = true
	} else {
		delete(ix.primary, i)
	}
}

// moveIndex moves i from bucket from to bucket to ("" is no bucket),
// keeping both sorted.
func moveIndex(m map[string][]int, from, to string, i int) {
	if from != "" {
		b := m[from]
		if j, ok := slices.BinarySearch(b, i); ok {
			b = slices.Delete(b, j, j+1)
		}
		if len(b) == 0 {
			delete(m, from)
		} else {
			m[from] = b
		}
	}
	if to != "" {
		b := m[to]
		j, _ := slices.BinarySearch(b, i)
		m[to] = slices.Insert(b, j, i)
	}
}

// findEqual returns the index of the earliest element deep-equal to v, or -1.
func (ix *elemIndex) findEqual(v any) int {
	for _, i := range ix.deep[elemKey(v)] {
		if deepEqual(ix.list[i], v) {
			return i
		}
	}
	return -1
}

// findSameValue returns the index of the earliest element with the same
// non-empty "value" as m, or -1.
func (ix *elemIndex) findSameValue(m map[string]any) int {
	bv, _ := Get(m, "value")
	if bv == nil {
		return -1
	}
	for _, i := range ix.vals[elemKey(bv)] {
		if em, ok := ix.list[i].(map[string]any); ok && sameValue(em, m) {
			return i
		}
	}
	return -1
}

// clearPrimaryExcept sets primary false on every primary element but keep.
func (ix *elemIndex) clearPrimaryExcept(keep int) {
	for i := range ix.primary {
		if i == keep {
			continue
		}
		em := ix.list[i].(map[string]any)
		k, _ := findKey(em, "primary")
		em[k] = false
		ix.reindex(i)
	}
}

// isPrimary reports whether e is an object whose primary is true.
func isPrimary(e any) bool {
	m, ok := e.(map[string]any)
	if !ok {
		return false
	}
	k, ok := findKey(m, "primary")
	return ok && m[k] == true
}

// valueKey returns the elemKey of e's non-empty "value", or "".
func valueKey(e any) string {
	m, ok := e.(map[string]any)
	if !ok {
		return ""
	}
	v, _ := Get(m, "value")
	if v == nil || isEmpty(v) {
		return ""
	}
	return elemKey(v)
}

// elemKey returns a text that is the same for any two JSON values deepEqual
// reports equal (objects by sorted key, numbers by float64 value). Values
// with the same key may still differ; callers confirm with deepEqual.
func elemKey(v any) string {
	return string(appendKey(nil, v))
}

func appendKey(b []byte, v any) []byte {
	switch x := v.(type) {
	case nil:
		return append(b, 'n')
	case bool:
		if x {
			return append(b, 't')
		}
		return append(b, 'f')
	case string:
		return strconv.AppendQuote(append(b, 's'), x)
	case map[string]any:
		b = append(b, '{')
		for _, k := range sortedKeys(x) {
			b = strconv.AppendQuote(b, k)
			b = appendKey(append(b, ':'), x[k])
			b = append(b, ',')
		}
		return append(b, '}')
	case []any:
		b = append(b, '[')
		for _, e := range x {
			b = append(appendKey(b, e), ',')
		}
		return append(b, ']')
	}
	if n, ok := number(v); ok {
		if n == 0 {
			n = 0 // -0 equals 0
		}
		return strconv.AppendFloat(append(b, '#'), n, 'g', -1, 64)
	}
	return append(b, '?') // deepEqual is false for other types
}

// sameValue reports whether two elements have equal non-empty "value"s.
func sameValue(a, b map[string]any) bool {
	av, _ := Get(a, "value")
	bv, _ := Get(b, "value")
	return av != nil && !isEmpty(av) && deepEqual(av, bv)
}

func deleteKey(m map[string]any, k string) bool {
	if key, ok := findKey(m, k); ok {
		delete(m, key)
		return true
	}
	return false
}

// remove applies a remove operation.
func (a *applier) remove(doc map[string]any, p *Path, value any) *Error {
	if urn, ok := a.bareURN(doc, p, false); ok {
		if isOwnCore(urn, a.rt) {
			return a.errorf(InvalidPath, "remove on %s names the core schema, not an attribute; name the attribute to remove", quote(urn))
		}
		deleteKey(doc, urn)
		return nil
	}
	def := a.def(p)
	if notStored(def) {
		return nil // nothing of it is stored
	}
	if def != nil && (def.Mutability == ReadOnly || p.Sub != "" && readOnlySub(def, p.Sub)) {
		return a.errorf(Mutability, "attribute %s is read-only and cannot be removed", quote(p.String()))
	}
	c, extKey := a.target(doc, p.URN, false)
	if c == nil {
		return nil
	}
	defer dropEmptyExtension(doc, extKey)
	key, ok := findKey(c, p.Attr)
	if !ok {
		if def != nil && def.Required && p.Filter == nil && p.Sub == "" {
			return a.errorf(Mutability, "attribute %s is required and cannot be removed", quote(p.String()))
		}
		return nil
	}
	cur := c[key]
	switch {
	case p.Filter != nil:
		sc := scope{parent: def, inElem: true}
		list := toList(cur)
		kept := list[:0:0]
		for _, e := range list {
			m, ok := e.(map[string]any)
			if !ok || !p.Filter.match(m, sc) {
				kept = append(kept, e)
				continue
			}
			if p.Sub != "" {
				deleteKey(m, p.Sub)
				kept = append(kept, m)
			}
		}
		setOrDelete(c, key, kept, cur)
		return nil
	case p.Sub != "":
		switch x := cur.(type) {
		case map[string]any:
			deleteKey(x, p.Sub)
			if len(x) == 0 {
				delete(c, key)
			}
		case []any:
			for _, e := range x {
				if m, ok := e.(map[string]any); ok {
					deleteKey(m, p.Sub)
				}
			}
		}
		return nil
	}
	if def != nil && def.Required {
		return a.errorf(Mutability, "attribute %s is required and cannot be removed", quote(p.String()))
	}
	list, isList := cur.([]any)
	if !isList || isEmpty(value) {
		delete(c, key)
		return nil
	}
	// Entra: {"op":"Remove","path":"members","value":[{"value":"id"}]}
	// removes only the listed elements.
	drop := toList(value)
	kept := list[:0:0]
	for _, e := range list {
		if !slices.ContainsFunc(drop, func(d any) bool { return sameElement(e, d) }) {
			kept = append(kept, e)
		}
	}
	setOrDelete(c, key, kept, cur)
	return nil
}

// setOrDelete stores kept at c[key], or deletes the attribute when kept is
// empty. A single (non-list) value stays single.
func setOrDelete(c map[string]any, key string, kept []any, cur any) {
	switch {
	case len(kept) == 0:
		delete(c, key)
	case len(kept) == 1 && !isList(cur):
		c[key] = kept[0]
	default:
		c[key] = kept
	}
}

func isList(v any) bool { _, ok := v.([]any); return ok }

// sameElement reports whether the element e is the one d names in a remove
// value list: equal "value" sub-attributes (d may be a bare value), or deep
// equality when d has no value.
func sameElement(e, d any) bool {
	em, eok := e.(map[string]any)
	switch dv := d.(type) {
	case map[string]any:
		if v, ok := Get(dv, "value"); ok && v != nil && eok {
			ev, _ := Get(em, "value")
			return deepEqual(ev, v)
		}
		return deepEqual(e, d)
	default:
		if eok {
			ev, _ := Get(em, "value")
			return deepEqual(ev, d)
		}
		return deepEqual(e, d)
	}
}
