package outbox

import (
	"encoding/json"
	"fmt"
	"math"
	"time"

	bolt "go.etcd.io/bbolt"
)

// HistoryResult is what ReplayHistory queued.
type HistoryResult struct {
	// Replayed is the number of events queued for redelivery, counted when
	// the request was made.
	Replayed int `json:"replayed"`
	// FromSequence and ToSequence are the first and last of them (0 when
	// none).
	FromSequence uint64 `json:"from_sequence"`
	ToSequence   uint64 `json:"to_sequence"`
	// SkippedDiscarded is the number of events in the range left out
	// because an operator discarded their dead letter (see
	// HistoryRequest.IncludeDiscarded).
	SkippedDiscarded int `json:"skipped_discarded,omitempty"`
}

// HistoryRequest selects what ReplayHistoryWith re-delivers.
type HistoryRequest struct {
	// After selects the events after this sequence, Since those that
	// occurred at or after this time, which must not be in the future. At
	// most one of the two; neither: everything retained.
	After uint64
	Since time.Time
	// IncludeDiscarded re-delivers the events whose dead letter an operator
	// discarded, too. By default they are skipped: the operator decided the
	// target should not have them.
	IncludeDiscarded bool
}

// bucketDiscarded, in a target's state bucket, marks the log events whose
// dead letter an operator discarded (be64(seq) → be64(unix nanoseconds of
// the discard)), so that a history replay skips them. A mark is dropped when
// its log entry is pruned (by the next discard) or when a history replay
// that includes discarded events sends the event again.
var bucketDiscarded = []byte("discarded")

// HistoryStatus is a history replay in progress.
type HistoryStatus struct {
	FromSequence uint64 `json:"from_sequence"`
	ToSequence   uint64 `json:"to_sequence"`
	// NextSequence is the last sequence examined so far.
	NextSequence uint64    `json:"next_sequence"`
	Total        int       `json:"total"`
	Remaining    int       `json:"remaining"`
	StartedAt    time.Time `json:"started_at"`
}

// historyRecord is stored under keyHistory while a history replay runs.
type historyRecord struct {
	From      uint64    `json:"from"`
	To        uint64    `json:"to"`
	Next      uint64    `json:"next"` // highest seq examined
	Total     int       `json:"total"`
	Admitted  int       `json:"admitted"`
	StartedAt time.Time `json:"started_at"`
	// IncludeDiscarded: see HistoryRequest.
	IncludeDiscarded bool `json:"include_discarded,omitempty"`
}

func (r historyRecord) status() *HistoryStatus {
	return &HistoryStatus{FromSequence: r.From, ToSequence: r.To, NextSequence: r.Next, Total: r.Total,
		Remaining: max(r.Total-r.Admitted, 0), StartedAt: r.StartedAt}
}

type histRun struct {
	rec historyRecord
}

// ReplayHistory re-delivers to a target the events it already received that
// the log still retains (the app lost its database): those after sequence
// after, or those that occurred at or after since — exactly one of the two
// (after 0 and since zero: everything retained). Events the target does not
// subscribe to are skipped, and so are events still pending, staged for
// replay or dead-lettered for it (they are delivered, or replayed, as such).
// Events after the target's cursor are not history: they are delivered live.
//
// Replayed events keep their ids and sequences and go out in sequence order,
// through the same per-resource ordering as live events: each is sent only
// after every event of its resources already in flight is acknowledged and
// before any later event of those resources not yet sent. The replay is
// admitted a chunk at a time and uses at most half of the target's in-memory
// window, so live events keep flowing; it survives restarts. The log entries
// it still needs are not pruned.
//
// It returns ErrInvalidArgument when both after and since are given,
// ErrUnknownTarget, or ErrConflict while a backfill or another history
// replay of the target runs.
//
// Events whose dead letter an operator discarded are skipped too; see
// ReplayHistoryWith to include them.
func (d *Dispatcher) ReplayHistory(target string, after uint64, since time.Time) (HistoryResult, error) {
	return d.ReplayHistoryWith(target, HistoryRequest{After: after, Since: since})
}

// ReplayHistoryWith is ReplayHistory with the options of req. A Since in the
// future is ErrInvalidArgument (no event occurred after it: a mistyped year
// must not replay everything).
func (d *Dispatcher) ReplayHistoryWith(target string, req HistoryRequest) (HistoryResult, error) {
	after, since := req.After, req.Since
	if after != 0 && !since.IsZero() {
		return HistoryResult{}, fmt.Errorf("%w: give either a sequence to replay after or a time to replay since, not both", ErrInvalidArgument)
	}
	if now := d.now(); since.After(now) {
		return HistoryResult{}, fmt.Errorf("%w: since %s is in the future (the gateway's clock reads %s): no event occurred after it; check the date",
			ErrInvalidArgument, since.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	d.bfMu.Lock()
	defer d.bfMu.Unlock()
	t, err := d.lookup(target)
	if err != nil {
		return HistoryResult{}, err
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	// A barrier: the outcomes Run has already applied in memory are
	// committed, so that what is pending is counted as it stands now.
	if err := d.writeLocked(func(*bolt.Tx) error { return nil }, nil); err != nil {
		return HistoryResult{}, fmt.Errorf("outbox: replay history of %s: %w", target, err)
	}

	var from, to uint64
	err = d.database().View(func(tx *bolt.Tx) error {
		b := targetBucket(tx, target)
		if b == nil {
			to = 0 // never delivered anything
			return nil
		}
		var rec backfillRecord
		if ok, err := getJSON(b, keyBackfill, &rec); err != nil {
			return err
		} else if ok && rec.active() {
			return fmt.Errorf("%w: a backfill of target %s is %s; a history replay would only repeat what its snapshot sends", ErrConflict, target, rec.State)
		}
		if b.Get(keyHistory) != nil {
			return fmt.Errorf("%w: a history replay of target %s is already running; wait for it to finish", ErrConflict, target)
		}
		to = getU64(b, keyCursor)
		from = after + 1
		if !since.IsZero() {
			from = firstSince(tx.Bucket(bucketEvents), since)
		}
		return nil
	})
	if err != nil {
		return HistoryResult{}, fmt.Errorf("outbox: replay history of %s: %w", target, err)
	}
	if from == 0 || from > to {
		return HistoryResult{}, nil
	}

	// Count in chunks: a range can be the whole retained log.
	var res HistoryResult
	for next := from - 1; next < to; {
		err := d.database().View(func(tx *bolt.Tx) error {
			b := targetBucket(tx, target)
			events, pending, dead, rb := tx.Bucket(bucketEvents), b.Bucket(bucketPending), b.Bucket(bucketDead), b.Bucket(bucketReplay)
			discarded := b.Bucket(bucketDiscarded)
			c := events.Cursor()
			n := 0
			k, v := c.Seek(be64(next + 1))
			for ; k != nil && n < scanChunk; k, v = c.Next() {
				seq := fromBE64(k)
				if seq > to {
					break
				}
				n++
				next = seq
				if !t.match.match(peekType(v)) || pending.Get(k) != nil || dead.Get(k) != nil || rb.Get(k) != nil {
					continue
				}
				if discarded != nil && discarded.Get(k) != nil && !req.IncludeDiscarded {
					res.SkippedDiscarded++
					continue
				}
				if res.Replayed == 0 {
					res.FromSequence = seq
				}
				res.ToSequence = seq
				res.Replayed++
			}
			if k == nil || fromBE64(k) > to {
				next = to
			}
			return nil
		})
		if err != nil {
			return HistoryResult{}, fmt.Errorf("outbox: replay history of %s: %w", target, err)
		}
	}
	if res.SkippedDiscarded > 0 {
		d.logger.Info("History replay skips discarded events", logKeyTarget, target, logKeyCount, res.SkippedDiscarded)
	}
	if res.Replayed == 0 {
		return res, nil
	}
	rec := historyRecord{From: res.FromSequence, To: res.ToSequence, Next: res.FromSequence - 1, Total: res.Replayed,
		StartedAt: d.now().UTC(), IncludeDiscarded: req.IncludeDiscarded}
	if err := d.writeLocked(func(tx *bolt.Tx) error {
		b, err := d.ensureTarget(tx, t.cfg, d.initTail)
		if err != nil {
			return err
		}
		return putJSON(b, keyHistory, rec)
	}, nil); err != nil {
		return HistoryResult{}, fmt.Errorf("outbox: replay history of %s: %w", target, err)
	}
	d.inRunLocked(func(s *scheduler) {
		if l := s.lane(target); l != nil {
			l.hist = &histRun{rec: rec}
		}
	})
	d.logger.Info("History replay queued", logKeyTarget, target, logKeyCount, res.Replayed, "from_seq", res.FromSequence, "to_seq", res.ToSequence)
	return res, nil
}

// scanChunk bounds the log entries one read transaction of a history count
// examines.
const scanChunk = 10000

// firstSince returns the first seq whose event occurred at or after since (0
// if none), by binary search over the log, which is in commit order.
// Occurrence times are int64 nanoseconds: a since before their range is the
// start of the log, and one after it matches nothing (UnixNano would wrap).
func firstSince(events *bolt.Bucket, since time.Time) uint64 {
	c := events.Cursor()
	lo, _ := c.First()
	hi, _ := c.Last()
	if lo == nil || since.After(time.Unix(0, math.MaxInt64)) {
		return 0
	}
	if since.Before(time.Unix(0, math.MinInt64)) {
		return fromBE64(lo)
	}
	atOf := func(v []byte) int64 {
		var at struct {
			At int64 `json:"at"`
		}
		_ = json.Unmarshal(v, &at)
		return at.At
	}
	cut := since.UnixNano()
	if _, v := c.Last(); atOf(v) < cut {
		return 0
	}
	// The smallest x whose first key at or after it occurred at or after since.
	l, h := fromBE64(lo), fromBE64(hi)
	for l < h {
		mid := l + (h-l)/2
		if _, v := c.Seek(be64(mid)); atOf(v) >= cut {
			h = mid
		} else {
			l = mid + 1
		}
	}
	k, _ := c.Seek(be64(l))
	return fromBE64(k)
}

// refillHistory admits up to room events of a history replay.
func (s *scheduler) refillHistory(l *lane, room int) error {
	h, name := l.hist, l.t.cfg.Name
	var adm []*item
	var unmark []uint64
	last, done, examined := h.rec.Next, false, 0
	err := s.d.database().View(func(tx *bolt.Tx) error {
		b := targetBucket(tx, name)
		events, dead, rb := tx.Bucket(bucketEvents), b.Bucket(bucketDead), b.Bucket(bucketReplay)
		discarded := b.Bucket(bucketDiscarded)
		c := events.Cursor()
		k, v := c.Seek(be64(h.rec.Next + 1))
		for ; k != nil && len(adm) < room && examined < pullChunk; k, v = c.Next() {
			seq := fromBE64(k)
			if seq > h.rec.To {
				break
			}
			examined++
			last = seq
			if !l.t.match.match(peekType(v)) || l.items[seq] != nil || dead.Get(k) != nil || rb.Get(k) != nil {
				continue
			}
			if discarded != nil && discarded.Get(k) != nil {
				if !h.rec.IncludeDiscarded {
					continue
				}
				unmark = append(unmark, seq) // sent again: no longer discarded
			}
			ev, err := decodeEvent(seq, v)
			if err != nil {
				ev = salvageEvent(seq, v, err) // dead-lettered unsent
			}
			adm = append(adm, &item{key: seq, ev: ev, res: uniq(ev.Resources), heapIdx: -1})
		}
		done = k == nil || fromBE64(k) > h.rec.To
		return nil
	})
	if err != nil {
		return fmt.Errorf("outbox: read log for the history replay of %s: %w", name, err)
	}
	if done {
		last = h.rec.To
	} else if examined == pullChunk {
		s.more = true
	}
	if last == h.rec.Next && !done {
		return nil
	}
	now := s.d.now()
	keys := make([]uint64, len(adm))
	for i, it := range adm {
		it.st.NextAttemptAt = now
		l.add(it)
		keys[i] = it.key
	}
	h.rec.Next = last
	h.rec.Admitted += len(adm)
	rec := h.rec
	if done {
		l.hist = nil
		s.d.logger.Info("History replay admitted", logKeyTarget, name, logKeyCount, rec.Admitted)
	}
	s.submit(func(tx *bolt.Tx) error {
		b := targetBucket(tx, name)
		if err := putPending(b, keys); err != nil {
			return err
		}
		if dis := b.Bucket(bucketDiscarded); dis != nil {
			for _, k := range unmark {
				if err := dis.Delete(be64(k)); err != nil {
					return err
				}
			}
		}
		if done {
			return b.Delete(keyHistory)
		}
		return putJSON(b, keyHistory, rec)
	}, nil)
	return nil
}
