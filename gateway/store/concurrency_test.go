package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scimgate/scimgate/gateway/scim"
)

// TestConcurrentConflictingPatches: many clients PATCH one user
// and one group at the same time, so prepared writes keep finding that
// what they read has changed. Nothing acknowledged may be lost, versions
// must have no gaps, each resource's events must follow commit order, and
// refused writes (stale If-Match, a taken name) must change nothing.
func TestConcurrentConflictingPatches(t *testing.T) {
	ts := newTestStore(t)
	uid := ts.createUser(`{"userName":"hot@example.com","title":"t0"}`)
	gid := ts.createGroup(`{"displayName":"hot"}`)
	ts.createGroup(`{"displayName":"taken"}`)
	const clients, rounds = 16, 12
	members := make([][]string, clients)
	for c := range clients {
		for i := range rounds {
			members[c] = append(members[c], ts.createUser(fmt.Sprintf(`{"userName":"m%d.%d@example.com"}`, c, i)))
		}
	}
	start := ts.tail()
	c0 := ts.conflicts.Load()

	var mu sync.Mutex
	userVersions, groupVersions := map[uint64]string{}, map[uint64]bool{}
	var refused int
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			for i := range rounds {
				title := fmt.Sprintf("c%d.r%d", c, i)
				r, err := ts.PatchUser(uid, "", []scim.Operation{{Op: "replace", Path: &scim.Path{Attr: "title"}, Value: title}})
				if err != nil {
					t.Errorf("PatchUser %s: %v", title, err)
					return
				}
				add := scim.Operation{Op: "add", Path: &scim.Path{Attr: "members"}, Value: []any{map[string]any{"value": members[c][i]}}}
				g, err := ts.PatchGroup(gid, "", []scim.Operation{add})
				if err != nil {
					t.Errorf("PatchGroup add %s: %v", members[c][i], err)
					return
				}
				// Refusals, decided on whatever snapshot the write sees.
				_, errMatch := ts.PatchUser(uid, `W/"1"`, []scim.Operation{{Op: "replace", Path: &scim.Path{Attr: "title"}, Value: "stale"}})
				_, errName := ts.PatchGroup(gid, "", []scim.Operation{{Op: "replace", Path: &scim.Path{Attr: "displayName"}, Value: "Taken"}})
				mu.Lock()
				if prev, dup := userVersions[r.Version]; dup {
					t.Errorf("user version %d acknowledged twice (%s and %s)", r.Version, prev, title)
				}
				userVersions[r.Version] = title
				groupVersions[g.Version] = true
				if errors.Is(errMatch, ErrVersionMismatch) {
					refused++
				} else {
					t.Errorf("PATCH with a stale If-Match: %v, want ErrVersionMismatch", errMatch)
				}
				mu.Unlock()
				wantSCIMError(t, "rename to a taken name", errName, 409, scim.Uniqueness)
			}
		})
	}
	wg.Wait()
	total := clients * rounds

	// Versions: the acknowledged ones are exactly 2 … total+1, no gaps.
	for _, vs := range []struct {
		what string
		got  []uint64
	}{{"user", keys(userVersions)}, {"group", keys(groupVersions)}} {
		slices.Sort(vs.got)
		if len(vs.got) != total || vs.got[0] != 2 || vs.got[len(vs.got)-1] != uint64(total+1) {
			t.Errorf("%s versions acknowledged: %d from %v to %v, want %d from 2 to %d", vs.what, len(vs.got), vs.got[0], vs.got[len(vs.got)-1], total, total+1)
		}
	}
	// Nothing lost: the stored state is the last commit's, every member is in.
	u, err := ts.GetUser(uid)
	if err != nil {
		t.Fatal(err)
	}
	if u.Version != uint64(total+1) {
		t.Errorf("stored user version %d, want %d", u.Version, total+1)
	}
	if got, want := u.Doc["title"], userVersions[uint64(total+1)]; got != want {
		t.Errorf("stored title %v, want %q (the write acknowledged with the last version)", got, want)
	}
	g, err := ts.GetGroup(gid, true)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(g.Doc["members"].([]any)); n != total || g.Version != uint64(total+1) || g.Doc["displayName"] != "hot" {
		t.Errorf("group: %d members, version %d, name %v; want %d, %d, hot", n, g.Version, g.Doc["displayName"], total, total+1)
	}

	// Events: one per acknowledged change, versions growing by one in
	// sequence (= commit) order, each carrying what its write set.
	var userEvs, groupEvs []loggedEvent
	for _, e := range ts.events(start) {
		switch e.Type {
		case "user.updated":
			userEvs = append(userEvs, e)
		case "group.member_added":
			groupEvs = append(groupEvs, e)
		default:
			t.Errorf("unexpected event %s (a refused write must emit nothing)", e.Type)
		}
	}
	if len(userEvs) != total || len(groupEvs) != total {
		t.Fatalf("%d user.updated and %d group.member_added, want %d each", len(userEvs), len(groupEvs), total)
	}
	for i, e := range userEvs {
		v := versionOf(t, field(t, e.Data, "user.version"))
		if v != uint64(i+2) {
			t.Errorf("user event %d (seq %d): version %d, want %d", i, e.Seq, v, i+2)
		}
		if title := field(t, e.Data, "user.title"); title != userVersions[v] {
			t.Errorf("user event version %d carries title %v, but that version was acknowledged for %q", v, title, userVersions[v])
		}
	}
	added := map[string]bool{}
	for i, e := range groupEvs {
		if v := versionOf(t, field(t, e.Data, "group.version")); v != uint64(i+2) {
			t.Errorf("group event %d (seq %d): version %d, want %d", i, e.Seq, v, i+2)
		}
		added[field(t, e.Data, "user.id").(string)] = true
	}
	for c := range clients {
		for _, id := range members[c] {
			if !added[id] {
				t.Errorf("member %s: no group.member_added", id)
			}
		}
	}
	if refused != total {
		t.Errorf("%d stale PATCHes refused, want %d", refused, total)
	}
	// The point of the test: writes really were prepared on snapshots that
	// another write had overtaken.
	conflicts := ts.conflicts.Load() - c0
	t.Logf("%d writes, %d conflicts, %d prepared inside the writer", 4*total, conflicts, ts.pessimistic.Load())
	if conflicts == 0 {
		t.Error("no write conflicted: the test did not exercise the optimistic path's validation")
	}
}

func keys[V any](m map[uint64]V) []uint64 {
	out := make([]uint64, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// versionOf reads a version decoded with UseNumber.
func versionOf(t *testing.T, v any) uint64 {
	t.Helper()
	n, ok := v.(json.Number)
	if !ok {
		t.Fatalf("version %v (%T) is not a number", v, v)
	}
	u, err := n.Int64()
	if err != nil {
		t.Fatal(err)
	}
	return uint64(u)
}

// TestSubmit: a function submitted to the writer commits in a transaction
// it may share with SCIM writes; one that fails rolls back alone (its
// writes gone, the SCIM writes beside it committed).
func TestSubmit(t *testing.T) {
	ts := newTestStore(t)
	errBroken := errors.New("dispatcher state broken")
	var wg sync.WaitGroup
	results := make([]error, 40)
	for i := range 40 {
		wg.Go(func() {
			if i%2 == 0 {
				_, results[i] = ts.CreateUser(doc(t, fmt.Sprintf(`{"userName":"s%d@example.com"}`, i)))
				return
			}
			results[i] = ts.Submit(func(tx *bolt.Tx) error {
				if err := tx.Bucket(bucketMeta).Put([]byte(fmt.Sprintf("submit%02d", i)), []byte("x")); err != nil {
					return err
				}
				if i%4 == 3 {
					return errBroken
				}
				return nil
			})
		})
	}
	wg.Wait()
	_ = ts.db.View(func(tx *bolt.Tx) error {
		for i, err := range results {
			v := tx.Bucket(bucketMeta).Get([]byte(fmt.Sprintf("submit%02d", i)))
			switch {
			case i%2 == 0 && err != nil:
				t.Errorf("create %d beside submitted functions: %v", i, err)
			case i%4 == 3 && (!errors.Is(err, errBroken) || v != nil):
				t.Errorf("failing submit %d: %v, value %q; want its error and nothing stored", i, err, v)
			case i%4 == 1 && (err != nil || v == nil):
				t.Errorf("submit %d: %v, value %q; want committed", i, err, v)
			}
		}
		return nil
	})
	if st, _ := ts.Stats(); st.Users != 20 {
		t.Errorf("%d users, want 20", st.Users)
	}
}

// BenchmarkDeleteBigGroup measures deleting a 50,000-member group, with
// its 50,000 group.member_removed events (deletes still run inside the
// writer), and how long a create issued just after it waits: 1,082 ms when
// the delete was one transaction, 11–26 ms in chunks of deleteChunk.
//
//	go test -run '^$' -bench DeleteBigGroup -benchtime 1x ./gateway/store/
func BenchmarkDeleteBigGroup(b *testing.B) {
	for range b.N {
		b.StopTimer()
		ts := benchStore(b, 50_000, 50_000)
		_, gs, err := ts.ListGroups(Query{Count: 1})
		if err != nil || len(gs) != 1 {
			b.Fatalf("the benchmark's group: %v %v", gs, err)
		}
		b.StartTimer()
		t0 := time.Now()
		done := make(chan time.Duration, 1)
		go func() {
			time.Sleep(20 * time.Millisecond) // behind the delete in the writer's queue
			t1 := time.Now()
			if _, err := ts.CreateUser(map[string]any{"userName": fmt.Sprintf("during%d@example.com", time.Now().UnixNano())}); err != nil {
				b.Error(err)
			}
			done <- time.Since(t1)
		}()
		if err := ts.DeleteGroup(gs[0].ID, ""); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(time.Since(t0).Seconds(), "delete-s")
		b.ReportMetric(float64((<-done).Milliseconds()), "create-waited-ms")
	}
}

// TestDeleteGroupInChunks: a group larger than deleteChunk is emptied in
// several transactions, each a new version of the group, and removed in
// the last; every membership goes with its event, group.deleted comes last
// above every version, and nothing of the group is left.
func TestDeleteGroupInChunks(t *testing.T) {
	defer func(n int) { deleteChunk = n }(deleteChunk)
	deleteChunk = 100
	ts := newTestStore(t)
	gid := ts.createGroup(`{"displayName":"big"}`)
	members := ts.addMembers(gid, 250)
	other := ts.createGroup(`{"displayName":"other"}`) // the big group is a member of it
	if _, err := ts.PatchGroup(other, "", []scim.Operation{{Op: "add", Path: &scim.Path{Attr: "members"}, Value: []any{map[string]any{"value": gid}}}}); err != nil {
		t.Fatal(err)
	}
	g, _ := ts.GetGroup(gid, false)
	start, c0 := ts.tail(), ts.WriterStats().Commits
	if err := ts.DeleteGroup(gid, g.ETag()); err != nil {
		t.Fatal(err)
	}
	if n := ts.WriterStats().Commits - c0; n != 3 {
		t.Errorf("the delete took %d transactions, want 3 (100 + 100 + 50 members)", n)
	}
	evs := ts.events(start)
	var removed []string
	last := uint64(0)
	for i, e := range evs {
		v := versionOf(t, field(t, e.Data, "group.version"))
		if field(t, e.Data, "group.id") == gid && v < last {
			t.Errorf("event %d (%s): group version %d after %d", i, e.Type, v, last)
		}
		switch {
		case e.Type == "group.member_removed" && field(t, e.Data, "group.id") == gid:
			removed = append(removed, field(t, e.Data, "user.id").(string))
			last = max(last, v)
		case e.Type == "group.member_removed": // the big group leaving the other
			last = max(last, v)
		case e.Type == "group.deleted":
			if i != len(evs)-1 || v <= last {
				t.Errorf("group.deleted at %d of %d, version %d; want it last, above %d", i, len(evs), v, last)
			}
		}
	}
	slices.Sort(removed)
	want := slices.Clone(members)
	slices.Sort(want)
	if !slices.Equal(removed, want) {
		t.Errorf("%d member_removed events, want one per member (%d)", len(removed), len(want))
	}
	if _, err := ts.GetGroup(gid, false); !errors.Is(err, ErrNotFound) {
		t.Errorf("group after delete: %v", err)
	}
	_ = ts.db.View(func(tx *bolt.Tx) error {
		for _, id := range members {
			if tx.Bucket(bucketMemberOf).Get(joinKey(id, gid)) != nil {
				t.Errorf("member_of %s → deleted group left", id)
			}
		}
		if tx.Bucket(bucketMemberCounts).Get([]byte(gid)) != nil || tx.Bucket(bucketMembers).Get(joinKey(other, gid)) != nil {
			t.Error("the deleted group's count or membership in another group left")
		}
		return nil
	})
}
