package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scimgate/scimgate/gateway/scim"
	"github.com/scimgate/scimgate/mapping"
	"github.com/scimgate/scimgate/outbox"
)

func recordIDs(t testing.TB, rs []json.RawMessage) []string {
	t.Helper()
	out := []string{}
	for _, r := range rs {
		out = append(out, field(t, r, "id").(string))
	}
	return out
}

// TestUserRecordsPaging: creation order, records exactly as
// the events carry them, a cursor that survives inserts and deletes, the
// outbox tail of the same read, and clear errors for bad cursors.
func TestUserRecordsPaging(t *testing.T) {
	ts := newTestStore(t)
	var all []string
	for i := range 25 {
		all = append(all, ts.createUser(fmt.Sprintf(`{"userName":"p%02d@example.com"}`, i)))
	}
	p1, err := ts.UserRecords(RecordQuery{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if got := recordIDs(t, p1.Records); !sameStrings(got, all[:10]) || p1.NextCursor == "" {
		t.Fatalf("first page %v (next %q), want %v", got, p1.NextCursor, all[:10])
	}
	if p1.Sequence != ts.tail() {
		t.Errorf("sequence %d, want the outbox tail %d", p1.Sequence, ts.tail())
	}
	evs := ts.events(0)
	if field(t, evs[0].Data, "user.id") != all[0] {
		t.Fatal("setup: first event is not the first user's")
	}
	var d map[string]json.RawMessage
	_ = json.Unmarshal(evs[0].Data, &d)
	if string(p1.Records[0]) != string(d["user"]) {
		t.Errorf("record %s, want the event's data.user %s", p1.Records[0], d["user"])
	}
	// Between pages: the next user of page 2 and the last of page 1 are
	// deleted, a user is added. Page 2 goes on after page 1, skips the
	// deleted one and does not repeat anything.
	if err := ts.DeleteUser(all[10], ""); err != nil {
		t.Fatal(err)
	}
	if err := ts.DeleteUser(all[9], ""); err != nil {
		t.Fatal(err)
	}
	late := ts.createUser(`{"userName":"late@example.com"}`)
	var got []string
	cursor := p1.NextCursor
	for cursor != "" {
		p, err := ts.UserRecords(RecordQuery{Cursor: cursor, Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, recordIDs(t, p.Records)...)
		cursor = p.NextCursor
	}
	if want := append(append([]string{}, all[11:]...), late); !sameStrings(got, want) {
		t.Errorf("after the cursor: %v, want %v", got, want)
	}
	// One record; ErrNotFound.
	if r, err := ts.UserRecord(all[3]); err != nil || field(t, r, "login") != "p03@example.com" || field(t, r, "version") == nil {
		t.Errorf("UserRecord: %s %v", r, err)
	}
	if _, err := ts.UserRecord(all[9]); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted user: %v, want ErrNotFound", err)
	}
	// Bad cursors are ErrInvalidQuery with a message, never a silent restart.
	for _, c := range []string{"!!!", "AAAA", p1.NextCursor[:len(p1.NextCursor)-2], encodeCursor(cursorGroups, be64(1))} {
		if _, err := ts.UserRecords(RecordQuery{Cursor: c}); !errors.Is(err, ErrInvalidQuery) || !strings.Contains(err.Error(), "cursor") {
			t.Errorf("cursor %q: %v, want ErrInvalidQuery about the cursor", c, err)
		}
	}
	if _, err := ts.GroupRecords(RecordQuery{Active: new(true)}); !errors.Is(err, ErrInvalidQuery) {
		t.Errorf("active on groups: %v", err)
	}
}

// TestRecordFilters: active and updated_since keep the matching records;
// a page examines a bounded number of records and may come back short
// (even empty) with a cursor to go on.
func TestRecordFilters(t *testing.T) {
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); clock = clock.Add(time.Second); return clock }
	ts := newTestStore(t, func(o *Options) { o.Now = now })
	const n = 1200
	g := ts.createGroup(`{"displayName":"all"}`)
	ts.addMembers(g, n) // concurrent creates; creation order as committed
	patch := func(pos int, attr string, v any) string {
		_, page, _ := ts.ListUsers(Query{StartIndex: pos + 1, Count: 1})
		if _, err := ts.PatchUser(page[0].ID, "", []scim.Operation{{Op: "replace", Path: &scim.Path{Attr: attr}, Value: v}}); err != nil {
			t.Fatal(err)
		}
		return page[0].ID
	}
	inactive := []string{patch(3, "active", false), patch(1150, "active", false)}
	mid := now()
	changed := []string{patch(5, "title", "t"), patch(700, "title", "t")}
	collect := func(q RecordQuery) ([]string, int) {
		var got []string
		pages := 0
		for {
			p, err := ts.UserRecords(q)
			if err != nil {
				t.Fatal(err)
			}
			pages++
			if len(p.Records) > q.Limit {
				t.Fatalf("page of %d, limit %d", len(p.Records), q.Limit)
			}
			got = append(got, recordIDs(t, p.Records)...)
			if q.Cursor = p.NextCursor; q.Cursor == "" {
				return got, pages
			}
		}
	}
	// 10 per page examines at most 1,000 records: the two inactive users
	// take two pages, the first examined 1,000 and found one.
	got, pages := collect(RecordQuery{Limit: 10, Active: new(false)})
	if !sameStrings(got, inactive) || pages != 2 {
		t.Errorf("inactive: %v in %d pages, want %v in 2", got, pages, inactive)
	}
	got, _ = collect(RecordQuery{Limit: 10, UpdatedSince: mid})
	if !sameStrings(got, changed) {
		t.Errorf("updated since: %v, want %v", got, changed)
	}
	got, _ = collect(RecordQuery{Limit: 100, Active: new(true)})
	if len(got) != n-2 {
		t.Errorf("active: %d, want %d", len(got), n-2)
	}
}

// TestMembersAndGroupsPaging: a group's members and a user's groups page
// by id with a cursor, each member with its type and record.
func TestMembersAndGroupsPaging(t *testing.T) {
	ts := newTestStore(t)
	u := ts.createUser(`{"userName":"m@example.com"}`)
	g0 := ts.createGroup(`{"displayName":"G0"}`)
	var groups []string
	for i := range 5 {
		groups = append(groups, ts.createGroup(fmt.Sprintf(`{"displayName":"G%d","members":[{"value":%q},{"value":%q}]}`, i+1, u, g0)))
	}
	ts.addMembers(groups[0], 23)
	var got []string
	var types []string
	cursor := ""
	for {
		p, err := ts.GroupMembers(groups[0], cursor, 5)
		if err != nil {
			t.Fatal(err)
		}
		if p.Sequence != ts.tail() {
			t.Errorf("sequence %d, want %d", p.Sequence, ts.tail())
		}
		for _, m := range p.Members {
			got = append(got, m.ID)
			types = append(types, m.Type)
			if field(t, m.Record, "id") != m.ID {
				t.Errorf("member %s record %s", m.ID, m.Record)
			}
		}
		if cursor = p.NextCursor; cursor == "" {
			break
		}
	}
	r, _ := ts.GetGroup(groups[0], true)
	var want []string
	for _, m := range r.Doc["members"].([]any) {
		want = append(want, m.(map[string]any)["value"].(string))
	}
	if !sameStrings(got, want) || len(got) != 25 {
		t.Errorf("members %d %v, want %d %v", len(got), got, len(want), want)
	}
	if strings.Count(strings.Join(types, ","), "Group") != 1 {
		t.Errorf("types %v, want one Group", types)
	}
	var gs []string
	cursor = ""
	for {
		p, err := ts.UserGroups(u, cursor, 2)
		if err != nil {
			t.Fatal(err)
		}
		gs = append(gs, recordIDs(t, p.Records)...)
		if cursor = p.NextCursor; cursor == "" {
			break
		}
	}
	sortStrings(groups)
	if !sameStrings(gs, groups) {
		t.Errorf("user groups %v, want %v", gs, groups)
	}
	if _, err := ts.GroupMembers(u, "", 10); !errors.Is(err, ErrNotFound) {
		t.Errorf("members of a user: %v", err)
	}
	if _, err := ts.UserGroups(g0, "", 10); !errors.Is(err, ErrNotFound) {
		t.Errorf("groups of a group via UserGroups: %v", err)
	}
	if _, err := ts.GroupMembers(groups[0], encodeCursor(cursorUsers, be64(1)), 10); !errors.Is(err, ErrInvalidQuery) {
		t.Errorf("users cursor on members: %v", err)
	}
}

func sortStrings(a []string) {
	for i := range a {
		for j := i + 1; j < len(a); j++ {
			if a[j] < a[i] {
				a[i], a[j] = a[j], a[i]
			}
		}
	}
}

// benchStore returns a store over a file with n users (and, with members,
// one group holding the first members of them), built once per size and
// cached under SCIMGATE_BENCH_DIR (default: the test's temp dir) since
// 100k creates through the writer take a while.
func benchStore(b testing.TB, n, members int) *testStore {
	b.Helper()
	dir := os.Getenv("SCIMGATE_BENCH_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	path := filepath.Join(dir, fmt.Sprintf("bench-%d-%d.db", n, members))
	if _, err := os.Stat(path); err != nil {
		buildBenchDB(b, path, n, members)
	}
	return newTestStoreAt(b, path, mapping.DefaultRules())
}

// buildBenchDB writes n users and a group directly, in chunked
// transactions, with the store's own insert and index functions.
func buildBenchDB(b testing.TB, path string, n, members int) {
	b.Helper()
	db, err := bolt.Open(path+".tmp", 0o600, nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		if err := InitBuckets(tx); err != nil {
			return err
		}
		return outbox.InitBuckets(tx)
	}); err != nil {
		b.Fatal(err)
	}
	mapper, _ := mapping.Compile(mapping.DefaultRules())
	s := &Store{now: time.Now, users: userKind(), groups: groupKind()}
	s.mapper.Store(mapper)
	s.dbp.Store(db)
	now := time.Now()
	var ids []string
	for done := 0; done < n; {
		err := db.Update(func(tx *bolt.Tx) error {
			for i := 0; i < 5000 && done < n; i, done = i+1, done+1 {
				d := map[string]any{"userName": fmt.Sprintf("bench%06d@example.com", done), "active": done%10 != 0,
					"name":   map[string]any{"givenName": "Given", "familyName": fmt.Sprintf("Family%d", done)},
					"emails": []any{map[string]any{"value": fmt.Sprintf("bench%06d@example.com", done), "type": "work"}}}
				res, err := mapper.MapUser(d, nil)
				if err != nil {
					return err
				}
				r := &record{ID: newID(), Created: now, Modified: now, Version: 1, Doc: d, Record: res.Record, FP: mapper.Fingerprint()}
				if err := s.users.insertNew(tx, r); err != nil {
					return err
				}
				if err := indexEmails(tx, nil, r); err != nil {
					return err
				}
				ids = append(ids, r.ID)
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	// The records are the default mapping's: no remap at the next New.
	if err := db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keyMappingFP, []byte(mapper.Fingerprint()))
	}); err != nil {
		b.Fatal(err)
	}
	if members > 0 {
		g := &record{ID: newID(), Created: now, Modified: now, Version: 1, Doc: map[string]any{"displayName": "Big"}, Record: map[string]any{"name": "Big"}, FP: mapper.Fingerprint()}
		if err := db.Update(func(tx *bolt.Tx) error { return s.groups.insertNew(tx, g) }); err != nil {
			b.Fatal(err)
		}
		for off := 0; off < members; off += 5000 {
			err := db.Update(func(tx *bolt.Tx) error {
				return s.applyDeltaQuiet(tx, g, ids[off:min(off+5000, members)])
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := db.Close(); err != nil {
		b.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		b.Fatal(err)
	}
}

// applyDeltaQuiet adds members as applyDelta does, without events (the
// benchmark needs the state, not a backlog).
func (s *Store) applyDeltaQuiet(tx *bolt.Tx, g *record, ids []string) error {
	for _, id := range ids {
		v, _ := json.Marshal(member{Type: "User"})
		if err := tx.Bucket(bucketMembers).Put(joinKey(g.ID, id), v); err != nil {
			return err
		}
		if err := tx.Bucket(bucketMemberOf).Put(joinKey(id, g.ID), nil); err != nil {
			return err
		}
	}
	return addCounter(tx.Bucket(bucketMemberCounts), []byte(g.ID), len(ids))
}

// BenchmarkUserRecords: one page of 100 records, first and deep, at 1k and
// 100k users (flat: O(page)). 100k users are built once per run (or kept
// in SCIMGATE_BENCH_DIR).
func BenchmarkUserRecords(b *testing.B) {
	for _, n := range []int{1000, 100_000} {
		ts := benchStore(b, n, 0)
		deep := encodeCursor(cursorUsers, be64(uint64(n-100))) // the last 100 users
		for _, at := range []struct {
			name, cursor string
		}{{"first", ""}, {"last", deep}} {
			b.Run(fmt.Sprintf("users=%d/%s", n, at.name), func(b *testing.B) {
				for b.Loop() {
					p, err := ts.UserRecords(RecordQuery{Cursor: at.cursor, Limit: 100})
					if err != nil || len(p.Records) != 100 {
						b.Fatalf("%d records, %v", len(p.Records), err)
					}
				}
			})
		}
		b.Run(fmt.Sprintf("users=%d/active=false", n), func(b *testing.B) {
			for b.Loop() {
				if _, err := ts.UserRecords(RecordQuery{Limit: 100, Active: new(false)}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkGroupMembers: a page of 100 members of a 50,000-member group,
// first and last (O(page)), and the member count a list page consults.
func BenchmarkGroupMembers(b *testing.B) {
	ts := benchStore(b, 50_000, 50_000)
	_, page, err := ts.ListGroups(Query{Count: 1})
	if err != nil || len(page) != 1 {
		b.Fatal(err)
	}
	gid := page[0].ID
	var last string
	p, _ := ts.GroupMembers(gid, "", MaxRecordLimit)
	for p.NextCursor != "" {
		last = p.NextCursor
		p, _ = ts.GroupMembers(gid, last, MaxRecordLimit)
	}
	for _, at := range []struct{ name, cursor string }{{"first", ""}, {"last", last}} {
		b.Run(at.name, func(b *testing.B) {
			for b.Loop() {
				p, err := ts.GroupMembers(gid, at.cursor, 100)
				if err != nil || len(p.Members) != 100 {
					b.Fatalf("%d members, %v", len(p.Members), err)
				}
			}
		})
	}
}
