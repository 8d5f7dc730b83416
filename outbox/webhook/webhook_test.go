package webhook

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scimgate/scimgate/outbox"
)

func mustSecret(t testing.TB) string {
	t.Helper()
	s, err := outbox.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newTestSender(t *testing.T, url string, secrets ...string) *Sender {
	t.Helper()
	ws, err := New(outbox.Target{
		Name: "app", URL: url, Secrets: secrets, Timeout: time.Second,
		Headers: map[string]string{"X-Api-Key": "k1"},
	}, 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ws.CloseIdleConnections)
	return ws
}

var eventN atomic.Int64

func testEvent() outbox.Event {
	n := eventN.Add(1)
	return outbox.Event{
		ID: "evt_test" + strconv.FormatInt(n, 10), Seq: uint64(n), Type: "user.created", OccurredAt: time.Now().UTC(),
		Resources: []string{"User/u1"}, Data: json.RawMessage(`{"user":{"id":"u1","version":1}}`),
	}
}

// request is one request a test receiver got.
type request struct {
	header http.Header
	body   []byte
}

// capture is a receiver that records every request and answers status.
func capture(t *testing.T, status func(n int) int) (*httptest.Server, func() []request) {
	t.Helper()
	var mu sync.Mutex
	var got []request
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, request{r.Header.Clone(), b})
		n := len(got)
		mu.Unlock()
		w.WriteHeader(status(n))
	}))
	t.Cleanup(srv.Close)
	return srv, func() []request {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}

func TestWebhookHeaders(t *testing.T) {
	secret := mustSecret(t)
	srv, got := capture(t, func(int) int { return http.StatusNoContent })
	ws := newTestSender(t, srv.URL+"/hooks?token=abc", secret)
	ev := testEvent()
	before := time.Now().Unix()
	if err := ws.Send(t.Context(), ev); err != nil {
		t.Fatalf("Send: %v", err)
	}
	reqs := got()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	d := reqs[0]
	for k, want := range map[string]string{
		"Content-Type": "application/json", "User-Agent": "scimgate", "X-Api-Key": "k1", "webhook-id": ev.ID,
	} {
		if got := d.header.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	ts, err := strconv.ParseInt(d.header.Get("webhook-timestamp"), 10, 64)
	if err != nil || ts < before || ts > time.Now().Unix() {
		t.Errorf("webhook-timestamp = %q, want the attempt's unix seconds", d.header.Get("webhook-timestamp"))
	}
	if string(d.body) != string(ev.Envelope()) {
		t.Errorf("body = %s, want the envelope", d.body)
	}
	if err := outbox.Verify([]string{secret}, d.header, d.body, time.Now()); err != nil {
		t.Errorf("Verify: %v", err)
	}
}

func TestWebhookClassification(t *testing.T) {
	tests := []struct {
		status    int
		header    map[string]string
		ok        bool
		permanent bool
		pause     bool
		requests  int // HTTP requests of one Send: always one
		retryAft  time.Duration
	}{
		{status: 200, ok: true, requests: 1},
		{status: 204, ok: true, requests: 1},
		{status: 400, permanent: true, requests: 1},
		{status: 401, permanent: true, requests: 1},
		{status: 404, permanent: true, requests: 1},
		{status: 410, pause: true, requests: 1},
		{status: 302, header: map[string]string{"Location": "https://elsewhere.example/x?sig=1"}, permanent: true, requests: 1},
		{status: 408, requests: 1},
		{status: 429, requests: 1},
		{status: 429, header: map[string]string{"Retry-After": "3600"}, requests: 1, retryAft: time.Hour},
		{status: 503, header: map[string]string{"Retry-After": "120"}, requests: 1, retryAft: 2 * time.Minute},
		{status: 500, requests: 1},
		{status: 502, requests: 1},
		{status: 501, requests: 1},
	}
	for _, tt := range tests {
		t.Run(strconv.Itoa(tt.status), func(t *testing.T) {
			var mu sync.Mutex
			n := 0
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				n++
				mu.Unlock()
				for k, v := range tt.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tt.status)
				_, _ = w.Write([]byte(strings.Repeat("e", 10000)))
			}))
			defer srv.Close()
			ws := newTestSender(t, srv.URL, mustSecret(t))
			start := time.Now()
			err := ws.Send(t.Context(), testEvent())
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("Send took %v; a Retry-After must not be slept inside an attempt", took)
			}
			if (err == nil) != tt.ok || outbox.IsPermanent(err) != tt.permanent {
				t.Fatalf("Send = %v, want ok=%v permanent=%v", err, tt.ok, tt.permanent)
			}
			if outbox.IsPauseTarget(err) != tt.pause {
				t.Errorf("Send = %v, want pause=%v", err, tt.pause)
			}
			mu.Lock()
			if n != tt.requests {
				t.Errorf("%d requests, want %d", n, tt.requests)
			}
			mu.Unlock()
			if tt.ok {
				return
			}
			var se *outbox.StatusError
			if !errors.As(err, &se) || se.StatusCode != tt.status {
				t.Fatalf("Send = %v, want *StatusError %d", err, tt.status)
			}
			if len(se.Body) != outbox.MaxResponseBody {
				t.Errorf("kept %d bytes of the body, want %d", len(se.Body), outbox.MaxResponseBody)
			}
			if se.RetryAfter != tt.retryAft {
				t.Errorf("RetryAfter = %v, want %v", se.RetryAfter, tt.retryAft)
			}
			if tt.status == 302 && (!strings.Contains(err.Error(), "redirects are not followed") || strings.Contains(err.Error(), "sig=1")) {
				t.Errorf("redirect error = %q", err)
			}
		})
	}
}

func TestWebhookNetworkErrorRedacted(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL + "/hooks?token=s3cret"
	srv.Close() // nothing listens any more
	ws := newTestSender(t, url, mustSecret(t))
	err := ws.Send(t.Context(), testEvent())
	if err == nil || outbox.IsPermanent(err) {
		t.Fatalf("Send = %v, want a retryable error", err)
	}
	if strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "/hooks") {
		t.Errorf("error %q: want the URL redacted to scheme+host+path", err)
	}
}

func TestWebhookTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	ws, err := New(outbox.Target{Name: "app", URL: srv.URL, Secrets: []string{mustSecret(t)}, Timeout: 50 * time.Millisecond}, 1)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = ws.Send(t.Context(), testEvent())
	if err == nil || outbox.IsPermanent(err) {
		t.Fatalf("Send = %v, want a retryable timeout", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("Send took %v, want about the 50ms timeout", took)
	}
}

func TestWebhookCancel(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // the server notices a closed connection only after the body
		<-r.Context().Done()
	}))
	defer srv.Close()
	ws := newTestSender(t, srv.URL, mustSecret(t))
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := ws.Send(ctx, testEvent()); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Send = %v, want context.DeadlineExceeded", err)
	}
}

// TestWebhookTransportErrors: retryablehttp's policy classifies what failed
// before a response: a reset connection is retried on the outbox's
// schedule, a certificate the client does not trust dead-letters the event
// (no retry can cure it). Either way one Send is one request, and the
// error does not carry the URL's query.
func TestWebhookTransportErrors(t *testing.T) {
	t.Run("reset", func(t *testing.T) {
		var n atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n.Add(1)
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				if tc, ok := conn.(*net.TCPConn); ok {
					_ = tc.SetLinger(0) // RST
				}
				conn.Close()
			}
		}))
		defer srv.Close()
		ws := newTestSender(t, srv.URL+"/hooks?token=s3cret", mustSecret(t))
		err := ws.Send(t.Context(), testEvent())
		if err == nil || outbox.IsPermanent(err) || outbox.IsPauseTarget(err) {
			t.Fatalf("Send = %v, want a retryable error", err)
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("error %q carries the query", err)
		}
		if got := n.Load(); got != 1 {
			t.Errorf("%d requests for one Send, want 1", got)
		}
	})
	t.Run("untrusted certificate", func(t *testing.T) {
		var handshakes, requests atomic.Int32
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { requests.Add(1) }))
		srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				handshakes.Add(1)
			}
		}
		srv.Config.ErrorLog = nil
		srv.TLS = &tls.Config{}
		srv.StartTLS() // its certificate is not in the system roots the sender trusts
		defer srv.Close()
		ws := newTestSender(t, srv.URL+"/hooks?token=s3cret", mustSecret(t))
		err := ws.Send(t.Context(), testEvent())
		if !outbox.IsPermanent(err) {
			t.Fatalf("Send = %v, want a permanent error", err)
		}
		if !strings.Contains(err.Error(), "certificate") || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("error %q: want the certificate problem, without the query", err)
		}
		if h, r := handshakes.Load(), requests.Load(); h != 1 || r != 0 {
			t.Errorf("%d connections and %d requests for one Send, want 1 and 0", h, r)
		}
	})
}

// TestWebhookOneRequestPerAttempt: through the dispatcher, a receiver
// that keeps failing (status or reset connection) gets max_attempts
// requests, no more: the client's in-process retries never add one.
func TestWebhookOneRequestPerAttempt(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail func(w http.ResponseWriter)
	}{
		{"503", func(w http.ResponseWriter) { w.WriteHeader(http.StatusServiceUnavailable) }},
		{"429 Retry-After 0", func(w http.ResponseWriter) {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusTooManyRequests)
		}},
		{"reset", func(w http.ResponseWriter) {
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				if tc, ok := conn.(*net.TCPConn); ok {
					_ = tc.SetLinger(0)
				}
				conn.Close()
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var n atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				n.Add(1)
				tc.fail(w)
			}))
			defer srv.Close()
			secret := mustSecret(t)
			db, d := startDispatcher(t, srv.URL, secret, Transport(), func(cfg *outbox.Config) { cfg.MaxAttempts = 4 })
			ev := enqueue(t, db, d, testEvent())
			waitFor(t, "a dead letter", func() bool { dl, err := d.DeadLetter("app", ev.ID); return err == nil && dl.Attempts == 4 })
			// Deliberately real time: a fifth request, the defect, would come
			// within this window (real HTTP, so no synctest bubble).
			time.Sleep(100 * time.Millisecond)
			if got := n.Load(); got != 4 {
				t.Errorf("receiver got %d requests for max_attempts 4, want 4", got)
			}
		})
	}
}

// startDispatcher runs a dispatcher with one target "app" of the given
// transport on a fresh bolt file, with fast retries, until the test ends.
func startDispatcher(t *testing.T, url, secret string, tr outbox.Transport, mod func(*outbox.Config)) (*bolt.DB, *outbox.Dispatcher) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "scimgate.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(outbox.InitBuckets); err != nil {
		t.Fatal(err)
	}
	cfg := outbox.DefaultConfig()
	cfg.Backoff = []time.Duration{0, 20 * time.Millisecond}
	cfg.MaxAttempts, cfg.MaxAge, cfg.RetryAfterMax = 100, time.Hour, time.Second
	cfg.PollInterval = 20 * time.Millisecond
	cfg.Targets = []outbox.Target{{Name: "app", URL: url, Secrets: []string{secret}, Timeout: 2 * time.Second}}
	cfg.Transports = map[string]outbox.Transport{outbox.TypeWebhook: tr}
	if mod != nil {
		mod(&cfg)
	}
	d, err := outbox.NewDispatcher(db, cfg, nil, outbox.NewMetrics())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run = %v", err)
		}
		if err := db.Close(); err != nil {
			t.Error(err)
		}
	})
	waitFor(t, "the dispatcher", d.Ready)
	return db, d
}

func enqueue(t *testing.T, db *bolt.DB, d *outbox.Dispatcher, ev outbox.Event) outbox.Event {
	t.Helper()
	err := db.Update(func(tx *bolt.Tx) error {
		var err error
		ev, err = outbox.Enqueue(tx, ev, time.Now())
		tx.OnCommit(d.Notify)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Every attempt is signed with its own webhook-timestamp.
func TestEachAttemptResigned(t *testing.T) {
	secret := mustSecret(t)
	srv, got := capture(t, func(n int) int {
		if n < 3 {
			return http.StatusServiceUnavailable
		}
		return http.StatusNoContent
	})
	var mu sync.Mutex
	clock := time.Now().Add(-time.Hour)
	tr := Transport()
	build := tr.New
	tr.New = func(tg outbox.Target, env outbox.Env) (outbox.Sender, error) {
		s, err := build(tg, env)
		if err == nil {
			s.(*Sender).now = func() time.Time { // each signature one minute later
				mu.Lock()
				defer mu.Unlock()
				clock = clock.Add(time.Minute)
				return clock
			}
		}
		return s, err
	}
	db, d := startDispatcher(t, srv.URL, secret, tr, nil)
	ev := enqueue(t, db, d, testEvent())
	waitFor(t, "three requests", func() bool { return len(got()) == 3 })
	waitFor(t, "delivered", func() bool {
		sts, err := d.Status()
		return err == nil && len(sts) == 1 && sts[0].Delivered == 1
	})
	var stamps []int64
	for _, g := range got() {
		if g.header.Get(outbox.HeaderID) != ev.ID {
			t.Errorf("webhook-id %q, want %s", g.header.Get(outbox.HeaderID), ev.ID)
		}
		ts, _ := strconv.ParseInt(g.header.Get(outbox.HeaderTimestamp), 10, 64)
		stamps = append(stamps, ts)
		if err := outbox.Verify([]string{secret}, g.header, g.body, time.Unix(ts, 0)); err != nil {
			t.Errorf("Verify: %v", err)
		}
	}
	if !slices.IsSorted(stamps) || stamps[0] == stamps[1] || stamps[1] == stamps[2] {
		t.Errorf("timestamps %v: each attempt must carry its own", stamps)
	}
}

// TestWebhookValidate: the webhook's own settings, with the YAML paths and
// texts the command reports.
func TestWebhookValidate(t *testing.T) {
	for _, tc := range []struct {
		url     string
		secrets []string
		want    []string
	}{
		{"https://h/x", []string{"whsec_AAAA"}, nil},
		{"", []string{"whsec_AAAA"}, []string{"outbox.targets[3].url: required"}},
		{"ftp://h/x", []string{"whsec_AAAA"}, []string{"outbox.targets[3].url: invalid: scheme must be http or https"}},
		{"https:///x", []string{"whsec_AAAA"}, []string{"outbox.targets[3].url: invalid: host required"}},
		{"http://h:99999999999/%zz?token=s3cret", []string{"whsec_AAAA"}, []string{"outbox.targets[3].url: invalid: does not parse"}},
		{"https://h/x", nil, []string{"outbox.targets[3].secrets: required"}},
	} {
		var got []string
		for _, err := range Validate(outbox.Target{Name: "app", URL: tc.url, Secrets: tc.secrets}, "outbox.targets[3]") {
			var fe *outbox.FieldError
			if !errors.As(err, &fe) {
				t.Errorf("Validate(%q): %v is not a *FieldError", tc.url, err)
			}
			got = append(got, err.Error())
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("Validate(%q, %d secrets) = %q, want %q", tc.url, len(tc.secrets), got, tc.want)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"120", 2 * time.Minute, true},
		{"0", 0, true},
		{"-1", 0, false},
		{"Wed, 01 Jan 2025 00:01:30 GMT", 90 * time.Second, true},
		{"Tue, 31 Dec 2024 23:00:00 GMT", 0, true},
		{"soon", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		if got, ok := parseRetryAfter(tt.in, now); got != tt.want || ok != tt.ok {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

// A Retry-After value never yields a negative wait or a panic.
func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"120", "0", "-1", "Wed, 01 Jan 2025 00:01:30 GMT", "soon", "99999999999999999999", " 5 "} {
		f.Add(s)
	}
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string) {
		if d, ok := parseRetryAfter(v, now); d < 0 || (!ok && d != 0) {
			t.Errorf("parseRetryAfter(%q) = %v, %v", v, d, ok)
		}
	})
}
