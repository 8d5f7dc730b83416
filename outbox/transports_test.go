package outbox_test

import (
	"github.com/scimgate/scimgate/outbox"
	"github.com/scimgate/scimgate/outbox/kafka"
	"github.com/scimgate/scimgate/outbox/nats"
	"github.com/scimgate/scimgate/outbox/webhook"
)

// The engine's tests (package outbox) deliver through the real transports,
// which import the engine and so cannot be imported by it: this external
// test package registers them, as the command's transports() does, before
// any test runs (see TestTransports).
func init() {
	outbox.TestTransports[outbox.TypeWebhook] = webhook.Transport()
	outbox.TestTransports[outbox.TypeNATS] = nats.Transport()
	outbox.TestTransports[outbox.TypeKafka] = kafka.Transport()
}
