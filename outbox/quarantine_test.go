package outbox

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// lockedBuffer is a log sink that tests read while the dispatcher writes.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// rot damages, in the bbolt file at path, every copy of marker (a string
// inside one event's data): its closing quote becomes a control character,
// as one flipped bit on disk would do, so the value is no longer JSON. bbolt
// keeps no checksum of data pages, so it reads the damaged value as it is.
func rot(t *testing.T, path, marker string) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	old := []byte(marker + `"`)
	if bytes.Count(raw, old) == 0 {
		t.Fatalf("%s not found in %s", marker, path)
	}
	raw = bytes.ReplaceAll(raw, old, []byte(marker+"\x01"))
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
}

// One undecodable event (bit rot in one stored value) no
// longer stops the dispatcher at start. Each damaged event is quarantined —
// dead-lettered without being sent, with the reason — for the targets it
// concerns; the others are delivered; the log and the target's status say
// so; replay refuses it and discard removes it. Covered: a pending event
// (loaded at start), an event not yet admitted (read when admitted), and a
// damaged value appended while Run runs (read as it arrives, type unknown).
func TestUndecodableEventQuarantined(t *testing.T) {
	secret := mustSecret(t)
	rc := newReceiver(t, secret, nil)
	path := filepath.Join(t.TempDir(), "scimgate.db")
	db := openDB(t, path)
	cfg := testConfig(rc.srv.URL, secret)
	d := newTestDispatcher(t, db, cfg)
	stop := runDispatcher(t, d)
	if err := d.Pause("app", "the app is down"); err != nil {
		t.Fatal(err)
	}
	withMarker := func(typ, user, marker string) Event {
		ev := userEvent(typ, user)
		ev.Data = json.RawMessage(`{"user":{"id":"` + user + `"},"note":"` + marker + `"}`)
		return ev
	}
	pending := enqueue(t, db, d,
		userEvent("user.created", "u1"),
		withMarker("user.updated", "u2", "rot-pending"),
		userEvent("user.updated", "u1"))
	waitStatus(t, d, 5*time.Second, "3 pending", func(st TargetStatus) bool { return st.Backlog == 3 })
	stop() // their pending entries are committed
	later := enqueue(t, db, nil,
		withMarker("user.created", "u3", "rot-unadmitted"),
		userEvent("user.deleted", "u2")) // after the damaged u2 event
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	rot(t, path, "rot-pending")
	rot(t, path, "rot-unadmitted")

	db = openDB(t, path)
	t.Cleanup(func() { closeDB(t, db) })
	var logs lockedBuffer
	d, err := NewDispatcher(db, cfg, slog.New(slog.NewTextHandler(&logs, nil)), NewMetrics())
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Resume("app"); err != nil {
		t.Fatal(err)
	}
	runDispatcher(t, d) // fails the test if Run returns
	good := []Event{pending[0], pending[2], later[1]}
	rc.waitAcked(t, 5*time.Second, good)

	// A damaged value appended while Run runs, unreadable through and
	// through (no id, no type): every target subscribed to "*" gets it.
	var seq uint64
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEvents)
		var err error
		if seq, err = b.NextSequence(); err != nil {
			return err
		}
		tx.OnCommit(d.Notify)
		return b.Put(be64(seq), []byte("\x00\x17garbage"))
	})
	if err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, d, 5*time.Second, "three quarantined", func(st TargetStatus) bool {
		return st.Quarantined == 3 && st.DeadLetters == 3 && st.Backlog == 0
	})
	if !strings.Contains(st.LastError, "quarantined") || !strings.Contains(st.LastError, "restore it from a backup") {
		t.Errorf("status last_error = %q, want it to say quarantined and what to do", st.LastError)
	}
	dls, err := d.DeadLetters("app", 0, 10)
	if err != nil || len(dls) != 3 {
		t.Fatalf("DeadLetters = %+v, %v", dls, err)
	}
	wantIDs := []string{pending[1].ID, later[0].ID, "evt_undecodable_" + strconv.FormatUint(seq, 10)}
	for i, dl := range dls {
		if !dl.Quarantined || dl.Event.ID != wantIDs[i] || !strings.Contains(dl.LastError, "does not decode") {
			t.Errorf("dead letter %d = %+v; want quarantined %s with the reason", i, dl, wantIDs[i])
		}
	}
	if dls[0].Event.Type != "user.updated" || dls[1].Event.Type != "user.created" {
		t.Errorf("salvaged types %q, %q; want user.updated, user.created", dls[0].Event.Type, dls[1].Event.Type)
	}
	for _, id := range wantIDs {
		if n := rc.attemptsOf(id); n != 0 {
			t.Errorf("quarantined event %s sent %d times", id, n)
		}
	}
	for _, ev := range good {
		if n := rc.attemptsOf(ev.ID); n != 1 {
			t.Errorf("event %d sent %d times, want 1", ev.Seq, n)
		}
	}
	if out := logs.String(); strings.Count(out, "level=ERROR msg=\"Undecodable event quarantined") != 3 {
		t.Errorf("log has not one error line per quarantined event:\n%s", out)
	}

	// Nothing to send: replay refuses a named one and leaves them all.
	if _, err := d.Replay("app", []string{pending[1].ID}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("Replay(quarantined) = %v, want ErrInvalidArgument", err)
	}
	if n, err := d.Replay("app", nil); n != 0 || err != nil {
		t.Errorf("Replay(all) = %d, %v; want 0 (quarantined ones stay)", n, err)
	}
	if n, err := d.Discard("app", nil); n != 3 || err != nil {
		t.Errorf("Discard(all) = %d, %v; want 3", n, err)
	}
	waitStatus(t, d, 5*time.Second, "discarded", func(st TargetStatus) bool { return st.DeadLetters == 0 })
}

// The other stored values: a damaged dead letter, a
// damaged replay entry and a damaged pause record no longer stop Run at
// start (nor break the dead-letter list). The dead letter is listed as
// quarantined and can be discarded, not replayed; the replay entry's event
// is taken from the log, which still has it; the target stays paused, with
// a reason that says why, until resumed.
func TestDamagedRecordsDoNotStopRun(t *testing.T) {
	secret := mustSecret(t)
	refuse := func(w http.ResponseWriter, r *http.Request, dl delivery, attempt int) int {
		w.WriteHeader(http.StatusUnprocessableEntity)
		_, _ = w.Write([]byte("rot-body-" + dl.ID)) // unique to the dead letter's copy
		return -1
	}
	rc := newReceiver(t, secret, refuse)
	path := filepath.Join(t.TempDir(), "scimgate.db")
	db := openDB(t, path)
	cfg := testConfig(rc.srv.URL, secret)
	d := newTestDispatcher(t, db, cfg)
	stop := runDispatcher(t, d)
	evs := enqueue(t, db, d, userEvent("user.created", "x"), userEvent("user.created", "y"))
	waitStatus(t, d, 5*time.Second, "two dead letters", func(st TargetStatus) bool { return st.DeadLetters == 2 })
	stop()
	x, y := evs[0], evs[1]
	if n, err := d.Replay("app", []string{y.ID}); n != 1 || err != nil {
		t.Fatalf("Replay(y) = %d, %v", n, err)
	}
	if err := d.Pause("app", "rot-pause-reason"); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	rot(t, path, "rot-body-"+x.ID)   // the dead letter
	rot(t, path, "rot-body-"+y.ID)   // the replay entry
	rot(t, path, "rot-pause-reason") // the pause record

	db = openDB(t, path)
	t.Cleanup(func() { closeDB(t, db) })
	rc.mu.Lock()
	rc.script = nil
	rc.mu.Unlock()
	d = newTestDispatcher(t, db, cfg)
	runDispatcher(t, d) // fails the test if Run returns
	st := waitStatus(t, d, 5*time.Second, "paused", func(st TargetStatus) bool { return st.Paused })
	if !strings.Contains(st.PausedReason, "damaged") {
		t.Errorf("paused reason = %q, want it to say the record is damaged", st.PausedReason)
	}
	dls, err := d.DeadLetters("app", 0, 10)
	if err != nil || len(dls) != 1 || dls[0].Event.ID != x.ID || !dls[0].Quarantined || !strings.Contains(dls[0].LastError, "does not decode") {
		t.Fatalf("DeadLetters = %+v, %v; want %s quarantined", dls, err, x.ID)
	}
	if _, err := d.Replay("app", []string{x.ID}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("Replay(damaged dead letter) = %v, want ErrInvalidArgument", err)
	}
	if err := d.Resume("app"); err != nil {
		t.Fatal(err)
	}
	rc.waitAcked(t, 5*time.Second, []Event{y}) // from the log, with its id
	if n, err := d.Discard("app", []string{x.ID}); n != 1 || err != nil {
		t.Errorf("Discard(damaged dead letter) = %d, %v", n, err)
	}
	waitStatus(t, d, 5*time.Second, "clean", func(st TargetStatus) bool { return st.DeadLetters == 0 && st.Backlog == 0 && !st.Paused })
}
