package outbox

import "errors"

// KafkaConfig is the kafka section of a target of type kafka: an Apache
// Kafka topic that events are produced into.
//
// PLACEHOLDER: the streams work (issue 11) replaces this file with the
// real configuration and sender.
type KafkaConfig struct {
	// Brokers are the seed brokers, host:port.
	Brokers []string `yaml:"brokers"`
	// Topic receives every event.
	Topic string `yaml:"topic"`
}

func (c *KafkaConfig) validate(prefix string) []error {
	return []error{&FieldError{Field: prefix, Err: errors.New("kafka targets are not implemented yet")}}
}

func newKafkaSender(t Target, m *Metrics) (Sender, error) {
	return nil, errors.New("outbox: kafka targets are not implemented yet")
}
