package rest

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/expr-lang/expr/types"
	"gopkg.in/yaml.v3"

	"github.com/scimgate/scimgate/outbox"
)

// SQLTransport returns the outbox.Transport of type sql: the same actions
// as type rest (expressions, id map, outcomes, dry run), whose steps are
// parameterized statements against the app's database in one transaction
// per event. See docs/actions.md.
func SQLTransport() outbox.Transport {
	return outbox.Transport{Validate: ValidateSQL, New: NewSQL, Describe: describeSQL}
}

// ValidateSQL checks t's sql section and returns every problem, each an
// *outbox.FieldError whose message names its YAML line.
func ValidateSQL(t outbox.Target, prefix string) []error {
	_, errs := parseSQL(t, prefix)
	return errs
}

// Drivers a sql target may name.
const (
	DriverPostgres = "postgres"
	DriverMySQL    = "mysql"
	DriverSQLite   = "sqlite"
)

// sqlConfig is a parsed, compiled sql section.
type sqlConfig struct {
	target          string
	driver          string
	dsn             string
	timeout         time.Duration
	maxOpen         int
	maxIdle         int
	connMaxLifetime time.Duration
	isolation       string
	actions         map[string][]*sqlStep
	secrets         []string
}

// sqlStep is one statement of an action.
type sqlStep struct {
	base     *step // name, line, forget: what eval and remember read
	text     string
	args     []*program
	when     *program
	save     []kv
	outcomes []sqlOutcome
	// savepoint is set when an outcome can let the event go on after this
	// statement failed (then ok or done): the statement runs inside a
	// savepoint its failure rolls back, since PostgreSQL refuses every
	// later statement of a transaction in which one failed.
	savepoint bool
}

type sqlOutcome struct {
	codes []string // SQLSTATE (PostgreSQL) or error number (MySQL); empty: any
	when  *program
	then  Then
}

// sqlScopeRow marks a program that sees the statement's result (row,
// rows, affected) or its error.
const sqlScopeRow scope = 1 << 10

func sqlEnv(s scope) types.Map {
	m := compileEnv(s &^ sqlScopeRow)
	if s&sqlScopeRow != 0 {
		obj := types.TypeOf(map[string]any{})
		m["row"] = obj
		m["rows"] = types.TypeOf([]any{})
		m["affected"] = types.TypeOf(0)
		m["error"] = obj
	}
	return m
}

func (p *parser) sqlExpr(n *yaml.Node, field string, s scope, asBool bool) *program {
	return p.exprIn(sqlEnv(s), n, field, asBool)
}

var sqlSectionKeys = []string{"driver", "dsn", "timeout", "max_open_conns", "max_idle_conns", "conn_max_lifetime", "isolation", "actions"}
var sqlStepKeys = []string{"name", "sql", "args", "when", "save", "outcomes", "forget"}
var isolations = []string{"default", "read_committed", "repeatable_read", "serializable"}

// parseSQL reads and compiles t's sql section.
func parseSQL(t outbox.Target, prefix string) (*sqlConfig, []error) {
	p := &parser{prefix: prefix + ".sql"}
	c := &sqlConfig{target: t.Name, actions: map[string][]*sqlStep{}, timeout: t.Timeout}
	root := p.section(&t.Sql, "a target of type sql needs a sql section (driver, dsn, actions)")
	if root == nil {
		return c, p.errs
	}
	m := p.mapping(root, "", sqlSectionKeys...)
	c.driver = p.str(m["driver"], ".driver")
	switch {
	case m["driver"] == nil:
		p.errf(root, ".driver", "required: postgres, mysql (also MariaDB) or sqlite")
	case c.driver != DriverPostgres && c.driver != DriverMySQL && c.driver != DriverSQLite:
		p.errf(m["driver"], ".driver", "%q: use postgres, mysql (also MariaDB) or sqlite", c.driver)
	}
	c.dsn = p.str(m["dsn"], ".dsn")
	if m["dsn"] == nil || strings.TrimSpace(c.dsn) == "" {
		p.errf(orNode(m["dsn"], root), ".dsn", "required: the app's database, e.g. ${APP_DATABASE_URL} (or APP_DATABASE_URL_FILE naming a file that holds it)")
	}
	c.secrets = append(c.secrets, dsnSecrets(c.dsn)...)
	c.timeout = p.timeout(m["timeout"], c.timeout)
	c.maxOpen = p.integer(m["max_open_conns"], ".max_open_conns", 1)
	if c.maxOpen == 0 {
		c.maxOpen = 4
	}
	c.maxIdle = p.integer(m["max_idle_conns"], ".max_idle_conns", 0)
	if m["max_idle_conns"] == nil {
		// Keep every open connection idle between events: with fewer, the
		// pool closed and reopened sessions all the time (83–224 sessions for
		// 5,000–10,000 events, doubling PostgreSQL's CPU per event;
		// docs/performance.md).
		c.maxIdle = c.maxOpen
	}
	if n := m["conn_max_lifetime"]; n != nil {
		d, err := time.ParseDuration(n.Value)
		if err != nil || d < 0 {
			p.errf(n, ".conn_max_lifetime", "%q: use a duration such as 30m", n.Value)
		}
		c.connMaxLifetime = d
	}
	c.isolation = p.str(m["isolation"], ".isolation")
	if c.isolation != "" && !slices.Contains(isolations, c.isolation) {
		p.errf(m["isolation"], ".isolation", "%q: use %s", c.isolation, strings.Join(isolations, ", "))
	}
	c.actions = parseActions(p, root, m["actions"], "statements", p.sqlSteps)
	return c, p.errs
}

func orNode(n, fallback *yaml.Node) *yaml.Node {
	if n != nil {
		return n
	}
	return fallback
}

func (p *parser) sqlSteps(n *yaml.Node, field string) []*sqlStep {
	if n.Kind != yaml.SequenceNode {
		p.errf(n, field, "must be a list of statements")
		return nil
	}
	var out []*sqlStep
	names := map[string]bool{}
	for i, sn := range n.Content {
		f := fmt.Sprintf("%s[%d]", field, i)
		sn = deref(sn)
		m := p.mapping(sn, f, sqlStepKeys...)
		st := &sqlStep{base: &step{field: f, line: sn.Line, name: p.str(m["name"], f+".name")}}
		name := st.base.name
		switch {
		case m["name"] == nil:
			p.errf(sn, f, "a statement needs a name")
		case !stepNameRe.MatchString(name):
			p.errf(m["name"], f+".name", "%q: use letters, digits and _ (it is read as steps.%s)", name, name)
		case names[name]:
			p.errf(m["name"], f+".name", "%q: a statement of this action has that name already", name)
		}
		names[name] = true
		st.text = p.str(m["sql"], f+".sql")
		if m["sql"] == nil || strings.TrimSpace(st.text) == "" {
			p.errf(sn, f+".sql", "a step needs its statement (sql: 'INSERT … VALUES ($1, $2)'), values as args")
		}
		if an := m["args"]; an != nil {
			if an.Kind != yaml.SequenceNode {
				p.errf(an, f+".args", "must be a list of expressions, bound in order as the statement's parameters")
			} else {
				for j, a := range an.Content {
					st.args = append(st.args, p.sqlExpr(a, fmt.Sprintf("%s.args[%d]", f, j), scopeRequest, false))
				}
			}
		}
		st.when = p.sqlExpr(m["when"], f+".when", scopeRequest, true)
		for _, k := range p.keys(m["save"], f+".save") {
			st.save = append(st.save, kv{key: k, prog: p.sqlExpr(valueOf(m["save"], k), f+".save."+k, scopeRequest|sqlScopeRow, false)})
		}
		st.base.forget = p.boolean(m["forget"], f+".forget")
		p.outcomes(m["outcomes"], f, "code", func(of string, o *yaml.Node, om map[string]*yaml.Node, values []*yaml.Node) {
			var oc sqlOutcome
			for _, c := range values {
				if c.Kind != yaml.ScalarNode || c.Value == "" {
					p.errf(c, of+".code", "must be a database error code (a SQLSTATE such as 23505, or a MySQL error number such as 1062)")
					continue
				}
				oc.codes = append(oc.codes, c.Value)
			}
			oc.when = p.sqlExpr(om["when"], of+".when", scopeRequest|sqlScopeRow, true)
			oc.then = p.then(o, om["then"], of+".then")
			st.outcomes = append(st.outcomes, oc)
			st.savepoint = st.savepoint || oc.then == ThenOK || oc.then == ThenDone
		})
		out = append(out, st)
	}
	return out
}

// dsnSecrets returns what of a DSN is secret: the DSN itself and its
// password (URL form postgres://u:p@h/db, key=value form password=p, or
// MySQL's user:pass@tcp(…)/db).
func dsnSecrets(dsn string) []string {
	if dsn == "" {
		return nil
	}
	out := []string{dsn}
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		if pw, ok := u.User.Password(); ok && pw != "" {
			out = append(out, pw, url.QueryEscape(pw), url.PathEscape(pw))
		}
	}
	for _, f := range strings.Fields(dsn) {
		if v, ok := strings.CutPrefix(f, "password="); ok && v != "" {
			out = append(out, strings.Trim(v, "'"))
		}
	}
	if at := strings.LastIndex(dsn, "@"); at > 0 && !strings.Contains(dsn, "://") {
		if _, pw, ok := strings.Cut(dsn[:at], ":"); ok && pw != "" {
			out = append(out, pw)
		}
	}
	return out
}

// describeSQL names where a sql target writes, without secrets.
func describeSQL(t outbox.Target) string {
	c, _ := parseSQL(t, "")
	host := "?"
	if u, err := url.Parse(c.dsn); err == nil && u.Host != "" {
		host = u.Host + u.Path
	} else if at := strings.LastIndex(c.dsn, "@"); at >= 0 {
		host = c.dsn[at+1:]
		if q := strings.IndexByte(host, '?'); q >= 0 {
			host = host[:q]
		}
	}
	return c.driver + "://" + host
}

// deref follows a YAML alias (an action given as *anchor of another's
// statements).
func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 8; i++ {
		n = n.Alias
	}
	return n
}
