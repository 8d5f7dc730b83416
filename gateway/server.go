package gateway

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"mime"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/scimgate/scimgate/gateway/scim"
	"github.com/scimgate/scimgate/gateway/store"
	"github.com/scimgate/scimgate/mapping"
)

// Log keys (no personal data: ids and routes, never bodies or filters).
const (
	logKeyMethod = "method"
	logKeyRoute  = "route"
	logKeyStatus = "status"
	logKeyErr    = "err"
)

// Server is the SCIM HTTP API. It is an http.Handler.
type Server struct {
	base    string // base path without trailing slash (not reloadable)
	store   *store.Store
	logger  *slog.Logger
	metrics *Metrics
	echo    *echo.Echo

	// What Reload swaps, each read once per request.
	conf         atomic.Pointer[Config]
	auth         atomic.Pointer[authenticator]
	limiter      atomic.Pointer[limiter] // nil: no per-client rate limit
	tokenLimiter atomic.Pointer[limiter]
	tokenKey     []byte
	applyMu      sync.Mutex                     // serialises apply (a SIGHUP and POST /admin/reload at once)
	incs         secretIncarnations             // of the configuration in force; nil before the first
	saveIncs     func(map[string]string) error  // keeps incs for the next start; nil: not kept
	mapper       atomic.Pointer[mapping.Mapper] // its catalog is served; nil: none
	now          func() time.Time

	lastRequest atomic.Int64 // unix nanos of the last authenticated SCIM request
	recent      recentRing   // the last SCIM requests, for the console
}

// NewServer builds the SCIM API over st. m may be nil. Access tokens from
// the OAuth token endpoint are signed with a random key unless
// SetTokenKey gives a persisted one before serving.
func NewServer(cfg Config, st *store.Store, logger *slog.Logger, m *Metrics) *Server {
	if m == nil {
		m = NewMetrics()
	}
	s := &Server{base: strings.TrimSuffix(cfg.BasePath, "/"), store: st, logger: logger.With("component", "scim"), metrics: m,
		tokenKey: newTokenKey(), now: time.Now}
	s.apply(cfg)
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.errorHandler
	e.Use(s.observe)
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{DisableStackAll: true, LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
		s.logger.Error("panic in handler", logKeyRoute, c.Path(), logKeyErr, err, "stack", string(stack))
		return &panicError{v: err}
	}}))
	e.Use(s.bodyLimit)
	base := s.base
	e.Pre(middleware.RemoveTrailingSlash(), canonicalEndpoints(base))
	e.POST(base+"/oauth/token", s.tokenHandler)
	e.Match(otherMethods(http.MethodPost), base+"/oauth/token", tokenMethodNotAllowed)
	g := e.Group(base, s.requireAuth, s.rateLimit)
	s.routes(g)
	e.Any(base+"/*", func(c echo.Context) error {
		if served, err := s.catalogRequest(c); served {
			return err
		}
		return scim.Errorf(http.StatusNotFound, "", "no SCIM endpoint at %s: scimgate serves %s/Users, %s/Groups, the discovery endpoints and the catalog endpoints /ResourceTypes lists",
			c.Request().URL.Path, base, base)
	}, s.requireAuth, s.rateLimit)
	s.echo = e
	return s
}

// conf returns the configuration in force.
func (s *Server) cfg() *Config { return s.conf.Load() }

// SetTokenKey sets the key that signs OAuth access tokens (at least 32
// bytes, kept by the application so tokens survive a restart). Call it
// before serving.
func (s *Server) SetTokenKey(key []byte) {
	s.tokenKey = append([]byte(nil), key...)
	s.auth.Store(s.newAuthenticator(*s.cfg()))
}

// SetSecretIncarnations restores the incarnations of the OAuth client
// secrets that the last run saved (saved; nil when there is nothing saved:
// a first start), so that a secret removed by a reload and added back
// across a restart does not revive the tokens issued under it before its
// removal, and installs save, which keeps them now and at every reload
// that changes them. Secrets are named in saved by an HMAC under the token
// key, never by their hashes. Call it after SetTokenKey, before serving.
func (s *Server) SetSecretIncarnations(saved map[string]string, save func(map[string]string) error) error {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	s.incs = s.incs.restore(saved, s.secretName)
	s.saveIncs = save
	s.auth.Store(s.newAuthenticator(*s.cfg()))
	return save(s.incs.export(s.secretName))
}

// secretName names one client secret in what SetSecretIncarnations saves.
func (s *Server) secretName(k secretKey) string {
	m := hmac.New(sha256.New, s.tokenKey)
	m.Write([]byte("secret\x00" + k.client + "\x00"))
	m.Write(k.sum[:])
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// SetClock replaces time.Now for access-token issue and expiry (tests).
// Call it before serving.
func (s *Server) SetClock(now func() time.Time) {
	s.now = now
	s.auth.Store(s.newAuthenticator(*s.cfg()))
}

func (s *Server) newAuthenticator(cfg Config) *authenticator {
	a := newAuthenticator(cfg, s.tokenKey, s.incs)
	a.now = s.now
	return a
}

// apply installs cfg's reloadable parts.
func (s *Server) apply(cfg Config) {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	c := cfg
	prev := s.incs
	s.incs = s.incs.next(c)
	if s.saveIncs != nil && !maps.Equal(prev, s.incs) {
		if err := s.saveIncs(s.incs.export(s.secretName)); err != nil {
			// The configuration applies; only a restart's memory of the
			// removed secrets is lost (see secretIncarnations).
			s.logger.Error("could not save the OAuth client secrets' incarnations: a secret this reload removed would, added back before the next start, revive its tokens after it", logKeyErr, err)
		}
	}
	s.conf.Store(&c)
	s.auth.Store(s.newAuthenticator(c))
	if c.Limits.RatePerSecond > 0 {
		s.limiter.Store(newLimiter(c.Limits.RatePerSecond, c.Limits.Burst))
	} else {
		s.limiter.Store(nil)
	}
	s.tokenLimiter.Store(newLimiter(c.Limits.TokenRatePerSecond, c.Limits.TokenBurst))
	if s.store != nil {
		// The store checks what a write produces with these: the
		// configuration in force is their one source, at start and at
		// each reload.
		s.store.SetLimits(store.Limits{MaxDepth: c.Limits.MaxDepth, MaxResourceBytes: c.Limits.MaxResourceBytes})
	}
}

// Reload swaps in the credentials, trusted proxies, limits, public URL and
// PATCH response style of cfg atomically: a request sees the old set or the
// new one, never a mix. It returns what changed, without secret values. A
// cfg that does not validate changes nothing. The listener address, base
// path and TLS files are not reloaded here (the first two need a restart;
// SIGHUP reloads the TLS files separately).
func (s *Server) Reload(cfg Config) ([]string, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	old := s.cfg()
	changes := diffConfig(old, &cfg)
	s.apply(cfg)
	return changes, nil
}

// bodyLimit refuses bodies over scim.limits.max_body_bytes with 413.
func (s *Server) bodyLimit(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		max := s.cfg().Limits.MaxBodyBytes
		r := c.Request()
		if r.ContentLength > max {
			return echo.NewHTTPError(http.StatusRequestEntityTooLarge)
		}
		r.Body = http.MaxBytesReader(c.Response(), r.Body, max)
		return next(c)
	}
}

// endpointNames are the SCIM endpoints, keyed case-folded.
var endpointNames = map[string]string{
	"users": "Users", "groups": "Groups", "serviceproviderconfig": "ServiceProviderConfig",
	"resourcetypes": "ResourceTypes", "schemas": "Schemas", "bulk": "Bulk", "me": "Me",
}

// canonicalEndpoints accepts endpoint names in any case (/users as well as
// /Users: Microsoft's test collection and some clients send lower case).
func canonicalEndpoints(base string) echo.MiddlewareFunc {
	prefix := base + "/"
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			r := c.Request()
			if rest, ok := strings.CutPrefix(r.URL.Path, prefix); ok {
				seg, tail, _ := strings.Cut(rest, "/")
				if name, ok := endpointNames[strings.ToLower(seg)]; ok && name != seg {
					r.URL.Path = prefix + name
					if tail != "" {
						r.URL.Path += "/" + tail
					}
					r.URL.RawPath = ""
				}
			}
			return next(c)
		}
	}
}

// routes is the SCIM API surface.
func (s *Server) routes(g *echo.Group) {
	users := &resourceAPI{s: s, typ: s.store.UserType(),
		create: s.store.CreateUser, get: func(id string, _ bool) (*store.Resource, error) { return s.store.GetUser(id) },
		replace: s.store.ReplaceUser, patch: s.store.PatchUser, delete: s.store.DeleteUser, list: s.store.ListUsers}
	groups := &resourceAPI{s: s, typ: s.store.GroupType(),
		create: s.store.CreateGroup, get: s.store.GetGroup,
		replace: s.store.ReplaceGroup, patch: s.store.PatchGroup, delete: s.store.DeleteGroup, list: s.store.ListGroups}
	for _, r := range []*resourceAPI{users, groups} {
		p := r.typ.Endpoint
		g.GET(p, r.listHandler)
		g.POST(p, r.createHandler)
		g.GET(p+"/:id", r.getHandler)
		g.PUT(p+"/:id", r.replaceHandler)
		g.PATCH(p+"/:id", r.patchHandler)
		g.DELETE(p+"/:id", r.deleteHandler)
		g.POST(p+"/.search", notImplemented("POST "+p+"/.search"))
		g.Match(otherMethods(http.MethodGet, http.MethodPost), p, methodNotAllowed(http.MethodGet, http.MethodPost))
		g.Match(otherMethods(http.MethodGet, http.MethodPut, http.MethodPatch, http.MethodDelete), p+"/:id",
			methodNotAllowed(http.MethodGet, http.MethodPut, http.MethodPatch, http.MethodDelete))
	}
	g.POST("/.search", notImplemented("POST /.search"))
	for _, p := range []string{"/ServiceProviderConfig", "/ResourceTypes", "/ResourceTypes/:id", "/Schemas", "/Schemas/:id"} {
		g.Match([]string{http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}, p, readOnly)
	}
	g.GET("/ServiceProviderConfig", s.serviceProviderConfig, noFilter)
	g.GET("/ResourceTypes", s.resourceTypes, noFilter)
	g.GET("/ResourceTypes/:id", s.resourceType, noFilter)
	g.GET("/Schemas", s.schemas, noFilter)
	g.GET("/Schemas/:id", s.schema, noFilter)
	g.POST("/Bulk", notImplemented("Bulk"))
	// The authenticated subject's alias (RFC 7644 §3.11): an IdP's
	// credential is no user of the app, so it is not implemented (501).
	g.Any("/Me", notImplemented("/Me"))
	g.Any("/Me/*", notImplemented("/Me"))
}

// allMethods are the methods a route can be asked for.
var allMethods = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
	http.MethodDelete, http.MethodOptions}

// otherMethods returns allMethods except the given ones.
func otherMethods(allowed ...string) []string {
	var out []string
	for _, m := range allMethods {
		if !slices.Contains(allowed, m) {
			out = append(out, m)
		}
	}
	return out
}

// methodNotAllowed answers 405 with the Allow header (RFC 9110 §15.5.6).
func methodNotAllowed(allowed ...string) echo.HandlerFunc {
	allow := strings.Join(allowed, ", ")
	return func(c echo.Context) error {
		c.Response().Header().Set(echo.HeaderAllow, allow)
		return scim.Errorf(http.StatusMethodNotAllowed, "", "%s is not allowed on %s: use %s",
			c.Request().Method, c.Request().URL.Path, allow)
	}
}

// noFilter refuses a filter on a discovery endpoint with 403, as RFC 7644
// §4 says, so a client cannot take the full answer for a filtered one.
func noFilter(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if c.QueryParam("filter") != "" {
			return scim.Errorf(http.StatusForbidden, "", "filtering is not allowed on %s (RFC 7644 §4): GET it without a filter",
				c.Request().URL.Path)
		}
		return next(c)
	}
}

func readOnly(c echo.Context) error {
	c.Response().Header().Set(echo.HeaderAllow, http.MethodGet)
	return scim.Errorf(http.StatusMethodNotAllowed, "", "%s is read-only: only GET is allowed", c.Request().URL.Path)
}

func notImplemented(what string) echo.HandlerFunc {
	return func(echo.Context) error {
		return scim.Errorf(http.StatusNotImplemented, "", "%s is not supported by scimgate (see /ServiceProviderConfig)", what)
	}
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.echo.ServeHTTP(w, r) }

// LastRequest returns when the last authenticated SCIM request arrived.
func (s *Server) LastRequest() time.Time {
	if n := s.lastRequest.Load(); n != 0 {
		return time.Unix(0, n).UTC()
	}
	return time.Time{}
}

// observe records metrics and logs one line per request: method, route
// pattern and status, never the URL query (filters carry emails).
func (s *Server) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			c.Error(err) // render now so the status is known
		}
		status := c.Response().Status
		route := c.Path()
		if route == "" {
			route = "unmatched"
		}
		method := c.Request().Method
		s.metrics.observe(method, route, status, time.Since(start))
		s.recent.add(recentEntry(c, start, method, route, status))
		if status != http.StatusUnauthorized && status < 500 && c.Get(ctxClientKey) != nil {
			s.lastRequest.Store(time.Now().UnixNano())
		}
		level := slog.LevelDebug
		if status >= 500 {
			level = slog.LevelWarn
		}
		s.logger.Log(c.Request().Context(), level, "request", logKeyMethod, method, logKeyRoute, route, logKeyStatus, status,
			"duration_ms", float64(time.Since(start).Microseconds())/1000)
		return nil
	}
}

// errorHandler renders every error as a SCIM Error message (RFC 7644
// §3.12). Internal errors are logged here and only here; clients see
// "internal error".
func (s *Server) errorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	se := s.toSCIM(err, c)
	c.Response().Header().Set(echo.HeaderContentType, scim.MediaType)
	if err := c.JSON(se.Status, se); err != nil {
		s.logger.Error("write error response", logKeyErr, err)
	}
}

// toSCIM is the one place an error becomes a status.
func (s *Server) toSCIM(err error, c echo.Context) *scim.Error {
	var se *scim.Error
	var he *echo.HTTPError
	switch {
	case errors.As(err, &se):
		return se
	case errors.As(err, &he):
		switch he.Code {
		case http.StatusRequestEntityTooLarge:
			return scim.Errorf(he.Code, "", "request body is larger than the %d-byte limit (scim.limits.max_body_bytes)", s.cfg().Limits.MaxBodyBytes)
		case http.StatusNotFound:
			return scim.Errorf(he.Code, "", "no endpoint at %s: scimgate serves SCIM under %s", c.Request().URL.Path, s.base)
		case http.StatusMethodNotAllowed:
			return scim.Errorf(he.Code, "", "%s is not allowed on %s", c.Request().Method, c.Request().URL.Path)
		}
		return scim.Errorf(he.Code, "", "%v", he.Message)
	case errors.Is(err, store.ErrNotFound):
		return scim.Errorf(http.StatusNotFound, "", "%s %q not found: it does not exist in scimgate (deleted, or never provisioned)",
			strings.TrimSuffix(strings.TrimPrefix(routeResource(c), "/"), "s"), c.Param("id"))
	case errors.Is(err, store.ErrVersionMismatch):
		return scim.Errorf(http.StatusPreconditionFailed, "", "If-Match %s does not match the current version; GET the resource and retry",
			c.Request().Header.Get("If-Match"))
	case errors.Is(err, store.ErrInvalidQuery):
		return scim.Errorf(http.StatusBadRequest, scim.InvalidValue, "%v", err)
	}
	var pe *panicError
	if errors.As(err, &pe) || errors.Is(err, store.ErrInternal) {
		return scim.Errorf(http.StatusInternalServerError, "", "internal error: the request was not applied")
	}
	// Anything else came from the database (disk full, I/O error, closed
	// for shutdown): nothing was acknowledged, and the IdP should retry.
	s.logger.ErrorContext(c.Request().Context(), "request failed", logKeyMethod, c.Request().Method, logKeyRoute, c.Path(), logKeyErr, err)
	c.Response().Header().Set("Retry-After", "5")
	return scim.Errorf(http.StatusServiceUnavailable, "",
		"scimgate could not read or write its database, so the request was not applied; retry later (the operator sees the cause in the gateway's log)")
}

// panicError is a panic recovered in a handler: a bug, reported as 500.
type panicError struct{ v any }

func (e *panicError) Error() string { return fmt.Sprintf("panic: %v", e.v) }

func routeResource(c echo.Context) string {
	p := c.Path()
	for _, ep := range []string{"/Users", "/Groups"} {
		if strings.Contains(p, ep) {
			return ep
		}
	}
	return "resource"
}

// decode reads a JSON object body. application/scim+json and
// application/json are accepted with any charset (Okta sends both), as is
// a missing Content-Type; anything else is 415.
func decode(c echo.Context, maxDepth int) (map[string]any, error) {
	body, err := readBody(c)
	if err != nil {
		return nil, err
	}
	// One linear pass refuses documents deeper than the limit, invalid
	// UTF-8 and unpaired surrogates before anything is decoded.
	return scim.DecodeObject(body, maxDepth)
}

// readBody checks the content type and reads the whole body.
func readBody(c echo.Context) ([]byte, error) {
	if ct := c.Request().Header.Get(echo.HeaderContentType); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || !(mt == scim.MediaType || mt == echo.MIMEApplicationJSON || strings.HasSuffix(mt, "+json") || mt == "text/json") {
			return nil, scim.Errorf(http.StatusUnsupportedMediaType, "",
				"unsupported Content-Type %q: send application/scim+json or application/json", ct)
		}
	}
	body, err := io.ReadAll(c.Request().Body)
	if err != nil {
		var he *echo.HTTPError
		if errors.As(err, &he) {
			return nil, he
		}
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, echo.NewHTTPError(http.StatusRequestEntityTooLarge)
		}
		return nil, scim.Errorf(http.StatusBadRequest, scim.InvalidSyntax, "could not read request body: %v", err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, scim.Errorf(http.StatusBadRequest, scim.InvalidSyntax, "request body is empty: send a JSON object")
	}
	return body, nil
}

// render writes v as application/scim+json (exactly: strict clients
// reject a charset parameter).
func render(c echo.Context, status int, v any) error {
	c.Response().Header().Set(echo.HeaderContentType, scim.MediaType)
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode response: %w", err)
	}
	return c.Blob(status, scim.MediaType, b)
}

// baseURL is the absolute URL of the SCIM base path as the client sees it.
func (s *Server) baseURL(c echo.Context) string {
	if u := s.cfg().PublicURL; u != "" {
		return strings.TrimSuffix(u, "/")
	}
	return c.Scheme() + "://" + c.Request().Host + s.base
}
