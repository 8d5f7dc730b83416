package store

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"gopkg.in/yaml.v3"

	"github.com/scimgate/scimgate/gateway/scim"
	"github.com/scimgate/scimgate/mapping"
	"github.com/scimgate/scimgate/outbox"
)

// compileRules compiles a mapping section written as YAML.
func compileRules(t testing.TB, src string) *mapping.Mapper {
	t.Helper()
	r := mapping.DefaultRules()
	if err := yaml.Unmarshal([]byte(src), &r); err != nil {
		t.Fatal(err)
	}
	m, err := mapping.Compile(r)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// The default rules plus a rule added (shout) and a rule changed (title is
// upper-cased), and a group rule added.
const remapRules = `
user:
  - {to: login, from: userName, transforms: [trim], required: true}
  - {to: email, from: ['emails[type eq "work"].value', emails.value], type: email}
  - {to: title, from: title, transforms: [upper]}
  - {to: active, from: active, type: bool, default: true}
  - {to: shout, from: userName, transforms: [upper]}
group:
  - {to: name, from: displayName, required: true}
  - {to: kind, value: team}
`

const remapBase = `
user:
  - {to: login, from: userName, transforms: [trim], required: true}
  - {to: email, from: ['emails[type eq "work"].value', emails.value], type: email}
  - {to: title, from: title}
  - {to: active, from: active, type: bool, default: true}
group:
  - {to: name, from: displayName, required: true}
`

// smallBatches makes the remap run in many batches for the test's length.
func smallBatches(t *testing.T, n int) {
	old := remapBatch
	remapBatch = n
	t.Cleanup(func() { remapBatch = old })
}

func seedRemap(ts *testStore, users, groups int) []string {
	var ids []string
	for i := range users {
		title := ""
		if i%3 == 0 {
			title = fmt.Sprintf(`,"title":"engineer %d"`, i)
		}
		ids = append(ids, ts.createUser(fmt.Sprintf(`{"userName":"user%04d@example.com","emails":[{"value":"user%04d@example.com","type":"work"}]%s}`, i, i, title)))
	}
	for i := range groups {
		ts.createGroup(fmt.Sprintf(`{"displayName":"group %d"}`, i))
	}
	return ids
}

func waitRemap(t *testing.T, s *Store) RemapStatus {
	t.Helper()
	if !s.WaitRemap(30 * time.Second) {
		t.Fatalf("remap still running: %+v", s.RemapStatus().Last)
	}
	return s.RemapStatus()
}

// fingerprints counts the stored records by fingerprint.
func fingerprints(t *testing.T, db *bolt.DB) map[string]int {
	t.Helper()
	out := map[string]int{}
	_ = db.View(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketUsers, bucketGroups} {
			_ = tx.Bucket(b).ForEach(func(_, v []byte) error { out[recordFP(v)]++; return nil })
		}
		return nil
	})
	return out
}

// TestRemapAfterReload: a reloaded mapping (a rule added, a rule changed, a
// group rule added) is applied to every stored record in batches: each
// record that changes gets exactly one *.updated with its changes and
// cause "mapping", the others none; every record ends on the new
// fingerprint; the dry run beforehand counted exactly what it did.
func TestRemapAfterReload(t *testing.T) {
	smallBatches(t, 40)
	ts := newTestStoreAt(t, filepath.Join(t.TempDir(), "scimgate.db"), mustRules(t, remapBase))
	ids := seedRemap(ts, 300, 5)
	if got := fingerprints(t, ts.db); len(got) != 1 || got[ts.Mapper().Fingerprint()] != 305 {
		t.Fatalf("records by fingerprint before: %v", got)
	}
	next := compileRules(t, remapRules)
	preview, err := ts.PreviewRemap(next, PreviewOptions{Examples: 3})
	if err != nil {
		t.Fatal(err)
	}
	if preview.Users != 300 || preview.Groups != 5 || preview.ChangedUsers != 300 || preview.ChangedGroups != 5 || preview.Rejected != 0 {
		t.Fatalf("preview: %+v", preview)
	}
	if preview.UserFields["shout"] != 300 || preview.UserFields["title"] != 100 || preview.GroupFields["kind"] != 5 || len(preview.Examples) != 3 {
		t.Errorf("preview fields %v %v, %d examples", preview.UserFields, preview.GroupFields, len(preview.Examples))
	}
	tail := ts.tail()
	if err := ts.SetMapper(next); err != nil {
		t.Fatal(err)
	}
	st := waitRemap(t, ts.Store)
	if st.Last == nil || st.Last.State != RemapDone || st.Last.Total != 305 || st.Last.Done != 305 ||
		st.Last.Changed != preview.Changed || st.Last.Rejected != preview.Rejected || st.Applied != next.Fingerprint() {
		t.Fatalf("status after the remap: %+v (applied %s)", st.Last, st.Applied)
	}
	evs := ts.events(tail)
	perUser := map[string]int{}
	for _, e := range evs {
		if e.Cause != CauseMapping {
			t.Errorf("event %s %v without cause mapping: %q", e.Type, e.Resources, e.Cause)
		}
		var ch map[string]mapping.Change
		if err := json.Unmarshal(e.Changes, &ch); err != nil {
			t.Fatal(err)
		}
		switch e.Type {
		case "user.updated":
			perUser[e.Resources[0]]++
			login := field(t, e.Data, "user.login").(string)
			if c, ok := ch["shout"]; !ok || c.Old != nil || c.New != strings.ToUpper(login) {
				t.Errorf("%v: shout change %+v", e.Resources, ch)
			}
			if n, _ := fmt.Sscanf(login, "user%04d@", new(int)); n != 1 {
				t.Errorf("login %q", login)
			}
			if _, ok := ch["title"]; ok != strings.Contains(string(e.Data), `"title"`) {
				t.Errorf("%v: title change %+v for data %s", e.Resources, ch, e.Data)
			}
		case "group.updated":
			if c := ch["kind"]; c.New != "team" || len(ch) != 1 {
				t.Errorf("group changes %+v", ch)
			}
		default:
			t.Errorf("unexpected event %s", e.Type)
		}
	}
	if len(evs) != 305 || len(perUser) != 300 {
		t.Fatalf("%d events for %d users, want 305 events, 300 users", len(evs), len(perUser))
	}
	for _, id := range ids {
		if perUser["User/"+id] != 1 {
			t.Errorf("user %s: %d events", id, perUser["User/"+id])
		}
	}
	if got := fingerprints(t, ts.db); got[next.Fingerprint()] != 305 {
		t.Errorf("records by fingerprint after: %v", got)
	}
	// Reloading the same mapping again does nothing; an unchanged push
	// stays without an event.
	if err := ts.SetMapper(compileRules(t, remapRules)); err != nil {
		t.Fatal(err)
	}
	waitRemap(t, ts.Store)
	r, _ := ts.GetUser(ids[1])
	doc := r.Doc
	delete(doc, "meta")
	delete(doc, "id")
	if _, err := ts.ReplaceUser(ids[1], "", doc); err != nil {
		t.Fatal(err)
	}
	if extra := ts.events(tail + 305); len(extra) != 0 {
		t.Errorf("events after the remap: %v", types(extra))
	}
}

func mustRules(t testing.TB, src string) mapping.Rules {
	t.Helper()
	r := mapping.DefaultRules()
	if err := yaml.Unmarshal([]byte(src), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestRemapRejects: users the new mapping rejects keep their record, are
// listed (ids, reasons without values) in the status as in the dry run,
// and do not stop the others.
func TestRemapRejects(t *testing.T) {
	smallBatches(t, 25)
	ts := newTestStoreAt(t, filepath.Join(t.TempDir(), "scimgate.db"), mustRules(t, remapBase))
	ids := seedRemap(ts, 60, 0)
	strict := compileRules(t, strings.Replace(remapRules, "{to: title, from: title, transforms: [upper]}",
		"{to: title, from: title, transforms: [upper], required: true}", 1))
	preview, err := ts.PreviewRemap(strict, PreviewOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if preview.Rejected != 40 || preview.Changed != 20 || len(preview.Rejections) != 40 {
		t.Fatalf("preview: rejected %d changed %d", preview.Rejected, preview.Changed)
	}
	before, _ := ts.GetUser(ids[1])
	tail := ts.tail()
	if err := ts.SetMapper(strict); err != nil {
		t.Fatal(err)
	}
	st := waitRemap(t, ts.Store)
	if st.Rejected != 40 || st.Last.Rejected != 40 || st.Last.Changed != 20 || len(st.Rejections) != 40 {
		t.Fatalf("status: %+v, %d listed", st.Last, len(st.Rejections))
	}
	var previewIDs, statusIDs []string
	for i := range preview.Rejections {
		previewIDs = append(previewIDs, preview.Rejections[i].ID)
		statusIDs = append(statusIDs, st.Rejections[i].ID)
	}
	slices.Sort(previewIDs)
	slices.Sort(statusIDs)
	if !slices.Equal(previewIDs, statusIDs) {
		t.Errorf("rejections differ: dry run %v, status %v", previewIDs, statusIDs)
	}
	rj := st.Rejections[0]
	if rj.Resource != "user" || len(rj.Reasons) != 1 || !strings.Contains(rj.Reasons[0], "title: a value is required") || strings.Contains(rj.Reasons[0], "@example.com") {
		t.Errorf("rejection %+v", rj)
	}
	if len(ts.events(tail)) != 20 {
		t.Errorf("%d events, want 20", len(ts.events(tail)))
	}
	after, _ := ts.GetUser(ids[1])
	if after.Version != before.Version {
		t.Errorf("a rejected user was rewritten: version %d → %d", before.Version, after.Version)
	}
	var rec map[string]any
	_ = ts.db.View(func(tx *bolt.Tx) error {
		rec, _ = userRecordOf(tx.Bucket(bucketUsers).Get([]byte(ids[1])))
		return nil
	})
	if _, ok := rec["shout"]; ok || rec["login"] != "user0001@example.com" {
		t.Errorf("rejected user's record changed: %v", rec)
	}
	if !strings.Contains(ts.log.String(), `"the new mapping rejects a stored resource; it keeps its last good record"`) ||
		strings.Contains(ts.log.String(), "user0001@example.com") {
		t.Errorf("log: want the rejection with ids only")
	}
	// The identity provider fixes the user: it leaves the list.
	if _, err := ts.PatchUser(ids[1], "", []scim.Operation{{Op: "add", Path: &scim.Path{Attr: "title"}, Value: "Clerk"}}); err != nil {
		t.Fatal(err)
	}
	if st := ts.RemapStatus(); st.Rejected != 39 {
		t.Errorf("after the fix: %d rejected, want 39", st.Rejected)
	}
}

// TestRemapResumes: a pass stopped half-way (the store closed, as a crash
// leaves it: its last batch committed) resumes at the next start with the
// same mapping, and no resource gets a second event.
func TestRemapResumes(t *testing.T) {
	smallBatches(t, 10)
	path := filepath.Join(t.TempDir(), "scimgate.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	initDB(t, db)
	m1 := compileRules(t, remapBase)
	s := New(db, m1, Options{})
	ts := &testStore{Store: s, t: t, db: db, log: &logBuffer{}}
	seedRemap(ts, 200, 0)
	tail := ts.tail()
	m2 := compileRules(t, remapRules)
	if err := s.SetMapper(m2); err != nil {
		t.Fatal(err)
	}
	for s.RemapStatus().Last.Done < 30 {
		time.Sleep(time.Millisecond)
	}
	s.Close()
	st := s.RemapStatus()
	if st.Last.State != RemapRunning || st.Last.Done >= 200 {
		t.Fatalf("stopped: %+v (the test needs it half-way)", st.Last)
	}
	// At the next start the mapping in force is m2 (the reloaded file).
	s = New(db, compileRules(t, remapRules), Options{})
	defer s.Close()
	ts.Store = s
	st = waitRemap(t, s)
	if st.Last.State != RemapDone || st.Last.Done != 200 || st.Last.Changed != 200 {
		t.Fatalf("after the restart: %+v", st.Last)
	}
	per := map[string]int{}
	for _, e := range ts.events(tail) {
		per[e.Resources[0]]++
	}
	for id, n := range per {
		if n != 1 {
			t.Errorf("%s: %d events", id, n)
		}
	}
	if len(per) != 200 {
		t.Errorf("%d users with an event, want 200", len(per))
	}
	if got := fingerprints(t, db); got[m2.Fingerprint()] != 200 {
		t.Errorf("records by fingerprint: %v", got)
	}
	_ = db.Close()
}

func initDB(t *testing.T, db *bolt.DB) {
	t.Helper()
	if err := db.Update(func(tx *bolt.Tx) error {
		if err := InitBuckets(tx); err != nil {
			return err
		}
		return outbox.InitBuckets(tx)
	}); err != nil {
		t.Fatal(err)
	}
}

// TestRemapAtStartAndManual: a changed mapping found at start is applied
// in the background (on_change), or waits for Remap (manual), saying so.
func TestRemapAtStartAndManual(t *testing.T) {
	path := filepath.Join(t.TempDir(), "scimgate.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	initDB(t, db)
	s := New(db, compileRules(t, remapBase), Options{})
	ts := &testStore{Store: s, t: t, db: db, log: &logBuffer{}}
	seedRemap(ts, 30, 1)
	s.Close()

	// manual: the start notes the change, nothing is written until Remap.
	tail := ts.tail()
	s = New(db, compileRules(t, remapRules), Options{RemapManual: true})
	st := s.RemapStatus()
	if st.Last == nil || st.Last.State != RemapPending || !st.Manual || st.Applied == st.Fingerprint {
		t.Fatalf("manual start: %+v", st)
	}
	time.Sleep(50 * time.Millisecond) // a pass would have begun by now
	if n := len(ts.events(tail)); n != 0 {
		t.Fatalf("manual: %d events before remap", n)
	}
	if ok, err := s.Remap(); !ok || err != nil {
		t.Fatalf("Remap: %v %v", ok, err)
	}
	st = waitRemap(t, s)
	if st.Last.State != RemapDone || st.Last.Changed != 31 || st.Applied != st.Fingerprint {
		t.Fatalf("after Remap: %+v", st.Last)
	}
	if ok, _ := s.Remap(); ok {
		t.Error("Remap with nothing to do reported work")
	}
	s.Close()

	// on_change: a start with another mapping remaps by itself.
	s = New(db, compileRules(t, remapBase), Options{})
	defer s.Close()
	st = waitRemap(t, s)
	if st.Last.State != RemapDone || st.Last.Changed != 31 || st.Applied != st.Fingerprint {
		t.Fatalf("on_change start: %+v", st.Last)
	}
}

// TestPreviewRemapLarge measures the dry run over SCIMGATE_REMAP_BENCH
// users (e.g. 100000; skipped when unset): the target is under 30 s for
// 100,000, so that a preview is a habit before every mapping change.
func TestPreviewRemapLarge(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("SCIMGATE_REMAP_BENCH"))
	if n <= 0 {
		t.Skip("set SCIMGATE_REMAP_BENCH=100000 to measure the dry run")
	}
	path := filepath.Join(t.TempDir(), "bench.db") // not the shared cache: the apply below changes it
	buildBenchDB(t, path, n, 0)
	ts := newTestStoreAt(t, path, mapping.DefaultRules())
	next := compileRules(t, `
user:
  - {to: login, from: userName, transforms: [trim], required: true}
  - {to: email, from: ['emails[type eq "work"].value', emails.value], type: email}
  - {to: first_name, from: name.givenName}
  - {to: last_name, from: name.familyName, transforms: [upper]}
  - {to: active, from: active, type: bool, default: true}
  - {to: shout, from: userName, transforms: [upper]}
`)
	t0 := time.Now()
	p, err := ts.PreviewRemap(next, PreviewOptions{})
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(t0)
	t.Logf("dry run of %d users: %s (%.1f µs a user), %d changing, fields %v", p.Users, took.Round(time.Millisecond),
		float64(took.Microseconds())/float64(max(p.Users, 1)), p.Changed, p.UserFields)
	if p.Users != n || p.ChangedUsers != n {
		t.Errorf("preview: %d users, %d changing; want %d", p.Users, p.ChangedUsers, n)
	}
	if limit := time.Duration(n) * 300 * time.Microsecond; took > limit {
		t.Errorf("dry run took %s, over %s (30 s per 100,000 users)", took, limit)
	}
	// The apply, for its figures: how long, in how many batches, and the
	// longest a batch held the writer.
	var mu sync.Mutex
	var batches []time.Duration
	onRemapBatch = func(d time.Duration) { mu.Lock(); batches = append(batches, d); mu.Unlock() }
	defer func() { onRemapBatch = nil }()
	commits0 := ts.w.commits.Load()
	t0 = time.Now()
	if err := ts.SetMapper(next); err != nil {
		t.Fatal(err)
	}
	if !ts.WaitRemap(10 * time.Minute) {
		t.Fatal("remap still running")
	}
	st := ts.RemapStatus()
	t.Logf("remap of %d users: %s in %d transactions, the longest batch %.1f ms inside the writer; changed %d (dry run %d)", st.Last.Done,
		time.Since(t0).Round(time.Millisecond), ts.w.commits.Load()-commits0, st.LongestBatchMS, st.Last.Changed, p.Changed)
	if st.Last.Changed != p.Changed || st.Last.Rejected != p.Rejected {
		t.Errorf("remap changed %d, rejected %d; the dry run said %d, %d", st.Last.Changed, st.Last.Rejected, p.Changed, p.Rejected)
	}
	mu.Lock()
	slices.Sort(batches)
	q := func(f float64) time.Duration { return batches[int(f*float64(len(batches)-1))] }
	t.Logf("remap batches inside the writer: %d; median %s, p99 %s, p99.9 %s, max %s", len(batches), q(0.5), q(0.99), q(0.999), q(1))
	mu.Unlock()
}

// TestRemapUnderWrites: SCIM writes racing a mapping swap and its remap
// never leave a record made by the old mapping: at the end every record is
// on the new fingerprint and is exactly what the new mapping makes of its
// resource.
func TestRemapUnderWrites(t *testing.T) {
	smallBatches(t, 15)
	ts := newTestStoreAt(t, filepath.Join(t.TempDir(), "scimgate.db"), mustRules(t, remapBase))
	ids := seedRemap(ts, 150, 0)
	next := compileRules(t, remapRules)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := ids[(w*37+i*11)%len(ids)]
				if _, err := ts.PatchUser(id, "", []scim.Operation{{Op: "replace", Path: &scim.Path{Attr: "title"}, Value: fmt.Sprintf("t%d-%d", w, i)}}); err != nil {
					t.Errorf("patch: %v", err)
					return
				}
			}
		})
	}
	time.Sleep(20 * time.Millisecond)
	if err := ts.SetMapper(next); err != nil {
		t.Fatal(err)
	}
	waitRemap(t, ts.Store)
	time.Sleep(20 * time.Millisecond)
	close(stop)
	wg.Wait()
	_ = ts.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketUsers).ForEach(func(k, v []byte) error {
			d, err := ts.users.decode(string(k), v)
			if err != nil {
				t.Fatal(err)
			}
			res, err := next.MapUser(d.Doc, txResolver{tx: tx})
			if err != nil {
				t.Fatal(err)
			}
			if d.FP != next.Fingerprint() || len(mapping.Diff(d.Record, res.Record)) != 0 {
				t.Errorf("user %s: fingerprint %s (want %s), record %v, the new mapping makes %v", d.ID, d.FP, next.Fingerprint(), d.Record, res.Record)
			}
			return nil
		})
	})
}
