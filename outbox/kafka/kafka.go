// Package kafka is the outbox's Apache Kafka transport: each event is one
// record produced into a topic, keyed by its resource, with acks=all and an
// idempotent producer. The command registers Transport() under the type
// "kafka"; the settings are outbox.KafkaConfig (the target's kafka section).
package kafka

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/scimgate/scimgate/outbox"
)

// Transport returns the Kafka transport, for outbox.Config.Transports.
func Transport() outbox.Transport {
	return outbox.Transport{
		Validate: Validate,
		New:      func(t outbox.Target, _ outbox.Env) (outbox.Sender, error) { return New(t) },
		Describe: Describe,
	}
}

// Validate checks a kafka target's own settings: its kafka section, and
// no url. prefix is the target's YAML path ("outbox.targets[2]").
func Validate(t outbox.Target, prefix string) []error {
	var errs []error
	if t.URL != "" {
		errs = append(errs, outbox.InvalidField(prefix+".url", "a kafka target takes its brokers in kafka.brokers, not url"))
	}
	if t.Kafka == nil {
		return append(errs, &outbox.FieldError{Field: prefix + ".kafka", Err: outbox.ErrRequired})
	}
	return append(errs, validate(t.Kafka, prefix+".kafka")...)
}

// Describe names where t delivers, for status and logs: its brokers and
// topic.
func Describe(t outbox.Target) string {
	if t.Kafka == nil {
		return "kafka"
	}
	return "kafka://" + strings.Join(t.Kafka.Brokers, ",") + " topic " + t.Kafka.Topic
}

// DefaultKafkaMaxMessageBytes is the record batch limit of a kafka target
// that sets none, just under Kafka's default message.max.bytes.
const DefaultKafkaMaxMessageBytes = 1000000

var topicNameRe = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

// withDefaults returns c with brokers split and defaults applied.
func withDefaults(c outbox.KafkaConfig) outbox.KafkaConfig {
	c.Brokers = outbox.SplitList(c.Brokers)
	if c.Partitions == 0 {
		c.Partitions = 1
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = -1 // the brokers' default.replication.factor
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = DefaultKafkaMaxMessageBytes
	}
	return c
}

func validate(c *outbox.KafkaConfig, prefix string) []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, outbox.InvalidField(prefix+"."+field, format, args...))
	}
	brokers := outbox.SplitList(c.Brokers)
	if len(brokers) == 0 {
		errs = append(errs, &outbox.FieldError{Field: prefix + ".brokers", Err: outbox.ErrRequired})
	}
	for i, b := range brokers {
		host, port, err := net.SplitHostPort(b)
		if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
			bad(fmt.Sprintf("brokers[%d]", i), "%q is not host:port", b)
		}
	}
	switch {
	case c.Topic == "":
		errs = append(errs, &outbox.FieldError{Field: prefix + ".topic", Err: outbox.ErrRequired})
	case c.Topic == "." || c.Topic == ".." || !topicNameRe.MatchString(c.Topic):
		bad("topic", "%q is not a Kafka topic name (letters, digits, '.', '_', '-'; at most 249)", c.Topic)
	}
	if c.Partitions < 0 {
		bad("partitions", "must not be negative")
	}
	if c.ReplicationFactor < 0 {
		bad("replication_factor", "must not be negative (0: the brokers' default)")
	}
	if c.MaxMessageBytes != 0 && (c.MaxMessageBytes < 1024 || c.MaxMessageBytes > 1<<30) {
		bad("max_message_bytes", "must be between 1024 and 1073741824")
	}
	errs = append(errs, c.TLS.Validate(prefix+".tls")...)
	if a := c.SASL; a != nil {
		switch strings.ToUpper(a.Mechanism) {
		case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
		case "":
			errs = append(errs, &outbox.FieldError{Field: prefix + ".sasl.mechanism", Err: fmt.Errorf("%w: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", outbox.ErrRequired)})
		default:
			bad("sasl.mechanism", "%q: use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", a.Mechanism)
		}
		if a.Username == "" {
			errs = append(errs, &outbox.FieldError{Field: prefix + ".sasl.username", Err: outbox.ErrRequired})
		}
		switch {
		case a.Password != "" && a.PasswordFile != "":
			bad("sasl.password_file", "set password or password_file, not both")
		case a.Password == "" && a.PasswordFile == "":
			errs = append(errs, &outbox.FieldError{Field: prefix + ".sasl.password", Err: fmt.Errorf("%w: or password_file", outbox.ErrRequired)})
		}
	}
	return errs
}

// kafkaSender produces events to one topic. The client is built on the
// first Send and dials lazily, so brokers that are down never stop the
// gateway from starting; Close closes it, and a later Send builds a new one.
type kafkaSender struct {
	cfg     outbox.KafkaConfig
	timeout time.Duration
	signer  outbox.Signer
	extra   [][2]string
	hosts   string
	now     func() time.Time

	mu      sync.Mutex // guards the client fields
	cl      *kgo.Client
	adm     *kadm.Client
	ready   bool  // the topic was checked (created) and its limit read with this client
	limit   int32 // the client's batch limit: min(max_message_bytes, topic's max.message.bytes)
	byTopic bool  // limit is the topic's max.message.bytes

	// dial is the last connection failure (dial, TLS or SASL), which
	// explains a produce that timed out.
	dial atomic.Pointer[kafkaDialErr]
}

type kafkaDialErr struct {
	at   time.Time
	host string
	err  error
}

// New returns the sender of a kafka target. Its client dials on the first
// Send.
func New(t outbox.Target) (outbox.Sender, error) {
	if t.Kafka == nil {
		return nil, fmt.Errorf("outbox: target %s: kafka section required", t.Name)
	}
	if t.Timeout == 0 {
		t.Timeout = outbox.DefaultTimeout
	}
	cfg := withDefaults(*t.Kafka)
	s := &kafkaSender{cfg: cfg, timeout: t.Timeout, now: time.Now,
		hosts: strings.Join(cfg.Brokers, ","), limit: cfg.MaxMessageBytes}
	var err error
	if s.signer, s.extra, err = outbox.StreamExtras(t); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *kafkaSender) fail(reason string, err error, format string, args ...any) *outbox.StreamError {
	return &outbox.StreamError{System: "kafka", Reason: reason, Detail: fmt.Sprintf(format, args...), Err: err}
}

// kafkaKey is a record's key: the primary resource of the event (the first
// Resources entry, "User/<id>" or "Group/<id>"), or the first part of its
// type ("snapshot") for an event about no resource.
func kafkaKey(ev outbox.Event) []byte {
	if len(ev.Resources) > 0 && ev.Resources[0] != "" {
		return []byte(ev.Resources[0])
	}
	kind, _, _ := strings.Cut(ev.Type, ".")
	return []byte(kind)
}

// recordBound is an upper bound of a record's size inside a batch of its
// own: the batch header, the record's varints and its bytes.
func recordBound(r *kgo.Record) int {
	n := 61 + 40 + len(r.Key) + len(r.Value)
	for _, h := range r.Headers {
		n += 10 + len(h.Key) + len(h.Value)
	}
	return n
}

// Send produces ev and waits until every in-sync replica has it (acks=all).
func (s *kafkaSender) Send(ctx context.Context, ev outbox.Event) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	cl, lim, err := s.client(ctx, false)
	if err != nil {
		return err
	}
	body := ev.Envelope()
	rec := &kgo.Record{Topic: s.cfg.Topic, Key: kafkaKey(ev), Value: body}
	for _, h := range outbox.StreamHeaders(ev, body, s.signer, s.extra, s.now()) {
		rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: h[0], Value: []byte(h[1])})
	}
	if n := recordBound(rec); n > int(lim.bytes) {
		// The topic's limit may have been raised since it was read.
		if cl, lim, err = s.client(ctx, true); err != nil {
			return err
		}
		if n > int(lim.bytes) {
			return outbox.Permanent(s.tooLarge(n, lim, nil))
		}
	}
	start := time.Now()
	err = cl.ProduceSync(ctx, rec).FirstErr()
	if err == nil {
		return nil
	}
	if errors.Is(err, kerr.UnknownTopicOrPartition) || errors.Is(err, kerr.UnknownTopicID) {
		// The topic is gone, or was deleted and created again under a new
		// id: the client would keep producing to the id and partitions it
		// knows (UNKNOWN_TOPIC_ID until a restart). Make it forget them, so
		// that the next produce looks the topic up afresh, and check (and
		// create) the topic again.
		s.mu.Lock()
		purge := s.cl == cl
		s.ready = false
		s.mu.Unlock()
		if purge {
			cl.PurgeTopicsFromClient(s.cfg.Topic)
		}
		if s.cfg.CreateTopic {
			if cl, _, err = s.client(ctx, false); err != nil {
				return err
			}
			if err = cl.ProduceSync(ctx, rec).FirstErr(); err == nil {
				return nil
			}
		}
	}
	err = s.classify(ctx, err, rec, start)
	if outbox.IsPauseTarget(err) {
		s.mu.Lock()
		s.drop(cl)
		s.mu.Unlock()
	}
	return err
}

// drop closes cl if it is the current client, so that the next Send builds
// a new one: franz-go keeps a refused producer ID request (cluster
// authorization) as the client's fate, and a resumed target needs a fresh
// start. Called with s.mu held.
func (s *kafkaSender) drop(cl *kgo.Client) {
	if cl != nil && s.cl == cl {
		s.cl.Close()
		s.cl, s.adm, s.ready = nil, nil, false
	}
}

// kafkaLimit is the batch limit a client was built with.
type kafkaLimit struct {
	bytes   int32
	byTopic bool // it is the topic's max.message.bytes, not max_message_bytes
}

func (s *kafkaSender) tooLarge(n int, lim kafkaLimit, err error) error {
	if lim.byTopic {
		return s.fail(outbox.ReasonTooLarge, err, "the record (about %d bytes) exceeds topic %s's max.message.bytes (%d); raise it, then replay the dead letter", n, s.cfg.Topic, lim.bytes)
	}
	return s.fail(outbox.ReasonTooLarge, err, "the record (about %d bytes) exceeds kafka.max_message_bytes (%d); raise it (and the topic's max.message.bytes), then replay the dead letter", n, lim.bytes)
}

// client returns the client and its batch limit, building the client and
// checking (or creating) the topic when needed. refresh reads the topic's
// max.message.bytes again and rebuilds the client when it changed.
func (s *kafkaSender) client(ctx context.Context, refresh bool) (*kgo.Client, kafkaLimit, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cl == nil {
		if err := s.build(s.limit); err != nil {
			return nil, kafkaLimit{}, err
		}
	}
	if !s.ready || refresh {
		if err := s.prepare(ctx); err != nil {
			if outbox.IsPauseTarget(err) {
				s.drop(s.cl)
			}
			return nil, kafkaLimit{}, err
		}
	}
	return s.cl, kafkaLimit{s.limit, s.byTopic}, nil
}

// build replaces the client by one with batch limit limit. Called with
// s.mu held.
func (s *kafkaSender) build(limit int32) error {
	c := s.cfg
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.Brokers...),
		kgo.ClientID("scimgate"),
		kgo.RequiredAcks(kgo.AllISRAcks()), // and idempotent, the default
		// Without this, a record in flight to a broker that went away is
		// never given up, and Send would outlive its timeout and shutdown.
		// The price is a possible duplicate on the retry, which consumers
		// absorb on webhook-id as they do for every at-least-once delivery.
		kgo.AllowIdempotentProduceCancellation(),
		kgo.ProducerBatchMaxBytes(limit),
		kgo.DialTimeout(min(s.timeout, 10*time.Second)),
		// Recover within about a second of a broker coming back (the
		// defaults wait up to 5s for fresh metadata).
		kgo.MetadataMinAge(time.Second),
		kgo.WithHooks(kafkaHook{s}),
	}
	if c.TLS.On() {
		tc, err := c.TLS.Build("kafka.tls")
		if err != nil {
			return outbox.PauseTarget(s.fail(outbox.ReasonAuth, err, "cannot read the TLS files; fix them, then resume the target"))
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	if a := c.SASL; a != nil {
		if _, err := outbox.ReadSecret(a.Password, a.PasswordFile, "kafka.sasl.password_file"); err != nil {
			return outbox.PauseTarget(s.fail(outbox.ReasonAuth, err, "cannot read the credentials; fix the file, then resume the target"))
		}
		opts = append(opts, kgo.SASL(kafkaMechanism(*a)))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return s.fail(outbox.ReasonRejected, err, "kafka client options")
	}
	if s.cl != nil {
		s.cl.Close() // sends in flight on it fail with ErrClientClosed and are retried
	}
	s.cl, s.adm, s.limit, s.ready = cl, kadm.NewClient(cl), limit, false
	return nil
}

// kafkaMechanism returns the SASL mechanism; the password file is read at
// every authentication.
func kafkaMechanism(a outbox.KafkaSASL) sasl.Mechanism {
	pass := func() (string, error) {
		p, err := outbox.ReadSecret(a.Password, a.PasswordFile, "kafka.sasl.password_file")
		if err != nil {
			return "", &kafkaCredError{err}
		}
		return p, nil
	}
	switch strings.ToUpper(a.Mechanism) {
	case "SCRAM-SHA-256", "SCRAM-SHA-512":
		fn := func(context.Context) (scram.Auth, error) {
			p, err := pass()
			return scram.Auth{User: a.Username, Pass: p}, err
		}
		if strings.ToUpper(a.Mechanism) == "SCRAM-SHA-512" {
			return scram.Sha512(fn)
		}
		return scram.Sha256(fn)
	}
	return plain.Plain(func(context.Context) (plain.Auth, error) {
		p, err := pass()
		return plain.Auth{User: a.Username, Pass: p}, err
	})
}

type kafkaCredError struct{ err error }

func (e *kafkaCredError) Error() string { return e.err.Error() }
func (e *kafkaCredError) Unwrap() error { return e.err }

// prepare creates the topic if configured and missing, and reads its
// max.message.bytes, rebuilding the client when the limit changes. Called
// with s.mu held.
func (s *kafkaSender) prepare(ctx context.Context) error {
	topic := s.cfg.Topic
	if s.cfg.CreateTopic {
		td, err := s.adm.ListTopics(ctx, topic)
		if err != nil {
			return s.classify(ctx, err, nil, time.Now())
		}
		if d, ok := td[topic]; !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
			resp, err := s.adm.CreateTopic(ctx, s.cfg.Partitions, s.cfg.ReplicationFactor, nil, topic)
			if err == nil {
				err = resp.Err
			}
			if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
				return s.classify(ctx, fmt.Errorf("create topic %s: %w", topic, err), nil, time.Now())
			}
		}
	}
	limit, byTopic := s.cfg.MaxMessageBytes, false
	if rcs, err := s.adm.DescribeTopicConfigs(ctx, topic); err == nil {
		if rc, err := rcs.On(topic, nil); err == nil && rc.Err == nil {
			for _, c := range rc.Configs {
				if c.Key != "max.message.bytes" || c.Value == nil {
					continue
				}
				if v, err := strconv.ParseInt(*c.Value, 10, 32); err == nil && v > 0 && int32(v) <= limit {
					limit, byTopic = int32(v), true
				}
			}
		}
	} // else: not allowed to describe, or no topic yet; the broker still enforces its limit
	if limit != s.limit {
		if err := s.build(limit); err != nil {
			return err
		}
	}
	s.byTopic, s.ready = byTopic, true
	return nil
}

// kafkaHook records connection failures for classify.
type kafkaHook struct{ s *kafkaSender }

// OnBrokerConnect implements kgo.HookBrokerConnect.
func (h kafkaHook) OnBrokerConnect(meta kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if err != nil {
		h.s.dial.Store(&kafkaDialErr{at: time.Now(), host: net.JoinHostPort(meta.Host, strconv.Itoa(int(meta.Port))), err: err})
	}
}

func isKafkaAuth(err error) bool {
	var ce *kafkaCredError
	return errors.Is(err, kerr.SaslAuthenticationFailed) || errors.Is(err, kerr.IllegalSaslState) ||
		errors.Is(err, kerr.UnsupportedSaslMechanism) || errors.As(err, &ce) || outbox.TLSAuthError(err)
}

// classify turns a failed produce (rec set) or topic operation (rec nil)
// into the dispatcher's terms.
func (s *kafkaSender) classify(ctx context.Context, err error, rec *kgo.Record, start time.Time) error {
	topic := s.cfg.Topic
	switch {
	case errors.Is(err, context.Canceled) && ctx.Err() == context.Canceled:
		return err // shutting down; the event stays pending
	case rec != nil && (errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge)):
		// The broker's limit is below the one the producer batches to:
		// read it again, so that the next batches fit.
		_, lim, cerr := s.client(ctx, true)
		if n := recordBound(rec); cerr == nil && n > int(lim.bytes) {
			return outbox.Permanent(s.tooLarge(n, lim, err))
		}
		return s.fail(outbox.ReasonTooLarge, err, "a batch was larger than topic %s accepts; the producer now batches to its limit", topic)
	case errors.Is(err, kerr.TopicAuthorizationFailed):
		return outbox.PauseTarget(s.fail(outbox.ReasonAuth, err, "not authorized on topic %s; grant the principal WRITE and DESCRIBE on it (and CREATE for create_topic), then resume the target", topic))
	case errors.Is(err, kerr.ClusterAuthorizationFailed):
		return outbox.PauseTarget(s.fail(outbox.ReasonAuth, err, "not authorized to produce: the idempotent producer needs WRITE on topic %s (Kafka 3.0 and later) or IDEMPOTENT_WRITE on the cluster (earlier brokers), and create_topic needs CREATE; grant them, then resume the target", topic))
	case isKafkaAuth(err):
		return outbox.PauseTarget(s.fail(outbox.ReasonAuth, err, "%s refused the connection's credentials or TLS; fix kafka.sasl or kafka.tls, then resume the target", s.hosts))
	case errors.Is(err, kerr.UnknownTopicOrPartition), errors.Is(err, kerr.UnknownTopicID):
		if s.cfg.CreateTopic {
			return s.fail(outbox.ReasonMissing, err, "topic %s does not exist (deleted?); it is created again at the next attempt", topic)
		}
		return s.fail(outbox.ReasonMissing, err, "topic %s does not exist; create it or set kafka.create_topic: true", topic)
	case errors.Is(err, kerr.NotLeaderForPartition), errors.Is(err, kerr.LeaderNotAvailable),
		errors.Is(err, kerr.FencedLeaderEpoch), errors.Is(err, kerr.UnknownLeaderEpoch),
		errors.Is(err, kerr.NotEnoughReplicas), errors.Is(err, kerr.NotEnoughReplicasAfterAppend),
		errors.Is(err, kerr.BrokerNotAvailable), errors.Is(err, kerr.ReplicaNotAvailable):
		return s.fail(outbox.ReasonLeader, err, "topic %s is changing leaders or lacks in-sync replicas", topic)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, kgo.ErrRecordTimeout), errors.Is(err, kgo.ErrRecordRetries):
		if d := s.dial.Load(); d != nil && !d.at.Before(start) {
			if isKafkaAuth(d.err) {
				return outbox.PauseTarget(s.fail(outbox.ReasonAuth, d.err, "%s refused the connection's credentials or TLS; fix kafka.sasl or kafka.tls, then resume the target", d.host))
			}
			return s.fail(outbox.ReasonUnavailable, d.err, "cannot reach broker %s", d.host)
		}
		return s.fail(outbox.ReasonTimeout, err, "no acknowledgement from topic %s within %v", topic, s.timeout)
	case errors.Is(err, kgo.ErrClientClosed):
		return s.fail(outbox.ReasonUnavailable, err, "the producer was closed or rebuilt")
	case errors.Is(err, kerr.InvalidRecord), errors.Is(err, kerr.CorruptMessage):
		return outbox.Permanent(s.fail(outbox.ReasonRejected, err, "topic %s refused the record", topic))
	}
	var ke *kerr.Error
	if errors.As(err, &ke) {
		return s.fail(outbox.ReasonRejected, err, "topic %s refused the record", topic)
	}
	return s.fail(outbox.ReasonUnavailable, err, "produce to topic %s", topic)
}

// Close closes the client. A later Send builds a new one.
func (s *kafkaSender) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cl != nil {
		s.cl.Close()
	}
	s.cl, s.adm, s.ready = nil, nil, false
	return nil
}
