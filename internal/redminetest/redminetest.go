// Package redminetest starts a real Redmine (Debian's redmine and
// redmine-sqlite packages) for tests: each Start gets a fresh copy of the
// database the package set up, on a free loopback port, with the REST API
// enabled and the admin's API key, and stops it (its whole process group)
// when the test ends. It also has a small client for what tests compare:
// Redmine's users (every status) and groups with their members.
//
// How an instance is isolated: Debian's Redmine is multi-tenant. With
// X_DEBIAN_SITEID=NAME it reads its database.yml and secret key from
// instances/NAME/config and keeps tmp/, log/ and files/ under
// instances/NAME, where instances is /usr/share/redmine/instances
// (→ /var/lib/redmine). NAME here is a relative path that climbs to / and
// back down to a temp dir of the test, so every instance lives entirely in
// t.TempDir() and nothing of the package's own instance is touched.
//
// The database is the package's (dbconfig-common's sqlite file) with the
// REST API switched on by one `rails runner`; that template and the admin's
// API key are made once and cached under os.TempDir() (keyed by the package
// database's size and time), so later runs only copy a file and boot the
// server (about 3 s on a quiet machine).
//
// Without Redmine installed, Start skips the test with one line, unless
// the environment variable CI is set: then it fails (.ci/run installs
// Redmine, so a missing Redmine there is a broken CI, not a desktop).
package redminetest

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Where Debian puts Redmine.
const (
	Root      = "/usr/share/redmine"
	PackageDB = "/var/lib/dbconfig-common/sqlite3/redmine/instances/default/redmine_default"
)

// StartTimeout bounds a server's boot (a Ruby on Rails boot is CPU-bound:
// seconds on a quiet machine, much longer on a loaded CI runner).
var StartTimeout = 3 * time.Minute

// Redmine is one running (or stopped) Redmine instance of a test.
type Redmine struct {
	URL    string // http://127.0.0.1:PORT, no trailing slash
	APIKey string // the admin's, for the X-Redmine-API-Key header

	t    testing.TB
	dir  string
	port string
	mu   sync.Mutex
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

// Missing says why Redmine cannot run here ("" when it can).
func Missing() string {
	if _, err := exec.LookPath("ruby"); err != nil {
		return "ruby not found"
	}
	if _, err := os.Stat(filepath.Join(Root, "bin", "rails")); err != nil {
		return "redmine not installed (" + Root + "/bin/rails missing)"
	}
	if f, err := os.Open(PackageDB); err != nil {
		return "redmine-sqlite's database not readable: " + err.Error()
	} else {
		f.Close()
	}
	gl, err := os.ReadFile(filepath.Join(Root, "Gemfile.local"))
	if err != nil || !bytes.Contains(gl, []byte("webrick")) {
		return Root + "/Gemfile.local does not name webrick"
	}
	return ""
}

const installHint = `apt-get install redmine redmine-sqlite; echo 'gem "webrick"' > ` + Root + `/Gemfile.local`

// require skips (or, with CI set, fails) t when Redmine cannot run here.
func require(t testing.TB) {
	t.Helper()
	requireWhy(t, Missing())
}

func requireWhy(t testing.TB, why string) {
	t.Helper()
	if why == "" {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("redminetest: %s; CI must install Redmine as .ci/run does (%s)", why, installHint)
		return
	}
	t.Skipf("redminetest: %s (to run: %s)", why, installHint)
}

// Start starts a fresh Redmine for t and stops it when t ends.
func Start(t testing.TB) *Redmine {
	t.Helper()
	require(t)
	tpl, key, err := template()
	if err != nil {
		t.Fatalf("redminetest: preparing the database: %v", err)
	}
	dir := t.TempDir()
	if err := newInstance(dir, tpl); err != nil {
		t.Fatalf("redminetest: %v", err)
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	r := &Redmine{URL: "http://127.0.0.1:" + port, APIKey: key, t: t, dir: dir, port: port}
	t.Cleanup(r.Stop)
	r.start()
	return r
}

// Stop kills the server (its whole process group) and waits for it; the
// database stays, for Restart. Stopping a stopped Redmine does nothing.
func (r *Redmine) Stop() {
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	r.cmd = nil
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-done
}

// Restart starts the server again on the same database and port.
func (r *Redmine) Restart() {
	r.t.Helper()
	r.Stop()
	r.start()
}

// Log is the server's output so far (its request log and errors).
func (r *Redmine) Log() string { return r.out.String() }

// logTail is the end of Redmine's production.log (errors with their cause).
func (r *Redmine) logTail(n int) string {
	b, _ := os.ReadFile(filepath.Join(r.dir, "log", "production.log"))
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func (r *Redmine) start() {
	r.t.Helper()
	_ = os.Remove(filepath.Join(r.dir, "tmp", "server.pid"))
	cmd := exec.Command("ruby", "bin/rails", "server", "-u", "webrick", "-b", "127.0.0.1", "-p", r.port,
		"-P", filepath.Join(r.dir, "tmp", "server.pid"))
	cmd.Dir = Root
	cmd.Env = append(os.Environ(), "RAILS_ENV=production", "X_DEBIAN_SITEID="+tenant(r.dir))
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("redminetest: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	r.mu.Lock()
	r.cmd, r.out, r.done = cmd, out, done
	r.mu.Unlock()

	deadline := time.Now().Add(StartTimeout)
	for {
		status, _, err := r.Do("GET", "/users/current.json", nil)
		if err == nil && status == 200 {
			return
		}
		select {
		case <-done:
			r.t.Fatalf("redminetest: rails server exited before it served:\n%s", out)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			r.Stop()
			r.t.Fatalf("redminetest: not serving after %v (last: status %d, %v):\n%s", StartTimeout, status, err, out)
		}
	}
}

// tenant is an X_DEBIAN_SITEID that makes Redmine's instance root dir.
// Redmine joins /usr/share/redmine/instances and it without resolving
// anything; instances is a symlink (to /var/lib/redmine), so the climb to /
// must hold both read literally and as the kernel resolves it: enough ".."
// that both end at / before descending into dir.
func tenant(dir string) string {
	return strings.Repeat("../", 32) + strings.TrimPrefix(dir, "/")
}

// newInstance lays out an instance dir around a copy of the template db.
func newInstance(dir, tplDB string) error {
	for _, d := range []string{"config", "tmp", "log", "files", "public"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	db := filepath.Join(dir, "db.sqlite3")
	if err := copyFile(tplDB, db); err != nil {
		return err
	}
	yml := fmt.Sprintf("production:\n  adapter: sqlite3\n  database: %q\n  encoding: utf8\n  timeout: 10000\n", db)
	if err := os.WriteFile(filepath.Join(dir, "config", "database.yml"), []byte(yml), 0o600); err != nil {
		return err
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	return os.WriteFile(filepath.Join(dir, "config", "secret_key.txt"), []byte(hex.EncodeToString(secret)), 0o600)
}

var (
	tplOnce sync.Once
	tplDB   string
	tplKey  string
	tplErr  error
)

// template returns the path of a database with the REST API enabled and
// the admin's API key, made once per package database and cached.
func template() (string, string, error) {
	tplOnce.Do(func() { tplDB, tplKey, tplErr = makeTemplate() })
	return tplDB, tplKey, tplErr
}

func makeTemplate() (string, string, error) {
	fi, err := os.Stat(PackageDB)
	if err != nil {
		return "", "", err
	}
	sum := sha256.Sum256(fmt.Appendf(nil, "%s %d %d", PackageDB, fi.Size(), fi.ModTime().UnixNano()))
	cache := filepath.Join(os.TempDir(), fmt.Sprintf("scimgate-redminetest-%d", os.Getuid()))
	final := filepath.Join(cache, hex.EncodeToString(sum[:8]))
	if db, key, err := readTemplate(final); err == nil {
		return db, key, nil
	}
	if err := os.MkdirAll(cache, 0o700); err != nil {
		return "", "", err
	}
	work, err := os.MkdirTemp(cache, "new-")
	if err != nil {
		return "", "", err
	}
	defer os.RemoveAll(work)
	if err := newInstance(work, PackageDB); err != nil {
		return "", "", err
	}
	cmd := exec.Command("ruby", "bin/rails", "runner",
		`Setting.rest_api_enabled = "1"; puts "APIKEY=" + User.find_by_login("admin").api_key`)
	cmd.Dir = Root
	cmd.Env = append(os.Environ(), "RAILS_ENV=production", "X_DEBIAN_SITEID="+tenant(work))
	cmd.SysProcAttr = sysProcAttr()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", "", fmt.Errorf("rails runner: %v\n%s", err, out)
	}
	var key string
	for line := range strings.Lines(string(out)) {
		if k, ok := strings.CutPrefix(strings.TrimSpace(line), "APIKEY="); ok {
			key = k
		}
	}
	if len(key) < 20 {
		return "", "", fmt.Errorf("rails runner printed no API key:\n%s", out)
	}
	if err := os.WriteFile(filepath.Join(work, "api-key"), []byte(key), 0o600); err != nil {
		return "", "", err
	}
	// Keep only what a copy needs; publish atomically (another test process
	// may have done the same meanwhile: then use its template).
	pub, err := os.MkdirTemp(cache, "pub-")
	if err != nil {
		return "", "", err
	}
	for _, f := range []string{"db.sqlite3", "api-key"} {
		if err := os.Rename(filepath.Join(work, f), filepath.Join(pub, f)); err != nil {
			os.RemoveAll(pub)
			return "", "", err
		}
	}
	if err := os.Rename(pub, final); err != nil {
		os.RemoveAll(pub)
	}
	return readTemplate(final)
}

func readTemplate(dir string) (string, string, error) {
	key, err := os.ReadFile(filepath.Join(dir, "api-key"))
	if err != nil {
		return "", "", err
	}
	db := filepath.Join(dir, "db.sqlite3")
	if _, err := os.Stat(db); err != nil {
		return "", "", err
	}
	return db, strings.TrimSpace(string(key)), nil
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port), nil
}

// ---- the client ----

var client = &http.Client{Timeout: 30 * time.Second}

// Do sends one request to Redmine's API as the admin; body, when not nil,
// is sent as JSON. It returns the status and the response body.
func (r *Redmine) Do(method, path string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, r.URL+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("X-Redmine-API-Key", r.APIKey)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// call is Do that fails t unless Redmine answers want, and decodes the
// answer into out (when not nil).
// A read that Redmine answers 5xx (SQLite busy under the gateway's
// writes) is asked again a few times: the tests compare state, not
// Redmine's load behaviour.
func (r *Redmine) call(t testing.TB, method, path string, body any, want int, out any) {
	t.Helper()
	status, b, err := r.Do(method, path, body)
	for try := 0; method == "GET" && (err != nil || status >= 500) && try < 20; try++ {
		time.Sleep(250 * time.Millisecond)
		status, b, err = r.Do(method, path, body)
	}
	if err != nil {
		t.Fatalf("redmine %s %s: %v", method, path, err)
	}
	if status != want {
		t.Fatalf("redmine %s %s: status %d, want %d: %.500s\nRedmine's log (tail):\n%s", method, path, status, want, b, r.logTail(4000))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("redmine %s %s: %v: %.500s", method, path, err, b)
		}
	}
}

// User statuses.
const (
	StatusActive     = 1
	StatusRegistered = 2
	StatusLocked     = 3
)

// User is a Redmine account as the tests compare it.
type User struct {
	ID        int    `json:"id,omitempty"`
	Login     string `json:"login"`
	Firstname string `json:"firstname"`
	Lastname  string `json:"lastname"`
	Mail      string `json:"mail"`
	Admin     bool   `json:"admin,omitempty"`
	Status    int    `json:"status,omitempty"`
}

// Group is a Redmine group and its members' user ids, sorted.
type Group struct {
	ID      int    `json:"id"`
	Name    string `json:"name"`
	UserIDs []int  `json:"-"`
}

// Users lists every account, whatever its status (Redmine's list omits
// the status, so it is asked per status), sorted by id. The admin is in it.
func (r *Redmine) Users(t testing.TB) []User {
	t.Helper()
	var all []User
	for _, status := range []int{StatusActive, StatusRegistered, StatusLocked} {
		for offset := 0; ; {
			var page struct {
				Users      []User `json:"users"`
				TotalCount int    `json:"total_count"`
			}
			r.call(t, "GET", fmt.Sprintf("/users.json?status=%d&limit=100&offset=%d", status, offset), nil, 200, &page)
			for _, u := range page.Users {
				u.Status = status
				all = append(all, u)
			}
			offset += len(page.Users)
			if len(page.Users) == 0 || offset >= page.TotalCount {
				break
			}
		}
	}
	slices.SortFunc(all, func(a, b User) int { return a.ID - b.ID })
	return all
}

// Groups lists every (non-builtin) group with its members, sorted by id.
func (r *Redmine) Groups(t testing.TB) []Group {
	t.Helper()
	var list struct {
		Groups []Group `json:"groups"`
	}
	r.call(t, "GET", "/groups.json", nil, 200, &list)
	out := make([]Group, 0, len(list.Groups))
	for _, g := range list.Groups {
		var one struct {
			Group struct {
				ID    int    `json:"id"`
				Name  string `json:"name"`
				Users []struct {
					ID int `json:"id"`
				} `json:"users"`
			} `json:"group"`
		}
		// The gateway may delete the group between the list and this read
		// (deliveries go on while a test compares): then it is gone.
		path := fmt.Sprintf("/groups/%d.json?include=users", g.ID)
		status, b, err := r.Do("GET", path, nil)
		switch {
		case err == nil && status == http.StatusNotFound:
			continue
		case err == nil && status == http.StatusOK && json.Unmarshal(b, &one) == nil:
		default:
			r.call(t, "GET", path, nil, 200, &one) // retries a 5xx, or fails saying why
		}
		grp := Group{ID: one.Group.ID, Name: one.Group.Name, UserIDs: []int{}}
		for _, u := range one.Group.Users {
			grp.UserIDs = append(grp.UserIDs, u.ID)
		}
		slices.Sort(grp.UserIDs)
		out = append(out, grp)
	}
	slices.SortFunc(out, func(a, b Group) int { return a.ID - b.ID })
	return out
}

// CreateUser creates an account directly in Redmine (as an account that
// existed before the gateway, to be adopted) and returns it with its id.
// A Status of 0 creates it active.
func (r *Redmine) CreateUser(t testing.TB, u User) User {
	t.Helper()
	body := map[string]any{"login": u.Login, "firstname": u.Firstname, "lastname": u.Lastname,
		"mail": u.Mail, "generate_password": true}
	if u.Status != 0 {
		body["status"] = u.Status
	}
	var out struct {
		User User `json:"user"`
	}
	r.call(t, "POST", "/users.json", map[string]any{"user": body}, 201, &out)
	return out.User
}

// CreateGroup creates a group directly in Redmine and returns its id.
func (r *Redmine) CreateGroup(t testing.TB, name string, userIDs ...int) int {
	t.Helper()
	if userIDs == nil {
		userIDs = []int{}
	}
	var out struct {
		Group Group `json:"group"`
	}
	r.call(t, "POST", "/groups.json", map[string]any{"group": map[string]any{"name": name, "user_ids": userIDs}}, 201, &out)
	return out.Group.ID
}

// UserByLogin finds an account by its exact login (any status), or nil.
func (r *Redmine) UserByLogin(t testing.TB, login string) *User {
	t.Helper()
	for _, u := range r.Users(t) {
		if strings.EqualFold(u.Login, login) {
			return &u
		}
	}
	return nil
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
