package gateway_test

import (
	"github.com/scimgate/scimgate/outbox"
	"github.com/scimgate/scimgate/outbox/webhook"
)

// testOutboxConfig is outbox.DefaultConfig with the webhook transport the
// gateway's tests deliver through (the command wires every transport; see
// cmd/scimgate/transports.go).
func testOutboxConfig() outbox.Config {
	cfg := outbox.DefaultConfig()
	cfg.Transports = map[string]outbox.Transport{outbox.TypeWebhook: webhook.Transport()}
	return cfg
}
