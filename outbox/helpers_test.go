package outbox

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// openDB opens (or creates) a bolt file and runs InitBuckets. The caller
// closes it, or uses mustOpenDB.
func openDB(t testing.TB, path string) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(InitBuckets); err != nil {
		t.Fatal(err)
	}
	return db
}

// closeDB checks the file's consistency and closes it.
func closeDB(t testing.TB, db *bolt.DB) {
	t.Helper()
	err := db.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() { // drain: Check's channel is unbuffered
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	})
	if err != nil {
		t.Errorf("bolt consistency: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Errorf("close bolt: %v", err)
	}
}

// mustOpenDB returns a fresh bolt file that is checked and closed when the
// test ends.
func mustOpenDB(t testing.TB) *bolt.DB {
	t.Helper()
	db := openDB(t, filepath.Join(t.TempDir(), "scimgate.db"))
	t.Cleanup(func() { closeDB(t, db) })
	return db
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func mustSecret(t testing.TB) string {
	t.Helper()
	s, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testConfig returns a config with one target "app" and fast retries.
func testConfig(url string, secrets ...string) Config {
	cfg := DefaultConfig()
	cfg.Backoff = []time.Duration{0, 20 * time.Millisecond, 50 * time.Millisecond}
	cfg.MaxAttempts = 100
	cfg.MaxAge = time.Hour
	cfg.RetryAfterMax = time.Second
	cfg.Concurrency = 8
	cfg.PollInterval = 50 * time.Millisecond
	cfg.FeedRetention = 0 // pruning tests set Retention alone
	cfg.Targets = []Target{{Name: "app", URL: url, Secrets: secrets, Timeout: 2 * time.Second}}
	cfg.Transports = maps.Clone(TestTransports)
	return cfg
}

// TestTransports are the real transports (outbox/webhook, outbox/nats,
// outbox/kafka) by type, for the engine's tests that deliver through them.
// Package outbox cannot import them (they import it), so transports_test.go,
// in package outbox_test and linked into the same test binary, fills this
// map in its init, before any test runs.
var TestTransports = map[string]Transport{}

func newTestDispatcher(t testing.TB, db *bolt.DB, cfg Config) *Dispatcher {
	t.Helper()
	d, err := NewDispatcher(db, cfg, testLogger(t), NewMetrics())
	if err != nil {
		t.Fatalf("NewDispatcher: %v", err)
	}
	d.jitter = 0
	return d
}

// runDispatcher runs d until the returned stop is called (or the test ends)
// and checks that Run returned context.Canceled.
func runDispatcher(t testing.TB, d *Dispatcher) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for !d.Ready() {
		select {
		case err := <-done:
			t.Fatalf("Run returned early: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("dispatcher not ready")
		}
		time.Sleep(time.Millisecond)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("Run = %v, want context.Canceled", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// enqueue appends events in one transaction and notifies d on commit.
func enqueue(t testing.TB, db *bolt.DB, d *Dispatcher, evs ...Event) []Event {
	t.Helper()
	out := make([]Event, 0, len(evs))
	err := db.Update(func(tx *bolt.Tx) error {
		out = out[:0]
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
		return nil
	})
	if err != nil {
		t.Fatalf("enqueue: %v", err)
	}
	return out
}

func userEvent(typ, id string) Event {
	return Event{
		Type:      typ,
		Resources: []string{"User/" + id},
		Data:      json.RawMessage(fmt.Sprintf(`{"user":{"id":%q,"version":1}}`, id)),
	}
}

func memberEvent(typ, group, user string) Event {
	return Event{
		Type:      typ,
		Resources: []string{"Group/" + group, "User/" + user},
		Data:      json.RawMessage(fmt.Sprintf(`{"group":{"id":%q},"user":{"id":%q}}`, group, user)),
	}
}

// specVerify is an independent Standard Webhooks verifier, written from the
// spec text: the signed content is "{msg_id}.{timestamp}.{payload}", the key is
// the base64 decoding of the secret without its "whsec_" prefix, the signature
// is base64(HMAC-SHA256), and the header lists space-delimited "v1,<sig>".
func specVerify(secret string, h http.Header, body []byte) error {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return err
	}
	id, ts := h.Get("webhook-id"), h.Get("webhook-timestamp")
	if id == "" || ts == "" {
		return errors.New("missing webhook-id or webhook-timestamp")
	}
	if _, err := strconv.ParseInt(ts, 10, 64); err != nil {
		return fmt.Errorf("timestamp %q: %v", ts, err)
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + "." + ts + "." + string(body)))
	want := "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
	for _, sig := range strings.Split(h.Get("webhook-signature"), " ") {
		if hmac.Equal([]byte(sig), []byte(want)) {
			return nil
		}
	}
	return fmt.Errorf("no signature matches in %q", h.Get("webhook-signature"))
}

// delivery is one request the receiver got.
type delivery struct {
	ID     string
	Seq    uint64
	Type   string
	Header http.Header
	Body   []byte
	At     time.Time
	Status int
}

// receiver is a webhook endpoint that records every request and answers
// according to script (204 when script is nil or returns 0). It verifies every
// signature with specVerify against secret.
type receiver struct {
	t      testing.TB
	secret string
	srv    *httptest.Server

	mu       sync.Mutex
	script   func(w http.ResponseWriter, r *http.Request, d delivery, attempt int) int
	got      []delivery
	attempts map[string]int
	acked    map[string]int
	badSig   []string
	changed  chan struct{}
	inFlight int
	maxIn    int
}

func newReceiver(t testing.TB, secret string, script func(w http.ResponseWriter, r *http.Request, d delivery, attempt int) int) *receiver {
	t.Helper()
	rc := &receiver{t: t, secret: secret, script: script, attempts: map[string]int{}, acked: map[string]int{}, changed: make(chan struct{}, 1)}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serveHTTP))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) serveHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var env struct {
		ID   string `json:"id"`
		Seq  uint64 `json:"sequence"`
		Type string `json:"type"`
	}
	_ = json.Unmarshal(body, &env)
	d := delivery{ID: env.ID, Seq: env.Seq, Type: env.Type, Header: r.Header.Clone(), Body: body, At: time.Now()}
	rc.mu.Lock()
	if rc.secret != "" {
		if err := specVerify(rc.secret, r.Header, body); err != nil {
			rc.badSig = append(rc.badSig, env.ID+": "+err.Error())
		}
	}
	rc.attempts[env.ID]++
	attempt := rc.attempts[env.ID]
	script := rc.script
	rc.inFlight++
	rc.maxIn = max(rc.maxIn, rc.inFlight)
	rc.mu.Unlock()

	status := 0
	if script != nil {
		status = script(w, r, d, attempt)
	}
	if status == 0 {
		status = http.StatusNoContent
	}
	if status > 0 {
		w.WriteHeader(status)
	}
	rc.mu.Lock()
	rc.inFlight--
	d.Status = status
	rc.got = append(rc.got, d)
	if status >= 200 && status < 300 {
		rc.acked[env.ID]++
	}
	rc.mu.Unlock()
	select {
	case rc.changed <- struct{}{}:
	default:
	}
}

// waitFor polls cond (under the receiver's lock) until it holds.
func (rc *receiver) waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		rc.mu.Lock()
		ok := cond()
		rc.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-rc.changed:
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
	}
}

// waitAcked waits until every event was answered with 2xx at least once.
func (rc *receiver) waitAcked(t testing.TB, timeout time.Duration, evs []Event) {
	t.Helper()
	rc.waitFor(t, timeout, fmt.Sprintf("%d events acknowledged", len(evs)), func() bool {
		for _, ev := range evs {
			if rc.acked[ev.ID] == 0 {
				return false
			}
		}
		return true
	})
}

func (rc *receiver) checkSignatures(t testing.TB) {
	t.Helper()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, b := range rc.badSig {
		t.Errorf("bad signature: %s", b)
	}
}

func (rc *receiver) attemptsOf(id string) int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.attempts[id]
}

// waitStatus polls Status until cond holds for target "app".
func waitStatus(t testing.TB, d *Dispatcher, timeout time.Duration, what string, cond func(TargetStatus) bool) TargetStatus {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		sts, err := d.Status()
		if err != nil {
			t.Fatalf("Status: %v", err)
		}
		for _, st := range sts {
			if st.Name == "app" && cond(st) {
				return st
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; status %+v", what, sts)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
