package mapping

import (
	"fmt"
	"slices"
	"strings"

	"github.com/scimgate/scimgate/gateway/scim"
)

// scimTypes are the attribute types an extension may declare (RFC 7643 §2.3).
var scimTypes = []string{"string", "boolean", "integer", "decimal", "dateTime", "reference", "complex", "binary"}

// UserExtensions returns a schema for every extension URN (other than the
// core User and the enterprise extension) that the user rules read or that
// the rules declare, so /Schemas advertises them. Each has one attribute
// per attribute read, typed after the rule's type, plus the declared ones.
// Sorted by URN. The schemas are shared: callers must not modify them.
func (m *Mapper) UserExtensions() []*scim.Schema { return m.extensions }

// GroupExtensions is UserExtensions for groups: a schema for every
// extension URN the group rules read (mapping.extensions declares user
// schemas only), so /Schemas and the Group resource type advertise them
// and group responses return them. Sorted by URN; shared.
func (m *Mapper) GroupExtensions() []*scim.Schema { return m.groupExtensions }

// ruleSchemas adds to the schemas schema returns an attribute for every
// extension attribute the rules read.
func ruleSchemas(rules []Rule, schema func(urn string) *scim.Schema) {
	for _, rule := range rules {
		for _, text := range rule.From {
			p, err := scim.ParsePath(text)
			if err != nil || !isExtensionURN(p.URN) {
				continue // a bad path is reported by compileRule
			}
			s := schema(p.URN)
			if p.Attr == "" {
				continue // the whole extension object
			}
			typ, multi := scimType(rule.Type), strings.EqualFold(rule.Type, "list")
			attr := attribute(s, p.Attr)
			if attr == nil {
				attr = newAttribute(p.Attr, typ)
				attr.Description = fmt.Sprintf("Mapped to the record field %q.", rule.To)
				attr.MultiValued = multi || p.Filter != nil
				if p.Sub != "" {
					attr.Type = "complex"
				}
				s.Attributes = append(s.Attributes, attr)
			}
			if p.Sub != "" && attr.Type == "complex" && attribute(&scim.Schema{Attributes: attr.SubAttributes}, p.Sub) == nil {
				attr.SubAttributes = append(attr.SubAttributes, newAttribute(p.Sub, typ))
			}
		}
	}
}

// groupExtensionSchemas builds the schemas GroupExtensions returns.
func groupExtensionSchemas(r Rules) []*scim.Schema {
	byURN := map[string]*scim.Schema{}
	var out []*scim.Schema
	ruleSchemas(r.Group, func(urn string) *scim.Schema {
		k := strings.ToLower(urn)
		if s, ok := byURN[k]; ok {
			return s
		}
		s := &scim.Schema{ID: urn, Name: schemaName(urn), Description: "Group extension attributes read by the scimgate mapping."}
		byURN[k] = s
		out = append(out, s)
		return s
	})
	slices.SortFunc(out, func(a, b *scim.Schema) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// extensionSchemas builds the schemas UserExtensions returns.
func extensionSchemas(r Rules, add func(string, error)) []*scim.Schema {
	byURN := map[string]*scim.Schema{}
	var out []*scim.Schema
	schema := func(urn string) *scim.Schema {
		k := strings.ToLower(urn)
		if s, ok := byURN[k]; ok {
			return s
		}
		s := &scim.Schema{ID: urn, Name: schemaName(urn), Description: "Extension attributes read by the scimgate mapping."}
		byURN[k] = s
		out = append(out, s)
		return s
	}
	for i, e := range r.Extensions {
		at := fmt.Sprintf("extensions[%d]", i)
		if !isExtensionURN(e.URN) {
			add(at+".urn", errf(ErrInvalid, "invalid extension URN %q: want urn:…, other than the core and enterprise schemas", e.URN))
			continue
		}
		if _, ok := byURN[strings.ToLower(e.URN)]; ok {
			add(at+".urn", errf(ErrConflict, "extension %q is declared twice", e.URN))
			continue
		}
		s := schema(e.URN)
		if e.Name != "" {
			s.Name = e.Name
		}
		if e.Description != "" {
			s.Description = e.Description
		}
		for j, a := range e.Attributes {
			aat := fmt.Sprintf("%s.attributes[%d]", at, j)
			if a.Name == "" {
				add(aat+".name", errf(ErrMissing, "an attribute needs a name"))
				continue
			}
			if attribute(s, a.Name) != nil {
				add(aat+".name", errf(ErrConflict, "attribute %q is declared twice", a.Name))
				continue
			}
			typ := "string"
			if a.Type != "" {
				k := slices.IndexFunc(scimTypes, func(t string) bool { return strings.EqualFold(t, a.Type) })
				if k < 0 {
					add(aat+".type", errf(ErrUnknown, "unknown attribute type %q (want one of %s)", a.Type, strings.Join(scimTypes, ", ")))
					continue
				}
				typ = scimTypes[k]
			}
			attr := newAttribute(a.Name, typ)
			attr.MultiValued, attr.Required = a.MultiValued, a.Required
			if a.Description != "" {
				attr.Description = a.Description
			}
			s.Attributes = append(s.Attributes, attr)
		}
	}
	ruleSchemas(r.User, schema)
	slices.SortFunc(out, func(a, b *scim.Schema) int { return strings.Compare(a.ID, b.ID) })
	return out
}

func newAttribute(name, typ string) *scim.Attribute {
	return &scim.Attribute{Name: name, Type: typ, Mutability: "readWrite", Returned: "default", Uniqueness: "none"}
}

// attribute finds an attribute of s by name, ignoring case.
func attribute(s *scim.Schema, name string) *scim.Attribute {
	for _, a := range s.Attributes {
		if strings.EqualFold(a.Name, name) {
			return a
		}
	}
	return nil
}

// scimType is the SCIM attribute type of a rule type.
func scimType(ruleType string) string {
	switch strings.ToLower(ruleType) {
	case "bool", "boolean":
		return "boolean"
	case "int", "integer":
		return "integer"
	case "datetime":
		return "dateTime"
	case "object":
		return "complex"
	}
	return "string"
}

// isExtensionURN reports whether urn names a schema other than the core
// ones and the enterprise extension.
func isExtensionURN(urn string) bool {
	if len(urn) < 4 || !strings.EqualFold(urn[:4], "urn:") {
		return false
	}
	for _, core := range []string{scim.SchemaUser, scim.SchemaGroup, scim.SchemaEnterpriseUser} {
		if strings.EqualFold(urn, core) {
			return false
		}
	}
	return true
}

// schemaName derives a name from a URN:
// "urn:ietf:params:scim:schemas:extension:cybsafe:2.0:User" → "cybsafe User".
func schemaName(urn string) string {
	parts := strings.Split(urn, ":")
	for i, p := range parts {
		if strings.EqualFold(p, "extension") && i+1 < len(parts) {
			return parts[i+1] + " " + parts[len(parts)-1]
		}
	}
	return parts[len(parts)-1]
}
