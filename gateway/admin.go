package gateway

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	bolt "go.etcd.io/bbolt"

	"github.com/scimgate/scimgate/gateway/console"
	"github.com/scimgate/scimgate/gateway/store"
	"github.com/scimgate/scimgate/outbox"
)

// AdminConfig is the `admin:` section: the operator's listener.
type AdminConfig struct {
	// Listen is the admin address (SCIMGATE_ADMIN_LISTEN, "127.0.0.1:8081").
	Listen string `yaml:"listen"`
	// Tokens are accepted for /admin/ (same forms as SCIM tokens).
	Tokens []string `yaml:"tokens"`
	// ReadTimeout, WriteTimeout and IdleTimeout bound the admin listener's
	// connections as the SCIM listener's limits do; a backup stream and a
	// long poll extend their own write deadline.
	ReadTimeout  time.Duration `yaml:"read_timeout"`
	WriteTimeout time.Duration `yaml:"write_timeout"`
	IdleTimeout  time.Duration `yaml:"idle_timeout"`
	// MaxConnections bounds the admin API requests (/admin/ and the app
	// API's pages) served at once; one more gets 503 with Retry-After.
	// Probes and /metrics are never bounded, and /v1/events long polls
	// have their own bound (docs/operations.md, Limits).
	MaxConnections int `yaml:"max_connections"`
	// Console serves the web console under / (default true; false: off).
	Console bool `yaml:"console"`
}

// DefaultAdminConfig returns the admin defaults.
func DefaultAdminConfig() AdminConfig {
	return AdminConfig{Listen: "127.0.0.1:8081", ReadTimeout: 30 * time.Second, WriteTimeout: 2 * time.Minute,
		IdleTimeout: time.Minute, MaxConnections: 256, Console: true}
}

// Validate checks the section; field names are relative to "admin".
func (c *AdminConfig) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fieldErr("listen", ErrInvalid, "%q is not host:port", c.Listen))
	}
	for i, t := range c.Tokens {
		if err := checkSecret(t); err != nil {
			errs = append(errs, fieldErr(fmt.Sprintf("tokens[%d]", i), ErrInvalid, "%v", err))
		}
	}
	for name, v := range map[string]int64{"read_timeout": int64(c.ReadTimeout), "write_timeout": int64(c.WriteTimeout),
		"idle_timeout": int64(c.IdleTimeout), "max_connections": int64(c.MaxConnections)} {
		if v <= 0 {
			errs = append(errs, fieldErr(name, ErrInvalid, "must be positive"))
		}
	}
	return errors.Join(errs...)
}

// Admin serves /healthz, /readyz and /metrics without a token, and the
// operator API under /admin/ behind the admin token.
type Admin struct {
	dbp        atomic.Pointer[bolt.DB] // SetDB replaces it (online compaction)
	store      *store.Store
	scim       *Server
	dispatcher *outbox.Dispatcher
	gatherer   prometheus.Gatherer
	creds      atomic.Pointer[adminCreds] // swapped by Reload
	logger     *slog.Logger
	started    time.Time
	version    string
	mux        *http.ServeMux
	apiMaxWait time.Duration
	feed       *outbox.Feed
	reloadFn   func() ([]string, error)
	compactFn  func(force bool) (store.CompactReport, error)
	console    *console.Console // nil when admin.console is off
}

// AdminDeps are what the admin API reports on.
type AdminDeps struct {
	DB         *bolt.DB
	Store      *store.Store
	SCIM       *Server
	Dispatcher *outbox.Dispatcher
	Gatherer   prometheus.Gatherer
	Logger     *slog.Logger
	Version    string
	// API configures the app's read-only API under /v1/; Feed serves its
	// /v1/events (nil: 503).
	API  APIConfig
	Feed *outbox.Feed
	// Reload applies the configuration again (POST /admin/reload, the same
	// as SIGHUP); it returns what changed, or why the new one was refused.
	Reload func() ([]string, error)
	// Compact compacts the database online (POST /admin/compact); force
	// compacts even a file that is not mostly free.
	Compact func(force bool) (store.CompactReport, error)
}

// NewAdmin builds the admin handler.
func NewAdmin(cfg AdminConfig, d AdminDeps) *Admin {
	a := &Admin{store: d.Store, scim: d.SCIM, dispatcher: d.Dispatcher, gatherer: d.Gatherer, feed: d.Feed, reloadFn: d.Reload, compactFn: d.Compact,
		logger: d.Logger.With("component", "admin"), started: time.Now(), version: d.Version, mux: http.NewServeMux()}
	a.creds.Store(newAdminCreds(cfg, d.API))
	a.dbp.Store(d.DB)
	a.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	a.mux.HandleFunc("GET /readyz", a.readyz)
	a.mux.Handle("GET /metrics", promhttp.HandlerFor(d.Gatherer, promhttp.HandlerOpts{}))
	a.mux.HandleFunc("GET /admin/status", a.auth(a.status))
	a.mux.HandleFunc("GET /admin/targets/{target}/ids", a.auth(a.ids))
	a.mux.HandleFunc("GET /admin/targets/{target}/pending", a.auth(a.pending))
	a.mux.HandleFunc("GET /admin/targets/{target}/pending/{position}", a.auth(a.pendingOne))
	a.mux.HandleFunc("GET /admin/targets/{target}/dead-letters", a.auth(a.deadLetters))
	a.mux.HandleFunc("GET /admin/targets/{target}/dead-letters/{id}", a.auth(a.deadLetter))
	a.mux.HandleFunc("DELETE /admin/targets/{target}/dead-letters/{id}", a.auth(a.discardOne))
	a.mux.HandleFunc("POST /admin/targets/{target}/dead-letters/{id}/replay", a.auth(a.replayOne))
	a.mux.HandleFunc("POST /admin/targets/{target}/replay", a.auth(a.replay))
	a.mux.HandleFunc("POST /admin/targets/{target}/discard", a.auth(a.discard))
	a.mux.HandleFunc("POST /admin/targets/{target}/pause", a.auth(a.pause))
	a.mux.HandleFunc("POST /admin/targets/{target}/resume", a.auth(a.resume))
	a.mux.HandleFunc("POST /admin/targets/{target}/retry", a.auth(a.retry))
	a.mux.HandleFunc("POST /admin/targets/{target}/backfill", a.auth(a.backfill))
	a.mux.HandleFunc("POST /admin/targets/{target}/history", a.auth(a.history))
	a.mux.HandleFunc("POST /admin/reload", a.auth(a.reload))
	a.mux.HandleFunc("POST /admin/compact", a.auth(a.compact))
	a.mux.HandleFunc("POST /admin/remap", a.auth(a.remap))
	a.mux.HandleFunc("POST /admin/remap/preview", a.auth(a.remapPreview))
	a.mux.HandleFunc("GET /admin/backup", a.auth(a.backup))
	a.apiRoutes(d.API)
	if cfg.Console && d.SCIM != nil && d.Dispatcher != nil && d.Store != nil { // the console reads all three
		c := console.New(console.Deps{Store: d.Store, Dispatcher: d.Dispatcher, Logger: a.logger, Version: d.Version,
			Mapper: a.scim.mapper.Load, AdminToken: a.isAdminToken, LastRequest: a.scim.LastRequest, Recent: a.scim.RecentRequests, Feed: d.Feed,
			SignIn: newSignInLimit(a)})
		for _, p := range console.Paths {
			a.mux.Handle(p, c)
		}
		a.console = c
	}
	return a
}

// isAdminToken reports whether tok is one of admin.tokens now.
func (a *Admin) isAdminToken(tok string) bool {
	sum := sha256.Sum256([]byte(tok))
	ok := 0
	for _, t := range a.creds.Load().admin {
		ok |= subtle.ConstantTimeCompare(sum[:], t[:])
	}
	return ok == 1
}

// adminCreds are the token hashes the admin listener accepts.
type adminCreds struct {
	admin, api [][sha256.Size]byte
}

func newAdminCreds(cfg AdminConfig, api APIConfig) *adminCreds {
	c := &adminCreds{}
	for _, t := range cfg.Tokens {
		if strings.TrimSpace(t) != "" {
			c.admin = append(c.admin, hashSecret(t))
		}
	}
	for _, t := range api.Tokens {
		if strings.TrimSpace(t) != "" {
			c.api = append(c.api, hashSecret(t))
		}
	}
	return c
}

// Reload swaps in the admin and app API tokens atomically and returns what
// changed (counts, never values). The listen address is not reloaded.
func (a *Admin) Reload(cfg AdminConfig, api APIConfig) ([]string, error) {
	if err := errors.Join(cfg.Validate(), api.Validate()); err != nil {
		return nil, err
	}
	old, next := a.creds.Load(), newAdminCreds(cfg, api)
	var changes []string
	for _, c := range []struct {
		name string
		a, b [][sha256.Size]byte
	}{{"admin.tokens", old.admin, next.admin}, {"api.tokens", old.api, next.api}} {
		switch {
		case len(c.a) != len(c.b):
			changes = append(changes, fmt.Sprintf("%s: %d → %d", c.name, len(c.a), len(c.b)))
		case !slices.Equal(c.a, c.b):
			changes = append(changes, fmt.Sprintf("%s: changed (%d)", c.name, len(c.b)))
		}
	}
	a.creds.Store(next)
	return changes, nil
}

// SetDB makes the admin API read db from then on (readiness, backups): the
// file an online compaction replaced, opened again.
func (a *Admin) SetDB(db *bolt.DB) { a.dbp.Store(db) }

// ServeHTTP implements http.Handler.
func (a *Admin) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, format string, args ...any) {
	writeJSON(w, status, map[string]string{"error": fmt.Sprintf(format, args...)})
}

func (a *Admin) auth(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
		ok := 0
		tokens := a.creds.Load().admin
		for i := range tokens {
			ok |= subtle.ConstantTimeCompare(sum[:], tokens[i][:])
		}
		if !strings.EqualFold(scheme, "bearer") || ok != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="scimgate-admin"`)
			refuseBody(w)
			if r.Header.Get("Authorization") == "" {
				writeError(w, http.StatusUnauthorized, "admin token required: send \"Authorization: Bearer <admin token>\" (SCIMGATE_ADMIN_TOKEN)")
			} else {
				writeError(w, http.StatusUnauthorized, "invalid admin token: the token presented is not one of admin.tokens (check SCIMGATE_ADMIN_TOKEN)")
			}
			return
		}
		next(w, r)
	}
}

func (a *Admin) readyz(w http.ResponseWriter, r *http.Request) {
	var problems []string
	if err := a.dbp.Load().View(func(*bolt.Tx) error { return nil }); err != nil {
		problems = append(problems, "database: "+err.Error())
	}
	if !a.dispatcher.Ready() {
		problems = append(problems, "dispatcher not running")
	}
	if err := a.dispatcher.Healthy(); err != nil { // e.g. a full disk refusing delivery state
		problems = append(problems, err.Error())
	}
	if len(problems) > 0 {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "unavailable", "problems": problems})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// Status is what /admin/status returns.
type Status struct {
	Version         string                `json:"version"`
	StartedAt       time.Time             `json:"started_at"`
	LastSCIMRequest time.Time             `json:"last_scim_request,omitzero"`
	LastSCIMChange  time.Time             `json:"last_scim_change,omitzero"`
	Users           int                   `json:"users"`
	ActiveUsers     int                   `json:"active_users"`
	Groups          int                   `json:"groups"`
	Targets         []outbox.TargetStatus `json:"targets"`
	// SCIMLimits are the SCIM request limits in force (scim.limits keys).
	SCIMLimits map[string]int64 `json:"scim_limits"`
	// Remap is the mapping in force, the last pass that applied a mapping
	// change to the stored records (its progress while it runs), and the
	// resources the mapping rejects (they keep their last good record).
	Remap store.RemapStatus `json:"remap"`
}

func (a *Admin) status(w http.ResponseWriter, r *http.Request) {
	st, err := a.store.Stats()
	if err != nil {
		a.internal(w, "status", err)
		return
	}
	targets, err := a.dispatcher.Status()
	if err != nil {
		a.internal(w, "status", err)
		return
	}
	writeJSON(w, http.StatusOK, Status{
		Version: a.version, StartedAt: a.started.UTC(), LastSCIMRequest: a.scim.LastRequest(), LastSCIMChange: st.LastChange,
		Users: st.Users, ActiveUsers: st.ActiveUsers, Groups: st.Groups, Targets: targets, SCIMLimits: a.scim.Limits(),
		Remap: a.store.RemapStatus(),
	})
}

func (a *Admin) internal(w http.ResponseWriter, what string, err error) {
	a.logger.Error("admin request failed", "op", what, "err", err)
	writeError(w, http.StatusInternalServerError, "internal error")
}

// outboxErr maps dispatcher errors to statuses.
func (a *Admin) outboxErr(w http.ResponseWriter, what string, err error) {
	switch {
	case errors.Is(err, outbox.ErrUnknownTarget):
		writeError(w, http.StatusNotFound, "%v", err)
	case errors.Is(err, outbox.ErrNotFound):
		writeError(w, http.StatusNotFound, "%v", err)
	case errors.Is(err, outbox.ErrConflict):
		writeError(w, http.StatusConflict, "%v", err)
	case errors.Is(err, outbox.ErrInvalidArgument):
		writeError(w, http.StatusBadRequest, "%v", err)
	default:
		a.internal(w, what, err)
	}
}

func (a *Admin) deadLetters(w http.ResponseWriter, r *http.Request) {
	after, _ := strconv.ParseUint(r.URL.Query().Get("after"), 10, 64)
	limit, err := strconv.Atoi(r.URL.Query().Get("limit"))
	if err != nil || limit <= 0 || limit > 1000 {
		limit = 100
	}
	list, err := a.dispatcher.DeadLetters(r.PathValue("target"), after, limit)
	if err != nil {
		a.outboxErr(w, "dead letters", err)
		return
	}
	if list == nil {
		list = []outbox.DeadLetter{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"dead_letters": list})
}

func (a *Admin) deadLetter(w http.ResponseWriter, r *http.Request) {
	dl, err := a.dispatcher.DeadLetter(r.PathValue("target"), r.PathValue("id"))
	if err != nil {
		a.outboxErr(w, "dead letter", err)
		return
	}
	writeJSON(w, http.StatusOK, dl)
}

// selection reads the dead letters a bulk replay or discard acts on:
// {"ids": [...]} (at least one) or {"all": true}. Anything else — an
// empty body, {}, {"ids": []}, a misspelt field — is refused, so a typo
// can never act on every dead letter.
func selection(r *http.Request, verb string) (ids []string, all bool, err error) {
	var body struct {
		IDs *[]string `json:"ids"`
		All bool      `json:"all"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	usage := fmt.Sprintf(`send {"ids": ["evt_…", …]} to %s those dead letters, or {"all": true} to %s every one`, verb, verb)
	if err := dec.Decode(&body); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, false, fmt.Errorf("the body is empty: %s", usage)
		}
		return nil, false, fmt.Errorf("%v: %s", err, usage)
	}
	if dec.More() {
		return nil, false, fmt.Errorf("data after the JSON object: %s", usage)
	}
	switch {
	case body.All && body.IDs != nil:
		return nil, false, fmt.Errorf(`"ids" and "all" together: %s`, usage)
	case body.All:
		return nil, true, nil
	case body.IDs == nil:
		return nil, false, fmt.Errorf("no dead letters selected: %s", usage)
	case len(*body.IDs) == 0:
		return nil, false, fmt.Errorf(`"ids" is empty: %s`, usage)
	}
	for _, id := range *body.IDs {
		if id == "" {
			return nil, false, fmt.Errorf(`"ids" holds an empty id: %s`, usage)
		}
	}
	return *body.IDs, false, nil
}

func (a *Admin) replay(w http.ResponseWriter, r *http.Request) {
	ids, _, err := selection(r, "replay")
	if err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	a.replayIDs(w, r.PathValue("target"), ids) // all: ids is nil
}

func (a *Admin) replayOne(w http.ResponseWriter, r *http.Request) {
	a.replayIDs(w, r.PathValue("target"), []string{r.PathValue("id")})
}

func (a *Admin) replayIDs(w http.ResponseWriter, target string, ids []string) {
	n, err := a.dispatcher.Replay(target, ids)
	if err != nil {
		a.outboxErr(w, "replay", err)
		return
	}
	a.logger.Info("dead letters replayed", "target", target, "count", n)
	writeJSON(w, http.StatusOK, map[string]int{"replayed": n})
}

func (a *Admin) discard(w http.ResponseWriter, r *http.Request) {
	ids, _, err := selection(r, "discard")
	if err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	a.discardIDs(w, r.PathValue("target"), ids) // all: ids is nil
}

func (a *Admin) discardOne(w http.ResponseWriter, r *http.Request) {
	a.discardIDs(w, r.PathValue("target"), []string{r.PathValue("id")})
}

func (a *Admin) discardIDs(w http.ResponseWriter, target string, ids []string) {
	n, err := a.dispatcher.Discard(target, ids)
	if err != nil {
		a.outboxErr(w, "discard", err)
		return
	}
	a.logger.Warn("dead letters discarded", "target", target, "count", n)
	writeJSON(w, http.StatusOK, map[string]int{"discarded": n})
}

func (a *Admin) pause(w http.ResponseWriter, r *http.Request) {
	reason := r.URL.Query().Get("reason")
	if reason == "" {
		reason = "paused by operator"
	}
	if err := a.dispatcher.Pause(r.PathValue("target"), reason); err != nil {
		a.outboxErr(w, "pause", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"target": r.PathValue("target"), "paused": true})
}

// resume restarts deliveries and makes every pending event due now.
func (a *Admin) resume(w http.ResponseWriter, r *http.Request) {
	n, err := a.dispatcher.ResumeRetry(r.PathValue("target"))
	if err != nil {
		a.outboxErr(w, "resume", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"target": r.PathValue("target"), "paused": false, "retried": n})
}

// retry makes pending events due now: {"ids": [...]}, or all of them with
// an empty body or {}.
func (a *Admin) retry(w http.ResponseWriter, r *http.Request) {
	var body struct {
		IDs []string `json:"ids"`
	}
	if err := decodeOptional(r, &body); err != nil {
		writeError(w, http.StatusBadRequest, `%v: send {"ids": ["evt_…"]} for some pending events, or {} (or nothing) for all`, err)
		return
	}
	n, err := a.dispatcher.RetryNow(r.PathValue("target"), body.IDs)
	if err != nil {
		a.outboxErr(w, "retry", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"retried": n})
}

// backfill sends the target a snapshot of the current state, then the
// live events after it (202: it runs in the background; status shows it).
func (a *Admin) backfill(w http.ResponseWriter, r *http.Request) {
	st, err := a.dispatcher.Backfill(r.PathValue("target"))
	if err != nil {
		a.outboxErr(w, "backfill", err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"backfill": st})
}

// history re-delivers retained events: {"after": SEQ} or {"since": RFC3339}.
func (a *Admin) history(w http.ResponseWriter, r *http.Request) {
	var body struct {
		After            *uint64 `json:"after"`
		Since            string  `json:"since"`
		IncludeDiscarded bool    `json:"include_discarded"`
	}
	const usage = `send {"after": <sequence>} or {"since": "<RFC 3339 time>"}, optionally with "include_discarded": true`
	if err := decodeOptional(r, &body); err != nil {
		writeError(w, http.StatusBadRequest, "%v: %s", err, usage)
		return
	}
	var since time.Time
	switch {
	case body.After != nil && body.Since != "":
		writeError(w, http.StatusBadRequest, "after and since together: %s", usage)
		return
	case body.After == nil && body.Since == "":
		writeError(w, http.StatusBadRequest, "nothing selected: %s", usage)
		return
	case body.Since != "":
		t, err := time.Parse(time.RFC3339Nano, body.Since)
		if err != nil {
			writeError(w, http.StatusBadRequest, "since %q is not an RFC 3339 time: %s", body.Since, usage)
			return
		}
		since = t
	}
	var after uint64
	if body.After != nil {
		after = *body.After
	}
	res, err := a.dispatcher.ReplayHistoryWith(r.PathValue("target"),
		outbox.HistoryRequest{After: after, Since: since, IncludeDiscarded: body.IncludeDiscarded})
	if err != nil {
		a.outboxErr(w, "history", err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// reload applies the configuration file and environment again.
func (a *Admin) reload(w http.ResponseWriter, r *http.Request) {
	if a.reloadFn == nil {
		writeError(w, http.StatusNotImplemented, "this gateway was started without a configuration to reload")
		return
	}
	changes, err := a.reloadFn()
	if err != nil {
		var problems []string
		var listed interface{ Problems() []string }
		if errors.As(err, &listed) {
			problems = listed.Problems()
		} else {
			for _, e := range flattenErrors(err) {
				problems = append(problems, e.Error())
			}
		}
		writeJSON(w, http.StatusBadRequest, map[string]any{
			"error":    "the new configuration was refused and the running one kept: fix the problems and reload again",
			"problems": problems})
		return
	}
	if changes == nil {
		changes = []string{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"reloaded": true, "changes": changes})
}

// compact rewrites the database without its free pages while serving
// (?force=true even when it is not mostly free).
func (a *Admin) compact(w http.ResponseWriter, r *http.Request) {
	if a.compactFn == nil {
		writeError(w, http.StatusNotImplemented, "this gateway cannot compact its database online")
		return
	}
	force := r.URL.Query().Get("force") == "true"
	// A large file takes a few seconds: no write deadline for this answer.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	rep, err := a.compactFn(force)
	if err != nil {
		a.internal(w, "compact", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"compacted": rep.Compacted, "bytes_before": rep.Before, "bytes_after": rep.After,
		"free_before": rep.Free, "took_seconds": rep.Took.Seconds()})
}

// flattenErrors splits errors.Join trees into their leaves.
func flattenErrors(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flattenErrors(e)...)
		}
		return out
	}
	return []error{err}
}

// decodeOptional decodes a JSON object body with no unknown fields; an
// empty body leaves v as it is.
func decodeOptional(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if dec.More() {
		return errors.New("data after the JSON object")
	}
	return nil
}

// backup streams a consistent copy of the database from one read
// transaction; writes continue meanwhile (bbolt MVCC).
func (a *Admin) backup(w http.ResponseWriter, r *http.Request) {
	// A large file takes as long as it takes: no write deadline for this
	// response (the listener's write_timeout bounds every other one).
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	err := a.dbp.Load().View(func(tx *bolt.Tx) error {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", `attachment; filename="scimgate.db"`)
		w.Header().Set("Content-Length", strconv.FormatInt(tx.Size(), 10))
		_, err := tx.WriteTo(w)
		return err
	})
	if err != nil {
		a.logger.Error("backup failed", "err", err)
	}
}
