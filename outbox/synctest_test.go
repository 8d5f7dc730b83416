package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Timer-driven behaviour runs in a synctest bubble: a real bolt file, a
// SenderFunc instead of HTTP (no sockets in bubbles), and a fake clock that
// makes the schedule exact.

// attemptLog records when each event was attempted, relative to t0.
type attemptLog struct {
	mu sync.Mutex
	t0 time.Time
	at map[string][]time.Duration
}

func newAttemptLog() *attemptLog {
	return &attemptLog{t0: time.Now(), at: map[string][]time.Duration{}}
}

// reset makes now the origin.
func (a *attemptLog) reset() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.t0 = time.Now()
}

func (a *attemptLog) add(id string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.at[id] = append(a.at[id], time.Since(a.t0))
	return len(a.at[id])
}

func (a *attemptLog) get(id string) []time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.at[id])
}

func pendingState(t *testing.T, db *bolt.DB, seq uint64) (deliveryState, bool) {
	t.Helper()
	var st deliveryState
	var ok bool
	err := db.View(func(tx *bolt.Tx) error {
		v := targetBucket(tx, "app").Bucket(bucketPending).Get(be64(seq))
		if v == nil {
			return nil
		}
		ok = true
		return json.Unmarshal(v, &st)
	})
	if err != nil {
		t.Fatal(err)
	}
	return st, ok
}

func syncConfig() Config {
	cfg := testConfig("http://127.0.0.1:1/unused", "whsec_"+"QUJDREVGR0hJSktMTU5PUFFSU1RVVldY")
	cfg.Backoff = []time.Duration{0, time.Second, 2 * time.Second, 4 * time.Second}
	return cfg
}

func TestBackoffSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := mustOpenDB(t)
		d := newTestDispatcher(t, db, syncConfig())
		log := newAttemptLog()
		d.targets[0].sender = SenderFunc(func(ctx context.Context, ev Event) error {
			if log.add(ev.ID) <= 4 {
				return errors.New("connection refused")
			}
			return nil
		})
		runDispatcher(t, d)
		log.reset()
		ev := enqueue(t, db, d, userEvent("user.created", "u1"))[0]

		time.Sleep(2500 * time.Millisecond)
		synctest.Wait()
		st, ok := pendingState(t, db, ev.Seq)
		if !ok || st.Attempts != 2 || !st.NextAttemptAt.Equal(log.t0.Add(3*time.Second)) ||
			!st.FirstAttemptAt.Equal(log.t0) || st.LastError != "connection refused" {
			t.Errorf("persisted state after 2 failures = %+v, want 2 attempts, next at +3s", st)
		}

		time.Sleep(time.Minute)
		synctest.Wait()
		want := []time.Duration{0, time.Second, 3 * time.Second, 7 * time.Second, 11 * time.Second}
		if got := log.get(ev.ID); !slices.Equal(got, want) {
			t.Errorf("attempts at %v, want %v (schedule 0,1s,2s,4s with the last repeating)", got, want)
		}
		if _, ok := pendingState(t, db, ev.Seq); ok {
			t.Error("delivered event still pending")
		}
	})
}

// A restart resumes the persisted schedule instead of retrying at once.
func TestBackoffSurvivesRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := mustOpenDB(t)
		cfg := syncConfig()
		cfg.Backoff = []time.Duration{0, 10 * time.Second}
		log := newAttemptLog()
		send := SenderFunc(func(ctx context.Context, ev Event) error {
			if log.add(ev.ID) == 1 {
				return errors.New("boom")
			}
			return nil
		})
		d := newTestDispatcher(t, db, cfg)
		d.targets[0].sender = send
		stop := runDispatcher(t, d)
		log.reset()
		ev := enqueue(t, db, d, userEvent("user.created", "u1"))[0]
		time.Sleep(3 * time.Second)
		stop()

		d = newTestDispatcher(t, db, cfg)
		d.targets[0].sender = send
		runDispatcher(t, d)
		time.Sleep(time.Minute)
		synctest.Wait()
		if got, want := log.get(ev.ID), []time.Duration{0, 10 * time.Second}; !slices.Equal(got, want) {
			t.Errorf("attempts at %v, want %v", got, want)
		}
	})
}

func TestMaxAgeDeadLetters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := mustOpenDB(t)
		cfg := syncConfig()
		cfg.Backoff = []time.Duration{0, 3 * time.Second}
		cfg.MaxAttempts, cfg.MaxAge = 0, 10*time.Second
		d := newTestDispatcher(t, db, cfg)
		log := newAttemptLog()
		d.targets[0].sender = SenderFunc(func(ctx context.Context, ev Event) error {
			log.add(ev.ID)
			return &StatusError{StatusCode: 500, Body: "oops"}
		})
		runDispatcher(t, d)
		log.reset()
		ev := enqueue(t, db, d, userEvent("user.created", "u1"))[0]
		time.Sleep(time.Hour)
		synctest.Wait()
		want := []time.Duration{0, 3 * time.Second, 6 * time.Second, 9 * time.Second}
		if got := log.get(ev.ID); !slices.Equal(got, want) {
			t.Errorf("attempts at %v, want %v", got, want)
		}
		dl, err := d.DeadLetter("app", ev.ID)
		if err != nil {
			t.Fatal(err)
		}
		if dl.Attempts != 4 || !dl.FirstAttemptAt.Equal(log.t0) || !dl.LastAttemptAt.Equal(log.t0.Add(9*time.Second)) ||
			dl.LastStatus != 500 || dl.ResponseBody != "oops" {
			t.Errorf("dead letter = %+v", dl)
		}
	})
}

// Retry-After is clamped to retry_after_max and holds the whole target.
func TestRetryAfterHoldsTarget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, log, a, b := rateLimited(t, 30*time.Second)
		if got, want := log.get(a.ID), []time.Duration{0, 30 * time.Second}; !slices.Equal(got, want) {
			t.Errorf("rate-limited event attempted at %v, want %v", got, want)
		}
		if got, want := log.get(b.ID), []time.Duration{30 * time.Second}; !slices.Equal(got, want) {
			t.Errorf("other event attempted at %v, want %v (target held)", got, want)
		}
	})
}

// rateLimited runs a dispatcher (inside a synctest bubble) whose receiver
// answers the first attempt of a user.created 429 with Retry-After of an
// hour, capped at retryAfterMax. It enqueues that event (a), a second later
// an unrelated one (b), and returns a minute after that, once the bubble is
// idle.
func rateLimited(t *testing.T, retryAfterMax time.Duration) (d *Dispatcher, log *attemptLog, a, b Event) {
	t.Helper()
	db := mustOpenDB(t)
	cfg := syncConfig()
	cfg.RetryAfterMax = retryAfterMax
	d = newTestDispatcher(t, db, cfg)
	log = newAttemptLog()
	d.targets[0].sender = SenderFunc(func(ctx context.Context, ev Event) error {
		if log.add(ev.ID) == 1 && ev.Type == "user.created" {
			return &StatusError{StatusCode: 429, RetryAfter: time.Hour}
		}
		return nil
	})
	runDispatcher(t, d)
	log.reset()
	a = enqueue(t, db, d, userEvent("user.created", "u1"))[0]
	time.Sleep(time.Second)
	b = enqueue(t, db, d, userEvent("user.updated", "u2"))[0]
	time.Sleep(time.Minute)
	synctest.Wait()
	return d, log, a, b
}

// Per resource, one event at a time and in order; unrelated resources up to
// the concurrency.
func TestOrderAndConcurrency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := mustOpenDB(t)
		cfg := syncConfig()
		cfg.Concurrency = 4
		d := newTestDispatcher(t, db, cfg)
		type sent struct {
			res string
			seq uint64
		}
		var mu sync.Mutex
		var order []sent
		var lastDone time.Time
		inFlight, maxIn := 0, 0
		d.targets[0].sender = SenderFunc(func(ctx context.Context, ev Event) error {
			mu.Lock()
			inFlight++
			maxIn = max(maxIn, inFlight)
			mu.Unlock()
			time.Sleep(time.Second)
			mu.Lock()
			inFlight--
			order = append(order, sent{ev.Resources[0], ev.Seq})
			lastDone = time.Now()
			mu.Unlock()
			return nil
		})
		runDispatcher(t, d)
		var evs []Event
		for range 3 {
			for u := range 8 {
				evs = append(evs, userEvent("user.updated", fmt.Sprint("u", u)))
			}
		}
		start := time.Now()
		stored := enqueue(t, db, d, evs...)
		time.Sleep(time.Minute)
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		if len(order) != len(stored) {
			t.Fatalf("%d delivered, want %d", len(order), len(stored))
		}
		if maxIn != 4 {
			t.Errorf("max %d in flight, want the concurrency 4", maxIn)
		}
		last := map[string]uint64{}
		for _, o := range order {
			if o.seq < last[o.res] {
				t.Errorf("%s seq %d delivered after seq %d", o.res, o.seq, last[o.res])
			}
			last[o.res] = o.seq
		}
		// 24 one-second sends, 4 at a time, 3 per resource: 6 seconds.
		if took := lastDone.Sub(start); took != 6*time.Second {
			t.Errorf("took %v, want 6s", took)
		}
	})
}

func TestPauseTargetError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := mustOpenDB(t)
		d := newTestDispatcher(t, db, syncConfig())
		var gone sync.Map
		gone.Store("on", true)
		log := newAttemptLog()
		d.targets[0].sender = SenderFunc(func(ctx context.Context, ev Event) error {
			log.add(ev.ID)
			if v, _ := gone.Load("on"); v.(bool) {
				return PauseTarget(&StatusError{StatusCode: 410})
			}
			return nil
		})
		runDispatcher(t, d)
		log.reset()
		ev := enqueue(t, db, d, userEvent("user.created", "u1"))[0]
		time.Sleep(time.Hour)
		synctest.Wait()
		if n := len(log.get(ev.ID)); n != 1 {
			t.Errorf("%d attempts while paused, want 1", n)
		}
		sts, _ := d.Status()
		if !sts[0].Paused || sts[0].Backlog != 1 {
			t.Errorf("status = %+v", sts[0])
		}
		if st, ok := pendingState(t, db, ev.Seq); !ok || st.Attempts != 0 {
			t.Errorf("pending = %+v, %v; want pending with the attempt not counted", st, ok)
		}
		gone.Store("on", false)
		if err := d.Resume("app"); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got := log.get(ev.ID); len(got) != 2 || got[1] != time.Hour {
			t.Errorf("attempts at %v, want a second one right at resume (1h)", got)
		}
	})
}

func TestBackoffJitter(t *testing.T) {
	d := &Dispatcher{cfg: Config{Backoff: []time.Duration{0, 10 * time.Second, time.Minute}}, jitter: 0.2}
	for range 1000 {
		if w := d.backoff(0); w != 0 {
			t.Fatalf("backoff(0) = %v, want 0", w)
		}
		if w := d.backoff(1); w < 8*time.Second || w > 12*time.Second {
			t.Fatalf("backoff(1) = %v, want 10s ±20%%", w)
		}
		if w := d.backoff(7); w < 48*time.Second || w > 72*time.Second {
			t.Fatalf("backoff(7) = %v, want the last entry (1m) ±20%%", w)
		}
	}
}
