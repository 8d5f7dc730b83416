package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/scimgate/scimgate/gateway/scim"
	"github.com/scimgate/scimgate/outbox"
)

// directory is what a consumer keeps: records by id, and each group's
// members as "Type/id".
type directory struct {
	users, groups map[string]string
	members       map[string][]string
}

func (d directory) equal(o directory) bool {
	return maps.Equal(d.users, o.users) && maps.Equal(d.groups, o.groups) &&
		maps.EqualFunc(d.members, o.members, func(a, b []string) bool { return slices.Equal(a, b) })
}

func (d directory) String() string {
	return fmt.Sprintf("%d users, %d groups, %d member lists", len(d.users), len(d.groups), len(d.members))
}

// readDirectory reads the store's state through the read API.
func (ts *testStore) readDirectory() directory {
	ts.t.Helper()
	d := directory{users: map[string]string{}, groups: map[string]string{}, members: map[string][]string{}}
	for _, list := range []struct {
		read func(RecordQuery) (RecordPage, error)
		into map[string]string
	}{{ts.UserRecords, d.users}, {ts.GroupRecords, d.groups}} {
		cursor := ""
		for {
			p, err := list.read(RecordQuery{Cursor: cursor, Limit: 7})
			if err != nil {
				ts.t.Fatal(err)
			}
			for _, r := range p.Records {
				list.into[field(ts.t, r, "id").(string)] = string(r)
			}
			if cursor = p.NextCursor; cursor == "" {
				break
			}
		}
	}
	for gid := range d.groups {
		members := []string{}
		cursor := ""
		for {
			p, err := ts.GroupMembers(gid, cursor, 400)
			if err != nil {
				ts.t.Fatal(err)
			}
			for _, m := range p.Members {
				members = append(members, m.Type+"/"+m.ID)
			}
			if cursor = p.NextCursor; cursor == "" {
				break
			}
		}
		d.members[gid] = members
	}
	return d
}

// consumer rebuilds a directory from snapshot events and checks their
// shape and order as it goes.
type consumer struct {
	t       *testing.T
	dir     directory
	phase   int // index in phases of the last event's type
	seq     uint64
	started map[string]json.Number
	chunks  map[string][2]int // group → next index, count
	done    bool
}

var phases = []string{"snapshot.started", "user.snapshot", "group.snapshot", "group.members_snapshot", "snapshot.completed"}

func newConsumer(t *testing.T) *consumer {
	return &consumer{t: t, phase: -1, chunks: map[string][2]int{},
		dir: directory{users: map[string]string{}, groups: map[string]string{}, members: map[string][]string{}}}
}

func (c *consumer) take(ev outbox.Event) error {
	t := c.t
	p := slices.Index(phases, ev.Type)
	if p < 0 || p < c.phase || c.done {
		t.Fatalf("event %s after phase %d: out of order", ev.Type, c.phase)
	}
	if p == 0 && c.phase >= 0 {
		t.Fatal("snapshot.started twice")
	}
	c.phase = p
	var data map[string]json.RawMessage
	if err := json.Unmarshal(ev.Data, &data); err != nil {
		t.Fatalf("%s data %s: %v", ev.Type, ev.Data, err)
	}
	switch ev.Type {
	case "snapshot.started":
		if err := json.Unmarshal(ev.Data, &c.started); err != nil {
			t.Fatal(err)
		}
		n, _ := c.started["sequence"].Int64()
		c.seq = uint64(n)
	case "user.snapshot", "group.snapshot":
		key, into, kind := "user", c.dir.users, "User/"
		if ev.Type == "group.snapshot" {
			key, into, kind = "group", c.dir.groups, "Group/"
		}
		id := field(t, data[key], "id").(string)
		if !slices.Equal(ev.Resources, []string{kind + id}) {
			t.Errorf("%s resources %v", ev.Type, ev.Resources)
		}
		into[id] = string(data[key])
	case "group.members_snapshot":
		gid := field(t, data["group"], "id").(string)
		if !slices.Equal(ev.Resources, []string{"Group/" + gid}) {
			t.Errorf("members chunk resources %v", ev.Resources)
		}
		if string(data["group"]) != c.dir.groups[gid] {
			t.Errorf("members chunk carries group %s, group.snapshot had %s", data["group"], c.dir.groups[gid])
		}
		var chunk struct{ Index, Count int }
		var members []struct{ ID, Type string }
		if err := json.Unmarshal(data["chunk"], &chunk); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(data["members"], &members); err != nil {
			t.Fatal(err)
		}
		if len(members) > SnapshotChunk {
			t.Errorf("chunk of %d members", len(members))
		}
		st := c.chunks[gid]
		if chunk.Index != st[0] || (st[0] > 0 && chunk.Count != st[1]) || chunk.Index >= chunk.Count {
			t.Errorf("group %s chunk %+v after %v", gid, chunk, st)
		}
		c.chunks[gid] = [2]int{chunk.Index + 1, chunk.Count}
		if c.dir.members[gid] == nil {
			c.dir.members[gid] = []string{}
		}
		for _, m := range members {
			c.dir.members[gid] = append(c.dir.members[gid], m.Type+"/"+m.ID)
		}
	case "snapshot.completed":
		var d struct{ Sequence uint64 }
		_ = json.Unmarshal(ev.Data, &d)
		if d.Sequence != c.seq {
			t.Errorf("completed at %d, started at %d", d.Sequence, c.seq)
		}
		c.done = true
	}
	return nil
}

// TestSnapshotRebuildsState: a consumer that receives only the
// snapshot ends with exactly the store's state as the read transaction saw
// it, although writes commit while the snapshot is read; members come in
// chunks of at most 1,000 with their index and count, every group has its
// chunk, records are exactly the read API's (and the events').
func TestSnapshotRebuildsState(t *testing.T) {
	ts := newTestStore(t)
	var users []string
	for i := range 30 {
		users = append(users, ts.createUser(fmt.Sprintf(`{"userName":"s%d@example.com","active":%v}`, i, i%4 != 0)))
	}
	big := ts.createGroup(`{"displayName":"Big"}`)
	ts.addMembers(big, 2500)
	small := ts.createGroup(fmt.Sprintf(`{"displayName":"Small","members":[{"value":%q},{"value":%q}]}`, users[0], big))
	ts.createGroup(`{"displayName":"Empty"}`)
	if err := ts.DeleteUser(users[1], ""); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.PatchGroup(small, "", []scim.Operation{{Op: "replace", Path: &scim.Path{Attr: "displayName"}, Value: "Small renamed"}}); err != nil {
		t.Fatal(err)
	}
	want := ts.readDirectory()
	if len(want.members[big]) != 2500 {
		t.Fatalf("setup: big group has %d members", len(want.members[big]))
	}

	tx, err := ts.db.Begin(false)
	if err != nil {
		t.Fatal(err)
	}
	tail := outbox.Tail(tx)
	var wg sync.WaitGroup
	wg.Go(func() { // writes that commit while the snapshot is read
		if _, err := ts.CreateUser(doc(t, `{"userName":"late@example.com"}`)); err != nil {
			t.Error(err)
		}
		if err := ts.DeleteUser(users[2], ""); err != nil {
			t.Error(err)
		}
	})
	c := newConsumer(t)
	counts := map[string]int{}
	err = ts.Snapshot(tx, func(ev outbox.Event) error {
		counts[ev.Type]++
		return c.take(ev)
	})
	_ = tx.Rollback()
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if !c.done {
		t.Fatal("no snapshot.completed")
	}
	if c.seq != tail {
		t.Errorf("snapshot sequence %d, want the tail %d", c.seq, tail)
	}
	if c.started["users"].String() != "2529" || c.started["groups"].String() != "3" {
		t.Errorf("started %v, want 2529 users and 3 groups", c.started)
	}
	if !c.dir.equal(want) {
		t.Errorf("rebuilt %v, want %v", c.dir, want)
		for id, r := range want.users {
			if c.dir.users[id] != r {
				t.Errorf("user %s: got %s, want %s", id, c.dir.users[id], r)
				break
			}
		}
	}
	if got := fmt.Sprint(counts); got != "map[group.members_snapshot:5 group.snapshot:3 snapshot.completed:1 snapshot.started:1 user.snapshot:2529]" {
		t.Errorf("event counts %s (2,500 members: 3 chunks; two more groups: 1 each)", got)
	}
	if after := ts.readDirectory(); after.equal(want) {
		t.Error("the concurrent writes changed nothing: the test proves nothing")
	}
	// The records are the events' data.user exactly.
	for _, e := range ts.events(0) {
		if e.Type == "user.created" {
			var d map[string]json.RawMessage
			_ = json.Unmarshal(e.Data, &d)
			id := field(t, d["user"], "id").(string)
			if r, ok := want.users[id]; ok && id != users[0] && strings.Contains(r, `"version":1`) && r != string(d["user"]) {
				t.Errorf("record %s differs from its user.created data %s", r, d["user"])
			}
		}
	}
	// emit's error stops the snapshot.
	stop := errors.New("receiver gone")
	n := 0
	err = ts.db.View(func(tx *bolt.Tx) error {
		return ts.Snapshot(tx, func(outbox.Event) error {
			if n++; n == 3 {
				return stop
			}
			return nil
		})
	})
	if !errors.Is(err, stop) || n != 3 {
		t.Errorf("Snapshot after emit failed: %v after %d events", err, n)
	}
}

// BenchmarkSnapshot reads the snapshot of 100,000 users (and, in the
// second case, a 50,000-member group: 50 member chunks), emitting to a
// sink that drops each event: the store's share of a backfill.
func BenchmarkSnapshot(b *testing.B) {
	for _, size := range []struct{ users, members int }{{100_000, 0}, {50_000, 50_000}} {
		ts := benchStore(b, size.users, size.members)
		b.Run(fmt.Sprintf("users=%d/members=%d", size.users, size.members), func(b *testing.B) {
			for b.Loop() {
				n, bytes := 0, 0
				err := ts.db.View(func(tx *bolt.Tx) error {
					return ts.Snapshot(tx, func(ev outbox.Event) error { n++; bytes += len(ev.Data); return nil })
				})
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(n), "events/op")
				b.ReportMetric(float64(bytes)/float64(n), "B/event")
			}
		})
	}
}
