package main

import (
	"github.com/scimgate/scimgate/outbox"
	"github.com/scimgate/scimgate/outbox/kafka"
	"github.com/scimgate/scimgate/outbox/nats"
	"github.com/scimgate/scimgate/outbox/rest"
	"github.com/scimgate/scimgate/outbox/webhook"
)

// transports returns the outbox target types, by type name, that live in
// their own packages under outbox/ (as alertmanager's notify/<receiver>
// packages do): the engine builds and validates every target through this
// map, so a type registered nowhere is a configuration error. Every
// transport is registered here and only here; DefaultConfig installs the
// map, so serve, validate and reload all see it.
func transports() map[string]outbox.Transport {
	return map[string]outbox.Transport{
		outbox.TypeWebhook: webhook.Transport(),
		outbox.TypeNATS:    nats.Transport(),
		outbox.TypeKafka:   kafka.Transport(),
		outbox.TypeRest:    rest.Transport(),
		outbox.TypeSQL:     rest.SQLTransport(),
	}
}
