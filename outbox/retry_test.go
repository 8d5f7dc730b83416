package outbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// A receiver that keeps failing sees exactly one request per
// attempt — max_attempts requests in all — spaced by the schedule, whatever
// the kind of failure.
func TestOneRequestPerAttempt(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail func(w http.ResponseWriter) int
	}{
		{"503", func(http.ResponseWriter) int { return http.StatusServiceUnavailable }},
		{"500", func(http.ResponseWriter) int { return http.StatusInternalServerError }},
		{"502", func(http.ResponseWriter) int { return http.StatusBadGateway }},
		{"408", func(http.ResponseWriter) int { return http.StatusRequestTimeout }},
		{"429", func(http.ResponseWriter) int { return http.StatusTooManyRequests }},
		{"429 with a short Retry-After", func(w http.ResponseWriter) int {
			w.Header().Set("Retry-After", "0")
			return http.StatusTooManyRequests
		}},
		{"connection reset", func(w http.ResponseWriter) int {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				if tc, ok := conn.(*net.TCPConn); ok {
					_ = tc.SetLinger(0)
				}
				conn.Close()
			}
			return -1
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			secret := mustSecret(t)
			rc := newReceiver(t, secret, func(w http.ResponseWriter, r *http.Request, dl delivery, attempt int) int {
				return tc.fail(w)
			})
			db := mustOpenDB(t)
			cfg := testConfig(rc.srv.URL, secret)
			cfg.MaxAttempts = 5
			cfg.Backoff = []time.Duration{0, 40 * time.Millisecond}
			d := newTestDispatcher(t, db, cfg)
			runDispatcher(t, d)
			ev := enqueue(t, db, d, userEvent("user.created", "u1"))[0]
			waitStatus(t, d, 10*time.Second, "a dead letter", func(st TargetStatus) bool { return st.DeadLetters == 1 })
			dl, err := d.DeadLetter("app", ev.ID)
			if err != nil || dl.Attempts != 5 {
				t.Fatalf("DeadLetter = %+v, %v; want 5 attempts", dl, err)
			}
			// Deliberately real time: a sixth attempt, the defect, would come
			// 40 ms after the fifth (real HTTP, so no synctest bubble).
			time.Sleep(100 * time.Millisecond)
			rc.mu.Lock()
			defer rc.mu.Unlock()
			if n := rc.attempts[ev.ID]; n != 5 {
				t.Errorf("receiver saw %d requests for max_attempts 5, want 5", n)
			}
			for i := 1; i < len(rc.got); i++ {
				if gap := rc.got[i].At.Sub(rc.got[i-1].At); gap < 35*time.Millisecond {
					t.Errorf("request %d came %v after the previous one, want the 40ms backoff", i, gap)
				}
			}
			for _, b := range rc.badSig {
				t.Errorf("bad signature: %s", b)
			}
		})
	}
}

// After an outage, events backed off for minutes are delivered at once by
// RetryNow (synctest: the clock is exact).
func TestRetryNowAfterOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := mustOpenDB(t)
		cfg := syncConfig()
		cfg.Backoff = []time.Duration{0, 10 * time.Minute}
		d := newTestDispatcher(t, db, cfg)
		log := newAttemptLog()
		var down atomic.Bool
		down.Store(true)
		d.targets[0].sender = SenderFunc(func(ctx context.Context, ev Event) error {
			log.add(ev.ID)
			if down.Load() {
				return errors.New("connection refused")
			}
			return nil
		})
		runDispatcher(t, d)
		log.reset()
		evs := enqueue(t, db, d, userEvent("user.created", "u1"), userEvent("user.created", "u2"), userEvent("user.updated", "u1"))
		time.Sleep(time.Minute)
		synctest.Wait()
		st, ok := pendingState(t, db, evs[0].Seq)
		if !ok || !st.NextAttemptAt.Equal(log.t0.Add(10*time.Minute)) {
			t.Fatalf("pending state = %+v, %v; want the next attempt at +10m", st, ok)
		}

		down.Store(false)
		if _, err := d.RetryNow("app", []string{evs[0].ID, "evt_nope", "evt_gone"}); !errors.Is(err, ErrNotFound) ||
			!strings.Contains(err.Error(), "evt_nope") || !strings.Contains(err.Error(), "evt_gone") || strings.Contains(err.Error(), evs[0].ID) {
			t.Errorf("RetryNow(unknown ids) = %v, want ErrNotFound naming evt_gone and evt_nope only", err)
		}
		synctest.Wait()
		if got := log.get(evs[0].ID); len(got) != 1 {
			t.Errorf("attempts %v after a refused RetryNow, want it to change nothing", got)
		}
		n, err := d.RetryNow("app", nil)
		if err != nil || n != 3 {
			t.Fatalf("RetryNow = %d, %v; want 3", n, err)
		}
		synctest.Wait()
		if got := log.get(evs[0].ID); !slices.Equal(got, []time.Duration{0, time.Minute}) {
			t.Errorf("u1 created attempted at %v, want [0 1m]: at once after RetryNow, not at 10m", got)
		}
		if got := log.get(evs[1].ID); !slices.Equal(got, []time.Duration{0, time.Minute}) {
			t.Errorf("u2 attempted at %v, want [0 1m]", got)
		}
		if got := log.get(evs[2].ID); !slices.Equal(got, []time.Duration{time.Minute}) {
			t.Errorf("u1 updated attempted at %v, want [1m], right after the event before it", got)
		}
		for _, ev := range evs {
			if _, ok := pendingState(t, db, ev.Seq); ok {
				t.Errorf("event %d still pending", ev.Seq)
			}
		}
	})
}

// RetryNow lifts a Retry-After hold on the target.
func TestRetryNowClearsRetryAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d, log, a, b := rateLimited(t, time.Hour)
		if got := log.get(b.ID); len(got) != 0 {
			t.Fatalf("held target attempted %v", got)
		}
		if _, err := d.RetryNow("app", []string{a.ID}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		at := time.Minute + time.Second
		if got := log.get(a.ID); !slices.Equal(got, []time.Duration{0, at}) {
			t.Errorf("rate-limited event attempted at %v, want [0 %v]", got, at)
		}
		if got := log.get(b.ID); !slices.Equal(got, []time.Duration{at}) {
			t.Errorf("other event attempted at %v, want [%v]: the hold is lifted", got, at)
		}
	})
}

// Without Run, RetryNow stores the new attempt times; the next Run attempts
// at once. Resume does the same and says how many.
func TestRetryNowWithoutRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := mustOpenDB(t)
		cfg := syncConfig()
		cfg.Backoff = []time.Duration{0, time.Hour}
		log := newAttemptLog()
		var down atomic.Bool
		down.Store(true)
		send := SenderFunc(func(ctx context.Context, ev Event) error {
			log.add(ev.ID)
			if down.Load() {
				return errors.New("connection refused")
			}
			return nil
		})
		d := newTestDispatcher(t, db, cfg)
		d.targets[0].sender = send
		stop := runDispatcher(t, d)
		log.reset()
		evs := enqueue(t, db, d, userEvent("user.created", "u1"), userEvent("user.created", "u2"))
		time.Sleep(time.Minute)
		synctest.Wait()
		stop()

		if n, err := d.RetryNow("app", []string{evs[0].ID}); err != nil || n != 1 {
			t.Fatalf("RetryNow without Run = %d, %v", n, err)
		}
		if st, _ := pendingState(t, db, evs[0].Seq); !st.NextAttemptAt.Equal(log.t0.Add(time.Minute)) {
			t.Errorf("stored next attempt %v, want now (%v)", st.NextAttemptAt, log.t0.Add(time.Minute))
		}
		if st, _ := pendingState(t, db, evs[1].Seq); !st.NextAttemptAt.Equal(log.t0.Add(time.Hour)) {
			t.Errorf("the other event's next attempt moved to %v", st.NextAttemptAt)
		}
		if err := d.Pause("app", "maintenance"); err != nil {
			t.Fatal(err)
		}
		if n, err := d.ResumeRetry("app"); err != nil || n != 2 {
			t.Fatalf("ResumeRetry without Run = %d, %v; want 2", n, err)
		}
		down.Store(false)
		time.Sleep(time.Minute)
		d = newTestDispatcher(t, db, cfg)
		d.targets[0].sender = send
		runDispatcher(t, d)
		synctest.Wait()
		for _, ev := range evs {
			if got := log.get(ev.ID); !slices.Equal(got, []time.Duration{0, 2 * time.Minute}) {
				t.Errorf("attempts at %v, want [0 2m]: at once when Run starts", got)
			}
		}
	})
}

// The same with a real receiver: an outage backs events off for minutes;
// RetryNow delivers them within moments once the receiver is back.
func TestRetryNowRealReceiver(t *testing.T) {
	secret := mustSecret(t)
	rc, accept := newRejectingReceiver(t, secret, http.StatusServiceUnavailable)
	db := mustOpenDB(t)
	cfg := testConfig(rc.srv.URL, secret)
	cfg.Backoff = []time.Duration{0, 10 * time.Minute}
	d := newTestDispatcher(t, db, cfg)
	runDispatcher(t, d)
	var evs []Event
	for i := range 10 {
		evs = append(evs, userEvent("user.created", fmt.Sprint("u", i)))
	}
	evs = enqueue(t, db, d, evs...)
	waitStatus(t, d, 5*time.Second, "10 failed attempts", func(st TargetStatus) bool { return st.LastStatus == 503 })
	rc.waitFor(t, 5*time.Second, "a first attempt of each", func() bool { return len(rc.got) == 10 })
	accept()
	start := time.Now()
	if n, err := d.RetryNow("app", nil); err != nil || n != 10 {
		t.Fatalf("RetryNow = %d, %v", n, err)
	}
	rc.waitAcked(t, 5*time.Second, evs)
	t.Logf("10 backed-off events delivered %v after RetryNow", time.Since(start).Round(time.Millisecond))
}

// The race TestRetryNowRealReceiver hit now and then: RetryNow while the
// first attempts are under way, and they then fail. Their next attempt is
// due at once, not after the backoff (10 minutes here).
func TestRetryNowDuringAttempt(t *testing.T) {
	secret := mustSecret(t)
	release := make(chan struct{})
	arrived := make(chan struct{}, 10)
	rc := newReceiver(t, secret, func(w http.ResponseWriter, r *http.Request, dl delivery, attempt int) int {
		if attempt == 1 {
			arrived <- struct{}{}
			<-release
			return http.StatusServiceUnavailable
		}
		return 0
	})
	db := mustOpenDB(t)
	cfg := testConfig(rc.srv.URL, secret)
	cfg.Backoff = []time.Duration{0, 10 * time.Minute}
	d := newTestDispatcher(t, db, cfg)
	runDispatcher(t, d)
	var evs []Event
	for i := range 3 {
		evs = append(evs, userEvent("user.created", fmt.Sprint("u", i)))
	}
	evs = enqueue(t, db, d, evs...)
	for range evs {
		select {
		case <-arrived:
		case <-time.After(5 * time.Second):
			t.Fatal("the first attempts did not arrive")
		}
	}
	if n, err := d.RetryNow("app", nil); err != nil || n != len(evs) {
		t.Fatalf("RetryNow = %d, %v; want %d (in flight)", n, err, len(evs))
	}
	close(release) // the attempts under way fail now, after RetryNow
	rc.waitAcked(t, 5*time.Second, evs)
}

// A refusal that pauses the target, from an attempt that started before
// the operator's Resume, does not pause it again: the attempt was made
// with what the operator has since fixed (a NATS password file read before
// the fix). It is retried, and every event is delivered.
func TestStaleRefusalAfterResumeDoesNotPause(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := mustOpenDB(t)
		cfg := syncConfig()
		cfg.Backoff = []time.Duration{0, time.Second}
		d := newTestDispatcher(t, db, cfg)
		var fixed atomic.Bool
		release := make(chan struct{})
		d.targets[0].sender = SenderFunc(func(ctx context.Context, ev Event) error {
			if fixed.Load() {
				return nil
			}
			if ev.Resources[0] == "User/u2" {
				<-release // refused, but only once the operator has resumed
			}
			return PauseTarget(errors.New("refused the credentials"))
		})
		runDispatcher(t, d)
		enqueue(t, db, d, userEvent("user.created", "u1"), userEvent("user.created", "u2"))
		synctest.Wait()
		first := func() TargetStatus {
			sts, err := d.Status()
			if err != nil || len(sts) == 0 {
				t.Fatalf("status: %v", err)
			}
			return sts[0]
		}
		if st := first(); !st.Paused {
			t.Fatalf("not paused after the first refusal: %+v", st)
		}
		fixed.Store(true)
		if err := d.Resume("app"); err != nil {
			t.Fatal(err)
		}
		close(release)
		synctest.Wait()
		time.Sleep(2 * time.Second) // past the backoff of the stale attempt's retry
		synctest.Wait()
		st := first()
		if st.Paused || st.Delivered != 2 || st.Backlog != 0 {
			t.Errorf("after Resume and a refusal from an attempt started before it: paused %v (%q), delivered %d, backlog %d; want both delivered",
				st.Paused, st.PausedReason, st.Delivered, st.Backlog)
		}
	})
}
