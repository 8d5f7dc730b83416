package outbox

import (
	"errors"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"
)

// Pending lists what a target still owes, in delivery order and a page at
// a time: events not admitted yet (queued: here, the dispatcher never ran),
// only those the target's filter selects, and it changes nothing.
func TestPendingQueuedPages(t *testing.T) {
	db := mustOpenDB(t)
	cfg := testConfig("http://127.0.0.1:9/hooks", mustSecret(t))
	cfg.Targets[0].Events = []string{"user.*"}
	d := newTestDispatcher(t, db, cfg)
	evs := enqueue(t, db, d, userEvent("user.created", "u1"), memberEvent("group.member_added", "g1", "u1"),
		userEvent("user.updated", "u1"), userEvent("user.created", "u2"), userEvent("user.created", "u3"))
	want := []Event{evs[0], evs[2], evs[3], evs[4]} // the group event is not for this target
	var got []PendingEvent
	for after, pages := uint64(0), 0; ; pages++ {
		page, err := d.Pending("app", after, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		if len(page) > 2 || pages > 3 {
			t.Fatalf("page %d has %d events (limit 2)", pages, len(page))
		}
		got = append(got, page...)
		after = page[len(page)-1].Position
	}
	if len(got) != len(want) {
		t.Fatalf("listed %d pending events, want %d: %+v", len(got), len(want), got)
	}
	for i, p := range got {
		if p.Event.ID != want[i].ID || p.Position != want[i].Seq || p.State != PendingQueued || p.Attempts != 0 || p.Target != "app" {
			t.Errorf("pending[%d] = %+v, want event %s at %d, queued", i, p, want[i].ID, want[i].Seq)
		}
		if p.Event.Type != want[i].Type || string(p.Event.Data) != string(want[i].Data) {
			t.Errorf("pending[%d] event = %s %s, want %s %s", i, p.Event.Type, p.Event.Data, want[i].Type, want[i].Data)
		}
	}
	one, err := d.PendingAt("app", evs[2].Seq)
	if err != nil || one.Event.ID != evs[2].ID {
		t.Errorf("PendingAt(%d) = %+v, %v; want event %s", evs[2].Seq, one, err, evs[2].ID)
	}
	if _, err := d.PendingAt("app", evs[1].Seq); !errors.Is(err, ErrNotFound) {
		t.Errorf("PendingAt of the filtered-out event = %v, want ErrNotFound", err)
	}
	if _, err := d.Pending("nope", 0, 10); !errors.Is(err, ErrUnknownTarget) {
		t.Errorf("Pending(unknown target) = %v, want ErrUnknownTarget", err)
	}
	st, err := d.Status()
	if err != nil || st[0].Backlog != 4 {
		t.Errorf("Status after listing = %+v, %v; want backlog 4 (listing changes nothing)", st, err)
	}
}

// An admitted event that failed shows its attempts, its last status and
// when it is tried next; the event behind it on the same resource waits,
// admitted and not attempted; a replayed dead letter shows as staged.
func TestPendingAttemptsAndReplay(t *testing.T) {
	secret := mustSecret(t)
	rc := newReceiver(t, secret, func(w http.ResponseWriter, r *http.Request, dl delivery, attempt int) int {
		return http.StatusServiceUnavailable
	})
	db := mustOpenDB(t)
	cfg := testConfig(rc.srv.URL, secret)
	cfg.Backoff, cfg.MaxAge = []time.Duration{0, time.Hour}, 24*time.Hour
	d := newTestDispatcher(t, db, cfg)
	stop := runDispatcher(t, d)
	evs := enqueue(t, db, d, userEvent("user.created", "u1"), userEvent("user.updated", "u1"))
	var list []PendingEvent
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		if list, err = d.Pending("app", 0, 10); err != nil {
			t.Fatal(err)
		}
		if len(list) == 2 && list[0].Attempts >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the failed attempt is not listed: %+v", list)
		}
		time.Sleep(10 * time.Millisecond)
	}
	first, second := list[0], list[1]
	if first.Event.ID != evs[0].ID || first.State != PendingAdmitted || first.LastStatus != 503 ||
		first.NextAttemptAt.Before(time.Now().Add(30*time.Minute)) || first.LastAttemptAt.IsZero() {
		t.Errorf("failed event = %+v; want admitted, 1 attempt, status 503, next attempt in about an hour", first)
	}
	if second.Event.ID != evs[1].ID || second.Attempts != 0 {
		t.Errorf("event behind it = %+v; want %s, not attempted", second, evs[1].ID)
	}
	stop()

	// A dead letter replayed while Run is stopped is staged for redelivery.
	cfg.MaxAttempts = 1
	rc2 := newReceiver(t, secret, func(w http.ResponseWriter, r *http.Request, dl delivery, attempt int) int {
		return http.StatusBadRequest
	})
	cfg.Targets[0].URL = rc2.srv.URL
	db2 := mustOpenDB(t)
	d2 := newTestDispatcher(t, db2, cfg)
	stop2 := runDispatcher(t, d2)
	ev := enqueue(t, db2, d2, userEvent("user.created", "u9"))[0]
	waitStatus(t, d2, 10*time.Second, "a dead letter", func(st TargetStatus) bool { return st.DeadLetters == 1 })
	stop2()
	if n, err := d2.Replay("app", nil); err != nil || n != 1 {
		t.Fatalf("Replay = %d, %v", n, err)
	}
	list, err := d2.Pending("app", 0, 10)
	if err != nil || len(list) != 1 || list[0].Event.ID != ev.ID || list[0].State != PendingReplay || list[0].LastStatus != 400 {
		t.Fatalf("Pending after a replay = %+v, %v; want %s staged (replay, last status 400)", list, err, ev.ID)
	}
}

// EventStates tells, per log event, whether a target has it delivered,
// dead-lettered, discarded, still pending, or does not take it at all.
func TestEventStates(t *testing.T) {
	secret := mustSecret(t)
	rc := newReceiver(t, secret, func(w http.ResponseWriter, r *http.Request, dl delivery, attempt int) int {
		if strings.Contains(string(dl.Body), `"u2"`) {
			return http.StatusBadRequest
		}
		return http.StatusNoContent
	})
	db := mustOpenDB(t)
	cfg := testConfig(rc.srv.URL, secret)
	cfg.MaxAttempts = 1
	cfg.Targets[0].Events = []string{"user.*"}
	d := newTestDispatcher(t, db, cfg)
	runDispatcher(t, d)
	evs := enqueue(t, db, d, userEvent("user.created", "u1"), memberEvent("group.member_added", "g1", "u1"), userEvent("user.created", "u2"))
	waitStatus(t, d, 10*time.Second, "one delivered, one dead letter", func(st TargetStatus) bool { return st.DeadLetters == 1 && st.Delivered == 1 })
	if err := d.Pause("app", "test"); err != nil {
		t.Fatal(err)
	}
	evs = append(evs, enqueue(t, db, d, userEvent("user.updated", "u1"))...)
	seqs := []uint64{evs[0].Seq, evs[1].Seq, evs[2].Seq, evs[3].Seq}
	got, err := d.EventStates("app", seqs)
	want := map[uint64]string{evs[0].Seq: EventDelivered, evs[1].Seq: EventNotForTarget, evs[2].Seq: EventDead, evs[3].Seq: EventPending}
	if err != nil || !maps.Equal(got, want) {
		t.Fatalf("EventStates = %v, %v; want %v", got, err, want)
	}
	if _, err := d.Discard("app", []string{evs[2].ID}); err != nil {
		t.Fatal(err)
	}
	if got, _ := d.EventStates("app", seqs[2:3]); got[evs[2].Seq] != EventDiscarded {
		t.Errorf("after its discard: %v, want discarded", got)
	}
	if _, err := d.EventStates("nope", seqs); !errors.Is(err, ErrUnknownTarget) {
		t.Errorf("unknown target: %v", err)
	}
}
