package store

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/scimgate/scimgate/gateway/scim"
	"github.com/scimgate/scimgate/mapping"
)

// refFieldRules are the default rules and a manager_login: the manager's
// login (their userName) rather than their SCIM id.
func refFieldRules() mapping.Rules {
	r := mapping.DefaultRules()
	r.User = append(r.User, mapping.Rule{
		To:        "manager_login",
		From:      mapping.StringList{"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value", "manager.value"},
		Reference: &mapping.Reference{By: mapping.StringList{"id", "externalId", "userName"}, Field: "login"},
	})
	return r
}

func reportOf(userName, manager string) string {
	return fmt.Sprintf(`{"userName":%q,"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"manager":{"value":%q}}}`, userName, manager)
}

// wantUpdated checks that evs are exactly one user.updated per user in
// users (in that order), each changing field from old to new (nil: absent).
func wantUpdated(t *testing.T, what string, evs []loggedEvent, fieldName string, old, new any, users ...string) {
	t.Helper()
	if len(evs) != len(users) {
		t.Fatalf("%s: events %v, want a user.updated for each of %v", what, types(evs), users)
	}
	for i, e := range evs {
		if e.Type != "user.updated" || field(t, e.Data, "user.id") != users[i] {
			t.Errorf("%s: event %d is %s of %v, want user.updated of %s", what, i, e.Type, field(t, e.Data, "user.id"), users[i])
		}
		var changes map[string]struct{ Old, New any }
		if err := json.Unmarshal(e.Changes, &changes); err != nil {
			t.Fatalf("%s: changes %s: %v", what, e.Changes, err)
		}
		c, ok := changes[fieldName]
		if !ok || c.Old != old || c.New != new || len(changes) != 1 {
			t.Errorf("%s: changes %s, want only %s from %v to %v", what, e.Changes, fieldName, old, new)
		}
	}
}

func recordField(t *testing.T, ts *testStore, id, name string) any {
	t.Helper()
	rec, err := ts.UserRecord(id)
	if err != nil {
		t.Fatal(err)
	}
	return field(t, rec, name)
}

// TestReferenceFieldThroughStore: a reference with a
// field holds the manager's login; it resolves whichever of manager and
// report comes first, follows the manager's login when it changes, and
// waits again when the manager is deleted, each change a user.updated of
// the report. Real bbolt file, and a new Store over it at the end.
func TestReferenceFieldThroughStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "scimgate.db")
	ts := newTestStoreAt(t, path, refFieldRules())

	// Manager first.
	boss := ts.createUser(`{"userName":"boss@example.com","externalId":"00u1boss"}`)
	early := ts.createUser(reportOf("early@example.com", "00u1boss"))
	if got := recordField(t, ts, early, "manager_login"); got != "boss@example.com" {
		t.Errorf("manager first: manager_login = %v, want boss@example.com", got)
	}
	if got := recordField(t, ts, early, "manager_id"); got != boss {
		t.Errorf("manager first: manager_id = %v, want %s (the id reference beside it)", got, boss)
	}

	// Manager later: pending, then linked with user.updated.
	late := ts.createUser(reportOf("late@example.com", "00u1lead"))
	if got := recordField(t, ts, late, "manager_login"); got != nil {
		t.Errorf("manager later: manager_login = %v before the manager exists", got)
	}
	before := ts.tail()
	lead := ts.createUser(`{"userName":"lead@example.com","externalId":"00u1lead"}`)
	evs := ts.events(before)
	if len(evs) != 2 || evs[0].Type != "user.created" {
		t.Fatalf("manager later: events %v, want user.created then the report's user.updated (manager_id, manager_login)", types(evs))
	}
	if got := recordField(t, ts, late, "manager_login"); got != "lead@example.com" {
		t.Errorf("manager later: manager_login = %v, want lead@example.com", got)
	}
	if evs[1].Type != "user.updated" || field(t, evs[1].Data, "user.id") != late ||
		!strings.Contains(string(evs[1].Changes), `"manager_login":{"old":null,"new":"lead@example.com"}`) {
		t.Errorf("manager later: event %s %s %s", evs[1].Type, evs[1].Data, evs[1].Changes)
	}

	// The manager's login changes: the reports follow, with user.updated.
	early2 := ts.createUser(reportOf("early2@example.com", "00u1boss"))
	before = ts.tail()
	if _, err := ts.PatchUser(boss, "", []scim.Operation{{Op: "replace", Path: &scim.Path{Attr: "userName"}, Value: "chief@example.com"}}); err != nil {
		t.Fatal(err)
	}
	evs = ts.events(before)
	if len(evs) == 0 || evs[0].Type != "user.updated" || field(t, evs[0].Data, "user.id") != boss {
		t.Fatalf("login change: events %v, want the manager's user.updated first", types(evs))
	}
	wantUpdated(t, "login change", evs[1:], "manager_login", "boss@example.com", "chief@example.com", early, early2)

	// A change of the manager that no reference outputs: no report moves.
	before = ts.tail()
	if _, err := ts.PatchUser(boss, "", []scim.Operation{{Op: "replace", Path: &scim.Path{Attr: "title"}, Value: "CEO"}}); err != nil {
		t.Fatal(err)
	}
	if evs := ts.events(before); len(evs) != 1 || field(t, evs[0].Data, "user.id") != boss {
		t.Errorf("title change: events %v, want the manager's user.updated only", types(evs))
	}

	// The manager deleted: the reports lose the field and wait.
	before = ts.tail()
	if err := ts.DeleteUser(boss, ""); err != nil {
		t.Fatal(err)
	}
	evs = ts.events(before)
	if len(evs) != 3 || evs[0].Type != "user.deleted" {
		t.Fatalf("delete: events %v, want user.deleted and two user.updated", types(evs))
	}
	for _, e := range evs[1:] {
		if !strings.Contains(string(e.Changes), `"manager_login":{"old":"chief@example.com","new":null}`) {
			t.Errorf("delete: changes %s do not remove manager_login", e.Changes)
		}
	}
	for _, id := range []string{early, early2} {
		if got := recordField(t, ts, id, "manager_login"); got != nil {
			t.Errorf("delete: report %s keeps manager_login %v", id, got)
		}
	}

	// Back under a new login: linked again; and it all survives a restart.
	back := ts.createUser(`{"userName":"returned@example.com","externalId":"00u1boss"}`)
	// A new Store over the file (a restart; the file stays open for the
	// test's consistency check).
	ts.Close()
	mapper, err := mapping.Compile(refFieldRules())
	if err != nil {
		t.Fatal(err)
	}
	ts = &testStore{Store: New(ts.db, mapper, Options{}), t: t, db: ts.db}
	t.Cleanup(ts.Close)
	for _, id := range []string{early, early2} {
		if got := recordField(t, ts, id, "manager_login"); got != "returned@example.com" {
			t.Errorf("return: report %s manager_login = %v, want returned@example.com", id, got)
		}
		if got := recordField(t, ts, id, "manager_id"); got != back {
			t.Errorf("return: report %s manager_id = %v, want %s", id, got, back)
		}
	}
	// Still followed after the restart (the link is in the file).
	before = ts.tail()
	if _, err := ts.PatchUser(lead, "", []scim.Operation{{Op: "replace", Path: &scim.Path{Attr: "userName"}, Value: "lead2@example.com"}}); err != nil {
		t.Fatal(err)
	}
	wantUpdated(t, "after restart", ts.events(before)[1:], "manager_login", "lead@example.com", "lead2@example.com", late)
}

// TestReferenceFieldReadSet: a write prepared outside the writer that read
// a manager's record for a reference field is prepared again when the
// manager changed before it is applied (else the report would keep the old
// login: the manager's write could not see a report not yet stored).
func TestReferenceFieldReadSet(t *testing.T) {
	ts := newTestStoreAt(t, filepath.Join(t.TempDir(), "scimgate.db"), refFieldRules())
	boss := ts.createUser(`{"userName":"boss@example.com"}`)
	rs := &readSet{}
	view := func(fn func(tx *bolt.Tx)) {
		t.Helper()
		if err := ts.db.View(func(tx *bolt.Tx) error { fn(tx); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	view(func(tx *bolt.Tx) {
		rr, ok := ts.resolver(tx, rs).(mapping.RecordResolver)
		if !ok {
			t.Fatal("the store's resolver cannot read records")
		}
		if rec, ok := rr.UserRecord(boss); !ok || rec["login"] != "boss@example.com" {
			t.Errorf("UserRecord = %v, %v", rec, ok)
		}
		if _, ok := rr.UserRecord("no-such-user"); ok {
			t.Error("UserRecord of a missing user is ok")
		}
		if !rs.valid(tx, ts.Store) {
			t.Error("read set invalid before anything changed")
		}
	})
	if _, err := ts.PatchUser(boss, "", []scim.Operation{{Op: "replace", Path: &scim.Path{Attr: "userName"}, Value: "chief@example.com"}}); err != nil {
		t.Fatal(err)
	}
	view(func(tx *bolt.Tx) {
		if rs.valid(tx, ts.Store) {
			t.Error("read set still valid after the manager's record changed")
		}
	})
}
