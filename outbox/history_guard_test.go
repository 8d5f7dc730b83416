package outbox

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// A since in the future (a mistyped year) is an error and
// replays nothing; before, 3026 overflowed int64 nanoseconds and replayed the
// whole retained history. A since before the int64 range is the log's start.
func TestReplayHistorySinceFuture(t *testing.T) {
	secret := mustSecret(t)
	rc := newReceiver(t, secret, nil)
	db := mustOpenDB(t)
	d := newTestDispatcher(t, db, testConfig(rc.srv.URL, secret))
	runDispatcher(t, d)
	var evs []Event
	for i := range 6 {
		evs = append(evs, userEvent("user.updated", fmt.Sprint("u", i)))
	}
	stored := enqueue(t, db, d, evs...)
	rc.waitAcked(t, 5*time.Second, stored)
	waitStatus(t, d, 5*time.Second, "caught up", func(st TargetStatus) bool { return st.Backlog == 0 })

	for _, since := range []time.Time{
		time.Date(3026, 1, 1, 0, 0, 0, 0, time.UTC), // the typo of the report
		time.Now().Add(time.Hour),
		time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC), // past the int64 nanosecond range
	} {
		res, err := d.ReplayHistory("app", 0, since)
		if !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "in the future") {
			t.Errorf("ReplayHistory(since %s) = %+v, %v; want ErrInvalidArgument saying it is in the future", since, res, err)
		}
		if res.Replayed != 0 {
			t.Errorf("ReplayHistory(since %s) queued %d events", since, res.Replayed)
		}
		if st := waitStatus(t, d, time.Second, "status", func(TargetStatus) bool { return true }); st.History != nil {
			t.Fatalf("since %s: a history replay was queued: %+v", since, st.History)
		}
	}

	// Long before the log (and before the int64 range): everything retained.
	res, err := d.ReplayHistory("app", 0, time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC))
	if err != nil || res.Replayed != len(stored) || res.FromSequence != stored[0].Seq {
		t.Errorf("ReplayHistory(since the year 1000) = %+v, %v; want all %d from %d", res, err, len(stored), stored[0].Seq)
	}
	waitStatus(t, d, 5*time.Second, "history done", func(st TargetStatus) bool { return st.History == nil && st.Backlog == 0 })
	rc.mu.Lock()
	for _, ev := range stored {
		if n := rc.acked[ev.ID]; n != 2 {
			t.Errorf("event %d acknowledged %d times, want 2 (live, then the replay)", ev.Seq, n)
		}
	}
	rc.mu.Unlock()
}

// firstSince itself is safe at both ends of time.
func TestFirstSinceBounds(t *testing.T) {
	db := mustOpenDB(t)
	stored := enqueue(t, db, nil, userEvent("user.created", "a"), userEvent("user.created", "b"))
	err := db.View(func(tx *bolt.Tx) error {
		events := tx.Bucket(bucketEvents)
		for _, c := range []struct {
			since time.Time
			want  uint64
		}{
			{time.Date(3026, 1, 1, 0, 0, 0, 0, time.UTC), 0},
			{time.Unix(0, math.MaxInt64).Add(time.Nanosecond), 0},
			{time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC), stored[0].Seq},
			{time.Unix(0, math.MinInt64).Add(-time.Nanosecond), stored[0].Seq},
			{stored[1].OccurredAt, stored[1].Seq},
		} {
			if got := firstSince(events, c.since); got != c.want {
				t.Errorf("firstSince(%s) = %d, want %d", c.since, got, c.want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A history replay skips the events whose dead letter an
// operator discarded, unless asked to include them; an event sent again that
// way is no longer treated as discarded.
func TestReplayHistorySkipsDiscarded(t *testing.T) {
	secret := mustSecret(t)
	var refuse atomic.Value // the event ID the receiver refuses, permanently
	refuse.Store("")
	rc := newReceiver(t, secret, func(w http.ResponseWriter, r *http.Request, dl delivery, attempt int) int {
		if dl.ID == refuse.Load().(string) {
			return http.StatusUnprocessableEntity
		}
		return 0
	})
	db := mustOpenDB(t)
	d := newTestDispatcher(t, db, testConfig(rc.srv.URL, secret))
	stop := runDispatcher(t, d)

	first := enqueue(t, db, d, userEvent("user.created", "a"))
	rc.waitAcked(t, 5*time.Second, first)
	// The next event (unknown ID until enqueued) is refused: enqueue it
	// without waking the dispatcher, then let it go.
	bad := enqueue(t, db, nil, userEvent("user.created", "x"))[0]
	refuse.Store(bad.ID)
	d.Notify()
	waitStatus(t, d, 5*time.Second, "the dead letter", func(st TargetStatus) bool { return st.DeadLetters == 1 && st.Backlog == 0 })
	last := enqueue(t, db, d, userEvent("user.created", "b"))
	rc.waitAcked(t, 5*time.Second, last)
	// The receiver's answer precedes the commit that records the delivery;
	// history replays what the target has finished.
	waitStatus(t, d, 5*time.Second, "b recorded as delivered", func(st TargetStatus) bool { return st.Delivered == 2 && st.Backlog == 0 })
	if n, err := d.Discard("app", []string{bad.ID}); n != 1 || err != nil {
		t.Fatalf("Discard = %d, %v", n, err)
	}
	refuse.Store("") // the app would take it now: only the discard keeps it out

	res, err := d.ReplayHistory("app", 0, time.Time{})
	if err != nil || res.Replayed != 2 || res.SkippedDiscarded != 1 {
		t.Fatalf("ReplayHistory = %+v, %v; want 2 replayed, 1 discarded skipped", res, err)
	}
	waitStatus(t, d, 5*time.Second, "history done", func(st TargetStatus) bool { return st.History == nil && st.Backlog == 0 })
	if n := rc.attemptsOf(bad.ID); n != 1 {
		t.Errorf("the discarded event was attempted %d times, want 1 (before its discard only)", n)
	}

	// The mark is durable: a restart does not forget it.
	stop()
	d = newTestDispatcher(t, db, testConfig(rc.srv.URL, secret))
	runDispatcher(t, d)
	res, err = d.ReplayHistoryWith("app", HistoryRequest{After: first[0].Seq})
	if err != nil || res.Replayed != 1 || res.SkippedDiscarded != 1 || res.FromSequence != last[0].Seq {
		t.Fatalf("ReplayHistoryWith(after %d) = %+v, %v; want %d alone, 1 skipped", first[0].Seq, res, err, last[0].Seq)
	}
	waitStatus(t, d, 5*time.Second, "history done", func(st TargetStatus) bool { return st.History == nil && st.Backlog == 0 })

	// Asked for, it is sent, and from then on it is history like the rest.
	res, err = d.ReplayHistoryWith("app", HistoryRequest{IncludeDiscarded: true})
	if err != nil || res.Replayed != 3 || res.SkippedDiscarded != 0 {
		t.Fatalf("ReplayHistoryWith(include discarded) = %+v, %v; want 3", res, err)
	}
	rc.waitAcked(t, 5*time.Second, []Event{bad})
	waitStatus(t, d, 5*time.Second, "history done", func(st TargetStatus) bool { return st.History == nil && st.Backlog == 0 })
	res, err = d.ReplayHistory("app", 0, time.Time{})
	if err != nil || res.Replayed != 3 || res.SkippedDiscarded != 0 {
		t.Errorf("ReplayHistory after the discarded event was sent again = %+v, %v; want 3, none skipped", res, err)
	}
	waitStatus(t, d, 5*time.Second, "history done", func(st TargetStatus) bool { return st.History == nil && st.Backlog == 0 })
}
