// Package sqltest starts a real database server for tests: PostgreSQL
// (Debian's postgresql package: initdb and postgres) or MariaDB (Debian's
// mariadb-server: mariadb-install-db and mariadbd), each in a fresh data
// directory under os.TempDir() on a free loopback port, stopped and removed
// when the test ends. Restart stops and starts the same server (its data
// kept), as a database outage in the middle of a run.
//
// Without the package installed, Postgres and MariaDB skip the test with
// one line, unless the environment variable CI is set: then they fail
// (.ci/run installs both, so a missing server there is a broken CI).
package sqltest

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
)

// StartTimeout bounds a server's start.
var StartTimeout = 2 * time.Minute

// StopTimeout bounds a server's clean shutdown; after it the server is
// killed.
var StopTimeout = 30 * time.Second

const installHint = "apt-get install postgresql mariadb-server"

// Server is one running database server of a test.
type Server struct {
	Driver string // postgres or mysql (the sql target's driver)
	DSN    string // of database "app"

	t    testing.TB
	dir  string
	port string
	args []string // the server's command line
	asPG bool
	// shutDown is the line the server logs last on a clean shutdown.
	shutDown string
	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{}
	out      *strings.Builder
	db       *sql.DB
}

func requireWhy(t testing.TB, why string) {
	t.Helper()
	if why == "" {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("sqltest: %s; CI must install it as .ci/run does (%s)", why, installHint)
	}
	t.Skipf("sqltest: %s (to run: %s)", why, installHint)
}

func pgBin() string {
	m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(m) == 0 {
		return ""
	}
	sort.Strings(m)
	return filepath.Dir(m[len(m)-1])
}

// MissingPostgres says why PostgreSQL cannot run here ("" when it can).
func MissingPostgres() string {
	if pgBin() == "" {
		return "PostgreSQL not installed (/usr/lib/postgresql/*/bin/initdb missing)"
	}
	if os.Geteuid() == 0 {
		if _, err := user.Lookup("postgres"); err != nil {
			return "running as root without a postgres user to run the server as"
		}
	}
	return ""
}

// MissingMariaDB says why MariaDB cannot run here ("" when it can).
func MissingMariaDB() string {
	for _, b := range []string{"mariadb-install-db", "mariadbd"} {
		if _, err := exec.LookPath(b); err != nil {
			if _, err := os.Stat("/usr/sbin/" + b); err != nil {
				return "MariaDB not installed (" + b + " missing)"
			}
		}
	}
	return ""
}

func lookPath(b string) string {
	if p, err := exec.LookPath(b); err == nil {
		return p
	}
	return "/usr/sbin/" + b
}

// freePort returns a loopback port free now, for the server to bind next
// and again after each Restart. It is taken below Linux's ephemeral range
// (32768–60999, where another process's outgoing connection can take it
// as its source port while the server is down) and below the range the
// cmd/scimgate tests take their ports from (20000–31999).
func freePort(t testing.TB) string {
	for range 100 {
		port := strconv.Itoa(10000 + rand.IntN(10000))
		if l, err := net.Listen("tcp", "127.0.0.1:"+port); err == nil {
			l.Close()
			return port
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

// asPostgres runs a command as the postgres user when we are root
// (initdb and postgres refuse to run as root).
func asPostgres(name string, args ...string) *exec.Cmd {
	if os.Geteuid() == 0 {
		return exec.Command("runuser", append([]string{"-u", "postgres", "--", name}, args...)...)
	}
	return exec.Command(name, args...)
}

func newDir(t testing.TB, prefix string) string {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// Postgres starts a fresh PostgreSQL with a database "app" for t.
func Postgres(t testing.TB) *Server {
	t.Helper()
	requireWhy(t, MissingPostgres())
	bin := pgBin()
	dir := newDir(t, "sqltest-pg-")
	if os.Geteuid() == 0 {
		u, _ := user.Lookup("postgres")
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	data := filepath.Join(dir, "data")
	if out, err := asPostgres(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "--locale=C").CombinedOutput(); err != nil {
		t.Fatalf("sqltest: initdb: %v\n%s", err, out)
	}
	port := freePort(t)
	s := &Server{Driver: "postgres", t: t, dir: dir, port: port, asPG: true, shutDown: "database system is shut down",
		DSN: "postgres://postgres@127.0.0.1:" + port + "/app?sslmode=disable"}
	s.args = []string{filepath.Join(bin, "postgres"), "-D", data, "-p", port, "-k", dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
		"-c", "full_page_writes=off", "-c", "shared_buffers=16MB", "-c", "max_connections=40"}
	return s.launch("postgres://postgres@127.0.0.1:" + port + "/postgres?sslmode=disable")
}

// MariaDB starts a fresh MariaDB with a database "app" for t.
func MariaDB(t testing.TB) *Server {
	t.Helper()
	requireWhy(t, MissingMariaDB())
	dir := newDir(t, "sqltest-mariadb-")
	data := filepath.Join(dir, "data")
	install := exec.Command(lookPath("mariadb-install-db"), "--no-defaults", "--datadir="+data, "--user="+currentUser(),
		"--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve")
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("sqltest: mariadb-install-db: %v\n%s", err, out)
	}
	port := freePort(t)
	s := &Server{Driver: "mysql", t: t, dir: dir, port: port, shutDown: "Shutdown complete",
		DSN: "root@tcp(127.0.0.1:" + port + ")/app"}
	s.args = []string{lookPath("mariadbd"), "--no-defaults", "--datadir=" + data, "--port=" + port,
		"--bind-address=127.0.0.1", "--socket=" + filepath.Join(dir, "sock"), "--pid-file=" + filepath.Join(dir, "pid"),
		"--user=" + currentUser(), "--skip-grant-tables", "--skip-name-resolve", "--skip-log-bin",
		"--innodb-buffer-pool-size=32M", "--innodb-log-file-size=16M", "--innodb-flush-log-at-trx-commit=2",
		"--max-connections=40", "--performance-schema=off"}
	return s.launch("root@tcp(127.0.0.1:" + port + ")/")
}

// launch starts the server s describes, waits until it answers on admin
// (a DSN of a database the server has from the start), creates the
// database "app" and opens the pool Exec and Query use; the server stops
// when the test ends.
func (s *Server) launch(admin string) *Server {
	s.t.Helper()
	s.t.Cleanup(func() { _ = s.stop() })
	s.start()
	s.waitReady(admin)
	db, err := sql.Open(s.driverName(), admin)
	if err != nil {
		s.t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("CREATE DATABASE app"); err != nil {
		s.t.Fatalf("sqltest: create database: %v", err)
	}
	s.open()
	return s
}

func currentUser() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return "root"
}

func (s *Server) driverName() string {
	if s.Driver == "postgres" {
		return "pgx"
	}
	return "mysql"
}

func (s *Server) open() {
	db, err := sql.Open(s.driverName(), s.DSN)
	if err != nil {
		s.t.Fatal(err)
	}
	db.SetMaxOpenConns(2)
	s.db = db
	s.t.Cleanup(func() { _ = db.Close() })
}

func (s *Server) start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	var cmd *exec.Cmd
	if s.asPG {
		cmd = asPostgres(s.args[0], s.args[1:]...)
	} else {
		cmd = exec.Command(s.args[0], s.args[1:]...)
	}
	s.out = &strings.Builder{}
	cmd.Stdout, cmd.Stderr = &lockedWriter{b: s.out, mu: &s.mu}, &lockedWriter{b: s.out, mu: &s.mu}
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("sqltest: start %s: %v", s.args[0], err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.cmd, s.done = cmd, done
}

type lockedWriter struct {
	b  *strings.Builder
	mu *sync.Mutex
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.b.Len() < 1<<20 {
		w.b.Write(p)
	}
	return len(p), nil
}

func (s *Server) waitReady(dsn string) {
	s.t.Helper()
	db, err := sql.Open(s.driverName(), dsn)
	if err != nil {
		s.t.Fatal(err)
	}
	defer db.Close()
	deadline := time.Now().Add(StartTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err = db.PingContext(ctx)
		cancel()
		if err == nil {
			return
		}
		select {
		case <-s.done:
			s.mu.Lock()
			out := s.out.String()
			s.mu.Unlock()
			s.t.Fatalf("sqltest: %s exited: %s", filepath.Base(s.args[0]), tail(out))
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("sqltest: %s not ready after %v: %v", filepath.Base(s.args[0]), StartTimeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func tail(s string) string {
	if len(s) > 4000 {
		return s[len(s)-4000:]
	}
	return s
}

// stop stops the server (a fast shutdown; a kill if it lingers). The
// error says why the stop was not clean: killed, or no clean shutdown in
// the server's log.
func (s *Server) stop() error {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return nil
	}
	how := "term"
	if s.asPG {
		how = "int" // PostgreSQL's fast shutdown (SIGTERM waits for clients)
	}
	_ = signalGroup(cmd, how)
	var err error
	select {
	case <-done:
	case <-time.After(StopTimeout):
		_ = signalGroup(cmd, "kill")
		<-done
		err = fmt.Errorf("not stopped after %v: killed", StopTimeout)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cmd = nil
	if err == nil && !strings.Contains(s.out.String(), s.shutDown) {
		err = fmt.Errorf("exited without logging %q", s.shutDown)
	}
	if err != nil {
		return fmt.Errorf("%s: %w: %s", filepath.Base(s.args[0]), err, tail(s.out.String()))
	}
	return nil
}

// Restart stops the server cleanly (PostgreSQL's fast shutdown, MariaDB's
// normal one: every committed transaction kept, whatever the durability
// settings) and starts it again on the same port with the same data:
// connections open meanwhile fail. A stop that is not clean fails the test.
func (s *Server) Restart() {
	s.t.Helper()
	if err := s.stop(); err != nil {
		s.t.Fatalf("sqltest: restart: the stop was not clean: %v", err)
	}
	s.start()
	s.waitReady(s.DSN)
	// The pool's connections died with the server (PostgreSQL's last word
	// on them is 57P01, which database/sql does not take for a bad
	// connection): start a new pool.
	old := s.db
	s.open()
	_ = old.Close()
}

// Exec runs statements (split on ";\n") as the test's setup.
func (s *Server) Exec(stmts string) {
	s.t.Helper()
	for _, st := range strings.Split(stmts, ";\n") {
		if strings.TrimSpace(st) == "" {
			continue
		}
		if _, err := s.db.Exec(st); err != nil {
			s.t.Fatalf("sqltest: %v\n%s", err, st)
		}
	}
}

// Begin starts a transaction (on a connection of its own) for a test to
// hold locks with while the code under test runs; the test commits or
// rolls it back.
func (s *Server) Begin() *sql.Tx {
	s.t.Helper()
	tx, err := s.db.Begin()
	if err != nil {
		s.t.Fatalf("sqltest: begin: %v", err)
	}
	return tx
}

// Query returns a query's rows, each column as text ("NULL" for null),
// one line per row with the columns separated by "|".
func (s *Server) Query(q string, args ...any) []string {
	s.t.Helper()
	rows, err := s.db.Query(q, args...)
	if err != nil {
		s.t.Fatalf("sqltest: %v\n%s", err, q)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var out []string
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			s.t.Fatal(err)
		}
		parts := make([]string, len(cols))
		for i, v := range vals {
			parts[i] = "NULL"
			if v.Valid {
				parts[i] = v.String
			}
		}
		out = append(out, strings.Join(parts, "|"))
	}
	if err := rows.Err(); err != nil {
		s.t.Fatal(err)
	}
	return out
}

// String names the server for messages.
func (s *Server) String() string { return fmt.Sprintf("%s on 127.0.0.1:%s", s.Driver, s.port) }
