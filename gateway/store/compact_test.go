package store

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"github.com/scimgate/scimgate/gateway/scim"
	"github.com/scimgate/scimgate/internal/dbtest"
	"github.com/scimgate/scimgate/mapping"
	"github.com/scimgate/scimgate/outbox"
)

// TestCompactFile: a file whose delivered events were pruned is mostly
// free; CompactFile shrinks it, keeps every resource, index, event and
// sequence, and the store goes on from where it was. A file that is not
// free enough is left alone.
func TestCompactFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "scimgate.db")
	db, err := bolt.Open(path, 0o600, BoltOptions())
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return initAll(tx) }); err != nil {
		t.Fatal(err)
	}
	mapper, _ := mapping.Compile(mapping.DefaultRules())
	s := New(db, mapper, Options{})
	var ids []string
	for i := range 300 {
		r, err := s.CreateUser(map[string]any{"userName": fmt.Sprintf("c%03d@example.com", i), "title": strings.Repeat("x", 2000)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.ID)
	}
	g, err := s.CreateGroup(map[string]any{"displayName": "all", "members": memberList(ids)})
	if err != nil {
		t.Fatal(err)
	}
	churn(t, s, 600)
	s.Close()
	// Prune every event but the last, as the dispatcher does once delivered.
	var tail uint64
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("outbox_events"))
		tail = outbox.Tail(tx)
		for seq := uint64(1); seq < tail; seq++ {
			if err := b.Delete(be64(seq)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	rep, err := CompactFile(path, 0.99, nil)
	if err != nil || rep.Compacted {
		t.Fatalf("CompactFile at 99%% free: %+v, %v; want left alone", rep, err)
	}
	if !metaFreelist(t, path) {
		t.Error("a file CompactFile left alone has no synced freelist: the next open would read every page")
	}
	rep, err = CompactFile(path, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", rep)
	if !rep.Compacted || rep.After >= rep.Before/2 || rep.Free < DefaultCompactFree {
		t.Fatalf("CompactFile: %+v; want a file at most half the size", rep)
	}
	if _, err := os.Stat(path + ".compact"); !os.IsNotExist(err) {
		t.Errorf("temporary file left behind: %v", err)
	}

	ts := newTestStoreAt(t, path, mapping.DefaultRules()) // consistency-checked at the end
	for _, id := range ids[:5] {
		if _, err := ts.GetUser(id); err != nil {
			t.Errorf("user %s after compaction: %v", id, err)
		}
	}
	if n, _, err := ts.ListUsers(Query{Filter: mustFilter(t, `userName eq "C007@example.com"`), Count: 1}); err != nil || n != 1 {
		t.Errorf("userName index after compaction: %d, %v", n, err)
	}
	gr, err := ts.GetGroup(g.ID, true)
	if err != nil || memberLen(gr) != len(ids) {
		t.Fatalf("group after compaction: %v, %v", gr, err)
	}
	id := ts.createUser(`{"userName":"after@example.com"}`)
	evs := ts.events(tail)
	if len(evs) != 1 || evs[0].Seq != tail+1 || evs[0].Type != "user.created" || !strings.Contains(string(evs[0].Data), id) {
		t.Errorf("events after compaction: %+v; want user.created at sequence %d", evs, tail+1)
	}
	if st, _ := ts.Stats(); st.Users != len(ids)+1 {
		t.Errorf("users counted %d, want %d", st.Users, len(ids)+1)
	}
}

func initAll(tx *bolt.Tx) error {
	if err := InitBuckets(tx); err != nil {
		return err
	}
	return outbox.InitBuckets(tx)
}

func memberList(ids []string) []any {
	out := make([]any, len(ids))
	for i, id := range ids {
		out[i] = map[string]any{"value": id}
	}
	return out
}

// TestFootprint measures docs/performance.md's footprint (SCIMGATE_FOOTPRINT=1;
// SCIMGATE_FOOTPRINT_USERS sets the count, 100,000 by default; about two
// minutes on two shared cores): after an initial load of N Okta-shaped
// users and one group holding all of them, with every event retained, the
// bytes on disk per user, membership and event against the JSON they hold;
// then opening the file cold (its pages dropped from the page cache) with
// the freelist rebuilt by a scan (NoFreelistSync, release 1's options) and
// with the freelist synced (BoltOptions); and the time CompactFile takes
// once the events are pruned.
func TestFootprint(t *testing.T) {
	if os.Getenv("SCIMGATE_FOOTPRINT") == "" {
		t.Skip("set SCIMGATE_FOOTPRINT=1 (takes minutes)")
	}
	n := 100_000
	fmt.Sscan(os.Getenv("SCIMGATE_FOOTPRINT_USERS"), &n)
	dir := t.TempDir()
	if d := os.Getenv("SCIMGATE_FOOTPRINT_DIR"); d != "" {
		dir = d
	}
	path := filepath.Join(dir, "scimgate.db")
	release1 := &bolt.Options{Timeout: time.Second, NoFreelistSync: true, FreelistType: bolt.FreelistMapType, InitialMmapSize: 256 << 20}
	db, err := bolt.Open(path, 0o600, release1)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(initAll); err != nil {
		t.Fatal(err)
	}
	mapper, _ := mapping.Compile(mapping.DefaultRules())
	s := New(db, mapper, Options{})
	start := time.Now()
	ids := make([]string, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				r, err := s.CreateUser(oktaDoc(i))
				if err != nil {
					t.Error(err)
					return
				}
				ids[i] = r.ID
			}
		})
	}
	wg.Wait()
	loadUsers := time.Since(start)
	g, err := s.CreateGroup(map[string]any{"displayName": "Everyone"})
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < n; off += 1000 {
		op := scim.Operation{Op: "add", Path: &scim.Path{Attr: "members"}, Value: memberList(ids[off:min(off+1000, n)])}
		if _, err := s.PatchGroup(g.ID, "", []scim.Operation{op}); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	t.Logf("loaded %d users in %v, %d memberships in %v", n, loadUsers.Round(time.Millisecond), n, (time.Since(start) - loadUsers).Round(time.Millisecond))

	// What the file holds: bytes of keys and values per bucket, pages per bucket.
	type use struct{ kv, pages int64 }
	buckets := map[string]*use{}
	var events int64
	pageSize := int64(db.Info().PageSize)
	_ = db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			u := &use{}
			buckets[string(name)] = u
			st := b.Stats()
			u.pages = int64(st.BranchPageN + st.BranchOverflowN + st.LeafPageN + st.LeafOverflowN)
			return walkKV(b, func(k, v []byte) { u.kv += int64(len(k) + len(v)) })
		})
	})
	_ = db.View(func(tx *bolt.Tx) error { events = int64(tx.Bucket([]byte("outbox_events")).Stats().KeyN); return nil })
	group := func(names ...string) (kv, disk int64) {
		for _, nm := range names {
			if u := buckets[nm]; u != nil {
				kv += u.kv
				disk += u.pages * pageSize
			}
		}
		return kv, disk
	}
	var allKV, allDisk int64
	for _, u := range buckets {
		allKV += u.kv
		allDisk += u.pages * pageSize
	}
	st, _ := os.Stat(path)
	ukv, udisk := group("users", "users_by_name", "users_by_extid", "users_by_email", "users_order", "users_blocks")
	mkv, mdisk := group("members", "member_of", "member_counts")
	ekv, edisk := group("outbox_events")
	t.Logf("file %d bytes (%.2f× the %d bytes of keys and values; pages in use %d bytes)", st.Size(), float64(st.Size())/float64(allKV), allKV, allDisk)
	t.Logf("per user: %d bytes on disk for %d of keys and values (record and its indexes)", udisk/int64(n), ukv/int64(n))
	t.Logf("per membership: %d bytes on disk for %d of keys and values (both directions)", mdisk/int64(n), mkv/int64(n))
	t.Logf("per event (%d retained): %d bytes on disk for %d of keys and values", events, edisk/events, ekv/events)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	// Opening cold: as release 1 left the file (freelist rebuilt from every
	// page), then after a clean shutdown with SyncFreelist.
	for _, c := range []struct {
		name string
		opts *bolt.Options
	}{{"rebuilt freelist (release 1, or after a crash)", release1}, {"after SyncFreelist at shutdown", BoltOptions()}} {
		if c.opts != release1 {
			db, err := bolt.Open(path, 0o600, BoltOptions())
			if err != nil {
				t.Fatal(err)
			}
			t0 := time.Now()
			if err := SyncFreelist(db); err != nil {
				t.Fatal(err)
			}
			t.Logf("SyncFreelist: %v", time.Since(t0).Round(time.Millisecond))
			db.Close()
		}
		dropCache(t, path)
		var before, after procMem
		before.read()
		t0 := time.Now()
		db, err := bolt.Open(path, 0o600, c.opts)
		took := time.Since(t0)
		if err != nil {
			t.Fatal(err)
		}
		after.read()
		t.Logf("open cold, %s: %v, RSS +%d MB (file-backed +%d MB, anonymous +%d MB)", c.name, took.Round(time.Millisecond),
			(after.rss-before.rss)>>20, (after.file-before.file)>>20, (after.anon-before.anon)>>20)
		db.Close()
	}

	// Prune the events (as a day later) and compact.
	db, err = bolt.Open(path, 0o600, BoltOptions())
	if err != nil {
		t.Fatal(err)
	}
	for done := false; !done; {
		err = db.Update(func(tx *bolt.Tx) error {
			c := tx.Bucket([]byte("outbox_events")).Cursor()
			var keys [][]byte
			for k, _ := c.First(); k != nil && len(keys) < 20000; k, _ = c.Next() {
				keys = append(keys, append([]byte(nil), k...))
			}
			done = len(keys) == 0
			for _, k := range keys {
				if err := tx.Bucket([]byte("outbox_events")).Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	// What a commit costs on this emptied file with each freelist option:
	// the synced freelist is written at every commit.
	for _, c := range []struct {
		name string
		opts *bolt.Options
	}{{"no freelist at commits (NoFreelistSync)", release1}, {"freelist written at every commit", &bolt.Options{Timeout: time.Second, FreelistType: bolt.FreelistMapType}}} {
		db, err := bolt.Open(path, 0o600, c.opts)
		if err != nil {
			t.Fatal(err)
		}
		var free int
		t0 := time.Now()
		const commits = 300
		for i := range commits {
			if err := db.Update(func(tx *bolt.Tx) error {
				return tx.Bucket(bucketMeta).Put([]byte("footprint"), be64(uint64(i)))
			}); err != nil {
				t.Fatal(err)
			}
		}
		took := time.Since(t0)
		free = db.Stats().FreePageN
		db.Close()
		t.Logf("one-key commits on the emptied file (%d free pages), %s: %v each", free, c.name, (took / commits).Round(time.Microsecond))
	}
	runtime.GC()
	// Compact online while SCIM creates go on from 4 clients; they are
	// held only for the catch-up.
	db, err = bolt.Open(path, 0o600, BoltOptions())
	if err != nil {
		t.Fatal(err)
	}
	s = New(db, mapper, Options{})
	var during atomic.Int64
	stopLoad := make(chan struct{})
	var load sync.WaitGroup
	for c := range 4 {
		load.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stopLoad:
					return
				default:
				}
				if _, err := s.CreateUser(oktaDoc(n + c*1_000_000 + i)); err != nil {
					t.Error(err)
					return
				}
				during.Add(1)
			}
		})
	}
	var resume func(*bolt.DB)
	t0 := time.Now()
	rep, held, err := CompactOnline(db, path, 0.3, func() error {
		close(stopLoad)
		load.Wait()
		var err error
		resume, err = s.Pause()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	ndb, err := bolt.Open(path, 0o600, BoltOptions())
	if err != nil {
		t.Fatal(err)
	}
	resume(ndb)
	db.Close()
	t.Logf("compacted online in %v while %d users were created; SCIM writes held %v: %+v", time.Since(t0).Round(time.Millisecond),
		during.Load(), held.Round(time.Millisecond), rep)
	if st, _ := s.Stats(); st.Users != n+int(during.Load()) {
		t.Errorf("users after online compaction: %d, want %d", st.Users, n+int(during.Load()))
	}
	s.Close()
	ndb.Close()
}

// walkKV calls fn for every key and value of b and its nested buckets.
func walkKV(b *bolt.Bucket, fn func(k, v []byte)) error {
	return b.ForEach(func(k, v []byte) error {
		if v == nil {
			if nb := b.Bucket(k); nb != nil {
				return walkKV(nb, fn)
			}
		}
		fn(k, v)
		return nil
	})
}

// oktaDoc is a user as Okta pushes it.
func oktaDoc(i int) map[string]any {
	name := fmt.Sprintf("user%06d@okta.example.com", i)
	return map[string]any{
		"schemas":  []any{"urn:ietf:params:scim:schemas:core:2.0:User"},
		"userName": name, "externalId": fmt.Sprintf("00u%014d", i), "active": true,
		"name":        map[string]any{"givenName": "Given", "familyName": fmt.Sprintf("Family%d", i)},
		"emails":      []any{map[string]any{"primary": true, "value": name, "type": "work"}},
		"displayName": fmt.Sprintf("Given Family%d", i), "locale": "en-US", "title": "Engineer",
	}
}

// dropCache evicts path's pages from the page cache, so the next open
// reads from the disk.
func dropCache(t *testing.T, path string) {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_ = f.Sync()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Logf("fadvise: %v (the open below may be warm)", err)
	}
}

// procMem is the process's resident memory from /proc/self/status.
type procMem struct{ rss, file, anon int64 }

func (m *procMem) read() {
	b, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(b), "\n") {
		var kb int64
		switch {
		case strings.HasPrefix(line, "VmRSS:"):
			fmt.Sscan(strings.TrimPrefix(line, "VmRSS:"), &kb)
			m.rss = kb << 10
		case strings.HasPrefix(line, "RssFile:"):
			fmt.Sscan(strings.TrimPrefix(line, "RssFile:"), &kb)
			m.file = kb << 10
		case strings.HasPrefix(line, "RssAnon:"):
			fmt.Sscan(strings.TrimPrefix(line, "RssAnon:"), &kb)
			m.anon = kb << 10
		}
	}
}

// TestSyncFreelist: after SyncFreelist the file's current meta page points
// at a freelist (the next open reads it); after an ordinary commit with
// BoltOptions it points at none (the next open would rebuild it).
func TestSyncFreelist(t *testing.T) {
	path := filepath.Join(t.TempDir(), "scimgate.db")
	db, err := bolt.Open(path, 0o600, BoltOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	put := func(k string, v []byte) {
		t.Helper()
		if err := db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("b"))
			if err != nil {
				return err
			}
			if v == nil {
				return b.Delete([]byte(k))
			}
			return b.Put([]byte(k), v)
		}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 50 {
		put(fmt.Sprint(i), make([]byte, 8000)) // overflow pages, freed below
	}
	for i := range 50 {
		put(fmt.Sprint(i), nil)
	}
	if metaFreelist(t, path) {
		t.Fatal("a commit with BoltOptions wrote a freelist")
	}
	free := db.Stats().FreePageN
	if err := SyncFreelist(db); err != nil {
		t.Fatal(err)
	}
	if !metaFreelist(t, path) {
		t.Fatal("after SyncFreelist the meta page points at no freelist")
	}
	if !db.NoFreelistSync {
		t.Error("SyncFreelist left NoFreelistSync off")
	}
	db.Close()
	db, err = bolt.Open(path, 0o600, BoltOptions())
	if err != nil {
		t.Fatal(err)
	}
	if got := db.Stats().FreePageN; got < free-4 || free == 0 {
		t.Errorf("free pages read back %d, had %d", got, free)
	}
	put("after", []byte("x"))
	if metaFreelist(t, path) {
		t.Error("the commit after the reopen kept the synced freelist")
	}
}

// metaFreelist reads the file's two meta pages and reports whether the
// current one (the higher transaction id) points at a freelist page.
func metaFreelist(t *testing.T, path string) bool {
	t.Helper()
	f, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Page header (16 bytes), then magic, version, page size, flags (4
	// each), root bucket (16), freelist, pgid, txid (8 each).
	le := func(b []byte) uint64 {
		var v uint64
		for i := 7; i >= 0; i-- {
			v = v<<8 | uint64(b[i])
		}
		return v
	}
	pageSize := int(le(append(f[24:28:28], 0, 0, 0, 0)))
	var best, freelist uint64
	for _, off := range []int{0, pageSize} {
		m := f[off+16:]
		if txid := le(m[48:56]); txid >= best {
			best, freelist = txid, le(m[32:40])
		}
	}
	return freelist != ^uint64(0)
}

// TestCompactOnline: the file is compacted while the store keeps serving;
// what was written after the snapshot (creates, a patch, a delete with its
// membership events, a nested bucket added and one dropped, as the
// dispatcher's state would) is in the copy, which equals the live file
// bucket for bucket, key for key, sequence for sequence; a write issued
// while the store is paused waits and lands in the new file; the store goes
// on there.
func TestCompactOnline(t *testing.T) {
	path := filepath.Join(t.TempDir(), "scimgate.db")
	db, err := bolt.Open(path, 0o600, BoltOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(initAll); err != nil {
		t.Fatal(err)
	}
	mapper, _ := mapping.Compile(mapping.DefaultRules())
	s := New(db, mapper, Options{})
	defer s.Close()
	var ids []string
	for i := range 300 {
		r, err := s.CreateUser(map[string]any{"userName": fmt.Sprintf("o%03d@example.com", i), "title": strings.Repeat("x", 2000)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.ID)
	}
	g, err := s.CreateGroup(map[string]any{"displayName": "all", "members": memberList(ids[:100])})
	if err != nil {
		t.Fatal(err)
	}
	churn(t, s, 600)
	err = db.Update(func(tx *bolt.Tx) error { // the dispatcher's state, and pruned events
		tb, err := tx.Bucket([]byte("outbox_targets")).CreateBucketIfNotExists([]byte("gone"))
		if err != nil {
			return err
		}
		if err := tb.Put([]byte("cursor"), be64(7)); err != nil {
			return err
		}
		b := tx.Bucket([]byte("outbox_events"))
		for seq := uint64(1); seq < outbox.Tail(tx)-5; seq++ {
			if err := b.Delete(be64(seq)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	var resume func(*bolt.DB)
	defer func() { // a failure below must not leave the writer held (Close would wait)
		if resume != nil {
			resume(nil)
		}
	}()
	waiting := make(chan error, 1)
	var waitingID atomic.Value
	rep, pause, err := CompactOnline(db, path, 0, func() error {
		// After the snapshot: SCIM writes and the dispatcher's.
		for i := range 20 {
			if _, err := s.CreateUser(map[string]any{"userName": fmt.Sprintf("late%02d@example.com", i)}); err != nil {
				return err
			}
		}
		if _, err := s.PatchUser(ids[1], "", []scim.Operation{{Op: "replace", Path: &scim.Path{Attr: "title"}, Value: "late"}}); err != nil {
			return err
		}
		if err := s.DeleteUser(ids[0], ""); err != nil { // a member: group.member_removed too
			return err
		}
		err := db.Update(func(tx *bolt.Tx) error {
			tb := tx.Bucket([]byte("outbox_targets"))
			if err := tb.DeleteBucket([]byte("gone")); err != nil {
				return err
			}
			nb, err := tb.CreateBucket([]byte("new"))
			if err != nil {
				return err
			}
			if _, err := nb.NextSequence(); err != nil {
				return err
			}
			return nb.Put([]byte("cursor"), be64(42))
		})
		if err != nil {
			return err
		}
		if resume, err = s.Pause(); err != nil {
			return err
		}
		go func() { // issued while paused: waits for resume
			r, err := s.CreateUser(map[string]any{"userName": "paused@example.com"})
			if err == nil {
				waitingID.Store(r.ID)
			}
			waiting <- err
		}()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v, writes held %v", rep, pause)
	if !rep.Compacted || rep.After >= rep.Before/2 {
		t.Errorf("CompactOnline: %+v; want the file at most half its size", rep)
	}
	select {
	case err := <-waiting:
		t.Fatalf("a write issued during the pause finished before resume: %v", err)
	default:
	}
	ndb, err := bolt.Open(path, 0o600, BoltOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer ndb.Close()
	if diff := treeDiff(t, db, ndb); diff != "" {
		t.Fatalf("the compacted file differs from the live one: %s", diff)
	}
	resume(ndb)
	if err := <-waiting; err != nil {
		t.Fatalf("the write held by the pause: %v", err)
	}
	id := waitingID.Load().(string)
	for _, c := range []struct {
		db   *bolt.DB
		want bool
	}{{db, false}, {ndb, true}} {
		_ = c.db.View(func(tx *bolt.Tx) error {
			if got := tx.Bucket(bucketUsers).Get([]byte(id)) != nil; got != c.want {
				t.Errorf("the held write in the old file: %v, in the new: want %v", got, c.want)
			}
			return nil
		})
	}
	// The store goes on in the new file; numbering continues.
	var tail uint64
	_ = ndb.View(func(tx *bolt.Tx) error { tail = outbox.Tail(tx); return nil })
	r, err := s.CreateUser(map[string]any{"userName": "after@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	_ = ndb.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketUsers).Get([]byte(r.ID)) == nil || outbox.Tail(tx) != tail+1 {
			t.Errorf("after resume: user in new file %v, tail %d, want %d", tx.Bucket(bucketUsers).Get([]byte(r.ID)) != nil, outbox.Tail(tx), tail+1)
		}
		if err := dbtest.Check(tx); err != nil {
			t.Errorf("new file: %v", err)
		}
		return nil
	})
	if gr, err := s.GetGroup(g.ID, true); err != nil || memberLen(gr) != 99 {
		t.Errorf("group after compaction: %d members, %v; want 99", memberLen(gr), err)
	}
}

// treeDiff describes the first difference between two files' buckets,
// nested buckets, keys, values and sequences ("" when equal).
func treeDiff(t *testing.T, a, b *bolt.DB) string {
	t.Helper()
	dump := func(db *bolt.DB) []string {
		var out []string
		var walk func(prefix string, bk *bolt.Bucket)
		walk = func(prefix string, bk *bolt.Bucket) {
			out = append(out, fmt.Sprintf("%s seq=%d", prefix, bk.Sequence()))
			_ = bk.ForEach(func(k, v []byte) error {
				if v == nil {
					walk(prefix+"/"+string(k), bk.Bucket(k))
				} else {
					out = append(out, fmt.Sprintf("%s/%q=%q", prefix, k, v))
				}
				return nil
			})
		}
		_ = db.View(func(tx *bolt.Tx) error {
			return tx.ForEach(func(name []byte, bk *bolt.Bucket) error { walk(string(name), bk); return nil })
		})
		return out
	}
	x, y := dump(a), dump(b)
	for i := range min(len(x), len(y)) {
		if x[i] != y[i] {
			return fmt.Sprintf("entry %d: live %.120s, copy %.120s", i, x[i], y[i])
		}
	}
	if len(x) != len(y) {
		return fmt.Sprintf("live has %d entries, copy %d", len(x), len(y))
	}
	return ""
}

// churn creates n users with large titles and deletes them: once their
// events are pruned, their pages are free (a leaver wave).
func churn(t *testing.T, s *Store, n int) {
	t.Helper()
	for i := range n {
		r, err := s.CreateUser(map[string]any{"userName": fmt.Sprintf("leaver%04d@example.com", i), "title": strings.Repeat("y", 2000)})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteUser(r.ID, ""); err != nil {
			t.Fatal(err)
		}
	}
}
