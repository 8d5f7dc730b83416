package store

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scimgate/scimgate/gateway/scim"
	"github.com/scimgate/scimgate/mapping"
	"github.com/scimgate/scimgate/outbox"
)

// release1IDs reads the ids testdata/release1.sh printed when it made
// testdata/release1.db.
func release1IDs(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open("testdata/release1.ids")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if name, id, ok := strings.Cut(sc.Text(), "="); ok {
			out[name] = id
		}
	}
	return out
}

// copyFile copies testdata into the test's directory (the fixture stays
// as release 1 wrote it).
func copyFile(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "scimgate.db")
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

// migrateFile runs Init on the file at path, as the application's start-up
// transaction does, and returns what it reported and logged.
func migrateFile(t *testing.T, path string) (Migration, string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var lb logBuffer
	var m Migration
	err = db.Update(func(tx *bolt.Tx) error {
		if m, err = Init(tx, slog.New(slog.NewJSONHandler(&lb, nil))); err != nil {
			return err
		}
		return outbox.InitBuckets(tx)
	})
	if err != nil {
		t.Fatal(err)
	}
	return m, lb.String()
}

// TestMigrateRelease1 opens the database the release-1 binary wrote
// (testdata/release1.sh) and checks that schema 2 serves it correctly:
// the look-alike names release 1 accepted are reported and the older
// keeps the name, lookups use the new keys, the email with a NUL resolves
// nothing and the reference it once broke is repaired, pending and
// resolved references survive, member counts are right, and nothing that
// was stored is lost.
func TestMigrateRelease1(t *testing.T) {
	id := release1IDs(t)
	path := copyFile(t, "testdata/release1.db")
	m, logged := migrateFile(t, path)
	if m.From != "1" || m.To != SchemaVersion {
		t.Fatalf("migration %s → %s, want 1 → %s", m.From, m.To, SchemaVersion)
	}
	if m.Users != 14 || m.Groups != 4 || m.Memberships != 6 || m.Remap != 1 {
		t.Errorf("migrated %d users, %d groups, %d memberships, %d to remap; want 14, 4, 6, 1", m.Users, m.Groups, m.Memberships, m.Remap)
	}
	wantCollisions := []Collision{
		{"user", "userName", id["ada"], id["ada2"]},
		{"user", "userName", id["ada"], id["ada3"]},
		{"user", "userName", id["jose"], id["jose2"]},
		{"user", "userName", id["sam"], id["sam2"]},
		{"user", "userName", id["zw"], id["zw2"]},
		{"group", "displayName", id["eng"], id["eng2"]},
	}
	if len(m.Collisions) != len(wantCollisions) {
		t.Fatalf("collisions = %+v, want %+v", m.Collisions, wantCollisions)
	}
	for i, c := range wantCollisions {
		if m.Collisions[i] != c {
			t.Errorf("collision %d = %+v, want %+v", i, m.Collisions[i], c)
		}
		if !strings.Contains(logged, c.Shadowed) || !strings.Contains(logged, c.Indexed) {
			t.Errorf("log does not name both ids of %+v", c)
		}
	}
	if strings.Contains(logged, "example.com") {
		t.Errorf("migration log carries names: %s", logged)
	}
	// Opening again does nothing.
	if m2, _ := migrateFile(t, path); m2.From != SchemaVersion || len(m2.Collisions) != 0 {
		t.Errorf("second open: %+v, want nothing to do", m2)
	}

	ts := newTestStoreAt(t, path, mapping.DefaultRules())
	// report1's manager_id was resolved by release 1 through the email
	// "boss@x.com\u0000zzz" to "zzz\u0000<mallory>": New mapped it again.
	evs := ts.events(0)
	last := evs[len(evs)-1]
	if last.Type != "user.updated" || field(t, last.Data, "user.id") != id["report1"] {
		t.Fatalf("last event %s %s, want user.updated of report1", last.Type, last.Data)
	}
	if rec, _ := ts.UserRecord(id["report1"]); field(t, rec, "manager_id") != nil {
		t.Errorf("report1 still has manager_id: %s", rec)
	}
	if !strings.Contains(string(last.Changes), "manager_id") {
		t.Errorf("changes %s do not name manager_id", last.Changes)
	}

	// Every resource is still there, in its creation order.
	total, page, err := ts.ListUsers(Query{Count: 100})
	if err != nil || total != 14 || len(page) != 14 || page[0].ID != id["ada"] || page[13].ID != id["old"] {
		t.Fatalf("users: %d %v %v", total, ids(page), err)
	}
	if st, _ := ts.Stats(); st.Users != 14 || st.ActiveUsers != 13 || st.Groups != 4 { // before any change
		t.Errorf("stats %+v, want 14 users, 13 active, 4 groups", st)
	}
	// Lookups with the new keys find the older of each pair.
	for _, tc := range []struct{ filter, want string }{
		{`userName eq "ADA@example.com"`, id["ada"]},
		{`userName eq "jose\u0301@example.com"`, id["jose"]},
		{`userName eq "sam@example.com"`, id["sam"]},
		{`userName eq "zwj@example.com"`, id["zw"]},
		{`externalId eq "ext-jos\u00e9"`, id["jose"] + "," + id["jose2"]}, // caseExact, but one NFC form
		{`emails.value eq "ada@example.com"`, id["ada"] + "," + id["ada2"]},
		{`emails.value eq "boss@x.com"`, ""},
	} {
		f, err := scim.ParseFilter(tc.filter)
		if err != nil {
			t.Fatal(err)
		}
		_, page, err := ts.ListUsers(Query{Filter: f, Count: 10})
		if got := strings.Join(ids(page), ","); err != nil || got != tc.want {
			t.Errorf("%s: %q (%v), want %q", tc.filter, got, err, tc.want)
		}
	}
	// Member counts, for the list budget.
	err = ts.db.View(func(tx *bolt.Tx) error {
		for name, want := range map[string]int{"eng": 3, "eng2": 1, "empty": 0, "all": 2} {
			if got := memberCount(tx, id[name]); got != want {
				t.Errorf("members of %s = %d, want %d", name, got, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A new look-alike is refused; the shadowed user can be renamed.
	_, err = ts.CreateUser(doc(t, `{"userName":"ada@example.com\u00a0"}`))
	wantSCIMError(t, "new look-alike", err, 409, scim.Uniqueness, id["ada"])
	_, err = ts.PatchUser(id["ada3"], "", []scim.Operation{{Op: "replace", Path: &scim.Path{Attr: "title"}, Value: "x"}})
	wantSCIMError(t, "change of a shadowed user keeping the name", err, 409, scim.Uniqueness, id["ada"])
	if _, err := ts.PatchUser(id["ada3"], "", []scim.Operation{{Op: "replace", Path: &scim.Path{Attr: "userName"}, Value: "ada3@example.com"}}); err != nil {
		t.Fatalf("rename of a shadowed user: %v", err)
	}
	// A stored name with an invisible character does not block other
	// changes (Okta deactivating the user), only a new such value.
	if _, err := ts.PatchUser(id["zw"], "", []scim.Operation{{Op: "replace", Path: &scim.Path{Attr: "active"}, Value: false}}); err != nil {
		t.Errorf("deactivating a user whose stored name has a zero-width space: %v", err)
	}
	_, err = ts.PatchUser(id["zw"], "", []scim.Operation{{Op: "replace", Path: &scim.Path{Attr: "userName"}, Value: "zw\u200bk@example.com"}})
	wantSCIMError(t, "new invisible name", err, 400, scim.InvalidValue, "U+200B")
	// Pending reference (release 1 kept it lower-cased): linked by the new key.
	boss2 := ts.createUser(`{"userName":"b2","emails":[{"value":"BOSS2@x.com"}]}`)
	if rec, _ := ts.UserRecord(id["report2"]); field(t, rec, "manager_id") != boss2 {
		t.Errorf("report2 manager_id = %v, want %s", field(t, rec, "manager_id"), boss2)
	}
	// Resolved reference (indexed by the migration): deleting the manager
	// unlinks report3. The name passes to the older shadowed user.
	before := ts.tail()
	if err := ts.DeleteUser(id["ada"], ""); err != nil {
		t.Fatal(err)
	}
	got := types(ts.events(before))
	want := []string{"group.member_removed", "user.deleted", "user.updated"}
	if !sameStrings(got, want) {
		t.Errorf("events of the delete = %v, want %v", got, want)
	}
	if rec, _ := ts.UserRecord(id["report3"]); field(t, rec, "manager_id") != nil {
		t.Errorf("report3 still points at the deleted user: %s", rec)
	}
	_, err = ts.CreateUser(doc(t, `{"userName":"ada@example.com"}`))
	wantSCIMError(t, "name after the owner's delete", err, 409, scim.Uniqueness, id["ada2"])
	// Group names too.
	_, err = ts.CreateGroup(doc(t, `{"displayName":"ENGINEERING"}`))
	wantSCIMError(t, "group look-alike", err, 409, scim.Uniqueness, id["eng"])
	if r, err := ts.GetGroup(id["all"], true); err != nil || len(r.Doc["members"].([]any)) != 2 {
		t.Errorf("nested group: %v %v", r, err)
	}
}

// TestInitRefusesUnknownSchema: a file of a later layout is not touched.
func TestInitRefusesUnknownSchema(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "x.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		b, _ := tx.CreateBucket(bucketMeta)
		return b.Put(keySchema, []byte("4"))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(InitBuckets); !errors.Is(err, ErrSchemaVersion) {
		t.Errorf("Init on schema 4 = %v, want ErrSchemaVersion", err)
	}
}

// TestMigrateScale measures the schema 1 → 2 migration on 100,000 users
// and a 50,000-member group (SCIMGATE_SCALE=1; the file is kept in
// SCIMGATE_BENCH_DIR when set): time, and memory allocated and held.
func TestMigrateScale(t *testing.T) {
	if os.Getenv("SCIMGATE_SCALE") == "" {
		t.Skip("set SCIMGATE_SCALE=1 to migrate 100,000 users")
	}
	dir := os.Getenv("SCIMGATE_BENCH_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	src := filepath.Join(dir, "migrate-100000-50000.db")
	if _, err := os.Stat(src); err != nil {
		buildBenchDB(t, src, 100_000, 50_000)
	}
	path := copyFile(t, src)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { // as release 1 left it
		return tx.Bucket(bucketMeta).Put(keySchema, []byte("1"))
	}); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	peak := uint64(0)
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var m runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				runtime.ReadMemStats(&m)
				peak = max(peak, m.HeapInuse)
			}
		}
	}()
	start := time.Now()
	var m Migration
	err = db.Update(func(tx *bolt.Tx) error {
		m, err = Init(tx, slog.New(slog.DiscardHandler))
		return err
	})
	took := time.Since(start)
	close(stop)
	<-sampled
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if m.Users != 100_000 || m.Memberships != 50_000 {
		t.Fatalf("migrated %+v", m)
	}
	t.Logf("migrated %d users, %d groups, %d memberships in %v (commit included); allocated %d MB, heap in use %d MB before, peak %d MB",
		m.Users, m.Groups, m.Memberships, took.Round(time.Millisecond), (after.TotalAlloc-before.TotalAlloc)>>20, before.HeapInuse>>20, peak>>20)
}

// TestMigrateSchema2Rekeys: a schema 2 file keyed a userName holding a
// Cherokee capital by cases.Fold's small letter (the unstable fold); Init
// re-keys it, so the same name in the other case is a duplicate (409) and
// a filter in either case finds the user.
func TestMigrateSchema2Rekeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "scimgate.db")
	ts := newTestStoreAt(t, path, mapping.DefaultRules())
	id := ts.createUser(`{"userName":"Ꮪam@example.com"}`)
	ts.Close()
	if err := ts.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketUsersByName)
		if err := b.Delete([]byte("Ꮪam@example.com")); err != nil {
			return err
		}
		if err := b.Put([]byte("ꮪam@example.com"), []byte(id)); err != nil { // schema 2's key
			return err
		}
		return tx.Bucket(bucketMeta).Put(keySchema, []byte("2"))
	}); err != nil {
		t.Fatal(err)
	}
	var m Migration
	if err := ts.db.Update(func(tx *bolt.Tx) (err error) { m, err = Init(tx, nil); return err }); err != nil {
		t.Fatal(err)
	}
	if m.From != "2" || m.To != SchemaVersion || m.Users != 1 {
		t.Fatalf("migration %+v, want 2 → %s over 1 user", m, SchemaVersion)
	}
	mapper, err := mapping.Compile(mapping.DefaultRules())
	if err != nil {
		t.Fatal(err)
	}
	ts2 := New(ts.db, mapper, Options{})
	defer ts2.Close()
	_, err = ts2.CreateUser(doc(t, `{"userName":"ꮪAM@example.com"}`))
	wantSCIMError(t, "create of the same name in the other case", err, 409, scim.Uniqueness)
	for _, name := range []string{"ꮪam@example.com", "ᏚAM@example.com"} {
		f, err := scim.ParseFilter(`userName eq "` + name + `"`)
		if err != nil {
			t.Fatal(err)
		}
		n, got, err := ts2.ListUsers(Query{Filter: f, Count: 10})
		if err != nil || n != 1 || len(got) != 1 || got[0].ID != id {
			t.Errorf("userName eq %q: %d %v %v, want %s", name, n, ids(got), err, id)
		}
	}
}

// A schema 2 file's name holding a default-ignorable
// character (stored before they were refused) is keyed without it after
// the migration, so its look-alike without the character is the same
// identifier.
func TestMigrateSchema2RekeysDefaultIgnorable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "scimgate.db")
	ts := newTestStoreAt(t, path, mapping.DefaultRules())
	id := ts.createUser(`{"userName":"ada@example.com"}`)
	ts.Close()
	const legacy = "ad\u034fa@example.com" // U+034F COMBINING GRAPHEME JOINER
	if err := ts.db.Update(func(tx *bolt.Tx) error {
		data := tx.Bucket(bucketUsers)
		var r map[string]any
		if err := json.Unmarshal(data.Get([]byte(id)), &r); err != nil {
			return err
		}
		r["doc"].(map[string]any)["userName"] = legacy
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		if err := data.Put([]byte(id), b); err != nil {
			return err
		}
		byName := tx.Bucket(bucketUsersByName)
		if err := byName.Delete([]byte("ada@example.com")); err != nil {
			return err
		}
		if err := byName.Put([]byte(legacy), []byte(id)); err != nil { // schema 2's key kept U+034F
			return err
		}
		return tx.Bucket(bucketMeta).Put(keySchema, []byte("2"))
	}); err != nil {
		t.Fatal(err)
	}
	if err := ts.db.Update(func(tx *bolt.Tx) error { _, err := Init(tx, nil); return err }); err != nil {
		t.Fatal(err)
	}
	mapper, err := mapping.Compile(mapping.DefaultRules())
	if err != nil {
		t.Fatal(err)
	}
	ts2 := New(ts.db, mapper, Options{})
	defer ts2.Close()
	_, err = ts2.CreateUser(doc(t, `{"userName":"ADA@example.com"}`))
	wantSCIMError(t, "create of the look-alike without U+034F", err, 409, scim.Uniqueness)
}
