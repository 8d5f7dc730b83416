// Package nats is the outbox's NATS JetStream transport: each event is one
// message published into a stream, with the PubAck as delivery. The
// command registers Transport() under the type "nats"; the settings are
// outbox.NATSConfig (the target's nats section).
package nats

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimgate/scimgate/outbox"
)

// Transport returns the NATS transport, for outbox.Config.Transports.
func Transport() outbox.Transport {
	return outbox.Transport{
		Validate: Validate,
		New:      func(t outbox.Target, _ outbox.Env) (outbox.Sender, error) { return New(t) },
		Describe: Describe,
	}
}

// Validate checks a nats target's own settings: its nats section, and no
// url. prefix is the target's YAML path ("outbox.targets[2]").
func Validate(t outbox.Target, prefix string) []error {
	var errs []error
	if t.URL != "" {
		errs = append(errs, outbox.InvalidField(prefix+".url", "a nats target takes its servers in nats.urls, not url"))
	}
	if t.NATS == nil {
		return append(errs, &outbox.FieldError{Field: prefix + ".nats", Err: outbox.ErrRequired})
	}
	return append(errs, validate(t.NATS, prefix+".nats")...)
}

// Describe names where t delivers, for status and logs: its servers
// (without credentials) and stream.
func Describe(t outbox.Target) string {
	if t.NATS == nil {
		return "nats"
	}
	return "nats://" + strings.Join(hosts(t.NATS), ",") + " stream " + t.NATS.Stream
}

// DefaultSubject is the subject template of a nats target that sets
// none: scimgate.user.created, scimgate.group.member_added, …
const DefaultSubject = "scimgate.{type}"

// Defaults of a stream created by a nats target.
const (
	DefaultMaxAge          = 168 * time.Hour
	DefaultDuplicateWindow = 10 * time.Minute
	minDuplicateWindow     = 2 * time.Minute
)

// Subject templates.

var (
	placeholderRe = regexp.MustCompile(`\{[^{}]*\}`)
	streamNameRe  = regexp.MustCompile(`^[^\s.*>/\\]+$`)
)

// subjectTemplate is a parsed nats.subject: literal text and placeholders.
type subjectTemplate struct {
	parts []subjectPart
	raw   string
}

type subjectPart struct {
	lit string
	ph  string // "type", "kind" or "action"; empty for a literal
}

// parseSubject parses a subject template and checks that every subject it
// can render is a valid NATS subject to publish to.
func parseSubject(s string) (subjectTemplate, error) {
	t := subjectTemplate{raw: s}
	if s == "" {
		return t, errors.New("empty")
	}
	last := 0
	for _, loc := range placeholderRe.FindAllStringIndex(s, -1) {
		if loc[0] > last {
			t.parts = append(t.parts, subjectPart{lit: s[last:loc[0]]})
		}
		name := s[loc[0]+1 : loc[1]-1]
		switch name {
		case "type", "kind", "action":
		default:
			return t, fmt.Errorf("unknown placeholder {%s}: use {type}, {kind} or {action}", name)
		}
		t.parts = append(t.parts, subjectPart{ph: name})
		last = loc[1]
	}
	if last < len(s) {
		t.parts = append(t.parts, subjectPart{lit: s[last:]})
	}
	for _, p := range t.parts {
		if p.ph == "" && strings.IndexFunc(p.lit, func(r rune) bool {
			return unicode.IsSpace(r) || unicode.IsControl(r) || strings.ContainsRune("{}*>", r)
		}) >= 0 {
			return t, fmt.Errorf("%q may not contain spaces, control characters, braces, * or > outside a placeholder", s)
		}
	}
	// Render with a type of each shape; the tokens must all be non-empty.
	for _, typ := range []string{"user.created", "group.member_added", "snapshot.started"} {
		subj := t.render(typ)
		for _, tok := range strings.Split(subj, ".") {
			if tok == "" {
				return t, fmt.Errorf("%q renders %q, which has an empty token (a leading, trailing or double dot)", s, subj)
			}
		}
	}
	return t, nil
}

func (t subjectTemplate) render(typ string) string {
	if len(t.parts) == 1 && t.parts[0].ph == "" {
		return t.parts[0].lit
	}
	kind, action, _ := strings.Cut(typ, ".")
	var sb strings.Builder
	for _, p := range t.parts {
		switch p.ph {
		case "":
			sb.WriteString(p.lit)
		case "type":
			sb.WriteString(typ)
		case "kind":
			sb.WriteString(kind)
		case "action":
			sb.WriteString(action)
		}
	}
	return sb.String()
}

// streamSubjects are the subjects of a stream created for the template:
// "<fixed tokens>.>", or the subject itself when it has no placeholder.
func (t subjectTemplate) streamSubjects() ([]string, error) {
	if len(t.parts) == 1 && t.parts[0].ph == "" {
		return []string{t.parts[0].lit}, nil
	}
	if t.parts[0].ph != "" || !strings.HasSuffix(t.parts[0].lit, ".") {
		return nil, fmt.Errorf("create_stream needs a subject that starts with fixed tokens followed by a dot, as in %q, to derive the stream's subjects; %q does not", DefaultSubject, t.raw)
	}
	return []string{t.parts[0].lit + ">"}, nil
}

// subjectMatch reports whether subject is matched by the stream subject
// filter (tokens, "*" for one token, ">" for one or more at the end).
func subjectMatch(filter, subject string) bool {
	f, s := strings.Split(filter, "."), strings.Split(subject, ".")
	for i, tok := range f {
		if tok == ">" {
			return len(s) > i
		}
		if i >= len(s) || (tok != "*" && tok != s[i]) {
			return false
		}
	}
	return len(f) == len(s)
}

// Configuration.

// withDefaults returns c with the subject, stream settings and URLs
// normalized.
func withDefaults(c outbox.NATSConfig) outbox.NATSConfig {
	c.URLs = natsURLs(c.URLs)
	if c.Subject == "" {
		c.Subject = DefaultSubject
	}
	if c.MaxAge == 0 {
		c.MaxAge = DefaultMaxAge
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = DefaultDuplicateWindow
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	return c
}

// natsURLs splits comma-separated entries and adds nats:// where no scheme
// is given.
func natsURLs(in []string) []string {
	out := outbox.SplitList(in)
	for i, u := range out {
		if !strings.Contains(u, "://") {
			out[i] = "nats://" + u
		}
	}
	return out
}

func validate(c *outbox.NATSConfig, prefix string) []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, outbox.InvalidField(prefix+"."+field, format, args...))
	}
	urls := natsURLs(c.URLs)
	if len(urls) == 0 {
		errs = append(errs, &outbox.FieldError{Field: prefix + ".urls", Err: outbox.ErrRequired})
	}
	for i, raw := range urls {
		u, err := url.Parse(raw)
		switch {
		case err != nil:
			bad(fmt.Sprintf("urls[%d]", i), "does not parse") // the error would echo a password in the URL
		case u.Scheme != "nats" && u.Scheme != "tls" && u.Scheme != "ws" && u.Scheme != "wss":
			bad(fmt.Sprintf("urls[%d]", i), "scheme must be nats, tls, ws or wss")
		case u.Hostname() == "":
			bad(fmt.Sprintf("urls[%d]", i), "host required")
		}
	}
	switch {
	case c.Stream == "":
		errs = append(errs, &outbox.FieldError{Field: prefix + ".stream", Err: outbox.ErrRequired})
	case len(c.Stream) > 255 || !streamNameRe.MatchString(c.Stream):
		bad("stream", "%q is not a JetStream stream name (no spaces, dots, *, >, / or \\)", c.Stream)
	}
	subject := c.Subject
	if subject == "" {
		subject = DefaultSubject
	}
	tmpl, err := parseSubject(subject)
	if err != nil {
		bad("subject", "%v", err)
	} else if c.CreateStream {
		if _, err := tmpl.streamSubjects(); err != nil {
			bad("subject", "%v", err)
		}
	}
	if c.MaxAge < 0 {
		bad("max_age", "must not be negative")
	}
	if c.DuplicateWindow < 0 || (c.DuplicateWindow > 0 && c.DuplicateWindow < minDuplicateWindow) {
		bad("duplicate_window", "must be at least %v, so that a redelivery after a lost PubAck or a restart is absorbed", minDuplicateWindow)
	}
	if c.MaxAge > 0 && c.DuplicateWindow > c.MaxAge {
		bad("duplicate_window", "must not exceed max_age")
	} else if c.MaxAge > 0 && c.DuplicateWindow == 0 && DefaultDuplicateWindow > c.MaxAge {
		bad("max_age", "must be at least the duplicate window (%v)", DefaultDuplicateWindow)
	}
	if c.Replicas < 0 || c.Replicas > 5 {
		bad("replicas", "must be between 1 and 5")
	}
	methods := 0
	if c.User != "" || c.Password != "" || c.PasswordFile != "" {
		methods++
		switch {
		case c.User == "":
			errs = append(errs, &outbox.FieldError{Field: prefix + ".user", Err: outbox.ErrRequired})
		case c.Password != "" && c.PasswordFile != "":
			bad("password_file", "set password or password_file, not both")
		case c.Password == "" && c.PasswordFile == "":
			errs = append(errs, &outbox.FieldError{Field: prefix + ".password", Err: fmt.Errorf("%w: a user needs a password or password_file", outbox.ErrRequired)})
		}
	}
	if c.Token != "" || c.TokenFile != "" {
		methods++
		if c.Token != "" && c.TokenFile != "" {
			bad("token_file", "set token or token_file, not both")
		}
	}
	if c.NKeySeedFile != "" {
		methods++
	}
	if c.CredsFile != "" {
		methods++
	}
	if methods > 1 {
		bad("user", "choose one way to authenticate: user/password, token, nkey_seed_file or creds_file")
	}
	errs = append(errs, c.TLS.Validate(prefix+".tls")...)
	return errs
}

// hosts returns the servers as host:port, without scheme or credentials,
// for status.
func hosts(c *outbox.NATSConfig) []string {
	var out []string
	for _, raw := range natsURLs(c.URLs) {
		u, err := url.Parse(raw)
		if err != nil {
			out = append(out, "<invalid url>")
			continue
		}
		out = append(out, u.Host)
	}
	return out
}

// The sender.

// natsConnectRetry is how long a failed connect is reported to every Send
// without dialling again, so that concurrent sends to a server that is down
// do not queue up dials.
const natsConnectRetry = time.Second

// natsSender publishes events to one JetStream stream. It connects on the
// first Send (so a server that is down never stops the gateway from
// starting) and reconnects by itself; Close disconnects, and a later Send
// connects again.
type natsSender struct {
	cfg      outbox.NATSConfig
	subject  subjectTemplate
	subjects []string // of a created stream
	timeout  time.Duration
	signer   outbox.Signer
	extra    [][2]string
	hosts    string
	now      func() time.Time

	mu      sync.Mutex // guards the connection fields
	nc      *nats.Conn
	js      jetstream.JetStream
	created bool // the stream was checked or created on this connection
	failAt  time.Time
	failErr error

	// perm is the last permission violation the server reported
	// asynchronously; a publish that timed out after it is refused, not lost.
	perm atomic.Pointer[natsViolation]
}

type natsViolation struct {
	at   time.Time
	text string
}

// New returns the sender of a nats target. It connects on the first Send.
func New(t outbox.Target) (outbox.Sender, error) {
	if t.NATS == nil {
		return nil, fmt.Errorf("outbox: target %s: nats section required", t.Name)
	}
	if t.Timeout == 0 {
		t.Timeout = outbox.DefaultTimeout
	}
	cfg := withDefaults(*t.NATS)
	tmpl, err := parseSubject(cfg.Subject)
	if err != nil {
		return nil, fmt.Errorf("outbox: target %s: nats.subject: %w", t.Name, err)
	}
	s := &natsSender{cfg: cfg, subject: tmpl, timeout: t.Timeout, now: time.Now,
		hosts: strings.Join(hosts(&cfg), ",")}
	if cfg.CreateStream {
		if s.subjects, err = tmpl.streamSubjects(); err != nil {
			return nil, fmt.Errorf("outbox: target %s: nats.subject: %w", t.Name, err)
		}
	}
	if s.signer, s.extra, err = outbox.StreamExtras(t); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *natsSender) fail(reason string, err error, format string, args ...any) *outbox.StreamError {
	return &outbox.StreamError{System: "nats", Reason: reason, Detail: fmt.Sprintf(format, args...), Err: err}
}

// Send publishes ev to the stream and waits for the PubAck. A duplicate
// PubAck (the event id was already stored within the duplicate window) is
// a delivery too.
func (s *natsSender) Send(ctx context.Context, ev outbox.Event) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	js, nc, err := s.connect(ctx)
	if err != nil {
		return err
	}
	subj := s.subject.render(ev.Type)
	body := ev.Envelope()
	msg := &nats.Msg{Subject: subj, Data: body, Header: nats.Header{}}
	for _, h := range outbox.StreamHeaders(ev, body, s.signer, s.extra, s.now()) {
		msg.Header[h[0]] = []string{h[1]} // as written: NATS headers are case-sensitive
	}
	start := time.Now()
	_, err = js.PublishMsg(ctx, msg, jetstream.WithMsgID(ev.ID), jetstream.WithExpectStream(s.cfg.Stream))
	if err == nil {
		return nil
	}
	cerr := s.classify(ctx, js, nc, subj, len(body), start, err)
	if errors.Is(cerr, errNATSCreated) { // the stream was missing and is now created
		if _, err = js.PublishMsg(ctx, msg, jetstream.WithMsgID(ev.ID), jetstream.WithExpectStream(s.cfg.Stream)); err == nil {
			return nil
		}
		return s.classify(ctx, js, nc, subj, len(body), start, err)
	}
	return cerr
}

// errNATSCreated tells Send that classify created the missing stream.
var errNATSCreated = errors.New("stream created")

// connect returns the connection, dialling when there is none or it was
// closed. Errors are classified.
func (s *natsSender) connect(ctx context.Context) (jetstream.JetStream, *nats.Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nc != nil && !s.nc.IsClosed() {
		if !s.nc.IsConnected() {
			// Reconnecting. Without a reconnect buffer nothing is published
			// behind our back later, so fail now and let the outbox retry.
			return nil, nil, s.fail(outbox.ReasonUnavailable, s.nc.LastError(),
				"connection to %s lost, reconnecting", s.hosts)
		}
		if s.cfg.CreateStream && !s.created {
			if err := s.ensureStream(ctx, s.js); err != nil {
				return nil, nil, err
			}
		}
		return s.js, s.nc, nil
	}
	s.nc, s.js = nil, nil // closed by the server, e.g. after repeated authorization errors
	if s.failErr != nil && time.Since(s.failAt) < natsConnectRetry {
		return nil, nil, s.failErr
	}
	nc, err := s.dial()
	if err == nil {
		var js jetstream.JetStream
		if js, err = jetstream.New(nc); err != nil {
			nc.Close()
			err = s.fail(outbox.ReasonRejected, err, "JetStream")
		} else {
			s.nc, s.js, s.created, s.failErr = nc, js, false, nil
			if s.cfg.CreateStream {
				if err := s.ensureStream(ctx, js); err != nil {
					return nil, nil, err
				}
			}
			return js, nc, nil
		}
	}
	if !outbox.IsPauseTarget(err) { // a paused target dials again as soon as it is resumed
		s.failAt, s.failErr = time.Now(), err
	}
	return nil, nil, err
}

// dial connects with the configured credentials, read afresh.
func (s *natsSender) dial() (*nats.Conn, error) {
	c := s.cfg
	opts := []nats.Option{
		nats.Name("scimgate"),
		nats.Timeout(min(s.timeout, 10*time.Second)),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		// No reconnect buffer: a publish while disconnected fails at once
		// instead of going out minutes later behind the outbox's back.
		nats.ReconnectBufSize(-1),
		nats.ErrorHandler(s.asyncError),
		nats.NoCallbacksAfterClientClose(),
	}
	pause := func(err error) error {
		return outbox.PauseTarget(s.fail(outbox.ReasonAuth, err, "cannot read the credentials; fix the file, then resume the target"))
	}
	switch {
	case c.User != "":
		pw, err := outbox.ReadSecret(c.Password, c.PasswordFile, "nats.password_file")
		if err != nil {
			return nil, pause(err)
		}
		// Re-read on every reconnect; keep the last good value if the file
		// is briefly unreadable (being replaced).
		opts = append(opts, nats.UserInfoHandler(func() (string, string) {
			if p, err := outbox.ReadSecret(c.Password, c.PasswordFile, ""); err == nil {
				pw = p
			}
			return c.User, pw
		}))
	case c.Token != "" || c.TokenFile != "":
		tok, err := outbox.ReadSecret(c.Token, c.TokenFile, "nats.token_file")
		if err != nil {
			return nil, pause(err)
		}
		opts = append(opts, nats.TokenHandler(func() string {
			if t, err := outbox.ReadSecret(c.Token, c.TokenFile, ""); err == nil {
				tok = t
			}
			return tok
		}))
	case c.NKeySeedFile != "":
		o, err := nats.NkeyOptionFromSeed(c.NKeySeedFile) // signs each challenge from the file
		if err != nil {
			return nil, pause(fmt.Errorf("nats.nkey_seed_file: %w", err))
		}
		opts = append(opts, o)
	case c.CredsFile != "":
		if _, err := os.Stat(c.CredsFile); err != nil {
			return nil, pause(fmt.Errorf("nats.creds_file: %w", err))
		}
		opts = append(opts, nats.UserCredentials(c.CredsFile)) // read at every connect
	}
	if c.TLS.On() {
		tc, err := c.TLS.Build("nats.tls")
		if err != nil {
			return nil, pause(err)
		}
		opts = append(opts, nats.Secure(tc))
	}
	nc, err := nats.Connect(strings.Join(c.URLs, ","), opts...)
	if err != nil {
		return nil, s.classifyConnect(err)
	}
	return nc, nil
}

func (s *natsSender) classifyConnect(err error) error {
	err = s.redact(err)
	switch {
	case isNATSAuth(err):
		return outbox.PauseTarget(s.fail(outbox.ReasonAuth, err, "%s refused the credentials; fix the nats credentials, then resume the target", s.hosts))
	case outbox.TLSAuthError(err) || errors.Is(err, nats.ErrSecureConnRequired) || errors.Is(err, nats.ErrSecureConnWanted):
		return outbox.PauseTarget(s.fail(outbox.ReasonAuth, err, "TLS with %s failed; fix nats.tls or the URLs' scheme, then resume the target", s.hosts))
	}
	return s.fail(outbox.ReasonUnavailable, err, "cannot connect to %s", s.hosts)
}

// redact replaces URLs with credentials in err's text by their host.
func (s *natsSender) redact(err error) error {
	msg := err.Error()
	changed := false
	for _, raw := range s.cfg.URLs {
		if u, perr := url.Parse(raw); perr == nil && u.User != nil && strings.Contains(msg, raw) {
			msg, changed = strings.ReplaceAll(msg, raw, u.Host), true
		}
	}
	if !changed {
		return err
	}
	return errors.New(msg)
}

func isNATSAuth(err error) bool {
	return errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) ||
		errors.Is(err, nats.ErrAuthRevoked) || errors.Is(err, nats.ErrAccountAuthExpired) ||
		errors.Is(err, nats.ErrPermissionViolation)
}

// asyncError records permission violations, which the server reports
// apart from the request they concern.
func (s *natsSender) asyncError(_ *nats.Conn, _ *nats.Subscription, err error) {
	if errors.Is(err, nats.ErrPermissionViolation) {
		s.perm.Store(&natsViolation{at: time.Now(), text: err.Error()})
	}
}

// ensureStream creates the stream when it is missing (create_stream). An
// existing stream is left as it is. Called with s.mu held.
func (s *natsSender) ensureStream(ctx context.Context, js jetstream.JetStream) error {
	_, err := js.Stream(ctx, s.cfg.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = js.CreateStream(ctx, jetstream.StreamConfig{
			Name:        s.cfg.Stream,
			Description: "scimgate events (created by scimgate)",
			Subjects:    s.subjects,
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			MaxAge:      s.cfg.MaxAge,
			Duplicates:  s.cfg.DuplicateWindow,
			Replicas:    s.cfg.Replicas,
		})
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) { // another gateway was quicker
			_, err = js.Stream(ctx, s.cfg.Stream)
		}
	}
	if err != nil {
		return s.classify(ctx, js, s.nc, "", 0, time.Now(), fmt.Errorf("create stream %s: %w", s.cfg.Stream, err))
	}
	s.created = true
	return nil
}

// classify turns a failed publish (or stream lookup) into the dispatcher's
// terms. subj is empty for a stream lookup.
func (s *natsSender) classify(ctx context.Context, js jetstream.JetStream, nc *nats.Conn, subj string, size int, start time.Time, err error) error {
	stream := s.cfg.Stream
	var api *jetstream.APIError
	isAPI := errors.As(err, &api)
	switch {
	case errors.Is(err, nats.ErrMaxPayload):
		return outbox.Permanent(s.fail(outbox.ReasonTooLarge, err, "the message (%d bytes) is larger than the server's max_payload (%d bytes); raise max_payload on the server, then replay the dead letter", size, nc.MaxPayload()))
	case errors.Is(err, jetstream.ErrStreamMessageExceedsMaximum):
		limit := ""
		if st, lerr := js.Stream(ctx, stream); lerr == nil {
			limit = fmt.Sprintf(" (%d bytes)", st.CachedInfo().Config.MaxMsgSize)
		}
		return outbox.Permanent(s.fail(outbox.ReasonTooLarge, err, "the message (%d bytes) exceeds stream %s's max_msg_size%s; raise it, then replay the dead letter", size, stream, limit))
	case isAPI && api.ErrorCode == 10060: // JSStreamNotMatchErr: the subject is another stream's
		return outbox.Permanent(s.fail(outbox.ReasonNotInStream, err, "subject %s is captured by another stream, not %s; change nats.subject or the streams' subjects, then replay the dead letter", subj, stream))
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
		return s.fail(outbox.ReasonUnavailable, err, "JetStream is not enabled on %s for this account", s.hosts)
	case errors.Is(err, jetstream.ErrStreamNotFound), subj != "" && errors.Is(err, jetstream.ErrNoStreamResponse):
		return s.diagnose(ctx, js, subj, err)
	case isNATSAuth(err):
		return outbox.PauseTarget(s.fail(outbox.ReasonAuth, err, "not authorized; grant the nats user publish permission on %s (and $JS.API.> for create_stream), then resume the target", s.subjectHint(subj)))
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		if v := s.perm.Load(); v != nil && !v.at.Before(start) {
			return outbox.PauseTarget(s.fail(outbox.ReasonAuth, err, "the server refused the publish (%s); grant the nats user publish permission on the subjects and subscribe permission on _INBOX.>, then resume the target", v.text))
		}
		if !nc.IsConnected() {
			return s.fail(outbox.ReasonUnavailable, err, "connection to %s lost", s.hosts)
		}
		return s.fail(outbox.ReasonTimeout, err, "no PubAck from stream %s within %v", stream, s.timeout)
	case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, nats.ErrReconnectBufExceeded), errors.Is(err, nats.ErrNoServers),
		errors.Is(err, nats.ErrDisconnected), errors.Is(err, jetstream.ErrNoStreamResponse):
		return s.fail(outbox.ReasonUnavailable, err, "not connected to %s", s.hosts)
	case errors.Is(err, context.Canceled):
		return err // shutting down; the event stays pending
	case isAPI && api.ErrorCode == 10077 && strings.Contains(api.Description, "maximum"):
		return s.fail(outbox.ReasonFull, err, "stream %s is full and discards new messages; raise its limits", stream)
	case isAPI && strings.Contains(strings.ToLower(api.Description), "leader"):
		return s.fail(outbox.ReasonLeader, err, "stream %s is electing a leader", stream)
	case isAPI:
		return s.fail(outbox.ReasonRejected, err, "stream %s refused the message", stream)
	}
	return s.fail(outbox.ReasonRejected, s.redact(err), "publish to stream %s", stream)
}

// subjectHint names the subject of a failed publish, or the subjects of a
// created stream for a stream operation.
func (s *natsSender) subjectHint(subj string) string {
	if subj != "" {
		return subj
	}
	return strings.Join(s.subjects, ", ")
}

// diagnose explains a publish nobody answered: the stream is missing (then
// created if configured), the subject is not one of the stream's, or the
// stream is there but did not answer (leader election, server restart).
func (s *natsSender) diagnose(ctx context.Context, js jetstream.JetStream, subj string, perr error) error {
	stream := s.cfg.Stream
	st, err := js.Stream(ctx, stream)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		if s.cfg.CreateStream && subj != "" {
			s.mu.Lock()
			s.created = false
			cerr := s.ensureStream(ctx, js)
			s.mu.Unlock()
			if cerr != nil {
				return cerr
			}
			return errNATSCreated
		}
		return s.fail(outbox.ReasonMissing, perr, "stream %s does not exist; create it with subjects that include %s, or set nats.create_stream: true", stream, s.subjectHint(subj))
	case err != nil:
		var api *jetstream.APIError
		if isNATSAuth(err) || (errors.As(err, &api) && api.Code == 403) {
			return outbox.PauseTarget(s.fail(outbox.ReasonAuth, err, "not authorized to look up stream %s; grant the nats user access to $JS.API.STREAM.INFO.%s, then resume the target", stream, stream))
		}
		return s.fail(outbox.ReasonUnavailable, perr, "stream %s did not answer (JetStream unavailable or electing a leader): %v", stream, err)
	}
	if subj == "" {
		return s.fail(outbox.ReasonUnavailable, perr, "stream %s did not answer", stream)
	}
	subjects := st.CachedInfo().Config.Subjects
	if !slices.ContainsFunc(subjects, func(f string) bool { return subjectMatch(f, subj) }) {
		return outbox.Permanent(s.fail(outbox.ReasonNotInStream, perr, "subject %s is not in stream %s (subjects %s); add it to the stream's subjects or change nats.subject, then replay the dead letter",
			subj, stream, strings.Join(subjects, ", ")))
	}
	return s.fail(outbox.ReasonLeader, perr, "stream %s did not acknowledge (leader election or restart)", stream)
}

// Close disconnects. A later Send connects again.
func (s *natsSender) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nc != nil {
		s.nc.Close()
	}
	s.nc, s.js, s.created, s.failErr = nil, nil, false, nil
	return nil
}
