package outbox

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func newTestSender(t *testing.T, url string, secrets ...string) *WebhookSender {
	t.Helper()
	ws, err := NewWebhookSender(Target{
		Name: "app", URL: url, Secrets: secrets, Timeout: time.Second,
		Headers: map[string]string{"X-Api-Key": "k1"},
	}, 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ws.CloseIdleConnections)
	return ws
}

func testEvent() Event {
	ev := userEvent("user.created", "u1")
	ev.ID, ev.Seq, ev.OccurredAt = newEventID(), 7, time.Now().UTC()
	return ev
}

func TestWebhookHeaders(t *testing.T) {
	secret := mustSecret(t)
	rc := newReceiver(t, secret, nil)
	ws := newTestSender(t, rc.srv.URL+"/hooks?token=abc", secret)
	ev := testEvent()
	before := time.Now().Unix()
	if err := ws.Send(t.Context(), ev); err != nil {
		t.Fatalf("Send: %v", err)
	}
	rc.checkSignatures(t)
	d := rc.got[0]
	for k, want := range map[string]string{
		"Content-Type": "application/json", "User-Agent": "scimgate", "X-Api-Key": "k1", "webhook-id": ev.ID,
	} {
		if got := d.Header.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	ts, err := strconv.ParseInt(d.Header.Get("webhook-timestamp"), 10, 64)
	if err != nil || ts < before || ts > time.Now().Unix() {
		t.Errorf("webhook-timestamp = %q, want the attempt's unix seconds", d.Header.Get("webhook-timestamp"))
	}
	if string(d.Body) != string(ev.Envelope()) {
		t.Errorf("body = %s, want the envelope", d.Body)
	}
	if err := Verify([]string{secret}, d.Header, d.Body, time.Now()); err != nil {
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
			if (err == nil) != tt.ok || IsPermanent(err) != tt.permanent {
				t.Fatalf("Send = %v, want ok=%v permanent=%v", err, tt.ok, tt.permanent)
			}
			var pe *pauseError
			if errors.As(err, &pe) != tt.pause {
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
			var se *StatusError
			if !errors.As(err, &se) || se.StatusCode != tt.status {
				t.Fatalf("Send = %v, want *StatusError %d", err, tt.status)
			}
			if len(se.Body) != MaxResponseBody {
				t.Errorf("kept %d bytes of the body, want %d", len(se.Body), MaxResponseBody)
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
	if err == nil || IsPermanent(err) {
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
	ws, err := NewWebhookSender(Target{Name: "app", URL: srv.URL, Secrets: []string{mustSecret(t)}, Timeout: 50 * time.Millisecond}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = ws.Send(t.Context(), testEvent())
	if err == nil || IsPermanent(err) {
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
