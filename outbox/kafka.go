package outbox

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
)

// KafkaConfig is the kafka section of a target of type kafka: an Apache
// Kafka topic that events are produced into, one record per event, keyed by
// the resource it concerns, with acks=all and an idempotent producer.
// docs/streams.md describes every key.
type KafkaConfig struct {
	// Brokers are the seed brokers, host:port; an entry may hold several
	// separated by commas (as SCIMGATE_KAFKA_BROKERS may).
	Brokers []string `yaml:"brokers"`
	// Topic receives every event.
	Topic string `yaml:"topic"`
	// CreateTopic creates the topic when it is missing, with Partitions
	// and ReplicationFactor below and the brokers' defaults otherwise. An
	// existing topic is never changed.
	CreateTopic bool `yaml:"create_topic"`
	// Partitions of a created topic; 0 means 1, which keeps every event in
	// one total order (docs/streams.md, ordering).
	Partitions int32 `yaml:"partitions"`
	// ReplicationFactor of a created topic; 0 means the brokers' default.
	ReplicationFactor int16 `yaml:"replication_factor"`
	// MaxMessageBytes bounds a record batch, as the topic's
	// max.message.bytes does (the smaller of the two applies); 0 means
	// 1000000. A larger event is dead-lettered.
	MaxMessageBytes int32 `yaml:"max_message_bytes"`
	// TLS configures TLS to the brokers.
	TLS *TLSConfig `yaml:"tls"`
	// SASL authenticates to the brokers.
	SASL *KafkaSASL `yaml:"sasl"`
}

// KafkaSASL is SASL authentication for a kafka target.
type KafkaSASL struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
	Mechanism string `yaml:"mechanism"`
	Username  string `yaml:"username"`
	// Password, or PasswordFile: a file read at every connection, so that a
	// rotated secret is picked up without a restart.
	Password     string `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
}

// DefaultKafkaMaxMessageBytes is the record batch limit of a kafka target
// that sets none, just under Kafka's default message.max.bytes.
const DefaultKafkaMaxMessageBytes = 1000000

var topicNameRe = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

// withDefaults returns c with brokers split and defaults applied.
func (c KafkaConfig) withDefaults() KafkaConfig {
	c.Brokers = splitList(c.Brokers)
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

func (c *KafkaConfig) validate(prefix string) []error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, invalidField(prefix+"."+field, format, args...))
	}
	brokers := splitList(c.Brokers)
	if len(brokers) == 0 {
		errs = append(errs, &FieldError{Field: prefix + ".brokers", Err: ErrRequired})
	}
	for i, b := range brokers {
		host, port, err := net.SplitHostPort(b)
		if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
			bad(fmt.Sprintf("brokers[%d]", i), "%q is not host:port", b)
		}
	}
	switch {
	case c.Topic == "":
		errs = append(errs, &FieldError{Field: prefix + ".topic", Err: ErrRequired})
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
	errs = append(errs, c.TLS.validate(prefix+".tls")...)
	if a := c.SASL; a != nil {
		switch strings.ToUpper(a.Mechanism) {
		case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
		case "":
			errs = append(errs, &FieldError{Field: prefix + ".sasl.mechanism", Err: fmt.Errorf("%w: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", ErrRequired)})
		default:
			bad("sasl.mechanism", "%q: use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", a.Mechanism)
		}
		if a.Username == "" {
			errs = append(errs, &FieldError{Field: prefix + ".sasl.username", Err: ErrRequired})
		}
		switch {
		case a.Password != "" && a.PasswordFile != "":
			bad("sasl.password_file", "set password or password_file, not both")
		case a.Password == "" && a.PasswordFile == "":
			errs = append(errs, &FieldError{Field: prefix + ".sasl.password", Err: fmt.Errorf("%w: or password_file", ErrRequired)})
		}
	}
	return errs
}

// kafkaSender produces events to one topic. The client is built on the
// first Send and dials lazily, so brokers that are down never stop the
// gateway from starting; Close closes it, and a later Send builds a new one.
type kafkaSender struct {
	cfg     KafkaConfig
	timeout time.Duration
	keys    [][]byte
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

func newKafkaSender(t Target, m *Metrics) (Sender, error) {
	if t.Kafka == nil {
		return nil, fmt.Errorf("outbox: target %s: kafka section required", t.Name)
	}
	t = t.withDefaults()
	cfg := t.Kafka.withDefaults()
	s := &kafkaSender{cfg: cfg, timeout: t.Timeout, now: time.Now,
		hosts: strings.Join(cfg.Brokers, ","), limit: cfg.MaxMessageBytes}
	var err error
	if s.keys, s.extra, err = targetExtras(t); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *kafkaSender) fail(reason string, err error, format string, args ...any) *StreamError {
	return streamErr("kafka", reason, err, format, args...)
}

// kafkaKey is a record's key: the primary resource of the event (the first
// Resources entry, "User/<id>" or "Group/<id>"), or the first part of its
// type ("snapshot") for an event about no resource.
func kafkaKey(ev Event) []byte {
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
func (s *kafkaSender) Send(ctx context.Context, ev Event) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	cl, lim, err := s.client(ctx, false)
	if err != nil {
		return err
	}
	body := ev.Envelope()
	rec := &kgo.Record{Topic: s.cfg.Topic, Key: kafkaKey(ev), Value: body}
	for _, h := range streamHeaders(ev, body, s.keys, s.extra, s.now()) {
		rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: h[0], Value: []byte(h[1])})
	}
	if n := recordBound(rec); n > int(lim.bytes) {
		// The topic's limit may have been raised since it was read.
		if cl, lim, err = s.client(ctx, true); err != nil {
			return err
		}
		if n > int(lim.bytes) {
			return Permanent(s.tooLarge(n, lim, nil))
		}
	}
	start := time.Now()
	err = cl.ProduceSync(ctx, rec).FirstErr()
	if err == nil {
		return nil
	}
	if errors.Is(err, kerr.UnknownTopicOrPartition) || errors.Is(err, kerr.UnknownTopicID) {
		s.mu.Lock()
		s.ready = false // check (and create) the topic again
		s.mu.Unlock()
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
	var pe *pauseError
	if errors.As(err, &pe) {
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
		return s.fail(ReasonTooLarge, err, "the record (about %d bytes) exceeds topic %s's max.message.bytes (%d); raise it, then replay the dead letter", n, s.cfg.Topic, lim.bytes)
	}
	return s.fail(ReasonTooLarge, err, "the record (about %d bytes) exceeds kafka.max_message_bytes (%d); raise it (and the topic's max.message.bytes), then replay the dead letter", n, lim.bytes)
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
			var pe *pauseError
			if errors.As(err, &pe) {
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
	if c.TLS.on() {
		tc, err := c.TLS.build("kafka.tls")
		if err != nil {
			return PauseTarget(s.fail(ReasonAuth, err, "cannot read the TLS files; fix them, then resume the target"))
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	if a := c.SASL; a != nil {
		if _, err := readSecret(a.Password, a.PasswordFile, "kafka.sasl.password_file"); err != nil {
			return PauseTarget(s.fail(ReasonAuth, err, "cannot read the credentials; fix the file, then resume the target"))
		}
		opts = append(opts, kgo.SASL(kafkaMechanism(*a)))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return s.fail(ReasonRejected, err, "kafka client options")
	}
	if s.cl != nil {
		s.cl.Close() // sends in flight on it fail with ErrClientClosed and are retried
	}
	s.cl, s.adm, s.limit, s.ready = cl, kadm.NewClient(cl), limit, false
	return nil
}

// kafkaMechanism returns the SASL mechanism; the password file is read at
// every authentication.
func kafkaMechanism(a KafkaSASL) sasl.Mechanism {
	pass := func() (string, error) {
		p, err := readSecret(a.Password, a.PasswordFile, "kafka.sasl.password_file")
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
		errors.Is(err, kerr.UnsupportedSaslMechanism) || errors.As(err, &ce) || tlsAuthError(err)
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
			return Permanent(s.tooLarge(n, lim, err))
		}
		return s.fail(ReasonTooLarge, err, "a batch was larger than topic %s accepts; the producer now batches to its limit", topic)
	case errors.Is(err, kerr.TopicAuthorizationFailed):
		return PauseTarget(s.fail(ReasonAuth, err, "not authorized on topic %s; grant the principal WRITE and DESCRIBE on it (and CREATE for create_topic), then resume the target", topic))
	case errors.Is(err, kerr.ClusterAuthorizationFailed):
		return PauseTarget(s.fail(ReasonAuth, err, "not authorized to produce: the idempotent producer needs WRITE on topic %s (Kafka 3.0 and later) or IDEMPOTENT_WRITE on the cluster (earlier brokers), and create_topic needs CREATE; grant them, then resume the target", topic))
	case isKafkaAuth(err):
		return PauseTarget(s.fail(ReasonAuth, err, "%s refused the connection's credentials or TLS; fix kafka.sasl or kafka.tls, then resume the target", s.hosts))
	case errors.Is(err, kerr.UnknownTopicOrPartition), errors.Is(err, kerr.UnknownTopicID):
		return s.fail(ReasonMissing, err, "topic %s does not exist; create it or set kafka.create_topic: true", topic)
	case errors.Is(err, kerr.NotLeaderForPartition), errors.Is(err, kerr.LeaderNotAvailable),
		errors.Is(err, kerr.FencedLeaderEpoch), errors.Is(err, kerr.UnknownLeaderEpoch),
		errors.Is(err, kerr.NotEnoughReplicas), errors.Is(err, kerr.NotEnoughReplicasAfterAppend),
		errors.Is(err, kerr.BrokerNotAvailable), errors.Is(err, kerr.ReplicaNotAvailable):
		return s.fail(ReasonLeader, err, "topic %s is changing leaders or lacks in-sync replicas", topic)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, kgo.ErrRecordTimeout), errors.Is(err, kgo.ErrRecordRetries):
		if d := s.dial.Load(); d != nil && !d.at.Before(start) {
			if isKafkaAuth(d.err) {
				return PauseTarget(s.fail(ReasonAuth, d.err, "%s refused the connection's credentials or TLS; fix kafka.sasl or kafka.tls, then resume the target", d.host))
			}
			return s.fail(ReasonUnavailable, d.err, "cannot reach broker %s", d.host)
		}
		return s.fail(ReasonTimeout, err, "no acknowledgement from topic %s within %v", topic, s.timeout)
	case errors.Is(err, kgo.ErrClientClosed):
		return s.fail(ReasonUnavailable, err, "the producer was closed or rebuilt")
	case errors.Is(err, kerr.InvalidRecord), errors.Is(err, kerr.CorruptMessage):
		return Permanent(s.fail(ReasonRejected, err, "topic %s refused the record", topic))
	}
	var ke *kerr.Error
	if errors.As(err, &ke) {
		return s.fail(ReasonRejected, err, "topic %s refused the record", topic)
	}
	return s.fail(ReasonUnavailable, err, "produce to topic %s", topic)
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
