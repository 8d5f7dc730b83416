package store

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/scimgate/scimgate/gateway/scim"
	"github.com/scimgate/scimgate/mapping"
	"github.com/scimgate/scimgate/outbox"
)

// TestWriterRecoversPanic: a write that panics
// inside the writer, after writing, in a batch with others, fails alone
// with ErrInternal and its changes rolled back; the others commit; the
// panic and its stack are logged; the writer keeps serving.
func TestWriterRecoversPanic(t *testing.T) {
	db := openTestDB(t)
	var lb logBuffer
	w := newWriter(db, isClean, slog.New(slog.NewJSONHandler(&lb, nil)))
	w.start()
	defer w.close()
	const n = 100
	results := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			results[i] = w.update(func(tx *bolt.Tx) error {
				if err := tx.Bucket([]byte("b")).Put([]byte(fmt.Sprintf("k%03d", i)), []byte("v")); err != nil {
					return err
				}
				if i%25 == 5 {
					var m map[string]int
					m["boom"]++ // a real runtime panic: assignment to entry in nil map
				}
				return nil
			})
		})
	}
	wg.Wait()
	_ = db.View(func(tx *bolt.Tx) error {
		for i := range n {
			v := tx.Bucket([]byte("b")).Get([]byte(fmt.Sprintf("k%03d", i)))
			if i%25 == 5 {
				if !errors.Is(results[i], ErrInternal) || v != nil {
					t.Errorf("panicking write %d: err %v, value %q; want ErrInternal and nothing stored", i, results[i], v)
				}
			} else if results[i] != nil || v == nil {
				t.Errorf("write %d: err %v, value %q; want committed", i, results[i], v)
			}
		}
		return nil
	})
	if err := w.update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("b")).Put([]byte("after"), nil) }); err != nil {
		t.Errorf("write after the panics: %v", err)
	}
	log := lb.String()
	if got := strings.Count(log, "store write panicked"); got != 4 {
		t.Errorf("logged %d panics, want 4: %s", got, log)
	}
	if !strings.Contains(log, "assignment to entry in nil map") || !strings.Contains(log, "writes_test.go") {
		t.Errorf("log lacks the panic or its stack: %.500s", log)
	}
}

// TestStoreSurvivesPanickingWrite: through the Store, a write that panics
// (here the mapper is nil, as no caller should ever pass) fails with
// ErrInternal and the store goes on serving reads and other writes.
func TestStoreSurvivesPanickingWrite(t *testing.T) {
	ts := newTestStore(t)
	broken := New(ts.db, nil, Options{Logger: slog.New(slog.NewJSONHandler(ts.log, nil))})
	defer broken.Close()
	if _, err := broken.CreateUser(doc(t, `{"userName":"p@example.com"}`)); !errors.Is(err, ErrInternal) {
		t.Fatalf("CreateUser with a panicking mapper: %v, want ErrInternal", err)
	}
	id := ts.createUser(`{"userName":"ok@example.com"}`)
	if total, _, err := ts.ListUsers(Query{Count: 10}); err != nil || total != 1 {
		t.Errorf("users = %d (%v), want only %s", total, err, id)
	}
	if !strings.Contains(ts.log.String(), "nil pointer dereference") {
		t.Errorf("panic not logged: %.300s", ts.log.String())
	}
}

// recordingObserver records what the store reports.
type recordingObserver struct {
	mu       sync.Mutex
	warnings []string // resource/id/field
	rejected []string // resource:fields
	unknown  []string // group:n
}

func (o *recordingObserver) MappingWarning(resource, id, field string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.warnings = append(o.warnings, resource+"/"+id+"/"+field)
}

func (o *recordingObserver) MappingRejected(resource string, fields []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.rejected = append(o.rejected, resource+":"+strings.Join(fields, ","))
}

func (o *recordingObserver) UnknownMembers(groupID string, n int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.unknown = append(o.unknown, fmt.Sprintf("%s:%d", groupID, n))
}

// TestUnknownMembersIgnored: one stale id no
// longer blocks a full-membership PUT; the valid members are applied, the
// unknown ones give no membership and no event, and the count is logged
// and reported with the group id (never the ids themselves).
func TestUnknownMembersIgnored(t *testing.T) {
	obs := &recordingObserver{}
	ts := newTestStore(t, func(o *Options) { o.Observer = obs })
	u1 := ts.createUser(`{"userName":"u1@example.com"}`)
	u2 := ts.createUser(`{"userName":"u2@example.com"}`)
	stale := "2819c223-7f76-453a-919d-413861904646"
	before := ts.tail()
	gid := ts.createGroup(fmt.Sprintf(`{"displayName":"G","members":[{"value":%q},{"value":%q}]}`, u1, stale))
	_, err := ts.ReplaceGroup(gid, "", doc(t, fmt.Sprintf(`{"displayName":"G","members":[{"value":%q},{"value":%q},{"value":%q},{"value":"also-gone"}]}`, u1, u2, stale)))
	if err != nil {
		t.Fatalf("PUT with unknown members: %v", err)
	}
	// Only unknown ids: nothing changes, nothing is written.
	r0, _ := ts.GetGroup(gid, false)
	if _, err := ts.PatchGroup(gid, "", []scim.Operation{{Op: "add", Path: &scim.Path{Attr: "members"}, Value: []any{map[string]any{"value": stale}}}}); err != nil {
		t.Fatal(err)
	}
	if r1, _ := ts.GetGroup(gid, false); r1.Version != r0.Version {
		t.Errorf("a PATCH adding only an unknown id changed the version %d → %d", r0.Version, r1.Version)
	}
	r, _ := ts.GetGroup(gid, true)
	if got := memberLen(r); got != 2 {
		t.Errorf("members = %v, want u1 and u2", r.Doc["members"])
	}
	got := types(ts.events(before))
	want := []string{"group.created", "group.member_added", "group.member_added"}
	if !sameStrings(got, want) {
		t.Errorf("events %v, want %v", got, want)
	}
	if w := []string{gid + ":1", gid + ":2", gid + ":1"}; !sameStrings(obs.unknown, w) {
		t.Errorf("reported %v, want %v", obs.unknown, w)
	}
	log := ts.log.String()
	if strings.Count(log, `"unknown_members":`) != 3 || !strings.Contains(log, gid) || strings.Contains(log, stale) {
		t.Errorf("log should name the group and the count, not the ids: %s", log)
	}
	// A group in its own members is still refused.
	_, err = ts.PatchGroup(gid, "", []scim.Operation{{Op: "add", Path: &scim.Path{Attr: "members"}, Value: []any{map[string]any{"value": gid}}}})
	wantSCIMError(t, "self", err, 400, scim.InvalidValue, "itself")
}

// TestUnknownMembersReject keeps release 1's strictness when configured.
func TestUnknownMembersReject(t *testing.T) {
	ts := newTestStore(t, func(o *Options) { o.UnknownMembers = UnknownReject })
	u1 := ts.createUser(`{"userName":"u1@example.com"}`)
	gid := ts.createGroup(fmt.Sprintf(`{"displayName":"G","members":[{"value":%q}]}`, u1))
	before := ts.tail()
	_, err := ts.ReplaceGroup(gid, "", doc(t, `{"displayName":"G2","members":[{"value":"nope"}]}`))
	wantSCIMError(t, "unknown member", err, 400, scim.InvalidValue, "nope", "push the user")
	if evs := ts.events(before); len(evs) != 0 {
		t.Errorf("a refused PUT emitted %v", types(evs))
	}
	if r, _ := ts.GetGroup(gid, true); memberLen(r) != 1 || r.Doc["displayName"] != "G" {
		t.Errorf("a refused PUT changed the group: %v", r.Doc)
	}
}

// TestObserverMapping: warnings after commit with resource id
// and field, rejections with their fields, never values; no Observer, no
// calls (and no crash).
func TestObserverMapping(t *testing.T) {
	obs := &recordingObserver{}
	rules := mapping.DefaultRules()
	ts := newTestStoreAt(t, t.TempDir()+"/o.db", rules, func(o *Options) { o.Observer = obs })
	id := ts.createUser(`{"userName":"w@example.com","timezone":"Mars/Olympus","preferredLanguage":"not a tag!"}`)
	slices.Sort(obs.warnings)
	if want := []string{"user/" + id + "/language", "user/" + id + "/timezone"}; !sameStrings(obs.warnings, want) {
		t.Errorf("warnings %v, want %v", obs.warnings, want)
	}
	_, err := ts.CreateUser(doc(t, `{"userName":"   "}`))
	if err == nil {
		t.Fatal("blank userName accepted")
	}
	_, err = ts.CreateGroup(doc(t, `{"displayName":"G","externalId":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	strict := mapping.DefaultRules()
	strict.User = append(strict.User, mapping.Rule{To: "dept", From: mapping.StringList{"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"}, Required: true})
	obs2 := &recordingObserver{}
	ts2 := newTestStoreAt(t, t.TempDir()+"/o2.db", strict, func(o *Options) { o.Observer = obs2 })
	_, err = ts2.CreateUser(doc(t, `{"userName":"r@example.com"}`))
	var rej *mapping.Rejection
	if !errors.As(err, &rej) {
		t.Fatalf("create without the required field: %v, want a mapping rejection", err)
	}
	if want := []string{"user:dept"}; !sameStrings(obs2.rejected, want) {
		t.Errorf("rejections %v, want %v", obs2.rejected, want)
	}
	for _, s := range append(obs.warnings, obs2.rejected...) {
		if strings.Contains(s, "Mars") || strings.Contains(s, "example.com") {
			t.Errorf("observer got a value: %s", s)
		}
	}
	// Without an Observer nothing is called.
	plain := newTestStore(t)
	plain.createUser(`{"userName":"w@example.com","timezone":"Mars/Olympus"}`)
}

// TestDeleteVersions: every event of a user's
// deletion carries a version greater than the user's previous events, so
// "drop lower versions" never drops it; group deletion likewise.
func TestDeleteVersions(t *testing.T) {
	ts := newTestStore(t)
	uid := ts.createUser(`{"userName":"d@example.com"}`)
	gid := ts.createGroup(fmt.Sprintf(`{"displayName":"G","members":[{"value":%q}]}`, uid))
	last := map[string]float64{}
	check := func(evs []loggedEvent) {
		t.Helper()
		for _, e := range evs {
			for _, key := range []string{"user", "group"} {
				v, ok := field(t, e.Data, key+".version").(interface{ Float64() (float64, error) })
				if !ok {
					continue
				}
				n, _ := v.Float64()
				rid := field(t, e.Data, key+".id").(string)
				if strings.HasSuffix(e.Type, "deleted") && n <= last[rid] {
					t.Errorf("%s carries %s version %v, not above the previous %v", e.Type, key, n, last[rid])
				}
				last[rid] = max(last[rid], n)
			}
		}
	}
	check(ts.events(0))
	before := ts.tail()
	if err := ts.DeleteUser(uid, ""); err != nil {
		t.Fatal(err)
	}
	evs := ts.events(before)
	if !sameStrings(types(evs), []string{"group.member_removed", "user.deleted"}) {
		t.Fatalf("events %v", types(evs))
	}
	check(evs)
	before = ts.tail()
	if err := ts.DeleteGroup(gid, ""); err != nil {
		t.Fatal(err)
	}
	check(ts.events(before))
}

// TestDeletedManagerRepends: deleting a manager
// removes manager_id from its reports (user.updated), and the reference
// waits: the manager's return links them again.
func TestDeletedManagerRepends(t *testing.T) {
	ts := newTestStore(t)
	boss := ts.createUser(`{"userName":"boss@example.com","emails":[{"value":"boss@example.com"}]}`)
	var reports []string
	for i := range 3 {
		reports = append(reports, ts.createUser(fmt.Sprintf(`{"userName":"r%d@example.com","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"manager":{"value":"Boss@Example.com"}}}`, i)))
	}
	other := ts.createUser(`{"userName":"other@example.com"}`)
	for _, r := range reports {
		if rec, _ := ts.UserRecord(r); field(t, rec, "manager_id") != boss {
			t.Fatalf("report %s: %s", r, rec)
		}
	}
	before := ts.tail()
	if err := ts.DeleteUser(boss, ""); err != nil {
		t.Fatal(err)
	}
	evs := ts.events(before)
	if got, want := types(evs), []string{"user.deleted", "user.updated", "user.updated", "user.updated"}; !sameStrings(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	for _, e := range evs[1:] {
		if !strings.Contains(string(e.Changes), `"manager_id":{"old":"`+boss) {
			t.Errorf("changes %s do not remove manager_id", e.Changes)
		}
		if field(t, e.Data, "user.id") == other {
			t.Error("an unrelated user was updated")
		}
	}
	for _, r := range reports {
		if rec, _ := ts.UserRecord(r); field(t, rec, "manager_id") != nil {
			t.Errorf("report %s still points at the deleted manager: %s", r, rec)
		}
	}
	back := ts.createUser(`{"userName":"boss@example.com"}`)
	for _, r := range reports {
		if rec, _ := ts.UserRecord(r); field(t, rec, "manager_id") != back {
			t.Errorf("report %s not linked to the returning manager: %s", r, rec)
		}
	}
}

// TestVersionFloor: a store opened with a floor writes every
// version above it, for new and existing resources, and for deletions.
func TestVersionFloor(t *testing.T) {
	path := t.TempDir() + "/f.db"
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		if err := InitBuckets(tx); err != nil {
			return err
		}
		return outbox.InitBuckets(tx)
	}); err != nil {
		t.Fatal(err)
	}
	mapper, _ := mapping.Compile(mapping.DefaultRules())
	first := New(db, mapper, Options{})
	created, err := first.CreateUser(doc(t, `{"userName":"f@example.com"}`))
	if err != nil {
		t.Fatal(err)
	}
	uid := created.ID
	first.Close()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	const floor = 3 << 40
	ts2 := newTestStoreAt(t, path, mapping.DefaultRules(), func(o *Options) { o.VersionFloor = floor })
	before := ts2.tail()
	if _, err := ts2.PatchUser(uid, "", []scim.Operation{{Op: "replace", Path: &scim.Path{Attr: "title"}, Value: "x"}}); err != nil {
		t.Fatal(err)
	}
	gid := ts2.createGroup(fmt.Sprintf(`{"displayName":"G","members":[{"value":%q}]}`, uid))
	if err := ts2.DeleteUser(uid, ""); err != nil {
		t.Fatal(err)
	}
	evs := ts2.events(before)
	if len(evs) < 4 {
		t.Fatalf("events %v", types(evs))
	}
	for _, e := range evs {
		for _, key := range []string{"user", "group"} {
			if v, ok := field(t, e.Data, key+".version").(interface{ Int64() (int64, error) }); ok {
				if n, _ := v.Int64(); n <= floor {
					t.Errorf("%s: %s version %d, want above %d", e.Type, key, n, int64(floor))
				}
			}
		}
	}
	if r, _ := ts2.GetGroup(gid, false); r.Version <= floor {
		t.Errorf("group version %d, want above %d", r.Version, int64(floor))
	}
}

type panickingObserver struct{ recordingObserver }

func (*panickingObserver) MappingWarning(string, string, string) { panic("observer bug") }

// TestObserverPanic: an Observer that panics (in the writer's commit
// handlers) costs a log line, not the writer: the write is answered and
// the next one works.
func TestObserverPanic(t *testing.T) {
	ts := newTestStore(t, func(o *Options) { o.Observer = &panickingObserver{} })
	ts.createUser(`{"userName":"w@example.com","timezone":"Mars/Olympus"}`)
	ts.createUser(`{"userName":"x@example.com","timezone":"Mars/Olympus"}`)
	if !strings.Contains(ts.log.String(), "observer bug") {
		t.Errorf("panic not logged: %.300s", ts.log.String())
	}
}
