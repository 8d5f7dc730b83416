package mapping

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"unicode"

	"github.com/scimgate/scimgate/gateway/scim"
)

// CatalogType is one kind of access the app grants: its roles, its
// entitlements, or a custom kind such as licenses. The legacy app cannot
// serve its catalog itself, so it lives in scimgate's configuration: the
// gateway serves it for discovery (Okta Identity Governance reads
// /ResourceTypes, then each type's endpoint) and validates the values the
// identity provider assigns through the user's roles or entitlements.
type CatalogType struct {
	// Name is the resource type's id and name ("Role", "Entitlement",
	// "License"); it is what Okta shows on the Governance tab.
	Name string `yaml:"name"`
	// Endpoint serves the values ("/Roles"); "/" + Name + "s" when empty.
	Endpoint string `yaml:"endpoint"`
	// Kind is "role" or "entitlement": the Okta schema the type is
	// discovered with (urn:okta:scim:schemas:core:1.0:Role or …:Entitlement).
	// It defaults from Attribute.
	Kind string `yaml:"kind"`
	// Attribute is the User attribute that carries assignments: "roles" or
	// "entitlements". It defaults from Kind.
	Attribute string `yaml:"attribute"`
	// Description describes the type for the identity provider.
	Description string `yaml:"description"`
	// Required refuses an active user that has no value of this type.
	Required bool `yaml:"required"`
	// MultiValued allows several values of this type per user (the
	// default); false allows at most one.
	MultiValued *bool `yaml:"multi_valued"`
	// Values are what may be assigned.
	Values []CatalogValue `yaml:"values"`
}

// CatalogValue is one assignable role or entitlement.
type CatalogValue struct {
	// ID is the value the identity provider sends (roles[].value).
	ID string `yaml:"id"`
	// DisplayName is shown to administrators; the ID when empty.
	DisplayName string `yaml:"display_name"`
	// Description explains what the value grants.
	Description string `yaml:"description"`
}

// Catalog kinds and the Okta schemas they are discovered with.
const (
	KindRole        = "role"
	KindEntitlement = "entitlement"

	SchemaOktaRole        = "urn:okta:scim:schemas:core:1.0:Role"
	SchemaOktaEntitlement = "urn:okta:scim:schemas:core:1.0:Entitlement"
)

// Schema returns the URN the type's resources carry.
func (t CatalogType) Schema() string {
	if t.Kind == KindEntitlement {
		return SchemaOktaEntitlement
	}
	return SchemaOktaRole
}

// IsMultiValued reports whether several values of the type may be assigned.
func (t CatalogType) IsMultiValued() bool { return t.MultiValued == nil || *t.MultiValued }

var catalogNameRe = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9]{0,63}$`)

// reservedTypes are the resource types and endpoints the gateway serves
// itself.
var reservedTypes = []string{"User", "Group", "ServiceProviderConfig", "ResourceType", "Schema", "Bulk", "Me", "Users",
	"Groups", "ResourceTypes", "Schemas", "oauth"}

// compileCatalog checks the catalog and fills in its defaults.
func compileCatalog(types []CatalogType, add func(string, error)) []CatalogType {
	out := make([]CatalogType, 0, len(types))
	names, endpoints := map[string]int{}, map[string]int{}
	owner := map[string]string{} // attribute + value id (folded) → type name, for values shared by types
	for i, t := range types {
		t.Values = slices.Clone(t.Values) // defaults are filled in on a copy
		at := func(f string) string { return fmt.Sprintf("catalog[%d].%s", i, f) }
		ok := true
		switch {
		case t.Name == "":
			add(at("name"), errf(ErrMissing, "a resource type name such as Role or License is required"))
			ok = false
		case !catalogNameRe.MatchString(t.Name):
			add(at("name"), errf(ErrInvalid, "%q must be a letter followed by letters or digits (at most 64)", t.Name))
			ok = false
		case slices.ContainsFunc(reservedTypes, func(r string) bool { return strings.EqualFold(r, t.Name) }):
			add(at("name"), errf(ErrConflict, "%q is a resource type scimgate serves itself", t.Name))
			ok = false
		default:
			if j, dup := names[strings.ToLower(t.Name)]; dup {
				add(at("name"), errf(ErrConflict, "%q is also the name of catalog[%d]", t.Name, j))
				ok = false
			}
			names[strings.ToLower(t.Name)] = i
		}
		switch {
		case t.Kind == "" && t.Attribute == "":
			add(at("kind"), errf(ErrMissing, "set kind (role or entitlement) or attribute (roles or entitlements)"))
			ok = false
		case t.Kind != "" && t.Kind != KindRole && t.Kind != KindEntitlement:
			add(at("kind"), errf(ErrUnknown, "%q: use role or entitlement", t.Kind))
			ok = false
		case t.Attribute != "" && t.Attribute != "roles" && t.Attribute != "entitlements":
			add(at("attribute"), errf(ErrUnknown, "%q: use roles or entitlements (the User attributes that carry assignments)", t.Attribute))
			ok = false
		}
		if t.Kind == "" {
			t.Kind = KindRole
			if t.Attribute == "entitlements" {
				t.Kind = KindEntitlement
			}
		}
		if t.Attribute == "" {
			t.Attribute = "roles"
			if t.Kind == KindEntitlement {
				t.Attribute = "entitlements"
			}
		}
		if t.Endpoint == "" && t.Name != "" {
			t.Endpoint = "/" + t.Name + "s"
		}
		if ep := strings.TrimPrefix(t.Endpoint, "/"); t.Name != "" &&
			(!strings.HasPrefix(t.Endpoint, "/") || !catalogNameRe.MatchString(ep)) {
			add(at("endpoint"), errf(ErrInvalid, "%q must be one path segment of letters and digits, such as /Roles", t.Endpoint))
			ok = false
		} else if slices.ContainsFunc(reservedTypes, func(r string) bool { return strings.EqualFold(r, ep) }) {
			add(at("endpoint"), errf(ErrConflict, "%q is an endpoint scimgate serves itself", t.Endpoint))
			ok = false
		} else if j, dup := endpoints[strings.ToLower(ep)]; dup && t.Name != "" {
			add(at("endpoint"), errf(ErrConflict, "%q is also the endpoint of catalog[%d]", t.Endpoint, j))
			ok = false
		} else {
			endpoints[strings.ToLower(ep)] = i
		}
		if len(t.Values) == 0 {
			add(at("values"), errf(ErrMissing, "list the values that may be assigned (each with an id)"))
			ok = false
		}
		seen := map[string]int{}
		for j, v := range t.Values {
			vat := fmt.Sprintf("catalog[%d].values[%d].id", i, j)
			switch {
			case strings.TrimSpace(v.ID) == "":
				add(vat, errf(ErrMissing, "an id is required (the value the identity provider sends)"))
				ok = false
				continue
			case strings.IndexFunc(v.ID, func(r rune) bool { return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) }) >= 0:
				add(vat, errf(ErrInvalid, "%q holds a control or format character", v.ID))
				ok = false
				continue
			}
			key := strings.ToLower(v.ID)
			if k, dup := seen[key]; dup {
				add(vat, errf(ErrConflict, "%q is also catalog[%d].values[%d] (ids are compared case-insensitively)", v.ID, i, k))
				ok = false
				continue
			}
			seen[key] = j
			if other, dup := owner[t.Attribute+"\x00"+key]; dup {
				add(vat, errf(ErrConflict, "%q is also a value of %s, which shares the %s attribute; ids must be unique across its types", v.ID, other, t.Attribute))
				ok = false
				continue
			}
			owner[t.Attribute+"\x00"+key] = t.Name
			if v.DisplayName == "" {
				t.Values[j].DisplayName = v.ID
			}
		}
		if ok {
			out = append(out, t)
		}
	}
	return out
}

// Catalog returns the compiled catalog, defaults filled in, in
// configuration order. Callers must not modify it.
func (m *Mapper) Catalog() []CatalogType { return *m.catalog.Load() }

// CompileCatalog checks a catalog on its own (what a reload does before
// SetCatalog) and returns it with its defaults filled in. Errors are
// *FieldError with paths relative to the mapping section ("catalog[1].id").
func CompileCatalog(types []CatalogType) ([]CatalogType, error) {
	var errs []error
	out := compileCatalog(types, func(f string, err error) { errs = append(errs, &FieldError{Field: f, Err: err}) })
	return out, errors.Join(errs...)
}

// SetCatalog replaces the catalog (compiled by CompileCatalog) atomically:
// the catalog is the one part of the mapping that reloads, because it only
// validates; the rules themselves would change every record. Checking that
// no user still holds a value the new catalog drops is the caller's job
// (RemovedValues lists them).
func (m *Mapper) SetCatalog(compiled []CatalogType) {
	c := slices.Clone(compiled)
	m.catalog.Store(&c)
	m.setFingerprint(c)
}

// checkCatalog validates a user's roles and entitlements against the
// catalog. It returns one problem per violation, and the attributes
// involved.
func (m *Mapper) checkCatalog(doc map[string]any) (problems problemList, attrs []string) {
	catalog := m.Catalog()
	if len(catalog) == 0 {
		return problems, nil
	}
	active := true
	if v, ok := scim.Get(doc, "active"); ok {
		if b, ok := scim.ParseBool(v); ok {
			active = b
		}
	}
	for _, attr := range []string{"roles", "entitlements"} {
		var types []*CatalogType
		for i := range catalog {
			if catalog[i].Attribute == attr {
				types = append(types, &catalog[i])
			}
		}
		if len(types) == 0 {
			continue
		}
		n := len(problems.full)
		assigned := map[string][]string{} // type name → ids, in order
		for _, id := range assignedValues(doc, attr) {
			t, v := findValue(types, id)
			if t == nil {
				problems.add(fmt.Sprintf("%s: unknown value %q (valid: %s)", attr, id, validValues(types)),
					attr+": a value not in the catalog (valid: "+validValues(types)+")")
				continue
			}
			if !slices.Contains(assigned[t.Name], v.ID) {
				assigned[t.Name] = append(assigned[t.Name], v.ID)
			}
		}
		for _, t := range types {
			got := assigned[t.Name]
			switch {
			case len(got) > 1 && !t.IsMultiValued():
				problems.add(fmt.Sprintf("%s: at most one %s may be assigned, got %s", attr, t.Name, strings.Join(got, ", ")),
					fmt.Sprintf("%s: at most one %s may be assigned, got %d", attr, t.Name, len(got)))
			case len(got) == 0 && t.Required && active:
				p := fmt.Sprintf("%s: a %s is required (one of %s)", attr, t.Name, validValues([]*CatalogType{t}))
				problems.add(p, p)
			}
		}
		if len(problems.full) > n {
			attrs = append(attrs, attr)
		}
	}
	return problems, attrs
}

// assignedValues returns the value of every element of a multi-valued
// attribute (objects with "value", or bare strings), empty ones skipped.
func assignedValues(doc map[string]any, attr string) []string {
	raw, _ := scim.Get(doc, attr)
	list, ok := raw.([]any)
	if !ok && raw != nil {
		list = []any{raw}
	}
	var out []string
	for _, e := range list {
		switch e := e.(type) {
		case string:
			if e != "" {
				out = append(out, e)
			}
		case map[string]any:
			if v, _ := scim.Get(e, "value"); v != nil {
				if s, ok := toText(v); ok && s != "" {
					out = append(out, s)
				}
			}
		}
	}
	return out
}

// findValue finds the catalog value an assigned id names: exactly, or
// else case-insensitively (Entra sends the app role's value as typed).
func findValue(types []*CatalogType, id string) (*CatalogType, *CatalogValue) {
	for _, exact := range []bool{true, false} {
		for _, t := range types {
			for i := range t.Values {
				if v := &t.Values[i]; v.ID == id || (!exact && strings.EqualFold(v.ID, id)) {
					return t, v
				}
			}
		}
	}
	return nil, nil
}

func validValues(types []*CatalogType) string {
	var ids []string
	for _, t := range types {
		for _, v := range t.Values {
			ids = append(ids, v.ID)
		}
	}
	if len(ids) > 20 {
		return strings.Join(ids[:20], ", ") + fmt.Sprintf(" and %d more (GET the type's endpoint)", len(ids)-20)
	}
	return strings.Join(ids, ", ")
}

// RemovedValue is a catalog value present in one catalog and not in another.
type RemovedValue struct {
	Type, Attribute, ID string
}

// RemovedValues lists the values of old that next no longer has (matched
// by attribute and id, case-insensitively): what a reload must check is no
// longer assigned to anyone.
func RemovedValues(old, next []CatalogType) []RemovedValue {
	keep := map[string]bool{}
	for _, t := range next {
		for _, v := range t.Values {
			keep[t.Attribute+"\x00"+strings.ToLower(v.ID)] = true
		}
	}
	var out []RemovedValue
	for _, t := range old {
		for _, v := range t.Values {
			if !keep[t.Attribute+"\x00"+strings.ToLower(v.ID)] {
				out = append(out, RemovedValue{Type: t.Name, Attribute: t.Attribute, ID: v.ID})
			}
		}
	}
	return out
}
