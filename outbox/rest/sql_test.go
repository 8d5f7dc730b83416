package rest_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/scimgate/scimgate/internal/sqltest"
	"github.com/scimgate/scimgate/outbox"
	"github.com/scimgate/scimgate/outbox/rest"
)

const sqlTestSchema = `create table app_users (id bigserial primary key, login text not null unique, email text,
  title text check (length(title) <= 20))`

// sqlSection is a small sql target: an upsert by login that saves the
// row's id, a delete that forgets it.
func sqlSection(dsn string) string {
	return `
driver: postgres
dsn: "` + dsn + `"
actions:
  user.created:
    - name: upsert
      sql: |
        INSERT INTO app_users (login, email, title) VALUES ($1, $2, $3)
        ON CONFLICT (login) DO UPDATE SET email = excluded.email, title = excluded.title
        RETURNING id
      args: [record.login, record.email, record.title]
      save: {id: row.id}
  user.deleted:
    - name: delete
      sql: DELETE FROM app_users WHERE id = $1
      args: [app.id]
      forget: true
`
}

func sqlTarget(t testing.TB, section string) outbox.Target {
	return outbox.Target{Name: "app", Type: outbox.TypeSQL, Sql: restNode(t, section)}
}

// Every problem of a sql section is reported at once, each with its line,
// and the DSN's password is in none of them.
func TestSQLConfigErrors(t *testing.T) {
	section := `
driver: oracle
dsn: "postgres://app:s3cretpassw0rd@db/app"
pool: 3
actions:
  user.created:
    - name: upsert
      sql: INSERT INTO t VALUES ($1)
      args: [record.login +]
      save: {id: row.id}
      outcomes: [{then: maybe}]
    - sql: SELECT 1
  user.exploded: []
`
	errs := rest.ValidateSQL(sqlTarget(t, section), "outbox.targets[0]")
	var msgs []string
	for _, e := range errs {
		msgs = append(msgs, e.Error())
	}
	all := strings.Join(msgs, "\n")
	for _, want := range []string{
		`line 2: "oracle": use postgres`,
		`line 4: unknown key "pool"`,
		`args[0]: invalid: line 9: expression`,
		`line 11: an outcome needs code or when`,
		`line 11: "maybe": use ok, done, retry or dead`,
		`line 12: a statement needs a name`,
		`line 13: "user.exploded" is not an event type`,
	} {
		if !strings.Contains(all, want) {
			t.Errorf("errors lack %q:\n%s", want, all)
		}
	}
	if strings.Contains(all, "s3cretpassw0rd") {
		t.Errorf("an error shows the DSN's password:\n%s", all)
	}
	if errs := rest.ValidateSQL(sqlTarget(t, sqlSection("postgres://u@h/db")), "x"); len(errs) != 0 {
		t.Errorf("a valid section: %v", errs)
	}
	// A sql section on another type is refused by the engine.
	cfg := outbox.DefaultConfig()
	cfg.Transports = map[string]outbox.Transport{outbox.TypeRest: rest.Transport(), outbox.TypeSQL: rest.SQLTransport()}
	cfg.Targets = []outbox.Target{{Name: "app", Type: outbox.TypeRest, Rest: restNode(t, appSection("http://x", "k")), Sql: restNode(t, sqlSection("postgres://u@h/db"))}}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "only a target of type sql takes a sql section") {
		t.Errorf("a sql section on a rest target: %v", err)
	}
}

func sqlHarness(t *testing.T, dsn string) *harness {
	cfg := testConfig(t, appSection("http://127.0.0.1:1", "k"))
	cfg.Targets = []outbox.Target{sqlTarget(t, sqlSection(dsn))}
	cfg.Transports = map[string]outbox.Transport{outbox.TypeSQL: rest.SQLTransport()}
	return startHarness(t, cfg)
}

// A crash between the database's commit and the id map's: the first
// attempt's rows are committed, the id map never heard of them (a sender
// without State is exactly that), and the event is delivered again. The
// upsert finds the row: no duplicate, and the id map then holds its id.
func TestSQLCrashBetweenCommitAndIDMap(t *testing.T) {
	pg := sqltest.Postgres(t)
	pg.Exec(sqlTestSchema)
	ev := userEvent("user.created", "u1", "ada", `,"email":"ada@example.com"`)
	ev.ID = "evt_crash"
	crashed, err := rest.NewSQL(sqlTarget(t, sqlSection(pg.DSN)), outbox.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if err := crashed.Send(context.Background(), ev); err != nil {
		t.Fatalf("first attempt: %v", err)
	}
	crashed.(interface{ Close() error }).Close()
	rows := pg.Query("select id, login from app_users")
	if len(rows) != 1 {
		t.Fatalf("after the first attempt: %q", rows)
	}
	h := sqlHarness(t, pg.DSN)
	h.enqueue(ev)
	h.settled(1, 0)
	if got := pg.Query("select id, login from app_users"); !slices.Equal(got, rows) {
		t.Fatalf("after the redelivery: %q, want %q (no duplicate)", got, rows)
	}
	id, _, _ := strings.Cut(rows[0], "|")
	if got := h.ids("User/u1"); toJSON(got["id"]) != id {
		t.Fatalf("id map: %v, want id %s", got, id)
	}
	if got := h.reverse("User/" + id); got != "u1" {
		t.Fatalf("reverse map: %q", got)
	}
	// The delete uses the saved id and forgets it.
	del := userEvent("user.deleted", "u1", "ada", "")
	h.enqueue(del)
	h.settled(2, 0)
	if got := pg.Query("select count(*) from app_users"); !slices.Equal(got, []string{"0"}) {
		t.Fatalf("after the delete: %q", got)
	}
	if got := h.ids("User/u1"); got != nil {
		t.Fatalf("id map after the delete: %v", got)
	}
}

func toJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

// Outcomes: a constraint violation dead-letters with the statement's name,
// its parameters and the database's code and message, and nothing of the
// event stays committed; a database that refuses connections retries.
func TestSQLOutcomes(t *testing.T) {
	pg := sqltest.Postgres(t)
	pg.Exec(sqlTestSchema)
	s := newSQLSender(t, sqlSection(pg.DSN))
	ev := userEvent("user.created", "u2", "bob'; DROP TABLE app_users; --", `,"email":"bob@example.com","title":"a title much too long for the check"`)
	err := s.Send(context.Background(), ev)
	if err == nil || !outbox.IsPermanent(err) {
		t.Fatalf("a check violation: %v, want a dead letter", err)
	}
	var se *outbox.StatusError
	if !errors.As(err, &se) {
		t.Fatalf("no detail: %v", err)
	}
	for _, want := range []string{"step upsert (line", "INSERT INTO app_users", `$1 = "bob'; DROP TABLE app_users; --"`,
		`$3 = "a title much too long for the check"`, "ERROR 23514", "app_users_title_check"} {
		if !strings.Contains(se.Body, want) {
			t.Errorf("the dead letter lacks %q:\n%s", want, se.Body)
		}
	}
	if !strings.Contains(err.Error(), "step upsert: database error 23514") || strings.Contains(err.Error(), "bob") {
		t.Errorf("the error (logged) is %q: want the step and code, and no value", err)
	}
	if got := pg.Query("select count(*) from app_users"); !slices.Equal(got, []string{"0"}) {
		t.Errorf("rows after the failed event: %q", got)
	}

	down := newSQLSender(t, sqlSection("postgres://app:s3cretpassw0rd@127.0.0.1:1/app?connect_timeout=2"))
	err = down.Send(context.Background(), userEvent("user.created", "u3", "carol", ""))
	if err == nil || outbox.IsPermanent(err) {
		t.Fatalf("a refused connection: %v, want a retry", err)
	}
	if strings.Contains(err.Error(), "s3cretpassw0rd") {
		t.Errorf("the error shows the password: %v", err)
	}
}

// The dry run prints statements and parameters without a database; with
// Send it runs them in a transaction that is rolled back.
func TestSQLDryRun(t *testing.T) {
	pg := sqltest.Postgres(t)
	pg.Exec(sqlTestSchema)
	ev := userEvent("user.created", "u4", "dan", `,"email":"dan@example.com"`)
	var traces []rest.SQLTrace
	err := rest.SQLDryRun(context.Background(), sqlTarget(t, sqlSection(pg.DSN)), ev, rest.SQLDryRunOptions{Trace: func(tr rest.SQLTrace) { traces = append(traces, tr) }})
	if err != nil || len(traces) != 1 || traces[0].Then != "" || !slices.Equal(traces[0].Args, []any{"dan", "dan@example.com", nil}) {
		t.Fatalf("dry run: %v %+v", err, traces)
	}
	traces = nil
	err = rest.SQLDryRun(context.Background(), sqlTarget(t, sqlSection(pg.DSN)), ev, rest.SQLDryRunOptions{Send: true, Trace: func(tr rest.SQLTrace) { traces = append(traces, tr) }})
	if err != nil || len(traces) != 1 || traces[0].Then != rest.ThenOK || len(traces[0].Rows) != 1 || traces[0].Saved["id"] == nil {
		t.Fatalf("dry run --send: %v %+v", err, traces)
	}
	if got := pg.Query("select count(*) from app_users"); !slices.Equal(got, []string{"0"}) {
		t.Errorf("rows after a rolled-back dry run: %q", got)
	}
}

// SQLite (modernc.org/sqlite, pure Go): the same section's statements on a
// file of the test's own — the crash between the two commits adopts the
// row, a check violation dead-letters with SQLite's code, the delete
// forgets.
func TestSQLSQLite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.db")
	dsn := "file:" + path + "?_pragma=busy_timeout(5000)&_pragma=foreign_keys(1)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`create table app_users (id integer primary key, login text not null unique, email text,
		title text check (length(title) <= 20))`); err != nil {
		t.Fatal(err)
	}
	section := strings.Replace(sqlSection(dsn), "driver: postgres", "driver: sqlite", 1)
	rows := func() []string {
		rs, err := db.Query("select id, login from app_users order by id")
		if err != nil {
			t.Fatal(err)
		}
		defer rs.Close()
		var out []string
		for rs.Next() {
			var id int
			var login string
			if err := rs.Scan(&id, &login); err != nil {
				t.Fatal(err)
			}
			out = append(out, strconv.Itoa(id)+"|"+login)
		}
		return out
	}
	ev := userEvent("user.created", "u1", "ada'; DROP TABLE app_users; --", `,"email":"ada@example.com"`)
	ev.ID = "evt_crash"
	crashed, err := rest.NewSQL(sqlTarget(t, section), outbox.Env{})
	if err != nil {
		t.Fatal(err)
	}
	if err := crashed.Send(context.Background(), ev); err != nil {
		t.Fatalf("first attempt: %v", err)
	}
	bad := crashed.Send(context.Background(), userEvent("user.created", "u9", "eve", `,"title":"a title much too long for the check"`))
	var se *outbox.StatusError
	if !outbox.IsPermanent(bad) || !errors.As(bad, &se) || !strings.Contains(se.Body, "error 275") || !strings.Contains(se.Body, `$3 = "a title much too long for the check"`) {
		t.Errorf("a check violation: %v\n%v", bad, se)
	}
	crashed.(interface{ Close() error }).Close()
	want := []string{"1|ada'; DROP TABLE app_users; --"}
	if got := rows(); !slices.Equal(got, want) {
		t.Fatalf("after the first attempt: %q", got)
	}
	cfg := testConfig(t, appSection("http://127.0.0.1:1", "k"))
	cfg.Targets = []outbox.Target{sqlTarget(t, section)}
	cfg.Transports = map[string]outbox.Transport{outbox.TypeSQL: rest.SQLTransport()}
	h := startHarness(t, cfg)
	h.enqueue(ev)
	h.settled(1, 0)
	if got := rows(); !slices.Equal(got, want) {
		t.Fatalf("after the redelivery: %q, want %q", got, want)
	}
	if got := h.ids("User/u1"); toJSON(got["id"]) != "1" {
		t.Fatalf("id map: %v", got)
	}
	h.enqueue(userEvent("user.deleted", "u1", "ada", ""))
	h.settled(2, 0)
	if got := rows(); len(got) != 0 {
		t.Fatalf("after the delete: %q", got)
	}
}

// MariaDB: a duplicate key the statement does not handle dead-letters with
// MariaDB's error number and message (the value only in the dead letter's
// body, not in the logged error), and the event leaves no row.
func TestSQLMariaDBOutcomes(t *testing.T) {
	my := sqltest.MariaDB(t)
	my.Exec("create table app_users (id bigint auto_increment primary key, login varchar(255) not null unique, email varchar(255) unique, title varchar(255))")
	section := `
driver: mysql
dsn: "` + my.DSN + `"
actions:
  user.created:
    - name: insert
      sql: INSERT INTO app_users (login, email, title) VALUES (?, ?, ?)
      args: [record.login, record.email, record.title]
    - name: id
      sql: SELECT LAST_INSERT_ID() AS id
      save: {id: row.id}
`
	s := newSQLSender(t, section)
	if err := s.Send(context.Background(), userEvent("user.created", "u1", "ada", `,"email":"shared@example.com"`)); err != nil {
		t.Fatalf("first insert: %v", err)
	}
	err := s.Send(context.Background(), userEvent("user.created", "u2", "bob", `,"email":"shared@example.com"`))
	var se *outbox.StatusError
	if !outbox.IsPermanent(err) || !errors.As(err, &se) {
		t.Fatalf("a duplicate email: %v, want a dead letter", err)
	}
	for _, want := range []string{"step insert (line", `$2 = "shared@example.com"`, "error 1062: Duplicate entry 'shared@example.com'"} {
		if !strings.Contains(se.Body, want) {
			t.Errorf("the dead letter lacks %q:\n%s", want, se.Body)
		}
	}
	if !strings.Contains(err.Error(), "step insert: database error 1062") || strings.Contains(err.Error(), "shared@example.com") {
		t.Errorf("the logged error: %q", err)
	}
	if got := my.Query("select login from app_users order by id"); !slices.Equal(got, []string{"ada"}) {
		t.Fatalf("rows: %q", got)
	}
}

// A statement whose error an outcome turns into ok lets the event go on:
// on PostgreSQL, where a failed statement aborts the transaction, the
// statement runs inside a savepoint that its failure rolls back, so the
// next statements and the commit still work. Here an insert that meets an
// existing login (23505, "adopt it") is followed by a lookup that saves
// the existing row's id.
func TestSQLOutcomeOKAfterError(t *testing.T) {
	pg := sqltest.Postgres(t)
	pg.Exec(sqlTestSchema)
	pg.Exec("insert into app_users (login, email) values ('ada', 'old@example.com')")
	section := `
driver: postgres
dsn: "` + pg.DSN + `"
actions:
  user.created:
    - name: insert
      sql: INSERT INTO app_users (login, email) VALUES ($1, $2)
      args: [record.login, record.email]
      outcomes: [{code: ["23505"], then: ok}]
    - name: adopt
      sql: UPDATE app_users SET email = $2 WHERE login = $1 RETURNING id
      args: [record.login, record.email]
      save: {id: row.id}
`
	s := newSQLSender(t, section)
	if err := s.Send(context.Background(), userEvent("user.created", "u1", "ada", `,"email":"ada@example.com"`)); err != nil {
		t.Fatalf("an insert refused as a duplicate, with an outcome that says ok, then an update: %v", err)
	}
	if got := pg.Query("select count(*), max(email) from app_users"); !slices.Equal(got, []string{"1|ada@example.com"}) {
		t.Errorf("rows after the event: %q, want the one row, adopted and updated", got)
	}
	if err := s.Send(context.Background(), userEvent("user.created", "u2", "bob", `,"email":"bob@example.com"`)); err != nil {
		t.Fatalf("a new login: %v", err)
	}
	if got := pg.Query("select count(*) from app_users"); !slices.Equal(got, []string{"2"}) {
		t.Errorf("rows after a second user: %q", got)
	}
}

// The same on SQLite (and its savepoint syntax): a refused insert that an
// outcome lets go on, then the statement that adopts the row.
func TestSQLOutcomeOKAfterErrorSQLite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.db")
	dsn := "file:" + path + "?_pragma=busy_timeout(5000)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`create table app_users (id integer primary key, login text not null unique, email text);
		insert into app_users (login, email) values ('ada', 'old@example.com')`); err != nil {
		t.Fatal(err)
	}
	section := `
driver: sqlite
dsn: "` + dsn + `"
actions:
  user.created:
    - name: insert
      sql: INSERT INTO app_users (login, email) VALUES (?, ?)
      args: [record.login, record.email]
      outcomes: [{when: 'error.code != ""', then: ok}]
    - name: adopt
      sql: UPDATE app_users SET email = ? WHERE login = ? RETURNING id
      args: [record.email, record.login]
      save: {id: row.id}
`
	s := newSQLSender(t, section)
	if err := s.Send(context.Background(), userEvent("user.created", "u1", "ada", `,"email":"ada@example.com"`)); err != nil {
		t.Fatalf("a refused insert with an outcome that says ok, then an update: %v", err)
	}
	var n int
	var email string
	if err := db.QueryRow("select count(*), max(email) from app_users").Scan(&n, &email); err != nil || n != 1 || email != "ada@example.com" {
		t.Errorf("rows after the event: %d %q (%v), want the one row, adopted and updated", n, email, err)
	}
}

// newSQLSender builds a sql target's sender from section, closed when the
// test ends.
func newSQLSender(t *testing.T, section string) outbox.Sender {
	t.Helper()
	s, err := rest.NewSQL(sqlTarget(t, section), outbox.Env{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.(interface{ Close() error }).Close() })
	return s
}
