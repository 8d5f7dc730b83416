package outbox

import (
	"log/slog"
)

// Transport is a target type that lives in its own package under outbox/
// (an action target, for example) and is wired by the command: the engine
// knows only this pair of functions, as alertmanager's dispatcher knows its
// notifiers. Config.Transports maps a target type to its Transport.
type Transport struct {
	// Validate checks the type's own settings of t and returns every
	// problem, each a *FieldError whose Field starts with prefix (e.g.
	// "outbox.targets[2]"). It must not touch the network.
	Validate func(t Target, prefix string) []error
	// New builds t's sender (t has its defaults applied). A sender that
	// also implements io.Closer is closed when the dispatcher stops using it.
	New func(t Target, env Env) (Sender, error)
	// Describe, if set, names where t delivers for status and logs,
	// without secrets (a stream's servers and topic); without it, the
	// target's URL is shown without userinfo or query.
	Describe func(t Target) string
	// IDs, if set, reads the id map the type keeps in a target's State
	// (see IDMap): the admin API, the app API and status read it through
	// Dispatcher.ViewIDMap.
	IDs *IDMap
	// Stats, if set, returns the type's counters for the target named
	// (requests, outcomes, rate-limit waits) for status; nil if none yet.
	Stats func(target string) *RequestStats
}

// Env is what the engine offers a transport's sender.
type Env struct {
	// Config is the outbox section the target belongs to.
	Config Config
	// Metrics may be nil.
	Metrics *Metrics
	// Logger is the dispatcher's, with the target's name.
	Logger *slog.Logger
	// State is the target's durable state (see State).
	State *State
}
