package rest

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	sqlite "modernc.org/sqlite"        // database/sql driver "sqlite" (pure Go: the binary stays static)

	"github.com/scimgate/scimgate/outbox"
)

// maxRows bounds the rows of a statement's result kept for save and the
// dry run.
const maxRows = 100

// SQLSender runs a sql target's actions: all statements of one event in
// one database transaction, committed before the id map is written (and
// before the engine records the event delivered).
type SQLSender struct {
	cfg  *sqlConfig
	db   *sql.DB
	base *Sender // the expression environment, id map and redaction of rest

	trace  func(SQLTrace)
	send   bool
	commit bool // false in a dry run with --send: the transaction is rolled back
}

// NewSQL builds t's sender (the Transport's New). It does not connect:
// the first event does (a database that is down retries that event).
func NewSQL(t outbox.Target, env outbox.Env) (outbox.Sender, error) {
	s, err := newSQLSender(t, env.State, env.Logger)
	if err != nil {
		return nil, err
	}
	return s, nil
}

func newSQLSender(t outbox.Target, state *outbox.State, logger *slog.Logger) (*SQLSender, error) {
	cfg, errs := parseSQL(t, "outbox.targets["+t.Name+"]")
	if len(errs) > 0 {
		return nil, fmt.Errorf("target %s: %w", t.Name, errors.Join(errs...))
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	base := &Sender{cfg: &config{target: t.Name, timeout: cfg.timeout}, state: state, logger: logger, now: time.Now, send: true}
	base.secrets = redactable(cfg.secrets)
	s := &SQLSender{cfg: cfg, base: base, send: true, commit: true}
	name := map[string]string{DriverPostgres: "pgx", DriverMySQL: "mysql", DriverSQLite: "sqlite"}[cfg.driver]
	dsn := cfg.dsn
	if cfg.driver == DriverMySQL {
		mc, err := mysql.ParseDSN(dsn)
		if err != nil {
			return nil, fmt.Errorf("target %s: sql.dsn: %s", t.Name, base.redact(err.Error()))
		}
		if mc.Timeout == 0 {
			mc.Timeout = min(cfg.timeout, 10*time.Second)
		}
		dsn = mc.FormatDSN()
	}
	db, err := sql.Open(name, dsn)
	if err != nil {
		return nil, fmt.Errorf("target %s: sql.dsn: %s", t.Name, base.redact(err.Error()))
	}
	db.SetMaxOpenConns(cfg.maxOpen)
	db.SetMaxIdleConns(cfg.maxIdle)
	db.SetConnMaxLifetime(cfg.connMaxLifetime)
	s.db = db
	return s, nil
}

// Close implements io.Closer.
func (s *SQLSender) Close() error { return s.db.Close() }

// sqlResult is what one statement returned.
type sqlResult struct {
	cols     []string
	rows     []map[string]any
	affected int
}

// Send runs ev's action in one transaction; once it committed, the saves
// go into the id map in one State.Update. A crash between the two leaves
// the app's rows committed and the id map without them: the event is
// redelivered and its statements run again, so they must find what they
// made (an upsert on the app's natural key, or a lookup first; see
// examples/postgres.yaml).
func (s *SQLSender) Send(ctx context.Context, ev outbox.Event) (err error) {
	defer recoverAction(&err, ev.Type)
	steps := s.cfg.actions[ev.Type]
	if len(steps) == 0 {
		return nil
	}
	r, err := s.base.newRun(ctx, ev)
	if err != nil {
		return err
	}
	oldID := r.app["id"]
	ctx, cancel := context.WithTimeout(ctx, s.cfg.timeout)
	defer cancel()
	var tx *sql.Tx
	if s.send {
		if tx, err = s.db.BeginTx(ctx, &sql.TxOptions{Isolation: s.isolation()}); err != nil {
			return s.dbError(nil, nil, err)
		}
		defer func() { _ = tx.Rollback() }() // after a Commit: ErrTxDone
	}
	for _, st := range steps {
		stop, err := s.statement(ctx, r, tx, st)
		if err != nil {
			return err
		}
		if stop {
			break
		}
	}
	if !s.send {
		return nil
	}
	if !s.commit {
		return nil // the deferred Rollback undoes every statement
	}
	if err := tx.Commit(); err != nil {
		return s.dbError(nil, nil, err)
	}
	if s.base.state == nil {
		return nil
	}
	if err := s.saveIDs(r, oldID); err != nil {
		return err
	}
	return nil
}

func (s *SQLSender) isolation() sql.IsolationLevel {
	switch s.cfg.isolation {
	case "read_committed":
		return sql.LevelReadCommitted
	case "repeatable_read":
		return sql.LevelRepeatableRead
	case "serializable":
		return sql.LevelSerializable
	}
	return sql.LevelDefault
}

// statement runs one step. It reports whether the action stops (then: done).
func (s *SQLSender) statement(ctx context.Context, r *run, tx *sql.Tx, st *sqlStep) (bool, error) {
	if st.when != nil {
		v, err := r.eval(st.base, "when", st.when)
		if err != nil {
			return false, err
		}
		if b, _ := v.(bool); !b {
			s.tracef(SQLTrace{Step: st.base.name, Skipped: true})
			return false, nil
		}
	}
	args := make([]any, len(st.args))
	for i, a := range st.args {
		v, err := r.eval(st.base, "args["+strconv.Itoa(i)+"]", a)
		if err != nil {
			return false, err
		}
		args[i] = sqlArg(v)
	}
	tr := SQLTrace{Step: st.base.name, SQL: st.text, Args: s.redactArgs(args)}
	if !s.send {
		for _, kv := range st.save {
			tr.Saves = append(tr.Saves, SaveTrace{Key: kv.key, Expr: kv.prog.src})
		}
		s.tracef(tr)
		return false, nil
	}
	start := time.Now()
	res, qerr := queryStep(ctx, tx, st, args)
	metrics.latency.WithLabelValues(s.cfg.target, st.base.name).Observe(time.Since(start).Seconds())
	then := ThenOK
	errEnv := map[string]any{}
	if qerr != nil {
		code, msg := dbCode(qerr)
		errEnv = map[string]any{"code": code, "message": msg}
		then = s.defaultOutcome(ctx, qerr)
	}
	if res == nil {
		res = &sqlResult{}
	}
	r.env["rows"], r.env["affected"], r.env["error"] = rowsAny(res.rows), res.affected, errEnv
	r.env["row"] = map[string]any{}
	if len(res.rows) > 0 {
		r.env["row"] = res.rows[0]
	}
	defer func() {
		for _, k := range []string{"row", "rows", "affected", "error"} {
			delete(r.env, k)
		}
	}()
	then, err := s.classify(r, st, qerr, then)
	if err != nil {
		return false, err
	}
	metrics.requests.WithLabelValues(s.cfg.target, st.base.name, string(then)).Inc()
	tr.Rows, tr.Affected, tr.Then = res.rows, res.affected, then
	if qerr != nil {
		tr.Error = s.base.redact(qerr.Error())
	}
	switch then {
	case ThenRetry, ThenDead:
		s.tracef(tr)
		if qerr == nil {
			qerr = errors.New("an outcome said " + string(then))
		}
		e := s.dbError(st, args, qerr)
		if then == ThenDead {
			return false, outbox.Permanent(e)
		}
		return false, e
	}
	saves := map[string]any{}
	if qerr == nil {
		for _, kv := range st.save {
			v, err := r.eval(st.base, "save."+kv.key, kv.prog)
			if err != nil {
				return false, err
			}
			saves[kv.key] = v
		}
	}
	tr.Saved = saves
	s.tracef(tr)
	r.remember(st.base, saves)
	// steps.<name>.row: the first row this statement returned, for later
	// statements of the event (not kept in the id map).
	if m, ok := r.env["steps"].(map[string]any)[st.base.name].(map[string]any); ok {
		m["row"] = r.env["row"]
	}
	return then == ThenDone, nil
}

func rowsAny(rows []map[string]any) []any {
	out := make([]any, len(rows))
	for i, r := range rows {
		out[i] = r
	}
	return out
}

// sqlArg turns an expression's value into a parameter: lists and maps as
// JSON text, whole floats as integers (an id from JSON), the rest as is.
func sqlArg(v any) any {
	switch x := v.(type) {
	case nil, string, bool, int64, []byte:
		return x
	case int:
		return int64(x)
	case float64:
		if x == float64(int64(x)) && x < 1<<53 && x > -(1<<53) {
			return int64(x)
		}
		return x
	case json.Number:
		return x.String()
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// query runs a statement and reads up to maxRows rows of its result.
// queryStep runs st's statement in tx, inside a savepoint when st has one
// (sqlStep.savepoint): a failure then leaves the transaction as it was
// before the statement. A savepoint that cannot be set, released or rolled
// back is the statement's error (the connection's trouble: retried).
func queryStep(ctx context.Context, tx *sql.Tx, st *sqlStep, args []any) (*sqlResult, error) {
	if !st.savepoint {
		return query(ctx, tx, st.text, args)
	}
	if _, err := tx.ExecContext(ctx, "SAVEPOINT scimgate_step"); err != nil {
		return nil, err
	}
	res, qerr := query(ctx, tx, st.text, args)
	end := "RELEASE SAVEPOINT scimgate_step"
	if qerr != nil {
		end = "ROLLBACK TO SAVEPOINT scimgate_step"
	}
	if _, err := tx.ExecContext(ctx, end); err != nil && qerr == nil {
		return nil, err
	}
	return res, qerr
}

func query(ctx context.Context, tx *sql.Tx, text string, args []any) (*sqlResult, error) {
	rows, err := tx.QueryContext(ctx, text, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	res := &sqlResult{cols: cols}
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		if len(res.rows) < maxRows {
			m := make(map[string]any, len(cols))
			for i, c := range cols {
				m[c] = columnValue(vals[i])
			}
			res.rows = append(res.rows, m)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	res.affected = len(res.rows)
	return res, nil
}

// columnValue makes a scanned column a value expressions (and the id
// map's JSON) handle: integers as int, text as string.
func columnValue(v any) any {
	switch x := v.(type) {
	case []byte:
		s := string(x)
		if i, err := strconv.ParseInt(s, 10, 64); err == nil && int64(int(i)) == i && strconv.FormatInt(i, 10) == s {
			return int(i) // MySQL's text protocol returns integers as bytes
		}
		return s
	case int64:
		return int(x)
	case int32:
		return int(x)
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	}
	return v
}

// defaultOutcome classifies a database error: a connection that failed, a
// deadlock, a serialization failure, a lock or statement timeout retry;
// what the data or the statement got wrong (a constraint, a syntax error,
// a missing table or column, a value that does not fit) dead-letters.
func (s *SQLSender) defaultOutcome(ctx context.Context, err error) Then {
	if retryableDB(ctx, err) {
		return ThenRetry
	}
	return ThenDead
}

func retryableDB(ctx context.Context, err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == "40001", pe.Code == "40P01": // serialization failure, deadlock
			return true
		case strings.HasPrefix(pe.Code, "08"), strings.HasPrefix(pe.Code, "53"), strings.HasPrefix(pe.Code, "57"), strings.HasPrefix(pe.Code, "58"):
			return true // connection, resources, operator intervention (shutdown, statement timeout), system
		case pe.Code == "55P03": // lock not available
			return true
		}
		return false
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		switch me.Number {
		case 1205, 1213, 1040, 1053, 1152, 1158, 1159, 1160, 1161, 1203, 1927, 3024, 4031:
			// lock wait timeout, deadlock, too many connections, shutdown,
			// aborted/net errors, max_user_connections, killed, query timeout
			return true
		}
		return false
	}
	var le *sqlite.Error
	if errors.As(err, &le) {
		switch le.Code() & 0xff {
		case 5, 6, 10, 13, 14, 15: // SQLITE_BUSY, LOCKED, IOERR, FULL, CANTOPEN, PROTOCOL
			return true
		}
		return false
	}
	if ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return true
	}
	if errors.Is(err, driver.ErrBadConn) || errors.Is(err, mysql.ErrInvalidConn) || errors.Is(err, sql.ErrConnDone) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	var ce *pgconn.ConnectError
	if errors.As(err, &ce) || pgconn.SafeToRetry(err) || pgconn.Timeout(err) {
		return true
	}
	msg := err.Error()
	for _, s := range []string{"connection refused", "connection reset", "broken pipe", "unexpected EOF", "EOF", "i/o timeout", "failed to connect", "conn closed", "server closed"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// dbCode returns a database error's code and message.
func dbCode(err error) (string, string) {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code, pe.Message
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return strconv.Itoa(int(me.Number)), me.Message
	}
	var le *sqlite.Error
	if errors.As(err, &le) {
		return strconv.Itoa(le.Code()), le.Error()
	}
	return "", err.Error()
}

func (s *SQLSender) classify(r *run, st *sqlStep, qerr error, def Then) (Then, error) {
	var code string
	if qerr != nil {
		code, _ = dbCode(qerr)
	}
	for _, o := range st.outcomes {
		if len(o.codes) > 0 && (qerr == nil || !slices.Contains(o.codes, code)) {
			continue
		}
		if o.when != nil {
			v, err := r.eval(st.base, "outcome when", o.when)
			if err != nil {
				return "", err
			}
			if b, _ := v.(bool); !b {
				continue
			}
		}
		return o.then, nil
	}
	return def, nil
}

// singleQuoted matches a quoted value in a database's message (MySQL's
// "Duplicate entry 'bob@example.com' for key …"): an error's text is
// logged, so values stay in the dead letter's body only.
var singleQuoted = regexp.MustCompile(`'(?:[^'\\]|\\.)*'`)

// sqlError is a statement that failed: its text is logged (no values),
// its StatusError body (the dead letter) shows the statement and its
// parameters with secrets redacted, and the database's code and message.
type sqlError struct {
	step, code, msg string
	se              *outbox.StatusError
}

func (e *sqlError) Error() string {
	s := "database"
	if e.step != "" {
		s = "step " + e.step + ": database"
	}
	if e.code != "" {
		s += " error " + e.code
	}
	return s + ": " + singleQuoted.ReplaceAllString(scrub(e.msg), "'…'")
}
func (e *sqlError) Unwrap() error { return e.se }

func (s *SQLSender) dbError(st *sqlStep, args []any, err error) error {
	code, msg := dbCode(err)
	msg = s.base.redact(strings.Join(strings.Fields(msg), " ")) // pgx's connect errors span lines
	var b strings.Builder
	if st != nil {
		fmt.Fprintf(&b, "step %s (line %d)\n--- statement\n%s\n", st.base.name, st.base.line, strings.TrimSpace(st.text))
		for i, a := range s.redactArgs(args) {
			v, _ := json.Marshal(a)
			fmt.Fprintf(&b, "  $%d = %s\n", i+1, v)
		}
	}
	b.WriteString("--- database\n")
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		fmt.Fprintf(&b, "%s %s: %s\n", pe.Severity, pe.Code, s.base.redact(pe.Message))
		if pe.Detail != "" {
			fmt.Fprintf(&b, "DETAIL: %s\n", s.base.redact(pe.Detail))
		}
		if pe.ConstraintName != "" {
			fmt.Fprintf(&b, "constraint: %s\n", pe.ConstraintName)
		}
	} else if code != "" {
		fmt.Fprintf(&b, "error %s: %s\n", code, msg)
	} else {
		fmt.Fprintf(&b, "%s\n", msg)
	}
	e := &sqlError{code: code, msg: msg, se: &outbox.StatusError{Body: truncateUTF8(b.String(), outbox.MaxResponseBody)}}
	if st != nil {
		e.step = st.base.name
	}
	return e
}

func (s *SQLSender) redactArgs(args []any) []any {
	out := make([]any, len(args))
	for i, a := range args {
		if str, ok := a.(string); ok {
			out[i] = s.base.redact(str)
		} else {
			out[i] = a
		}
	}
	return out
}

// saveIDs writes the event's saves (r.app) into the id map: the
// resource's entry and the reverse entry of its "id".
func (s *SQLSender) saveIDs(r *run, oldID any) error {
	typ, scimID, _ := strings.Cut(r.key, "/")
	if r.key == "" || scimID == "" {
		return nil
	}
	var entry []byte
	if len(r.app) > 0 {
		var err error
		if entry, err = json.Marshal(r.app); err != nil {
			return outbox.Permanent(fmt.Errorf("saved values: %v", err))
		}
	}
	err := s.base.state.Update(func(tx *outbox.StateTx) error {
		return putIDs(tx, typ, scimID, entry, oldID, r.app["id"])
	})
	if err != nil {
		return fmt.Errorf("id map (the database committed; a redelivery runs the statements again): %w", err)
	}
	return nil
}

var _ outbox.Sender = (*SQLSender)(nil)
