package outbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A synthetic directory in the same database, written the way the store
// writes: the record and its event in one transaction.
var (
	bucketTestUsers   = []byte("test_users")   // id → JSON record
	bucketTestGroups  = []byte("test_groups")  // id → JSON record
	bucketTestMembers = []byte("test_members") // group id \x00 user id → ""
)

type directory struct {
	t  testing.TB
	db *bolt.DB
}

func newDirectory(t testing.TB, db *bolt.DB) *directory {
	t.Helper()
	err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketTestUsers, bucketTestGroups, bucketTestMembers} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return &directory{t: t, db: db}
}

// write applies changes and enqueues their events in one transaction.
func (dir *directory) write(d *Dispatcher, fn func(tx *bolt.Tx, emit func(Event))) []Event {
	dir.t.Helper()
	var out []Event
	err := dir.db.Update(func(tx *bolt.Tx) error {
		out = nil
		var err error
		fn(tx, func(ev Event) {
			if err != nil {
				return
			}
			var stored Event
			stored, err = Enqueue(tx, ev, time.Now())
			out = append(out, stored)
		})
		if d != nil {
			tx.OnCommit(d.Notify)
		}
		return err
	})
	if err != nil {
		dir.t.Fatal(err)
	}
	return out
}

func (dir *directory) putUser(d *Dispatcher, id string, version int) []Event {
	return dir.write(d, func(tx *bolt.Tx, emit func(Event)) {
		rec := fmt.Sprintf(`{"id":%q,"version":%d,"login":"%s@example.com"}`, id, version, id)
		_ = tx.Bucket(bucketTestUsers).Put([]byte(id), []byte(rec))
		typ := "user.updated"
		if version == 1 {
			typ = "user.created"
		}
		emit(Event{Type: typ, Resources: []string{"User/" + id}, Data: json.RawMessage(`{"user":` + rec + `}`)})
	})
}

func (dir *directory) putGroup(d *Dispatcher, id string, members ...string) []Event {
	return dir.write(d, func(tx *bolt.Tx, emit func(Event)) {
		rec := fmt.Sprintf(`{"id":%q,"version":1,"name":"group %s"}`, id, id)
		_ = tx.Bucket(bucketTestGroups).Put([]byte(id), []byte(rec))
		emit(Event{Type: "group.created", Resources: []string{"Group/" + id}, Data: json.RawMessage(`{"group":` + rec + `}`)})
		for _, u := range members {
			_ = tx.Bucket(bucketTestMembers).Put([]byte(id+"\x00"+u), nil)
			emit(Event{Type: "group.member_added", Resources: []string{"Group/" + id, "User/" + u},
				Data: json.RawMessage(fmt.Sprintf(`{"group":{"id":%q},"user":{"id":%q}}`, id, u))})
		}
	})
}

// snapshot is the SnapshotFunc of the synthetic directory, with membership
// chunks of chunk members (the store uses 1,000).
func (dir *directory) snapshot(chunk int) SnapshotFunc {
	return func(tx *bolt.Tx, emit func(Event) error) error {
		users, groups, members := tx.Bucket(bucketTestUsers), tx.Bucket(bucketTestGroups), tx.Bucket(bucketTestMembers)
		seq := Tail(tx)
		err := emit(Event{Type: TypeSnapshotStarted, Data: json.RawMessage(fmt.Sprintf(`{"sequence":%d,"users":%d,"groups":%d}`,
			seq, users.Stats().KeyN, groups.Stats().KeyN))})
		if err != nil {
			return err
		}
		if err := users.ForEach(func(k, v []byte) error {
			return emit(Event{Type: TypeUserSnapshot, Resources: []string{"User/" + string(k)}, Data: json.RawMessage(`{"user":` + string(v) + `}`)})
		}); err != nil {
			return err
		}
		if err := groups.ForEach(func(k, v []byte) error {
			return emit(Event{Type: TypeGroupSnapshot, Resources: []string{"Group/" + string(k)}, Data: json.RawMessage(`{"group":` + string(v) + `}`)})
		}); err != nil {
			return err
		}
		if err := groups.ForEach(func(g, rec []byte) error {
			var ids []string
			c := members.Cursor()
			prefix := append(slices.Clone(g), 0)
			for k, _ := c.Seek(prefix); k != nil && strings.HasPrefix(string(k), string(prefix)); k, _ = c.Next() {
				ids = append(ids, string(k[len(prefix):]))
			}
			count := (len(ids) + chunk - 1) / chunk
			for i := range count {
				var ms []string
				for _, id := range ids[i*chunk : min((i+1)*chunk, len(ids))] {
					ms = append(ms, fmt.Sprintf(`{"id":%q,"type":"User"}`, id))
				}
				data := fmt.Sprintf(`{"group":%s,"members":[%s],"chunk":{"index":%d,"count":%d}}`, rec, strings.Join(ms, ","), i, count)
				if err := emit(Event{Type: TypeMembersSnapshot, Resources: []string{"Group/" + string(g)}, Data: json.RawMessage(data)}); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
		return emit(Event{Type: TypeSnapshotCompleted, Data: json.RawMessage(fmt.Sprintf(`{"sequence":%d}`, seq))})
	}
}

// orderedReceiver records arrivals and acknowledgements in order and checks,
// at each arrival, the ordering rules of a backfill: phases in order, each
// finished (acknowledged or refused for good) before the next; live events
// after the snapshot's sequence only once snapshot.completed is finished.
type orderedReceiver struct {
	*receiver
	mu         sync.Mutex
	arrived    []delivery
	acked      []delivery // in acknowledgement order
	final      map[string]bool
	violations []string
	reject     func(dl delivery, attempt int) int
}

func newOrderedReceiver(t *testing.T, secret string) *orderedReceiver {
	or := &orderedReceiver{final: map[string]bool{}}
	or.receiver = newReceiver(t, secret, func(w http.ResponseWriter, r *http.Request, dl delivery, attempt int) int {
		or.mu.Lock()
		defer or.mu.Unlock()
		or.check(dl)
		or.arrived = append(or.arrived, dl)
		if or.reject != nil {
			if st := or.reject(dl, attempt); st != 0 {
				if st >= 400 && st < 500 && st != 408 && st != 429 && st != 410 {
					or.final[dl.ID] = true // dead-lettered
				}
				return st
			}
		}
		or.acked = append(or.acked, dl)
		or.final[dl.ID] = true
		return 0
	})
	return or
}

func (or *orderedReceiver) check(dl delivery) {
	p := snapshotPhase(dl.Type)
	var snapSeq uint64
	started, completed := false, false
	for _, a := range or.arrived {
		switch a.Type {
		case TypeSnapshotStarted:
			started, snapSeq = true, a.Seq
		case TypeSnapshotCompleted:
			completed = or.final[a.ID]
		}
	}
	if p < 0 {
		if started && dl.Seq > snapSeq && !completed {
			or.violations = append(or.violations, fmt.Sprintf("live event %d (%s) arrived before snapshot.completed was finished", dl.Seq, dl.Type))
		}
		return
	}
	for _, a := range or.arrived {
		q := snapshotPhase(a.Type)
		switch {
		case q > p:
			or.violations = append(or.violations, fmt.Sprintf("%s arrived after %s", dl.Type, a.Type))
		case q >= 0 && q < p && !or.final[a.ID]:
			or.violations = append(or.violations, fmt.Sprintf("%s arrived while %s %s was not finished", dl.Type, a.Type, a.ID))
		case q < 0 && p == 0 && a.Seq <= dl.Seq && !or.final[a.ID]:
			or.violations = append(or.violations, fmt.Sprintf("snapshot.started arrived while event %d, before the snapshot, was not finished", a.Seq))
		}
	}
}

func (or *orderedReceiver) ackedTypes() map[string]int {
	or.mu.Lock()
	defer or.mu.Unlock()
	n := map[string]int{}
	for _, a := range or.acked {
		n[a.Type]++
	}
	return n
}

func (or *orderedReceiver) checkViolations(t *testing.T) {
	t.Helper()
	or.mu.Lock()
	defer or.mu.Unlock()
	for _, v := range or.violations[:min(len(or.violations), 10)] {
		t.Error(v)
	}
}

// waitBackfill waits until the target's backfill is done.
func waitBackfill(t *testing.T, d *Dispatcher, target string, timeout time.Duration) BackfillStatus {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		sts, err := d.Status()
		if err != nil {
			t.Fatal(err)
		}
		for _, st := range sts {
			if st.Name == target && st.Backfill != nil && st.Backfill.State == BackfillDone {
				return *st.Backfill
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("backfill of %s not done after %v: %+v", target, timeout, sts)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// logTypes returns the types of every event in the global log.
func logTypes(t *testing.T, db *bolt.DB) map[string]int {
	t.Helper()
	n := map[string]int{}
	_ = db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketEvents).ForEach(func(k, v []byte) error { n[peekType(v)]++; return nil })
	})
	return n
}

// A backfill sends the events pending up to its sequence first, then the
// snapshot phase by phase, then the live events after it; the snapshot is
// the state at its sequence and never enters the log.
func TestBackfillOrder(t *testing.T) {
	secret := mustSecret(t)
	rc := newOrderedReceiver(t, secret)
	db := mustOpenDB(t)
	dir := newDirectory(t, db)
	for i := range 20 {
		dir.putUser(nil, fmt.Sprint("u", i), 1)
	}
	dir.putGroup(nil, "g0", "u0", "u1", "u2", "u3", "u4")
	dir.putGroup(nil, "g1")

	cfg := testConfig(rc.srv.URL, secret)
	cfg.Concurrency = 4
	d := newTestDispatcher(t, db, cfg)
	d.SetSnapshot(dir.snapshot(2))
	if err := d.Pause("app", "preparing"); err != nil {
		t.Fatal(err)
	}
	runDispatcher(t, d)
	before := append(dir.putUser(d, "u1", 2), dir.putUser(d, "u20", 1)...) // pending at the snapshot
	waitStatus(t, d, 5*time.Second, "2 pending", func(st TargetStatus) bool { return st.Backlog == 2 })

	bs, err := d.Backfill("app")
	if err != nil {
		t.Fatalf("Backfill: %v", err)
	}
	// 1 started + 21 users + 2 groups + 3 membership chunks (5 members by 2) + 1 completed
	if bs.State != BackfillQueued || bs.Total != 28 || bs.Remaining != 28 || bs.Sequence != before[1].Seq {
		t.Errorf("Backfill = %+v; want queued, 28 events at sequence %d", bs, before[1].Seq)
	}
	if _, err := d.Backfill("app"); !errors.Is(err, ErrConflict) {
		t.Errorf("second Backfill = %v, want ErrConflict", err)
	}
	if _, err := d.ReplayHistory("app", 0, time.Time{}); !errors.Is(err, ErrConflict) {
		t.Errorf("ReplayHistory during a backfill = %v, want ErrConflict", err)
	}
	live := append(dir.putUser(d, "u1", 3), dir.putUser(d, "u21", 1)...) // after the snapshot: held
	live = append(live, dir.putGroup(d, "g2", "u21")...)
	if err := d.Resume("app"); err != nil {
		t.Fatal(err)
	}
	rc.waitAcked(t, 10*time.Second, append(before, live...))
	done := waitBackfill(t, d, "app", 5*time.Second)
	rc.checkViolations(t)

	if done.Total != 28 || done.Remaining != 0 || done.FinishedAt.IsZero() || done.Sequence != bs.Sequence {
		t.Errorf("backfill status = %+v", done)
	}
	got := rc.ackedTypes()
	for typ, want := range map[string]int{TypeSnapshotStarted: 1, TypeUserSnapshot: 21, TypeGroupSnapshot: 2, TypeMembersSnapshot: 3, TypeSnapshotCompleted: 1} {
		if got[typ] != want {
			t.Errorf("%d %s acknowledged, want %d", got[typ], typ, want)
		}
	}
	rc.mu.Lock()
	var order []string
	for _, a := range rc.acked {
		order = append(order, a.ID)
	}
	seen := map[string]bool{}
	for _, a := range rc.acked {
		if snapshotPhase(a.Type) >= 0 {
			if a.Seq != bs.Sequence {
				t.Errorf("%s carries sequence %d, want the snapshot's %d", a.Type, a.Seq, bs.Sequence)
			}
			if a.Type == TypeUserSnapshot && strings.Contains(string(a.Body), `"id":"u1"`) && !strings.Contains(string(a.Body), `"version":2`) {
				t.Errorf("u1's snapshot %s is not its state at the snapshot's sequence (version 2)", a.Body)
			}
			if strings.Contains(string(a.Body), `"u21"`) {
				t.Errorf("the snapshot contains u21, created after it: %s", a.Body)
			}
		}
		if seen[a.ID] {
			t.Errorf("%s acknowledged twice", a.ID)
		}
		seen[a.ID] = true
	}
	first := slices.IndexFunc(rc.acked, func(a delivery) bool { return a.Type == TypeSnapshotStarted })
	for _, ev := range before {
		if i := slices.Index(order, ev.ID); i > first {
			t.Errorf("event %d, pending before the snapshot, acknowledged after snapshot.started", ev.Seq)
		}
	}
	rc.mu.Unlock()
	if n := logTypes(t, db); n[TypeUserSnapshot]+n[TypeSnapshotStarted]+n[TypeSnapshotCompleted] > 0 {
		t.Errorf("snapshot events entered the global log: %v", n)
	}
	_ = db.View(func(tx *bolt.Tx) error {
		if n := targetBucket(tx, "app").Bucket(bucketSpool).Stats().KeyN; n != 0 {
			t.Errorf("%d snapshot events left in the spool after the backfill", n)
		}
		return nil
	})
}

// backfill_on_start backfills a new target once, the first time it
// appears, whether configured at start or added by Reload.
func TestBackfillOnStart(t *testing.T) {
	secret := mustSecret(t)
	rc := newOrderedReceiver(t, secret)
	added := newOrderedReceiver(t, secret)
	db := mustOpenDB(t)
	dir := newDirectory(t, db)
	for i := range 5 {
		dir.putUser(nil, fmt.Sprint("u", i), 1)
	}
	cfg := testConfig(rc.srv.URL, secret)
	cfg.Targets[0].BackfillOnStart = true
	d := newTestDispatcher(t, db, cfg)
	d.SetSnapshot(dir.snapshot(1000))
	stop := runDispatcher(t, d)
	waitBackfill(t, d, "app", 5*time.Second)
	live := dir.putUser(d, "u9", 1)
	rc.waitAcked(t, 5*time.Second, live)
	if got := rc.ackedTypes(); got[TypeSnapshotStarted] != 1 || got[TypeUserSnapshot] != 5 {
		t.Errorf("acknowledged %v, want one snapshot of 5 users", got)
	}

	cfg2 := cloneConfig(cfg)
	cfg2.Targets = append(cfg2.Targets, Target{Name: "late", URL: added.srv.URL, Secrets: []string{secret}, BackfillOnStart: true})
	changes, err := d.Reload(cfg2)
	if err != nil || !strings.Contains(strings.Join(changes, "\n"), "target late added (webhook "+added.srv.URL+"): a snapshot") {
		t.Fatalf("Reload = %q, %v", changes, err)
	}
	waitBackfill(t, d, "late", 5*time.Second)
	if got := added.ackedTypes(); got[TypeSnapshotStarted] != 1 || got[TypeUserSnapshot] != 6 {
		t.Errorf("added target acknowledged %v, want one snapshot of 6 users", got)
	}
	stop()

	d = newTestDispatcher(t, db, cfg2)
	d.SetSnapshot(dir.snapshot(1000))
	runDispatcher(t, d)
	more := dir.putUser(d, "u10", 1)
	rc.waitAcked(t, 5*time.Second, more)
	added.waitAcked(t, 5*time.Second, more)
	// Deliberately real time: a second snapshot, the defect, would come
	// within this window (nothing signals its absence).
	time.Sleep(100 * time.Millisecond)
	if got := rc.ackedTypes()[TypeSnapshotStarted]; got != 1 {
		t.Errorf("%d snapshots after a restart, want still 1", got)
	}
	if got := added.ackedTypes()[TypeSnapshotStarted]; got != 1 {
		t.Errorf("added target: %d snapshots after a restart, want still 1", got)
	}
	rc.checkViolations(t)
	added.checkViolations(t)
}

// backfill_on_start does not act on a target that already has state.
func TestBackfillOnStartExistingTarget(t *testing.T) {
	secret := mustSecret(t)
	rc := newOrderedReceiver(t, secret)
	db := mustOpenDB(t)
	dir := newDirectory(t, db)
	cfg := testConfig(rc.srv.URL, secret)
	d := newTestDispatcher(t, db, cfg)
	stop := runDispatcher(t, d)
	rc.waitAcked(t, 5*time.Second, dir.putUser(d, "u1", 1))
	stop()
	cfg.Targets[0].BackfillOnStart = true
	d = newTestDispatcher(t, db, cfg)
	d.SetSnapshot(dir.snapshot(1000))
	runDispatcher(t, d)
	rc.waitAcked(t, 5*time.Second, dir.putUser(d, "u2", 1))
	// Deliberately real time: a snapshot, the defect, would come within
	// this window (nothing signals its absence).
	time.Sleep(50 * time.Millisecond)
	if n := rc.ackedTypes()[TypeSnapshotStarted]; n != 0 {
		t.Errorf("%d snapshots for a target that existed before backfill_on_start was set", n)
	}
}

// Without Run, Backfill stores the snapshot; the next Run delivers it.
// Errors: unknown target, no snapshot source, a SnapshotFunc that breaks the
// phase order (which stores nothing).
func TestBackfillWithoutRun(t *testing.T) {
	secret := mustSecret(t)
	rc := newOrderedReceiver(t, secret)
	db := mustOpenDB(t)
	dir := newDirectory(t, db)
	dir.putUser(nil, "u1", 1)
	d := newTestDispatcher(t, db, testConfig(rc.srv.URL, secret))
	if _, err := d.Backfill("app"); !errors.Is(err, ErrNoSnapshot) {
		t.Errorf("Backfill without a snapshot source = %v", err)
	}
	d.SetSnapshot(func(tx *bolt.Tx, emit func(Event) error) error {
		if err := emit(Event{Type: TypeSnapshotStarted, Data: []byte(`{}`)}); err != nil {
			return err
		}
		if err := emit(Event{Type: TypeGroupSnapshot, Data: []byte(`{}`)}); err != nil {
			return err
		}
		return emit(Event{Type: TypeUserSnapshot, Data: []byte(`{}`)})
	})
	if _, err := d.Backfill("app"); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "user.snapshot after group.snapshot") {
		t.Errorf("Backfill with phases out of order = %v", err)
	}
	if sts, _ := d.Status(); sts[0].Backfill != nil {
		t.Errorf("a failed backfill left state: %+v", sts[0].Backfill)
	}
	if _, err := d.Backfill("nope"); !errors.Is(err, ErrUnknownTarget) {
		t.Errorf("Backfill(unknown) = %v", err)
	}
	d.SetSnapshot(dir.snapshot(1000))
	d.chunk = 2 // several spool transactions
	bs, err := d.Backfill("app")
	if err != nil || bs.State != BackfillQueued || bs.Total != 3 {
		t.Fatalf("Backfill = %+v, %v", bs, err)
	}
	sts, _ := d.Status()
	if b := sts[0].Backfill; b == nil || b.State != BackfillQueued || b.Remaining != 3 || sts[0].Backlog != 3 {
		t.Errorf("status before Run = %+v (backfill %+v)", sts[0], sts[0].Backfill)
	}
	runDispatcher(t, d)
	waitBackfill(t, d, "app", 5*time.Second)
	if got := rc.ackedTypes(); got[TypeUserSnapshot] != 1 || got[TypeSnapshotCompleted] != 1 {
		t.Errorf("acknowledged %v", got)
	}
}

// A snapshot event the receiver refuses is dead-lettered like any other:
// listed (paged by Position), replayable — back to the target's spool, never
// into the log — and discardable; the backfill goes on past it.
func TestBackfillDeadLetters(t *testing.T) {
	secret := mustSecret(t)
	rc := newOrderedReceiver(t, secret)
	var mu sync.Mutex
	refuse := true
	rc.reject = func(dl delivery, attempt int) int {
		mu.Lock()
		defer mu.Unlock()
		if refuse && dl.Type == TypeUserSnapshot && (strings.Contains(string(dl.Body), `"u3"`) || strings.Contains(string(dl.Body), `"u4"`) || strings.Contains(string(dl.Body), `"u5"`)) {
			return http.StatusUnprocessableEntity
		}
		return 0
	}
	db := mustOpenDB(t)
	dir := newDirectory(t, db)
	for i := range 8 {
		dir.putUser(nil, fmt.Sprint("u", i), 1)
	}
	d := newTestDispatcher(t, db, testConfig(rc.srv.URL, secret))
	d.SetSnapshot(dir.snapshot(1000))
	runDispatcher(t, d)
	bs, err := d.Backfill("app")
	if err != nil {
		t.Fatal(err)
	}
	waitBackfill(t, d, "app", 5*time.Second)
	if got := rc.ackedTypes(); got[TypeSnapshotCompleted] != 1 || got[TypeUserSnapshot] != 5 {
		t.Errorf("acknowledged %v, want 5 user snapshots and the completion", got)
	}
	// Page through the three dead letters one at a time by Position.
	var dls []DeadLetter
	var after uint64
	for range 5 {
		page, err := d.DeadLetters("app", after, 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		dls = append(dls, page...)
		after = page[0].Position
	}
	if len(dls) != 3 {
		t.Fatalf("paged %d dead letters, want 3", len(dls))
	}
	for _, dl := range dls {
		if dl.Event.Type != TypeUserSnapshot || dl.Event.Seq != bs.Sequence || !isSpoolKey(dl.Position) || dl.LastStatus != 422 {
			t.Errorf("dead letter = %+v", dl)
		}
	}
	if got, err := d.DeadLetter("app", dls[0].Event.ID); err != nil || got.Event.Seq != bs.Sequence {
		t.Errorf("DeadLetter = %+v, %v", got, err)
	}
	mu.Lock()
	refuse = false
	mu.Unlock()
	if n, err := d.Replay("app", []string{dls[0].Event.ID, dls[1].Event.ID}); n != 2 || err != nil {
		t.Fatalf("Replay = %d, %v", n, err)
	}
	rc.waitAcked(t, 5*time.Second, []Event{dls[0].Event, dls[1].Event})
	rc.mu.Lock()
	for _, a := range rc.acked {
		if a.ID == dls[0].Event.ID && (a.Seq != bs.Sequence || a.Type != TypeUserSnapshot) {
			t.Errorf("replayed snapshot event arrived as %s seq %d", a.Type, a.Seq)
		}
	}
	rc.mu.Unlock()
	if n, err := d.Discard("app", []string{dls[2].Event.ID}); n != 1 || err != nil {
		t.Errorf("Discard = %d, %v", n, err)
	}
	waitStatus(t, d, 5*time.Second, "settled", func(st TargetStatus) bool { return st.Backlog == 0 && st.DeadLetters == 0 })
	_ = db.View(func(tx *bolt.Tx) error {
		events := tx.Bucket(bucketEvents)
		return events.ForEach(func(k, v []byte) error {
			for _, dl := range dls {
				if strings.Contains(string(v), dl.Event.ID) || fromBE64(k) == dl.Position {
					t.Errorf("snapshot event %s written into the global log", dl.Event.ID)
				}
			}
			return nil
		})
	})
	if n := logTypes(t, db)[TypeUserSnapshot]; n != 0 {
		t.Errorf("%d user.snapshot in the log", n)
	}
}

// A crash while the snapshot is delivered resumes it (the events not yet
// acknowledged, at least once); a crash while it was being stored restarts
// it with a new snapshot.
func TestBackfillSurvivesRestart(t *testing.T) {
	secret := mustSecret(t)
	rc := newOrderedReceiver(t, secret)
	var mu sync.Mutex
	down := true
	rc.reject = func(dl delivery, attempt int) int {
		mu.Lock()
		defer mu.Unlock()
		if down && dl.Type == TypeUserSnapshot && strings.Contains(string(dl.Body), `"u1`) { // u1, u10…u19
			return http.StatusServiceUnavailable
		}
		return 0
	}
	db := mustOpenDB(t)
	dir := newDirectory(t, db)
	for i := range 30 {
		dir.putUser(nil, fmt.Sprint("u", i), 1)
	}
	dir.putGroup(nil, "g1", "u1", "u2")
	cfg := testConfig(rc.srv.URL, secret)
	cfg.Backoff = []time.Duration{0, time.Hour}
	cfg.MaxAge = 72 * time.Hour
	d := newTestDispatcher(t, db, cfg)
	d.SetSnapshot(dir.snapshot(1000))
	stop := runDispatcher(t, d)
	bs, err := d.Backfill("app")
	if err != nil {
		t.Fatal(err)
	}
	rc.waitFor(t, 5*time.Second, "the user phase to stall", func() bool { return len(rc.got) >= 31 })
	waitStatus(t, d, 5*time.Second, "the user phase's outcomes to be committed", func(st TargetStatus) bool {
		return st.Backfill != nil && st.Backfill.Remaining == 11+1+1+1
	})
	stop()
	sts, _ := d.Status()
	if b := sts[0].Backfill; b == nil || b.State != BackfillRunning || b.Remaining != 11+1+1+1 {
		t.Fatalf("after the stop: %+v (want running with 11 users, the group, its members and the completion left)", b)
	}

	mu.Lock()
	down = false
	mu.Unlock()
	d = newTestDispatcher(t, db, cfg)
	d.SetSnapshot(dir.snapshot(1000))
	stop2 := runDispatcher(t, d)
	if n, err := d.RetryNow("app", nil); err != nil || n != 11 {
		t.Fatalf("RetryNow = %d, %v; want the 11 backed-off snapshot events", n, err)
	}
	done := waitBackfill(t, d, "app", 5*time.Second)
	if done.Sequence != bs.Sequence {
		t.Errorf("resumed backfill has sequence %d, want %d (the same snapshot)", done.Sequence, bs.Sequence)
	}
	got := rc.ackedTypes()
	if got[TypeSnapshotStarted] != 1 || got[TypeUserSnapshot] != 30 || got[TypeGroupSnapshot] != 1 || got[TypeMembersSnapshot] != 1 {
		t.Errorf("acknowledged %v", got)
	}
	rc.checkViolations(t)

	stop2()

	// Interrupted while storing: a record not marked spooled, part of a spool.
	err = db.Update(func(tx *bolt.Tx) error {
		b := targetBucket(tx, "app")
		n0 := getU64(b, keySpoolN)
		rec := backfillRecord{State: BackfillQueued, Sequence: 1, Total: 50, First: spoolBit | (n0 + 1), Last: spoolBit | (n0 + 50), StartedAt: time.Now()}
		for i := range 20 {
			v, _ := encodeSpool(Event{ID: "evt_partial" + strconv.Itoa(i), Type: TypeUserSnapshot, Seq: 1, Data: []byte(`{}`)})
			if err := b.Bucket(bucketSpool).Put(be64(rec.First+uint64(i)), v); err != nil {
				return err
			}
		}
		if err := b.Put(keySpoolN, be64(n0+50)); err != nil {
			return err
		}
		return putJSON(b, keyBackfill, rec)
	})
	if err != nil {
		t.Fatal(err)
	}
	d2 := newTestDispatcher(t, db, cfg)
	d2.SetSnapshot(dir.snapshot(1000))
	runDispatcher(t, d2)
	redo := waitBackfill(t, d2, "app", 5*time.Second)
	if redo.Sequence == 1 || redo.Total != 34 {
		t.Errorf("restarted backfill = %+v, want a new snapshot of 34 events", redo)
	}
	rc.receiver.mu.Lock()
	for _, a := range rc.got {
		if strings.HasPrefix(a.ID, "evt_partial") {
			t.Errorf("an event of the interrupted spool was delivered: %s", a.ID)
		}
	}
	rc.receiver.mu.Unlock()
	if got := rc.ackedTypes()[TypeSnapshotStarted]; got != 2 {
		t.Errorf("%d snapshots acknowledged, want 2 (the first and the restarted one)", got)
	}
	_ = db.View(func(tx *bolt.Tx) error {
		if n := targetBucket(tx, "app").Bucket(bucketSpool).Stats().KeyN; n != 0 {
			t.Errorf("%d spool entries left", n)
		}
		return nil
	})
}

// Backfilling many users must not stall writes to the same database: the
// snapshot's read transaction lasts as long as the spool file takes to
// write, the spool goes in in short chunks, delivery reads in small views.
// It reports the backfill's time and the latency of concurrent writes
// (record + event, fsynced) before and during it.
//
//	SCIMGATE_BACKFILL_USERS=100000 go test -run TestBackfillScale -v ./outbox/
func TestBackfillScale(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("SCIMGATE_BACKFILL_USERS"))
	if n == 0 {
		if testing.Short() {
			t.Skip("short")
		}
		n = 2000
	}
	srv, got := countingReceiver(t)
	path := t.TempDir() + "/scimgate.db"
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, NoFreelistSync: true,
		FreelistType: bolt.FreelistMapType, InitialMmapSize: 256 << 20}) // as cmd opens it
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(InitBuckets); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeDB(t, db) })
	dir := newDirectory(t, db)
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("test_writes")); return err }); err != nil {
		t.Fatal(err)
	}
	pad := strings.Repeat("x", 400)
	for done := 0; done < n; {
		err := db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketTestUsers)
			for i := 0; i < 5000 && done < n; i++ {
				id := fmt.Sprintf("u%07d", done)
				rec := fmt.Sprintf(`{"id":%q,"version":1,"login":"%s@example.com","department":"Engineering","title":"Engineer","pad":%q}`, id, id, pad)
				if err := b.Put([]byte(id), []byte(rec)); err != nil {
					return err
				}
				done++
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	cfg := testConfig(srv.URL, mustSecret(t))
	cfg.Concurrency = 32
	d := newTestDispatcher(t, db, cfg)
	d.SetSnapshot(dir.snapshot(1000))
	// The control: as many ordinary events of the same size, delivered first.
	for done := 0; done < n; {
		err := db.Update(func(tx *bolt.Tx) error {
			for i := 0; i < 5000 && done < n; i++ {
				id := fmt.Sprintf("u%07d", done)
				rec := fmt.Sprintf(`{"id":%q,"version":2,"login":"%s@example.com","department":"Engineering","title":"Engineer","pad":%q}`, id, id, pad)
				if _, err := Enqueue(tx, Event{Type: "user.updated", Resources: []string{"User/" + id}, Data: json.RawMessage(`{"user":` + rec + `}`)}, time.Now()); err != nil {
					return err
				}
				done++
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	// A writer commits one record and its event every 2 ms, like SCIM writes.
	type sample struct {
		at  time.Time
		lat time.Duration
	}
	var mu sync.Mutex
	var samples []sample
	stopW := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stopW:
				return
			case <-time.After(2 * time.Millisecond):
			}
			start := time.Now()
			err := db.Update(func(tx *bolt.Tx) error {
				id := fmt.Sprintf("w%07d", i)
				if err := tx.Bucket([]byte("test_writes")).Put([]byte(id), []byte(`{"id":"`+id+`","pad":"`+pad+pad+`"}`)); err != nil {
					return err
				}
				_, err := Enqueue(tx, userEvent("user.updated", id), time.Now())
				tx.OnCommit(d.Notify)
				return err
			})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			samples = append(samples, sample{start, time.Since(start)})
			mu.Unlock()
		}
	})
	time.Sleep(time.Second)
	tc := time.Now()
	runDispatcher(t, d)
	waitStatus(t, d, 5*time.Minute, "the ordinary backlog delivered", func(st TargetStatus) bool { return st.Backlog < 10 })
	t0 := time.Now()
	bs, err := d.Backfill("app")
	if err != nil {
		t.Fatal(err)
	}
	t1 := time.Now()
	done := waitBackfill(t, d, "app", 5*time.Minute)
	t2 := time.Now()
	close(stopW)
	wg.Wait()

	pct := func(from, to time.Time) string {
		mu.Lock()
		defer mu.Unlock()
		var l []time.Duration
		for _, s := range samples {
			if !s.at.Before(from) && s.at.Before(to) {
				l = append(l, s.lat)
			}
		}
		if len(l) == 0 {
			return "no samples"
		}
		slices.Sort(l)
		p := func(q float64) time.Duration { return l[int(q*float64(len(l)-1))].Round(10 * time.Microsecond) }
		return fmt.Sprintf("%d writes, p50 %v, p99 %v, max %v", len(l), p(.5), p(.99), l[len(l)-1].Round(10*time.Microsecond))
	}
	t.Logf("ordinary delivery of %d events of the same size: %v (%.0f events/s)", n, t0.Sub(tc).Round(time.Millisecond), float64(n)/t0.Sub(tc).Seconds())
	t.Logf("backfill of %d users: snapshot + spool %v (%d events), delivered %v later (%.0f events/s), %d requests in all",
		n, t1.Sub(t0).Round(time.Millisecond), bs.Total, t2.Sub(t1).Round(time.Millisecond), float64(done.Total)/t2.Sub(t1).Seconds(), got.Load())
	t.Logf("concurrent write latency, idle:                   %s", pct(tc.Add(-time.Second), tc))
	t.Logf("concurrent write latency, ordinary delivery:      %s", pct(tc, t0))
	t.Logf("concurrent write latency, backfill storing:       %s", pct(t0, t1))
	t.Logf("concurrent write latency, backfill delivering:    %s", pct(t1, t2))
	if done.Total != n+2 {
		t.Errorf("backfill total %d, want %d", done.Total, n+2)
	}
}

// Snapshot events follow the target's event patterns; the framing events
// are always sent.
func TestBackfillFiltered(t *testing.T) {
	secret := mustSecret(t)
	rc := newOrderedReceiver(t, secret)
	db := mustOpenDB(t)
	dir := newDirectory(t, db)
	dir.putUser(nil, "u1", 1)
	dir.putGroup(nil, "g1", "u1")
	cfg := testConfig(rc.srv.URL, secret)
	cfg.Targets[0].Events = []string{"user.*"}
	d := newTestDispatcher(t, db, cfg)
	d.SetSnapshot(dir.snapshot(1000))
	runDispatcher(t, d)
	bs, err := d.Backfill("app")
	if err != nil || bs.Total != 3 {
		t.Fatalf("Backfill = %+v, %v; want 3 events (started, one user, completed)", bs, err)
	}
	waitBackfill(t, d, "app", 5*time.Second)
	got := rc.ackedTypes()
	if got[TypeSnapshotStarted] != 1 || got[TypeUserSnapshot] != 1 || got[TypeSnapshotCompleted] != 1 || got[TypeGroupSnapshot]+got[TypeMembersSnapshot] != 0 {
		t.Errorf("acknowledged %v", got)
	}
}
