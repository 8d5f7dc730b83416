package outbox

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Errors of the admin methods.
var (
	ErrNotFound      = errors.New("outbox: not found")
	ErrUnknownTarget = errors.New("outbox: unknown target")
)

// TargetStatus is one target's delivery state, for the admin API.
type TargetStatus struct {
	Name string `json:"name"`
	// URL is scheme, host and path only: no userinfo or query.
	URL          string `json:"url"`
	Paused       bool   `json:"paused"`
	PausedReason string `json:"paused_reason,omitempty"`
	// Backlog is the number of events waiting for this target.
	Backlog int `json:"backlog"`
	// OldestPendingAge is the age of the oldest waiting event (nanoseconds
	// in JSON).
	OldestPendingAge time.Duration `json:"oldest_pending_age"`
	DeadLetters      int           `json:"dead_letters"`
	Delivered        uint64        `json:"delivered"`
	LastSuccess      time.Time     `json:"last_success,omitzero"`
	// LastError is the last failed attempt's status or transport error,
	// never a response body.
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	LastStatus  int       `json:"last_status,omitempty"`
}

// DeadLetter is an event a target did not accept, kept until replayed or
// discarded.
type DeadLetter struct {
	Event          Event     `json:"event"`
	Target         string    `json:"target"`
	Attempts       int       `json:"attempts"`
	FirstAttemptAt time.Time `json:"first_attempt_at,omitzero"`
	LastAttemptAt  time.Time `json:"last_attempt_at,omitzero"`
	LastStatus     int       `json:"last_status,omitempty"`
	LastError      string    `json:"last_error"`
	// ResponseBody is the start of the last response, at most 4 KiB.
	ResponseBody string `json:"response_body,omitempty"`
}

func (d *Dispatcher) checkTarget(name string) error {
	if _, ok := d.byName[name]; !ok {
		return fmt.Errorf("%w: %q", ErrUnknownTarget, name)
	}
	return nil
}

// Status returns the state of every configured target, in config order.
// While Run is running, Backlog and OldestPendingAge come from memory;
// otherwise they are computed from the database.
func (d *Dispatcher) Status() ([]TargetStatus, error) {
	running := d.Ready()
	snaps := map[string]laneSnap{}
	if running {
		d.snapMu.Lock()
		for k, v := range d.snap {
			snaps[k] = v
		}
		d.snapMu.Unlock()
	}
	now := d.now()
	out := make([]TargetStatus, 0, len(d.targets))
	err := d.db.View(func(tx *bolt.Tx) error {
		events := tx.Bucket(bucketEvents)
		for _, t := range d.targets {
			st := TargetStatus{Name: t.cfg.Name, URL: t.redacted}
			cursor := d.initTail
			var oldest time.Time
			if b := targetBucket(tx, t.cfg.Name); b != nil {
				cursor = getU64(b, keyCursor)
				var ps pauseState
				ok, err := getJSON(b, keyPause, &ps)
				if err != nil {
					return err
				}
				st.Paused, st.PausedReason = ok, ps.Reason
				var ts targetStats
				if _, err := getJSON(b, keyStats, &ts); err != nil {
					return err
				}
				st.Delivered, st.LastSuccess, st.LastError, st.LastErrorAt, st.LastStatus =
					ts.Delivered, ts.LastSuccess, ts.LastError, ts.LastErrorAt, ts.LastStatus
				st.DeadLetters = int(getU64(b, keyDeadN))
				if !running {
					st.Backlog = int(getU64(b, keyReplayN))
					c := b.Bucket(bucketPending).Cursor()
					for k, _ := c.First(); k != nil; k, _ = c.Next() {
						if oldest.IsZero() && events != nil { // the lowest pending seq is the oldest
							if v := events.Get(k); v != nil {
								if ev, err := decodeEvent(fromBE64(k), v); err == nil {
									oldest = ev.OccurredAt
								}
							}
						}
						st.Backlog++
					}
				}
			}
			if snap, ok := snaps[t.cfg.Name]; ok { // fresher than what was committed
				st.Backlog, oldest = snap.backlog, snap.oldest
				st.Delivered, st.LastSuccess, st.LastError, st.LastErrorAt, st.LastStatus =
					snap.stats.Delivered, snap.stats.LastSuccess, snap.stats.LastError, snap.stats.LastErrorAt, snap.stats.LastStatus
			}
			if !running && events != nil {
				c := events.Cursor()
				for k, v := c.Seek(be64(cursor + 1)); k != nil; k, v = c.Next() {
					if !t.match.match(peekType(v)) {
						continue
					}
					if oldest.IsZero() {
						if ev, err := decodeEvent(fromBE64(k), v); err == nil {
							oldest = ev.OccurredAt
						}
					}
					st.Backlog++
				}
			}
			if !oldest.IsZero() {
				st.OldestPendingAge = max(now.Sub(oldest), 0)
			}
			out = append(out, st)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("outbox: status: %w", err)
	}
	return out, nil
}

// DeadLetters lists a target's dead letters with Seq greater than after, in
// Seq order, at most limit (100 if limit ≤ 0, never more than 1000). Pass the
// last Seq returned to get the next page. It returns ErrUnknownTarget for a
// target that is not configured.
func (d *Dispatcher) DeadLetters(target string, after uint64, limit int) ([]DeadLetter, error) {
	if err := d.checkTarget(target); err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, 1000)
	out := []DeadLetter{}
	err := d.db.View(func(tx *bolt.Tx) error {
		b := targetBucket(tx, target)
		if b == nil {
			return nil
		}
		c := b.Bucket(bucketDead).Cursor()
		for k, v := c.Seek(be64(after + 1)); k != nil && len(out) < limit; k, v = c.Next() {
			dl, err := decodeDead(k, v)
			if err != nil {
				return err
			}
			out = append(out, dl)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("outbox: list dead letters of %s: %w", target, err)
	}
	return out, nil
}

// DeadLetter returns the dead letter of the event with the given ID. It
// returns ErrNotFound if the target holds no such dead letter.
func (d *Dispatcher) DeadLetter(target, eventID string) (DeadLetter, error) {
	if err := d.checkTarget(target); err != nil {
		return DeadLetter{}, err
	}
	var dl DeadLetter
	found := false
	err := d.db.View(func(tx *bolt.Tx) error {
		b := targetBucket(tx, target)
		if b == nil {
			return nil
		}
		k := b.Bucket(bucketDeadIDs).Get([]byte(eventID))
		if k == nil {
			return nil
		}
		v := b.Bucket(bucketDead).Get(k)
		if v == nil {
			return nil
		}
		var err error
		dl, err = decodeDead(k, v)
		found = err == nil
		return err
	})
	if err != nil {
		return DeadLetter{}, fmt.Errorf("outbox: dead letter %s of %s: %w", eventID, target, err)
	}
	if !found {
		return DeadLetter{}, fmt.Errorf("%w: dead letter %s of target %s", ErrNotFound, eventID, target)
	}
	return dl, nil
}

func decodeDead(k, v []byte) (DeadLetter, error) {
	var dl DeadLetter
	if err := json.Unmarshal(v, &dl); err != nil {
		return dl, fmt.Errorf("decode dead letter %d: %w", fromBE64(k), err)
	}
	dl.Event.Seq = fromBE64(k)
	return dl, nil
}

// Replay moves dead letters back to pending with a fresh attempt budget: the
// events with the given IDs, or all of the target's dead letters when eventIDs
// is empty. It returns how many were moved. If any ID is not a dead letter of
// the target, nothing is moved and the error wraps ErrNotFound. A replayed
// event is delivered in Seq order relative to the target's other pending
// events (after any already in flight), even if its log entry had been pruned.
func (d *Dispatcher) Replay(target string, eventIDs []string) (int, error) {
	n, err := d.takeDead(target, eventIDs, true)
	if err == nil {
		d.logger.Info("Dead letters replayed", logKeyTarget, target, logKeyCount, n)
	}
	return n, err
}

// Discard deletes dead letters: those with the given event IDs, or all of the
// target's when eventIDs is empty. It returns how many. If any ID is not a dead
// letter of the target, nothing is deleted and the error wraps ErrNotFound.
func (d *Dispatcher) Discard(target string, eventIDs []string) (int, error) {
	n, err := d.takeDead(target, eventIDs, false)
	if err == nil {
		d.logger.Info("Dead letters discarded", logKeyTarget, target, logKeyCount, n)
	}
	return n, err
}

func (d *Dispatcher) takeDead(target string, ids []string, replay bool) (int, error) {
	if err := d.checkTarget(target); err != nil {
		return 0, err
	}
	var n, staged int
	err := d.write(func(tx *bolt.Tx) error {
		n, staged = 0, 0
		b, err := ensureTarget(tx, target, d.initTail)
		if err != nil {
			return err
		}
		dead, idx, rb := b.Bucket(bucketDead), b.Bucket(bucketDeadIDs), b.Bucket(bucketReplay)
		type entry struct{ k, v []byte }
		var take []entry
		if len(ids) == 0 {
			c := dead.Cursor()
			for k, v := c.First(); k != nil; k, v = c.Next() {
				take = append(take, entry{bytes.Clone(k), bytes.Clone(v)})
			}
		} else {
			seen := map[string]bool{}
			for _, id := range ids {
				if seen[id] {
					continue
				}
				seen[id] = true
				k := idx.Get([]byte(id))
				var v []byte
				if k != nil {
					v = dead.Get(k)
				}
				if v == nil {
					return fmt.Errorf("%w: dead letter %s of target %s", ErrNotFound, id, target)
				}
				take = append(take, entry{bytes.Clone(k), bytes.Clone(v)})
			}
		}
		for _, e := range take {
			dl, err := decodeDead(e.k, e.v)
			if err != nil {
				return err
			}
			if err := dead.Delete(e.k); err != nil {
				return err
			}
			if err := idx.Delete([]byte(dl.Event.ID)); err != nil {
				return err
			}
			if replay {
				if err := rb.Put(e.k, e.v); err != nil {
					return err
				}
			}
		}
		n = len(take)
		if err := addU64(b, keyDeadN, -n); err != nil {
			return err
		}
		if replay {
			if err := addU64(b, keyReplayN, n); err != nil {
				return err
			}
		}
		staged = int(getU64(b, keyReplayN))
		return nil
	}, func() {
		moved, st := n, staged
		d.post(func(s *scheduler) {
			if l := s.byName[target]; l != nil {
				l.deadN = max(l.deadN-moved, 0)
				if replay {
					l.staged = st
				}
			}
		})
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// Pause stops deliveries to a target until Resume; its events keep
// accumulating and attempts in flight finish. The reason shows in Status.
func (d *Dispatcher) Pause(target string, reason string) error {
	if err := d.checkTarget(target); err != nil {
		return err
	}
	if reason == "" {
		reason = "paused by an operator"
	}
	ps := pauseState{Reason: reason, At: d.now()}
	err := d.write(func(tx *bolt.Tx) error {
		b, err := ensureTarget(tx, target, d.initTail)
		if err != nil {
			return err
		}
		return putJSON(b, keyPause, ps)
	}, func() {
		d.post(func(s *scheduler) {
			if l := s.byName[target]; l != nil {
				l.paused, l.reason = true, reason
			}
		})
	})
	if err != nil {
		return fmt.Errorf("outbox: pause %s: %w", target, err)
	}
	d.logger.Info("Target paused", logKeyTarget, target, logKeyReason, reason)
	return nil
}

// Resume restarts deliveries to a paused target. Resuming a running target
// does nothing.
func (d *Dispatcher) Resume(target string) error {
	if err := d.checkTarget(target); err != nil {
		return err
	}
	err := d.write(func(tx *bolt.Tx) error {
		b, err := ensureTarget(tx, target, d.initTail)
		if err != nil {
			return err
		}
		return b.Delete(keyPause)
	}, func() {
		d.post(func(s *scheduler) {
			if l := s.byName[target]; l != nil {
				l.paused, l.reason, l.holdUntil = false, "", time.Time{}
			}
		})
	})
	if err != nil {
		return fmt.Errorf("outbox: resume %s: %w", target, err)
	}
	d.logger.Info("Target resumed", logKeyTarget, target)
	return nil
}
