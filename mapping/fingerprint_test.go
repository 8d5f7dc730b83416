package mapping

import (
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func fingerprintOf(t *testing.T, src string) *Mapper {
	t.Helper()
	var r Rules
	if err := yaml.Unmarshal([]byte(src), &r); err != nil {
		t.Fatal(err)
	}
	m, err := Compile(r)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestFingerprint(t *testing.T) {
	base := `
user:
  - {to: login, from: userName, required: true}
group:
  - {to: name, from: displayName}
catalog:
  - {name: Role, kind: role, description: one, values: [{id: admin, display_name: Admin}]}
`
	a := fingerprintOf(t, base).Fingerprint()
	if len(a) != 16 {
		t.Fatalf("fingerprint %q: want 16 hex digits", a)
	}
	if b := fingerprintOf(t, base).Fingerprint(); b != a {
		t.Errorf("same rules: %s and %s", a, b)
	}
	same := map[string]string{
		"a catalog description":   `{name: Role, kind: role, description: two, values: [{id: admin, display_name: Admin}]}`,
		"a value's display name":  `{name: Role, kind: role, description: one, values: [{id: admin, display_name: Boss}]}`,
		"the flow style of rules": `{name: Role, kind: role, description: one, values: [{id: admin, display_name: Admin}]}` + "\nextensions: []",
	}
	for what, cat := range same {
		src := "user:\n  - {to: login, from: userName, required: true}\ngroup:\n  - {to: name, from: displayName}\ncatalog:\n  - " + cat + "\n"
		if got := fingerprintOf(t, src).Fingerprint(); got != a {
			t.Errorf("%s changed the fingerprint", what)
		}
	}
	differ := map[string]string{
		"a rule added":       "user:\n  - {to: login, from: userName, required: true}\n  - {to: shout, from: userName, transforms: [upper]}\n",
		"a rule changed":     "user:\n  - {to: login, from: userName, required: true, transforms: [lower]}\n",
		"a group rule":       "group:\n  - {to: name, from: displayName, transforms: [trim]}\n",
		"the match":          "match: externalId\n",
		"a catalog value":    "catalog:\n  - {name: Role, kind: role, description: one, values: [{id: admin}, {id: user}]}\n",
		"a required catalog": "catalog:\n  - {name: Role, kind: role, required: true, description: one, values: [{id: admin}]}\n",
	}
	for what, part := range differ {
		m := fingerprintOf(t, base)
		var r Rules
		if err := yaml.Unmarshal([]byte(base), &r); err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal([]byte(part), &r); err != nil {
			t.Fatal(err)
		}
		n, err := Compile(r)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if n.Fingerprint() == m.Fingerprint() {
			t.Errorf("%s kept the fingerprint %s", what, a)
		}
	}
	// SetCatalog (a catalog reload) changes it as compiling would.
	m := fingerprintOf(t, base)
	cat, err := CompileCatalog([]CatalogType{{Name: "Role", Kind: "role", Values: []CatalogValue{{ID: "admin"}, {ID: "user"}}}})
	if err != nil {
		t.Fatal(err)
	}
	m.SetCatalog(cat)
	if m.Fingerprint() == a {
		t.Error("SetCatalog with a new value kept the fingerprint")
	}
}

func TestRemapOption(t *testing.T) {
	def, err := Compile(DefaultRules())
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"", RemapOnChange, RemapManual} {
		r := DefaultRules()
		r.Remap = v
		m, err := Compile(r)
		if err != nil {
			t.Fatalf("remap %q: %v", v, err)
		}
		if m.Fingerprint() != def.Fingerprint() {
			t.Errorf("remap %q changed the fingerprint", v)
		}
	}
	r := DefaultRules()
	r.Remap = "sometimes"
	if _, err := Compile(r); err == nil || !strings.Contains(err.Error(), `remap: unknown remap "sometimes" (want on_change or manual)`) {
		t.Errorf("remap: sometimes: %v", err)
	}
}
