// Package webhook is the outbox's webhook transport: each event is one
// POST of its envelope, signed per Standard Webhooks, to the target's URL.
// The command registers Transport() under the type "webhook" (the default).
package webhook

import (
	"context"
	"crypto/tls"
	"crypto/x509"
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

	"github.com/hashicorp/go-retryablehttp"

	"github.com/scimgate/scimgate/outbox"
)

// userAgent is sent with every delivery.
const userAgent = "scimgate"

// Transport returns the webhook transport, for outbox.Config.Transports.
func Transport() outbox.Transport {
	return outbox.Transport{
		Validate: Validate,
		New: func(t outbox.Target, env outbox.Env) (outbox.Sender, error) {
			return New(t, env.Config.Concurrency)
		},
	}
}

// Validate checks a webhook target's own settings: its url and that it
// has a signing secret (the engine checks the secrets' format, the
// headers and the events). prefix is the target's YAML path.
func Validate(t outbox.Target, prefix string) []error {
	var errs []error
	field := func(name string, err error) {
		errs = append(errs, &outbox.FieldError{Field: prefix + "." + name, Err: err})
	}
	invalid := func(name, msg string) { field(name, fmt.Errorf("%w: %s", outbox.ErrInvalid, msg)) }
	if t.URL == "" {
		field("url", outbox.ErrRequired)
	} else if u, err := url.Parse(t.URL); err != nil {
		invalid("url", "does not parse") // the parse error would echo the URL, which may hold a token
	} else if u.Scheme != "http" && u.Scheme != "https" {
		invalid("url", "scheme must be http or https")
	} else if u.Host == "" {
		invalid("url", "host required")
	}
	if len(t.Secrets) == 0 {
		field("secrets", outbox.ErrRequired)
	}
	return errs
}

// Sender POSTs events to one target, signed per Standard Webhooks, and
// classifies the outcome for the dispatcher. One Send is one HTTP request:
// the dispatcher's durable schedule owns every retry, so a receiver sees
// exactly one request per attempt and max_attempts bounds what it receives.
type Sender struct {
	client   *retryablehttp.Client
	url      string
	redacted string
	header   http.Header
	signer   outbox.Signer
	now      func() time.Time
}

// New returns a sender for t with a keep-alive connection pool sized for
// concurrency. The client follows no redirects, reads no
// proxy settings from the environment, and bounds each request by the
// target's timeout (DefaultTimeout when it sets none).
//
// The client is go-retryablehttp's, built once per target (a client per
// request would lose its connection pool):
// its retry policy classifies transport errors (a certificate the client
// does not trust, an invalid header or scheme are not worth retrying; a
// reset or refused connection is), but RetryMax is 0, so an attempt of
// the POST is exactly one request, and PassthroughErrorHandler hands us
// the response, which we classify ourselves. Its Logger is nil: the
// dispatcher logs each outcome once, and the library's own lines would
// carry the URL's query string.
func New(t outbox.Target, concurrency int) (*Sender, error) {
	if t.Timeout == 0 {
		t.Timeout = outbox.DefaultTimeout
	}
	signer, err := outbox.NewSigner(t.Secrets)
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
	c := retryablehttp.NewClient()
	c.HTTPClient = &http.Client{
		Transport: tr,
		Timeout:   t.Timeout, // bounds the attempt: connect, request, response headers and body
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // we report 3xx; following could leak the signature elsewhere
		},
	}
	c.RetryMax = 0 // one attempt of a write is one request; the outbox retries
	c.CheckRetry = checkRetry
	c.ErrorHandler = retryablehttp.PassthroughErrorHandler
	c.Logger = nil
	return &Sender{client: c, url: t.URL, redacted: outbox.RedactURL(t.URL), header: h, signer: signer, now: time.Now}, nil
}

// errNotRetryable marks a transport error that retryablehttp's policy
// says a repeat would not cure (an untrusted certificate, an invalid
// header or scheme, a redirect loop).
type errNotRetryable struct{ err error }

func (e *errNotRetryable) Error() string { return e.err.Error() }
func (e *errNotRetryable) Unwrap() error { return e.err }

// checkRetry classifies with retryablehttp's policy. A response is never
// retried here: RetryMax is 0 anyway, and Send classifies it (a
// "retryable" response would also make the library close the pool's idle
// connections). A transport error the policy would not retry comes back
// marked errNotRetryable; any other one comes back as it is.
func checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if err == nil {
		return false, nil
	}
	retry, perr := retryablehttp.ErrorPropagatedRetryPolicy(ctx, resp, err)
	switch {
	case ctx.Err() != nil:
		return false, ctx.Err()
	case !retry || isCertError(err):
		if perr == nil {
			perr = err
		}
		return false, &errNotRetryable{perr}
	}
	return true, nil
}

// isCertError reports a certificate the client cannot verify, which the
// library's policy recognizes by its text only for unknown authorities.
func isCertError(err error) bool {
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	var ve *tls.CertificateVerificationError
	return errors.As(err, &ua) || errors.As(err, &he) || errors.As(err, &ci) || errors.As(err, &ve)
}

// Send makes one signed POST of ev's envelope, with webhook-timestamp the
// time of this request. It returns nil on 2xx; a *StatusError for 408, 429
// and 5xx (retried on the schedule, Retry-After recorded); PauseTarget for
// 410; Permanent for 3xx (redirects are not followed), other 4xx and a
// transport error that no retry can cure (the receiver's certificate is
// not trusted); and a retryable error with the URL redacted for other
// network failures and timeouts.
func (w *Sender) Send(ctx context.Context, ev outbox.Event) error {
	body := ev.Envelope()
	req, err := retryablehttp.NewRequestWithContext(ctx, http.MethodPost, w.url, body)
	if err != nil {
		return outbox.Permanent(fmt.Errorf("build request for %s", w.redacted))
	}
	for k, v := range w.header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set(outbox.HeaderID, ev.ID)
	ts := w.now().Unix()
	req.Header.Set(outbox.HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(outbox.HeaderSignature, w.signer.Sign(ev.ID, ts, body))

	resp, err := w.client.Do(req)
	if err != nil {
		if resp != nil {
			drain(resp.Body)
		}
		var nr *errNotRetryable
		if errors.As(err, &nr) {
			return outbox.Permanent(w.redact(nr.err))
		}
		return w.redact(err)
	}
	return w.classify(resp)
}

func (w *Sender) classify(resp *http.Response) error {
	defer drain(resp.Body)
	code := resp.StatusCode
	if code >= 200 && code < 300 {
		return nil
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, outbox.MaxResponseBody))
	body := strings.ToValidUTF8(string(b), "\uFFFD")
	for len(body) > outbox.MaxResponseBody {
		// A U+FFFD (3 bytes) can be longer than what it replaces, such as the
		// half of a character cut by the limit: drop whole runes from the end.
		_, n := utf8.DecodeLastRuneInString(body)
		body = body[:len(body)-n]
	}
	se := &outbox.StatusError{StatusCode: code, Body: body}
	switch {
	case code >= 300 && code < 400:
		se.Detail = "redirects are not followed"
		if loc := resp.Header.Get("Location"); loc != "" {
			se.Detail += " (Location: " + outbox.RedactURL(loc) + ")"
		}
		return outbox.Permanent(se)
	case code == http.StatusGone:
		se.Detail = "the receiver says this endpoint is gone"
		return outbox.PauseTarget(se)
	case code == http.StatusRequestTimeout, code == http.StatusTooManyRequests, code >= 500:
		if code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable {
			se.RetryAfter, _ = parseRetryAfter(resp.Header.Get("Retry-After"), w.now())
		}
		return se
	case code >= 400:
		return outbox.Permanent(se)
	}
	return se // 1xx and other oddities: retry
}

// redact replaces the URL in a transport error by scheme://host/path, because
// a query string may carry a token.
func (w *Sender) redact(err error) error {
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
func (w *Sender) CloseIdleConnections() { w.client.HTTPClient.CloseIdleConnections() }

// Close implements io.Closer: the dispatcher calls it when it stops using
// the sender.
func (w *Sender) Close() error {
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
