package mapping

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/text/language"
	"gopkg.in/yaml.v3"

	"github.com/scimgate/scimgate/gateway/scim"
)

var update = flag.Bool("update", false, "update golden files")

// testResolver knows one user, the manager "u-boss", by each key.
type testResolver map[string]map[string]string

func (r testResolver) ResolveUser(by, value string) (string, bool) {
	id, ok := r[by][strings.ToLower(value)]
	return id, ok
}

var resolver = testResolver{
	"id":         {"u-boss": "u-boss"},
	"externalId": {"00u1boss": "u-boss"},
	"userName":   {"boss@example.com": "u-boss"},
	"email":      {"boss@example.com": "u-boss", "boss.work@example.com": "u-boss"},
}

// golden is what a golden file holds: the result of a mapping or the
// error, or the errors of Compile.
type golden struct {
	Record        map[string]any `json:"record,omitempty"`
	Refs          []Ref          `json:"refs,omitempty"`
	Warnings      []string       `json:"warnings,omitempty"`
	Error         *scim.Error    `json:"error,omitempty"`
	CompileErrors []compileError `json:"compile_errors,omitempty"`
	Extensions    []*scim.Schema `json:"extensions,omitempty"`
}

type compileError struct {
	Field string `json:"field"`
	Error string `json:"error"`
}

// mustLoadRules decodes a rules file as the config loader does: strictly.
func mustLoadRules(t testing.TB, path string) Rules {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r Rules
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("decode %s: %v", path, err)
	}
	return r
}

// rulesFor finds the rules of a case: <case>.rules.yaml, or that of the
// case name without its last "-part" ("manager-string" → "manager"), or
// DefaultRules for "default…" cases.
func rulesFor(t *testing.T, name string) Rules {
	t.Helper()
	for n := name; ; {
		p := filepath.Join("testdata", n+".rules.yaml")
		if _, err := os.Stat(p); err == nil {
			return mustLoadRules(t, p)
		}
		i := strings.LastIndexByte(n, '-')
		if i < 0 {
			break
		}
		n = n[:i]
	}
	if strings.HasPrefix(name, "default") {
		return DefaultRules()
	}
	t.Fatalf("no rules for case %s", name)
	return Rules{}
}

func decodeDoc(t testing.TB, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("decode %s: %v", path, err)
	}
	return doc
}

func isGroup(doc map[string]any) bool {
	schemas, _ := doc["schemas"].([]any)
	return slices.Contains(schemas, any(scim.SchemaGroup))
}

// checkGolden compares got with testdata/<name>.golden.json, or writes it
// with -update.
func checkGolden(t *testing.T, name string, got golden) {
	t.Helper()
	b, err := json.MarshalIndent(got, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, '\n')
	path := filepath.Join("testdata", name+".golden.json")
	if *update {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(b, want) {
		t.Errorf("%s differs from the golden file (go test -update rewrites it); got:\n%s", path, b)
	}
}

// TestMapGolden maps every testdata/<case>.in.json with its rules.
func TestMapGolden(t *testing.T) {
	ins, err := filepath.Glob(filepath.Join("testdata", "*.in.json"))
	if err != nil || len(ins) == 0 {
		t.Fatalf("no cases: %v", err)
	}
	for _, in := range ins {
		name := strings.TrimSuffix(filepath.Base(in), ".in.json")
		t.Run(name, func(t *testing.T) {
			m, err := Compile(rulesFor(t, name))
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			doc := decodeDoc(t, in)
			var res Result
			if isGroup(doc) {
				res, err = m.MapGroup(doc)
			} else {
				res, err = m.MapUser(doc, resolver)
			}
			got := golden{Record: res.Record, Refs: res.Refs, Warnings: res.Warnings}
			if _, err := os.Stat(filepath.Join("testdata", name+".rules.yaml")); err == nil {
				got.Extensions = m.UserExtensions() // once per rules file
			}
			if err != nil {
				if !errors.As(err, &got.Error) {
					t.Fatalf("error %T %v, want *scim.Error", err, err)
				}
				if got.Record != nil || got.Refs != nil || got.Warnings != nil {
					t.Errorf("result %+v with an error, want none", res)
				}
			}
			checkGolden(t, name, got)
		})
	}
}

// TestCompileGolden compiles every testdata/compile-*.rules.yaml, each of
// which has errors.
func TestCompileGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "compile-*.rules.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no cases: %v", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".rules.yaml")
		t.Run(name, func(t *testing.T) {
			m, err := Compile(mustLoadRules(t, f))
			if err == nil {
				t.Fatalf("Compile = %v, nil; want errors", m)
			}
			var got golden
			for _, e := range flatten(err) {
				var fe *FieldError
				if !errors.As(e, &fe) {
					t.Fatalf("error %T %v, want *FieldError", e, e)
				}
				got.CompileErrors = append(got.CompileErrors, compileError{Field: fe.Field, Error: fe.Err.Error()})
			}
			checkGolden(t, name, got)
		})
	}
}

// flatten undoes errors.Join.
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func TestCompileErrorsUnwrap(t *testing.T) {
	tests := []struct {
		name  string
		rules Rules
		field string
		want  error
	}{
		{"type", Rules{User: []Rule{{To: "a", From: StringList{"userName"}, Type: "strnig"}}}, "user[0].type", ErrUnknown},
		{"regex", Rules{User: []Rule{{To: "a", From: StringList{"userName"}, Type: "regex", Pattern: "("}}}, "user[0].pattern", ErrInvalid},
		{"duplicate", Rules{Group: []Rule{{To: "a", From: StringList{"displayName"}}, {To: "a", From: StringList{"id"}}}}, "group[1].to", ErrConflict},
		{"cycle", Rules{User: []Rule{{To: "a", Transforms: Transforms{{Op: "template", Arg: "{{a}}"}}}}}, "user[0].transforms", ErrCycle},
		{"path", Rules{User: []Rule{{To: "a", From: StringList{"emails[type eq"}}}}, "user[0].from", ErrInvalid},
		{"source", Rules{User: []Rule{{To: "a", Default: "x"}}}, "user[0]", ErrMissing},
		{"match", Rules{Match: "phone"}, "match", ErrUnknown},
		{"same_as/unknown", Rules{User: []Rule{{To: "a", From: StringList{"userName"}, SameAs: "b"}}}, "user[0].same_as", ErrUnknown},
		{"same_as/itself", Rules{User: []Rule{{To: "a", From: StringList{"userName"}, SameAs: "a"}}}, "user[0].same_as", ErrInvalid},
		{"same_as/cycle", Rules{Group: []Rule{{To: "a", From: StringList{"displayName"}, SameAs: "b"}, {To: "b", From: StringList{"externalId"}, SameAs: "a"}}}, "group[0].same_as", ErrCycle},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(tt.rules)
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tt.field || !errors.Is(err, tt.want) {
				t.Errorf("Compile = %v, want a FieldError at %s wrapping %v", err, tt.field, tt.want)
			}
		})
	}
	// A bad path also carries the SCIM error of the parser.
	_, err := Compile(Rules{User: []Rule{{To: "a", From: StringList{"emails[type eq"}}}})
	if se := (*scim.Error)(nil); !errors.As(err, &se) || se.ScimType != scim.InvalidPath {
		t.Errorf("Compile(bad path) = %v, want it to wrap a *scim.Error invalidPath", err)
	}
}

func TestDefaultRules(t *testing.T) {
	if err := DefaultRules().Validate(); err != nil {
		t.Fatalf("DefaultRules().Validate() = %v", err)
	}
	m, _ := Compile(DefaultRules())
	if got := m.MatchAttribute(); got != "userName" {
		t.Errorf("MatchAttribute() = %q, want userName", got)
	}
	if got := m.UserExtensions(); len(got) != 0 {
		t.Errorf("UserExtensions() = %v, want none for core and enterprise", got)
	}
}

func TestMatchAttribute(t *testing.T) {
	for _, in := range []string{"", "userName", "EMAILS", "externalId"} {
		m, err := Compile(Rules{Match: in})
		if err != nil {
			t.Fatalf("Compile(match %q) = %v", in, err)
		}
		want := map[string]string{"": "userName", "userName": "userName", "EMAILS": "emails", "externalId": "externalId"}[in]
		if got := m.MatchAttribute(); got != want {
			t.Errorf("MatchAttribute() for %q = %q, want %q", in, got, want)
		}
	}
}

// TestYAMLForms decodes the forms rules take in YAML, strictly.
func TestYAMLForms(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Rules
		wantErr string
	}{
		{"from/scalar", "user: [{to: a, from: userName}]",
			Rules{User: []Rule{{To: "a", From: StringList{"userName"}}}}, ""},
		{"from/list", "user: [{to: a, from: [displayName, name.formatted]}]",
			Rules{User: []Rule{{To: "a", From: StringList{"displayName", "name.formatted"}}}}, ""},
		{"transforms", `user: [{to: a, from: x, transforms: [trim, {split: ","}, {lookup: {table: {a: b}, strict: true}}, {replace: {pattern: "-", with: ""}}]}]`,
			Rules{User: []Rule{{To: "a", From: StringList{"x"}, Transforms: Transforms{
				{Op: "trim"}, {Op: "split", Arg: ","},
				{Op: "lookup", Lookup: &Lookup{Table: map[string]any{"a": "b"}, Strict: true}},
				{Op: "replace", Replace: &Replace{Pattern: "-"}},
			}}}}, ""},
		{"same_as", "user: [{to: a, from: userName, same_as: b}, {to: b, from: emails.value}]",
			Rules{User: []Rule{{To: "a", From: StringList{"userName"}, SameAs: "b"}, {To: "b", From: StringList{"emails.value"}}}}, ""},
		{"lookup/scalar", "user: [{to: a, from: x, transforms: [{lookup: x}]}]", Rules{}, "lookup: want a map"},
		{"transform/twoKeys", "user: [{to: a, from: x, transforms: [{split: ',', join: ','}]}]", Rules{}, "want one key"},
		{"from/map", "user: [{to: a, from: {x: y}}]", Rules{}, "want a string or a list of strings"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got Rules
			dec := yaml.NewDecoder(strings.NewReader(tt.in))
			dec.KnownFields(true)
			err := dec.Decode(&got)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Decode(%q) = %v, want an error containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode(%q) = %v", tt.in, err)
			}
			gb, _ := json.Marshal(got)
			wb, _ := json.Marshal(tt.want)
			if !bytes.Equal(gb, wb) {
				t.Errorf("Decode(%q) = %s, want %s", tt.in, gb, wb)
			}
		})
	}
}

// TestYAMLRoundTrip marshals DefaultRules and decodes them back.
func TestYAMLRoundTrip(t *testing.T) {
	r := DefaultRules()
	r.User = append(r.User, Rule{To: "x", From: StringList{"a"}, Transforms: Transforms{
		{Op: "trim"}, {Op: "join", Arg: ","}, {Op: "lookup", Lookup: &Lookup{Table: map[string]any{"a": "b"}}},
	}})
	b, err := yaml.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var got Rules
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("Decode(Marshal(DefaultRules())) = %v\n%s", err, b)
	}
	gb, _ := json.Marshal(got)
	wb, _ := json.Marshal(r)
	if !bytes.Equal(gb, wb) {
		t.Errorf("round trip = %s, want %s", gb, wb)
	}
}

func TestCountries(t *testing.T) {
	if len(countries) != 249 {
		t.Errorf("len(countries) = %d, want 249", len(countries))
	}
	// Cross-check with CLDR's region data (which also has EU, XK, …).
	for c := range countries {
		r, err := language.ParseRegion(c)
		if err != nil || !r.IsCountry() || r.String() != c {
			t.Errorf("country %s: CLDR says %v, %v", c, r, err)
		}
	}
	for _, tt := range []struct {
		in, want string
		ok       bool
	}{{"GB", "GB", true}, {"gb", "GB", true}, {"Us", "US", true}, {"UK", "", false}, {"EU", "", false}, {"GBR", "", false}, {"", "", false}} {
		got, ok := isCountry(tt.in)
		if ok != tt.ok || got != tt.want {
			t.Errorf("isCountry(%q) = %v, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestDateLayout(t *testing.T) {
	tests := []struct {
		format, in string
		ok         bool
	}{
		{"yyyy-MM-dd", "2024-02-29", true},
		{"yyyy-MM-dd", "2023-02-29", false},
		{"yyyy-MM-dd", "2024-04-31", false},
		{"yyyy-MM-dd", "2024-13-01", false},
		{"yyyy-MM-dd", "2024-1-01", false},
		{"yyyy-MM-dd", "2024-01-01T00:00:00Z", false},
		{"dd/MM/yyyy", "12/03/2024", true},
		{"yyyyMMdd", "20240312", true},
		{"dd.MM.yyyy", "12.03.2024", true},
		{"dd.MM.yyyy", "12-03-2024", false},
	}
	for _, tt := range tests {
		l, err := parseDateLayout(tt.format)
		if err != nil {
			t.Fatalf("parseDateLayout(%q) = %v", tt.format, err)
		}
		if _, _, _, ok := l.parse(tt.in); ok != tt.ok {
			t.Errorf("parse %q as %q = %v, want %v", tt.in, tt.format, ok, tt.ok)
		}
	}
	for _, bad := range []string{"yy-MM-dd", "yyyy-MM", "yyyy-MM-dd yyyy", "yyyy-MMM-dd", "dd Mon yyyy"} {
		if _, err := parseDateLayout(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("parseDateLayout(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

// TestConcurrent maps from several goroutines (run with -race).
func TestConcurrent(t *testing.T) {
	m, err := Compile(rulesFor(t, "cybsafe"))
	if err != nil {
		t.Fatal(err)
	}
	doc := decodeDoc(t, filepath.Join("testdata", "cybsafe.in.json"))
	want, err := m.MapUser(doc, resolver)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 50 {
				got, err := m.MapUser(doc, resolver)
				if err != nil || len(Diff(want.Record, got.Record)) != 0 {
					t.Errorf("MapUser = %v, %v; want %v", got.Record, err, want.Record)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestRecordIsolated checks that a record shares no memory with the
// document or the compiled rules.
func TestRecordIsolated(t *testing.T) {
	m, err := Compile(Rules{User: []Rule{
		{To: "obj", From: StringList{"name"}, Type: "object"},
		{To: "tags", From: StringList{"x"}, Type: "list", Default: []any{"a"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	doc := map[string]any{"name": map[string]any{"givenName": "Ann"}}
	r1, _ := m.MapUser(doc, nil)
	r1.Record["obj"].(map[string]any)["givenName"] = "changed"
	r1.Record["tags"].([]any)[0] = "changed"
	r2, _ := m.MapUser(doc, nil)
	if doc["name"].(map[string]any)["givenName"] != "Ann" || r2.Record["tags"].([]any)[0] != "a" {
		t.Errorf("changing a record changed the document or the default: doc %v, second record %v", doc, r2.Record)
	}
}

func TestNilResolver(t *testing.T) {
	m, _ := Compile(DefaultRules())
	doc := map[string]any{"userName": "ann@example.com", "manager": "boss@example.com"}
	r, err := m.MapUser(doc, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []Ref{{Field: "manager_id", Value: "boss@example.com"}}
	if !slices.Equal(r.Refs, want) {
		t.Errorf("Refs = %+v, want %+v", r.Refs, want)
	}
	if _, ok := r.Record["manager_id"]; ok {
		t.Errorf("Record has manager_id %v for an unresolved reference", r.Record["manager_id"])
	}
}

func TestRejectionAndWarningFields(t *testing.T) {
	m, err := Compile(Rules{User: []Rule{
		{To: "login", From: StringList{"userName"}, Required: true},
		{To: "email", From: StringList{"emails.value"}, Type: "email", OnInvalid: "drop"},
		{To: "tz", From: StringList{"timezone"}, Type: "timezone", Required: true},
	}})
	if err != nil {
		t.Fatal(err)
	}
	res, err := m.MapUser(map[string]any{"userName": "ada", "timezone": "Europe/London", "emails": []any{map[string]any{"value": "not an email"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(res.WarnedFields); got != "[email]" {
		t.Errorf("WarnedFields = %s, want [email]", got)
	}
	_, err = m.MapUser(map[string]any{"timezone": "Mars/Base"}, nil)
	var rej *Rejection
	var se *scim.Error
	if !errors.As(err, &rej) || !errors.As(err, &se) {
		t.Fatalf("MapUser error %T %v: want a *Rejection wrapping a *scim.Error", err, err)
	}
	if got := fmt.Sprint(rej.Fields); got != "[login tz]" {
		t.Errorf("Rejection.Fields = %s, want [login tz]", got)
	}
	if se.Status != 400 || se.ScimType != scim.InvalidValue {
		t.Errorf("scim error %d %s, want 400 invalidValue", se.Status, se.ScimType)
	}
}

// TestDateInvalidMessage: a date in the right form that does not exist
// says so, rather than naming the form it already has.
func TestDateInvalidMessage(t *testing.T) {
	conv, err := dateConverter("", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ in, want string }{
		{"2024-02-30", `"2024-02-30" is not a valid date: that day does not exist`},
		{"2023-02-29", `"2023-02-29" is not a valid date: that day does not exist`},
		{"2024-13-01", `"2024-13-01" is not a valid date: that day does not exist`},
		{"0000-01-01", `"0000-01-01" is not a valid date: that day does not exist`},
		{"12/03/2024", `"12/03/2024" is not a date in the form yyyy-MM-dd`},
		{"2024-1-01", `"2024-1-01" is not a date in the form yyyy-MM-dd`},
	} {
		_, verr := conv([]any{tt.in})
		if verr == nil {
			t.Errorf("date %q accepted", tt.in)
			continue
		}
		if got := verr.text(true); got != tt.want {
			t.Errorf("date %q: %s\nwant %s", tt.in, got, tt.want)
		}
	}
}

// TestUnknownKeysWithOtherErrors: an unknown key is one of Compile's
// errors, beside the others, rather than a decoding error that hides them
// (compile-unknown-key has one at every level).
func TestUnknownKeysWithOtherErrors(t *testing.T) {
	var r Rules
	if err := yaml.Unmarshal([]byte("user:\n  - {to: login, form: userName}\n  - {to: hired, from: x, type: datte}\n  - {to: email, from: 'emails[', type: email}\n"), &r); err != nil {
		t.Fatalf("Unmarshal = %v, want the unknown key left to Compile", err)
	}
	_, err := Compile(r)
	var got []string
	for _, e := range flatten(err) {
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("error %T %v, want *FieldError", e, e)
		}
		got = append(got, fe.Field)
	}
	want := []string{"user[0].form", "user[0]", "user[1].type", "user[2].from"}
	if !slices.Equal(got, want) {
		t.Errorf("Compile errors at %v, want %v: %v", got, want, err)
	}
	if !errors.Is(err, ErrUnknown) || !errors.Is(err, ErrUnknownKey) || !strings.Contains(err.Error(), "user[0].form: unknown key (allowed here: default, format, from,") {
		t.Errorf("Compile = %v, want the unknown key named with the keys allowed", err)
	}

	// Decoding on top of the defaults keeps the lists the YAML leaves out.
	r = DefaultRules()
	if err := yaml.Unmarshal([]byte("match: emails\ngroup: [{to: n, from: displayName}]\n"), &r); err != nil {
		t.Fatal(err)
	}
	if r.Match != "emails" || len(r.Group) != 1 || len(r.User) != len(DefaultRules().User) {
		t.Errorf("decoded over the defaults: match %q, %d group rules, %d user rules", r.Match, len(r.Group), len(r.User))
	}
	if _, err := Compile(r); err != nil {
		t.Errorf("Compile = %v", err)
	}
}
