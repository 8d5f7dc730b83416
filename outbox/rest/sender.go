package rest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/expr-lang/expr/vm"
	retryablehttp "github.com/hashicorp/go-retryablehttp"
	"golang.org/x/time/rate"
	"gopkg.in/yaml.v3"

	"github.com/scimgate/scimgate/outbox"
)

// State spaces of the id map.
const (
	SpaceIDs = "ids" // "User/<scim id>" → JSON object of saved values ({"id": 7, …})
	SpaceApp = "app" // "User/<app id>" → scim id (the reverse of the saved "id")
)

// maxBody bounds a response body read for saves and outcomes.
const maxBody = 8 << 20

// deadLetterResponse is how much of a response a dead letter shows.
const deadLetterResponse = 1 << 10

// Sender runs a rest target's actions. It is safe for concurrent use: the
// engine sends events of different resources in parallel.
type Sender struct {
	cfg    *config
	state  *outbox.State // nil in a dry run without --link
	logger *slog.Logger
	write  *retryablehttp.Client // one request per attempt (a refused connect aside)
	read   *retryablehttp.Client // GET/HEAD: a few in-process retries
	hc     *http.Client
	jar    *jarHolder
	now    func() time.Time

	secretsMu sync.RWMutex
	secrets   []string // literals never printed: config secrets, session values, tokens

	oauthMu sync.Mutex
	oauth   tokenSource

	sessMu  sync.Mutex
	session map[string]any // nil until logged in
	sessGen int

	trace func(Trace)                 // the dry run's printer; nil otherwise
	ids   func(string) map[string]any // the dry run's read-only id map (state nil)
	send  bool                        // false: render only (dry run without --send)
}

// New builds t's sender (the Transport's New).
func New(t outbox.Target, env outbox.Env) (outbox.Sender, error) {
	s, err := newSender(t, env.State, env.Logger)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// redactable is the secrets worth redacting: a value of fewer than four
// bytes would blank ordinary text wherever it occurs.
func redactable(secrets []string) []string {
	return slices.DeleteFunc(slices.Clone(secrets), func(v string) bool { return len(v) < 4 })
}

func newSender(t outbox.Target, state *outbox.State, logger *slog.Logger) (*Sender, error) {
	cfg, errs := parse(t, "outbox.targets["+t.Name+"]")
	if len(errs) > 0 {
		return nil, fmt.Errorf("target %s: %w", t.Name, errors.Join(errs...))
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Sender{cfg: cfg, state: state, logger: logger, now: time.Now, send: true, jar: &jarHolder{}}
	s.jar.reset()
	s.secrets = redactable(cfg.secrets)
	tlsCfg, err := cfg.tls.build()
	if err != nil {
		return nil, fmt.Errorf("target %s: tls: %w", t.Name, err)
	}
	conc := max(cfg.concurrency, 1)
	base := &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: min(cfg.timeout, 10*time.Second), KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsCfg,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          2 * conc,
		MaxIdleConnsPerHost:   conc,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	lim := &limited{next: base, target: t.Name}
	if cfg.perSecond > 0 {
		lim.limiter = rate.NewLimiter(rate.Limit(cfg.perSecond), max(cfg.burst, 1))
	}
	if cfg.concurrency > 0 {
		lim.sem = make(chan struct{}, cfg.concurrency)
	}
	s.hc = &http.Client{
		Transport: lim,
		Timeout:   cfg.timeout,
		Jar:       s.jar,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // a 3xx is reported, never followed with our credentials
		},
	}
	mk := func(retries int, check retryablehttp.CheckRetry) *retryablehttp.Client {
		return &retryablehttp.Client{
			HTTPClient: s.hc, RetryMax: retries, RetryWaitMin: 50 * time.Millisecond, RetryWaitMax: 250 * time.Millisecond,
			CheckRetry: check, Backoff: retryablehttp.LinearJitterBackoff, ErrorHandler: retryablehttp.PassthroughErrorHandler,
		}
	}
	s.write = mk(1, retryRefused)
	s.read = mk(2, retryRead)
	return s, nil
}

// retryRefused retries a write only when the connection was refused:
// nothing was written, so the app saw nothing.
func retryRefused(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil || err == nil {
		return false, nil
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true, nil
	}
	return false, nil
}

// retryRead is go-retryablehttp's policy for GETs, except that a
// Retry-After is left to the durable schedule (it may say an hour).
func retryRead(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, nil
	}
	if resp != nil && resp.Header.Get("Retry-After") != "" {
		return false, nil
	}
	ok, _ := retryablehttp.DefaultRetryPolicy(ctx, resp, err)
	return ok, nil
}

// permanentTransport reports whether go-retryablehttp classifies a
// transport error as not worth retrying (a bad certificate, an unsupported
// scheme, an invalid header).
func permanentTransport(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	retry, _ := retryablehttp.DefaultRetryPolicy(context.Background(), nil, err)
	return !retry
}

func (t tlsConfig) build() (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.serverName}
	if t.caFile != "" {
		pem, err := os.ReadFile(t.caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no PEM certificate", t.caFile)
		}
		c.RootCAs = pool
	}
	if t.certFile != "" {
		cert, err := tls.LoadX509KeyPair(t.certFile, t.keyFile)
		if err != nil {
			return nil, err
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// limited is the round tripper under every request of a target (steps,
// logins, token fetches, in-process retries): the rate limit and the
// concurrency bound apply to what the app receives.
type limited struct {
	next    http.RoundTripper
	limiter *rate.Limiter
	sem     chan struct{}
	target  string
}

func (l *limited) RoundTrip(r *http.Request) (*http.Response, error) {
	if l.limiter != nil {
		if res := l.limiter.Reserve(); res.OK() {
			if d := res.Delay(); d > 0 {
				metrics.rateWaits.WithLabelValues(l.target).Inc()
				t := time.NewTimer(d)
				select {
				case <-t.C:
				case <-r.Context().Done():
					t.Stop()
					res.Cancel()
					return nil, r.Context().Err()
				}
			}
		}
	}
	if l.sem != nil {
		select {
		case l.sem <- struct{}{}:
		case <-r.Context().Done():
			return nil, r.Context().Err()
		}
		defer func() { <-l.sem }()
	}
	return l.next.RoundTrip(r)
}

// jarHolder is a cookie jar that a session renewal empties.
type jarHolder struct {
	mu  sync.Mutex
	jar http.CookieJar
}

func (j *jarHolder) reset() {
	jar, _ := cookiejar.New(nil)
	j.mu.Lock()
	j.jar = jar
	j.mu.Unlock()
}
func (j *jarHolder) get() http.CookieJar {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.jar
}
func (j *jarHolder) SetCookies(u *url.URL, c []*http.Cookie) { j.get().SetCookies(u, c) }
func (j *jarHolder) Cookies(u *url.URL) []*http.Cookie       { return j.get().Cookies(u) }

// Close implements io.Closer.
func (s *Sender) Close() error {
	s.hc.CloseIdleConnections()
	return nil
}

// redact replaces every secret in text.
func (s *Sender) redact(text string) string {
	s.secretsMu.RLock()
	defer s.secretsMu.RUnlock()
	for _, v := range s.secrets {
		if v != "" {
			text = strings.ReplaceAll(text, v, "[redacted]")
		}
	}
	return text
}

func (s *Sender) addSecret(v string) {
	if len(v) < 6 {
		return
	}
	s.secretsMu.Lock()
	defer s.secretsMu.Unlock()
	if !slices.Contains(s.secrets, v) {
		s.secrets = append(s.secrets, v)
	}
}

// progress is an event's way through its steps, kept in State between
// attempts: the saves of each step (or for_each item) that succeeded.
type progress struct {
	Done map[string]map[string]any `json:"done"`
}

// run is one attempt of one event.
type run struct {
	s    *Sender
	ctx  context.Context
	ev   outbox.Event
	key  string // "User/<scim id>" or "Group/<scim id>": whose values `app` holds
	app  map[string]any
	prog progress
	env  map[string]any
	vm   vm.VM
}

// recoverAction turns a panic in an action into its event's dead letter
// (deferred by Send): an action's defect never stops the dispatcher.
func recoverAction(err *error, typ string) {
	if r := recover(); r != nil {
		*err = outbox.Permanent(fmt.Errorf("action %s: internal error: %v", typ, r))
	}
}

// Send runs ev's action. Each step that succeeds commits its saves and the
// event's progress in one State.Update, so a retry resumes after it.
func (s *Sender) Send(ctx context.Context, ev outbox.Event) (err error) {
	defer recoverAction(&err, ev.Type)
	steps := s.cfg.actions[ev.Type]
	if len(steps) == 0 {
		return nil
	}
	r, err := s.newRun(ctx, ev)
	if err != nil {
		return err
	}
	for _, st := range steps {
		stop, err := r.step(st)
		if err != nil {
			return err
		}
		if stop {
			break
		}
	}
	return nil
}

func (s *Sender) newRun(ctx context.Context, ev outbox.Event) (*run, error) {
	data, err := object(ev.Data)
	if err != nil {
		return nil, outbox.Permanent(fmt.Errorf("event %s: data: %v", ev.ID, err))
	}
	changes, err := object(ev.Changes)
	if err != nil {
		return nil, outbox.Permanent(fmt.Errorf("event %s: changes: %v", ev.ID, err))
	}
	previous := map[string]any{}
	for k, v := range changes {
		previous[k] = asMap(v)["old"]
	}
	r := &run{s: s, ctx: ctx, ev: ev, prog: progress{Done: map[string]map[string]any{}}}
	var record map[string]any
	switch {
	case strings.HasPrefix(ev.Type, "user."):
		record = asMap(data["user"])
		r.key = "User/" + toString(record["id"])
	case strings.HasPrefix(ev.Type, "group."):
		record = asMap(data["group"])
		r.key = "Group/" + toString(record["id"])
	default:
		record = data
	}
	r.app = map[string]any{}
	if s.state == nil && s.ids != nil && r.key != "" {
		for k, v := range s.ids(r.key) {
			r.app[k] = v
		}
	}
	if s.state != nil {
		err := s.state.View(func(tx *outbox.StateTx) error {
			if r.key != "" {
				v, err := tx.Get(SpaceIDs, []byte(r.key))
				if err != nil {
					return err
				}
				if v != nil {
					if r.app, err = object(v); err != nil {
						return err
					}
				}
			}
			p, err := tx.Progress(ev.ID)
			if err != nil || p == nil {
				return err
			}
			return json.Unmarshal(p, &r.prog)
		})
		if err != nil {
			return nil, fmt.Errorf("id map: %w", err)
		}
		if r.prog.Done == nil {
			r.prog.Done = map[string]map[string]any{}
		}
	}
	r.env = map[string]any{
		"event": map[string]any{"id": ev.ID, "type": ev.Type, "sequence": int(ev.Seq), "cause": ev.Cause,
			"occurred_at": ev.OccurredAt.UTC().Format("2006-01-02T15:04:05.000Z07:00")},
		"record":       record,
		"user":         data["user"],
		"group":        data["group"],
		"member_group": data["member_group"],
		"members":      data["members"],
		"chunk":        data["chunk"],
		"changes":      changes,
		"previous":     previous,
		"app":          r.app,
		"steps":        map[string]any{},
		"session":      map[string]any{},
		"appId":        r.appID,
		"appIdOr":      r.appIDOr,
	}
	return r, nil
}

// appID is the expression function appId(type, scimId).
func (r *run) appID(typ string, id any) (any, error) {
	v, err := r.lookup(typ, id)
	if err != nil {
		return nil, err
	}
	if v == nil {
		return nil, &unknownError{key: typ + "/" + toString(id)}
	}
	return v, nil
}

func (r *run) appIDOr(typ string, id, fallback any) (any, error) {
	v, err := r.lookup(typ, id)
	if err != nil {
		return nil, err
	}
	if v == nil {
		return fallback, nil
	}
	return v, nil
}

func (r *run) lookup(typ string, id any) (any, error) {
	if typ != "User" && typ != "Group" {
		return nil, fmt.Errorf("appId: type must be \"User\" or \"Group\", not %q", typ)
	}
	key := typ + "/" + toString(id)
	if key == r.key {
		if v := r.app["id"]; v != nil || r.s.state != nil || r.s.trace == nil {
			return v, nil
		}
		return "{app id of " + key + "}", nil // a dry run without an id map shows where it would go
	}
	if r.s.state == nil {
		if r.s.ids != nil {
			if v := r.s.ids(key)["id"]; v != nil {
				return v, nil
			}
		}
		if r.s.trace != nil { // a dry run shows where the id would go
			return "{app id of " + key + "}", nil
		}
		return nil, nil
	}
	var saved map[string]any
	err := r.s.state.View(func(tx *outbox.StateTx) error {
		v, err := tx.Get(SpaceIDs, []byte(key))
		if err != nil || v == nil {
			return err
		}
		saved, err = object(v)
		return err
	})
	if err != nil {
		return nil, &storeError{err}
	}
	return saved["id"], nil
}

// unknownError is appId of a resource the map does not hold yet: the
// attempt waits (retries in order) until its create has been delivered.
type unknownError struct{ key string }

func (e *unknownError) Error() string { return "app id of " + e.key + " not known yet" }

type storeError struct{ err error }

func (e *storeError) Error() string { return "id map: " + e.err.Error() }

// eval runs a program against the run's environment. An error is
// Permanent (the expression is wrong for this event) unless it is an app
// id not known yet or the store failing: those retry.
func (r *run) eval(st *step, what string, p *program) (any, error) {
	v, err := r.evalRaw(p)
	if err != nil {
		var ue *unknownError
		var se *storeError
		msg := fmt.Errorf("step %s: %s (line %d): %s", st.name, what, p.line, scrub(r.s.redact(firstLine(err.Error()))))
		if errors.As(err, &ue) || errors.As(err, &se) {
			return nil, msg
		}
		return nil, outbox.Permanent(msg)
	}
	return v, nil
}

func (r *run) evalRaw(p *program) (v any, err error) {
	defer func() {
		if x := recover(); x != nil {
			err = fmt.Errorf("panic: %v", x)
		}
	}()
	return r.vm.Run(p.p, r.env)
}

// step runs one step (each item of a for_each). It reports whether the
// action stops here (then: done).
func (r *run) step(st *step) (bool, error) {
	if st.forEach == nil {
		return r.request(st, st.name)
	}
	v, err := r.eval(st, "for_each", st.forEach)
	if err != nil {
		return false, err
	}
	var items []any
	switch x := v.(type) {
	case nil:
	case []any:
		items = x
	default:
		return false, outbox.Permanent(fmt.Errorf("step %s: for_each (line %d) yielded %T, not a list", st.name, st.forEach.line, v))
	}
	defer delete(r.env, "item")
	for i, it := range items {
		r.env["item"] = it
		stop, err := r.request(st, st.name+"#"+strconv.Itoa(i))
		if err != nil || stop {
			return stop, err
		}
	}
	return false, nil
}

func (st *step) read() bool { return st.method == http.MethodGet || st.method == http.MethodHead }

// rendered is a request as sent (and as shown in a dead letter).
type rendered struct {
	method string
	url    string
	header http.Header
	body   []byte
}

func (r *run) render(st *step) (*rendered, error) {
	pv, err := r.eval(st, "path", st.path)
	if err != nil {
		return nil, err
	}
	path := toString(pv)
	u := r.s.cfg.baseURL + path
	if strings.Contains(path, "://") {
		return nil, outbox.Permanent(fmt.Errorf("step %s: path %q is not a path under base_url", st.name, path))
	}
	if !strings.HasPrefix(path, "/") && path != "" {
		u = r.s.cfg.baseURL + "/" + path
	}
	if len(st.query) > 0 {
		q := url.Values{}
		for _, kv := range st.query {
			v, err := r.eval(st, "query."+kv.key, kv.prog)
			if err != nil {
				return nil, err
			}
			if v == nil {
				continue
			}
			if l, ok := v.([]any); ok {
				for _, e := range l {
					q.Add(kv.key, toString(e))
				}
				continue
			}
			q.Set(kv.key, toString(v))
		}
		if enc := q.Encode(); enc != "" {
			sep := "?"
			if strings.Contains(u, "?") {
				sep = "&"
			}
			u += sep + enc
		}
	}
	rq := &rendered{method: st.method, url: u, header: http.Header{}}
	for _, h := range r.s.cfg.headers {
		rq.header.Set(h.key, h.lit)
	}
	rq.header.Set("User-Agent", "scimgate")
	rq.header.Set("Accept", "application/json")
	switch {
	case st.body != nil:
		v, err := r.renderTmpl(st, "body", st.body)
		if err != nil {
			return nil, err
		}
		b, err := json.Marshal(v)
		if err != nil {
			return nil, outbox.Permanent(fmt.Errorf("step %s: body: %v", st.name, err))
		}
		rq.body = b
		rq.header.Set("Content-Type", "application/json")
	case len(st.form) > 0:
		f := url.Values{}
		for _, kv := range st.form {
			v, err := r.eval(st, "form."+kv.key, kv.prog)
			if err != nil {
				return nil, err
			}
			if v != nil {
				f.Set(kv.key, toString(v))
			}
		}
		rq.body = []byte(f.Encode())
		rq.header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for _, kv := range st.headers {
		v, err := r.eval(st, "headers."+kv.key, kv.prog)
		if err != nil {
			return nil, err
		}
		if v != nil {
			rq.header.Set(kv.key, toString(v))
		}
	}
	if r.s.cfg.idempotencyKey && st.method != http.MethodGet && st.method != http.MethodHead {
		rq.header.Set("Idempotency-Key", r.ev.ID+"."+st.name)
	}
	return rq, nil
}

func (r *run) renderTmpl(st *step, field string, t *tmpl) (any, error) {
	if t == nil {
		return nil, nil
	}
	switch t.kind {
	case yaml.MappingNode:
		m := &orderedMap{keys: t.keys, vals: make([]any, len(t.keys))}
		for i, k := range t.keys {
			v, err := r.renderTmpl(st, field+"."+k, t.elems[i])
			if err != nil {
				return nil, err
			}
			m.vals[i] = v
		}
		return m, nil
	case yaml.SequenceNode:
		l := make([]any, 0, len(t.elems))
		for i, e := range t.elems {
			v, err := r.renderTmpl(st, fmt.Sprintf("%s[%d]", field, i), e)
			if err != nil {
				return nil, err
			}
			l = append(l, v)
		}
		return l, nil
	}
	if t.prog != nil {
		return r.eval(st, field, t.prog)
	}
	return t.lit, nil
}

// orderedMap is a body object: its keys go out in the YAML's order.
type orderedMap struct {
	keys []string
	vals []any
}

func (m *orderedMap) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, k := range m.keys {
		if i > 0 {
			b.WriteByte(',')
		}
		kb, err := json.Marshal(k)
		if err != nil {
			return nil, err
		}
		vb, err := json.Marshal(m.vals[i])
		if err != nil {
			return nil, err
		}
		b.Write(kb)
		b.WriteByte(':')
		b.Write(vb)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// response is what save, outcomes and expired_when see.
type response struct {
	status int
	header http.Header
	raw    []byte
	body   any
}

func (rs *response) value() map[string]any {
	h := make(map[string]any, 2*len(rs.header))
	for k, v := range rs.header {
		if len(v) > 0 {
			h[k] = v[0]
			h[strings.ToLower(k)] = v[0]
		}
	}
	return map[string]any{"status": rs.status, "headers": h, "body": rs.body}
}

// do sends a rendered request once (go-retryablehttp may repeat a GET, or
// a write whose connection was refused) and reads the response.
func (s *Sender) do(ctx context.Context, target, stepName string, rq *rendered) (*response, error) {
	req, err := retryablehttp.NewRequestWithContext(ctx, rq.method, rq.url, rq.body)
	if err != nil {
		return nil, outbox.Permanent(fmt.Errorf("step %s: build request: %s", stepName, s.redact(err.Error())))
	}
	req.Header = rq.header.Clone()
	if err := s.authorize(ctx, req.Request); err != nil {
		return nil, err
	}
	c := s.write
	if rq.method == http.MethodGet || rq.method == http.MethodHead {
		c = s.read
	}
	start := time.Now()
	resp, err := c.Do(req)
	metrics.latency.WithLabelValues(target, stepName).Observe(time.Since(start).Seconds())
	if err != nil {
		if resp != nil {
			drain(resp.Body)
		}
		msg := fmt.Errorf("step %s: %s %s: %s", stepName, rq.method, redactURL(rq.url), s.redact(transportText(err)))
		if permanentTransport(ctx, err) {
			return nil, outbox.Permanent(msg)
		}
		return nil, msg
	}
	defer drain(resp.Body)
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("step %s: %s %s: reading the response: %s", stepName, rq.method, redactURL(rq.url), s.redact(transportText(err)))
	}
	rs := &response{status: resp.StatusCode, header: resp.Header, raw: raw}
	if len(bytes.TrimSpace(raw)) > 0 {
		if v, err := decodeJSON(raw); err == nil {
			rs.body = v
		} else {
			rs.body = string(raw)
		}
	}
	return rs, nil
}

// transportText is an error's text without the URL (which may carry a
// token in its query).
func transportText(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

// redactURL keeps scheme, host and path.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(url)"
	}
	u.User, u.RawQuery, u.Fragment = nil, "", ""
	return u.String()
}

func drain(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, 64<<10))
	_ = body.Close()
}

// classify returns a response's outcome: the step's first matching
// outcome, else the defaults (2xx ok; 408, 429, 5xx retry; others dead).
func (r *run) classify(st *step, rs *response) (Then, error) {
	for _, o := range st.outcomes {
		if len(o.status) > 0 && !slices.Contains(o.status, rs.status) {
			continue
		}
		if o.when != nil {
			v, err := r.eval(st, "outcome when", o.when)
			if err != nil {
				return "", err
			}
			if b, _ := v.(bool); !b {
				continue
			}
		}
		return o.then, nil
	}
	switch c := rs.status; {
	case c >= 200 && c < 300:
		return ThenOK, nil
	case c == http.StatusRequestTimeout, c == http.StatusTooManyRequests, c >= 500:
		return ThenRetry, nil
	}
	return ThenDead, nil
}

// request runs one request of a step (key names it in the progress).
func (r *run) request(st *step, key string) (bool, error) {
	// A GET or HEAD runs on every attempt (it is harmless, and a lookup
	// must see an account a failed create made); a write that succeeded
	// is not repeated unless it says always.
	if saved, done := r.prog.Done[key]; done && !st.always && !st.read() {
		r.remember(st, saved)
		return false, nil
	}
	if st.when != nil {
		v, err := r.eval(st, "when", st.when)
		if err != nil {
			return false, err
		}
		if b, _ := v.(bool); !b {
			r.s.tracef(Trace{Step: st.name, Skipped: true})
			return false, nil
		}
	}
	var rq *rendered
	var rs *response
	for attempt := 0; ; attempt++ {
		gen, err := r.s.ensureSession(r.ctx)
		if err != nil {
			return false, err
		}
		if r.s.cfg.auth.kind == "session" {
			r.env["session"] = r.s.sessionValues()
		}
		if rq, err = r.render(st); err != nil {
			return false, err
		}
		if !r.s.send {
			tr := Trace{Step: st.name, Method: rq.method, URL: rq.url, Header: r.s.redactHeader(rq.header), Body: r.s.redact(string(rq.body))}
			for _, kv := range st.save {
				tr.Saves = append(tr.Saves, SaveTrace{Key: kv.key, Expr: kv.prog.src})
			}
			r.s.tracef(tr)
			return false, nil
		}
		if rs, err = r.s.do(r.ctx, r.s.cfg.target, st.name, rq); err != nil {
			metrics.requests.WithLabelValues(r.s.cfg.target, st.name, "error").Inc()
			return false, err
		}
		if attempt > 0 {
			break
		}
		renew, err := r.s.needsRenew(r, st, rs)
		if err != nil {
			return false, err
		}
		if !renew {
			break
		}
		r.s.invalidate(gen)
	}
	var tr Trace
	if r.s.trace != nil {
		tr = Trace{Step: st.name, Method: rq.method, URL: rq.url, Header: r.s.redactHeader(rq.header), Body: r.s.redact(string(rq.body))}
	}
	r.env["response"] = rs.value()
	defer delete(r.env, "response")
	then, err := r.classify(st, rs)
	if err != nil {
		return false, err
	}
	metrics.requests.WithLabelValues(r.s.cfg.target, st.name, string(then)).Inc()
	if r.s.trace != nil {
		tr.Status, tr.Response, tr.Then = rs.status, truncateUTF8(r.s.redact(string(rs.raw)), deadLetterResponse), then
	}
	switch then {
	case ThenRetry, ThenDead:
		r.s.tracef(tr)
		se := &outbox.StatusError{StatusCode: rs.status, Body: r.s.deadLetter(st, rq, rs)}
		if then == ThenRetry && (rs.status == http.StatusTooManyRequests || rs.status == http.StatusServiceUnavailable) {
			se.RetryAfter = retryAfter(rs.header.Get("Retry-After"), r.s.now())
		}
		err := &stepError{step: st.name, method: rq.method, url: redactURL(rq.url), se: se, then: then}
		if then == ThenDead {
			return false, outbox.Permanent(err)
		}
		return false, err
	}
	saves := map[string]any{}
	if rs.status >= 200 && rs.status < 300 {
		for _, kv := range st.save {
			v, err := r.eval(st, "save."+kv.key, kv.prog)
			if err != nil {
				return false, err
			}
			saves[kv.key] = v
		}
	}
	tr.Saved = saves
	r.s.tracef(tr)
	if err := r.commit(st, key, saves); err != nil {
		return false, err
	}
	return then == ThenDone, nil
}

// remember puts a step's saves in scope: steps.<name>.<key> and app.<key>.
func (r *run) remember(st *step, saves map[string]any) {
	steps := r.env["steps"].(map[string]any)
	m, _ := steps[st.name].(map[string]any)
	if m == nil {
		m = map[string]any{}
		steps[st.name] = m
	}
	for k, v := range saves {
		m[k] = v
		if v == nil {
			delete(r.app, k)
		} else {
			r.app[k] = v
		}
	}
	if st.forget {
		clear(r.app)
	}
}

// commit records a step's success: its saves merged into the resource's
// id-map entry (a nil save removes the key), the reverse entry of "id",
// and the event's progress, in one State.Update.
func (r *run) commit(st *step, key string, saves map[string]any) error {
	oldID := r.app["id"]
	r.remember(st, saves)
	r.prog.Done[key] = saves
	if r.s.state == nil {
		return nil
	}
	prog, err := json.Marshal(r.prog)
	if err != nil {
		return outbox.Permanent(fmt.Errorf("step %s: saved values: %v", st.name, err))
	}
	var entry []byte
	if len(r.app) > 0 {
		if entry, err = json.Marshal(r.app); err != nil {
			return outbox.Permanent(fmt.Errorf("step %s: saved values: %v", st.name, err))
		}
	}
	typ, scimID, _ := strings.Cut(r.key, "/")
	newID := r.app["id"]
	err = r.s.state.Update(func(tx *outbox.StateTx) error {
		if r.key != "" && scimID != "" {
			if err := putIDs(tx, typ, scimID, entry, oldID, newID); err != nil {
				return err
			}
		}
		if r.s.trace != nil {
			return nil // a dry run (--link) writes the id map only: no event is in the outbox
		}
		return tx.SetProgress(r.ev.ID, prog)
	})
	if err != nil {
		return fmt.Errorf("step %s: id map: %w", st.name, err)
	}
	if st.forget || oldID == nil || newID == nil {
		metrics.observeSize(r.s)
	}
	return nil
}

// putIDs writes a resource's id-map entry (entry: its saves as JSON; nil
// drops it) and the reverse entry of its app id, dropping the reverse entry
// of the id it had before (oldID) when that changed.
func putIDs(tx *outbox.StateTx, typ, scimID string, entry []byte, oldID, newID any) error {
	key := []byte(typ + "/" + scimID)
	if entry == nil {
		if err := tx.Delete(SpaceIDs, key); err != nil {
			return err
		}
	} else if err := tx.Put(SpaceIDs, key, entry); err != nil {
		return err
	}
	if oldID != nil && toString(oldID) != toString(newID) {
		if err := tx.Delete(SpaceApp, []byte(typ+"/"+toString(oldID))); err != nil {
			return err
		}
	}
	if newID != nil {
		return tx.Put(SpaceApp, []byte(typ+"/"+toString(newID)), []byte(scimID))
	}
	return nil
}

// stepError is a step whose response said retry or dead-letter.
type stepError struct {
	step, method, url string
	se                *outbox.StatusError
	then              Then
}

func (e *stepError) Error() string {
	s := fmt.Sprintf("step %s: %s %s: app responded %d", e.step, e.method, e.url, e.se.StatusCode)
	if t := http.StatusText(e.se.StatusCode); t != "" {
		s += " " + t
	}
	return s
}
func (e *stepError) Unwrap() error { return e.se }

func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
		if n < 0 {
			return 0
		}
		return time.Duration(min(n, int64(1<<31))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return 0
}

// sensitiveHeaders are never shown, whatever their value.
var sensitiveHeaders = []string{"Authorization", "Cookie", "Set-Cookie", "Proxy-Authorization"}

func (s *Sender) redactHeader(h http.Header) http.Header {
	out := http.Header{}
	for k, v := range h {
		for _, e := range v {
			if slices.Contains(sensitiveHeaders, k) {
				e = "[redacted]"
			} else {
				for _, c := range s.cfg.headers {
					if http.CanonicalHeaderKey(c.key) == k {
						e = "[redacted]"
					}
				}
			}
			out.Add(k, s.redact(e))
		}
	}
	return out
}

// deadLetter is the body a dead letter shows: the step, the request as
// rendered (secrets redacted) and the start of the response.
func (s *Sender) deadLetter(st *step, rq *rendered, rs *response) string {
	var b strings.Builder
	fmt.Fprintf(&b, "step %s (line %d)\n--- request\n%s %s\n", st.name, st.line, rq.method, s.redact(rq.url))
	h := s.redactHeader(rq.header)
	for _, k := range sortedKeys(h) {
		fmt.Fprintf(&b, "%s: %s\n", k, strings.Join(h[k], ", "))
	}
	if len(rq.body) > 0 {
		b.WriteString("\n")
		b.WriteString(truncateUTF8(s.redact(string(rq.body)), 2<<10))
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "--- response\n%d %s\n", rs.status, http.StatusText(rs.status))
	if ct := rs.header.Get("Content-Type"); ct != "" {
		fmt.Fprintf(&b, "Content-Type: %s\n", ct)
	}
	if len(rs.raw) > 0 {
		b.WriteString("\n")
		b.WriteString(truncateUTF8(s.redact(string(rs.raw)), deadLetterResponse))
		b.WriteString("\n")
	}
	return truncateUTF8(b.String(), outbox.MaxResponseBody)
}

func sortedKeys(h http.Header) []string {
	ks := make([]string, 0, len(h))
	for k := range h {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

var _ io.Closer = (*Sender)(nil)
