package outbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Sender delivers one event. Implementations must be safe for concurrent use.
// A nil error means delivered. An error wrapped with Permanent dead-letters the
// event at once; one wrapped with PauseTarget pauses the target and leaves the
// event pending; any other error is retried on the backoff schedule. A
// *StatusError in the chain supplies the status, response body and
// Retry-After recorded by the dispatcher.
type Sender interface {
	Send(ctx context.Context, ev Event) error
}

// SenderFunc adapts a function to a Sender.
type SenderFunc func(ctx context.Context, ev Event) error

// Send calls f(ctx, ev).
func (f SenderFunc) Send(ctx context.Context, ev Event) error { return f(ctx, ev) }

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as not worth retrying: the event is dead-lettered.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

type pauseError struct{ err error }

func (e *pauseError) Error() string { return e.err.Error() }
func (e *pauseError) Unwrap() error { return e.err }

// PauseTarget marks err as a reason to stop delivering to the whole target
// (410 Gone): the target is paused until Resume, and the event stays pending.
func PauseTarget(err error) error {
	if err == nil {
		return nil
	}
	return &pauseError{err}
}

// StatusError is a response that was not 2xx.
type StatusError struct {
	StatusCode int
	// Body is the start of the response body, at most MaxResponseBody bytes.
	Body string
	// RetryAfter is the receiver's Retry-After on a 429 or 503, 0 if absent.
	RetryAfter time.Duration
	// Detail explains the classification, e.g. that redirects are not followed.
	Detail string
}

func (e *StatusError) Error() string {
	s := "webhook responded " + strconv.Itoa(e.StatusCode)
	if t := http.StatusText(e.StatusCode); t != "" {
		s += " " + t
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// MaxResponseBody is how much of an error response is kept for the dead-letter
// record.
const MaxResponseBody = 4 << 10

// userAgent is sent with every delivery.
const userAgent = "scimgate"

// WebhookSender POSTs events to one target, signed per Standard Webhooks, and
// classifies the outcome for the dispatcher. One Send is one HTTP request:
// the dispatcher's durable schedule owns every retry, so a receiver sees
// exactly one request per attempt and max_attempts bounds what it receives.
type WebhookSender struct {
	client   *http.Client
	url      string
	redacted string
	header   http.Header
	keys     [][]byte
	now      func() time.Time
}

// NewWebhookSender returns a sender for t (defaults applied) with a keep-alive
// connection pool sized for concurrency. m may be nil. The client follows no
// redirects, reads no proxy settings from the environment, and bounds each
// request by the target's timeout.
func NewWebhookSender(t Target, concurrency int, m *Metrics) (*WebhookSender, error) {
	t = t.withDefaults()
	keys, err := decodeSecrets(t.Secrets)
	if err != nil {
		return nil, fmt.Errorf("outbox: target %s: %w", t.Name, err)
	}
	if _, err := url.Parse(t.URL); err != nil {
		return nil, fmt.Errorf("outbox: target %s: url does not parse", t.Name)
	}
	h := http.Header{}
	for k, v := range t.Headers {
		h.Set(k, v)
	}
	concurrency = max(concurrency, 1)
	tr := &http.Transport{
		Proxy:                 nil, // no environment lookups (DESIGN: config is the only input)
		DialContext:           (&net.Dialer{Timeout: min(t.Timeout, 10*time.Second), KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          2 * concurrency,
		MaxIdleConnsPerHost:   concurrency,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	return &WebhookSender{
		client: &http.Client{
			Transport: tr,
			Timeout:   t.Timeout, // bounds the attempt: connect, request, response headers and body
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse // we report 3xx; following could leak the signature elsewhere
			},
		},
		url: t.URL, redacted: redactURL(t.URL), header: h, keys: keys, now: time.Now,
	}, nil
}

// Send makes one signed POST of ev's envelope, with webhook-timestamp the
// time of this request. It returns nil on 2xx; a *StatusError for 408, 429
// and 5xx (retried on the schedule, Retry-After recorded); PauseTarget for
// 410; Permanent for 3xx (redirects are not followed) and other 4xx; and a
// retryable error with the URL redacted for network failures and timeouts.
func (w *WebhookSender) Send(ctx context.Context, ev Event) error {
	body := ev.Envelope()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return Permanent(fmt.Errorf("build request for %s", w.redacted))
	}
	for k, v := range w.header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set(HeaderID, ev.ID)
	ts := w.now().Unix()
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(HeaderSignature, signKeys(w.keys, ev.ID, ts, body))

	resp, err := w.client.Do(req)
	if err != nil {
		return w.redact(err)
	}
	return w.classify(resp)
}

func (w *WebhookSender) classify(resp *http.Response) error {
	defer drain(resp.Body)
	code := resp.StatusCode
	if code >= 200 && code < 300 {
		return nil
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBody))
	body := strings.ToValidUTF8(string(b), "\uFFFD")
	for len(body) > MaxResponseBody {
		// A U+FFFD (3 bytes) can be longer than what it replaces, such as the
		// half of a character cut by the limit: drop whole runes from the end.
		_, n := utf8.DecodeLastRuneInString(body)
		body = body[:len(body)-n]
	}
	se := &StatusError{StatusCode: code, Body: body}
	switch {
	case code >= 300 && code < 400:
		se.Detail = "redirects are not followed"
		if loc := resp.Header.Get("Location"); loc != "" {
			se.Detail += " (Location: " + redactURL(loc) + ")"
		}
		return Permanent(se)
	case code == http.StatusGone:
		se.Detail = "the receiver says this endpoint is gone"
		return PauseTarget(se)
	case code == http.StatusRequestTimeout, code == http.StatusTooManyRequests, code >= 500:
		if code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable {
			se.RetryAfter, _ = parseRetryAfter(resp.Header.Get("Retry-After"), w.now())
		}
		return se
	case code >= 400:
		return Permanent(se)
	}
	return se // 1xx and other oddities: retry
}

// redact replaces the URL in a transport error by scheme://host/path, because
// a query string may carry a token.
func (w *WebhookSender) redact(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("post %s: %w", w.redacted, ue.Err)
	}
	if msg := err.Error(); strings.Contains(msg, w.url) {
		return errors.New(strings.ReplaceAll(msg, w.url, w.redacted))
	}
	return err
}

// CloseIdleConnections closes the sender's idle keep-alive connections.
func (w *WebhookSender) CloseIdleConnections() { w.client.CloseIdleConnections() }

// Close implements io.Closer: the dispatcher calls it when it stops using
// the sender.
func (w *WebhookSender) Close() error {
	w.CloseIdleConnections()
	return nil
}

// drain reads a little of the body so that the connection can be reused, then
// closes it.
func drain(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, 64<<10))
	_ = body.Close()
}

// parseRetryAfter parses a Retry-After value in seconds or as an HTTP date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
		if n < 0 {
			return 0, false
		}
		return time.Duration(min(n, int64(1<<31))) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}
