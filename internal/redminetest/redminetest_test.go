package redminetest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestStartFreshStopRestart: a started Redmine serves its API with the
// admin's key; what a test creates is visible through the client (users of
// every status, groups with members); a second Start is a fresh database;
// Stop kills the whole process group (the port refuses), Restart serves the
// same data again, and nothing is written outside the test's temp dir.
func TestStartFreshStopRestart(t *testing.T) {
	pkgBefore, _ := os.Stat(PackageDB)
	r := Start(t)

	users := r.Users(t)
	if len(users) != 1 || users[0].Login != "admin" || users[0].Status != StatusActive {
		t.Fatalf("a fresh Redmine's users: %+v, want the admin only", users)
	}
	if g := r.Groups(t); len(g) != 0 {
		t.Fatalf("a fresh Redmine's groups: %+v", g)
	}
	ada := r.CreateUser(t, User{Login: "ada@example.com", Firstname: "Ada", Lastname: "Lovelace", Mail: "ada@example.com"})
	bob := r.CreateUser(t, User{Login: "bob", Firstname: "Bob", Lastname: "B", Mail: "bob@example.com", Status: StatusLocked})
	if ada.ID == 0 || bob.ID == 0 {
		t.Fatalf("created users without ids: %+v %+v", ada, bob)
	}
	gid := r.CreateGroup(t, "Engineering", ada.ID, bob.ID)

	byLogin := map[string]User{}
	for _, u := range r.Users(t) {
		byLogin[u.Login] = u
	}
	if u := byLogin["ada@example.com"]; u.ID != ada.ID || u.Status != StatusActive || u.Firstname != "Ada" || u.Mail != "ada@example.com" {
		t.Errorf("ada as listed: %+v", u)
	}
	if u := byLogin["bob"]; u.ID != bob.ID || u.Status != StatusLocked {
		t.Errorf("bob (locked) as listed: %+v", u)
	}
	if u := r.UserByLogin(t, "ADA@example.com"); u == nil || u.ID != ada.ID {
		t.Errorf("UserByLogin (any case): %+v", u)
	}
	groups := r.Groups(t)
	if len(groups) != 1 || groups[0].ID != gid || groups[0].Name != "Engineering" ||
		len(groups[0].UserIDs) != 2 || groups[0].UserIDs[0] != min(ada.ID, bob.ID) {
		t.Errorf("groups: %+v", groups)
	}

	// A second instance is fresh and independent.
	r2 := Start(t)
	if r2.URL == r.URL {
		t.Fatalf("two instances on one URL %s", r.URL)
	}
	if u := r2.UserByLogin(t, "ada@example.com"); u != nil {
		t.Errorf("second instance sees the first one's user: %+v", u)
	}
	r2.Stop()

	// Stop: the group is gone and the port refuses.
	pid := r.cmd.Process.Pid
	r.Stop()
	if err := syscall.Kill(-pid, 0); err == nil {
		t.Errorf("process group %d still alive after Stop", pid)
	}
	if _, _, err := r.Do("GET", "/users/current.json", nil); err == nil {
		t.Error("stopped Redmine still answers")
	}
	r.Stop() // twice is harmless

	// Restart: the same data.
	r.Restart()
	if u := r.UserByLogin(t, "bob"); u == nil || u.ID != bob.ID || u.Status != StatusLocked {
		t.Errorf("after restart, bob: %+v", u)
	}

	// The instance lives in the test's dir; the package's database is untouched.
	if _, err := os.Stat(filepath.Join(r.dir, "log", "production.log")); err != nil {
		t.Errorf("instance log not in the test dir: %v", err)
	}
	if pkgAfter, err := os.Stat(PackageDB); err != nil || !pkgAfter.ModTime().Equal(pkgBefore.ModTime()) || pkgAfter.Size() != pkgBefore.Size() {
		t.Errorf("the package's database changed: %v", err)
	}
}

// TestTenantClimbsToRoot: the instance path Redmine builds from
// X_DEBIAN_SITEID resolves to the test dir both literally and through the
// instances symlink.
func TestTenantClimbsToRoot(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(Root, "instances", tenant(dir))
	if filepath.Clean(p) != dir {
		t.Errorf("literally: %s, want %s", filepath.Clean(p), dir)
	}
	if err := os.WriteFile(filepath.Join(dir, "probe"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(Root, "instances")); err != nil {
		t.Skipf("no %s/instances: %v", Root, err)
	}
	if b, err := os.ReadFile(p + "/probe"); err != nil || string(b) != "x" {
		t.Errorf("through the symlink %s: %v", p, err)
	}
	if !strings.HasPrefix(tenant(dir), "../") {
		t.Errorf("tenant %q is not relative", tenant(dir))
	}
}

// TestMissingSkipsOrFails: without Redmine, Start skips with one line
// unless CI is set, when it fails; with Redmine, neither.
func TestMissingSkipsOrFails(t *testing.T) {
	for _, c := range []struct {
		why, ci    string
		skip, fail bool
	}{
		{"ruby not found", "", true, false},
		{"ruby not found", "true", false, true},
		{"", "true", false, false},
		{"", "", false, false},
	} {
		t.Setenv("CI", c.ci)
		ft := &fakeTB{TB: t}
		requireWhy(ft, c.why)
		if ft.skipped != c.skip || ft.failed != c.fail {
			t.Errorf("missing %q, CI=%q: skipped %v, failed %v; want %v, %v", c.why, c.ci, ft.skipped, ft.failed, c.skip, c.fail)
		}
		if (c.skip || c.fail) && (!strings.Contains(ft.msg, c.why) || strings.Contains(ft.msg, "\n")) {
			t.Errorf("message %q: want one line naming %q", ft.msg, c.why)
		}
	}
}

type fakeTB struct {
	testing.TB
	skipped, failed bool
	msg             string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Skipf(format string, a ...any) {
	f.skipped, f.msg = true, fmt.Sprintf(format, a...)
}
func (f *fakeTB) Fatalf(format string, a ...any) {
	f.failed, f.msg = true, fmt.Sprintf(format, a...)
}
