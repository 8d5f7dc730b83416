package outbox

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"
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

// IsPauseTarget reports whether err was marked with PauseTarget.
func IsPauseTarget(err error) bool {
	var p *pauseError
	return errors.As(err, &p)
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

// describe is how status and logs name where a target delivers: what its
// transport's Describe says (a stream's servers and subject or topic), or
// its URL without userinfo or query.
func (c *Config) describe(t Target) string {
	if tr, ok := c.Transports[t.kind()]; ok && tr.Describe != nil {
		return tr.Describe(t)
	}
	return RedactURL(t.URL)
}
