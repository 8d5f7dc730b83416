package outbox

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
)

func TestDeliver(t *testing.T) {
	secret := mustSecret(t)
	rc := newReceiver(t, secret, nil)
	db := mustOpenDB(t)
	d := newTestDispatcher(t, db, testConfig(rc.srv.URL+"/hooks", secret))
	runDispatcher(t, d)
	evs := enqueue(t, db, d, userEvent("user.created", "u1"), userEvent("user.updated", "u1"), userEvent("user.created", "u2"))
	rc.waitAcked(t, 5*time.Second, evs)
	rc.checkSignatures(t)
	st := waitStatus(t, d, 5*time.Second, "3 delivered", func(st TargetStatus) bool { return st.Delivered == 3 })
	if st.Backlog != 0 || st.DeadLetters != 0 || st.Paused || st.LastSuccess.IsZero() {
		t.Errorf("status = %+v", st)
	}
	if st.URL != rc.srv.URL+"/hooks" {
		t.Errorf("status URL = %q", st.URL)
	}
}

// Events for one resource arrive in order, each only after every earlier event
// sharing a resource was acknowledged, while unrelated resources interleave.
func TestOrderPerResource(t *testing.T) {
	secret := mustSecret(t)
	db := mustOpenDB(t)
	cfg := testConfig("http://placeholder.invalid/", secret)
	cfg.Concurrency = 16
	cfg.Backoff = []time.Duration{0, 5 * time.Millisecond}

	// Build a history: groups and users are created, updated and linked in a
	// random interleaving that respects causality.
	rnd := rand.New(rand.NewPCG(1, 2))
	var evs []Event
	for g := range 4 {
		evs = append(evs, Event{Type: "group.created", Resources: []string{fmt.Sprintf("Group/g%d", g)}, Data: []byte(`{}`)})
	}
	for u := range 40 {
		evs = append(evs, userEvent("user.created", fmt.Sprint("u", u)))
	}
	for range 600 {
		u := fmt.Sprint("u", rnd.IntN(40))
		switch rnd.IntN(3) {
		case 0:
			evs = append(evs, userEvent("user.updated", u))
		case 1:
			evs = append(evs, memberEvent("group.member_added", fmt.Sprint("g", rnd.IntN(4)), u))
		default:
			evs = append(evs, memberEvent("group.member_removed", fmt.Sprint("g", rnd.IntN(4)), u))
		}
	}

	var mu sync.Mutex
	bySeq := map[uint64]Event{}
	byRes := map[string][]uint64{}
	acked := map[uint64]bool{}
	var violations []string
	rc := newReceiver(t, secret, func(w http.ResponseWriter, r *http.Request, dl delivery, attempt int) int {
		mu.Lock()
		ev := bySeq[dl.Seq]
		for _, res := range ev.Resources {
			for _, s := range byRes[res] {
				if s < dl.Seq && !acked[s] {
					violations = append(violations, fmt.Sprintf("seq %d (%s) arrived before seq %d was acknowledged", dl.Seq, res, s))
				}
			}
		}
		mu.Unlock()
		time.Sleep(time.Duration(rnd32(dl.Seq)%1000) * time.Microsecond)
		if attempt == 1 && dl.Seq%7 == 0 {
			return http.StatusInternalServerError // retried: the resource's later events must wait
		}
		mu.Lock()
		acked[dl.Seq] = true
		mu.Unlock()
		return http.StatusNoContent
	})
	cfg.Targets[0].URL = rc.srv.URL
	d := newTestDispatcher(t, db, cfg)
	stored := enqueue(t, db, nil, evs...)
	mu.Lock()
	for _, ev := range stored {
		bySeq[ev.Seq] = ev
		for _, r := range ev.Resources {
			byRes[r] = append(byRes[r], ev.Seq)
		}
	}
	mu.Unlock()
	runDispatcher(t, d)
	d.Notify()
	rc.waitAcked(t, 20*time.Second, stored)
	rc.checkSignatures(t)
	mu.Lock()
	defer mu.Unlock()
	for _, v := range violations[:min(len(violations), 10)] {
		t.Error(v)
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.maxIn < 2 {
		t.Errorf("at most %d request in flight: unrelated resources must be delivered in parallel", rc.maxIn)
	}
	t.Logf("%d events, up to %d requests in flight", len(stored), rc.maxIn)
}

func rnd32(seq uint64) uint64 { return (seq * 2654435761) % 4294967296 }

// freePort returns an address on which nothing listens.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestReceiverDownThenUp(t *testing.T) {
	secret := mustSecret(t)
	addr := freePort(t)
	db := mustOpenDB(t)
	d := newTestDispatcher(t, db, testConfig("http://"+addr+"/hooks", secret))
	runDispatcher(t, d)
	var evs []Event
	for i := range 20 {
		evs = append(evs, userEvent("user.created", fmt.Sprint("u", i)))
	}
	evs = enqueue(t, db, d, evs...)
	st := waitStatus(t, d, 5*time.Second, "a failed attempt", func(st TargetStatus) bool { return st.LastError != "" })
	if !strings.Contains(st.LastError, "connection refused") || st.Backlog != 20 {
		t.Errorf("status while down = %+v", st)
	}

	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen again on %s: %v", addr, err)
	}
	rc := newReceiverOn(t, l, secret)
	rc.waitAcked(t, 10*time.Second, evs)
	rc.checkSignatures(t)
	waitStatus(t, d, 5*time.Second, "empty backlog", func(st TargetStatus) bool { return st.Backlog == 0 && st.Delivered == 20 })
}

func newReceiverOn(t *testing.T, l net.Listener, secret string) *receiver {
	rc := &receiver{t: t, secret: secret, attempts: map[string]int{}, acked: map[string]int{}, changed: make(chan struct{}, 1)}
	rc.srv = httptest.NewUnstartedServer(http.HandlerFunc(rc.serveHTTP))
	rc.srv.Listener.Close()
	rc.srv.Listener = l
	rc.srv.Start()
	t.Cleanup(rc.srv.Close)
	return rc
}

func TestSlowReceiverTimeout(t *testing.T) {
	secret := mustSecret(t)
	rc := newReceiver(t, secret, func(w http.ResponseWriter, r *http.Request, dl delivery, attempt int) int {
		if attempt == 1 {
			select { // slower than the target's timeout
			case <-time.After(400 * time.Millisecond):
			case <-r.Context().Done():
			}
			return http.StatusServiceUnavailable // too late: the sender gave up
		}
		return 0
	})
	db := mustOpenDB(t)
	cfg := testConfig(rc.srv.URL, secret)
	cfg.Targets[0].Timeout = 100 * time.Millisecond
	d := newTestDispatcher(t, db, cfg)
	runDispatcher(t, d)
	evs := enqueue(t, db, d, userEvent("user.created", "u1"), userEvent("user.created", "u2"))
	rc.waitAcked(t, 10*time.Second, evs)
	st := waitStatus(t, d, 5*time.Second, "delivered", func(st TargetStatus) bool { return st.Delivered == 2 })
	if !strings.Contains(st.LastError, "Timeout") && !strings.Contains(st.LastError, "deadline") {
		t.Errorf("last error = %q, want a timeout", st.LastError)
	}
}

func TestRetryAfter(t *testing.T) {
	secret := mustSecret(t)
	var mu sync.Mutex
	first := map[string]time.Time{}
	rc := newReceiver(t, secret, func(w http.ResponseWriter, r *http.Request, dl delivery, attempt int) int {
		if attempt == 1 {
			mu.Lock()
			first[dl.ID] = dl.At
			mu.Unlock()
			w.Header().Set("Retry-After", "1")
			return http.StatusTooManyRequests
		}
		return 0
	})
	db := mustOpenDB(t)
	cfg := testConfig(rc.srv.URL, secret)
	cfg.RetryAfterMax = 5 * time.Second
	d := newTestDispatcher(t, db, cfg)
	runDispatcher(t, d)
	ev := enqueue(t, db, d, userEvent("user.created", "u1"))[0]
	rc.waitAcked(t, 10*time.Second, []Event{ev})
	rc.mu.Lock()
	second := rc.got[1].At
	n := len(rc.got)
	rc.mu.Unlock()
	mu.Lock()
	gap := second.Sub(first[ev.ID])
	mu.Unlock()
	if gap < 900*time.Millisecond || n != 2 {
		t.Errorf("retried after %v with %d requests, want one retry after Retry-After: 1 (~1s)", gap, n)
	}
}

func TestRetryAfterClamped(t *testing.T) {
	secret := mustSecret(t)
	rc := newReceiver(t, secret, func(w http.ResponseWriter, r *http.Request, dl delivery, attempt int) int {
		if attempt == 1 {
			w.Header().Set("Retry-After", "3600")
			return http.StatusTooManyRequests
		}
		return 0
	})
	db := mustOpenDB(t)
	cfg := testConfig(rc.srv.URL, secret)
	cfg.RetryAfterMax = 200 * time.Millisecond
	d := newTestDispatcher(t, db, cfg)
	runDispatcher(t, d)
	start := time.Now()
	ev := enqueue(t, db, d, userEvent("user.created", "u1"))[0]
	rc.waitAcked(t, 5*time.Second, []Event{ev})
	if took := time.Since(start); took < 150*time.Millisecond || took > 3*time.Second {
		t.Errorf("delivered after %v, want Retry-After: 3600 clamped to 200ms", took)
	}
}

func TestServerErrorsThenSuccess(t *testing.T) {
	secret := mustSecret(t)
	rc := newReceiver(t, secret, func(w http.ResponseWriter, r *http.Request, dl delivery, attempt int) int {
		if attempt <= 3 {
			return http.StatusInternalServerError
		}
		return 0
	})
	db := mustOpenDB(t)
	d := newTestDispatcher(t, db, testConfig(rc.srv.URL, secret))
	runDispatcher(t, d)
	evs := enqueue(t, db, d, userEvent("user.created", "u1"), userEvent("user.updated", "u1"))
	rc.waitAcked(t, 10*time.Second, evs)
	if n := rc.attemptsOf(evs[0].ID); n != 4 {
		t.Errorf("%d requests for the first event, want 4 (one per attempt)", n)
	}
	// The second event waited for the first.
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, dl := range rc.got {
		if dl.ID == evs[1].ID && rc.acked[evs[0].ID] == 0 {
			t.Error("second event sent before the first was delivered")
		}
	}
	if rc.got[len(rc.got)-1].ID != evs[1].ID {
		t.Error("second event not delivered last")
	}
}

func TestConnectionReset(t *testing.T) {
	secret := mustSecret(t)
	rc := newReceiver(t, secret, func(w http.ResponseWriter, r *http.Request, dl delivery, attempt int) int {
		if attempt <= 4 {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				if tc, ok := conn.(*net.TCPConn); ok {
					_ = tc.SetLinger(0) // RST instead of FIN
				}
				conn.Close()
			}
			return -1
		}
		return 0
	})
	db := mustOpenDB(t)
	d := newTestDispatcher(t, db, testConfig(rc.srv.URL, secret))
	runDispatcher(t, d)
	var evs []Event
	for i := range 10 {
		evs = append(evs, userEvent("user.created", fmt.Sprint("u", i)))
	}
	evs = enqueue(t, db, d, evs...)
	rc.waitAcked(t, 10*time.Second, evs)
	rc.checkSignatures(t)
}

func TestPermanentDeadLetterAndReplay(t *testing.T) {
	secret := mustSecret(t)
	var mu sync.Mutex
	reject := true
	rc := newReceiver(t, secret, func(w http.ResponseWriter, r *http.Request, dl delivery, attempt int) int {
		mu.Lock()
		defer mu.Unlock()
		if reject && dl.Type == "user.created" {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"error":"department missing"}`)
			return -1
		}
		return 0
	})
	db := mustOpenDB(t)
	d := newTestDispatcher(t, db, testConfig(rc.srv.URL, secret))
	runDispatcher(t, d)
	evs := enqueue(t, db, d, userEvent("user.created", "u1"), userEvent("user.updated", "u1"))
	// The dead letter releases the resource: the update follows.
	rc.waitAcked(t, 5*time.Second, evs[1:])
	if n := rc.attemptsOf(evs[0].ID); n != 1 {
		t.Errorf("400 answered %d times, want 1 (permanent)", n)
	}
	st := waitStatus(t, d, 5*time.Second, "a dead letter", func(st TargetStatus) bool { return st.DeadLetters == 1 })
	if st.LastStatus != 400 {
		t.Errorf("status = %+v", st)
	}
	dls, err := d.DeadLetters("app", 0, 10)
	if err != nil || len(dls) != 1 {
		t.Fatalf("DeadLetters = %v, %v", dls, err)
	}
	dl := dls[0]
	if dl.Event.ID != evs[0].ID || dl.Event.Seq != evs[0].Seq || dl.Attempts != 1 || dl.LastStatus != 400 ||
		dl.ResponseBody != `{"error":"department missing"}` || dl.Target != "app" || dl.LastAttemptAt.IsZero() {
		t.Errorf("dead letter = %+v", dl)
	}
	if string(dl.Event.Data) != string(evs[0].Data) || !slices.Equal(dl.Event.Resources, evs[0].Resources) {
		t.Errorf("dead letter event = %+v, want %+v", dl.Event, evs[0])
	}
	if got, err := d.DeadLetter("app", evs[0].ID); err != nil || got.Event.ID != evs[0].ID {
		t.Errorf("DeadLetter = %+v, %v", got, err)
	}
	if _, err := d.DeadLetter("app", "evt_nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("DeadLetter(unknown) = %v, want ErrNotFound", err)
	}
	if page, err := d.DeadLetters("app", dl.Event.Seq, 10); err != nil || len(page) != 0 {
		t.Errorf("next page = %v, %v; want empty", page, err)
	}
	if _, err := d.DeadLetters("nope", 0, 10); !errors.Is(err, ErrUnknownTarget) {
		t.Errorf("DeadLetters(unknown target) = %v", err)
	}
	if _, err := d.Replay("app", []string{evs[0].ID, "evt_nope"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Replay(unknown id) = %v, want ErrNotFound", err)
	}

	mu.Lock()
	reject = false
	mu.Unlock()
	if n, err := d.Replay("app", nil); n != 1 || err != nil {
		t.Fatalf("Replay = %d, %v; want 1", n, err)
	}
	rc.waitAcked(t, 5*time.Second, evs)
	st = waitStatus(t, d, 5*time.Second, "no dead letters", func(st TargetStatus) bool { return st.DeadLetters == 0 && st.Backlog == 0 })
	if dls, _ := d.DeadLetters("app", 0, 10); len(dls) != 0 {
		t.Errorf("dead letters after replay: %v", dls)
	}
}

func TestMaxAttemptsDeadLetter(t *testing.T) {
	secret := mustSecret(t)
	rc := newReceiver(t, secret, func(w http.ResponseWriter, r *http.Request, dl delivery, attempt int) int {
		return http.StatusServiceUnavailable
	})
	db := mustOpenDB(t)
	cfg := testConfig(rc.srv.URL, secret)
	cfg.MaxAttempts = 3
	d := newTestDispatcher(t, db, cfg)
	runDispatcher(t, d)
	evs := enqueue(t, db, d, userEvent("user.created", "u1"), userEvent("user.created", "u2"))
	waitStatus(t, d, 10*time.Second, "2 dead letters", func(st TargetStatus) bool { return st.DeadLetters == 2 && st.Backlog == 0 })
	for _, ev := range evs {
		dl, err := d.DeadLetter("app", ev.ID)
		if err != nil || dl.Attempts != 3 || dl.LastStatus != 503 {
			t.Errorf("DeadLetter(%s) = %+v, %v; want 3 attempts, 503", ev.ID, dl, err)
		}
		if n := rc.attemptsOf(ev.ID); n != 3 {
			t.Errorf("%d requests, want one per attempt (3)", n)
		}
	}
	if n, err := d.Discard("app", []string{evs[0].ID}); n != 1 || err != nil {
		t.Errorf("Discard = %d, %v", n, err)
	}
	if n, err := d.Discard("app", nil); n != 1 || err != nil {
		t.Errorf("Discard(all) = %d, %v", n, err)
	}
	waitStatus(t, d, time.Second, "no dead letters", func(st TargetStatus) bool { return st.DeadLetters == 0 })
}

func TestRedirectNotFollowed(t *testing.T) {
	secret := mustSecret(t)
	other := newReceiver(t, secret, nil)
	rc := newReceiver(t, secret, func(w http.ResponseWriter, r *http.Request, dl delivery, attempt int) int {
		w.Header().Set("Location", other.srv.URL+"/x?sig=leak")
		return http.StatusTemporaryRedirect
	})
	db := mustOpenDB(t)
	d := newTestDispatcher(t, db, testConfig(rc.srv.URL, secret))
	runDispatcher(t, d)
	ev := enqueue(t, db, d, userEvent("user.created", "u1"))[0]
	waitStatus(t, d, 5*time.Second, "a dead letter", func(st TargetStatus) bool { return st.DeadLetters == 1 })
	dl, err := d.DeadLetter("app", ev.ID)
	if err != nil || !strings.Contains(dl.LastError, "redirects are not followed") || strings.Contains(dl.LastError, "leak") {
		t.Errorf("dead letter = %+v, %v", dl, err)
	}
	if len(other.got) != 0 {
		t.Error("redirect was followed")
	}
}

func TestGonePausesTarget(t *testing.T) {
	secret := mustSecret(t)
	var mu sync.Mutex
	gone := true
	rc := newReceiver(t, secret, func(w http.ResponseWriter, r *http.Request, dl delivery, attempt int) int {
		mu.Lock()
		defer mu.Unlock()
		if gone {
			return http.StatusGone
		}
		return 0
	})
	db := mustOpenDB(t)
	d := newTestDispatcher(t, db, testConfig(rc.srv.URL, secret))
	runDispatcher(t, d)
	first := enqueue(t, db, d, userEvent("user.created", "u1"))
	st := waitStatus(t, d, 5*time.Second, "paused", func(st TargetStatus) bool { return st.Paused })
	if !strings.Contains(st.PausedReason, "410") || st.DeadLetters != 0 {
		t.Errorf("status = %+v", st)
	}
	// Paused targets keep accumulating backlog and get no requests.
	more := enqueue(t, db, d, userEvent("user.created", "u2"), userEvent("user.created", "u3"))
	waitStatus(t, d, 5*time.Second, "backlog 3", func(st TargetStatus) bool { return st.Backlog == 3 })
	// Deliberately real time: a request that should not come would come
	// within this window (nothing signals its absence).
	time.Sleep(100 * time.Millisecond)
	rc.mu.Lock()
	if n := len(rc.got); n != 1 {
		t.Errorf("%d requests while paused, want 1", n)
	}
	rc.mu.Unlock()

	mu.Lock()
	gone = false
	mu.Unlock()
	if err := d.Resume("app"); err != nil {
		t.Fatal(err)
	}
	rc.waitAcked(t, 5*time.Second, append(first, more...))
	waitStatus(t, d, 5*time.Second, "resumed", func(st TargetStatus) bool { return !st.Paused && st.Backlog == 0 })
}

func TestPauseResume(t *testing.T) {
	secret := mustSecret(t)
	rc := newReceiver(t, secret, nil)
	db := mustOpenDB(t)
	d := newTestDispatcher(t, db, testConfig(rc.srv.URL, secret))
	if err := d.Pause("app", "maintenance window"); err != nil { // before Run: persisted
		t.Fatal(err)
	}
	if err := d.Pause("nope", ""); !errors.Is(err, ErrUnknownTarget) {
		t.Errorf("Pause(unknown) = %v", err)
	}
	runDispatcher(t, d)
	evs := enqueue(t, db, d, userEvent("user.created", "u1"), userEvent("user.created", "u2"))
	st := waitStatus(t, d, 5*time.Second, "backlog", func(st TargetStatus) bool { return st.Backlog == 2 })
	if !st.Paused || st.PausedReason != "maintenance window" || st.OldestPendingAge <= 0 {
		t.Errorf("status = %+v", st)
	}
	// Deliberately real time: a request that should not come would come
	// within this window (nothing signals its absence).
	time.Sleep(100 * time.Millisecond)
	if len(rc.got) != 0 {
		t.Errorf("%d deliveries while paused", len(rc.got))
	}
	if err := d.Resume("app"); err != nil {
		t.Fatal(err)
	}
	rc.waitAcked(t, 5*time.Second, evs)
	if err := d.Pause("app", ""); err != nil { // while running
		t.Fatal(err)
	}
	more := enqueue(t, db, d, userEvent("user.updated", "u1"))
	st = waitStatus(t, d, 5*time.Second, "paused", func(st TargetStatus) bool { return st.Paused && st.Backlog == 1 })
	if st.PausedReason == "" {
		t.Error("no default pause reason")
	}
	if err := d.Resume("app"); err != nil {
		t.Fatal(err)
	}
	rc.waitAcked(t, 5*time.Second, more)
}

// Closing the dispatcher and the database in the middle of deliveries and
// starting again on the same file loses nothing.
func TestRestartMidDelivery(t *testing.T) {
	secret := mustSecret(t)
	path := filepath.Join(t.TempDir(), "scimgate.db")
	var mu sync.Mutex
	hang := false
	rc := newReceiver(t, secret, func(w http.ResponseWriter, r *http.Request, dl delivery, attempt int) int {
		mu.Lock()
		h := hang
		mu.Unlock()
		if h && dl.Seq%3 == 0 {
			<-r.Context().Done() // in flight when the dispatcher stops
			return http.StatusServiceUnavailable
		}
		if dl.Seq%5 == 0 && attempt == 1 {
			return http.StatusInternalServerError
		}
		return 0
	})
	cfg := testConfig(rc.srv.URL, secret)

	db := openDB(t, path)
	d := newTestDispatcher(t, db, cfg)
	stop := runDispatcher(t, d)
	var evs []Event
	for i := range 300 {
		evs = append(evs, userEvent("user.updated", fmt.Sprint("u", i%37)))
	}
	all := enqueue(t, db, d, evs[:100]...)
	rc.waitAcked(t, 10*time.Second, all)
	mu.Lock()
	hang = true
	mu.Unlock()
	all = append(all, enqueue(t, db, d, evs[100:200]...)...)
	rc.waitFor(t, 10*time.Second, "deliveries of the second batch, some in flight", func() bool { return len(rc.acked) >= 105 && rc.inFlight > 0 })
	stop()
	// Enqueued while no dispatcher runs.
	all = append(all, enqueue(t, db, nil, evs[200:]...)...)
	closeDB(t, db)

	mu.Lock()
	hang = false
	mu.Unlock()
	db = openDB(t, path)
	defer closeDB(t, db)
	d = newTestDispatcher(t, db, cfg)
	stop = runDispatcher(t, d)
	defer stop()
	rc.waitAcked(t, 10*time.Second, all)
	rc.checkSignatures(t)
	waitStatus(t, d, 5*time.Second, "empty backlog", func(st TargetStatus) bool { return st.Backlog == 0 })
	stop()
	_ = db.View(func(tx *bolt.Tx) error {
		b := targetBucket(tx, "app")
		if n := b.Bucket(bucketPending).Stats().KeyN; n != 0 {
			t.Errorf("%d events still pending", n)
		}
		if c := getU64(b, keyCursor); c != all[len(all)-1].Seq {
			t.Errorf("cursor = %d, want %d", c, all[len(all)-1].Seq)
		}
		return nil
	})
}

// Under steady load the log stays bounded: delivered events are pruned after
// the retention and the file stops growing.
func TestPruneBounded(t *testing.T) {
	secret := mustSecret(t)
	rc := newReceiver(t, secret, nil)
	path := filepath.Join(t.TempDir(), "scimgate.db")
	db := openDB(t, path)
	t.Cleanup(func() { closeDB(t, db) }) // after the dispatcher stops
	cfg := testConfig(rc.srv.URL, secret)
	cfg.Retention = 20 * time.Millisecond
	cfg.Concurrency = 32
	d := newTestDispatcher(t, db, cfg)
	runDispatcher(t, d)

	const rounds, perRound = 10, 600
	var sizes []int64
	var keys int
	for round := range rounds {
		var evs []Event
		for i := range perRound {
			ev := userEvent("user.updated", fmt.Sprint("u", i))
			ev.Data = []byte(`{"pad":"` + strings.Repeat("x", 200) + `"}`)
			evs = append(evs, ev)
		}
		rc.waitAcked(t, 20*time.Second, enqueue(t, db, d, evs...))
		// Wait for pruning to catch up with this round.
		deadline := time.Now().Add(5 * time.Second)
		for {
			_ = db.View(func(tx *bolt.Tx) error { keys = tx.Bucket(bucketEvents).Stats().KeyN; return nil })
			if keys < perRound/2 || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if keys >= perRound/2 {
			t.Fatalf("round %d: %d events still in the log", round, keys)
		}
		var size int64
		_ = db.View(func(tx *bolt.Tx) error { size = tx.Size(); return nil })
		sizes = append(sizes, size)
	}
	t.Logf("file size per round: %v; log keys at the end: %d", sizes, keys)
	if last, early := sizes[len(sizes)-1], sizes[2]; last > early*3/2+(1<<20) {
		t.Errorf("file grew from %d to %d bytes under steady load", early, last)
	}
}

// A dead letter survives pruning of its log entry and can still be replayed.
func TestReplayAfterPrune(t *testing.T) {
	secret := mustSecret(t)
	rc, accept := newRejectingReceiver(t, secret, http.StatusUnprocessableEntity)
	db := mustOpenDB(t)
	cfg := testConfig(rc.srv.URL, secret)
	cfg.Retention = 10 * time.Millisecond
	d := newTestDispatcher(t, db, cfg)
	runDispatcher(t, d)
	ev := enqueue(t, db, d, userEvent("user.created", "u1"))[0]
	waitStatus(t, d, 5*time.Second, "a dead letter", func(st TargetStatus) bool { return st.DeadLetters == 1 })
	deadline := time.Now().Add(5 * time.Second)
	for pruned := false; !pruned; {
		_ = db.View(func(tx *bolt.Tx) error { pruned = tx.Bucket(bucketEvents).Get(be64(ev.Seq)) == nil; return nil })
		if time.Now().After(deadline) {
			t.Fatal("log entry of the dead letter not pruned")
		}
		time.Sleep(5 * time.Millisecond)
	}
	accept()
	if n, err := d.Replay("app", []string{ev.ID}); n != 1 || err != nil {
		t.Fatalf("Replay = %d, %v", n, err)
	}
	rc.waitAcked(t, 5*time.Second, []Event{ev})
	rc.mu.Lock()
	last := rc.got[len(rc.got)-1]
	rc.mu.Unlock()
	if string(last.Body) != string(ev.Envelope()) {
		t.Errorf("replayed body = %s, want %s", last.Body, ev.Envelope())
	}
}

func TestTargetsAndSubscriptions(t *testing.T) {
	secret := mustSecret(t)
	users := newReceiver(t, secret, nil)
	all := newReceiver(t, secret, nil)
	db := mustOpenDB(t)
	cfg := testConfig(users.srv.URL, secret)
	cfg.Targets[0].Events = []string{"user.*"}
	cfg.Targets = append(cfg.Targets,
		Target{Name: "all", URL: all.srv.URL, Secrets: []string{secret}},
		Target{Name: "down", URL: "http://" + freePort(t), Secrets: []string{secret}, Events: []string{"group.created"}},
	)
	d := newTestDispatcher(t, db, cfg)
	runDispatcher(t, d)
	evs := enqueue(t, db, d,
		Event{Type: "group.created", Resources: []string{"Group/g1"}, Data: []byte(`{}`)},
		userEvent("user.created", "u1"),
		memberEvent("group.member_added", "g1", "u1"),
		userEvent("user.deactivated", "u1"),
	)
	// A target that is down does not hold the others back.
	all.waitAcked(t, 5*time.Second, evs)
	users.waitAcked(t, 5*time.Second, []Event{evs[1], evs[3]})
	// With nothing left waiting for the user.* target ("app"), any event
	// it took for its own has been sent, and the receiver has recorded it.
	waitStatus(t, d, 5*time.Second, "the user.* target to have nothing waiting", func(st TargetStatus) bool { return st.Backlog == 0 })
	users.mu.Lock()
	if n := len(users.got); n != 2 {
		t.Errorf("user.* target got %d requests, want 2", n)
	}
	users.mu.Unlock()
	sts, err := d.Status()
	if err != nil || len(sts) != 3 || sts[2].Name != "down" || sts[2].Backlog != 1 {
		t.Errorf("Status = %+v, %v", sts, err)
	}
}

// Before Run, Status computes backlog and age from the database.
func TestStatusNotRunning(t *testing.T) {
	secret := mustSecret(t)
	db := mustOpenDB(t)
	cfg := testConfig("http://"+freePort(t)+"/x?token=s3cret", secret)
	d := newTestDispatcher(t, db, cfg)
	enqueue(t, db, nil, userEvent("user.created", "u1"), userEvent("user.created", "u2"))
	sts, err := d.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st := sts[0]; st.Backlog != 2 || st.OldestPendingAge <= 0 || strings.Contains(st.URL, "s3cret") {
		t.Errorf("status = %+v", st)
	}
}

func TestMetrics(t *testing.T) {
	secret := mustSecret(t)
	rc := newReceiver(t, secret, nil)
	db := mustOpenDB(t)
	m := NewMetrics()
	reg := prometheus.NewRegistry()
	for _, c := range m.Collectors() {
		reg.MustRegister(c)
	}
	d, err := NewDispatcher(db, testConfig(rc.srv.URL, secret), testLogger(t), m)
	if err != nil {
		t.Fatal(err)
	}
	runDispatcher(t, d)
	evs := enqueue(t, db, d, userEvent("user.created", "u1"), userEvent("user.created", "u2"), userEvent("user.updated", "u1"))
	rc.waitAcked(t, 5*time.Second, evs)
	waitStatus(t, d, 5*time.Second, "delivered", func(st TargetStatus) bool { return st.Delivered == 3 })
	got := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			var parts []string
			for _, l := range mt.GetLabel() {
				parts = append(parts, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			v := mt.GetCounter().GetValue() + mt.GetGauge().GetValue() + float64(mt.GetHistogram().GetSampleCount())
			got[mf.GetName()+"{"+strings.Join(parts, ",")+"}"] += v
		}
	}
	for k, want := range map[string]float64{
		`scimgate_outbox_events_enqueued_total{type="user.created"}`: 2,
		`scimgate_outbox_events_enqueued_total{type="user.updated"}`: 1,
		`scimgate_outbox_delivered_total{target="app"}`:              3,
		`scimgate_outbox_delivery_latency_seconds{target="app"}`:     3,
	} {
		if got[k] != want {
			t.Errorf("%s = %v, want %v", k, got[k], want)
		}
	}
	for _, k := range []string{`scimgate_outbox_backlog{target="app"}`, `scimgate_outbox_target_paused{target="app"}`} {
		if _, ok := got[k]; !ok {
			t.Errorf("%s missing", k)
		}
	}
}

// Logs never carry URL query strings, bodies or secrets.
func TestLogsRedacted(t *testing.T) {
	secret := mustSecret(t)
	rc := newReceiver(t, secret, func(w http.ResponseWriter, r *http.Request, dl delivery, attempt int) int {
		if attempt == 1 {
			return http.StatusInternalServerError
		}
		if strings.Contains(string(dl.Body), "deleted") {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, "echo jane.doe@example.com")
			return -1
		}
		return 0
	})
	db := mustOpenDB(t)
	var buf syncBuffer
	d, err := NewDispatcher(db, testConfig(rc.srv.URL+"/hooks?token=s3cret", secret),
		slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), nil)
	if err != nil {
		t.Fatal(err)
	}
	runDispatcher(t, d)
	ev := userEvent("user.created", "u1")
	ev.Data = []byte(`{"user":{"email":"jane.doe@example.com"}}`)
	del := userEvent("user.deleted", "u1")
	del.Data = ev.Data
	evs := enqueue(t, db, d, ev, del)
	rc.waitAcked(t, 5*time.Second, evs[:1])
	waitStatus(t, d, 5*time.Second, "a dead letter", func(st TargetStatus) bool { return st.DeadLetters == 1 })
	out := buf.String()
	for _, leak := range []string{"s3cret", "jane.doe", strings.TrimPrefix(secret, "whsec_")} {
		if strings.Contains(out, leak) {
			t.Errorf("log contains %q:\n%s", leak, out)
		}
	}
	for _, want := range []string{evs[0].ID, `"target":"app"`, `"attempt":1`, `"status":500`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Admin calls work without Run; a replay staged offline is delivered by the
// next Run.
func TestReplayWithoutRun(t *testing.T) {
	secret := mustSecret(t)
	rc, accept := newRejectingReceiver(t, secret, http.StatusForbidden)
	db := mustOpenDB(t)
	cfg := testConfig(rc.srv.URL, secret)
	d := newTestDispatcher(t, db, cfg)
	stop := runDispatcher(t, d)
	evs := enqueue(t, db, d, userEvent("user.created", "u1"), userEvent("user.created", "u2"))
	waitStatus(t, d, 5*time.Second, "2 dead letters", func(st TargetStatus) bool { return st.DeadLetters == 2 })
	stop()

	d = newTestDispatcher(t, db, cfg)
	if n, err := d.Replay("app", nil); n != 2 || err != nil {
		t.Fatalf("Replay without Run = %d, %v", n, err)
	}
	sts, err := d.Status()
	if err != nil || sts[0].Backlog != 2 || sts[0].DeadLetters != 0 {
		t.Errorf("status after offline replay = %+v, %v", sts, err)
	}
	accept()
	runDispatcher(t, d)
	rc.waitAcked(t, 5*time.Second, evs)
	waitStatus(t, d, 5*time.Second, "empty backlog", func(st TargetStatus) bool { return st.Backlog == 0 })
}

// A backlog larger than the in-memory window (a long pause) is delivered in
// full and in per-resource order once the target resumes.
func TestBacklogBeyondWindow(t *testing.T) {
	secret := mustSecret(t)
	var mu sync.Mutex
	last := map[string]uint64{}
	resOf := map[uint64]string{}
	var violations []string
	rc := newReceiver(t, secret, func(w http.ResponseWriter, r *http.Request, dl delivery, attempt int) int {
		mu.Lock()
		defer mu.Unlock()
		res := resOf[dl.Seq]
		if dl.Seq < last[res] {
			violations = append(violations, fmt.Sprintf("%s: seq %d after %d", res, dl.Seq, last[res]))
		}
		last[res] = dl.Seq
		return 0
	})
	db := mustOpenDB(t)
	d := newTestDispatcher(t, db, testConfig(rc.srv.URL, secret))
	d.window = 50
	if err := d.Pause("app", "migration"); err != nil {
		t.Fatal(err)
	}
	runDispatcher(t, d)
	var evs []Event
	for i := range 600 {
		evs = append(evs, userEvent("user.updated", fmt.Sprint("u", i%20)))
	}
	stored := enqueue(t, db, d, evs...)
	mu.Lock()
	for _, ev := range stored {
		resOf[ev.Seq] = ev.Resources[0]
	}
	mu.Unlock()
	st := waitStatus(t, d, 5*time.Second, "backlog of 600", func(st TargetStatus) bool { return st.Backlog == 600 })
	_ = db.View(func(tx *bolt.Tx) error {
		if n := targetBucket(tx, "app").Bucket(bucketPending).Stats().KeyN; n > 50 {
			t.Errorf("%d pending entries while paused, want at most the window (50)", n)
		}
		return nil
	})
	if st.OldestPendingAge <= 0 {
		t.Errorf("status = %+v", st)
	}
	if err := d.Resume("app"); err != nil {
		t.Fatal(err)
	}
	rc.waitAcked(t, 10*time.Second, stored)
	waitStatus(t, d, 5*time.Second, "empty backlog", func(st TargetStatus) bool { return st.Backlog == 0 && st.Delivered == 600 })
	mu.Lock()
	defer mu.Unlock()
	for _, v := range violations[:min(10, len(violations))] {
		t.Error(v)
	}
}

// newRejectingReceiver answers every delivery with status until accept is
// called, and 2xx from then on.
func newRejectingReceiver(t *testing.T, secret string, status int) (rc *receiver, accept func()) {
	var mu sync.Mutex
	reject := true
	rc = newReceiver(t, secret, func(w http.ResponseWriter, r *http.Request, dl delivery, attempt int) int {
		mu.Lock()
		defer mu.Unlock()
		if reject {
			return status
		}
		return 0
	})
	return rc, func() {
		mu.Lock()
		reject = false
		mu.Unlock()
	}
}
