package outbox

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
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
	// Type is the sender kind: webhook, nats or kafka.
	Type string `json:"type"`
	// URL is where the target delivers: scheme, host and path only (no
	// userinfo or query), or a stream's servers and subject or topic.
	URL          string `json:"url"`
	Paused       bool   `json:"paused"`
	PausedReason string `json:"paused_reason,omitempty"`
	// Backlog is the number of events waiting for this target (a running
	// backfill's and history replay's included).
	Backlog int `json:"backlog"`
	// OldestPendingAge is the age of the oldest waiting event. JSON carries
	// it as OldestPendingAgeSeconds.
	OldestPendingAge        time.Duration `json:"-"`
	OldestPendingAgeSeconds float64       `json:"oldest_pending_age_seconds"`
	DeadLetters             int           `json:"dead_letters"`
	Delivered               uint64        `json:"delivered"`
	LastSuccess             time.Time     `json:"last_success,omitzero"`
	// LastError is the last failed attempt's status or transport error,
	// never a response body.
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	LastStatus  int       `json:"last_status,omitempty"`
	// Quarantined counts the events whose stored value did not decode (the
	// database file is damaged), dead-lettered without being sent.
	Quarantined uint64 `json:"quarantined,omitempty"`
	// Backfill is the target's last backfill, if it ever had one.
	Backfill *BackfillStatus `json:"backfill,omitempty"`
	// History is the history replay in progress, if any.
	History *HistoryStatus `json:"history,omitempty"`
	// IDMapSize is the number of resources in the target's id map (a type
	// that keeps one: rest).
	IDMapSize *int `json:"id_map_size,omitempty"`
	// Requests are the type's request counters since the process started
	// (rest).
	Requests *RequestStats `json:"requests,omitempty"`
}

// UnmarshalJSON decodes the admin JSON, setting OldestPendingAge from
// oldest_pending_age_seconds.
func (s *TargetStatus) UnmarshalJSON(b []byte) error {
	type plain TargetStatus
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	p.OldestPendingAge = time.Duration(p.OldestPendingAgeSeconds * float64(time.Second))
	*s = TargetStatus(p)
	return nil
}

// DeadLetter is an event a target did not accept, kept until replayed or
// discarded.
type DeadLetter struct {
	Event Event `json:"event"`
	// Position orders a target's dead letters; pass the last one seen as
	// DeadLetters' after to get the next page. It is Event.Seq for a log
	// event; a snapshot event (whose Seq is its snapshot's sequence) has a
	// position after every log event's.
	Position       uint64    `json:"position"`
	Target         string    `json:"target"`
	Attempts       int       `json:"attempts"`
	FirstAttemptAt time.Time `json:"first_attempt_at,omitzero"`
	LastAttemptAt  time.Time `json:"last_attempt_at,omitzero"`
	LastStatus     int       `json:"last_status,omitempty"`
	LastError      string    `json:"last_error"`
	// ResponseBody is the start of the last response, at most 4 KiB.
	ResponseBody string `json:"response_body,omitempty"`
	// Quarantined is true for an event whose stored value did not decode
	// (the database file is damaged): it was never sent, Event holds what
	// could be read of it, and LastError says why. Replay leaves it alone.
	Quarantined bool `json:"quarantined,omitempty"`
}

func (d *Dispatcher) checkTarget(name string) error {
	_, err := d.lookup(name)
	return err
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
	cfg, targets := d.config()
	now := d.now()
	out := make([]TargetStatus, 0, len(targets))
	err := d.database().View(func(tx *bolt.Tx) error {
		events := tx.Bucket(bucketEvents)
		for _, t := range targets {
			st := TargetStatus{Name: t.cfg.Name, Type: t.cfg.kind(), URL: t.redacted}
			cursor := d.initTail
			var oldest time.Time
			snap, fresh := snaps[t.cfg.Name]
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
				st.Delivered, st.LastSuccess, st.LastError, st.LastErrorAt, st.LastStatus, st.Quarantined =
					ts.Delivered, ts.LastSuccess, ts.LastError, ts.LastErrorAt, ts.LastStatus, ts.Quarantined
				st.DeadLetters = int(getU64(b, keyDeadN))
				spool := b.Bucket(bucketSpool)
				var rec backfillRecord
				if ok, err := getJSON(b, keyBackfill, &rec); err != nil {
					return err
				} else if ok {
					remaining := 0
					if rec.active() && spool != nil {
						c := spool.Cursor()
						for k, _ := c.Seek(be64(rec.First)); k != nil && fromBE64(k) <= rec.Last; k, _ = c.Next() {
							remaining++
						}
					}
					phase := ""
					if fresh && snap.bfActive && rec.active() {
						remaining, phase = snap.bfRemaining, snap.bfPhase
					}
					bs := rec.status(remaining, phase)
					st.Backfill = &bs
				}
				var hr historyRecord
				if ok, err := getJSON(b, keyHistory, &hr); err != nil {
					return err
				} else if ok {
					st.History = hr.status()
				}
				if !running {
					st.Backlog = int(getU64(b, keyReplayN))
					pendingSpool := 0
					c := b.Bucket(bucketPending).Cursor()
					for k, _ := c.First(); k != nil; k, _ = c.Next() {
						key := fromBE64(k)
						if oldest.IsZero() && events != nil { // the lowest pending key is the oldest
							if ev, ok, _ := pendingEvent(events, spool, key); ok {
								oldest = ev.OccurredAt
							}
						}
						if rec.active() && key >= rec.First && key <= rec.Last {
							pendingSpool++
						}
						st.Backlog++
					}
					if st.Backfill != nil && rec.active() {
						st.Backlog += st.Backfill.Remaining - pendingSpool
					}
					if st.History != nil {
						st.Backlog += st.History.Remaining
					}
				}
			}
			if fresh { // fresher than what was committed
				st.Backlog, oldest = snap.backlog, snap.oldest
				st.Delivered, st.LastSuccess, st.LastError, st.LastErrorAt, st.LastStatus, st.Quarantined =
					snap.stats.Delivered, snap.stats.LastSuccess, snap.stats.LastError, snap.stats.LastErrorAt, snap.stats.LastStatus, snap.stats.Quarantined
				if st.History != nil {
					st.History.Remaining = snap.histLeft
				}
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
				st.OldestPendingAgeSeconds = st.OldestPendingAge.Seconds()
			}
			if err := transportStatus(cfg, t.cfg, tx, &st); err != nil {
				return err
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

// DeadLetters lists a target's dead letters with a Position greater than
// after, in Position order, at most limit (100 if limit ≤ 0, never more than
// 1000). Pass the last Position returned to get the next page. It returns ErrUnknownTarget for a
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
	err := d.database().View(func(tx *bolt.Tx) error {
		b := targetBucket(tx, target)
		if b == nil {
			return nil
		}
		c := b.Bucket(bucketDead).Cursor()
		for k, v := c.Seek(be64(after + 1)); k != nil && len(out) < limit; k, v = c.Next() {
			out = append(out, decodeDead(k, v))
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
	err := d.database().View(func(tx *bolt.Tx) error {
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
		dl, found = decodeDead(k, v), true
		return nil
	})
	if err != nil {
		return DeadLetter{}, fmt.Errorf("outbox: dead letter %s of %s: %w", eventID, target, err)
	}
	if !found {
		return DeadLetter{}, fmt.Errorf("%w: dead letter %s of target %s", ErrNotFound, eventID, target)
	}
	return dl, nil
}

// decodeDead decodes a dead letter or a replay entry. A value that does not
// decode (damaged on disk) gives a quarantined stand-in with what can be
// read of it, so that one damaged value neither stops Run nor hides the
// other dead letters: it is listed, and discarded like any other.
func decodeDead(k, v []byte) DeadLetter {
	var dl DeadLetter
	if err := json.Unmarshal(v, &dl); err != nil {
		ev := salvageEvent(fromBE64(k), nil, fmt.Errorf("the dead letter holding it: %w", err))
		if rest, ok := bytes.CutPrefix(v, []byte(`{"event":{"id":"`)); ok {
			ev.ID = peekID(append([]byte(`{"id":"`), rest...))
		}
		if ev.ID == "" {
			ev.ID = fmt.Sprintf("evt_undecodable_%d", fromBE64(k))
		}
		dl = DeadLetter{Event: ev, Quarantined: true, LastError: ev.undecodable}
	}
	dl.Position = fromBE64(k)
	if !isSpoolKey(dl.Position) {
		dl.Event.Seq = dl.Position
	}
	return dl
}

// Replay moves dead letters back to pending with a fresh attempt budget: the
// events with the given IDs, or all of the target's dead letters when eventIDs
// is empty. It returns how many were moved. If any ID is not a dead letter of
// the target, nothing is moved and the error wraps ErrNotFound, naming them.
// A replayed event is delivered in key order relative to the target's other
// pending events (after any already in flight): by Seq for a log event, even
// if its log entry had been pruned; after the log events waiting for its
// resources for a snapshot event, which goes back to the target's spool and
// never into the log. The work is done in chunks of short transactions, so
// a large set does not hold the database's writer. A quarantined dead
// letter (DeadLetter.Quarantined) has nothing to send: "all" leaves it
// where it is, and naming it is ErrInvalidArgument.
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
// A history replay skips the discarded events unless asked to include them
// (HistoryRequest.IncludeDiscarded).
func (d *Dispatcher) Discard(target string, eventIDs []string) (int, error) {
	n, err := d.takeDead(target, eventIDs, false)
	if err == nil {
		d.logger.Info("Dead letters discarded", logKeyTarget, target, logKeyCount, n)
	}
	return n, err
}

// takeDead replays or discards dead letters in chunks of d.chunk. Named IDs
// are checked first (all or nothing); "all" means the dead letters present
// when it starts, not those that arrive meanwhile.
func (d *Dispatcher) takeDead(target string, ids []string, replay bool) (int, error) {
	if err := d.checkTarget(target); err != nil {
		return 0, err
	}
	ids = slices.Compact(slices.Sorted(slices.Values(ids)))
	var upTo uint64 // "all": the highest position when it starts
	err := d.database().View(func(tx *bolt.Tx) error {
		b := targetBucket(tx, target)
		var missing []string
		for _, id := range ids {
			if b == nil {
				missing = append(missing, id)
				continue
			}
			var v []byte
			k := b.Bucket(bucketDeadIDs).Get([]byte(id))
			if k != nil {
				v = b.Bucket(bucketDead).Get(k)
			}
			if v == nil {
				missing = append(missing, id)
				continue
			}
			if replay && decodeDead(k, v).Quarantined {
				return fmt.Errorf("%w: event %s of target %s was quarantined (its stored value is damaged) and cannot be replayed: discard it, or restore the database from a backup",
					ErrInvalidArgument, id, target)
			}
		}
		if len(missing) > 0 {
			return notFound("no dead letter of target "+target, missing)
		}
		if len(ids) == 0 && b != nil {
			k, _ := b.Bucket(bucketDead).Cursor().Last()
			upTo = fromBE64(k)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	total := 0
	var from uint64
	now := d.now()
	for i := 0; ; {
		var batch []string
		if len(ids) > 0 {
			if i >= len(ids) {
				break
			}
			batch = ids[i:min(i+d.chunk, len(ids))]
			i += len(batch)
		} else if upTo == 0 || from > upTo {
			break
		}
		var n, staged, kept int
		var more bool
		err := d.write(func(tx *bolt.Tx) error {
			n, staged, kept, more = 0, 0, 0, false
			b, err := d.ensureNamed(tx, target)
			if err != nil {
				return err
			}
			dead, idx, rb := b.Bucket(bucketDead), b.Bucket(bucketDeadIDs), b.Bucket(bucketReplay)
			var discarded *bolt.Bucket
			if !replay {
				if discarded, err = markDiscardedBucket(tx, b); err != nil {
					return err
				}
			}
			type entry struct{ k, v []byte }
			var take []entry
			if batch != nil {
				for _, id := range batch {
					if k := idx.Get([]byte(id)); k != nil {
						if v := dead.Get(k); v != nil {
							take = append(take, entry{bytes.Clone(k), bytes.Clone(v)})
						}
					}
				}
			} else {
				c := dead.Cursor()
				for k, v := c.Seek(be64(from)); k != nil && fromBE64(k) <= upTo && len(take) < d.chunk; k, v = c.Next() {
					take = append(take, entry{bytes.Clone(k), bytes.Clone(v)})
				}
				more = len(take) == d.chunk
				if len(take) > 0 {
					from = fromBE64(take[len(take)-1].k) + 1
				}
			}
			for _, e := range take {
				dl := decodeDead(e.k, e.v)
				if replay && dl.Quarantined {
					kept++ // nothing to send: it stays until discarded
					continue
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
				} else if !isSpoolKey(fromBE64(e.k)) && tx.Bucket(bucketEvents).Get(e.k) != nil {
					// A history replay must not send it again unless asked.
					if err := discarded.Put(e.k, be64(uint64(now.UnixNano()))); err != nil {
						return err
					}
				}
			}
			n = len(take) - kept
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
				if l := s.lane(target); l != nil {
					l.deadN = max(l.deadN-moved, 0)
					if replay {
						l.staged = st
					}
				}
			})
		})
		if err != nil {
			return total, err
		}
		total += n
		if kept > 0 {
			d.logger.Warn("Quarantined dead letters left out of the replay: discard them, or restore the database from a backup",
				logKeyTarget, target, logKeyCount, kept)
		}
		if batch == nil && !more {
			break
		}
	}
	return total, nil
}

// markDiscardedBucket returns a target's bucket of discarded marks, created
// if needed, after dropping the marks whose log entry was pruned (a pruned
// event cannot be replayed from history, so its mark has no use).
func markDiscardedBucket(tx *bolt.Tx, b *bolt.Bucket) (*bolt.Bucket, error) {
	dis, err := b.CreateBucketIfNotExists(bucketDiscarded)
	if err != nil {
		return nil, err
	}
	pruned := getU64(tx.Bucket(bucketMeta), keyPruned)
	c := dis.Cursor()
	for k, _ := c.First(); k != nil && fromBE64(k) <= pruned; k, _ = c.First() {
		if err := dis.Delete(k); err != nil {
			return nil, err
		}
	}
	return dis, nil
}

// notFound is ErrNotFound naming (up to 20 of) the missing IDs.
func notFound(what string, ids []string) error {
	shown := ids[:min(len(ids), 20)]
	more := ""
	if len(ids) > len(shown) {
		more = fmt.Sprintf(" and %d more", len(ids)-len(shown))
	}
	return fmt.Errorf("%w: %s: %s%s", ErrNotFound, what, strings.Join(shown, ", "), more)
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
		b, err := d.ensureNamed(tx, target)
		if err != nil {
			return err
		}
		return putJSON(b, keyPause, ps)
	}, func() {
		d.post(func(s *scheduler) {
			if l := s.lane(target); l != nil {
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

// Resume restarts deliveries to a paused target and makes every pending
// event due now (see RetryNow). Resuming a running target only does the
// latter.
func (d *Dispatcher) Resume(target string) error {
	_, err := d.ResumeRetry(target)
	return err
}

// ResumeRetry is Resume, reporting how many pending events it made due now.
func (d *Dispatcher) ResumeRetry(target string) (int, error) {
	if err := d.checkTarget(target); err != nil {
		return 0, err
	}
	err := d.write(func(tx *bolt.Tx) error {
		b, err := d.ensureNamed(tx, target)
		if err != nil {
			return err
		}
		return b.Delete(keyPause)
	}, func() {
		d.post(func(s *scheduler) {
			if l := s.lane(target); l != nil {
				l.paused, l.reason, l.holdUntil = false, "", time.Time{}
				l.resumes++
			}
		})
	})
	if err != nil {
		return 0, fmt.Errorf("outbox: resume %s: %w", target, err)
	}
	n, err := d.RetryNow(target, nil)
	if err != nil {
		return 0, fmt.Errorf("outbox: resume %s: %w", target, err)
	}
	d.logger.Info("Target resumed", logKeyTarget, target, logKeyCount, n)
	return n, nil
}

// RetryNow makes a target's pending events due now — those with the given
// event IDs, or every pending event when ids is empty — and lifts a
// Retry-After hold on the target. It is durable: the new attempt times are
// stored, so it works without Run too (the next Run attempts them at once).
// It returns how many pending events it covered, events in flight included:
// should their attempt fail, the next is due at once. An ID that is not pending for the target
// (never admitted yet, delivered, or dead-lettered: replay those) makes it
// change nothing and return ErrNotFound naming the IDs.
func (d *Dispatcher) RetryNow(target string, ids []string) (int, error) {
	if err := d.checkTarget(target); err != nil {
		return 0, err
	}
	ids = slices.Compact(slices.Sorted(slices.Values(ids)))
	d.mu.RLock()
	defer d.mu.RUnlock()
	var n int
	var missing []string
	committed := make(chan error, 1)
	if d.inRunLocked(func(s *scheduler) {
		l := s.lane(target)
		if l == nil {
			committed <- nil
			return
		}
		n, missing = s.retryNow(l, ids, func(err error) { committed <- err })
		if missing != nil {
			committed <- nil
		}
	}) {
		select { // the new times are stored (or Run stopped, and they are not needed)
		case <-committed:
		case <-d.loopDone:
		}
		if missing != nil {
			return 0, notFound("not pending for target "+target+" (an event not attempted yet is due already; a dead letter needs replay)", missing)
		}
		d.logger.Info("Pending events made due now", logKeyTarget, target, logKeyCount, n)
		return n, nil
	}
	now := d.now()
	err := d.writeLocked(func(tx *bolt.Tx) error {
		n, missing = 0, nil
		b := targetBucket(tx, target)
		if b == nil {
			missing = ids
			return nil
		}
		events, spool, pending := tx.Bucket(bucketEvents), b.Bucket(bucketSpool), b.Bucket(bucketPending)
		want := map[string]bool{}
		for _, id := range ids {
			want[id] = true
		}
		type change struct {
			k  []byte
			st deliveryState
		}
		var changes []change
		c := pending.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(ids) > 0 {
				ev, ok, err := pendingEvent(events, spool, fromBE64(k))
				if err != nil {
					return err
				}
				if !ok || !want[ev.ID] {
					continue
				}
				delete(want, ev.ID)
			}
			n++
			var st deliveryState
			if err := json.Unmarshal(v, &st); err != nil {
				return fmt.Errorf("decode pending %s/%d: %w", target, fromBE64(k), err)
			}
			if st.NextAttemptAt.After(now) {
				st.NextAttemptAt = now
				changes = append(changes, change{bytes.Clone(k), st})
			}
		}
		for _, id := range ids {
			if want[id] {
				missing = append(missing, id)
			}
		}
		if len(missing) > 0 {
			return nil
		}
		for _, ch := range changes {
			if err := putJSON(pending, ch.k, ch.st); err != nil {
				return err
			}
		}
		return nil
	}, nil)
	if err != nil {
		return 0, fmt.Errorf("outbox: retry %s: %w", target, err)
	}
	if len(missing) > 0 {
		return 0, notFound("not pending for target "+target+" (an event not attempted yet is due already; a dead letter needs replay)", missing)
	}
	d.logger.Info("Pending events made due now", logKeyTarget, target, logKeyCount, n)
	return n, nil
}
