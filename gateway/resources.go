package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/scimgate/scimgate/gateway/scim"
	"github.com/scimgate/scimgate/gateway/store"
)

// defaultPageSize applies when a list request has no count (Okta uses 100).
const defaultPageSize = 100

// resourceAPI serves one resource type's endpoints. Users and groups
// differ only in the store functions behind them.
type resourceAPI struct {
	s       *Server
	typ     *scim.ResourceType
	create  func(map[string]any) (*store.Resource, error)
	get     func(id string, withMembers bool) (*store.Resource, error)
	replace func(id, ifMatch string, doc map[string]any) (*store.Resource, error)
	patch   func(id, ifMatch string, ops []scim.Operation) (*store.Resource, error)
	delete  func(id, ifMatch string) error
	list    func(store.Query) (int, []*store.Resource, error)
}

// projection is the attributes / excludedAttributes pair of a request.
type projection struct {
	attributes, excluded []string
}

func parseProjection(c echo.Context) projection {
	return projection{attributes: splitList(c.QueryParam("attributes")), excluded: splitList(c.QueryParam("excludedAttributes"))}
}

// splitList splits a comma-separated attribute list; a value filter
// (emails[type eq "work"]) selects its attribute.
func splitList(s string) []string {
	if s == "" {
		return nil
	}
	var out []string
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if i := strings.IndexByte(p, '['); i >= 0 {
			rest := ""
			if j := strings.LastIndexByte(p, ']'); j > i {
				rest = p[j+1:]
			}
			p = p[:i] + rest
		}
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

// wantsMembers reports whether a group response needs its members, so
// excludedAttributes=members (Entra) costs no member scan.
func (p projection) wantsMembers() bool {
	for _, a := range p.excluded {
		if strings.EqualFold(a, "members") {
			return false
		}
	}
	if len(p.attributes) == 0 {
		return true
	}
	for _, a := range p.attributes {
		if strings.EqualFold(a, "members") || strings.HasPrefix(strings.ToLower(a), "members.") {
			return true
		}
	}
	return false
}

// out renders a stored resource for the client: meta.location, then the
// projection.
func (r *resourceAPI) out(c echo.Context, res *store.Resource, p projection) map[string]any {
	loc := r.location(c, res.ID)
	if meta, ok := res.Doc["meta"].(map[string]any); ok {
		meta["location"] = loc
	}
	return scim.Project(res.Doc, r.typ, p.attributes, p.excluded)
}

func (r *resourceAPI) location(c echo.Context, id string) string {
	return r.s.baseURL(c) + r.typ.Endpoint + "/" + id
}

func (r *resourceAPI) listHandler(c echo.Context) error {
	q, err := r.query(c)
	if err != nil {
		return err
	}
	p := parseProjection(c)
	stream := r.typ.ID == "Group" && p.wantsMembers()
	// Groups are listed without members; streamGroups reads them group by
	// group as it writes.
	total, page, err := r.list(q)
	if err != nil {
		return err
	}
	if stream {
		return r.streamGroups(c, total, q.StartIndex, page, p)
	}
	resources := make([]any, 0, len(page))
	for _, res := range page {
		resources = append(resources, r.out(c, res, p))
	}
	return render(c, http.StatusOK, scim.NewListResponse(total, q.StartIndex, resources))
}

// streamGroups writes a page of groups with their members: each group is
// read again with its members (in one read transaction, so its members
// match its meta.version), encoded and written before the next is read,
// so what a page holds in memory is bounded by its largest group, as for
// GET /Groups/{id}, and the page holds every group asked for, whatever
// their members add up to. A group deleted after the page was read is left
// out, and itemsPerPage (written after Resources) counts what was written.
// A read that fails after the first group has been written cannot change
// the status any more: the connection is cut, so the client sees a failed
// request rather than a short page.
func (r *resourceAPI) streamGroups(c echo.Context, total, start int, page []*store.Resource, p projection) error {
	// encode reads page[i] again with its members and encodes it; nil for
	// a group deleted since the page was read.
	encode := func(i int) ([]byte, error) {
		full, err := r.get(page[i].ID, true)
		if errors.Is(err, store.ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		b, err := json.Marshal(r.out(c, full, p))
		if err != nil {
			return nil, fmt.Errorf("encode group %s: %w", full.ID, err)
		}
		return b, nil
	}
	// The first group is read before the status is sent, so a database
	// error there is still an ordinary error response.
	var first []byte
	i := 0
	for ; i < len(page) && first == nil; i++ {
		var err error
		if first, err = encode(i); err != nil {
			return err
		}
	}
	w := c.Response()
	w.Header().Set(echo.HeaderContentType, scim.MediaType)
	w.WriteHeader(http.StatusOK)
	head, _ := json.Marshal(scim.SchemaListResponse)
	fmt.Fprintf(w, `{"schemas":[%s],"totalResults":%d,"startIndex":%d,"Resources":[`, head, total, start)
	n := 0
	if first != nil {
		_, _ = w.Write(first)
		n++
	}
	for ; i < len(page); i++ {
		b, err := encode(i)
		if err != nil {
			r.s.logger.ErrorContext(c.Request().Context(), "list groups: read a group's members", logKeyErr, err)
			panic(http.ErrAbortHandler)
		}
		if b == nil {
			continue
		}
		_, _ = w.Write([]byte{','})
		_, _ = w.Write(b)
		n++
	}
	_, err := fmt.Fprintf(w, `],"itemsPerPage":%d}`, n)
	return err
}

// query reads filter, startIndex and count (RFC 7644 §3.4.2). Unknown
// parameters (Entra's aadOptscim062020) are ignored.
func (r *resourceAPI) query(c echo.Context) (store.Query, error) {
	q := store.Query{StartIndex: 1, Count: defaultPageSize}
	if v := c.QueryParam("startIndex"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return q, scim.Errorf(http.StatusBadRequest, scim.InvalidValue, "startIndex %q is not an integer", v)
		}
		q.StartIndex = max(n, 1)
	}
	if v := c.QueryParam("count"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return q, scim.Errorf(http.StatusBadRequest, scim.InvalidValue, "count %q is not an integer", v)
		}
		q.Count = min(max(n, 0), r.s.cfg().Limits.MaxPageSize)
	}
	if f := c.QueryParam("filter"); f != "" {
		if len(f) > r.s.cfg().Limits.MaxFilterBytes {
			return q, scim.Errorf(http.StatusBadRequest, scim.InvalidFilter, "filter is %d bytes; the limit is %d", len(f), r.s.cfg().Limits.MaxFilterBytes)
		}
		filter, err := scim.ParseFilter(f)
		if err != nil {
			return q, err
		}
		if err := filter.Validate(r.typ); err != nil {
			return q, err
		}
		q.Filter = filter
	}
	return q, nil
}

func (r *resourceAPI) getHandler(c echo.Context) error {
	p := parseProjection(c)
	res, err := r.get(c.Param("id"), p.wantsMembers())
	if err != nil {
		return err
	}
	if inm := c.Request().Header.Get("If-None-Match"); inm != "" && noneMatchHits(inm, res.ETag()) {
		c.Response().Header().Set("ETag", res.ETag())
		return c.NoContent(http.StatusNotModified)
	}
	return r.respond(c, http.StatusOK, res, p)
}

// noneMatchHits reports whether an If-None-Match header (a list of tags,
// or "*") names tag, by the weak comparison RFC 9110 §13.1.2 requires for
// If-None-Match: "12" and W/"12" both match W/"12".
func noneMatchHits(header, tag string) bool {
	if strings.TrimSpace(header) == "*" {
		return true
	}
	opaque := strings.TrimPrefix(tag, "W/")
	for _, t := range strings.Split(header, ",") {
		if strings.TrimPrefix(strings.TrimSpace(t), "W/") == opaque {
			return true
		}
	}
	return false
}

func (r *resourceAPI) respond(c echo.Context, status int, res *store.Resource, p projection) error {
	if _, has := res.Doc["members"]; !has && r.typ.ID == "Group" && p.wantsMembers() {
		// Writes return groups without members; read them for the body.
		full, err := r.get(res.ID, true)
		if err != nil {
			return err
		}
		res = full
	}
	c.Response().Header().Set("ETag", res.ETag())
	if status == http.StatusCreated {
		c.Response().Header().Set(echo.HeaderLocation, r.location(c, res.ID))
	}
	return render(c, status, r.out(c, res, p))
}

func (r *resourceAPI) createHandler(c echo.Context) error {
	doc, err := decode(c, r.s.cfg().Limits.MaxDepth)
	if err != nil {
		return err
	}
	if err := r.checkValues(doc); err != nil {
		return err
	}
	res, err := r.create(doc)
	if err != nil {
		return err
	}
	return r.respond(c, http.StatusCreated, res, parseProjection(c))
}

func (r *resourceAPI) replaceHandler(c echo.Context) error {
	doc, err := decode(c, r.s.cfg().Limits.MaxDepth)
	if err != nil {
		return err
	}
	if err := r.checkValues(doc); err != nil {
		return err
	}
	res, err := r.replace(c.Param("id"), c.Request().Header.Get("If-Match"), doc)
	if err != nil {
		return err
	}
	return r.respond(c, http.StatusOK, res, parseProjection(c))
}

func (r *resourceAPI) patchHandler(c echo.Context) error {
	body, err := readBody(c)
	if err != nil {
		return err
	}
	limits := r.s.cfg().Limits
	ops, err := scim.ParsePatchLimits(body, scim.Limits{MaxDepth: limits.MaxDepth})
	if err != nil {
		return err
	}
	if len(ops) > limits.MaxOperations {
		return scim.Errorf(http.StatusBadRequest, scim.TooMany, "PATCH has %d operations; the limit is %d (scim.limits.max_operations): split it", len(ops), limits.MaxOperations)
	}
	// Counted before anything reaches the store's writer, with and without
	// a path alike: what one request may ask the writer to do is bounded.
	if n := scim.CountPatchAttrValues(ops, "members"); n > limits.MaxMembers {
		return scim.Errorf(http.StatusBadRequest, scim.TooMany, "PATCH carries %d members; the limit is %d (scim.limits.max_members): split it", n, limits.MaxMembers)
	}
	if n := scim.CountPatchValues(ops); n > limits.MaxValues {
		return scim.Errorf(http.StatusBadRequest, scim.TooMany, "PATCH carries %d values; the limit is %d (scim.limits.max_values): split it", n, limits.MaxValues)
	}
	res, err := r.patch(c.Param("id"), c.Request().Header.Get("If-Match"), ops)
	if err != nil {
		return err
	}
	p := parseProjection(c)
	if r.s.cfg().PatchResponse == "no_content" && len(p.attributes) == 0 && len(p.excluded) == 0 {
		c.Response().Header().Set("ETag", res.ETag())
		return c.NoContent(http.StatusNoContent)
	}
	return r.respond(c, http.StatusOK, res, p)
}

func (r *resourceAPI) deleteHandler(c echo.Context) error {
	if err := r.delete(c.Param("id"), c.Request().Header.Get("If-Match")); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// checkValues enforces the members- and values-per-request limits on POST
// and PUT, counted as PATCH counts them.
func (r *resourceAPI) checkValues(doc map[string]any) error {
	limits := r.s.cfg().Limits
	if members, found, _, _ := scim.SplitAttr(doc, "members", r.typ); found {
		if n := scim.CountValues(members); n > limits.MaxMembers {
			return scim.Errorf(http.StatusBadRequest, scim.TooMany, "request has %d members; the limit is %d (scim.limits.max_members)", n, limits.MaxMembers)
		}
	}
	if n := scim.CountValues(doc); n > limits.MaxValues {
		return scim.Errorf(http.StatusBadRequest, scim.TooMany, "request has %d values in multi-valued attributes; the limit is %d (scim.limits.max_values)", n, limits.MaxValues)
	}
	return nil
}
