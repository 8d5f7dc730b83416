package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// enqueueFeed enqueues events and notifies the dispatcher (if any) and the
// feed on commit, as the store does.
func enqueueFeed(t testing.TB, db *bolt.DB, d *Dispatcher, f *Feed, evs ...Event) []Event {
	t.Helper()
	var out []Event
	err := db.Update(func(tx *bolt.Tx) error {
		out = nil
		for _, ev := range evs {
			stored, err := Enqueue(tx, ev, time.Now())
			if err != nil {
				return err
			}
			out = append(out, stored)
		}
		if d != nil {
			tx.OnCommit(d.Notify)
		}
		tx.OnCommit(f.Notify)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func readAll(t *testing.T, f *Feed, q FeedQuery) ([]json.RawMessage, uint64) {
	t.Helper()
	var all []json.RawMessage
	for range 1000 {
		page, err := f.Read(t.Context(), q)
		if err != nil {
			t.Fatalf("Read(%+v): %v", q, err)
		}
		all = append(all, page.Events...)
		if page.Next == q.After {
			return all, q.After
		}
		q.After = page.Next
	}
	t.Fatal("feed does not end")
	return nil, 0
}

// The feed returns, in sequence order, byte for byte the envelopes the
// webhook receiver got.
func TestFeedMatchesWebhook(t *testing.T) {
	secret := mustSecret(t)
	rc := newReceiver(t, secret, nil)
	db := mustOpenDB(t)
	d := newTestDispatcher(t, db, testConfig(rc.srv.URL, secret))
	f := NewFeed(db, FeedConfig{})
	runDispatcher(t, d)
	var evs []Event
	for i := range 25 {
		evs = append(evs, userEvent("user.updated", fmt.Sprint("u", i%4)), memberEvent("group.member_added", "g1", fmt.Sprint("u", i%4)))
	}
	stored := enqueueFeed(t, db, d, f, evs...)
	rc.waitAcked(t, 5*time.Second, stored)

	got, next := readAll(t, f, FeedQuery{Limit: 7})
	if len(got) != len(stored) || next != stored[len(stored)-1].Seq {
		t.Fatalf("feed returned %d events ending at %d, want %d ending at %d", len(got), next, len(stored), stored[len(stored)-1].Seq)
	}
	rc.mu.Lock()
	bodies := map[string]string{}
	for _, g := range rc.got {
		bodies[g.ID] = string(g.Body)
	}
	rc.mu.Unlock()
	for i, raw := range got {
		if string(raw) != bodies[stored[i].ID] {
			t.Errorf("feed event %d = %s, webhook got %s", i, raw, bodies[stored[i].ID])
		}
	}

	users, _ := readAll(t, f, FeedQuery{Types: []string{"user.*"}, After: stored[9].Seq})
	for _, raw := range users {
		var e struct {
			Type string `json:"type"`
			Seq  uint64 `json:"sequence"`
		}
		_ = json.Unmarshal(raw, &e)
		if e.Type != "user.updated" || e.Seq <= stored[9].Seq {
			t.Errorf("filtered feed returned %s seq %d", e.Type, e.Seq)
		}
	}
	if len(users) != 20 {
		t.Errorf("%d user events after seq %d, want 20", len(users), stored[9].Seq)
	}
	if _, err := f.Read(t.Context(), FeedQuery{Types: []string{"user*"}}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("Read(bad pattern) = %v, want ErrInvalidArgument", err)
	}
}

// A filtered read examines at most MaxScan entries and returns the cursor
// advanced past them, so a rare type does not make one request scan the log.
func TestFeedBoundedScan(t *testing.T) {
	db := mustOpenDB(t)
	f := NewFeed(db, FeedConfig{MaxScan: 10})
	var evs []Event
	for range 35 {
		evs = append(evs, Event{Type: "group.updated", Resources: []string{"Group/g"}, Data: json.RawMessage(`{}`)})
	}
	evs = append(evs, userEvent("user.created", "u1"))
	stored := enqueueFeed(t, db, nil, f, evs...)
	q := FeedQuery{Types: []string{"user.created"}}
	var pages int
	for {
		page, err := f.Read(t.Context(), q)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if page.Next-q.After > 10 {
			t.Fatalf("one read advanced from %d to %d: more than MaxScan entries", q.After, page.Next)
		}
		if len(page.Events) > 0 {
			if !strings.Contains(string(page.Events[0]), stored[35].ID) {
				t.Errorf("got %s", page.Events[0])
			}
			break
		}
		if page.Next == q.After {
			t.Fatal("cursor stuck")
		}
		q.After = page.Next
	}
	if pages != 4 {
		t.Errorf("%d reads, want 4 (10 entries each)", pages)
	}
}

// A long poll returns as soon as an event commits (woken, not polling); with
// nothing matching it returns at the end of the wait with the cursor moved
// past what it examined; ctx ends it.
func TestFeedLongPoll(t *testing.T) {
	db := mustOpenDB(t)
	f := NewFeed(db, FeedConfig{})
	first := enqueueFeed(t, db, nil, f, userEvent("user.created", "u1"))[0]

	type out struct {
		page FeedPage
		err  error
		at   time.Time
	}
	res := make(chan out, 1)
	go func() {
		p, err := f.Read(context.Background(), FeedQuery{After: first.Seq, Wait: 10 * time.Second})
		res <- out{p, err, time.Now()}
	}()
	// Deliberately real time: a long poll that returned early would do so
	// within this window; it also lets the poll start waiting (nothing
	// shows that it is).
	time.Sleep(50 * time.Millisecond)
	select {
	case r := <-res:
		t.Fatalf("long poll returned before any commit: %+v", r)
	default:
	}
	ev := enqueueFeed(t, db, nil, f, userEvent("user.updated", "u1"))[0]
	committed := time.Now()
	select {
	case r := <-res:
		if r.err != nil || len(r.page.Events) != 1 || r.page.Next != ev.Seq {
			t.Fatalf("long poll = %+v, %v", r.page, r.err)
		}
		if lat := r.at.Sub(committed); lat > 100*time.Millisecond {
			t.Errorf("woken %v after the commit, want well under 100ms", lat)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("long poll not woken by the commit")
	}

	// Nothing that matches: the wait ends, the cursor moves past the rest.
	go func() {
		p, err := f.Read(context.Background(), FeedQuery{After: ev.Seq, Types: []string{"group.*"}, Wait: 300 * time.Millisecond})
		res <- out{p, err, time.Now()}
	}()
	time.Sleep(50 * time.Millisecond) // real time: the poll is waiting when the commit comes
	other := enqueueFeed(t, db, nil, f, userEvent("user.updated", "u2"))[0]
	start := time.Now()
	r := <-res
	if r.err != nil || len(r.page.Events) != 0 || r.page.Next != other.Seq || time.Since(start) < 150*time.Millisecond {
		t.Errorf("filtered long poll = %+v, %v after %v; want empty at the end of the wait, cursor %d", r.page, r.err, time.Since(start), other.Seq)
	}

	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		p, err := f.Read(ctx, FeedQuery{After: other.Seq, Wait: time.Minute})
		res <- out{p, err, time.Now()}
	}()
	time.Sleep(20 * time.Millisecond) // real time: the poll is waiting when it is cancelled
	cancel()
	select {
	case r := <-res:
		if !errors.Is(r.err, context.Canceled) {
			t.Errorf("cancelled long poll = %v", r.err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("cancel did not end the long poll")
	}
}

// Pruning moves a durable watermark; a cursor below it is gone, with a
// message that tells the app what to do; 0 starts at the oldest retained.
// feed_retention keeps events the targets no longer need.
func TestFeedRetention(t *testing.T) {
	secret := mustSecret(t)
	rc := newReceiver(t, secret, nil)
	db := mustOpenDB(t)
	cfg := testConfig(rc.srv.URL, secret)
	cfg.Retention = time.Millisecond
	cfg.FeedRetention = time.Hour
	d := newTestDispatcher(t, db, cfg)
	f := NewFeed(db, FeedConfig{})
	runDispatcher(t, d)
	old := enqueueFeed(t, db, d, f, userEvent("user.created", "u1"), userEvent("user.created", "u2"))
	rc.waitAcked(t, 5*time.Second, old)
	// Deliberately real time: prune passes run every pruneEvery and nothing
	// shows that one ran; in 20 of them a wrong prune would have happened.
	time.Sleep(20 * d.pruneEvery)
	if got, _ := readAll(t, f, FeedQuery{}); len(got) != 2 {
		t.Fatalf("feed holds %d events, want 2: feed_retention keeps what delivery no longer needs", len(got))
	}

	cfg2 := cloneConfig(cfg)
	cfg2.FeedRetention = 0
	if _, err := d.Reload(cfg2); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var pruned uint64
		_ = db.View(func(tx *bolt.Tx) error { pruned = getU64(tx.Bucket(bucketMeta), keyPruned); return nil })
		if pruned == old[1].Seq {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pruned-through watermark %d, want %d", pruned, old[1].Seq)
		}
		time.Sleep(5 * time.Millisecond)
	}
	_, err := f.Read(t.Context(), FeedQuery{After: old[0].Seq})
	if !errors.Is(err, ErrCursorGone) || !strings.Contains(err.Error(), "/v1/users") {
		t.Errorf("Read(pruned cursor) = %v, want ErrCursorGone telling the app to reload", err)
	}
	fresh := enqueueFeed(t, db, d, f, userEvent("user.updated", "u1"))[0]
	page, err := f.Read(t.Context(), FeedQuery{})
	if err != nil || len(page.Events) != 1 || !strings.Contains(string(page.Events[0]), fresh.ID) {
		t.Errorf("Read(0) = %+v, %v; want the oldest retained event", page, err)
	}
	if page, err := f.Read(t.Context(), FeedQuery{After: old[1].Seq}); err != nil || len(page.Events) != 1 {
		t.Errorf("Read(at the watermark) = %+v, %v; want the events after it", page, err)
	}
}

// A cursor inside a restore gap, or ahead of every issued sequence, is gone;
// across the gap the feed continues.
func TestFeedRestoreGap(t *testing.T) {
	db := mustOpenDB(t)
	f := NewFeed(db, FeedConfig{})
	before := enqueueFeed(t, db, nil, f, userEvent("user.created", "u1"), userEvent("user.created", "u2"))
	if err := db.Update(func(tx *bolt.Tx) error { _, err := RaiseSequence(tx, 1<<40); return err }); err != nil {
		t.Fatal(err)
	}
	after := enqueueFeed(t, db, nil, f, userEvent("user.updated", "u1"))[0]
	for _, cursor := range []uint64{before[1].Seq + 1, 1 << 39, 1 << 40} {
		if _, err := f.Read(t.Context(), FeedQuery{After: cursor}); !errors.Is(err, ErrCursorGone) || !strings.Contains(err.Error(), "backup") {
			t.Errorf("Read(%d, in the restore gap) = %v", cursor, err)
		}
	}
	if _, err := f.Read(t.Context(), FeedQuery{After: 1 << 41}); !errors.Is(err, ErrCursorGone) || !strings.Contains(err.Error(), "ahead") {
		t.Errorf("Read(ahead) = %v", err)
	}
	page, err := f.Read(t.Context(), FeedQuery{After: before[1].Seq})
	if err != nil || len(page.Events) != 1 || page.Next != after.Seq {
		t.Errorf("Read(across the gap) = %+v, %v", page, err)
	}
}

// 1,000 concurrent long polls: memory per waiter and the time from a commit
// to each waiter's return (one Notify wakes all of them).
func TestFeedManyLongPolls(t *testing.T) {
	n := 1000
	if testing.Short() {
		n = 100
	}
	db := mustOpenDB(t)
	f := NewFeed(db, FeedConfig{})
	tail := enqueueFeed(t, db, nil, f, userEvent("user.created", "u0"))[0].Seq
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	var wg sync.WaitGroup
	returned := make([]time.Time, n)
	errs := make([]error, n)
	got := make([]int, n)
	var started sync.WaitGroup
	started.Add(n)
	for i := range n {
		wg.Go(func() {
			started.Done()
			p, err := f.Read(context.Background(), FeedQuery{After: tail, Wait: 30 * time.Second})
			returned[i], errs[i], got[i] = time.Now(), err, len(p.Events)
		})
	}
	started.Wait()
	time.Sleep(200 * time.Millisecond) // all are waiting
	runtime.ReadMemStats(&m1)
	perWaiter := (float64(m1.HeapInuse+m1.StackInuse) - float64(m0.HeapInuse+m0.StackInuse)) / float64(n)
	enqueueFeed(t, db, nil, f, userEvent("user.updated", "u0"))
	committed := time.Now()
	wg.Wait()
	var lat []time.Duration
	for i := range n {
		if errs[i] != nil || got[i] != 1 {
			t.Fatalf("waiter %d: %d events, %v", i, got[i], errs[i])
		}
		lat = append(lat, returned[i].Sub(committed))
	}
	slices.Sort(lat)
	p := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))].Round(10 * time.Microsecond) }
	t.Logf("%d long polls: ≈%.1f KiB each while waiting; commit → return p50 %v, p99 %v, max %v", n, perWaiter/1024, p(.5), p(.99), lat[len(lat)-1].Round(10*time.Microsecond))
	if p(.5) > 500*time.Millisecond {
		t.Errorf("median wake-up %v", p(.5))
	}
}

// A read for one resource returns only the events whose resources name
// it: not another resource's, even one whose data quotes the name.
func TestFeedOneResource(t *testing.T) {
	db := mustOpenDB(t)
	f := NewFeed(db, FeedConfig{})
	stored := enqueueFeed(t, db, nil, f,
		userEvent("user.created", "a"),
		userEvent("user.created", "b"),
		Event{Type: "user.updated", Resources: []string{"User/b"}, Data: json.RawMessage(`{"note":"User/a"}`)},
		Event{Type: "group.member_added", Resources: []string{"Group/g", "User/a"}, Data: json.RawMessage(`{}`)},
		userEvent("user.updated", "a"))
	got, _ := readAll(t, f, FeedQuery{Resource: "User/a", Limit: 2})
	want := []string{stored[0].ID, stored[3].ID, stored[4].ID}
	if len(got) != len(want) {
		t.Fatalf("%d events for User/a, want %d: %s", len(got), len(want), got)
	}
	for i, id := range want {
		if !strings.Contains(string(got[i]), id) {
			t.Errorf("event %d: %s, want %s", i, got[i], id)
		}
	}
	if got, _ := readAll(t, f, FeedQuery{Resource: "User/a", Types: []string{"user.*"}}); len(got) != 2 {
		t.Errorf("user.* events for User/a: %d, want 2", len(got))
	}
}
