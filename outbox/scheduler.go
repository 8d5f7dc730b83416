package outbox

import (
	"bytes"
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// scheduler is the state of one Run. Only the Run goroutine touches it, so it
// needs no locks; senders run in their own goroutines and report on results,
// and every durable change goes to the committer as an op, in causal order.
//
// Why outcomes may be applied in memory before they commit: the committer
// writes ops in the order they were queued, so an event's outcome is always
// committed no later than that of any event released after it. After a crash,
// whatever was not committed is pending again and is redelivered in order.
type scheduler struct {
	d        *Dispatcher
	lanes    []*lane
	byName   map[string]*lane
	seenTail uint64 // highest log seq read by pull
	results  chan result
	inflight int
	wg       sync.WaitGroup

	sendCtx     context.Context
	cancelSends context.CancelFunc

	needPull  bool
	nextPoll  time.Time
	nextPrune time.Time
	nextStats time.Time
	nextFlush time.Time
}

// lane is one target's in-memory queue. It holds every pending event of the
// target (loaded at start, admitted from the log, or loaded from replay), up
// to the window.
type lane struct {
	t             *target
	cursor        uint64 // highest log seq examined for admission
	items         map[uint64]*item
	order         []uint64 // seqs of items, ascending; stale entries are skipped lazily
	rq            map[string]*resQueue
	ready         readyHeap // items that are first in all their resource queues
	inflight      int
	paused        bool
	reason        string
	holdUntil     time.Time // Retry-After from a 429/503 holds the whole target
	unadmitted    int       // matching log events after cursor
	staged        int       // events in the replay bucket
	loadingReplay bool
	deadN         int
	stats         targetStats
	statsDirty    bool
	failing       bool // the last attempt failed; logged on transitions only
}

type item struct {
	ev      Event
	res     []string // deduplicated Resources
	st      deliveryState
	flying  bool
	heapIdx int // index in lane.ready, -1 if absent
}

// resQueue is the FIFO of pending events that concern one resource key.
type resQueue struct {
	seqs   []uint64
	flying int
}

type result struct {
	l          *lane
	it         *item
	err        error
	start, end time.Time
}

// load reads the delivery state of every target inside Run's first
// transaction, creating what is missing.
func (d *Dispatcher) load(tx *bolt.Tx) (*scheduler, error) {
	if err := InitBuckets(tx); err != nil {
		return nil, err
	}
	events := tx.Bucket(bucketEvents)
	tail := logTail(tx)
	conc := 0
	s := &scheduler{d: d, byName: map[string]*lane{}, seenTail: tail}

	if d.counted < tail {
		counts := map[string]int{}
		c := events.Cursor()
		for k, v := c.Seek(be64(d.counted + 1)); k != nil; k, v = c.Next() {
			counts[peekType(v)]++
		}
		for typ, n := range counts {
			d.metrics.incEnqueued(typ, n)
		}
		d.counted = tail
	}

	for _, t := range d.targets {
		conc += d.cfg.Concurrency
		b, err := ensureTarget(tx, t.cfg.Name, d.initTail)
		if err != nil {
			return nil, err
		}
		l := &lane{t: t, items: map[uint64]*item{}, rq: map[string]*resQueue{}}
		l.cursor = getU64(b, keyCursor)
		var ps pauseState
		if ok, err := getJSON(b, keyPause, &ps); err != nil {
			return nil, err
		} else if ok {
			l.paused, l.reason = true, ps.Reason
		}
		if _, err := getJSON(b, keyStats, &l.stats); err != nil {
			return nil, err
		}
		l.deadN = int(getU64(b, keyDeadN))
		l.staged = int(getU64(b, keyReplayN))

		// Every pending entry is loaded, whatever the window: they are the
		// events that were admitted and not yet finished.
		pending := b.Bucket(bucketPending)
		var orphans [][]byte
		err = pending.ForEach(func(k, v []byte) error {
			seq := fromBE64(k)
			raw := events.Get(k)
			if raw == nil {
				orphans = append(orphans, bytes.Clone(k))
				return nil
			}
			ev, err := decodeEvent(seq, raw)
			if err != nil {
				return err
			}
			it := &item{ev: ev, res: uniq(ev.Resources), heapIdx: -1}
			if err := json.Unmarshal(v, &it.st); err != nil {
				return fmt.Errorf("decode pending %s/%d: %w", t.cfg.Name, seq, err)
			}
			l.add(it)
			return nil
		})
		if err != nil {
			return nil, err
		}
		for _, k := range orphans {
			// Only possible if the target was removed from the config while its
			// events were pruned, then added back.
			d.logger.Warn("Pending event missing from the log, dropped", logKeyTarget, t.cfg.Name, logKeySeq, fromBE64(k))
			if err := pending.Delete(k); err != nil {
				return nil, err
			}
		}
		c := events.Cursor()
		for k, v := c.Seek(be64(l.cursor + 1)); k != nil; k, v = c.Next() {
			if t.match.match(peekType(v)) {
				l.unadmitted++
			}
		}
		s.lanes = append(s.lanes, l)
		s.byName[t.cfg.Name] = l
	}
	s.results = make(chan result, conc+1)
	return s, nil
}

func uniq(res []string) []string {
	if len(res) < 2 {
		return res
	}
	out := make([]string, 0, len(res))
	for _, r := range res {
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out
}

// loop is Run's main loop.
func (s *scheduler) loop(ctx context.Context, commitErr <-chan error) error {
	d := s.d
	timer := time.NewTimer(0) // Go ≥ 1.23: Reset needs no drain
	defer timer.Stop()
	s.needPull = true
	for {
		s.runInbox()
		now := d.now()
		if s.needPull || !now.Before(s.nextPoll) {
			s.needPull = false
			s.nextPoll = now.Add(d.cfg.PollInterval)
			if err := s.pull(); err != nil {
				return err
			}
		}
		for _, l := range s.lanes {
			if err := s.refill(l); err != nil {
				return err
			}
		}
		if !now.Before(s.nextPrune) {
			if err := s.prune(now); err != nil {
				return err
			}
		}
		for _, l := range s.lanes {
			s.dispatch(l, now)
		}
		s.flushStats(now, false)
		s.publish(now)

		timer.Reset(max(s.nextWake(now).Sub(now), 0))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-commitErr:
			return err
		case r := <-s.results:
			s.handle(r)
		more: // take what else is there before scheduling again
			for range 1024 {
				select {
				case r := <-s.results:
					s.handle(r)
				default:
					break more
				}
			}
		case <-d.wake:
			s.needPull = true
		case <-d.kick:
		case <-timer.C:
		}
	}
}

func (s *scheduler) runInbox() {
	s.d.inboxMu.Lock()
	fs := s.d.inbox
	s.d.inbox = nil
	s.d.inboxMu.Unlock()
	for _, f := range fs {
		f(s)
	}
}

func (s *scheduler) nextWake(now time.Time) time.Time {
	next := s.nextPoll
	if s.nextFlush.Before(next) && s.anyDirty() {
		next = s.nextFlush
	}
	if s.nextPrune.Before(next) {
		next = s.nextPrune
	}
	if s.nextStats.Before(next) {
		next = s.nextStats
	}
	for _, l := range s.lanes {
		if l.paused || l.inflight >= s.d.cfg.Concurrency || len(l.ready) == 0 {
			continue
		}
		at := l.ready[0].st.NextAttemptAt
		if at.Before(l.holdUntil) {
			at = l.holdUntil
		}
		if at.Before(next) {
			next = at
		}
	}
	return next
}

func (s *scheduler) anyDirty() bool {
	for _, l := range s.lanes {
		if l.statsDirty {
			return true
		}
	}
	return false
}

// submit queues a durable change. It blocks while the committer is behind,
// which is the back-pressure on delivery.
func (s *scheduler) submit(fn func(tx *bolt.Tx) error, after func()) {
	s.d.ops <- &op{fn: fn, after: after}
}

// pull reads new log entries, counts them, and admits them to lanes that are
// caught up and have room.
func (s *scheduler) pull() error {
	prev := s.seenTail
	var fresh []Event
	err := s.d.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		for k, v := c.Seek(be64(prev + 1)); k != nil && len(fresh) < pullChunk; k, v = c.Next() {
			ev, err := decodeEvent(fromBE64(k), v)
			if err != nil {
				return err
			}
			fresh = append(fresh, ev)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("outbox: read log: %w", err)
	}
	if len(fresh) == 0 {
		return nil
	}
	if len(fresh) == pullChunk {
		s.needPull = true // more to read
	}
	s.seenTail = fresh[len(fresh)-1].Seq
	if s.d.metrics != nil {
		counts := map[string]int{}
		for _, ev := range fresh {
			if ev.Seq > s.d.counted {
				counts[ev.Type]++
			}
		}
		for typ, n := range counts {
			s.d.metrics.incEnqueued(typ, n)
		}
	}
	s.d.counted = max(s.d.counted, s.seenTail)
	for _, l := range s.lanes {
		for _, ev := range fresh {
			if ev.Seq > l.cursor && l.t.match.match(ev.Type) {
				l.unadmitted++
			}
		}
		if l.cursor == prev {
			s.admit(l, fresh)
		}
	}
	return nil
}

// refill admits from the log to a lane that fell behind (its window was full)
// and loads replayed events, once there is room.
func (s *scheduler) refill(l *lane) error {
	room := s.d.window - len(l.items)
	if room <= 0 {
		return nil
	}
	if l.staged > 0 && !l.loadingReplay {
		s.loadReplay(l, min(room, 1024))
	}
	if l.cursor >= s.seenTail || (room < s.d.window/4 && len(l.items) > 0) {
		return nil
	}
	var evs []Event
	err := s.d.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		n := 0
		for k, v := c.Seek(be64(l.cursor + 1)); k != nil && n < room && len(evs) < pullChunk && fromBE64(k) <= s.seenTail; k, v = c.Next() {
			seq := fromBE64(k)
			if !l.t.match.match(peekType(v)) {
				evs = append(evs, Event{Seq: seq}) // examined, not subscribed
				continue
			}
			ev, err := decodeEvent(seq, v)
			if err != nil {
				return err
			}
			evs = append(evs, ev)
			n++
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("outbox: read log: %w", err)
	}
	s.admit(l, evs)
	return nil
}

// admit takes events in log order (seq > l.cursor) into the lane while there
// is room, and persists the new pending entries and cursor.
func (s *scheduler) admit(l *lane, evs []Event) {
	room := s.d.window - len(l.items)
	last := l.cursor
	var adm []*item
	for _, ev := range evs {
		if ev.Seq <= l.cursor {
			continue
		}
		if room <= 0 {
			break
		}
		last = ev.Seq
		if ev.Type == "" || !l.t.match.match(ev.Type) {
			continue
		}
		it := &item{ev: ev, res: uniq(ev.Resources), heapIdx: -1}
		it.st.NextAttemptAt = ev.OccurredAt.Add(s.d.backoff(0))
		adm = append(adm, it)
		room--
	}
	if last == l.cursor {
		return
	}
	l.cursor = last
	l.unadmitted = max(l.unadmitted-len(adm), 0)
	seqs := make([]uint64, len(adm))
	for i, it := range adm {
		seqs[i] = it.ev.Seq
		l.add(it)
	}
	name := l.t.cfg.Name
	s.submit(func(tx *bolt.Tx) error {
		b := targetBucket(tx, name)
		p := b.Bucket(bucketPending)
		for _, seq := range seqs {
			if err := p.Put(be64(seq), freshState); err != nil {
				return err
			}
		}
		return b.Put(keyCursor, be64(last))
	}, nil)
}

// loadReplay moves up to n replayed events into pending, in the committer's
// transaction, and hands them to the lane afterwards.
func (s *scheduler) loadReplay(l *lane, n int) {
	l.loadingReplay = true
	name := l.t.cfg.Name
	var loaded []Event
	var remaining int
	s.submit(func(tx *bolt.Tx) error {
		loaded, remaining = nil, 0
		b := targetBucket(tx, name)
		rb, pending, events := b.Bucket(bucketReplay), b.Bucket(bucketPending), tx.Bucket(bucketEvents)
		var keys [][]byte
		c := rb.Cursor()
		for k, v := c.First(); k != nil && len(keys) < n; k, v = c.Next() {
			var dl DeadLetter
			if err := json.Unmarshal(v, &dl); err != nil {
				return fmt.Errorf("decode replay %s/%d: %w", name, fromBE64(k), err)
			}
			dl.Event.Seq = fromBE64(k)
			keys = append(keys, bytes.Clone(k))
			loaded = append(loaded, dl.Event)
		}
		for i, k := range keys {
			if events.Get(k) == nil { // pruned since: restore it so that pending can refer to it
				v, err := encodeEvent(loaded[i])
				if err != nil {
					return err
				}
				if err := events.Put(k, v); err != nil {
					return err
				}
			}
			if err := pending.Put(k, freshState); err != nil {
				return err
			}
			if err := rb.Delete(k); err != nil {
				return err
			}
		}
		if len(keys) == 0 {
			return b.Put(keyReplayN, be64(0))
		}
		if err := addU64(b, keyReplayN, -len(keys)); err != nil {
			return err
		}
		remaining = int(getU64(b, keyReplayN))
		return nil
	}, func() {
		evs, rem := loaded, remaining
		s.d.post(func(s *scheduler) {
			l.loadingReplay = false
			l.staged = rem
			now := s.d.now()
			for _, ev := range evs {
				if _, ok := l.items[ev.Seq]; !ok {
					l.add(&item{ev: ev, res: uniq(ev.Resources), heapIdx: -1, st: deliveryState{NextAttemptAt: now}})
				}
			}
		})
	})
}

// dispatch starts due, unblocked events up to the target's concurrency.
func (s *scheduler) dispatch(l *lane, now time.Time) {
	if l.paused || now.Before(l.holdUntil) {
		return
	}
	for l.inflight < s.d.cfg.Concurrency && len(l.ready) > 0 {
		it := l.ready[0]
		if it.st.NextAttemptAt.After(now) {
			return
		}
		heap.Pop(&l.ready)
		if !l.isReady(it) {
			continue // a replayed event took its place; it is pushed again when first
		}
		s.start(l, it, now)
	}
}

func (s *scheduler) start(l *lane, it *item, now time.Time) {
	l.startFlight(it)
	if it.st.FirstAttemptAt.IsZero() {
		it.st.FirstAttemptAt = now
	}
	s.inflight++
	ev, sender, ctx, results, clock := it.ev, l.t.sender, s.sendCtx, s.results, s.d.now
	s.wg.Go(func() {
		start := clock()
		err := sender.Send(ctx, ev)
		results <- result{l: l, it: it, err: err, start: start, end: clock()}
	})
}

// handle applies the outcome of one attempt.
func (s *scheduler) handle(r result) {
	s.inflight--
	l, it, d := r.l, r.it, s.d
	name := l.t.cfg.Name
	if r.err != nil && s.sendCtx.Err() != nil {
		l.endFlight(it) // shutting down: the event stays pending for the next Run
		return
	}
	d.metrics.attempt(name, r.end.Sub(r.start), r.err == nil)
	now := r.end
	it.st.LastAttemptAt = r.start
	if r.err == nil {
		s.delivered(l, it, now)
		return
	}

	var se *StatusError
	var body string
	var retryAfter time.Duration
	it.st.LastStatus = 0
	if errors.As(r.err, &se) {
		it.st.LastStatus, body, retryAfter = se.StatusCode, se.Body, se.RetryAfter
	}
	it.st.LastError = truncate(r.err.Error(), maxErrorText)
	l.stats.LastError, l.stats.LastErrorAt, l.stats.LastStatus = it.st.LastError, now, it.st.LastStatus
	l.statsDirty = true

	var pe *pauseError
	switch {
	case errors.As(r.err, &pe):
		s.pause(l, it, now)
	case IsPermanent(r.err):
		it.st.Attempts++
		s.dead(l, it, body)
	default:
		if !l.failing { // log the transition; each retry is logged at debug level
			l.failing = true
			d.logger.Warn("Deliveries to target failing", logKeyTarget, name, logKeyEventID, it.ev.ID,
				logKeyStatus, it.st.LastStatus, logKeyErr, it.st.LastError)
		}
		it.st.Attempts++
		wait := d.backoff(it.st.Attempts)
		if retryAfter > 0 {
			wait = min(retryAfter, d.cfg.RetryAfterMax)
			if hold := now.Add(wait); hold.After(l.holdUntil) {
				l.holdUntil = hold // a rate limit concerns the whole target
			}
		}
		next := now.Add(wait)
		if (d.cfg.MaxAttempts > 0 && it.st.Attempts >= d.cfg.MaxAttempts) ||
			(d.cfg.MaxAge > 0 && next.Sub(it.st.FirstAttemptAt) > d.cfg.MaxAge) {
			s.dead(l, it, body)
			return
		}
		it.st.NextAttemptAt = next
		l.endFlight(it)
		d.metrics.retried(name)
		d.logger.Debug("Delivery failed, will retry", logKeyTarget, name, logKeyEventID, it.ev.ID,
			logKeyAttempt, it.st.Attempts, logKeyStatus, it.st.LastStatus, logKeyErr, it.st.LastError, logKeyRetryIn, wait.Round(time.Millisecond))
		seq, st := it.ev.Seq, it.st
		s.submit(func(tx *bolt.Tx) error {
			return putJSON(targetBucket(tx, name).Bucket(bucketPending), be64(seq), st)
		}, nil)
	}
}

func (s *scheduler) delivered(l *lane, it *item, now time.Time) {
	name := l.t.cfg.Name
	l.land(it)
	l.remove(it)
	l.stats.Delivered++
	l.stats.LastSuccess = now
	l.statsDirty = true
	if l.failing {
		l.failing = false
		s.d.logger.Info("Deliveries to target recovered", logKeyTarget, name, logKeyEventID, it.ev.ID)
	}
	s.d.metrics.delivered(name, now.Sub(it.ev.OccurredAt))
	if s.d.logger.Enabled(context.Background(), slog.LevelDebug) {
		s.d.logger.Debug("Delivered", logKeyTarget, name, logKeyEventID, it.ev.ID, logKeyAttempt, it.st.Attempts+1)
	}
	seq := it.ev.Seq
	s.submit(func(tx *bolt.Tx) error {
		return targetBucket(tx, name).Bucket(bucketPending).Delete(be64(seq))
	}, nil)
}

func (s *scheduler) dead(l *lane, it *item, body string) {
	name := l.t.cfg.Name
	l.land(it)
	l.remove(it)
	l.deadN++
	s.d.metrics.deadLettered(name)
	s.d.logger.Warn("Event dead-lettered", logKeyTarget, name, logKeyEventID, it.ev.ID, logKeyType, it.ev.Type,
		logKeyAttempt, it.st.Attempts, logKeyStatus, it.st.LastStatus, logKeyErr, it.st.LastError)
	dl := DeadLetter{
		Event: it.ev, Target: name, Attempts: it.st.Attempts,
		FirstAttemptAt: it.st.FirstAttemptAt, LastAttemptAt: it.st.LastAttemptAt,
		LastStatus: it.st.LastStatus, LastError: it.st.LastError, ResponseBody: body,
	}
	s.submit(func(tx *bolt.Tx) error {
		b := targetBucket(tx, name)
		k := be64(dl.Event.Seq)
		if err := b.Bucket(bucketPending).Delete(k); err != nil {
			return err
		}
		if err := putJSON(b.Bucket(bucketDead), k, dl); err != nil {
			return err
		}
		if err := b.Bucket(bucketDeadIDs).Put([]byte(dl.Event.ID), k); err != nil {
			return err
		}
		return addU64(b, keyDeadN, 1)
	}, nil)
}

// pause stops the target after a 410 Gone; the event stays first in line.
func (s *scheduler) pause(l *lane, it *item, now time.Time) {
	name := l.t.cfg.Name
	it.st.NextAttemptAt = now
	l.endFlight(it)
	reason := fmt.Sprintf("paused automatically: the webhook answered 410 Gone at %s (event %s); resume the target once the endpoint is fixed",
		now.UTC().Format(time.RFC3339), it.ev.ID)
	if !l.paused {
		s.d.logger.Warn("Target paused", logKeyTarget, name, logKeyEventID, it.ev.ID, logKeyStatus, it.st.LastStatus, logKeyReason, "410 Gone")
	}
	l.paused, l.reason = true, reason
	seq, st := it.ev.Seq, it.st
	ps := pauseState{Reason: reason, At: now}
	s.submit(func(tx *bolt.Tx) error {
		b := targetBucket(tx, name)
		if err := putJSON(b.Bucket(bucketPending), be64(seq), st); err != nil {
			return err
		}
		return putJSON(b, keyPause, ps)
	}, nil)
}

// flushStats persists each lane's counters, at most every statsFlushEvery
// unless force (shutdown). Status reads them from memory while Run runs.
func (s *scheduler) flushStats(now time.Time, force bool) {
	if !force && now.Before(s.nextFlush) {
		return
	}
	s.nextFlush = now.Add(statsFlushEvery)
	for _, l := range s.lanes {
		if !l.statsDirty {
			continue
		}
		l.statsDirty = false
		name, st := l.t.cfg.Name, l.stats
		s.submit(func(tx *bolt.Tx) error { return putJSON(targetBucket(tx, name), keyStats, st) }, nil)
	}
}

// publish makes backlog figures available to Status and, every statsEvery, to
// the gauges.
func (s *scheduler) publish(now time.Time) {
	d := s.d
	gauges := !now.Before(s.nextStats)
	if gauges {
		s.nextStats = now.Add(statsEvery)
	}
	d.snapMu.Lock()
	defer d.snapMu.Unlock()
	for _, l := range s.lanes {
		snap := laneSnap{backlog: len(l.items) + l.staged + l.unadmitted, oldest: l.oldest(), stats: l.stats}
		d.snap[l.t.cfg.Name] = snap
		if gauges {
			var age time.Duration
			if !snap.oldest.IsZero() {
				age = max(now.Sub(snap.oldest), 0)
			}
			d.metrics.gauges(l.t.cfg.Name, snap.backlog, age, l.deadN, l.paused)
		}
	}
}

// prune deletes delivered events older than the retention: keys are
// collected in a View and deleted by the committer, which checks again that no
// target still has them pending.
func (s *scheduler) prune(now time.Time) error {
	d := s.d
	s.nextPrune = now.Add(d.pruneEvery)
	limit := s.seenTail
	for _, l := range s.lanes {
		limit = min(limit, l.cursor)
	}
	cutoff := now.Add(-d.cfg.Retention).UnixNano()
	var keys []uint64
	err := d.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		for k, v := c.First(); k != nil && len(keys) < pruneChunk; k, v = c.Next() {
			seq := fromBE64(k)
			if seq > limit {
				break
			}
			var at struct {
				At int64 `json:"at"`
			}
			if err := json.Unmarshal(v, &at); err != nil {
				return fmt.Errorf("decode event %d: %w", seq, err)
			}
			if at.At > cutoff {
				break // the log is in commit order, so everything after is newer
			}
			if s.pending(seq) {
				continue
			}
			keys = append(keys, seq)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("outbox: prune: %w", err)
	}
	if len(keys) == 0 {
		return nil
	}
	if len(keys) == pruneChunk {
		s.nextPrune = now // more to do; the next loop iteration continues
	}
	names := make([]string, len(s.lanes))
	for i, l := range s.lanes {
		names[i] = l.t.cfg.Name
	}
	s.submit(func(tx *bolt.Tx) error {
		events := tx.Bucket(bucketEvents)
		var pendings []*bolt.Bucket
		for _, n := range names {
			pendings = append(pendings, targetBucket(tx, n).Bucket(bucketPending))
		}
	next:
		for _, seq := range keys {
			k := be64(seq)
			for _, p := range pendings {
				if p.Get(k) != nil { // replayed since the View
					continue next
				}
			}
			if err := events.Delete(k); err != nil {
				return err
			}
		}
		return nil
	}, nil)
	return nil
}

func (s *scheduler) pending(seq uint64) bool {
	for _, l := range s.lanes {
		if _, ok := l.items[seq]; ok {
			return true
		}
	}
	return false
}

// add inserts an item into the lane's queues.
func (l *lane) add(it *item) {
	seq := it.ev.Seq
	l.items[seq] = it
	l.order = insertSorted(l.order, seq)
	for _, r := range it.res {
		q := l.rq[r]
		if q == nil {
			q = &resQueue{}
			l.rq[r] = q
		}
		q.seqs = insertSorted(q.seqs, seq)
	}
	l.maybeReady(it)
}

// remove drops a finished item and releases the events that waited for it.
func (l *lane) remove(it *item) {
	seq := it.ev.Seq
	delete(l.items, seq)
	if len(l.order) > 2*len(l.items)+1024 {
		// A long-retrying first event keeps oldest() from trimming the front.
		l.order = slices.DeleteFunc(l.order, func(s uint64) bool { _, ok := l.items[s]; return !ok })
	}
	if it.heapIdx >= 0 {
		heap.Remove(&l.ready, it.heapIdx)
	}
	for _, r := range it.res {
		q := l.rq[r]
		if i, ok := slices.BinarySearch(q.seqs, seq); ok {
			q.seqs = slices.Delete(q.seqs, i, i+1)
		}
		if len(q.seqs) == 0 && q.flying == 0 {
			delete(l.rq, r)
			continue
		}
		l.checkHead(q)
	}
}

func (l *lane) startFlight(it *item) {
	it.flying = true
	l.inflight++
	for _, r := range it.res {
		l.rq[r].flying++
	}
}

// land ends an item's flight without making it ready again (it is finished).
func (l *lane) land(it *item) {
	if !it.flying {
		return
	}
	it.flying = false
	l.inflight--
	for _, r := range it.res {
		l.rq[r].flying--
	}
}

// endFlight ends an item's flight; it stays pending and, like the other heads
// of its resource queues, becomes ready again.
func (l *lane) endFlight(it *item) {
	if !it.flying {
		return
	}
	l.land(it)
	for _, r := range it.res {
		l.checkHead(l.rq[r])
	}
	l.maybeReady(it)
}

func (l *lane) checkHead(q *resQueue) {
	if len(q.seqs) > 0 {
		if head := l.items[q.seqs[0]]; head != nil {
			l.maybeReady(head)
		}
	}
}

// isReady reports whether it may be sent: it is first in the queue of every
// resource it concerns and nothing for those resources is in flight.
func (l *lane) isReady(it *item) bool {
	if it.flying {
		return false
	}
	for _, r := range it.res {
		q := l.rq[r]
		if q.flying > 0 || q.seqs[0] != it.ev.Seq {
			return false
		}
	}
	return true
}

func (l *lane) maybeReady(it *item) {
	if it.heapIdx < 0 && l.isReady(it) {
		heap.Push(&l.ready, it)
	}
}

// oldest returns OccurredAt of the lowest pending seq, zero if none.
func (l *lane) oldest() time.Time {
	for len(l.order) > 0 {
		if it, ok := l.items[l.order[0]]; ok {
			return it.ev.OccurredAt
		}
		l.order = l.order[1:]
	}
	return time.Time{}
}

func insertSorted(s []uint64, v uint64) []uint64 {
	if n := len(s); n == 0 || s[n-1] < v {
		return append(s, v)
	}
	i, found := slices.BinarySearch(s, v)
	if found {
		return s
	}
	return slices.Insert(s, i, v)
}

// readyHeap orders unblocked items by next attempt time, then seq.
type readyHeap []*item

func (h readyHeap) Len() int { return len(h) }
func (h readyHeap) Less(i, j int) bool {
	a, b := h[i], h[j]
	if !a.st.NextAttemptAt.Equal(b.st.NextAttemptAt) {
		return a.st.NextAttemptAt.Before(b.st.NextAttemptAt)
	}
	return a.ev.Seq < b.ev.Seq
}
func (h readyHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx, h[j].heapIdx = i, j
}
func (h *readyHeap) Push(x any) {
	it := x.(*item)
	it.heapIdx = len(*h)
	*h = append(*h, it)
}
func (h *readyHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	it.heapIdx = -1
	return it
}
