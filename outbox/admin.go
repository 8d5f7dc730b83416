package outbox

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TargetStatus is one target's delivery state, for /admin/status.
type TargetStatus struct {
	Name             string        `json:"name"`
	URL              string        `json:"url"` // scheme, host and path only
	Paused           bool          `json:"paused"`
	PausedReason     string        `json:"paused_reason,omitempty"`
	Backlog          int           `json:"backlog"`
	OldestPendingAge time.Duration `json:"oldest_pending_age_ns"`
	DeadLetters      int           `json:"dead_letters"`
	Delivered        uint64        `json:"delivered"`
	LastSuccess      time.Time     `json:"last_success,omitzero"`
	LastError        string        `json:"last_error,omitempty"` // status or transport error, never a body
	LastErrorAt      time.Time     `json:"last_error_at,omitzero"`
	LastStatus       int           `json:"last_status,omitempty"`
}

// DeadLetter is an event a target did not accept, kept for inspection and
// replay.
type DeadLetter struct {
	Event          Event     `json:"event"`
	Target         string    `json:"target"`
	Attempts       int       `json:"attempts"`
	FirstAttemptAt time.Time `json:"first_attempt_at,omitzero"`
	LastAttemptAt  time.Time `json:"last_attempt_at"`
	LastStatus     int       `json:"last_status,omitempty"`
	LastError      string    `json:"last_error"`
	ResponseBody   string    `json:"response_body,omitempty"` // at most 4 KiB of the target's answer
	Body           []byte    `json:"body,omitempty"`          // the envelope, for replay
}

func (d *Dispatcher) target(name string) (*target, error) {
	t, ok := d.byName[name]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownTarget, name)
	}
	if err := t.load(); err != nil {
		return nil, err
	}
	return t, nil
}

// Status returns every target's state.
func (d *Dispatcher) Status() ([]TargetStatus, error) {
	var last uint64
	if err := d.db.View(func(tx *bolt.Tx) error {
		last = tx.Bucket(bucketEvents).Sequence()
		return nil
	}); err != nil {
		return nil, err
	}
	out := make([]TargetStatus, 0, len(d.targets))
	for _, t := range d.targets {
		if err := t.load(); err != nil {
			return nil, err
		}
		t.mu.Lock()
		st := TargetStatus{
			Name: t.cfg.Name, URL: redact(t.cfg.URL), Paused: t.paused != "", PausedReason: t.paused,
			Backlog: len(t.window) + int(last-min(last, t.scanned)), DeadLetters: t.deadCount,
			Delivered: t.stats.Delivered, LastSuccess: t.stats.LastSuccess, LastError: t.stats.LastError,
			LastErrorAt: t.stats.LastErrorAt, LastStatus: t.stats.LastStatus,
		}
		oldest := t.oldest()
		scanned := t.scanned
		t.mu.Unlock()
		if oldest.IsZero() && scanned < last {
			// Not read yet: the next event in the log is the oldest.
			_ = d.db.View(func(tx *bolt.Tx) error {
				if _, v := tx.Bucket(bucketEvents).Cursor().Seek(be64(scanned + 1)); v != nil {
					if rec, err := decodeRecord(v); err == nil {
						oldest = rec.OccurredAt
					}
				}
				return nil
			})
		}
		if !oldest.IsZero() {
			st.OldestPendingAge = d.now().Sub(oldest)
		}
		out = append(out, st)
	}
	return out, nil
}

// DeadLetters lists a target's dead letters with sequence after `after`,
// oldest first, at most limit.
func (d *Dispatcher) DeadLetters(name string, after uint64, limit int) ([]DeadLetter, error) {
	t, err := d.target(name)
	if err != nil {
		return nil, err
	}
	var out []DeadLetter
	err = d.db.View(func(tx *bolt.Tx) error {
		c := t.bucket(tx).Bucket(subDead).Cursor()
		for k, v := c.Seek(be64(after + 1)); k != nil && len(out) < limit; k, v = c.Next() {
			var dl DeadLetter
			if err := json.Unmarshal(v, &dl); err != nil {
				return err
			}
			dl.Body = nil
			out = append(out, dl)
		}
		return nil
	})
	return out, err
}

// DeadLetter returns one dead letter by event id, or ErrNotFound.
func (d *Dispatcher) DeadLetter(name, eventID string) (DeadLetter, error) {
	var out DeadLetter
	t, err := d.target(name)
	if err != nil {
		return out, err
	}
	found := false
	err = d.db.View(func(tx *bolt.Tx) error {
		return t.bucket(tx).Bucket(subDead).ForEach(func(k, v []byte) error {
			if found || !bytes.Contains(v, []byte(eventID)) {
				return nil
			}
			var dl DeadLetter
			if err := json.Unmarshal(v, &dl); err != nil {
				return err
			}
			if dl.Event.ID == eventID {
				out, found = dl, true
				out.Body = nil
			}
			return nil
		})
	})
	if err == nil && !found {
		err = fmt.Errorf("%w: %s for target %s", ErrNotFound, eventID, name)
	}
	return out, err
}

// Replay moves dead letters back to pending with a fresh retry budget:
// those with the given event ids, or all of the target's when ids is
// empty. It returns how many. A replayed event waits, like any other, for
// earlier pending events of its resources.
func (d *Dispatcher) Replay(name string, ids []string) (int, error) {
	return d.takeDead(name, ids, true)
}

// Discard deletes dead letters (the given ids, or all when empty).
func (d *Dispatcher) Discard(name string, ids []string) (int, error) {
	return d.takeDead(name, ids, false)
}

func (d *Dispatcher) takeDead(name string, ids []string, replay bool) (int, error) {
	t, err := d.target(name)
	if err != nil {
		return 0, err
	}
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var taken []*pending
	err = d.db.Update(func(tx *bolt.Tx) error {
		tb := t.bucket(tx)
		dead, rb := tb.Bucket(subDead), tb.Bucket(subReplay)
		var keys [][]byte
		var dls []DeadLetter
		if err := dead.ForEach(func(k, v []byte) error {
			var dl DeadLetter
			if err := json.Unmarshal(v, &dl); err != nil {
				return err
			}
			if len(want) == 0 || want[dl.Event.ID] {
				keys, dls = append(keys, bytes.Clone(k)), append(dls, dl)
			}
			return nil
		}); err != nil {
			return err
		}
		for i, k := range keys {
			if err := dead.Delete(k); err != nil {
				return err
			}
			if !replay {
				continue
			}
			rec := record{Event: dls[i].Event, Body: dls[i].Body}
			v, err := json.Marshal(rec)
			if err != nil {
				return err
			}
			if err := rb.Put(k, v); err != nil {
				return err
			}
			taken = append(taken, &pending{rec: rec, replayed: true, att: attempt{Since: d.now()}})
		}
		if len(want) > 0 && len(keys) == 0 {
			return fmt.Errorf("%w: none of %d id(s) is a dead letter of target %s", ErrNotFound, len(want), name)
		}
		t.deadCount -= len(keys)
		if !replay {
			taken = make([]*pending, len(keys)) // only counted
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if replay {
		t.window = append(t.window, taken...)
		t.sortWindow()
	}
	t.gauges()
	select {
	case t.wake <- struct{}{}:
	default:
	}
	if replay {
		d.logger.Info("dead letters replayed", "target", name, "count", len(taken))
	}
	return len(taken), nil
}

// Pause stops deliveries to a target; events keep accumulating.
func (d *Dispatcher) Pause(name, reason string) error {
	return d.setPaused(name, reason)
}

// Resume restarts deliveries to a paused target.
func (d *Dispatcher) Resume(name string) error {
	return d.setPaused(name, "")
}

func (d *Dispatcher) setPaused(name, reason string) error {
	t, err := d.target(name)
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	err = d.db.Update(func(tx *bolt.Tx) error {
		if reason == "" {
			return t.bucket(tx).Delete(keyPaused)
		}
		return t.bucket(tx).Put(keyPaused, []byte(reason))
	})
	if err != nil {
		return err
	}
	t.paused = reason
	t.gauges()
	select {
	case t.wake <- struct{}{}:
	default:
	}
	return nil
}
