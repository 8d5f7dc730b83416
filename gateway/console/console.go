// Package console is the operator's web console on the admin listener:
// server-rendered pages (html/template, embedded) that show whether
// provisioning is healthy and, when it is not, what failed and the buttons
// to fix it. It reads without JavaScript and serves none.
//
// Security: a page opens with a session cookie (set by signing in with an
// admin token: HttpOnly, SameSite=Strict, Secure when the request came over
// TLS, with an expiry) or with "Authorization: Bearer <admin token>". Every
// state-changing request is a POST; a session's POST carries its CSRF token.
// Responses forbid framing and inline script. The SCIM and app API tokens
// open nothing here. Every action is logged with the session's id (a hash,
// never the cookie) and what it did.
package console

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/scimgate/scimgate/gateway/scim"
	"github.com/scimgate/scimgate/gateway/store"
	"github.com/scimgate/scimgate/mapping"
	"github.com/scimgate/scimgate/outbox"
)

//go:embed templates/*.html static/*
var files embed.FS

// CookieName is the session cookie.
const CookieName = "scimgate_console"

// SessionTTL is how long a sign-in lasts.
const SessionTTL = 8 * time.Hour

// PageSize is how many dead letters or users a page lists.
const PageSize = 50

// Request is one SCIM request in Recent activity: no bodies, no query.
type Request struct {
	At         time.Time
	Method     string
	Path       string // the route pattern, e.g. /scim/v2/Users/:id
	Status     int
	Duration   time.Duration
	ResourceID string
	// Version is the resource's version after the request (from its ETag;
	// 0: none, e.g. a read, a delete or a failure).
	Version uint64
}

// Deps are what the console reads and acts on.
type Deps struct {
	Store      *store.Store
	Dispatcher *outbox.Dispatcher
	// Mapper returns the mapping in force (reload swaps it); nil: none.
	Mapper func() *mapping.Mapper
	// AdminToken reports whether tok is one of admin.tokens now.
	AdminToken func(tok string) bool
	// LastRequest is when the last authenticated SCIM request arrived.
	LastRequest func() time.Time
	// Recent returns the last SCIM requests, newest first (nil: not kept).
	Recent func() []Request
	// Feed reads the retained events, for a user's history (nil: none).
	Feed    *outbox.Feed
	Logger  *slog.Logger
	Version string
	// Now is the clock (tests); nil: time.Now.
	Now func() time.Time
	// SignIn limits failed sign-ins per address (nil: no limit).
	SignIn SignInLimiter
}

// SignInLimiter limits failed sign-ins: Wait says how long r's client must
// wait before it may try again (0: now); Failed charges it with a failure.
type SignInLimiter interface {
	Wait(r *http.Request) time.Duration
	Failed(r *http.Request)
}

// Console is the handler.
type Console struct {
	d     Deps
	mux   *http.ServeMux
	pages map[string]*template.Template

	mu       sync.Mutex
	sessions map[string]*session // by the sha256 of the cookie value

	rates rates // delivered counts per minute, for the overview's chart
}

type session struct {
	id      string // short, for logs
	csrf    string
	expires time.Time
}

// Paths are the patterns the console serves; the admin listener mounts
// the console on each, so that its own routes (/admin/, /v1/, /healthz, …)
// keep their paths and their answers.
var Paths = []string{"/{$}", "/signin", "/signout", "/static/", "/targets/", "/users", "/users/", "/groups", "/groups/", "/map", "/activity"}

var funcs = template.FuncMap{
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return roundDur(time.Since(t)) + " ago"
	},
	"dur":  roundDur,
	"time": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") },
	"add":  func(a, b int) int { return a + b },
}

func roundDur(d time.Duration) string {
	switch {
	case d <= 0:
		return "0s"
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	default:
		return d.Round(time.Minute).String()
	}
}

// New builds the console.
func New(d Deps) *Console {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Console{d: d, mux: http.NewServeMux(), pages: map[string]*template.Template{}, sessions: map[string]*session{}}
	base := template.Must(template.New("layout.html").Funcs(funcs).ParseFS(files, "templates/layout.html"))
	names, _ := fs.Glob(files, "templates/*.html")
	for _, n := range names {
		name := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if name == "layout" {
			continue
		}
		c.pages[name] = template.Must(template.Must(base.Clone()).ParseFS(files, n))
	}
	static, _ := fs.Sub(files, "static")
	c.mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	c.mux.HandleFunc("GET /signin", c.signinForm)
	c.mux.HandleFunc("POST /signin", c.signin)
	c.mux.HandleFunc("POST /signout", c.auth(c.signout))
	c.mux.HandleFunc("GET /{$}", c.auth(c.overview))
	c.mux.HandleFunc("GET /targets/{target}", c.auth(c.target))
	c.mux.HandleFunc("GET /targets/{target}/dead-letters/{id}", c.auth(c.deadLetter))
	c.mux.HandleFunc("GET /targets/{target}/pending/{position}", c.auth(c.pendingEvent))
	c.mux.HandleFunc("GET /targets/{target}/dead-letters/{id}/discard", c.auth(c.confirmDiscard))
	c.mux.HandleFunc("POST /targets/{target}/dead-letters/{id}/{action}", c.auth(c.deadLetterAction))
	c.mux.HandleFunc("GET /targets/{target}/discard", c.auth(c.confirmDiscard))
	c.mux.HandleFunc("POST /targets/{target}/{action}", c.auth(c.targetAction))
	c.mux.HandleFunc("GET /users", c.auth(c.users))
	c.mux.HandleFunc("GET /users/{id}", c.auth(c.user))
	c.mux.HandleFunc("GET /groups", c.auth(c.groups))
	c.mux.HandleFunc("GET /groups/{id}", c.auth(c.group))
	c.mux.HandleFunc("GET /map", c.auth(c.mapForm))
	c.mux.HandleFunc("POST /map", c.auth(c.mapPreview))
	c.mux.HandleFunc("GET /activity", c.auth(c.activity))
	return c
}

// ServeHTTP implements http.Handler: every answer carries the headers that
// forbid framing, inline script and sniffing.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	c.mux.ServeHTTP(w, r)
}

// caller is who made a request: a session, or a bearer token.
type caller struct {
	id   string // the session id for logs, or "bearer"
	csrf string // "" for a bearer token
}

func (c *Console) auth(next func(http.ResponseWriter, *http.Request, caller)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if h := r.Header.Get("Authorization"); h != "" {
			scheme, tok, _ := strings.Cut(h, " ")
			if !strings.EqualFold(scheme, "bearer") || !c.d.AdminToken(strings.TrimSpace(tok)) {
				w.Header().Set("WWW-Authenticate", `Bearer realm="scimgate-admin"`)
				http.Error(w, "invalid admin token: the token presented is not one of admin.tokens", http.StatusUnauthorized)
				return
			}
			next(w, r, caller{id: "bearer"})
			return
		}
		s := c.session(r)
		if s == nil {
			if r.Method == http.MethodGet {
				http.Redirect(w, r, "/signin?next="+urlEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			http.Error(w, "sign in first: your session is missing or expired", http.StatusUnauthorized)
			return
		}
		if r.Method == http.MethodPost {
			got := r.PostFormValue("csrf")
			if got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(s.csrf)) != 1 {
				c.d.Logger.Warn("console: POST refused without a valid CSRF token", "session", s.id, "path", r.URL.Path)
				c.render(w, http.StatusForbidden, "error", caller{id: s.id, csrf: s.csrf}, map[string]any{"Status": http.StatusForbidden,
					"Message": "Refused: the form's CSRF token is missing or wrong; reload the page and try again."})
				return
			}
		}
		next(w, r, caller{id: s.id, csrf: s.csrf})
	}
}

func urlEscape(s string) string {
	return strings.NewReplacer("%", "%25", "&", "%26", "#", "%23", "+", "%2B", "?", "%3F", " ", "%20").Replace(s)
}

func hashKey(v string) string {
	sum := sha256.Sum256([]byte(v))
	return hex.EncodeToString(sum[:])
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (c *Console) session(r *http.Request) *session {
	ck, err := r.Cookie(CookieName)
	if err != nil || ck.Value == "" {
		return nil
	}
	key := hashKey(ck.Value)
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.sessions[key]
	if s == nil {
		return nil
	}
	if !c.d.Now().Before(s.expires) {
		delete(c.sessions, key)
		return nil
	}
	return s
}

func (c *Console) signinForm(w http.ResponseWriter, r *http.Request) {
	c.render(w, http.StatusOK, "signin", caller{}, map[string]any{"Next": safeNext(r.URL.Query().Get("next"))})
}

// safeNext keeps a redirect after sign-in on this site.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.Contains(next, `\`) {
		return "/"
	}
	return next
}

func (c *Console) signin(w http.ResponseWriter, r *http.Request) {
	tok := strings.TrimSpace(r.PostFormValue("token"))
	next := safeNext(r.PostFormValue("next"))
	if c.d.SignIn != nil {
		if wait := c.d.SignIn.Wait(r); wait > 0 {
			secs := int(math.Ceil(wait.Seconds()))
			c.d.Logger.Warn("console: sign-in refused: too many failed sign-ins", "remote", r.RemoteAddr, "retry_after_s", secs)
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			c.render(w, http.StatusTooManyRequests, "signin", caller{}, map[string]any{"Next": next,
				"Error": fmt.Sprintf("Too many failed sign-ins from your address: try again in %d s.", secs)})
			return
		}
	}
	if tok == "" || !c.d.AdminToken(tok) {
		if c.d.SignIn != nil {
			c.d.SignIn.Failed(r)
		}
		c.d.Logger.Warn("console: sign-in refused", "remote", r.RemoteAddr)
		c.render(w, http.StatusUnauthorized, "signin", caller{}, map[string]any{"Next": next,
			"Error": "That is not an admin token (admin.tokens, SCIMGATE_ADMIN_TOKEN). SCIM and app API tokens do not open the console."})
		return
	}
	c.purge()
	value := randomHex(32)
	s := &session{id: randomHex(4), csrf: randomHex(32), expires: c.d.Now().Add(SessionTTL)}
	c.mu.Lock()
	c.sessions[hashKey(value)] = s
	c.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: value, Path: "/", Expires: s.expires, MaxAge: int(SessionTTL.Seconds()),
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	c.d.Logger.Info("console: signed in", "session", s.id, "remote", r.RemoteAddr)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// purge drops expired sessions.
func (c *Console) purge() {
	now := c.d.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, s := range c.sessions {
		if !now.Before(s.expires) {
			delete(c.sessions, k)
		}
	}
}

func (c *Console) signout(w http.ResponseWriter, r *http.Request, who caller) {
	if ck, err := r.Cookie(CookieName); err == nil {
		c.mu.Lock()
		delete(c.sessions, hashKey(ck.Value))
		c.mu.Unlock()
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	c.d.Logger.Info("console: signed out", "session", who.id)
	http.Redirect(w, r, "/signin", http.StatusSeeOther)
}

// render writes a page; data is the page's own, under .Page.
func (c *Console) render(w http.ResponseWriter, status int, page string, who caller, data any) {
	t := c.pages[page]
	var buf strings.Builder
	err := t.ExecuteTemplate(&buf, "layout.html", map[string]any{"Page": data, "CSRF": who.csrf, "SignedIn": who.id != "",
		"Session": who.csrf != "", "Version": c.d.Version, "Name": page})
	if err != nil {
		c.d.Logger.Error("console: render failed", "page", page, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(buf.String()))
}

func (c *Console) fail(w http.ResponseWriter, who caller, err error) {
	status := http.StatusInternalServerError
	msg := "internal error"
	switch {
	case errors.Is(err, outbox.ErrUnknownTarget), errors.Is(err, outbox.ErrNotFound), errors.Is(err, store.ErrNotFound):
		status, msg = http.StatusNotFound, err.Error()
	case errors.Is(err, outbox.ErrConflict):
		status, msg = http.StatusConflict, err.Error()
	case errors.Is(err, outbox.ErrInvalidArgument):
		status, msg = http.StatusBadRequest, err.Error()
	default:
		var se *scim.Error
		if errors.As(err, &se) {
			status, msg = se.Status, se.Detail
		} else {
			c.d.Logger.Error("console: request failed", "session", who.id, "err", err)
		}
	}
	c.render(w, status, "error", who, map[string]any{"Status": status, "Message": msg})
}

// ---- overview

type targetView struct {
	outbox.TargetStatus
	State string // delivering, retrying, paused, idle
	Bad   bool
	Rate  chart // deliveries per minute over the last hour (overview)
}

func stateOf(t outbox.TargetStatus) (string, bool) {
	switch {
	case t.Paused:
		return "paused", true
	case t.DeadLetters > 0:
		return "dead letters", true
	case t.LastError != "" && t.LastErrorAt.After(t.LastSuccess) && t.Backlog > 0:
		return "retrying", true
	case t.Backlog > 0:
		return "delivering", false
	default:
		return "up to date", false
	}
}

func (c *Console) overview(w http.ResponseWriter, r *http.Request, who caller) {
	st, err := c.d.Store.Stats()
	if err != nil {
		c.fail(w, who, err)
		return
	}
	ts, err := c.d.Dispatcher.Status()
	if err != nil {
		c.fail(w, who, err)
		return
	}
	var views []targetView
	var problems []string
	now := c.d.Now()
	for _, t := range ts {
		state, bad := stateOf(t)
		c.rates.observe(t.Name, now, t.Delivered)
		views = append(views, targetView{TargetStatus: t, State: state, Bad: bad, Rate: c.rates.chart(t.Name, now)})
		if bad {
			problems = append(problems, fmt.Sprintf("%s: %s", t.Name, state))
		}
	}
	if !c.d.Dispatcher.Ready() {
		problems = append([]string{"delivery is not running"}, problems...)
	}
	if err := c.d.Dispatcher.Healthy(); err != nil {
		problems = append([]string{err.Error()}, problems...)
	}
	var recent []Request
	if c.d.Recent != nil {
		recent = c.d.Recent()
		if len(recent) > 5 {
			recent = recent[:5]
		}
	}
	c.render(w, http.StatusOK, "overview", who, map[string]any{
		"Healthy": len(problems) == 0, "Problems": strings.Join(problems, "; "), "Stats": st,
		"Inactive": st.Users - st.ActiveUsers, "LastRequest": c.d.LastRequest(), "Targets": views, "Recent": recent,
	})
}

// ---- a target

func (c *Console) target(w http.ResponseWriter, r *http.Request, who caller) {
	name := r.PathValue("target")
	ts, err := c.d.Dispatcher.Status()
	if err != nil {
		c.fail(w, who, err)
		return
	}
	var tv *targetView
	for _, t := range ts {
		if t.Name == name {
			state, bad := stateOf(t)
			tv = &targetView{TargetStatus: t, State: state, Bad: bad}
		}
	}
	if tv == nil {
		c.fail(w, who, fmt.Errorf("%w %q", outbox.ErrUnknownTarget, name))
		return
	}
	after, _ := strconv.ParseUint(r.URL.Query().Get("after"), 10, 64)
	list, err := c.d.Dispatcher.DeadLetters(name, after, PageSize+1)
	if err != nil {
		c.fail(w, who, err)
		return
	}
	var next uint64
	if len(list) > PageSize {
		list = list[:PageSize]
		next = list[PageSize-1].Position
	}
	pafter, _ := strconv.ParseUint(r.URL.Query().Get("pafter"), 10, 64)
	pending, err := c.d.Dispatcher.Pending(name, pafter, PageSize+1)
	if err != nil {
		c.fail(w, who, err)
		return
	}
	var pnext uint64
	if len(pending) > PageSize {
		pending = pending[:PageSize]
		pnext = pending[PageSize-1].Position
	}
	c.render(w, http.StatusOK, "target", who, map[string]any{"T": tv, "Dead": list, "Next": next, "After": after,
		"Pending": pending, "PNext": pnext, "PAfter": pafter, "Now": c.d.Now(), "Message": r.URL.Query().Get("done")})
}

// pendingEvent shows one pending event: the event, its attempts so far
// and when it is tried next.
func (c *Console) pendingEvent(w http.ResponseWriter, r *http.Request, who caller) {
	pos, err := strconv.ParseUint(r.PathValue("position"), 10, 64)
	if err != nil {
		c.render(w, http.StatusBadRequest, "error", who, map[string]any{"Status": 400, "Message": "not a position: " + r.PathValue("position")})
		return
	}
	p, err := c.d.Dispatcher.PendingAt(r.PathValue("target"), pos)
	if err != nil {
		c.fail(w, who, err)
		return
	}
	c.render(w, http.StatusOK, "pending", who, map[string]any{"P": p, "Event": indentJSON(p.Event)})
}

func (c *Console) deadLetter(w http.ResponseWriter, r *http.Request, who caller) {
	dl, err := c.d.Dispatcher.DeadLetter(r.PathValue("target"), r.PathValue("id"))
	if err != nil {
		c.fail(w, who, err)
		return
	}
	c.render(w, http.StatusOK, "deadletter", who, map[string]any{"D": dl, "Event": indentJSON(dl.Event),
		"Response": prettyBody(dl.ResponseBody)})
}

func (c *Console) confirmDiscard(w http.ResponseWriter, r *http.Request, who caller) {
	c.render(w, http.StatusOK, "confirm", who, map[string]any{"Target": r.PathValue("target"), "ID": r.PathValue("id")})
}

// deadLetterAction replays or discards one dead letter.
func (c *Console) deadLetterAction(w http.ResponseWriter, r *http.Request, who caller) {
	target, id, action := r.PathValue("target"), r.PathValue("id"), r.PathValue("action")
	var n int
	var err error
	switch action {
	case "replay":
		n, err = c.d.Dispatcher.Replay(target, []string{id})
	case "discard":
		if r.PostFormValue("confirm") != "yes" {
			c.render(w, http.StatusBadRequest, "error", who, map[string]any{"Status": 400, "Message": "discard needs the confirmation: tick the box and press Discard"})
			return
		}
		n, err = c.d.Dispatcher.Discard(target, []string{id})
	default:
		c.render(w, http.StatusNotFound, "error", who, map[string]any{"Status": 404, "Message": "no such action: " + action})
		return
	}
	if err != nil {
		c.fail(w, who, err)
		return
	}
	c.d.Logger.Info("console: action", "session", who.id, "action", action, "target", target, "event", id, "count", n)
	http.Redirect(w, r, "/targets/"+urlEscape(target)+"?done="+urlEscape(fmt.Sprintf("%s: %d dead letter(s)", action, n)), http.StatusSeeOther)
}

// targetAction: retry, replay (all), discard (all, confirmed), pause,
// resume, backfill.
func (c *Console) targetAction(w http.ResponseWriter, r *http.Request, who caller) {
	target, action := r.PathValue("target"), r.PathValue("action")
	d := c.d.Dispatcher
	var msg string
	var err error
	switch action {
	case "retry":
		var n int
		n, err = d.RetryNow(target, nil)
		msg = fmt.Sprintf("retry: %d pending event(s) due now", n)
	case "replay":
		var n int
		n, err = d.Replay(target, nil)
		msg = fmt.Sprintf("replay: %d dead letter(s)", n)
	case "discard":
		if r.PostFormValue("confirm") != "yes" {
			c.render(w, http.StatusBadRequest, "error", who, map[string]any{"Status": 400, "Message": "discard needs the confirmation: tick the box and press Discard"})
			return
		}
		var n int
		n, err = d.Discard(target, nil)
		msg = fmt.Sprintf("discard: %d dead letter(s)", n)
	case "pause":
		err = d.Pause(target, "paused from the console")
		msg = "paused"
	case "resume":
		var n int
		n, err = d.ResumeRetry(target)
		msg = fmt.Sprintf("resumed: %d pending event(s) due now", n)
	case "backfill":
		var st outbox.BackfillStatus
		st, err = d.Backfill(target)
		msg = fmt.Sprintf("backfill %s: %d snapshot event(s)", st.State, st.Total)
	default:
		c.render(w, http.StatusNotFound, "error", who, map[string]any{"Status": 404, "Message": "no such action: " + action})
		return
	}
	if err != nil {
		c.fail(w, who, err)
		return
	}
	c.d.Logger.Info("console: action", "session", who.id, "action", action, "target", target, "result", msg)
	http.Redirect(w, r, "/targets/"+urlEscape(target)+"?done="+urlEscape(msg), http.StatusSeeOther)
}

func indentJSON(v any) string {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

func prettyRaw(raw []byte) string {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return string(raw)
	}
	return indentJSON(v)
}

func prettyBody(s string) string {
	if s == "" {
		return ""
	}
	return prettyRaw([]byte(s))
}
