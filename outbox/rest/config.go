// Package rest is the action target (type: rest): for each event type a
// short list of HTTP steps against an app's own API, whose method, path,
// query, headers and body are expressions (expr-lang/expr) over the event,
// with an id map (our id ↔ the app's id) kept in the target's durable
// outbox.State. See docs/actions.md.
//
// It imports only the engine (package outbox), as every transport does.
package rest

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/types"
	"github.com/expr-lang/expr/vm"
	"gopkg.in/yaml.v3"

	"github.com/scimgate/scimgate/outbox"
)

// Transport returns the outbox.Transport of type rest, for
// outbox.Config.Transports.
func Transport() outbox.Transport {
	return outbox.Transport{Validate: Validate, New: New, IDs: IDMap, Stats: Stats}
}

// Validate checks t's rest section and returns every problem, each an
// *outbox.FieldError whose message names its YAML line.
func Validate(t outbox.Target, prefix string) []error {
	_, errs := parse(t, prefix)
	return errs
}

// Then is what a step's outcome means.
type Then string

// Outcome classes.
const (
	ThenOK    Then = "ok"    // success: save, continue with the next step
	ThenDone  Then = "done"  // success: save, stop (the event is delivered)
	ThenRetry Then = "retry" // retry the event on the durable schedule
	ThenDead  Then = "dead"  // dead-letter the event
)

// config is a parsed, compiled rest section.
type config struct {
	target         string
	baseURL        string
	headers        []kv // literal
	auth           authConfig
	tls            tlsConfig
	timeout        time.Duration
	perSecond      float64
	burst          int
	concurrency    int
	idempotencyKey bool
	actions        map[string][]*step
	secrets        []string // every literal that must never be printed
}

type kv struct {
	key  string
	lit  string   // literal (top-level headers)
	prog *program // expression
}

type authConfig struct {
	kind               string // "", basic, bearer, oauth2, session
	username, password string
	token              string
	tokenURL, clientID string
	clientSecret       string
	scopes             []string
	sessionSteps       []*step
	renewOn            []int
	expiredWhen        *program
}

type tlsConfig struct {
	caFile, certFile, keyFile, serverName string
}

// step is one HTTP request of an action.
type step struct {
	name     string
	field    string // YAML path, for messages
	line     int
	method   string
	path     *program
	query    []kv
	headers  []kv
	body     *tmpl
	form     []kv
	when     *program
	forEach  *program
	save     []kv
	outcomes []outcome
	always   bool
	forget   bool
}

type outcome struct {
	status []int
	when   *program
	then   Then
}

// program is a compiled expression with its source.
type program struct {
	src  string
	line int
	p    *vm.Program
}

// tmpl is a structured body: maps, lists, expression leaves and literals.
type tmpl struct {
	kind  yaml.Kind
	keys  []string
	elems []*tmpl
	prog  *program // string leaf
	lit   any      // number, bool or null leaf
}

// Expression environments. Values here only give the checker the names;
// the shapes (records, responses) are dynamic.
type scope int

const (
	scopeRequest scope = 1 << iota
	scopeResponse
	scopeItem
	scopeSession // a login step: no event
)

func compileEnv(s scope) types.Map {
	obj, list := types.TypeOf(map[string]any{}), types.TypeOf([]any{})
	m := types.Map{
		"event": obj, "record": obj, "user": obj, "group": obj, "member_group": obj,
		"members": list, "chunk": obj, "changes": obj, "previous": obj,
		"app": obj, "steps": obj, "session": obj,
		"appId":   types.TypeOf(func(string, any) (any, error) { return nil, nil }),
		"appIdOr": types.TypeOf(func(string, any, any) (any, error) { return nil, nil }),
	}
	if s&scopeResponse != 0 {
		m["response"] = obj
	}
	if s&scopeItem != 0 {
		m["item"] = types.Any // a list's element: any shape
	}
	return m
}

// exprOptions are the helpers every expression may call, besides expr's
// builtins (lower, upper, join, trim, len, …); none reaches the
// environment, a file or the network.
var exprOptions = []expr.Option{
	expr.Function("urlPath", func(p ...any) (any, error) { return urlPathEscape(toString(p[0])), nil }, new(func(any) string)),
	expr.Function("urlQuery", func(p ...any) (any, error) { return urlQueryEscape(toString(p[0])), nil }, new(func(any) string)),
	expr.Function("default", func(p ...any) (any, error) {
		if p[0] == nil || p[0] == "" {
			return p[1], nil
		}
		return p[0], nil
	}, new(func(any, any) any)),
	expr.Function("str", func(p ...any) (any, error) { return toString(p[0]), nil }, new(func(any) string)),
	expr.DisableBuiltin("now"), // a step renders the same on every retry and in the dry run
	expr.MaxNodes(2000),
}

// maxExprLen bounds an expression's source.
const maxExprLen = 4096

// compile compiles an expression against env (compileEnv or sqlEnv of
// its scope).
func compile(env types.Map, src string, asBool bool) (*vm.Program, error) {
	if len(src) > maxExprLen {
		return nil, fmt.Errorf("expression longer than %d bytes", maxExprLen)
	}
	opts := append([]expr.Option{expr.Env(env)}, exprOptions...)
	if asBool {
		opts = append(opts, expr.AsBool())
	}
	return expr.Compile(src, opts...)
}

// parser walks a rest section and collects every error with its line.
type parser struct {
	prefix string
	errs   []error
}

func (p *parser) errf(n *yaml.Node, field, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	p.errs = append(p.errs, &outbox.FieldError{Field: p.prefix + field,
		Err: &LineError{Line: line, Err: fmt.Errorf("%w: line %d: %s", outbox.ErrInvalid, line, fmt.Sprintf(format, args...))}})
}

// LineError carries the YAML line of a problem (cmd prints it as the
// file's line).
type LineError struct {
	Line int
	Err  error
}

func (e *LineError) Error() string { return e.Err.Error() }
func (e *LineError) Unwrap() error { return e.Err }

// mapping returns n's key/value pairs, reporting unknown keys.
func (p *parser) mapping(n *yaml.Node, field string, known ...string) map[string]*yaml.Node {
	out := map[string]*yaml.Node{}
	if n == nil || n.Kind == 0 {
		return out
	}
	if n.Kind != yaml.MappingNode {
		p.errf(n, field, "must be a mapping")
		return out
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if len(known) > 0 && !slices.Contains(known, k.Value) {
			p.errf(k, field, "unknown key %q (known: %s)", k.Value, strings.Join(known, ", "))
			continue
		}
		if _, dup := out[k.Value]; dup {
			p.errf(k, field, "key %q given twice", k.Value)
			continue
		}
		out[k.Value] = n.Content[i+1]
	}
	return out
}

// then reads an outcome's then (o is the outcome, for the error's line).
func (p *parser) then(o, n *yaml.Node, field string) Then {
	t := Then(p.str(n, field))
	switch t {
	case ThenOK, ThenDone, ThenRetry, ThenDead:
	default:
		p.errf(o, field, "%q: use ok, done, retry or dead", t)
	}
	return t
}

func (p *parser) str(n *yaml.Node, field string) string {
	if n == nil {
		return ""
	}
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		p.errf(n, field, "must be a string")
		return ""
	}
	return n.Value
}

func (p *parser) boolean(n *yaml.Node, field string) bool {
	if n == nil {
		return false
	}
	var b bool
	if n.Kind != yaml.ScalarNode || n.Decode(&b) != nil {
		p.errf(n, field, "must be true or false")
	}
	return b
}

func (p *parser) integer(n *yaml.Node, field string, min int) int {
	if n == nil {
		return 0
	}
	var v int
	if n.Kind != yaml.ScalarNode || n.Decode(&v) != nil || v < min {
		p.errf(n, field, "must be an integer ≥ %d", min)
	}
	return v
}

func (p *parser) expr(n *yaml.Node, field string, s scope, asBool bool) *program {
	return p.exprIn(compileEnv(s), n, field, asBool)
}

// exprIn compiles the expression n against env, reporting an error at its
// line; nil when n is absent or does not compile.
func (p *parser) exprIn(env types.Map, n *yaml.Node, field string, asBool bool) *program {
	if n == nil {
		return nil
	}
	if n.Kind != yaml.ScalarNode {
		p.errf(n, field, "must be an expression (a string)")
		return nil
	}
	src := n.Value // a number or a boolean compiles to itself
	prog, err := compile(env, src, asBool)
	if err != nil {
		p.errf(n, field, "expression: %s", scrub(firstLine(err.Error())))
		return nil
	}
	return &program{src: src, line: n.Line, p: prog}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// quoted matches a quoted string in an error message: an expression's
// literal (a password expanded from ${VAR}) or a value of the event (an
// email), neither of which may reach a log.
var quoted = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)

// scrub replaces quoted strings in an expression error by "…".
func scrub(msg string) string { return quoted.ReplaceAllString(msg, `"…"`) }

// exprMap parses a mapping of name → expression in key order.
func (p *parser) exprMap(n *yaml.Node, field string, s scope) []kv {
	var out []kv
	for _, k := range p.keys(n, field) {
		v := valueOf(n, k)
		out = append(out, kv{key: k, prog: p.expr(v, field+"."+k, s, false)})
	}
	return out
}

// keys returns a mapping's keys in order.
func (p *parser) keys(n *yaml.Node, field string) []string {
	if n == nil {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		p.errf(n, field, "must be a mapping")
		return nil
	}
	var ks []string
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i].Value
		if slices.Contains(ks, k) {
			p.errf(n.Content[i], field, "key %q given twice", k)
			continue
		}
		ks = append(ks, k)
	}
	return ks
}

func valueOf(n *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

func (p *parser) tmpl(n *yaml.Node, field string, s scope, depth int) *tmpl {
	if depth > 32 {
		p.errf(n, field, "nested deeper than 32 levels")
		return nil
	}
	switch n.Kind {
	case yaml.MappingNode:
		t := &tmpl{kind: yaml.MappingNode}
		for _, k := range p.keys(n, field) {
			t.keys = append(t.keys, k)
			t.elems = append(t.elems, p.tmpl(valueOf(n, k), field+"."+k, s, depth+1))
		}
		return t
	case yaml.SequenceNode:
		t := &tmpl{kind: yaml.SequenceNode}
		for i, e := range n.Content {
			t.elems = append(t.elems, p.tmpl(e, fmt.Sprintf("%s[%d]", field, i), s, depth+1))
		}
		return t
	case yaml.ScalarNode:
		t := &tmpl{kind: yaml.ScalarNode}
		switch n.Tag {
		case "!!null":
		case "!!bool":
			var b bool
			_ = n.Decode(&b)
			t.lit = b
		case "!!int":
			var i int64
			if n.Decode(&i) != nil {
				p.errf(n, field, "integer out of range")
			}
			t.lit = i
		case "!!float":
			var f float64
			_ = n.Decode(&f)
			t.lit = f
		default:
			t.prog = p.expr(n, field, s, false)
		}
		return t
	case yaml.AliasNode:
		p.errf(n, field, "YAML aliases are not supported here")
	default:
		p.errf(n, field, "unexpected YAML")
	}
	return nil
}

var (
	stepNameRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	headerRe   = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
	methods    = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}
)

// eventTypes are the types an action may name (docs/events.md).
var eventTypes = []string{
	"user.created", "user.updated", "user.deactivated", "user.reactivated", "user.deleted",
	"group.created", "group.updated", "group.deleted", "group.member_added", "group.member_removed",
	"snapshot.started", "user.snapshot", "group.snapshot", "group.members_snapshot", "snapshot.completed",
}

var stepKeys = []string{"name", "method", "path", "query", "headers", "body", "form", "when", "for_each", "save", "outcomes", "always", "forget"}

func (p *parser) steps(n *yaml.Node, field string, session bool) []*step {
	if n == nil {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		p.errf(n, field, "must be a list of steps")
		return nil
	}
	var out []*step
	names := map[string]bool{}
	for i, sn := range n.Content {
		f := fmt.Sprintf("%s[%d]", field, i)
		m := p.mapping(sn, f, stepKeys...)
		st := &step{field: f, line: sn.Line, name: p.str(m["name"], f+".name")}
		switch {
		case m["name"] == nil:
			p.errf(sn, f, "a step needs a name")
		case !stepNameRe.MatchString(st.name):
			p.errf(m["name"], f+".name", "%q: use letters, digits and _ (it is read as steps.%s)", st.name, st.name)
		case names[st.name]:
			p.errf(m["name"], f+".name", "%q: a step of this action has that name already", st.name)
		}
		names[st.name] = true
		st.method = strings.ToUpper(p.str(m["method"], f+".method"))
		if m["method"] == nil {
			p.errf(sn, f, "a step needs a method")
		} else if !slices.Contains(methods, st.method) {
			p.errf(m["method"], f+".method", "%q: use %s", st.method, strings.Join(methods, ", "))
		}
		s := scopeRequest
		if session {
			s |= scopeSession
		}
		st.forEach = p.expr(m["for_each"], f+".for_each", s, false)
		if m["for_each"] != nil {
			if session {
				p.errf(m["for_each"], f+".for_each", "a login step cannot have for_each")
			}
			s |= scopeItem
		}
		if m["path"] == nil {
			p.errf(sn, f, "a step needs a path (an expression, e.g. '\"/users.json\"')")
		}
		st.path = p.expr(m["path"], f+".path", s, false)
		st.when = p.expr(m["when"], f+".when", s, true)
		st.query = p.exprMap(m["query"], f+".query", s)
		st.headers = p.exprMap(m["headers"], f+".headers", s)
		for _, h := range st.headers {
			if !headerRe.MatchString(h.key) {
				p.errf(m["headers"], f+".headers", "%q is not a header name", h.key)
			}
		}
		if m["body"] != nil {
			st.body = p.tmpl(m["body"], f+".body", s, 0)
		}
		st.form = p.exprMap(m["form"], f+".form", s)
		if m["body"] != nil && m["form"] != nil {
			p.errf(m["form"], f+".form", "a step has a body or a form, not both")
		}
		st.save = p.exprMap(m["save"], f+".save", s|scopeResponse)
		st.always = p.boolean(m["always"], f+".always")
		st.forget = p.boolean(m["forget"], f+".forget")
		if session && st.forget {
			p.errf(m["forget"], f+".forget", "a login step cannot forget")
		}
		p.outcomes(m["outcomes"], f, "status", func(of string, o *yaml.Node, om map[string]*yaml.Node, values []*yaml.Node) {
			var oc outcome
			for _, c := range values {
				code, err := strconv.Atoi(c.Value)
				if err != nil || code < 100 || code > 599 {
					p.errf(c, of+".status", "%q is not an HTTP status", c.Value)
				}
				oc.status = append(oc.status, code)
			}
			oc.when = p.expr(om["when"], of+".when", s|scopeResponse, true)
			oc.then = p.then(o, om["then"], of+".then")
			st.outcomes = append(st.outcomes, oc)
		})
		out = append(out, st)
	}
	return out
}

// outcomes parses a step's outcomes: a list of mappings of sel ("status"
// or "code": a value or a list of them), when and then. add gets each
// outcome's field path, its node, its keys and sel's values.
func (p *parser) outcomes(on *yaml.Node, f, sel string, add func(of string, o *yaml.Node, om map[string]*yaml.Node, values []*yaml.Node)) {
	if on == nil {
		return
	}
	if on.Kind != yaml.SequenceNode {
		p.errf(on, f+".outcomes", "must be a list of {%s: [...], when: ..., then: ok|done|retry|dead}", sel)
		return
	}
	for j, o := range on.Content {
		of := fmt.Sprintf("%s.outcomes[%d]", f, j)
		om := p.mapping(o, of, sel, "when", "then")
		var values []*yaml.Node
		switch n := om[sel]; {
		case n == nil:
		case n.Kind == yaml.ScalarNode:
			values = []*yaml.Node{n}
		default:
			values = n.Content
		}
		add(of, o, om, values)
		if om[sel] == nil && om["when"] == nil {
			p.errf(o, of, "an outcome needs %s or when", sel)
		}
	}
}

var sectionKeys = []string{"base_url", "headers", "auth", "tls", "timeout", "rate_limit", "concurrency", "idempotency_key", "actions"}

// parse reads and compiles t's rest section.
func parse(t outbox.Target, prefix string) (*config, []error) {
	p := &parser{prefix: prefix + ".rest"}
	c := &config{target: t.Name, actions: map[string][]*step{}, timeout: t.Timeout}
	root := p.section(&t.Rest, "a target of type rest needs a rest section (base_url, actions)")
	if root == nil {
		return c, p.errs
	}
	m := p.mapping(root, "", sectionKeys...)
	c.baseURL = strings.TrimSuffix(p.str(m["base_url"], ".base_url"), "/")
	if m["base_url"] == nil {
		p.errf(root, ".base_url", "required: the app's base URL, e.g. ${APP_URL}")
	} else if !strings.HasPrefix(c.baseURL, "http://") && !strings.HasPrefix(c.baseURL, "https://") {
		p.errf(m["base_url"], ".base_url", "must start with http:// or https://")
	}
	for _, k := range p.keys(m["headers"], ".headers") {
		v := valueOf(m["headers"], k)
		if !headerRe.MatchString(k) {
			p.errf(v, ".headers", "%q is not a header name", k)
		}
		val := p.str(v, ".headers."+k)
		c.headers = append(c.headers, kv{key: k, lit: val})
		c.secrets = append(c.secrets, val)
	}
	c.timeout = p.timeout(m["timeout"], c.timeout)
	rl := p.mapping(m["rate_limit"], ".rate_limit", "per_second", "burst")
	if n := rl["per_second"]; n != nil {
		if err := n.Decode(&c.perSecond); err != nil || c.perSecond <= 0 {
			p.errf(n, ".rate_limit.per_second", "must be a positive number")
		}
		c.burst = 1
	}
	if n := rl["burst"]; n != nil {
		c.burst = p.integer(n, ".rate_limit.burst", 1)
	}
	c.concurrency = p.integer(m["concurrency"], ".concurrency", 1)
	c.idempotencyKey = p.boolean(m["idempotency_key"], ".idempotency_key")
	tm := p.mapping(m["tls"], ".tls", "ca_file", "cert_file", "key_file", "server_name")
	c.tls = tlsConfig{caFile: p.str(tm["ca_file"], ".tls.ca_file"), certFile: p.str(tm["cert_file"], ".tls.cert_file"),
		keyFile: p.str(tm["key_file"], ".tls.key_file"), serverName: p.str(tm["server_name"], ".tls.server_name")}
	if (c.tls.certFile == "") != (c.tls.keyFile == "") {
		p.errf(m["tls"], ".tls", "cert_file and key_file go together")
	}
	for _, f := range []struct{ name, path string }{{"ca_file", c.tls.caFile}, {"cert_file", c.tls.certFile}, {"key_file", c.tls.keyFile}} {
		if f.path != "" {
			if _, err := os.Stat(f.path); err != nil {
				p.errf(tm[f.name], ".tls."+f.name, "%s: %v", f.path, errors.Unwrap(err))
			}
		}
	}
	p.auth(c, m["auth"])
	c.actions = parseActions(p, root, m["actions"], "steps", func(v *yaml.Node, f string) []*step { return p.steps(v, f, false) })
	return c, p.errs
}

// timeout is a section's timeout (n, a positive duration), else the
// target's (fallback), else outbox.DefaultTimeout.
func (p *parser) timeout(n *yaml.Node, fallback time.Duration) time.Duration {
	d := fallback
	if n != nil {
		var err error
		if d, err = time.ParseDuration(n.Value); err != nil || d <= 0 {
			p.errf(n, ".timeout", "%q: use a positive duration such as 15s", n.Value)
		}
	}
	if d <= 0 {
		d = outbox.DefaultTimeout
	}
	return d
}

// section is a target's section (its YAML document's content), or nil
// after reporting it missing with need.
func (p *parser) section(n *yaml.Node, need string) *yaml.Node {
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	if n.Kind == 0 {
		p.errs = append(p.errs, &outbox.FieldError{Field: p.prefix, Err: fmt.Errorf("%w: %s", outbox.ErrRequired, need)})
		return nil
	}
	return n
}

// parseActions reads a section's actions (an, required in root): each
// event type with its steps, parsed by steps (what names them, for the
// error when there are none). An event type given null acts on nothing; a
// key that is not an event type is reported.
func parseActions[S any](p *parser, root, an *yaml.Node, what string, steps func(v *yaml.Node, field string) S) map[string]S {
	out := map[string]S{}
	if an == nil {
		p.errf(root, ".actions", "required: event type → %s", what)
	}
	for _, typ := range p.keys(an, ".actions") {
		f := ".actions[" + typ + "]"
		v := deref(valueOf(an, typ))
		if !slices.Contains(eventTypes, typ) {
			p.errf(v, f, "%q is not an event type (use one of %s)", typ, strings.Join(eventTypes, ", "))
			continue
		}
		if v.Kind == yaml.ScalarNode && v.Tag == "!!null" {
			var none S
			out[typ] = none
			continue
		}
		out[typ] = steps(v, f)
	}
	return out
}

func (p *parser) auth(c *config, n *yaml.Node) {
	m := p.mapping(n, ".auth", "basic", "bearer", "oauth2", "session")
	if len(m) > 1 {
		p.errf(n, ".auth", "give exactly one of basic, bearer, oauth2, session")
	}
	if b := m["basic"]; b != nil {
		bm := p.mapping(b, ".auth.basic", "username", "password")
		c.auth.kind = "basic"
		c.auth.username, c.auth.password = p.str(bm["username"], ".auth.basic.username"), p.str(bm["password"], ".auth.basic.password")
		if c.auth.username == "" {
			p.errf(b, ".auth.basic.username", "required")
		}
		c.secrets = append(c.secrets, c.auth.password)
	}
	if b := m["bearer"]; b != nil {
		bm := p.mapping(b, ".auth.bearer", "token")
		c.auth.kind = "bearer"
		c.auth.token = p.str(bm["token"], ".auth.bearer.token")
		if c.auth.token == "" {
			p.errf(b, ".auth.bearer.token", "required")
		}
		c.secrets = append(c.secrets, c.auth.token)
	}
	if b := m["oauth2"]; b != nil {
		bm := p.mapping(b, ".auth.oauth2", "token_url", "client_id", "client_secret", "scopes")
		c.auth.kind = "oauth2"
		c.auth.tokenURL = p.str(bm["token_url"], ".auth.oauth2.token_url")
		c.auth.clientID = p.str(bm["client_id"], ".auth.oauth2.client_id")
		c.auth.clientSecret = p.str(bm["client_secret"], ".auth.oauth2.client_secret")
		for _, k := range []string{"token_url", "client_id", "client_secret"} {
			if bm[k] == nil {
				p.errf(b, ".auth.oauth2."+k, "required")
			}
		}
		if s := bm["scopes"]; s != nil {
			if err := s.Decode(&c.auth.scopes); err != nil {
				p.errf(s, ".auth.oauth2.scopes", "must be a list of strings")
			}
		}
		c.secrets = append(c.secrets, c.auth.clientSecret)
	}
	if b := m["session"]; b != nil {
		bm := p.mapping(b, ".auth.session", "steps", "renew_on", "expired_when")
		c.auth.kind = "session"
		c.auth.sessionSteps = p.steps(bm["steps"], ".auth.session.steps", true)
		if len(c.auth.sessionSteps) == 0 {
			p.errf(b, ".auth.session.steps", "required: the login steps")
		}
		c.auth.renewOn = []int{http.StatusUnauthorized}
		if r := bm["renew_on"]; r != nil {
			c.auth.renewOn = nil
			if err := r.Decode(&c.auth.renewOn); err != nil {
				p.errf(r, ".auth.session.renew_on", "must be a list of HTTP statuses")
			}
		}
		c.auth.expiredWhen = p.expr(bm["expired_when"], ".auth.session.expired_when", scopeRequest|scopeResponse, true)
	}
}
