package outbox

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Pending states: where a pending event waits.
const (
	// PendingAdmitted: the dispatcher took it into its delivery window; it
	// is being attempted (Attempts > 0: retrying) or waits for an earlier
	// event of the same resource.
	PendingAdmitted = "admitted"
	// PendingReplay: a replayed dead letter staged for redelivery.
	PendingReplay = "replay"
	// PendingQueued: not admitted yet (behind the window, a pause, or a
	// backfill's snapshot not started): never attempted.
	PendingQueued = "queued"
)

// PendingEvent is one event waiting for a target, as the database holds it.
// While Run runs, attempts are committed shortly after they end, so the
// attempt fields may trail the attempt in flight.
type PendingEvent struct {
	Event Event `json:"event"`
	// Position orders a target's pending events; pass the last one seen as
	// Pending's after to get the next page. It is Event.Seq for a log
	// event; a snapshot event (backfill) has a position after every log
	// event's.
	Position       uint64    `json:"position"`
	Target         string    `json:"target"`
	State          string    `json:"state"` // admitted, replay or queued
	Attempts       int       `json:"attempts"`
	FirstAttemptAt time.Time `json:"first_attempt_at,omitzero"`
	LastAttemptAt  time.Time `json:"last_attempt_at,omitzero"`
	// NextAttemptAt is when the next attempt is due (zero: as soon as its
	// resources' earlier events are done, or when admitted).
	NextAttemptAt time.Time `json:"next_attempt_at,omitzero"`
	LastStatus    int       `json:"last_status,omitempty"`
	LastError     string    `json:"last_error,omitempty"`
}

// Pending lists a target's pending events with a Position greater than
// after, in Position order (the order they are delivered in, per
// resource), at most limit (100 if limit ≤ 0, never more than 1000). Pass
// the last Position returned to get the next page. It reads, in one read
// transaction, the events the dispatcher admitted (with their attempts),
// replayed dead letters staged for redelivery, the log's events after the
// target's cursor that its event filter selects, and a backfill's snapshot
// events not yet admitted. The events a history replay has not admitted
// yet are not listed (TargetStatus.History counts them). It changes
// nothing. It returns ErrUnknownTarget for a target that is not
// configured.
func (d *Dispatcher) Pending(target string, after uint64, limit int) ([]PendingEvent, error) {
	t, err := d.lookup(target)
	if err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, 1000)
	out := []PendingEvent{}
	err = d.database().View(func(tx *bolt.Tx) error {
		events := tx.Bucket(bucketEvents)
		b := targetBucket(tx, target)
		cursor := d.initTail
		if b != nil {
			cursor = getU64(b, keyCursor)
		}
		seen := map[uint64]bool{}
		add := func(p PendingEvent) {
			if !seen[p.Position] {
				seen[p.Position] = true
				out = append(out, p)
			}
		}
		// Each source gives at most limit entries after after; the first
		// limit of their union in key order are the page.
		var spool, pending, replay *bolt.Bucket
		if b != nil {
			spool, pending, replay = b.Bucket(bucketSpool), b.Bucket(bucketPending), b.Bucket(bucketReplay)
		}
		if pending != nil {
			c := pending.Cursor()
			n := 0
			for k, v := c.Seek(be64(after + 1)); k != nil && n < limit; k, v = c.Next() {
				key := fromBE64(k)
				ev, ok, err := pendingEvent(events, spool, key)
				if err != nil {
					return err
				}
				if !ok {
					continue // an orphan Run drops when it starts
				}
				p := PendingEvent{Event: ev, Position: key, Target: target, State: PendingAdmitted}
				var st deliveryState
				if json.Unmarshal(v, &st) == nil {
					p.Attempts, p.FirstAttemptAt, p.LastAttemptAt, p.NextAttemptAt, p.LastStatus, p.LastError =
						st.Attempts, st.FirstAttemptAt, st.LastAttemptAt, st.NextAttemptAt, st.LastStatus, st.LastError
				}
				add(p)
				n++
			}
		}
		if replay != nil {
			c := replay.Cursor()
			n := 0
			for k, v := c.Seek(be64(after + 1)); k != nil && n < limit; k, v = c.Next() {
				dl := decodeDead(k, v)
				add(PendingEvent{Event: dl.Event, Position: dl.Position, Target: target, State: PendingReplay,
					LastStatus: dl.LastStatus, LastError: dl.LastError})
				n++
			}
		}
		if events != nil {
			c := events.Cursor()
			n := 0
			for k, v := c.Seek(be64(max(after, cursor) + 1)); k != nil && n < limit; k, v = c.Next() {
				if !t.match.match(peekType(v)) {
					continue
				}
				key := fromBE64(k)
				ev, err := decodeEvent(key, v)
				if err != nil {
					ev = salvageEvent(key, v, err)
				}
				add(PendingEvent{Event: ev, Position: key, Target: target, State: PendingQueued})
				n++
			}
		}
		if spool != nil {
			c := spool.Cursor()
			n := 0
			for k, v := c.Seek(be64(max(after+1, spoolBit))); k != nil && n < limit; k, v = c.Next() {
				key := fromBE64(k)
				if seen[key] || (pending != nil && pending.Get(k) != nil) || (replay != nil && replay.Get(k) != nil) {
					continue // listed above, or beyond this page of them
				}
				ev, err := decodeSpool(key, v)
				if err != nil {
					ev = salvageEvent(key, v, err)
				}
				add(PendingEvent{Event: ev, Position: key, Target: target, State: PendingQueued})
				n++
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("outbox: list pending events of %s: %w", target, err)
	}
	slices.SortFunc(out, func(a, b PendingEvent) int {
		switch {
		case a.Position < b.Position:
			return -1
		case a.Position > b.Position:
			return 1
		}
		return 0
	})
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// PendingAt returns the pending event of a target at position (as Pending
// lists it). It returns ErrNotFound if no event is pending there.
func (d *Dispatcher) PendingAt(target string, position uint64) (PendingEvent, error) {
	if position == 0 {
		return PendingEvent{}, fmt.Errorf("%w: no pending event at position 0 of target %s", ErrNotFound, target)
	}
	list, err := d.Pending(target, position-1, 1)
	if err != nil {
		return PendingEvent{}, err
	}
	if len(list) == 0 || list[0].Position != position {
		return PendingEvent{}, fmt.Errorf("%w: no pending event at position %d of target %s (delivered, dead-lettered, or never for it)",
			ErrNotFound, position, target)
	}
	return list[0], nil
}

// Where a log event stands for a target (EventStates).
const (
	EventPending      = "pending"     // waiting: queued, admitted, retrying or staged for replay
	EventDead         = "dead letter" // refused; kept until replayed or discarded
	EventDiscarded    = "discarded"   // its dead letter was discarded
	EventDelivered    = "delivered"   // the target accepted it (see EventStates)
	EventNotForTarget = "not for it"  // the target's event filter does not select its type
)

// EventStates reports where each of the log events seqs stands for target,
// read in one read transaction; it changes nothing. An event the target has
// passed (its sequence is at or below the target's cursor) and holds
// neither pending nor as a dead letter nor discarded reads as delivered:
// the engine keeps no per-event delivery record, so an event enqueued
// before the target was first configured (and not backfilled) reads as
// delivered too. It returns ErrUnknownTarget for a target not configured.
func (d *Dispatcher) EventStates(target string, seqs []uint64) (map[uint64]string, error) {
	t, err := d.lookup(target)
	if err != nil {
		return nil, err
	}
	out := make(map[uint64]string, len(seqs))
	err = d.database().View(func(tx *bolt.Tx) error {
		events := tx.Bucket(bucketEvents)
		b := targetBucket(tx, target)
		cursor := d.initTail
		var pending, replay, dead, discarded *bolt.Bucket
		if b != nil {
			cursor = getU64(b, keyCursor)
			pending, replay, dead, discarded = b.Bucket(bucketPending), b.Bucket(bucketReplay), b.Bucket(bucketDead), b.Bucket(bucketDiscarded)
		}
		has := func(bk *bolt.Bucket, k []byte) bool { return bk != nil && bk.Get(k) != nil }
		for _, seq := range seqs {
			k := be64(seq)
			switch {
			case has(pending, k) || has(replay, k):
				out[seq] = EventPending
			case has(dead, k):
				out[seq] = EventDead
			case events != nil && events.Get(k) != nil && !t.match.match(peekType(events.Get(k))):
				out[seq] = EventNotForTarget
			case seq > cursor:
				out[seq] = EventPending
			case has(discarded, k):
				out[seq] = EventDiscarded
			default:
				out[seq] = EventDelivered
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("outbox: event states of %s: %w", target, err)
	}
	return out, nil
}
