package outbox

import "errors"

// NATSConfig is the nats section of a target of type nats: a NATS
// JetStream stream that events are published into.
//
// PLACEHOLDER: the streams work (issue 11) replaces this file with the
// real configuration and sender.
type NATSConfig struct {
	// URLs are the NATS servers, e.g. ["nats://127.0.0.1:4222"].
	URLs []string `yaml:"urls"`
	// Stream is the JetStream stream the subjects must belong to.
	Stream string `yaml:"stream"`
}

func (c *NATSConfig) validate(prefix string) []error {
	return []error{&FieldError{Field: prefix, Err: errors.New("nats targets are not implemented yet")}}
}

// hosts returns the servers without credentials, for status.
func (c *NATSConfig) hosts() []string { return c.URLs }

func newNATSSender(t Target, m *Metrics) (Sender, error) {
	return nil, errors.New("outbox: nats targets are not implemented yet")
}
