package outbox

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The stream target types' settings and vocabulary. The engine keeps them
// as plain data, as alertmanager's config package keeps its receivers'
// configurations: the YAML decoder and the command's unknown-key check see
// every key, and the transports (outbox/nats, outbox/kafka) validate and
// use them.

// NATSConfig is the nats section of a target of type nats: a NATS JetStream
// stream that events are published into, one message per event, with the
// PubAck as delivery. docs/streams.md describes every key.
type NATSConfig struct {
	// URLs are the NATS servers, e.g. ["nats://127.0.0.1:4222"]; an entry
	// may hold several separated by commas (as SCIMGATE_NATS_URL may).
	// Schemes: nats, tls (TLS required), ws, wss; none means nats.
	URLs []string `yaml:"urls"`
	// Subject is the subject template; "scimgate.{type}" when empty.
	// {type} is the event type ("user.created"), {kind} its first part
	// ("user"), {action} the rest ("created").
	Subject string `yaml:"subject"`
	// Stream is the JetStream stream the subjects must belong to. Every
	// publish expects it (Nats-Expected-Stream), so a subject captured by
	// another stream is refused rather than stored elsewhere.
	Stream string `yaml:"stream"`
	// CreateStream creates the stream when it is missing, with subjects
	// "<fixed prefix of Subject>.>", file storage, limits retention,
	// MaxAge, DuplicateWindow and Replicas below. An existing stream is
	// never changed.
	CreateStream bool `yaml:"create_stream"`
	// MaxAge is how long a created stream keeps messages; 0 means 168h.
	MaxAge time.Duration `yaml:"max_age"`
	// DuplicateWindow is a created stream's deduplication window on
	// Nats-Msg-Id (the event id); 0 means 10m, and it must be at least 2m.
	DuplicateWindow time.Duration `yaml:"duplicate_window"`
	// Replicas of a created stream (1 to 5); 0 means 1.
	Replicas int `yaml:"replicas"`

	// At most one way to authenticate: User with Password or PasswordFile;
	// Token or TokenFile; NKeySeedFile; or CredsFile (a JWT and its NKey
	// seed, as `nsc` writes them). Files are read at every (re)connect, so
	// a rotated secret is picked up without a restart.
	User         string `yaml:"user"`
	Password     string `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
	Token        string `yaml:"token"`
	TokenFile    string `yaml:"token_file"`
	NKeySeedFile string `yaml:"nkey_seed_file"`
	CredsFile    string `yaml:"creds_file"`
	// TLS configures TLS (also used for tls:// URLs).
	TLS *TLSConfig `yaml:"tls"`
}

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

// Headers set on every stream message (NATS and Kafka) besides webhook-id,
// and webhook-timestamp and webhook-signature when the target has secrets.
const (
	HeaderEventType   = "scimgate-event-type"
	HeaderSequence    = "scimgate-sequence"
	HeaderContentType = "content-type"
)

// TLSConfig is the TLS section of a stream target. TLS is on when Enabled
// is true or a file is set; without CAFile the system roots verify the
// server.
type TLSConfig struct {
	Enabled bool `yaml:"enabled"`
	// CAFile is a PEM bundle of the CAs that sign the server certificate.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are a PEM client certificate and its key, for
	// servers that require one (mutual TLS).
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ServerName overrides the name verified in the server certificate.
	ServerName string `yaml:"server_name"`
}

// On reports whether TLS is on.
func (c *TLSConfig) On() bool {
	return c != nil && (c.Enabled || c.CAFile != "" || c.CertFile != "")
}

// Validate checks the section; prefix is its YAML path.
func (c *TLSConfig) Validate(prefix string) []error {
	if c == nil {
		return nil
	}
	var errs []error
	if (c.CertFile == "") != (c.KeyFile == "") {
		errs = append(errs, InvalidField(prefix+".cert_file", "cert_file and key_file go together"))
	}
	return errs
}

// Build reads the files; it runs at every connect, so renewed certificates
// are picked up. prefix names the YAML section in errors.
func (c *TLSConfig) Build(prefix string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%s.ca_file: %w", prefix, err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s.ca_file: %s holds no PEM certificate", prefix, c.CAFile)
		}
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%s.cert_file: %w", prefix, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// StreamError is why a publish to a NATS or Kafka target failed. Its text
// is what status shows as last_error and what a dead letter keeps: what
// happened, in the broker's words, and what to fix. It never holds a
// secret. The dispatcher acts on the Permanent / PauseTarget wrapping; the
// Reason is for logs, metrics and tests.
type StreamError struct {
	// System is "nats" or "kafka".
	System string
	// Reason is one of the Reason* constants.
	Reason string
	// Detail says what happened and what to do.
	Detail string
	// Err is the client's error, if any.
	Err error
}

// Reasons of a StreamError, with the dispatcher's treatment.
const (
	ReasonUnavailable = "unavailable"           // broker down or unreachable, no responders: retried
	ReasonTimeout     = "timeout"               // no acknowledgement in time: retried (a duplicate is possible)
	ReasonLeader      = "leader_change"         // not leader, leader election, too few replicas: retried
	ReasonMissing     = "missing"               // stream or topic missing and not created: retried
	ReasonFull        = "full"                  // stream limits with discard new: retried
	ReasonAuth        = "auth"                  // credentials refused, permission or ACL denied, TLS or credential files: target paused
	ReasonTooLarge    = "too_large"             // larger than the broker accepts: dead-lettered
	ReasonNotInStream = "subject_not_in_stream" // the subject is not captured by the stream: dead-lettered
	ReasonRejected    = "rejected"              // any other refusal: retried, or dead-lettered when invalid
)

func (e *StreamError) Error() string {
	s := e.System + ": " + e.Detail
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the client's error.
func (e *StreamError) Unwrap() error { return e.Err }

// StreamHeaders returns the headers every stream message (NATS, Kafka)
// carries, in order: webhook-id, type, sequence, content type, then the
// webhook signature headers when signer has secrets, then extra (a
// target's own headers, from StreamExtras).
func StreamHeaders(ev Event, body []byte, signer Signer, extra [][2]string, now time.Time) [][2]string {
	h := make([][2]string, 0, 6+len(extra))
	h = append(h,
		[2]string{HeaderID, ev.ID},
		[2]string{HeaderEventType, ev.Type},
		[2]string{HeaderSequence, strconv.FormatUint(ev.Seq, 10)},
		[2]string{HeaderContentType, "application/json"})
	if !signer.Empty() {
		ts := now.Unix()
		h = append(h,
			[2]string{HeaderTimestamp, strconv.FormatInt(ts, 10)},
			[2]string{HeaderSignature, signer.Sign(ev.ID, ts, body)})
	}
	return append(h, extra...)
}

// StreamExtras returns a stream target's signer (empty without secrets)
// and its configured headers, sorted by name so that messages are stable.
func StreamExtras(t Target) (Signer, [][2]string, error) {
	var signer Signer
	if len(t.Secrets) > 0 {
		var err error
		if signer, err = NewSigner(t.Secrets); err != nil {
			return Signer{}, nil, fmt.Errorf("outbox: target %s: %w", t.Name, err)
		}
	}
	extra := make([][2]string, 0, len(t.Headers))
	for k, v := range t.Headers {
		extra = append(extra, [2]string{k, v})
	}
	slices.SortFunc(extra, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
	return signer, extra, nil
}
