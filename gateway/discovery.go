package gateway

import (
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/scimgate/scimgate/gateway/scim"
)

// Discovery endpoints (RFC 7644 §4). They describe what this gateway
// actually does: PATCH yes, ETags yes, filters yes (with the page cap),
// bulk, sort and password change no.

func (s *Server) serviceProviderConfig(c echo.Context) error {
	auth := s.auth.Load()
	var schemes []any
	if len(auth.bearer) > 0 {
		schemes = append(schemes, map[string]any{
			"type": "oauthbearertoken", "name": "Bearer token", "primary": true,
			"description": "Authentication with a bearer token in the Authorization header (Okta: HTTP Header; Entra: Secret Token)",
			"specUri":     "https://www.rfc-editor.org/info/rfc6750",
		})
	}
	if len(auth.clients) > 0 {
		schemes = append(schemes, map[string]any{
			"type": "oauth2", "name": "OAuth 2.0 client credentials", "primary": len(auth.bearer) == 0,
			"description": "Access tokens from POST " + s.base + "/oauth/token with the client credentials grant (Entra: OAuth2 Client Credentials Grant), presented as bearer tokens",
			"specUri":     "https://www.rfc-editor.org/info/rfc6749",
		})
	}
	if len(auth.basic) > 0 {
		schemes = append(schemes, map[string]any{
			"type": "httpbasic", "name": "HTTP Basic", "primary": len(auth.bearer) == 0 && len(auth.clients) == 0,
			"description": "Authentication with a key and secret using HTTP Basic",
			"specUri":     "https://www.rfc-editor.org/info/rfc7617",
		})
	}
	base := s.baseURL(c)
	return render(c, http.StatusOK, map[string]any{
		// Only the core schema: a client's discovery rejects a schema URN
		// /Schemas does not serve, so the limits that have no standard
		// attribute are in docs/operations.md and the admin status
		// (Server.Limits), not in an extension here.
		"schemas":               []string{scim.SchemaServiceProviderConfig},
		"documentationUri":      "https://github.com/scimgate/scimgate/blob/main/docs/okta.md",
		"patch":                 map[string]any{"supported": true},
		"bulk":                  map[string]any{"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
		"filter":                map[string]any{"supported": true, "maxResults": s.cfg().Limits.MaxPageSize},
		"changePassword":        map[string]any{"supported": false},
		"sort":                  map[string]any{"supported": false},
		"etag":                  map[string]any{"supported": true},
		"authenticationSchemes": schemes,
		"meta": map[string]any{
			"resourceType": "ServiceProviderConfig",
			"location":     base + "/ServiceProviderConfig",
		},
	})
}

// Limits returns the SCIM request limits in force, keyed by their
// scim.limits configuration keys, for the admin status: what a client may
// send in one request, which /ServiceProviderConfig has no standard
// attribute for.
func (s *Server) Limits() map[string]int64 {
	l := s.cfg().Limits
	return map[string]int64{
		"max_body_bytes": l.MaxBodyBytes, "max_page_size": int64(l.MaxPageSize), "max_operations": int64(l.MaxOperations),
		"max_values": int64(l.MaxValues), "max_members": int64(l.MaxMembers), "max_filter_bytes": int64(l.MaxFilterBytes),
		"max_depth": int64(l.MaxDepth),
	}
}

func (s *Server) resourceTypeDoc(c echo.Context, rt *scim.ResourceType) map[string]any {
	exts := make([]any, 0, len(rt.Extensions))
	for _, e := range rt.Extensions {
		exts = append(exts, map[string]any{"schema": e.ID, "required": false})
	}
	return map[string]any{
		"schemas":          []string{scim.SchemaResourceType},
		"id":               rt.ID,
		"name":             rt.Name,
		"endpoint":         rt.Endpoint,
		"description":      rt.Description,
		"schema":           rt.Schema.ID,
		"schemaExtensions": exts,
		"meta": map[string]any{
			"resourceType": "ResourceType",
			"location":     s.baseURL(c) + "/ResourceTypes/" + rt.ID,
		},
	}
}

// allResourceTypes are User, Group and the catalog's types.
func (s *Server) allResourceTypes() []*scim.ResourceType {
	out := []*scim.ResourceType{s.store.UserType(), s.store.GroupType()}
	for _, t := range s.catalog() {
		out = append(out, catalogResourceType(t))
	}
	return out
}

func (s *Server) resourceTypes(c echo.Context) error {
	var out []any
	for _, rt := range s.allResourceTypes() {
		out = append(out, s.resourceTypeDoc(c, rt))
	}
	return render(c, http.StatusOK, scim.NewListResponse(len(out), 1, out))
}

func (s *Server) resourceType(c echo.Context) error {
	var names []string
	for _, rt := range s.allResourceTypes() {
		if strings.EqualFold(rt.ID, c.Param("id")) {
			return render(c, http.StatusOK, s.resourceTypeDoc(c, rt))
		}
		names = append(names, rt.ID)
	}
	return scim.Errorf(http.StatusNotFound, "", "no resource type %q: scimgate serves %s", c.Param("id"), strings.Join(names, ", "))
}

// allSchemas lists the core schemas, every extension the gateway accepts
// and the schemas of the catalog's types.
func (s *Server) allSchemas() []*scim.Schema {
	out := []*scim.Schema{s.store.UserType().Schema, s.store.GroupType().Schema}
	kinds := map[string]bool{}
	for _, t := range s.catalog() {
		if !kinds[t.Kind] {
			kinds[t.Kind] = true
			out = append(out, catalogSchemas[t.Kind])
		}
	}
	seen := map[string]bool{}
	for _, rt := range []*scim.ResourceType{s.store.UserType(), s.store.GroupType()} {
		for _, e := range rt.Extensions {
			if !seen[strings.ToLower(e.ID)] {
				seen[strings.ToLower(e.ID)] = true
				out = append(out, e)
			}
		}
	}
	return out
}

func (s *Server) schemaDoc(c echo.Context, sc *scim.Schema) map[string]any {
	return map[string]any{
		"schemas":     []string{scim.SchemaSchema},
		"id":          sc.ID,
		"name":        sc.Name,
		"description": sc.Description,
		"attributes":  sc.Attributes,
		"meta": map[string]any{
			"resourceType": "Schema",
			"location":     s.baseURL(c) + "/Schemas/" + sc.ID,
		},
	}
}

func (s *Server) schemas(c echo.Context) error {
	var out []any
	for _, sc := range s.allSchemas() {
		out = append(out, s.schemaDoc(c, sc))
	}
	return render(c, http.StatusOK, scim.NewListResponse(len(out), 1, out))
}

func (s *Server) schema(c echo.Context) error {
	for _, sc := range s.allSchemas() {
		if strings.EqualFold(sc.ID, c.Param("id")) {
			return render(c, http.StatusOK, s.schemaDoc(c, sc))
		}
	}
	return scim.Errorf(http.StatusNotFound, "", "no schema %q: GET /Schemas lists the schemas scimgate accepts", c.Param("id"))
}
