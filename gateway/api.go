package gateway

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/scimgate/scimgate/gateway/scim"
	"github.com/scimgate/scimgate/gateway/store"
	"github.com/scimgate/scimgate/outbox"
)

// APIConfig is the `api:` section: the app's read-only API under /v1/ on
// the admin listener (docs/app-api.md). Its tokens are accepted there and
// nowhere else, and the SCIM and admin tokens are not accepted there.
type APIConfig struct {
	// Tokens are the app's tokens (SCIMGATE_API_TOKEN, or _FILE), as the
	// token itself or "sha256:<hex>". None: the API answers 401 saying so.
	Tokens []string `yaml:"tokens"`
	// MaxWait bounds a long poll of /v1/events (its wait parameter).
	MaxWait time.Duration `yaml:"max_wait"`
}

// DefaultAPIConfig returns the API defaults: no tokens, long polls of up
// to a minute.
func DefaultAPIConfig() APIConfig { return APIConfig{MaxWait: time.Minute} }

// Validate checks the section; field names are relative to "api".
func (c *APIConfig) Validate() error {
	var errs []error
	for i, t := range c.Tokens {
		if strings.TrimSpace(t) == "" {
			continue
		}
		if err := checkSecret(t); err != nil {
			errs = append(errs, fieldErr(fmt.Sprintf("tokens[%d]", i), ErrInvalid, "%v", err))
		}
	}
	if c.MaxWait < time.Second || c.MaxWait > 10*time.Minute {
		errs = append(errs, fieldErr("max_wait", ErrInvalid, "%s: use between 1s and 10m (the admin listener's write_timeout must exceed it)", c.MaxWait))
	}
	return errors.Join(errs...)
}

// apiRoutes adds /v1/ to the admin mux.
func (a *Admin) apiRoutes(cfg APIConfig) {
	a.apiMaxWait = cfg.MaxWait
	if a.apiMaxWait <= 0 {
		a.apiMaxWait = time.Minute
	}
	a.mux.HandleFunc("GET /v1/users", a.apiAuth(a.withAppIDs("User", false, a.listUsers)))
	a.mux.HandleFunc("GET /v1/users/{id}", a.apiAuth(a.withAppIDs("User", true, a.oneUser)))
	a.mux.HandleFunc("GET /v1/users/{id}/groups", a.apiAuth(a.withAppIDs("Group", false, a.userGroups)))
	a.mux.HandleFunc("GET /v1/groups", a.apiAuth(a.withAppIDs("Group", false, a.listGroups)))
	a.mux.HandleFunc("GET /v1/groups/{id}", a.apiAuth(a.withAppIDs("Group", true, a.oneGroup)))
	a.mux.HandleFunc("GET /v1/groups/{id}/members", a.apiAuth(a.withAppIDs("member", false, a.groupMembers)))
	a.mux.HandleFunc("GET /v1/events", a.apiAuth(a.events))
	a.mux.HandleFunc("/v1/", a.apiAuth(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			writeError(w, http.StatusMethodNotAllowed, "the app API is read-only: use GET")
			return
		}
		writeError(w, http.StatusNotFound, "no endpoint at %s: see docs/app-api.md (/v1/users, /v1/groups, /v1/events)", r.URL.Path)
	}))
}

// apiAuth admits the app's token only.
func (a *Admin) apiAuth(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
		ok := 0
		tokens := a.creds.Load().api
		for i := range tokens {
			ok |= subtle.ConstantTimeCompare(sum[:], tokens[i][:])
		}
		if !strings.EqualFold(scheme, "bearer") || ok != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="scimgate-api"`)
			refuseBody(w)
			switch {
			case len(tokens) == 0:
				writeError(w, http.StatusUnauthorized, "the app API is off: configure api.tokens (SCIMGATE_API_TOKEN or SCIMGATE_API_TOKEN_FILE)")
			case r.Header.Get("Authorization") == "":
				writeError(w, http.StatusUnauthorized, "api token required: send \"Authorization: Bearer <api token>\" (SCIMGATE_API_TOKEN); the SCIM and admin tokens are not accepted here")
			default:
				writeError(w, http.StatusUnauthorized, "invalid api token: the token presented is not one of api.tokens (the SCIM and admin tokens are not accepted here)")
			}
			return
		}
		next(w, r)
	}
}

// page is a list answer of the app API.
type page struct {
	Data       []json.RawMessage `json:"data"`
	NextCursor *string           `json:"next_cursor"`
	// Sequence is the event sequence the page is consistent with: after a
	// full load, follow /v1/events from the first page's sequence.
	Sequence uint64 `json:"sequence"`
}

func newPage(records []json.RawMessage, next string, seq uint64) page {
	p := page{Data: records, Sequence: seq}
	if p.Data == nil {
		p.Data = []json.RawMessage{}
	}
	if next != "" {
		p.NextCursor = &next
	}
	return p
}

// recordQuery reads limit, cursor, active and updated_since.
func recordQuery(r *http.Request, users bool) (store.RecordQuery, error) {
	q := store.RecordQuery{Cursor: r.URL.Query().Get("cursor")}
	v := r.URL.Query()
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > store.MaxRecordLimit {
			return q, fmt.Errorf("limit %q: use an integer from 1 to %d", s, store.MaxRecordLimit)
		}
		q.Limit = n
	}
	if s := v.Get("active"); s != "" {
		if !users {
			return q, errors.New("active applies to users only")
		}
		b, err := strconv.ParseBool(s)
		if err != nil {
			return q, fmt.Errorf("active %q: use true or false", s)
		}
		q.Active = &b
	}
	if s := v.Get("updated_since"); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return q, fmt.Errorf("updated_since %q: use an RFC 3339 time such as 2026-11-30T00:00:00Z", s)
		}
		q.UpdatedSince = t
	}
	return q, nil
}

func limitParam(r *http.Request) (int, error) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > store.MaxRecordLimit {
		return 0, fmt.Errorf("limit %q: use an integer from 1 to %d", s, store.MaxRecordLimit)
	}
	return n, nil
}

// apiErr renders a store error: 400 for bad input, 404 for an unknown id.
func (a *Admin) apiErr(w http.ResponseWriter, what string, err error) {
	var se *scim.Error
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, "%s not found: it does not exist in scimgate (deleted, or never provisioned)", what)
	case errors.Is(err, store.ErrInvalidQuery):
		writeError(w, http.StatusBadRequest, "%v", err)
	case errors.As(err, &se) && se.Status < 500:
		writeError(w, se.Status, "%s", se.Detail)
	default:
		a.internal(w, "api "+what, err)
	}
}

func (a *Admin) listUsers(w http.ResponseWriter, r *http.Request) { a.list(w, r, true) }

func (a *Admin) listGroups(w http.ResponseWriter, r *http.Request) { a.list(w, r, false) }

func (a *Admin) list(w http.ResponseWriter, r *http.Request, users bool) {
	q, err := recordQuery(r, users)
	if err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	read, what := a.store.GroupRecords, "groups"
	if users {
		read, what = a.store.UserRecords, "users"
	}
	p, err := read(q)
	if err != nil {
		a.apiErr(w, what, err)
		return
	}
	writeJSON(w, http.StatusOK, newPage(p.Records, p.NextCursor, p.Sequence))
}

func (a *Admin) oneUser(w http.ResponseWriter, r *http.Request) {
	a.one(w, "user "+r.PathValue("id"), func() (json.RawMessage, error) { return a.store.UserRecord(r.PathValue("id")) })
}

func (a *Admin) oneGroup(w http.ResponseWriter, r *http.Request) {
	a.one(w, "group "+r.PathValue("id"), func() (json.RawMessage, error) { return a.store.GroupRecord(r.PathValue("id")) })
}

func (a *Admin) one(w http.ResponseWriter, what string, read func() (json.RawMessage, error)) {
	rec, err := read()
	if err != nil {
		a.apiErr(w, what, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(append(rec, '\n'))
}

func (a *Admin) userGroups(w http.ResponseWriter, r *http.Request) {
	limit, err := limitParam(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	p, err := a.store.UserGroups(r.PathValue("id"), r.URL.Query().Get("cursor"), limit)
	if err != nil {
		a.apiErr(w, "user "+r.PathValue("id"), err)
		return
	}
	writeJSON(w, http.StatusOK, newPage(p.Records, p.NextCursor, p.Sequence))
}

// memberJSON is one member in /v1/groups/{id}/members: the member's type
// ("user" or "group", as the keys of member events) and its record under
// that key.
func memberJSON(m store.Member) json.RawMessage {
	key := "user"
	if m.Type == "Group" {
		key = "group"
	}
	b, _ := json.Marshal(map[string]any{"type": key, key: m.Record})
	return b
}

func (a *Admin) groupMembers(w http.ResponseWriter, r *http.Request) {
	limit, err := limitParam(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	}
	p, err := a.store.GroupMembers(r.PathValue("id"), r.URL.Query().Get("cursor"), limit)
	if err != nil {
		a.apiErr(w, "group "+r.PathValue("id"), err)
		return
	}
	out := make([]json.RawMessage, len(p.Members))
	for i, m := range p.Members {
		out[i] = memberJSON(m)
	}
	writeJSON(w, http.StatusOK, newPage(out, p.NextCursor, p.Sequence))
}

// events is the feed: the envelopes webhooks receive, in sequence order,
// after the consumer's cursor; with wait, a long poll woken on commit.
func (a *Admin) events(w http.ResponseWriter, r *http.Request) {
	if a.feed == nil {
		writeError(w, http.StatusServiceUnavailable, "the event feed is not running")
		return
	}
	v := r.URL.Query()
	var q outbox.FeedQuery
	if s := v.Get("after"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, "after %q: use the sequence of the last event you processed (0 for the oldest retained)", s)
			return
		}
		q.After = n
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxFeedLimit {
			writeError(w, http.StatusBadRequest, "limit %q: use an integer from 1 to %d", s, maxFeedLimit)
			return
		}
		q.Limit = n
	}
	if s := v.Get("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			writeError(w, http.StatusBadRequest, "wait %q: use a duration such as 30s (at most %s)", s, a.apiMaxWait)
			return
		}
		q.Wait = min(d, a.apiMaxWait)
	}
	if s := v.Get("types"); s != "" {
		for _, t := range strings.Split(s, ",") {
			if t = strings.TrimSpace(t); t != "" {
				q.Types = append(q.Types, t)
			}
		}
	}
	if q.Wait > 0 {
		// The listener's write_timeout bounds ordinary responses; a long
		// poll may legitimately take its whole wait.
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(q.Wait + 30*time.Second))
	}
	p, err := a.feed.Read(r.Context(), q)
	switch {
	case errors.Is(err, outbox.ErrCursorGone):
		writeError(w, http.StatusGone, "%v", err)
		return
	case errors.Is(err, outbox.ErrInvalidArgument):
		writeError(w, http.StatusBadRequest, "%v", err)
		return
	case r.Context().Err() != nil:
		return // the client went away
	case err != nil:
		a.internal(w, "events", err)
		return
	}
	// Written by hand: each envelope must be byte for byte what a webhook
	// receives, which an indenting encoder would reformat.
	b := make([]byte, 0, 64+len(p.Events)*512)
	b = append(b, `{"data":[`...)
	for i, ev := range p.Events {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, ev...)
	}
	b = append(b, `],"next":`...)
	b = strconv.AppendUint(b, p.Next, 10)
	b = append(b, "}\n"...)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// maxFeedLimit is the most events one /v1/events read returns (the feed's
// default cap).
const maxFeedLimit = 1000
