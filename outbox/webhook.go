package outbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-retryablehttp"
)

// maxResponseKept bounds the response body kept for a dead letter.
const maxResponseKept = 4 << 10

// In-process retries absorb blips; the outbox reschedules anything longer.
const (
	inProcessRetries = 2
	inProcessWaitMin = 100 * time.Millisecond
	inProcessWaitMax = time.Second
)

// outcome is the result of one delivery attempt (with its in-process
// retries). err is nil on success.
type outcome struct {
	status     int
	err        error
	permanent  bool          // a 4xx other than 408/429, a redirect: dead-letter now
	gone       bool          // 410: pause the target
	retryAfter time.Duration // from the response, clamped
	body       string        // at most maxResponseKept of the response
}

// webhook sends events to one target.
type webhook struct {
	target        TargetConfig
	client        *retryablehttp.Client
	now           func() time.Time
	retryAfterMax time.Duration
}

func newWebhook(t TargetConfig, concurrency int, retryAfterMax time.Duration, now func() time.Time, m *Metrics) *webhook {
	w := &webhook{target: t, now: now, retryAfterMax: retryAfterMax}
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        concurrency * 2,
		MaxIdleConnsPerHost: concurrency * 2,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
	}
	c := retryablehttp.NewClient()
	c.HTTPClient = &http.Client{
		Transport: tr,
		Timeout:   t.Timeout, // bounds each attempt
		// Redirects are not followed: a webhook that moved is a
		// configuration problem to surface, not to chase.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	c.Logger = nil // the dispatcher logs once, without URLs
	c.RetryMax = inProcessRetries
	c.RetryWaitMin, c.RetryWaitMax = inProcessWaitMin, inProcessWaitMax
	c.ErrorHandler = retryablehttp.PassthroughErrorHandler // we classify the last response
	c.CheckRetry = func(ctx context.Context, resp *http.Response, err error) (bool, error) {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		if err != nil {
			return true, nil
		}
		switch code := resp.StatusCode; {
		case code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable:
			// A long Retry-After becomes an outbox reschedule, not a
			// sleep inside this attempt.
			return retryAfter(resp, w.now()) <= inProcessWaitMax, nil
		case code == http.StatusRequestTimeout, code >= 500 && code != http.StatusNotImplemented:
			return true, nil
		}
		return false, nil
	}
	c.Backoff = func(lo, hi time.Duration, n int, resp *http.Response) time.Duration {
		// DefaultBackoff returns Retry-After uncapped (checked): cap it.
		return min(retryablehttp.DefaultBackoff(lo, hi, n, resp), hi)
	}
	// Each retry is re-signed: webhook-timestamp is the time of the attempt.
	c.PrepareRetry = func(req *http.Request) error {
		body, _ := req.Context().Value(bodyKey{}).([]byte)
		return w.sign(req.Header, req.Header.Get(HeaderID), body)
	}
	if m != nil {
		c.RequestLogHook = func(_ retryablehttp.Logger, _ *http.Request, attempt int) {
			if attempt > 0 {
				m.retried.WithLabelValues(t.Name).Inc()
			}
		}
	}
	w.client = c
	return w
}

func (w *webhook) sign(h http.Header, id string, body []byte) error {
	ts := w.now()
	sig, err := Sign(w.target.Secrets, id, ts, body)
	if err != nil {
		return err
	}
	h.Set(HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(HeaderSignature, sig)
	return nil
}

// send delivers one event and classifies the result.
func (w *webhook) send(ctx context.Context, id string, body []byte) outcome {
	ctx = context.WithValue(ctx, bodyKey{}, body) // for re-signing in PrepareRetry
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodPost, w.target.URL, body)
	if err != nil {
		return outcome{err: errors.New("cannot build request: " + redactErr(err, w.target.URL)), permanent: true}
	}
	for k, v := range w.target.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "scimgate")
	req.Header.Set(HeaderID, id)
	if err := w.sign(req.Header, id, body); err != nil {
		return outcome{err: err, permanent: true}
	}
	resp, err := w.client.Do(req)
	if err != nil {
		return outcome{err: errors.New(redactErr(err, w.target.URL))}
	}
	defer resp.Body.Close()
	kept, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponseKept))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)) // drain for keep-alive
	o := outcome{status: resp.StatusCode}
	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		return o
	case code == http.StatusGone:
		o.gone = true
	case code == http.StatusRequestTimeout, code == http.StatusTooManyRequests, code >= 500:
		o.retryAfter = min(retryAfter(resp, w.now()), w.retryAfterMax)
	case code >= 300 && code < 400:
		o.permanent = true
	default:
		o.permanent = true
	}
	o.body = string(kept)
	if code >= 300 && code < 400 {
		o.err = fmt.Errorf("status %d: redirects are not followed; point the target at the final URL", code)
	} else {
		o.err = fmt.Errorf("status %d", code)
	}
	return o
}

type bodyKey struct{}

// retryAfter reads Retry-After as seconds or an HTTP date; 0 when absent.
func retryAfter(resp *http.Response, now time.Time) time.Duration {
	v := resp.Header.Get("Retry-After")
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return 0
}

// redactErr removes the target URL (it may carry a token in its query)
// from a transport error.
func redactErr(err error, rawURL string) string {
	msg := err.Error()
	if rawURL != "" {
		msg = strings.ReplaceAll(msg, rawURL, redact(rawURL))
		msg = strings.ReplaceAll(msg, strconv.Quote(rawURL), strconv.Quote(redact(rawURL)))
	}
	return msg
}
