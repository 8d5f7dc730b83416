package outbox

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// Config is the `outbox:` section.
type Config struct {
	Targets []TargetConfig `yaml:"targets"`
	// MaxAttempts and MaxAge are the retry budget: whichever is reached
	// first dead-letters an event.
	MaxAttempts int           `yaml:"max_attempts"`
	MaxAge      time.Duration `yaml:"max_age"`
	// Backoff is the wait before each retry (±20% jitter); the last
	// entry repeats.
	Backoff []time.Duration `yaml:"backoff"`
	// RetryAfterMax clamps a target's Retry-After.
	RetryAfterMax time.Duration `yaml:"retry_after_max"`
	// Concurrency is the number of deliveries in flight per target.
	Concurrency int `yaml:"concurrency"`
	// Retention is how long delivered events stay in the log.
	Retention    time.Duration `yaml:"retention"`
	PollInterval time.Duration `yaml:"poll_interval"`
}

// TargetConfig is one webhook.
type TargetConfig struct {
	Name    string            `yaml:"name"`
	URL     string            `yaml:"url"`
	Events  []string          `yaml:"events"`
	Headers map[string]string `yaml:"headers"`
	Secrets []string          `yaml:"secrets"`
	Timeout time.Duration     `yaml:"timeout"`
}

// DefaultConfig returns the defaults (Svix-like schedule).
func DefaultConfig() Config {
	return Config{
		MaxAttempts:   12,
		MaxAge:        72 * time.Hour,
		Backoff:       []time.Duration{0, 5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour},
		RetryAfterMax: time.Hour,
		Concurrency:   32,
		Retention:     24 * time.Hour,
		PollInterval:  time.Second,
	}
}

// FieldError is a configuration problem at a YAML path relative to the
// outbox section, such as "targets[1].url".
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

// Validation sentinels.
var (
	ErrRequired = errors.New("required")
	ErrInvalid  = errors.New("invalid")
)

var targetName = regexp.MustCompile(`^[a-z0-9_-]+$`)

// Validate checks the section.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field string, err error, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Err: fmt.Errorf("%w: "+format, append([]any{err}, args...)...)})
	}
	if len(c.Targets) == 0 {
		bad("targets", ErrRequired, "at least one webhook target")
	}
	names := map[string]bool{}
	for i, t := range c.Targets {
		at := fmt.Sprintf("targets[%d]", i)
		if !targetName.MatchString(t.Name) {
			bad(at+".name", ErrInvalid, "%q: use lower-case letters, digits, - and _", t.Name)
		} else if names[t.Name] {
			bad(at+".name", ErrInvalid, "%q is used twice", t.Name)
		}
		names[t.Name] = true
		if u, err := url.Parse(t.URL); t.URL == "" {
			bad(at+".url", ErrRequired, "the webhook URL")
		} else if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad(at+".url", ErrInvalid, "%s is not an absolute http(s) URL", redact(t.URL))
		}
		for j, p := range t.Events {
			if !validPattern(p) {
				bad(fmt.Sprintf("%s.events[%d]", at, j), ErrInvalid, "%q: use an event type, a prefix such as user.*, or *", p)
			}
		}
		if len(t.Secrets) == 0 {
			bad(at+".secrets", ErrRequired, "at least one whsec_ signing secret")
		}
		for j, s := range t.Secrets {
			if _, err := decodeSecret(s); err != nil {
				bad(fmt.Sprintf("%s.secrets[%d]", at, j), ErrInvalid, "%v", err)
			}
		}
		if t.Timeout <= 0 {
			bad(at+".timeout", ErrInvalid, "must be positive")
		}
	}
	if c.MaxAttempts < 1 {
		bad("max_attempts", ErrInvalid, "must be at least 1")
	}
	if c.MaxAge <= 0 {
		bad("max_age", ErrInvalid, "must be positive")
	}
	if len(c.Backoff) == 0 {
		bad("backoff", ErrRequired, "a retry schedule")
	}
	for i, d := range c.Backoff {
		if d < 0 {
			bad(fmt.Sprintf("backoff[%d]", i), ErrInvalid, "must not be negative")
		}
	}
	if c.RetryAfterMax <= 0 {
		bad("retry_after_max", ErrInvalid, "must be positive")
	}
	if c.Concurrency < 1 {
		bad("concurrency", ErrInvalid, "must be at least 1")
	}
	if c.Retention <= 0 {
		bad("retention", ErrInvalid, "must be positive")
	}
	if c.PollInterval <= 0 {
		bad("poll_interval", ErrInvalid, "must be positive")
	}
	return errors.Join(errs...)
}

var knownTypes = []string{"user.created", "user.updated", "user.deactivated", "user.reactivated", "user.deleted",
	"group.created", "group.updated", "group.deleted", "group.member_added", "group.member_removed"}

func validPattern(p string) bool {
	if p == "*" || p == "user.*" || p == "group.*" {
		return true
	}
	for _, t := range knownTypes {
		if p == t {
			return true
		}
	}
	return false
}

// subscribed reports whether the target wants events of this type.
func (t TargetConfig) subscribed(typ string) bool {
	if len(t.Events) == 0 {
		return true
	}
	for _, p := range t.Events {
		if matches(p, typ) {
			return true
		}
	}
	return false
}

// redact keeps scheme, host and path of a URL: no userinfo, no query
// (tokens live there), so it can be shown and logged.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Scheme + "://" + u.Host + strings.TrimSuffix(u.Path, "/")
}
