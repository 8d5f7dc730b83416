package main

import (
	"github.com/scimgate/scimgate/outbox"
	"github.com/scimgate/scimgate/outbox/rest"
)

// transports are the target types built outside the engine, by type.
func transports() map[string]outbox.Transport {
	return map[string]outbox.Transport{outbox.TypeRest: rest.Transport()}
}
