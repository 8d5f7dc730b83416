package outbox

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the outbox section of the application's YAML configuration.
// Durations take Go syntax ("30s", "72h"). Start from DefaultConfig.
type Config struct {
	// Targets are the downstream webhooks; each has its own queue state.
	Targets []Target `yaml:"targets"`
	// MaxAttempts is the retry budget per event and target; 0 means no limit
	// on attempts (then MaxAge must be set). Whichever of MaxAttempts and
	// MaxAge is reached first dead-letters the event.
	MaxAttempts int `yaml:"max_attempts"`
	// MaxAge bounds the time from an event's first attempt (or replay) to its
	// last; 0 means no age limit (then MaxAttempts must be set).
	MaxAge time.Duration `yaml:"max_age"`
	// Backoff is the schedule: Backoff[0] is the wait before the first
	// attempt, Backoff[n] the wait after the n-th failed attempt. The last
	// entry repeats. Each wait gets ±20% jitter.
	Backoff []time.Duration `yaml:"backoff"`
	// RetryAfterMax clamps a receiver's Retry-After (429 and 503).
	RetryAfterMax time.Duration `yaml:"retry_after_max"`
	// Concurrency is the number of deliveries in flight per target.
	Concurrency int `yaml:"concurrency"`
	// Retention is how long delivered events stay in the log before pruning.
	Retention time.Duration `yaml:"retention"`
	// FeedRetention is how long the event feed (GET /v1/events) keeps
	// events, independently of delivery: the log keeps every event younger
	// than max(Retention, FeedRetention). 0 means Retention alone.
	FeedRetention time.Duration `yaml:"feed_retention"`
	// PollInterval is how often the dispatcher looks for new events when no
	// Notify arrives.
	PollInterval time.Duration `yaml:"poll_interval"`
	// Transports are the target types, by type name: every type lives in
	// its own package under outbox/ and the command fills them (not YAML).
	// A target whose type has no Transport is a configuration error.
	Transports map[string]Transport `yaml:"-" json:"-"`
}

// Target is one downstream consumer of events: a webhook (the default), a
// NATS JetStream stream or a Kafka topic. Filters, retries, dead letters,
// replay and pause belong to the outbox and work the same for every type;
// a type only knows how to send one event and classify the outcome.
type Target struct {
	// Name is unique and matches [a-z0-9_-]+. It keys the target's stored
	// state, so renaming a target starts it afresh.
	Name string `yaml:"name"`
	// Type is "webhook" (the default when empty) or another type of
	// Config.Transports: "nats", "kafka", "rest".
	Type string `yaml:"type"`
	// URL is the http or https endpoint events are POSTed to (webhook).
	URL string `yaml:"url"`
	// Events are the type patterns the target subscribes to: an exact type
	// ("user.created"), a prefix ("user.*") or "*". Empty means ["*"].
	Events []string `yaml:"events"`
	// Headers are extra request headers (for example an API key). They
	// cannot replace Content-Type, User-Agent or the webhook-* headers.
	Headers map[string]string `yaml:"headers"`
	// Secrets are Standard Webhooks signing secrets ("whsec_" + base64). Every
	// request is signed with all of them, which allows rotation.
	Secrets []string `yaml:"secrets"`
	// Timeout bounds each attempt; 0 means DefaultTimeout.
	Timeout time.Duration `yaml:"timeout"`
	// BackfillOnStart sends the target a snapshot of every user, group and
	// membership (see Dispatcher.Backfill) the first time the target
	// appears, once: the dispatcher remembers that it did. It has no effect
	// on a target that already has delivery state.
	BackfillOnStart bool `yaml:"backfill_on_start"`
	// NATS configures a target of type nats.
	NATS *NATSConfig `yaml:"nats"`
	// Kafka configures a target of type kafka.
	Kafka *KafkaConfig `yaml:"kafka"`
	// Rest configures a target of type rest (an action target, package
	// outbox/rest), kept as YAML so that its errors name their lines.
	Rest yaml.Node `yaml:"rest"`
	// Sql configures a target of type sql (an action target whose steps
	// are statements against the app's database, package outbox/rest).
	Sql yaml.Node `yaml:"sql"`
}

// Target types.
const (
	TypeWebhook = "webhook"
	TypeNATS    = "nats"
	TypeKafka   = "kafka"
	TypeRest    = "rest" // built by a Transport (outbox/rest)
	TypeSQL     = "sql"  // built by a Transport (outbox/rest)
)

// transportNames lists the types of c.Transports for an error message,
// the default first.
func (c *Config) transportNames() string {
	names := slices.Sorted(maps.Keys(c.Transports))
	if i := slices.Index(names, TypeWebhook); i >= 0 {
		names = slices.Insert(slices.Delete(names, i, i+1), 0, TypeWebhook+" (the default)")
	}
	if len(names) == 0 {
		return "a registered target type (none is)"
	}
	return strings.Join(names, ", ")
}

// kind returns the target's type with the default applied.
func (t Target) kind() string {
	if t.Type == "" {
		return TypeWebhook
	}
	return t.Type
}

// DefaultTimeout is the per-attempt timeout of a target that sets none.
const DefaultTimeout = 15 * time.Second

// DefaultConfig returns the defaults: no targets, 12 attempts or 72 hours,
// a Svix-like backoff schedule, 32 deliveries in flight per target, a
// retention of 24 hours for delivered events and 7 days for the feed.
func DefaultConfig() Config {
	return Config{
		MaxAttempts: 12,
		MaxAge:      72 * time.Hour,
		Backoff: []time.Duration{
			0, 5 * time.Second, 5 * time.Minute, 30 * time.Minute,
			2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour,
		},
		RetryAfterMax: time.Hour,
		Concurrency:   32,
		Retention:     24 * time.Hour,
		FeedRetention: 7 * 24 * time.Hour,
		PollInterval:  time.Second,
	}
}

// Sentinel errors wrapped by FieldError.
var (
	ErrRequired = errors.New("required")
	ErrInvalid  = errors.New("invalid")
)

// FieldError is a configuration error at a YAML path such as
// "outbox.targets[1].url". It unwraps to ErrRequired or ErrInvalid.
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }

// Unwrap returns the underlying error.
func (e *FieldError) Unwrap() error { return e.Err }

var (
	targetNameRe = regexp.MustCompile(`^[a-z0-9_-]+$`)
	patternRe    = regexp.MustCompile(`^(\*|[a-z0-9_]+(\.[a-z0-9_]+)*(\.\*)?)$`)
	headerNameRe = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
)

// reservedHeaders are set by the sender and cannot be configured per target.
var reservedHeaders = map[string]bool{
	"Content-Type": true, "Content-Length": true, "Host": true, "User-Agent": true,
	"Webhook-Id": true, "Webhook-Timestamp": true, "Webhook-Signature": true,
}

// Validate checks the configuration. Every problem is reported as a
// *FieldError naming the YAML field (under "outbox."), joined with
// errors.Join; use errors.As and errors.Is to inspect them.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field string, err error) { errs = append(errs, &FieldError{Field: "outbox." + field, Err: err}) }
	invalid := func(field, format string, args ...any) {
		bad(field, fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...)))
	}

	if c.MaxAttempts < 0 {
		invalid("max_attempts", "must not be negative")
	}
	if c.MaxAge < 0 {
		invalid("max_age", "must not be negative")
	}
	if c.MaxAttempts == 0 && c.MaxAge == 0 {
		invalid("max_attempts", "max_attempts and max_age cannot both be 0 (unlimited retries)")
	}
	if len(c.Backoff) == 0 {
		bad("backoff", ErrRequired)
	}
	for i, b := range c.Backoff {
		if b < 0 {
			invalid(fmt.Sprintf("backoff[%d]", i), "must not be negative")
		}
	}
	if len(c.Backoff) > 0 && c.Backoff[len(c.Backoff)-1] <= 0 {
		invalid(fmt.Sprintf("backoff[%d]", len(c.Backoff)-1), "the last entry repeats and must be positive")
	}
	positive := func(field string, d time.Duration) {
		if d <= 0 {
			invalid(field, "must be positive")
		}
	}
	positive("retry_after_max", c.RetryAfterMax)
	positive("retention", c.Retention)
	positive("poll_interval", c.PollInterval)
	if c.FeedRetention < 0 {
		invalid("feed_retention", "must not be negative (0 keeps the feed as long as retention)")
	}
	if c.Concurrency < 1 || c.Concurrency > 1024 {
		invalid("concurrency", "must be between 1 and 1024")
	}

	names := map[string]int{}
	for i, t := range c.Targets {
		f := func(name string) string { return fmt.Sprintf("targets[%d].%s", i, name) }
		switch {
		case t.Name == "":
			bad(f("name"), ErrRequired)
		case len(t.Name) > 64 || !targetNameRe.MatchString(t.Name):
			invalid(f("name"), "%q must match [a-z0-9_-]+ (at most 64 characters)", t.Name)
		default:
			if j, dup := names[t.Name]; dup {
				invalid(f("name"), "%q is also the name of targets[%d]", t.Name, j)
			}
			names[t.Name] = i
		}
		kind := t.kind()
		if tr, ok := c.Transports[kind]; ok {
			prefix := fmt.Sprintf("outbox.targets[%d]", i)
			var own []error
			if tr.Validate != nil {
				own = tr.Validate(t, prefix)
				errs = append(errs, own...)
			}
			// url is the webhook's; another type that says nothing about it
			// gets the general refusal.
			if t.URL != "" && kind != TypeWebhook && !slices.ContainsFunc(own, func(err error) bool {
				var fe *FieldError
				return errors.As(err, &fe) && fe.Field == prefix+".url"
			}) {
				invalid(f("url"), "a %s target takes its address in its %s section, not url", kind, kind)
			}
		} else {
			invalid(f("type"), "%q: use %s", t.Type, c.transportNames())
		}
		if t.NATS != nil && kind != TypeNATS {
			invalid(f("nats"), "only a target of type nats takes a nats section")
		}
		if t.Kafka != nil && kind != TypeKafka {
			invalid(f("kafka"), "only a target of type kafka takes a kafka section")
		}
		if !t.Rest.IsZero() && kind != TypeRest {
			invalid(f("rest"), "only a target of type rest takes a rest section")
		}
		if !t.Sql.IsZero() && kind != TypeSQL {
			invalid(f("sql"), "only a target of type sql takes a sql section")
		}
		for j, p := range t.Events {
			if !patternRe.MatchString(p) {
				invalid(fmt.Sprintf("targets[%d].events[%d]", i, j), "%q is not an event type, a prefix such as \"user.*\", or \"*\"", p)
			}
		}
		for k, v := range t.Headers {
			ck := http.CanonicalHeaderKey(k)
			switch {
			case !headerNameRe.MatchString(k):
				invalid(f("headers"), "%q is not a valid header name", k)
			case reservedHeaders[ck]:
				invalid(f("headers"), "%s is set by the dispatcher", ck)
			case strings.ContainsAny(v, "\r\n\x00"):
				invalid(f("headers"), "value of %s contains a line break", ck)
			}
		}
		for j, s := range t.Secrets {
			field := fmt.Sprintf("targets[%d].secrets[%d]", i, j)
			if !strings.HasPrefix(s, secretPrefix) {
				invalid(field, "must start with %q", secretPrefix) // never echo the secret
			} else if _, err := decodeSecret(s); err != nil {
				invalid(field, "is not whsec_ followed by base64")
			}
		}
		if t.Timeout < 0 {
			invalid(f("timeout"), "must not be negative")
		}
	}
	return errors.Join(errs...)
}

// withDefaults returns t with Events and Timeout defaulted.
func (t Target) withDefaults() Target {
	if len(t.Events) == 0 {
		t.Events = []string{"*"}
	}
	if t.Timeout == 0 {
		t.Timeout = DefaultTimeout
	}
	return t
}

// matcher reports whether an event type matches a target's patterns.
type matcher struct {
	all      bool
	exact    map[string]bool
	prefixes []string // "user." for "user.*"
}

func newMatcher(patterns []string) matcher {
	m := matcher{exact: map[string]bool{}}
	for _, p := range patterns {
		switch {
		case p == "*":
			m.all = true
		case strings.HasSuffix(p, ".*"):
			m.prefixes = append(m.prefixes, strings.TrimSuffix(p, "*"))
		default:
			m.exact[p] = true
		}
	}
	return m
}

func (m matcher) match(typ string) bool {
	if m.all || m.exact[typ] {
		return true
	}
	for _, p := range m.prefixes {
		if strings.HasPrefix(typ, p) {
			return true
		}
	}
	return false
}

// RedactURL returns scheme://host/path of raw: no userinfo, query or
// fragment, which may hold a token.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<invalid url>"
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
}
