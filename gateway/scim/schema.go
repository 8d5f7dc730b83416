package scim

import (
	"encoding/json"
	"strings"
)

// Attribute types of RFC 7643 §2.3.
const (
	TypeString    = "string"
	TypeBoolean   = "boolean"
	TypeDecimal   = "decimal"
	TypeInteger   = "integer"
	TypeDateTime  = "dateTime"
	TypeReference = "reference"
	TypeComplex   = "complex"
	TypeBinary    = "binary"
)

// Mutability, returned and uniqueness values of RFC 7643 §7.
const (
	ReadOnly  = "readOnly"
	ReadWrite = "readWrite"
	Immutable = "immutable"
	WriteOnly = "writeOnly"

	ReturnedAlways  = "always"
	ReturnedNever   = "never"
	ReturnedDefault = "default"
	ReturnedRequest = "request"

	UniquenessNone   = "none"
	UniquenessServer = "server"
	UniquenessGlobal = "global"
)

// Attribute is an attribute definition of RFC 7643 §7. It marshals with the
// member names of RFC 7643 §7 and §8.7; empty optional members
// (description, canonicalValues, referenceTypes, subAttributes and empty
// mutability/returned/uniqueness) are omitted.
type Attribute struct {
	Name            string       `json:"name"`
	Type            string       `json:"type"` // one of the Type* constants
	MultiValued     bool         `json:"multiValued"`
	Description     string       `json:"description,omitempty"`
	Required        bool         `json:"required"`
	CaseExact       bool         `json:"caseExact"`
	Mutability      string       `json:"mutability,omitempty"` // readOnly, readWrite, immutable, writeOnly
	Returned        string       `json:"returned,omitempty"`   // always, never, default, request
	Uniqueness      string       `json:"uniqueness,omitempty"` // none, server, global
	CanonicalValues []string     `json:"canonicalValues,omitempty"`
	ReferenceTypes  []string     `json:"referenceTypes,omitempty"`
	SubAttributes   []*Attribute `json:"subAttributes,omitempty"`
}

// Sub returns the sub-attribute called name, compared case-insensitively, or
// nil when a is nil or has no such sub-attribute.
func (a *Attribute) Sub(name string) *Attribute {
	if a == nil {
		return nil
	}
	return findAttr(a.SubAttributes, name)
}

// Schema is a schema definition of RFC 7643 §7 (the members a /Schemas
// response needs besides "schemas" and "meta").
type Schema struct {
	ID          string       `json:"id"`
	Name        string       `json:"name"`
	Description string       `json:"description"`
	Attributes  []*Attribute `json:"attributes"`
}

// Attr returns the top-level attribute called name, compared
// case-insensitively, or nil when s is nil or defines no such attribute.
func (s *Schema) Attr(name string) *Attribute {
	if s == nil {
		return nil
	}
	return findAttr(s.Attributes, name)
}

func findAttr(attrs []*Attribute, name string) *Attribute {
	for _, a := range attrs {
		if a.Name == name {
			return a
		}
	}
	for _, a := range attrs {
		if strings.EqualFold(a.Name, name) {
			return a
		}
	}
	return nil
}

// attrOpt adjusts an attribute definition under construction.
type attrOpt func(*Attribute)

func required(a *Attribute)    { a.Required = true }
func caseExact(a *Attribute)   { a.CaseExact = true }
func multi(a *Attribute)       { a.MultiValued = true }
func readOnly(a *Attribute)    { a.Mutability = ReadOnly }
func immutable(a *Attribute)   { a.Mutability = Immutable }
func writeOnly(a *Attribute)   { a.Mutability = WriteOnly }
func neverReturn(a *Attribute) { a.Returned = ReturnedNever }
func alwaysReturn(a *Attribute) {
	a.Returned = ReturnedAlways
}
func serverUnique(a *Attribute) { a.Uniqueness = UniquenessServer }
func canonical(vs ...string) attrOpt {
	return func(a *Attribute) { a.CanonicalValues = vs }
}
func refTypes(ts ...string) attrOpt {
	return func(a *Attribute) { a.ReferenceTypes = ts }
}
func subs(as ...*Attribute) attrOpt {
	return func(a *Attribute) { a.SubAttributes = as }
}

// attr builds a definition with the RFC 7643 §2.2 defaults (readWrite,
// returned default, uniqueness none, caseExact false) and applies opts.
func attr(name, typ, desc string, opts ...attrOpt) *Attribute {
	a := &Attribute{Name: name, Type: typ, Description: desc,
		Mutability: ReadWrite, Returned: ReturnedDefault}
	if typ != TypeComplex {
		a.Uniqueness = UniquenessNone
	}
	for _, o := range opts {
		o(a)
	}
	if typ == TypeBoolean || typ == TypeComplex {
		a.CaseExact = false
	}
	return a
}

func str(name, desc string, opts ...attrOpt) *Attribute {
	return attr(name, TypeString, desc, opts...)
}

// commonAttrs returns id, externalId and meta (RFC 7643 §3.1).
func commonAttrs() []*Attribute {
	return []*Attribute{
		str("id", "Unique identifier for the SCIM resource as defined by the service provider.",
			caseExact, readOnly, alwaysReturn, serverUnique),
		str("externalId", "A string that is an identifier for the resource as defined by the provisioning client.",
			caseExact),
		attr("meta", TypeComplex, "A complex attribute containing resource metadata.", readOnly, subs(
			str("resourceType", "The name of the resource type of the resource.", caseExact, readOnly),
			attr("created", TypeDateTime, "The DateTime that the resource was added to the service provider.", readOnly),
			attr("lastModified", TypeDateTime, "The most recent DateTime that the details of this resource were updated at the service provider.", readOnly),
			attr("location", TypeReference, "The URI of the resource being returned.", caseExact, readOnly, refTypes("uri")),
			str("version", "The version of the resource being returned.", caseExact, readOnly),
		)),
	}
}

// multiSubs returns the value/display/type/primary sub-attributes of a
// multi-valued attribute (RFC 7643 §2.4), with the value of the given type.
func multiSubs(valueType, valueDesc string, types []string, extra ...*Attribute) []*Attribute {
	typeOpts := []attrOpt{}
	if len(types) > 0 {
		typeOpts = append(typeOpts, canonical(types...))
	}
	as := []*Attribute{
		attr("value", valueType, valueDesc),
		str("display", "A human-readable name, primarily used for display purposes."),
		str("type", "A label indicating the attribute's function.", typeOpts...),
		attr("primary", TypeBoolean, "A Boolean value indicating the 'primary' or preferred attribute value for this attribute."),
	}
	return append(as, extra...)
}

func newUserSchema() *Schema {
	attrs := commonAttrs()
	attrs = append(attrs,
		str("userName", "Unique identifier for the User, typically used by the user to directly authenticate to the service provider. REQUIRED.",
			required, serverUnique),
		attr("name", TypeComplex, "The components of the user's real name.", subs(
			str("formatted", "The full name, including all middle names, titles, and suffixes as appropriate, formatted for display."),
			str("familyName", "The family name of the User, or last name in most Western languages."),
			str("givenName", "The given name of the User, or first name in most Western languages."),
			str("middleName", "The middle name(s) of the User."),
			str("honorificPrefix", "The honorific prefix(es) of the User, or title in most Western languages."),
			str("honorificSuffix", "The honorific suffix(es) of the User, or suffix in most Western languages."),
		)),
		str("displayName", "The name of the User, suitable for display to end-users."),
		str("nickName", "The casual way to address the user in real life."),
		attr("profileUrl", TypeReference, "A fully qualified URL pointing to a page representing the User's online profile.", refTypes("external")),
		str("title", "The user's title, such as \"Vice President\"."),
		str("userType", "Used to identify the relationship between the organization and the user."),
		str("preferredLanguage", "Indicates the User's preferred written or spoken language."),
		str("locale", "Used to indicate the User's default location for purposes of localizing items such as currency, date time format, or numerical representations."),
		str("timezone", "The User's time zone in the 'Olson' time zone database format, e.g., 'America/Los_Angeles'."),
		attr("active", TypeBoolean, "A Boolean value indicating the User's administrative status."),
		str("password", "The User's cleartext password.", writeOnly, neverReturn),
		attr("emails", TypeComplex, "Email addresses for the user.", multi, subs(
			multiSubs(TypeString, "Email addresses for the user.", []string{"work", "home", "other"})...)),
		attr("phoneNumbers", TypeComplex, "Phone numbers for the User.", multi, subs(
			multiSubs(TypeString, "Phone number of the User.", []string{"work", "home", "mobile", "fax", "pager", "other"})...)),
		attr("ims", TypeComplex, "Instant messaging addresses for the User.", multi, subs(
			multiSubs(TypeString, "Instant messaging address for the User.", []string{"aim", "gtalk", "icq", "xmpp", "msn", "skype", "qq", "yahoo"})...)),
		attr("photos", TypeComplex, "URLs of photos of the User.", multi, subs(
			attr("value", TypeReference, "URL of a photo of the User.", refTypes("external")),
			str("display", "A human-readable name, primarily used for display purposes."),
			str("type", "A label indicating the attribute's function, i.e., 'photo' or 'thumbnail'.", canonical("photo", "thumbnail")),
			attr("primary", TypeBoolean, "A Boolean value indicating the 'primary' or preferred attribute value for this attribute."),
		)),
		attr("addresses", TypeComplex, "A physical mailing address for this User.", multi, subs(
			str("formatted", "The full mailing address, formatted for display or use with a mailing label."),
			str("streetAddress", "The full street address component."),
			str("locality", "The city or locality component."),
			str("region", "The state or region component."),
			str("postalCode", "The zip code or postal code component."),
			str("country", "The country name component."),
			str("type", "A label indicating the attribute's function, e.g., 'work' or 'home'.", canonical("work", "home", "other")),
			attr("primary", TypeBoolean, "A Boolean value indicating the 'primary' or preferred attribute value for this attribute."),
			str("display", "A human-readable name, primarily used for display purposes."),
		)),
		attr("groups", TypeComplex, "A list of groups to which the user belongs, either through direct membership, through nested groups, or dynamically calculated.",
			multi, readOnly, subs(
				// No "$ref": scimgate never returns it (RFC 7643 §4.1.2 makes it optional).
				str("value", "The identifier of the User's group.", readOnly),
				str("display", "A human-readable name, primarily used for display purposes.", readOnly),
				str("type", "A label indicating the attribute's function, e.g., 'direct' or 'indirect'.", readOnly, canonical("direct", "indirect")),
			)),
		attr("entitlements", TypeComplex, "A list of entitlements for the User that represent a thing the User has.", multi, subs(
			multiSubs(TypeString, "The value of an entitlement.", nil)...)),
		attr("roles", TypeComplex, "A list of roles for the User that collectively represent who the User is, e.g., 'Student', 'Faculty'.", multi, subs(
			multiSubs(TypeString, "The value of a role.", nil)...)),
		attr("x509Certificates", TypeComplex, "A list of certificates issued to the User.", multi, subs(
			multiSubs(TypeBinary, "The value of an X.509 certificate.", nil)...)),
	)
	return &Schema{ID: SchemaUser, Name: "User", Description: "User Account", Attributes: attrs}
}

func newGroupSchema() *Schema {
	attrs := commonAttrs()
	attrs = append(attrs,
		// scimgate enforces unique display names (409), as IdPs match groups by them.
		str("displayName", "A human-readable name for the Group. REQUIRED.", required, serverUnique),
		// No "$ref": scimgate never returns it.
		attr("members", TypeComplex, "A list of members of the Group.", multi, subs(
			str("value", "Identifier of the member of this Group.", immutable),
			str("display", "A human-readable name, primarily used for display purposes.", immutable),
			str("type", "A label indicating the type of resource, e.g., 'User' or 'Group'.", immutable, canonical("User", "Group")),
		)),
	)
	return &Schema{ID: SchemaGroup, Name: "Group", Description: "Group", Attributes: attrs}
}

func newEnterpriseUserSchema() *Schema {
	return &Schema{ID: SchemaEnterpriseUser, Name: "EnterpriseUser", Description: "Enterprise User", Attributes: []*Attribute{
		str("employeeNumber", "Numeric or alphanumeric identifier assigned to a person, typically based on order of hire or association with an organization."),
		str("costCenter", "Identifies the name of a cost center."),
		str("organization", "Identifies the name of an organization."),
		str("division", "Identifies the name of a division."),
		str("department", "Identifies the name of a department."),
		attr("manager", TypeComplex, "The User's manager. A complex type that optionally allows service providers to represent organizational hierarchy by referencing the 'id' attribute of another User.", subs(
			str("value", "The id of the SCIM resource representing the User's manager. REQUIRED."),
			attr("$ref", TypeReference, "The URI of the SCIM resource representing the User's manager. REQUIRED.", refTypes("User")),
			str("displayName", "The displayName of the User's manager. OPTIONAL and READ-ONLY.", readOnly),
		)),
	}}
}

// UserSchema, GroupSchema and EnterpriseUserSchema are the RFC 7643 §8.7.1
// definitions of the core User and Group schemas and of the enterprise User
// extension, plus the common attributes id, externalId and meta. Treat them
// as read-only.
var (
	UserSchema           = newUserSchema()
	GroupSchema          = newGroupSchema()
	EnterpriseUserSchema = newEnterpriseUserSchema()
)

// ResourceType ties a resource's core schema to its extension schemas
// (RFC 7643 §6). It marshals as the RFC 7643 §6 representation
// (schemas, id, name, endpoint, description, schema, schemaExtensions with
// required false), without meta.
type ResourceType struct {
	ID, Name, Endpoint, Description string
	Schema                          *Schema
	Extensions                      []*Schema
}

// NewUserResourceType returns the "User" resource type at "/Users" with the
// enterprise extension first, followed by extensions (duplicates by URN,
// compared case-insensitively, are dropped).
func NewUserResourceType(extensions ...*Schema) *ResourceType {
	rt := &ResourceType{ID: "User", Name: "User", Endpoint: "/Users", Description: "User Account", Schema: UserSchema}
	rt.addExtensions(append([]*Schema{EnterpriseUserSchema}, extensions...))
	return rt
}

// NewGroupResourceType returns the "Group" resource type at "/Groups" with the
// given extension schemas (duplicates by URN are dropped).
func NewGroupResourceType(extensions ...*Schema) *ResourceType {
	rt := &ResourceType{ID: "Group", Name: "Group", Endpoint: "/Groups", Description: "Group", Schema: GroupSchema}
	rt.addExtensions(extensions)
	return rt
}

func (rt *ResourceType) addExtensions(exts []*Schema) {
	for _, s := range exts {
		if s == nil || rt.Extension(s.ID) != nil || strings.EqualFold(s.ID, rt.Schema.ID) {
			continue
		}
		rt.Extensions = append(rt.Extensions, s)
	}
}

// Extension returns the extension schema whose URN equals urn
// (case-insensitively), or nil.
func (rt *ResourceType) Extension(urn string) *Schema {
	if rt == nil {
		return nil
	}
	for _, s := range rt.Extensions {
		if strings.EqualFold(s.ID, urn) {
			return s
		}
	}
	return nil
}

// schemaFor returns the schema a URN prefix selects: the core schema for ""
// or the core URN, else the matching extension, else nil.
func (rt *ResourceType) schemaFor(urn string) *Schema {
	if rt == nil {
		return nil
	}
	if urn == "" || strings.EqualFold(urn, rt.Schema.ID) {
		return rt.Schema
	}
	return rt.Extension(urn)
}

// Lookup returns the definition of the attribute p names (the sub-attribute
// when p.Sub is set), or nil when the schema does not define it or rt is
// nil. A URN-qualified path resolves against the matching extension, or
// against the core schema when the URN is the core one. A bare URN path
// (p.Attr == "") names no attribute and yields nil.
func (rt *ResourceType) Lookup(p *Path) *Attribute {
	if rt == nil || p == nil || p.Attr == "" {
		return nil
	}
	a := rt.schemaFor(p.URN).Attr(p.Attr)
	if a != nil && p.Sub != "" {
		return a.Sub(p.Sub)
	}
	return a
}

type schemaExtensionJSON struct {
	Schema   string `json:"schema"`
	Required bool   `json:"required"`
}

type resourceTypeJSON struct {
	Schemas          []string              `json:"schemas"`
	ID               string                `json:"id"`
	Name             string                `json:"name"`
	Endpoint         string                `json:"endpoint"`
	Description      string                `json:"description,omitempty"`
	Schema           string                `json:"schema"`
	SchemaExtensions []schemaExtensionJSON `json:"schemaExtensions"`
}

// MarshalJSON renders rt as an RFC 7643 §6 ResourceType resource (without
// meta, which depends on the server's base URL).
func (rt *ResourceType) MarshalJSON() ([]byte, error) {
	out := resourceTypeJSON{
		Schemas:          []string{SchemaResourceType},
		ID:               rt.ID,
		Name:             rt.Name,
		Endpoint:         rt.Endpoint,
		Description:      rt.Description,
		SchemaExtensions: []schemaExtensionJSON{},
	}
	if rt.Schema != nil {
		out.Schema = rt.Schema.ID
	}
	for _, s := range rt.Extensions {
		out.SchemaExtensions = append(out.SchemaExtensions, schemaExtensionJSON{Schema: s.ID})
	}
	return json.Marshal(out)
}
