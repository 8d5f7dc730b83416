package outbox

// Acceptance tests for the outbox's "done when" list: each one drives a real
// dispatcher over a real bolt file against real httptest receivers.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"
)

// A target with two secrets (rotation) signs with both: a receiver that knows
// only the new one, verifying per the spec, accepts every delivery, and so
// does Verify.
func TestRotationDelivered(t *testing.T) {
	old, cur := mustSecret(t), mustSecret(t)
	rc := newReceiver(t, cur, nil) // knows only the second secret
	db := mustOpenDB(t)
	d := newTestDispatcher(t, db, testConfig(rc.srv.URL, old, cur))
	runDispatcher(t, d)
	evs := enqueue(t, db, d, userEvent("user.created", "u1"), userEvent("user.created", "u2"), userEvent("user.updated", "u1"))
	rc.waitAcked(t, 5*time.Second, evs)
	rc.checkSignatures(t)

	rc.mu.Lock()
	defer rc.mu.Unlock()
	stranger := mustSecret(t)
	for _, dl := range rc.got {
		if n := len(strings.Fields(dl.Header.Get("webhook-signature"))); n != 2 {
			t.Errorf("%s: %d signatures, want one per secret (2)", dl.ID, n)
		}
		if err := specVerify(old, dl.Header, dl.Body); err != nil {
			t.Errorf("%s: the old secret does not verify: %v", dl.ID, err)
		}
		if err := specVerify(stranger, dl.Header, dl.Body); err == nil {
			t.Errorf("%s: an unrelated secret verifies", dl.ID)
		}
		if err := Verify([]string{cur}, dl.Header, dl.Body, time.Now()); err != nil {
			t.Errorf("%s: Verify with the new secret: %v", dl.ID, err)
		}
	}
}

// Verify rejects malformed headers with the documented errors.
func TestVerifyMalformed(t *testing.T) {
	secret, other := mustSecret(t), mustSecret(t)
	now := time.Now()
	body := []byte(`{"id":"evt_1"}`)
	h := signedHeader(t, []string{secret}, "evt_1", now, body)
	otherSig := signedHeader(t, []string{other}, "evt_1", now, body).Get("webhook-signature")
	tests := []struct {
		name    string
		secrets []string
		h       http.Header
		want    error
	}{
		{"missingTimestamp", []string{secret}, without(h, "webhook-timestamp"), ErrMissingHeader},
		{"timestampNotNumber", []string{secret}, with(h, "webhook-timestamp", "yesterday"), ErrTimestamp},
		{"otherScheme", []string{secret}, with(h, "webhook-signature", strings.Replace(h.Get("webhook-signature"), "v1,", "v1a,", 1)), ErrNoMatch},
		{"badBase64", []string{secret}, with(h, "webhook-signature", "v1,!!!"), ErrNoMatch},
		{"secondOfList", []string{secret}, with(h, "webhook-signature", otherSig+" "+h.Get("webhook-signature")), nil},
		{"secretWithoutPrefix", []string{strings.TrimPrefix(secret, "whsec_")}, h, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := Verify(tt.secrets, tt.h, body, now); !errors.Is(err, tt.want) {
				t.Errorf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
	if err := Verify(nil, h, body, now); err == nil {
		t.Error("Verify without secrets succeeded")
	}
}

// The body is exactly the envelope; webhook-id is its id; webhook-timestamp is
// the time of each attempt, so a retry carries a newer one.
func TestEnvelopeOnTheWire(t *testing.T) {
	secret := mustSecret(t)
	rc := newReceiver(t, secret, func(w http.ResponseWriter, r *http.Request, dl delivery, attempt int) int {
		switch attempt {
		case 1:
			// Fail into the next second, so that the retries' unix-second
			// timestamps must differ from this one.
			time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second + 20*time.Millisecond)))
			return http.StatusInternalServerError
		}
		return 0
	})
	db := mustOpenDB(t)
	d := newTestDispatcher(t, db, testConfig(rc.srv.URL, secret))
	runDispatcher(t, d)
	ev := Event{
		Type:      "user.updated",
		Resources: []string{"User/u1"},
		Data:      json.RawMessage(`{"user":{"id":"u1","version":2,"name":{"givenName":"Zoë"}}}`),
		Changes:   json.RawMessage(`{"name.givenName":{"old":"Zoe","new":"Zoë"}}`),
	}
	stored := enqueue(t, db, d, ev)[0]
	rc.waitAcked(t, 10*time.Second, []Event{stored})
	rc.checkSignatures(t)

	rc.mu.Lock()
	got := slices.Clone(rc.got)
	rc.mu.Unlock()
	if len(got) != 2 {
		t.Fatalf("%d requests, want 2 (the failed attempt, then the retry)", len(got))
	}
	var stamps []int64
	for i, dl := range got {
		var env map[string]json.RawMessage
		if err := json.Unmarshal(dl.Body, &env); err != nil {
			t.Fatalf("request %d: body %s: %v", i, dl.Body, err)
		}
		keys := make([]string, 0, len(env))
		for k := range env {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		if want := []string{"changes", "data", "id", "occurred_at", "sequence", "type"}; !slices.Equal(keys, want) {
			t.Errorf("request %d: envelope keys %v, want %v", i, keys, want)
		}
		var e struct {
			ID         string          `json:"id"`
			Type       string          `json:"type"`
			OccurredAt string          `json:"occurred_at"`
			Seq        uint64          `json:"sequence"`
			Data       json.RawMessage `json:"data"`
			Changes    json.RawMessage `json:"changes"`
		}
		if err := json.Unmarshal(dl.Body, &e); err != nil {
			t.Fatal(err)
		}
		if e.ID != stored.ID || dl.Header.Get("webhook-id") != e.ID {
			t.Errorf("request %d: body id %q, webhook-id %q, want both %q", i, e.ID, dl.Header.Get("webhook-id"), stored.ID)
		}
		if e.Type != ev.Type || e.Seq != stored.Seq || string(e.Data) != string(ev.Data) || string(e.Changes) != string(ev.Changes) {
			t.Errorf("request %d: envelope %s, want the event %+v", i, dl.Body, stored)
		}
		if at, err := time.Parse(time.RFC3339Nano, e.OccurredAt); err != nil || !at.Equal(stored.OccurredAt.Truncate(time.Millisecond)) ||
			!strings.HasSuffix(e.OccurredAt, "Z") {
			t.Errorf("request %d: occurred_at %q, want %v in UTC with milliseconds", i, e.OccurredAt, stored.OccurredAt)
		}
		ts, err := strconv.ParseInt(dl.Header.Get("webhook-timestamp"), 10, 64)
		if err != nil {
			t.Fatalf("request %d: webhook-timestamp %q", i, dl.Header.Get("webhook-timestamp"))
		}
		if ts > dl.At.Unix() || ts < dl.At.Unix()-1 {
			t.Errorf("request %d: webhook-timestamp %d, arrived at %d: want the time of the attempt", i, ts, dl.At.Unix())
		}
		stamps = append(stamps, ts)
	}
	if stamps[1] <= stamps[0] {
		t.Errorf("webhook-timestamps %v: the retries must carry newer timestamps than the first try", stamps)
	}
}

// 50 users × 10 events, some of them membership events with two keys, are
// enqueued while the dispatcher runs. The receiver answers after a random
// 0–5 ms. Per resource key, events arrive in sequence order; unrelated
// resources are in flight together.
func TestOrderManyResources(t *testing.T) {
	secret := mustSecret(t)
	var mu sync.Mutex
	arrivals := map[string][]uint64{} // resource key → seqs in order of arrival
	rc := newReceiver(t, secret, func(w http.ResponseWriter, r *http.Request, dl delivery, attempt int) int {
		var env struct {
			Data struct {
				Res []string `json:"res"`
			} `json:"data"`
		}
		if err := json.Unmarshal(dl.Body, &env); err != nil || len(env.Data.Res) == 0 {
			return http.StatusBadRequest // shows up as a missing delivery
		}
		mu.Lock()
		for _, k := range env.Data.Res {
			arrivals[k] = append(arrivals[k], dl.Seq)
		}
		mu.Unlock()
		time.Sleep(time.Duration(rand.IntN(6)) * time.Millisecond)
		return 0
	})
	db := mustOpenDB(t)
	cfg := testConfig(rc.srv.URL, secret)
	cfg.Concurrency = 16
	d := newTestDispatcher(t, db, cfg)
	runDispatcher(t, d)

	event := func(typ string, res ...string) Event {
		data, _ := json.Marshal(map[string]any{"res": res})
		return Event{Type: typ, Resources: res, Data: data}
	}
	rnd := rand.New(rand.NewPCG(4, 2))
	var stored []Event
	for round := range 10 {
		var evs []Event
		for _, u := range rnd.Perm(50) {
			user := fmt.Sprintf("User/u%d", u)
			switch {
			case round == 0:
				evs = append(evs, event("user.created", user))
			case (u+round)%4 == 0:
				evs = append(evs, event("group.member_added", fmt.Sprintf("Group/g%d", u%3), user))
			default:
				evs = append(evs, event("user.updated", user))
			}
		}
		stored = append(stored, enqueue(t, db, d, evs...)...)
	}
	rc.waitAcked(t, 20*time.Second, stored)
	rc.checkSignatures(t)

	want := map[string][]uint64{}
	for _, ev := range stored {
		for _, k := range ev.Resources {
			want[k] = append(want[k], ev.Seq)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(arrivals) != len(want) {
		t.Errorf("%d resource keys arrived, want %d", len(arrivals), len(want))
	}
	for k, seqs := range want {
		if got := arrivals[k]; !slices.Equal(got, seqs) {
			t.Errorf("%s: arrival order %v, want sequence order %v", k, got, seqs)
		}
	}
	rc.mu.Lock()
	maxIn := rc.maxIn
	rc.mu.Unlock()
	if maxIn < 2 {
		t.Errorf("at most %d request in flight, want unrelated resources delivered in parallel", maxIn)
	}
	t.Logf("%d events over %d resource keys; up to %d requests in flight", len(stored), len(want), maxIn)
}

// A 400 dead-letters at once and keeps at most 4 KiB of the answer (valid
// UTF-8 even when the cut falls inside a character); the resource's later
// events still flow.
func TestDeadLetterResponseBody(t *testing.T) {
	secret := mustSecret(t)
	ascii := strings.Repeat("0123456789abcdef", 640) // 10 KiB
	multi := "x" + strings.Repeat("é", 5120)         // 10 KiB + 1; byte 4096 is the first half of an é
	rc := newReceiver(t, secret, func(w http.ResponseWriter, r *http.Request, dl delivery, attempt int) int {
		var body string
		switch dl.Type {
		case "user.created":
			body = ascii
		case "user.deleted":
			body = multi
		default:
			return 0
		}
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, body)
		return -1
	})
	db := mustOpenDB(t)
	d := newTestDispatcher(t, db, testConfig(rc.srv.URL, secret))
	runDispatcher(t, d)
	evs := enqueue(t, db, d, userEvent("user.created", "u1"), userEvent("user.updated", "u1"), userEvent("user.deleted", "u2"))
	rc.waitAcked(t, 5*time.Second, evs[1:2])
	waitStatus(t, d, 5*time.Second, "2 dead letters", func(st TargetStatus) bool { return st.DeadLetters == 2 && st.Backlog == 0 })

	for _, c := range []struct {
		ev   Event
		body string
	}{{evs[0], ascii}, {evs[2], multi}} {
		dl, err := d.DeadLetter("app", c.ev.ID)
		if err != nil {
			t.Fatalf("DeadLetter(%s): %v", c.ev.Type, err)
		}
		if dl.Attempts != 1 || dl.LastStatus != 400 || rc.attemptsOf(c.ev.ID) != 1 {
			t.Errorf("%s: %d attempts (%d requests), status %d; want 1 attempt with 400", c.ev.Type, dl.Attempts, rc.attemptsOf(c.ev.ID), dl.LastStatus)
		}
		if n := len(dl.ResponseBody); n > MaxResponseBody || n < MaxResponseBody-utf8.UTFMax {
			t.Errorf("%s: kept %d bytes of a 10 KiB answer, want at most (and about) %d", c.ev.Type, n, MaxResponseBody)
		}
		if !utf8.ValidString(dl.ResponseBody) || !strings.HasPrefix(c.body, dl.ResponseBody) {
			t.Errorf("%s: kept body is not a valid prefix of the answer: ...%q", c.ev.Type, dl.ResponseBody[max(len(dl.ResponseBody)-8, 0):])
		}
	}
}

// Admin calls name unknown targets and ids with ErrUnknownTarget and
// ErrNotFound, with or without Run.
func TestAdminErrors(t *testing.T) {
	db := mustOpenDB(t)
	d := newTestDispatcher(t, db, testConfig("http://127.0.0.1:1/", mustSecret(t)))
	check := func(what string, err, want error) {
		t.Helper()
		if !errors.Is(err, want) {
			t.Errorf("%s = %v, want %v", what, err, want)
		}
	}
	for _, running := range []bool{false, true} {
		if running {
			runDispatcher(t, d)
		}
		_, err := d.DeadLetters("nope", 0, 10)
		check("DeadLetters(nope)", err, ErrUnknownTarget)
		_, err = d.DeadLetter("nope", "evt_x")
		check("DeadLetter(nope)", err, ErrUnknownTarget)
		_, err = d.Replay("nope", nil)
		check("Replay(nope)", err, ErrUnknownTarget)
		_, err = d.Discard("nope", nil)
		check("Discard(nope)", err, ErrUnknownTarget)
		check("Pause(nope)", d.Pause("nope", "x"), ErrUnknownTarget)
		check("Resume(nope)", d.Resume("nope"), ErrUnknownTarget)
		_, err = d.DeadLetter("app", "evt_x")
		check("DeadLetter(app, unknown)", err, ErrNotFound)
		_, err = d.Replay("app", []string{"evt_x"})
		check("Replay(app, unknown)", err, ErrNotFound)
		_, err = d.Discard("app", []string{"evt_x"})
		check("Discard(app, unknown)", err, ErrNotFound)
		if n, err := d.Replay("app", nil); n != 0 || err != nil {
			t.Errorf("Replay(app, all) with no dead letters = %d, %v; want 0, nil", n, err)
		}
		if dls, err := d.DeadLetters("app", 0, 10); len(dls) != 0 || err != nil {
			t.Errorf("DeadLetters(app) = %v, %v; want none", dls, err)
		}
	}
}

// Stopping Run while a slow receiver has requests in flight, closing the file
// and starting over on it delivers every event at least once; the only
// duplicates are the requests that were in flight.
func TestRestartSlowReceiver(t *testing.T) {
	secret := mustSecret(t)
	var mu sync.Mutex
	arrivals := map[string]int{}
	rc := newReceiver(t, secret, func(w http.ResponseWriter, r *http.Request, dl delivery, attempt int) int {
		mu.Lock()
		arrivals[dl.ID]++
		mu.Unlock()
		time.Sleep(25 * time.Millisecond)
		return 0
	})
	cfg := testConfig(rc.srv.URL, secret)
	cfg.Concurrency = 4
	path := filepath.Join(t.TempDir(), "scimgate.db")

	db := openDB(t, path)
	d := newTestDispatcher(t, db, cfg)
	stop := runDispatcher(t, d)
	var evs []Event
	for i := range 60 {
		evs = append(evs, userEvent("user.updated", fmt.Sprint("u", i%20)))
	}
	stored := enqueue(t, db, d, evs...)
	rc.waitFor(t, 10*time.Second, "some deliveries", func() bool { return len(rc.acked) >= 15 })
	stop() // returns once Run has returned
	mu.Lock()
	before := len(arrivals)
	mu.Unlock()
	closeDB(t, db)

	db = openDB(t, path)
	t.Cleanup(func() { closeDB(t, db) }) // runs after the dispatcher stops
	d = newTestDispatcher(t, db, cfg)
	runDispatcher(t, d)
	rc.waitAcked(t, 10*time.Second, stored)
	rc.checkSignatures(t)
	waitStatus(t, d, 5*time.Second, "empty backlog", func(st TargetStatus) bool { return st.Backlog == 0 })

	mu.Lock()
	defer mu.Unlock()
	dups := 0
	for _, ev := range stored {
		switch n := arrivals[ev.ID]; {
		case n == 0:
			t.Errorf("webhook-id %s (seq %d) never arrived", ev.ID, ev.Seq)
		case n > 1:
			dups += n - 1
		}
	}
	t.Logf("%d events, %d arrived before the restart, %d duplicate deliveries", len(stored), before, dups)
	if dups > cfg.Concurrency {
		t.Errorf("%d duplicates, want at most the %d requests in flight at the stop", dups, cfg.Concurrency)
	}
}

// Pruning never removes an event a target has not settled: with a tiny
// retention, a paused target (whose backlog exceeds the in-memory window)
// keeps every event in the log while the other target has delivered them all;
// once it resumes and delivers, the log empties.
func TestPruneKeepsUndelivered(t *testing.T) {
	secret := mustSecret(t)
	app := newReceiver(t, secret, nil)
	late := newReceiver(t, secret, nil)
	db := mustOpenDB(t)
	cfg := testConfig(app.srv.URL, secret)
	cfg.Retention = time.Millisecond
	cfg.Targets = append(cfg.Targets, Target{Name: "late", URL: late.srv.URL, Secrets: []string{secret}, Timeout: time.Second})
	d := newTestDispatcher(t, db, cfg)
	d.window = 50
	if err := d.Pause("late", "maintenance"); err != nil {
		t.Fatal(err)
	}
	runDispatcher(t, d)
	var evs []Event
	for i := range 200 {
		evs = append(evs, userEvent("user.updated", fmt.Sprint("u", i%40)))
	}
	stored := enqueue(t, db, d, evs...)
	app.waitAcked(t, 10*time.Second, stored)
	waitStatus(t, d, 5*time.Second, "app done", func(st TargetStatus) bool { return st.Backlog == 0 })
	// Deliberately real time: prune passes run every pruneEvery and nothing
	// shows that one ran; in 20 of them a wrong prune would have happened.
	time.Sleep(20 * d.pruneEvery)

	logKeys := func() (n int, missing []uint64) {
		_ = db.View(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketEvents)
			n = b.Stats().KeyN
			for _, ev := range stored {
				if b.Get(be64(ev.Seq)) == nil {
					missing = append(missing, ev.Seq)
				}
			}
			return nil
		})
		return n, missing
	}
	if n, missing := logKeys(); len(missing) > 0 {
		t.Fatalf("%d events pruned although target late has not delivered them (log holds %d): %v", len(missing), n, missing)
	}
	sts, err := d.Status()
	if err != nil || sts[1].Name != "late" || sts[1].Backlog != len(stored) || !sts[1].Paused {
		t.Errorf("Status = %+v, %v; want late paused with a backlog of %d", sts, err, len(stored))
	}

	if err := d.Resume("late"); err != nil {
		t.Fatal(err)
	}
	late.waitAcked(t, 10*time.Second, stored)
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, _ := logKeys()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events still in the log after both targets delivered them", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A target subscribed to user.* gets no group events, and its cursor moves
// past them: nothing stays in its backlog.
func TestSubscriptionSkips(t *testing.T) {
	secret := mustSecret(t)
	users := newReceiver(t, secret, nil)
	all := newReceiver(t, secret, nil)
	db := mustOpenDB(t)
	cfg := testConfig(users.srv.URL, secret)
	cfg.Targets[0].Events = []string{"user.*"}
	cfg.Targets = append(cfg.Targets, Target{Name: "all", URL: all.srv.URL, Secrets: []string{secret}, Timeout: time.Second})
	d := newTestDispatcher(t, db, cfg)
	runDispatcher(t, d)

	group := func(typ string, g int) Event {
		return Event{Type: typ, Resources: []string{fmt.Sprintf("Group/g%d", g)}, Data: json.RawMessage(`{}`)}
	}
	var evs, userEvs []Event
	for i := range 10 {
		evs = append(evs, group("group.created", i), userEvent("user.created", fmt.Sprint("u", i)), memberEvent("group.member_added", fmt.Sprint("g", i), fmt.Sprint("u", i)))
	}
	evs = append(evs, group("group.deleted", 0), group("group.deleted", 1)) // ends with events users does not want
	stored := enqueue(t, db, d, evs...)
	stored = append(stored, enqueue(t, db, d, group("group.updated", 2))...) // a commit with nothing for users
	for _, ev := range stored {
		if strings.HasPrefix(ev.Type, "user.") {
			userEvs = append(userEvs, ev)
		}
	}
	all.waitAcked(t, 5*time.Second, stored)
	users.waitAcked(t, 5*time.Second, userEvs)
	st := waitStatus(t, d, 5*time.Second, "users caught up", func(st TargetStatus) bool { return st.Backlog == 0 && st.Delivered == uint64(len(userEvs)) })
	if st.OldestPendingAge != 0 || st.DeadLetters != 0 {
		t.Errorf("status = %+v", st)
	}
	users.mu.Lock()
	for _, dl := range users.got {
		if !strings.HasPrefix(dl.Type, "user.") {
			t.Errorf("user.* target received %s", dl.Type)
		}
	}
	users.mu.Unlock()

	last := stored[len(stored)-1].Seq
	deadline := time.Now().Add(5 * time.Second)
	for {
		var cursor uint64
		_ = db.View(func(tx *bolt.Tx) error { cursor = getU64(targetBucket(tx, "app"), keyCursor); return nil })
		if cursor == last {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cursor of the user.* target = %d, want %d (past the group events)", cursor, last)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Status reports deliveries, the last success and error, pending age and
// dead letters as they happen.
func TestStatusFields(t *testing.T) {
	secret := mustSecret(t)
	var mu sync.Mutex
	failUpdates := false
	rc := newReceiver(t, secret, func(w http.ResponseWriter, r *http.Request, dl delivery, attempt int) int {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case dl.Type == "user.deleted":
			return http.StatusBadRequest
		case dl.Type == "user.updated" && failUpdates:
			return http.StatusInternalServerError
		}
		return 0
	})
	db := mustOpenDB(t)
	d := newTestDispatcher(t, db, testConfig(rc.srv.URL, secret))
	runDispatcher(t, d)

	before := time.Now()
	enqueue(t, db, d, userEvent("user.created", "u1"))
	st := waitStatus(t, d, 5*time.Second, "1 delivered", func(st TargetStatus) bool { return st.Delivered == 1 })
	if st.LastSuccess.Before(before) || st.LastSuccess.After(time.Now()) || st.Backlog != 0 || st.OldestPendingAge != 0 ||
		st.LastError != "" || st.LastStatus != 0 || st.DeadLetters != 0 || st.Paused {
		t.Errorf("after one delivery: %+v", st)
	}

	mu.Lock()
	failUpdates = true
	mu.Unlock()
	enqueued := time.Now()
	enqueue(t, db, d, userEvent("user.updated", "u2"))
	st = waitStatus(t, d, 5*time.Second, "a failure", func(st TargetStatus) bool { return st.LastStatus == 500 })
	if !strings.Contains(st.LastError, "500") || st.LastErrorAt.Before(enqueued) || st.Backlog != 1 || st.Delivered != 1 {
		t.Errorf("while failing: %+v", st)
	}
	st = waitStatus(t, d, 5*time.Second, "the pending event to be 30 ms old", func(st TargetStatus) bool { return st.OldestPendingAge >= 30*time.Millisecond })
	if st.OldestPendingAge < 30*time.Millisecond || st.OldestPendingAge > time.Since(enqueued)+time.Second {
		t.Errorf("OldestPendingAge = %v while the event waits for %v", st.OldestPendingAge, time.Since(enqueued))
	}

	mu.Lock()
	failUpdates = false
	mu.Unlock()
	st = waitStatus(t, d, 5*time.Second, "2 delivered", func(st TargetStatus) bool { return st.Delivered == 2 && st.Backlog == 0 })
	if st.OldestPendingAge != 0 || st.LastStatus != 500 {
		t.Errorf("after recovery: %+v (the last error stays until the next one)", st)
	}

	enqueue(t, db, d, userEvent("user.deleted", "u3"))
	st = waitStatus(t, d, 5*time.Second, "a dead letter", func(st TargetStatus) bool { return st.DeadLetters == 1 })
	if st.LastStatus != 400 || !strings.Contains(st.LastError, "400") || st.Delivered != 2 || st.Backlog != 0 {
		t.Errorf("after a dead letter: %+v", st)
	}
}

// BenchmarkLatency measures commit-to-arrival latency at low load: one event
// every 10 ms, each in its own transaction that wakes the dispatcher on
// commit, with a 1 s poll interval so that only Notify can explain a short
// latency.
//
//	go test -run '^$' -bench Latency -benchtime 500x ./outbox/
func BenchmarkLatency(b *testing.B) {
	type arrival struct {
		id string
		at time.Time
	}
	arrived := make(chan arrival, b.N+16)
	srv := newReceiver(b, "", func(w http.ResponseWriter, r *http.Request, dl delivery, attempt int) int {
		arrived <- arrival{dl.ID, dl.At}
		return 0
	})
	db := mustOpenDB(b)
	cfg := testConfig(srv.srv.URL, mustSecret(b))
	cfg.PollInterval = time.Second
	d := newTestDispatcher(b, db, cfg)
	runDispatcher(b, d)

	committed := make(map[string]time.Time, b.N)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	b.ResetTimer()
	for i := range b.N {
		<-tick.C
		var at time.Time
		var id string
		err := db.Update(func(tx *bolt.Tx) error {
			ev, err := Enqueue(tx, userEvent("user.updated", fmt.Sprint("u", i%50)), time.Now())
			id = ev.ID
			tx.OnCommit(func() { at = time.Now(); d.Notify() })
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		committed[id] = at
	}
	lat := make([]time.Duration, 0, b.N)
	timeout := time.After(10 * time.Second)
	for len(lat) < b.N {
		select {
		case a := <-arrived:
			if c, ok := committed[a.id]; ok {
				lat = append(lat, a.at.Sub(c))
				delete(committed, a.id)
			}
		case <-timeout:
			b.Fatalf("%d of %d events arrived", len(lat), b.N)
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	p := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))] }
	b.ReportMetric(float64(p(.5).Microseconds())/1000, "p50_ms")
	b.ReportMetric(float64(p(.99).Microseconds())/1000, "p99_ms")
	b.Logf("commit → arrival, %d events: p50 %v, p90 %v, p99 %v, max %v", len(lat), p(.5), p(.9), p(.99), lat[len(lat)-1])
}

// BenchmarkDeliverDistinct is BenchmarkDeliver with one resource per event,
// so that nothing but the concurrency limits parallelism.
//
//	go test -run '^$' -bench DeliverDistinct -benchtime 20000x ./outbox/
func BenchmarkDeliverDistinct(b *testing.B) {
	srv, n := countingReceiver(b)
	db := mustOpenDB(b)
	d := newTestDispatcher(b, db, testConfig(srv.URL, mustSecret(b)))
	for done := 0; done < b.N; {
		evs := make([]Event, min(1000, b.N-done))
		for i := range evs {
			evs[i] = userEvent("user.updated", fmt.Sprint("b", done+i))
		}
		enqueue(b, db, nil, evs...)
		done += len(evs)
	}
	b.ResetTimer()
	start := time.Now()
	stop := runDispatcher(b, d)
	for n.Load() < int64(b.N) {
		time.Sleep(time.Millisecond)
	}
	took := time.Since(start)
	b.StopTimer()
	stop()
	b.ReportMetric(float64(b.N)/took.Seconds(), "events/s")
}
