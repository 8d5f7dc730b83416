package mapping

import (
	"encoding/json"
	"regexp"
	"slices"
	"strings"
)

// step is one compiled transform. It returns a new slice (never vals
// itself modified: vals may be the document's own list or a compiled
// constant) without empty values. rec is the record built so far, which
// templates read.
type step func(vals []any, rec map[string]any) ([]any, *valueError)

// transformNames lists the transforms in the order the docs present them.
var transformNames = []string{"trim", "lower", "upper", "lookup", "replace", "split", "join", "template", "first", "not"}

// isEmpty reports whether v counts as no value: missing, null, "" or an
// empty list or object (Okta's "push empty values" sends "" and null to clear).
func isEmpty(v any) bool {
	switch v := v.(type) {
	case nil:
		return true
	case string:
		return v == ""
	case []any:
		return len(v) == 0
	case map[string]any:
		return len(v) == 0
	}
	return false
}

func isString(v any) bool {
	_, ok := v.(string)
	return ok
}

// eachText applies f to the text of every value.
func eachText(f func(string) string) step {
	return func(vals []any, _ map[string]any) ([]any, *valueError) {
		out := make([]any, 0, len(vals))
		for _, v := range vals {
			s, ok := toText(v)
			if !ok {
				return nil, &valueError{val: v, msg: "is not text"}
			}
			switch r := f(s); {
			case r == "":
			case r == s && isString(v):
				out = append(out, v) // already boxed: no allocation
			default:
				out = append(out, r)
			}
		}
		return out, nil
	}
}

// compileStep compiles t; fields maps each `to` of the resource to its rule
// index, for templates. It returns the fields a template reads.
func compileStep(t Transform, fields map[string]int) (step, *template, error) {
	op := strings.ToLower(t.Op)
	if !slices.Contains(transformNames, op) {
		return nil, nil, errf(ErrUnknown, "unknown transform %q (want one of %s)", t.Op, strings.Join(transformNames, ", "))
	}
	if t.Lookup != nil && op != "lookup" || t.Replace != nil && op != "replace" || t.Arg != "" && !hasArg(op) {
		return nil, nil, errf(ErrInvalid, "transform %s takes no options", op)
	}
	switch op {
	case "trim":
		return eachText(strings.TrimSpace), nil, nil
	case "lower":
		return eachText(strings.ToLower), nil, nil
	case "upper":
		return eachText(strings.ToUpper), nil, nil
	case "lookup":
		s, err := lookupStep(t.Lookup)
		return s, nil, err
	case "replace":
		s, err := replaceStep(t.Replace)
		return s, nil, err
	case "split":
		if t.Arg == "" {
			return nil, nil, errf(ErrMissing, "split needs a separator (split: \",\")")
		}
		return splitStep(t.Arg), nil, nil
	case "join":
		return joinStep(t.Arg), nil, nil
	case "template":
		tp, err := parseTemplate(t.Arg, fields)
		if err != nil {
			return nil, nil, err
		}
		return tp.render, tp, nil
	case "first":
		return func(vals []any, _ map[string]any) ([]any, *valueError) {
			return vals[:min(len(vals), 1):min(len(vals), 1)], nil
		}, nil, nil
	default: // "not"
		return func(vals []any, _ map[string]any) ([]any, *valueError) {
			out := make([]any, len(vals))
			for i, v := range vals {
				b, ok := toBool(v)
				if !ok {
					return nil, &valueError{val: v, msg: "is not a boolean (true or false)"}
				}
				out[i] = !b
			}
			return out, nil
		}, nil, nil
	}
}

func lookupStep(l *Lookup) (step, error) {
	if l == nil || len(l.Table) == 0 {
		return nil, errf(ErrMissing, "lookup needs a table")
	}
	if l.Strict && l.Default != nil {
		return nil, errf(ErrConflict, "lookup has both strict and default")
	}
	table := make(map[string]any, len(l.Table))
	keys := make([]string, 0, len(l.Table))
	for k := range l.Table {
		keys = append(keys, k)
	}
	slices.Sort(keys) // so a clash is reported the same way every time
	for _, k := range keys {
		f := strings.ToLower(k)
		if _, ok := table[f]; ok {
			return nil, errf(ErrConflict, "lookup keys differ only in case (%q)", k)
		}
		table[f] = normalize(l.Table[k])
	}
	def := normalize(l.Default)
	notIn := "is not in the lookup table (" + strings.Join(keys, ", ") + ")"
	return func(vals []any, _ map[string]any) ([]any, *valueError) {
		out := make([]any, 0, len(vals))
		for _, v := range vals {
			s, ok := toText(v)
			if !ok {
				return nil, &valueError{val: v, msg: "is not text"}
			}
			r, ok := table[s]
			if !ok {
				r, ok = table[strings.ToLower(s)]
			}
			switch {
			case ok:
			case def != nil:
				r = def
			case l.Strict:
				return nil, &valueError{val: v, msg: notIn}
			default:
				r = v
			}
			if !isEmpty(r) {
				out = append(out, r)
			}
		}
		return out, nil
	}, nil
}

func replaceStep(r *Replace) (step, error) {
	if r == nil || r.Pattern == "" {
		return nil, errf(ErrMissing, "replace needs a pattern")
	}
	re, err := regexp.Compile(r.Pattern)
	if err != nil {
		return nil, errf(ErrInvalid, "invalid replace pattern: %w", err)
	}
	return eachText(func(s string) string { return re.ReplaceAllString(s, r.With) }), nil
}

func splitStep(sep string) step {
	return func(vals []any, _ map[string]any) ([]any, *valueError) {
		out := make([]any, 0, len(vals))
		for _, v := range vals {
			s, ok := toText(v)
			if !ok {
				return nil, &valueError{val: v, msg: "is not text"}
			}
			for part := range strings.SplitSeq(s, sep) {
				if part != "" {
					out = append(out, part)
				}
			}
		}
		return out, nil
	}
}

func joinStep(sep string) step {
	return func(vals []any, _ map[string]any) ([]any, *valueError) {
		if len(vals) == 0 {
			return nil, nil
		}
		parts := make([]string, len(vals))
		for i, v := range vals {
			s, ok := toText(v)
			if !ok {
				return nil, &valueError{val: v, msg: "is not text"}
			}
			parts[i] = s
		}
		return []any{strings.Join(parts, sep)}, nil
	}
}

// template is a compiled `template:` text: literals and placeholders.
type template struct {
	parts []tplPart
	deps  []int // rule indexes of the fields read
}

type tplPart struct {
	lit  string
	keys []string // the field, split at dots; nil for a literal
	self bool     // {{.}}: the value being transformed
}

func parseTemplate(text string, fields map[string]int) (*template, error) {
	t := &template{}
	rest := text
	for rest != "" {
		i := strings.Index(rest, "{{")
		if i < 0 {
			t.parts = append(t.parts, tplPart{lit: rest})
			break
		}
		if i > 0 {
			t.parts = append(t.parts, tplPart{lit: rest[:i]})
		}
		j := strings.Index(rest[i:], "}}")
		if j < 0 {
			return nil, errf(ErrInvalid, "invalid template %q: unclosed {{", text)
		}
		name := strings.TrimSpace(rest[i+2 : i+j])
		rest = rest[i+j+2:]
		if name == "." {
			t.parts = append(t.parts, tplPart{self: true})
			continue
		}
		idx, ok := fields[name]
		if !ok {
			return nil, errf(ErrUnknown, "unknown field %q in template %q (a template reads fields of the same record, by their `to`)", name, text)
		}
		t.parts = append(t.parts, tplPart{keys: strings.Split(name, ".")})
		t.deps = append(t.deps, idx)
	}
	return t, nil
}

// render writes the template over rec. The result is empty when every
// placeholder is empty, so "{{first_name}} {{last_name}}" of a user with
// no name leaves the field to its default rather than " ".
func (t *template) render(vals []any, rec map[string]any) ([]any, *valueError) {
	var b strings.Builder
	holes, filled := 0, 0
	for _, p := range t.parts {
		var v any
		switch {
		case p.self:
			if len(vals) > 0 {
				v = vals
				if len(vals) == 1 {
					v = vals[0]
				}
			}
		case p.keys != nil:
			v = lookupPath(rec, p.keys)
		default:
			b.WriteString(p.lit)
			continue
		}
		holes++
		if isEmpty(v) {
			continue
		}
		filled++
		b.WriteString(templateText(v))
	}
	if holes > 0 && filled == 0 || b.Len() == 0 {
		return nil, nil
	}
	return []any{b.String()}, nil
}

// templateText renders a value in a template: scalars as text, lists
// joined with ", ", objects as JSON.
func templateText(v any) string {
	if s, ok := toText(v); ok {
		return s
	}
	if l, ok := v.([]any); ok {
		parts := make([]string, len(l))
		for i, x := range l {
			parts[i] = templateText(x)
		}
		return strings.Join(parts, ", ")
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// lookupPath reads a dotted field of a record.
func lookupPath(rec map[string]any, keys []string) any {
	var v any = rec
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}
