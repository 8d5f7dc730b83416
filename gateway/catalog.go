package gateway

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/scimgate/scimgate/gateway/scim"
	"github.com/scimgate/scimgate/mapping"
)

// The roles and entitlements catalog (mapping.Rules.Catalog), served read
// only for Okta Identity Governance's discovery: /ResourceTypes lists each
// type, and each type's endpoint (/Roles, /Entitlements, /Licenses…) lists
// its values, paged and filterable like any SCIM list.

// SetMapper gives the server the mapping whose catalog it serves. Without
// one, no catalog types are served.
func (s *Server) SetMapper(m *mapping.Mapper) { s.mapper.Store(m) }

func (s *Server) catalog() []mapping.CatalogType {
	if m := s.mapper.Load(); m != nil {
		return m.Catalog()
	}
	return nil
}

// catalogSchemas are Okta's schemas for role and entitlement resources.
var catalogSchemas = map[string]*scim.Schema{
	mapping.KindRole: {ID: mapping.SchemaOktaRole, Name: "Role", Description: "A role the app grants (Okta Identity Governance)",
		Attributes: catalogAttributes(false)},
	mapping.KindEntitlement: {ID: mapping.SchemaOktaEntitlement, Name: "Entitlement",
		Description: "An entitlement the app grants (Okta Identity Governance)", Attributes: catalogAttributes(true)},
}

func catalogAttributes(typed bool) []*scim.Attribute {
	ro := func(name, desc string, required bool) *scim.Attribute {
		return &scim.Attribute{Name: name, Type: scim.TypeString, Description: desc, Required: required, CaseExact: name == "id",
			Mutability: scim.ReadOnly, Returned: scim.ReturnedDefault, Uniqueness: scim.UniquenessNone}
	}
	attrs := []*scim.Attribute{
		ro("id", "The value assigned to users (roles[].value or entitlements[].value).", true),
		ro("displayName", "The name shown to administrators.", true),
		ro("description", "What the value grants.", false),
	}
	if typed {
		attrs = append(attrs, ro("type", "The kind of entitlement (the resource type's name, e.g. License).", true))
	}
	attrs[0].Uniqueness, attrs[0].Returned = scim.UniquenessServer, scim.ReturnedAlways // RFC 7643 §3.1
	return attrs
}

// catalogResourceType is the SCIM resource type of a catalog type.
func catalogResourceType(t mapping.CatalogType) *scim.ResourceType {
	desc := t.Description
	if desc == "" {
		desc = t.Name + " values the app grants, assigned through the user's " + t.Attribute
	}
	return &scim.ResourceType{ID: t.Name, Name: t.Name, Endpoint: t.Endpoint, Description: desc, Schema: catalogSchemas[t.Kind]}
}

// catalogDoc renders one value as a SCIM resource.
func (s *Server) catalogDoc(c echo.Context, t mapping.CatalogType, v mapping.CatalogValue) map[string]any {
	doc := map[string]any{
		"schemas":     []any{t.Schema()},
		"id":          v.ID,
		"displayName": v.DisplayName,
		"meta":        map[string]any{"resourceType": t.Name, "location": s.baseURL(c) + t.Endpoint + "/" + v.ID},
	}
	if v.Description != "" {
		doc["description"] = v.Description
	}
	if t.Kind == mapping.KindEntitlement {
		doc["type"] = t.Name
	}
	return doc
}

// findCatalogType returns the type served at endpoint (case-insensitive).
func (s *Server) findCatalogType(endpoint string) (mapping.CatalogType, bool) {
	for _, t := range s.catalog() {
		if strings.EqualFold(t.Endpoint, endpoint) {
			return t, true
		}
	}
	return mapping.CatalogType{}, false
}

// catalogRoutes serves /{endpoint} and /{endpoint}/{id} for any catalog
// type; it is reached through the unknown-endpoint fallback, so a reloaded
// catalog needs no new routes.
func (s *Server) catalogRequest(c echo.Context) (bool, error) {
	rest := strings.TrimPrefix(c.Request().URL.Path, s.base)
	seg, id, hasID := strings.Cut(strings.TrimPrefix(rest, "/"), "/")
	t, ok := s.findCatalogType("/" + seg)
	if !ok || strings.Contains(id, "/") {
		return false, nil
	}
	if m := c.Request().Method; m != http.MethodGet && m != http.MethodHead {
		c.Response().Header().Set(echo.HeaderAllow, http.MethodGet)
		return true, scim.Errorf(http.StatusMethodNotAllowed, "", "%s is read-only: the %s catalog lives in scimgate's configuration (mapping.catalog)",
			c.Request().URL.Path, t.Name)
	}
	if hasID {
		p := parseProjection(c)
		for _, v := range t.Values {
			if v.ID == id {
				return true, render(c, http.StatusOK, scim.Project(s.catalogDoc(c, t, v), catalogResourceType(t), p.attributes, p.excluded))
			}
		}
		return true, scim.Errorf(http.StatusNotFound, "", "no %s %q in the catalog", t.Name, id)
	}
	return true, s.catalogList(c, t)
}

func (s *Server) catalogList(c echo.Context, t mapping.CatalogType) error {
	start, count := 1, defaultPageSize
	if v := c.QueryParam("startIndex"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return scim.Errorf(http.StatusBadRequest, scim.InvalidValue, "startIndex %q is not an integer", v)
		}
		start = max(n, 1)
	}
	if v := c.QueryParam("count"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return scim.Errorf(http.StatusBadRequest, scim.InvalidValue, "count %q is not an integer", v)
		}
		count = min(max(n, 0), s.cfg().Limits.MaxPageSize)
	}
	var filter *scim.Filter
	if f := c.QueryParam("filter"); f != "" {
		if len(f) > s.cfg().Limits.MaxFilterBytes {
			return scim.Errorf(http.StatusBadRequest, scim.InvalidFilter, "filter is %d bytes; the limit is %d", len(f), s.cfg().Limits.MaxFilterBytes)
		}
		var err error
		if filter, err = scim.ParseFilter(f); err != nil {
			return err
		}
		rt := catalogResourceType(t)
		if err := filter.Validate(rt); err != nil {
			return err
		}
	}
	rt := catalogResourceType(t)
	var matched []any
	for _, v := range t.Values {
		doc := s.catalogDoc(c, t, v)
		if filter.Match(doc, rt) {
			matched = append(matched, doc)
		}
	}
	page := []any{}
	p := parseProjection(c)
	for i := start - 1; i >= 0 && i < len(matched) && len(page) < count; i++ {
		page = append(page, scim.Project(matched[i].(map[string]any), rt, p.attributes, p.excluded))
	}
	return render(c, http.StatusOK, scim.NewListResponse(len(matched), start, page))
}
