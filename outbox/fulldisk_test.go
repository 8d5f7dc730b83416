//go:build linux

package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
)

// mountTmpfs mounts a tmpfs of the given size (e.g. "16m") on a fresh
// directory, unmounted when the test ends. Mounting needs root; elsewhere
// the test is skipped, saying why.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Skipf("filling a disk needs a small tmpfs, and mounting one failed (run the test as root): %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fillDisk writes a file until the file system holding dir is full and
// returns a func that removes it.
func fillDisk(t *testing.T, dir string) (free func()) {
	t.Helper()
	name := filepath.Join(dir, "filler")
	f, err := os.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{1 << 20, 4 << 10, 512} {
		buf := make([]byte, n)
		for {
			if _, err := f.Write(buf); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatalf("fill %s: %v", dir, err)
				}
				break
			}
		}
	}
	if err := f.Close(); err != nil && !errors.Is(err, syscall.ENOSPC) {
		t.Fatal(err)
	}
	return func() {
		if err := os.Remove(name); err != nil {
			t.Fatal(err)
		}
	}
}

// waitRunning polls cond until it holds, failing the test after timeout or
// when Run (done) returns meanwhile.
func waitRunning(t *testing.T, timeout time.Duration, what string, done <-chan error, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		select {
		case err := <-done:
			t.Fatalf("Run returned while waiting for %s: %v", what, err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A full disk with deliveries in flight. The outcomes that
// cannot be recorded stay in memory, Run keeps running and reports the
// failure through Healthy (for /readyz) and a gauge, starts no new attempt
// and fails admin writes at once; when space returns it records them and
// goes on, and nothing was sent twice. A restart on a full disk starts too.
// Before, the failed commit ended Run (and serve exited).
func TestFullDiskKeepsRunning(t *testing.T) {
	dir := mountTmpfs(t, "16m")
	// The application's options (gateway/store.BoltOptions): the file
	// grows sparse, and a full disk refuses the writes into it.
	db, err := bolt.Open(filepath.Join(dir, "scimgate.db"), 0o600, &bolt.Options{Timeout: time.Second,
		NoFreelistSync: true, FreelistType: bolt.FreelistMapType, InitialMmapSize: 256 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeDB(t, db) })
	if err := db.Update(InitBuckets); err != nil {
		t.Fatal(err)
	}

	secret := mustSecret(t)
	release := make(chan struct{})
	var held atomic.Int32
	// The app refuses each event (422): every outcome is a dead letter, a
	// copy of the event that needs new pages in the file.
	rc := newReceiver(t, secret, func(w http.ResponseWriter, r *http.Request, dl delivery, attempt int) int {
		held.Add(1)
		<-release
		return http.StatusUnprocessableEntity
	})
	cfg := testConfig(rc.srv.URL, secret)
	cfg.Concurrency = 4
	m := NewMetrics()
	reg := prometheus.NewRegistry()
	for _, c := range m.Collectors() {
		reg.MustRegister(c)
	}
	d, err := NewDispatcher(db, cfg, testLogger(t), m)
	if err != nil {
		t.Fatal(err)
	}
	d.jitter = 0
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	waitRunning(t, 5*time.Second, "Run ready", done, d.Ready)

	big := json.RawMessage(fmt.Sprintf(`{"blob":%q}`, strings.Repeat("x", 200<<10)))
	var evs []Event
	for i := range 16 {
		evs = append(evs, Event{Type: "user.updated", Resources: []string{fmt.Sprint("User/u", i)}, Data: big})
	}
	stored := enqueue(t, db, d, evs...)
	waitRunning(t, 5*time.Second, "4 deliveries in flight", done, func() bool { return held.Load() == 4 })

	free := fillDisk(t, dir)
	close(release)
	waitRunning(t, 30*time.Second, "Healthy to report the failed commit", done, func() bool { return d.Healthy() != nil })
	if err := d.Healthy(); !strings.Contains(err.Error(), "no space left on device") {
		t.Errorf("Healthy() = %v, want it to name the full disk", err)
	}
	if got := gather(t, reg)["scimgate_outbox_commit_failing{}"]; got != 1 {
		t.Errorf("scimgate_outbox_commit_failing = %v while failing, want 1", got)
	}
	if err := d.Pause("app", "test"); err == nil {
		t.Error("Pause on a full disk succeeded")
	}
	// A transport's state update (batched with the outcomes) fails at once
	// while nothing can be recorded: its caller retries; it does not wait
	// with the held outcomes (Run's shutdown would wait on it).
	stateErr := make(chan error, 1)
	go func() {
		stateErr <- d.State("app").Update(func(tx *StateTx) error { return tx.Put("ids", []byte("User/x"), []byte(strings.Repeat("y", 64<<10))) })
	}()
	select {
	case err := <-stateErr:
		if err == nil {
			t.Error("a state update of 64 KiB committed on a full disk")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a state update waited on a full disk for 10 s")
	}
	// The loop keeps running (Status answers from memory) and starts no
	// new attempt while nothing can be recorded: at most those already
	// dispatched when the failure was seen arrive meanwhile, where the app,
	// answering at once now, would otherwise get all of them.
	before := held.Load()
	if _, err := d.Status(); err != nil {
		t.Errorf("Status on a full disk: %v", err)
	}
	select {
	case err := <-done:
		t.Fatalf("Run returned on a full disk: %v", err)
	case <-time.After(300 * time.Millisecond): // several tries of the commit
	}
	if n := held.Load(); n > before+int32(cfg.Concurrency) || n == int32(len(stored)) {
		t.Errorf("%d of %d events attempted on a full disk (%d when the failure was reported), want no new attempt", n, len(stored), before)
	}
	if !d.Ready() {
		t.Error("Run is not Ready although it runs")
	}

	free()
	waitRunning(t, 30*time.Second, "recovery", done, func() bool { return d.Healthy() == nil })
	waitRunning(t, 30*time.Second, "every event dead-lettered", done, func() bool {
		dls, err := d.DeadLetters("app", 0, 100) // read from the file: recorded
		return err == nil && len(dls) == len(stored)
	})
	if got := gather(t, reg)["scimgate_outbox_commit_failing{}"]; got != 0 {
		t.Errorf("scimgate_outbox_commit_failing = %v after recovery, want 0", got)
	}
	if err := d.State("app").Update(func(tx *StateTx) error { return tx.Put("ids", []byte("User/x"), []byte("1")) }); err != nil {
		t.Errorf("a state update after recovery: %v", err)
	}
	for _, ev := range stored {
		if n := rc.attemptsOf(ev.ID); n != 1 {
			t.Errorf("event %d attempted %d times, want 1", ev.Seq, n)
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}

	// A restart on a full disk: Run starts (or waits for room, reporting
	// it, if even its first transaction needs new pages: that depends on
	// the free pages the file holds), and delivers once there is room.
	if n, err := d.Replay("app", nil); n != len(stored) || err != nil {
		t.Fatalf("Replay = %d, %v", n, err)
	}
	rc.mu.Lock()
	rc.script = nil // the app takes them now
	rc.mu.Unlock()
	free = fillDisk(t, dir)
	d = newTestDispatcher(t, db, cfg)
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	done = make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	waitRunning(t, 30*time.Second, "Run on a full disk", done, func() bool { return d.Ready() || d.Healthy() != nil })
	free()
	waitRunning(t, 30*time.Second, "the replayed events delivered and recorded", done, func() bool {
		sts, err := d.Status()
		return err == nil && d.Healthy() == nil && d.Ready() && sts[0].DeadLetters == 0 && sts[0].Backlog == 0 && sts[0].Delivered == uint64(len(stored))
	})
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
}

// At start: Run's first transaction (the delivery state
// of targets configured for the first time) meets a full disk. Run waits
// for room, not Ready, with Healthy saying why, and starts when space
// returns. Before, Run returned the error and serve exited, at every start.
func TestFullDiskAtStart(t *testing.T) {
	dir := mountTmpfs(t, "8m")
	db, err := bolt.Open(filepath.Join(dir, "scimgate.db"), 0o600, &bolt.Options{Timeout: time.Second,
		NoFreelistSync: true, FreelistType: bolt.FreelistMapType, InitialMmapSize: 256 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeDB(t, db) })
	if err := db.Update(InitBuckets); err != nil {
		t.Fatal(err)
	}
	secret := mustSecret(t)
	rc := newReceiver(t, secret, nil)
	cfg := testConfig(rc.srv.URL, secret)
	for i := range 200 { // enough new state buckets to need pages the file does not have yet
		cfg.Targets = append(cfg.Targets, Target{Name: fmt.Sprintf("t%03d", i), URL: rc.srv.URL, Secrets: []string{secret}, Events: []string{"none"}})
	}
	d := newTestDispatcher(t, db, cfg)
	free := fillDisk(t, dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	waitRunning(t, 30*time.Second, "Healthy to report the refused start", done, func() bool { return d.Healthy() != nil })
	if err := d.Healthy(); !strings.Contains(err.Error(), "load delivery state") || !strings.Contains(err.Error(), "no space left on device") {
		t.Errorf("Healthy() = %v, want it to name the start and the full disk", err)
	}
	if d.Ready() {
		t.Error("Ready before the delivery state could be loaded")
	}
	free()
	waitRunning(t, 30*time.Second, "Run ready once there is room", done, func() bool { return d.Ready() && d.Healthy() == nil })
	evs := enqueue(t, db, d, userEvent("user.created", "u1"))
	rc.waitAcked(t, 5*time.Second, evs)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
}
