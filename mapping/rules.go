package mapping

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Rules is the `mapping:` section of the config file. Compile checks and
// compiles it; Validate does the same and discards the result.
type Rules struct {
	// User maps a SCIM User to the canonical user record, one rule per field.
	User []Rule `yaml:"user"`
	// Group maps a SCIM Group to the canonical group record.
	Group []Rule `yaml:"group"`
	// Match is the SCIM attribute that identifies an existing user when an
	// IdP creates one that is already there: "userName" (the default),
	// "emails" (the work or primary email) or "externalId".
	Match string `yaml:"match,omitempty"`
	// Extensions declares custom User extension schemas (and attributes)
	// for /Schemas beyond those the user rules read.
	Extensions []Extension `yaml:"extensions,omitempty"`
	// Catalog lists the roles and entitlements the app grants: served for
	// discovery and enforced on users' roles and entitlements.
	Catalog []CatalogType `yaml:"catalog,omitempty"`
	// Remap says when a changed mapping is applied to the records already
	// stored: "on_change" (the default, also for "") at the reload or start
	// that brings it, in the background; "manual" only when the operator
	// runs `scimgate remap`. Not part of the fingerprint.
	Remap string `yaml:"remap,omitempty"`

	// unknown are the keys UnmarshalYAML found that no option has, and the
	// values of the wrong kind, as *FieldError: Compile reports them with
	// every other problem.
	unknown []error
}

// UnmarshalYAML decodes the section on top of r (a list present in the YAML
// replaces r's) and notes every key that is not an option and every value
// of the wrong kind (`required: maybe`), at any depth, for Compile to
// report with the other problems of the rules rather than stopping there.
func (r *Rules) UnmarshalYAML(n *yaml.Node) error {
	type plain Rules // without this method
	p := plain(*r)
	problems := checkNodes(n, reflect.TypeFor[Rules](), "", nil)
	if err := n.Decode(&p); err != nil {
		// yaml.v3 decodes what it can past a value of the wrong kind; such
		// values are among problems, with their option's path.
		var te *yaml.TypeError
		if !errors.As(err, &te) || len(problems) == 0 {
			return err
		}
	}
	*r = Rules(p)
	r.unknown = problems
	return nil
}

// Rule produces one field of the canonical record.
type Rule struct {
	// To is the record field, unique per resource. A dotted name
	// ("address.city") builds nested objects.
	To string `yaml:"to"`
	// From is the SCIM attribute path to read, or a list of paths tried in
	// order: the first that yields a non-empty value wins.
	From StringList `yaml:"from,omitempty"`
	// Value is a constant used instead of From.
	Value any `yaml:"value,omitempty"`
	// Default is used when every source is empty (after the transforms).
	Default any `yaml:"default,omitempty"`
	// Transforms are applied in order to the value read.
	Transforms Transforms `yaml:"transforms,omitempty"`
	// Type validates and converts the final value; "string" when empty.
	Type string `yaml:"type,omitempty"`
	// Format is the accepted form of a date (type date), "yyyy-MM-dd" when
	// empty; OutputFormat the form written to the record (Format when empty).
	Format       string `yaml:"format,omitempty"`
	OutputFormat string `yaml:"output_format,omitempty"`
	// Values are the accepted values of an enum (type enum).
	Values []string `yaml:"values,omitempty"`
	// Pattern is the regular expression a regex value must match in full.
	Pattern string `yaml:"pattern,omitempty"`
	// Required rejects the SCIM request when the field ends up empty.
	Required bool `yaml:"required,omitempty"`
	// OnInvalid says what an invalid value does: "reject" the request (the
	// default for required fields), "drop" the field with a warning (the
	// default for optional ones) or use the rule's "default" with a warning.
	OnInvalid string `yaml:"on_invalid,omitempty"`
	// Reference resolves the value to another user: the field holds that
	// user's SCIM id, or a field of its record (Reference.Field).
	Reference *Reference `yaml:"reference,omitempty"`
	// SameAs names another field of the same record (by its `to`) whose
	// value this field's must equal, text compared case-insensitively, once
	// both are computed. A difference rejects the SCIM request; when either
	// field is left out of the record there is nothing to compare.
	SameAs string `yaml:"same_as,omitempty"`
}

// Reference makes a rule resolve its value to another user and output that
// user's SCIM id or one field of its canonical record.
type Reference struct {
	// By lists what the value may be, tried in order: "id", "externalId",
	// "userName", "email". All four, in that order, when empty.
	By StringList `yaml:"by,omitempty"`
	// Field names the field of the referenced user's record to output, by
	// its `to` ("login", "email"), so an app can find the user by its own
	// key. Empty: the user's SCIM id. The field must not itself hold a
	// reference, nor be a template that reads one.
	Field string `yaml:"field,omitempty"`
}

// Extension declares a custom User extension schema for /Schemas.
type Extension struct {
	URN         string               `yaml:"urn"`
	Name        string               `yaml:"name,omitempty"`
	Description string               `yaml:"description,omitempty"`
	Attributes  []ExtensionAttribute `yaml:"attributes,omitempty"`
}

// ExtensionAttribute is one attribute of a declared extension.
type ExtensionAttribute struct {
	Name string `yaml:"name"`
	// Type is a SCIM attribute type: string (the default), boolean,
	// integer, decimal, dateTime, reference or complex.
	Type        string `yaml:"type,omitempty"`
	MultiValued bool   `yaml:"multi_valued,omitempty"`
	Required    bool   `yaml:"required,omitempty"`
	Description string `yaml:"description,omitempty"`
}

// StringList is a list of strings that may be written in YAML as a single
// string ("from: userName") or as a list ("from: [a, b]").
type StringList []string

// UnmarshalYAML accepts a scalar or a sequence of scalars.
func (l *StringList) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			*l = nil
			return nil
		}
		*l = StringList{n.Value}
		return nil
	case yaml.SequenceNode:
		out := make(StringList, 0, len(n.Content))
		for _, c := range n.Content {
			if c.Kind != yaml.ScalarNode {
				return fmt.Errorf("line %d: want a string, got a %s", c.Line, kindName(c))
			}
			out = append(out, c.Value)
		}
		*l = out
		return nil
	}
	return fmt.Errorf("line %d: want a string or a list of strings, got a %s", n.Line, kindName(n))
}

// MarshalYAML writes a single string for a one-element list.
func (l StringList) MarshalYAML() (any, error) {
	if len(l) == 1 {
		return l[0], nil
	}
	return []string(l), nil
}

// Transform is one step of a rule's transforms. In YAML it is either a bare
// name (trim, lower, upper, first, not) or a one-key map
// (lookup, replace, split, join, template).
type Transform struct {
	// Op names the transform.
	Op string
	// Arg is the separator of split and join, and the text of template.
	Arg string
	// Lookup holds the options of lookup.
	Lookup *Lookup
	// Replace holds the options of replace.
	Replace *Replace
}

// Lookup maps values through a table.
type Lookup struct {
	// Table maps a value (compared case-insensitively) to its replacement.
	Table map[string]any `yaml:"table"`
	// Default replaces a value that is not in Table. Without it, such a
	// value is kept as is, or is invalid when Strict.
	Default any `yaml:"default,omitempty"`
	// Strict makes a value that is not in Table invalid.
	Strict bool `yaml:"strict,omitempty"`
}

// Replace rewrites every match of a regular expression.
type Replace struct {
	// Pattern is a Go (RE2) regular expression.
	Pattern string `yaml:"pattern"`
	// With is the replacement; $1 or ${name} refer to groups.
	With string `yaml:"with"`
}

// Transforms is a rule's list of transforms. It has its own UnmarshalYAML
// because a step is a bare name or a one-key map; option keys are checked
// as strictly as the decoder's KnownFields would.
type Transforms []Transform

// UnmarshalYAML decodes the list, rejecting unknown option keys.
func (ts *Transforms) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		*ts = nil
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		return fmt.Errorf("line %d: transforms: want a list, got a %s", n.Line, kindName(n))
	}
	out := make(Transforms, 0, len(n.Content))
	for _, c := range n.Content {
		t, err := decodeTransform(c)
		if err != nil {
			return err
		}
		out = append(out, t)
	}
	*ts = out
	return nil
}

func decodeTransform(n *yaml.Node) (Transform, error) {
	switch n.Kind {
	case yaml.ScalarNode:
		return Transform{Op: n.Value}, nil
	case yaml.MappingNode:
	default:
		return Transform{}, fmt.Errorf("line %d: transform: want a name or a one-key map, got a %s", n.Line, kindName(n))
	}
	if len(n.Content) != 2 {
		return Transform{}, fmt.Errorf("line %d: transform: want one key (such as lookup: or split:), got %d", n.Line, len(n.Content)/2)
	}
	k, v := n.Content[0], n.Content[1]
	t := Transform{Op: k.Value}
	// Unknown option keys are reported by Rules.UnmarshalYAML (checkNodes).
	switch strings.ToLower(k.Value) {
	case "lookup":
		if v.Kind != yaml.MappingNode {
			return t, fmt.Errorf("line %d: lookup: want a map, got a %s", v.Line, kindName(v))
		}
		t.Lookup = new(Lookup)
		if err := v.Decode(t.Lookup); err != nil {
			return t, err
		}
	case "replace":
		if v.Kind != yaml.MappingNode {
			return t, fmt.Errorf("line %d: replace: want a map, got a %s", v.Line, kindName(v))
		}
		t.Replace = new(Replace)
		if err := v.Decode(t.Replace); err != nil {
			return t, err
		}
	default:
		if v.Kind != yaml.ScalarNode {
			return t, fmt.Errorf("line %d: transform %s: want a string, got a %s", v.Line, k.Value, kindName(v))
		}
		t.Arg = v.Value
	}
	return t, nil
}

// checkNodes returns a *FieldError for each key of n, at any depth, that
// the type t it decodes into has no yaml field for, and for each value that
// cannot decode into its option, in document order; path is n's place
// ("user[3]"). A decoder stops at the first (and node.Decode does not
// honour KnownFields), so the walk is WalkKeys'.
func checkNodes(n *yaml.Node, t reflect.Type, path string, errs []error) []error {
	WalkKeys(n, t, path, func(n *yaml.Node, t reflect.Type, path string) bool {
		if err := wrongKind(n, t); err != nil {
			errs = append(errs, &FieldError{Field: path, Err: err})
			return false
		}
		if t != reflect.TypeFor[Transforms]() {
			return true
		}
		// A step is a bare name or a one-key map; the options of lookup and
		// replace are checked as their own types.
		if n.Kind != yaml.SequenceNode {
			return false
		}
		for i, c := range n.Content {
			if c.Kind != yaml.MappingNode || len(c.Content) != 2 {
				continue
			}
			opts := map[string]reflect.Type{"lookup": reflect.TypeFor[Lookup](), "replace": reflect.TypeFor[Replace]()}
			if ot, ok := opts[strings.ToLower(c.Content[0].Value)]; ok {
				errs = checkNodes(c.Content[1], ot, fmt.Sprintf("%s[%d].%s", path, i, c.Content[0].Value), errs)
			}
		}
		return false
	}, func(k UnknownKey) {
		errs = append(errs, &FieldError{Field: k.Path, Err: errf(ErrUnknown, "%w (allowed here: %s)", ErrUnknownKey, strings.Join(k.Allowed, ", "))})
	})
	return errs
}

// wrongKind returns the problem of a node that cannot decode into t: a
// scalar where a list or options are expected, a map or list where text
// is, text that is not a boolean. Types that decode themselves (StringList,
// Transforms) and values of any type are left to the decoder.
func wrongKind(n *yaml.Node, t reflect.Type) error {
	if n.Kind == yaml.AliasNode || reflect.PointerTo(t).Implements(reflect.TypeFor[yaml.Unmarshaler]()) {
		return nil
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil // the zero value
	}
	var want string
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind == yaml.MappingNode {
			return nil
		}
		want = "a map of options"
	case reflect.Map:
		if n.Kind == yaml.MappingNode {
			return nil
		}
		want = "a map"
	case reflect.Slice:
		if n.Kind == yaml.SequenceNode {
			return nil
		}
		want = "a list"
	case reflect.Interface:
		return nil
	default: // a scalar: decode it to see
		if n.Kind == yaml.ScalarNode && n.Decode(reflect.New(t).Interface()) == nil {
			return nil
		}
		switch t.Kind() {
		case reflect.Bool:
			want = "true or false"
		case reflect.String:
			want = "text"
		default:
			want = "a " + t.Kind().String()
		}
	}
	got := "a " + kindName(n)
	if n.Kind == yaml.ScalarNode {
		got = strconv.Quote(n.Value)
	}
	return errf(ErrInvalid, "want %s, not %s", want, got)
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "map"
	case yaml.SequenceNode:
		return "list"
	case yaml.AliasNode:
		return "alias"
	}
	return "scalar"
}

// MarshalYAML writes the form UnmarshalYAML reads.
func (t Transform) MarshalYAML() (any, error) {
	switch {
	case t.Lookup != nil:
		return map[string]any{t.Op: t.Lookup}, nil
	case t.Replace != nil:
		return map[string]any{t.Op: t.Replace}, nil
	case t.Arg != "" || hasArg(t.Op):
		return map[string]string{t.Op: t.Arg}, nil
	}
	return t.Op, nil
}

func hasArg(op string) bool {
	switch strings.ToLower(op) {
	case "split", "join", "template":
		return true
	}
	return false
}

// Validate reports whether r compiles; its errors are those of Compile.
func (r Rules) Validate() error {
	_, err := Compile(r)
	return err
}

// Paths of the enterprise extension read by DefaultRules.
const (
	enterprise        = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:"
	enterpriseManager = enterprise + "manager.value"
)

// DefaultRules returns a generic mapping of core and enterprise User
// attributes and of Groups, used when the config has no mapping section.
func DefaultRules() Rules {
	trim := Transforms{{Op: "trim"}}
	return Rules{
		Match: "userName",
		Remap: RemapOnChange,
		User: []Rule{
			{To: "login", From: StringList{"userName"}, Transforms: trim, Required: true},
			{To: "external_id", From: StringList{"externalId"}},
			{To: "email", From: StringList{`emails[type eq "work"].value`, `emails[primary eq true].value`, "emails.value"},
				Transforms: trim, Type: "email"},
			{To: "first_name", From: StringList{"name.givenName"}, Transforms: trim},
			{To: "last_name", From: StringList{"name.familyName"}, Transforms: trim},
			{To: "display_name", From: StringList{"displayName", "name.formatted"}, Transforms: trim},
			{To: "active", From: StringList{"active"}, Type: "bool", Default: true},
			{To: "title", From: StringList{"title"}},
			{To: "language", From: StringList{"preferredLanguage", "locale"}, Type: "language"},
			{To: "timezone", From: StringList{"timezone"}, Type: "timezone"},
			{To: "country", From: StringList{`addresses[type eq "work"].country`, `addresses[primary eq true].country`}, Type: "country"},
			{To: "employee_number", From: StringList{enterprise + "employeeNumber"}},
			{To: "department", From: StringList{enterprise + "department"}},
			{To: "division", From: StringList{enterprise + "division"}},
			{To: "organization", From: StringList{enterprise + "organization"}},
			{To: "cost_center", From: StringList{enterprise + "costCenter"}},
			// Okta sends the enterprise manager as {"value": …}; some
			// templates put it in the core namespace or send a bare string.
			{To: "manager_id", From: StringList{enterpriseManager, "manager.value"},
				Reference: &Reference{By: StringList{"id", "externalId", "userName", "email"}}},
		},
		Group: []Rule{
			{To: "name", From: StringList{"displayName"}, Required: true},
			{To: "external_id", From: StringList{"externalId"}},
		},
	}
}
