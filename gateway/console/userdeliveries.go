package console

import (
	"errors"
	"net/http"
	"strings"

	"github.com/scimgate/scimgate/outbox"
)

// fromRequests says, for each change of a user's history, which of the
// recent SCIM requests made it: the one on the same resource that left it
// at the event's version (a write's ETag), or for a deletion the DELETE on
// it. The ring keeps the last requests only; an older change says so, and
// one with a cause (a mapping change's remap) names that instead.
func (c *Console) fromRequests(id string, hist []change) {
	var recent []Request
	if c.d.Recent != nil {
		recent = c.d.Recent()
	}
	var oldest Request
	if len(recent) > 0 {
		oldest = recent[len(recent)-1]
	}
	for i := range hist {
		ch := &hist[i]
		if ch.Cause != "" {
			ch.FromNote = "not a SCIM request: cause " + ch.Cause
			continue
		}
		for j := range recent {
			q := &recent[j]
			if q.ResourceID != id || q.Status >= 300 {
				continue
			}
			deleted := strings.HasSuffix(ch.Type, ".deleted") && q.Method == http.MethodDelete
			if deleted || (ch.Version != 0 && q.Version == ch.Version) {
				ch.From = q
				break
			}
		}
		switch {
		case ch.From != nil:
		case c.d.Recent == nil:
			ch.FromNote = "recent requests are not kept"
		case len(recent) == 0 || ch.At.Before(oldest.At):
			ch.FromNote = "earlier than the recent requests kept"
		default:
			ch.FromNote = "no kept SCIM request made it (a CLI command, a backfill or a restart's catch-up)"
		}
	}
}

// targetUser is a user's standing with one target: its app id and the
// last of its events the target has, from the retained history.
type targetUser struct {
	Target   string
	AppID    string // the id map's values, e.g. {"id":7}; "" when none
	HasIDMap bool
	Last     *change // the newest of its events the target has delivered
	Pending  int     // its events the target has not delivered yet
	Dead     int     // its events dead-lettered at the target
	Err      string
}

// perTarget returns, for each target, the user's app id (an action
// target's id map) and what became of its events in hist (newest first).
func (c *Console) perTarget(id string, hist []change) []targetUser {
	ts, err := c.d.Dispatcher.Status()
	if err != nil {
		return []targetUser{{Err: err.Error()}}
	}
	seqs := make([]uint64, 0, len(hist))
	for _, ch := range hist {
		seqs = append(seqs, ch.Sequence)
	}
	var out []targetUser
	for _, t := range ts {
		tu := targetUser{Target: t.Name}
		err := c.d.Dispatcher.ViewIDMap(t.Name, func(m outbox.IDMapTx) error {
			tu.HasIDMap = true
			e, err := m.Get("User", id)
			if e != nil {
				tu.AppID = string(e.Values)
			}
			return err
		})
		if err != nil && !errors.Is(err, outbox.ErrNoIDMap) {
			tu.Err = err.Error()
		}
		states, err := c.d.Dispatcher.EventStates(t.Name, seqs)
		if err != nil {
			tu.Err = err.Error()
		}
		for i := range hist {
			switch states[hist[i].Sequence] {
			case outbox.EventDelivered:
				if tu.Last == nil {
					tu.Last = &hist[i]
				}
			case outbox.EventPending:
				tu.Pending++
			case outbox.EventDead:
				tu.Dead++
			}
		}
		out = append(out, tu)
	}
	return out
}
