package outbox

import (
	"fmt"
	"strings"
)

// newSender builds the sender of a target (defaults applied) by its type.
// A sender that also implements io.Closer is closed when the dispatcher
// stops using it.
func newSender(t Target, cfg Config, m *Metrics) (Sender, error) {
	switch t.kind() {
	case TypeWebhook:
		return NewWebhookSender(t, cfg.Concurrency, m)
	case TypeNATS:
		return newNATSSender(t, m)
	case TypeKafka:
		return newKafkaSender(t, m)
	}
	return nil, fmt.Errorf("outbox: target %s: unknown type %q", t.Name, t.Type)
}

// describe is how status and logs name where a target delivers: a webhook's
// URL without userinfo or query, a stream's servers and subject or topic.
func (t Target) describe() string {
	switch t.kind() {
	case TypeNATS:
		if t.NATS != nil {
			return "nats://" + strings.Join(t.NATS.hosts(), ",") + " stream " + t.NATS.Stream
		}
	case TypeKafka:
		if t.Kafka != nil {
			return "kafka://" + strings.Join(t.Kafka.Brokers, ",") + " topic " + t.Kafka.Topic
		}
	}
	return redactURL(t.URL)
}
