package outbox

import (
	"bytes"
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
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
	d          *Dispatcher
	cfg        Config // Run's copy of the configuration; Reload replaces it
	window     int
	pruneEvery time.Duration
	lanes      []*lane
	byName     map[string]*lane
	retired    []*target        // replaced or removed, with attempts still in flight
	removed    map[string]*lane // lanes Reload removed: reused, exactly as they were, if added back
	seenTail   uint64           // highest log seq read by pull
	results    chan result
	inflight   int
	wg         sync.WaitGroup

	sendCtx     context.Context
	cancelSends context.CancelFunc
	bgCtx       context.Context // backfills Run starts by itself
	cancelBG    context.CancelFunc

	needPull  bool
	more      bool // a refill stopped at its chunk size: loop again without sleeping
	nextPoll  time.Time
	nextPrune time.Time
	nextStats time.Time
	nextFlush time.Time
}

// lane is one target's in-memory queue. It holds every pending event of the
// target (loaded at start, admitted from the log, from a backfill's spool or
// from a history replay, or loaded from replay), up to the window.
type lane struct {
	t        *target
	cursor   uint64 // highest log seq examined for admission
	items    map[uint64]*item
	order    []uint64 // keys of items, ascending; stale entries are skipped lazily
	rq       map[string]*resQueue
	ready    readyHeap // items that are first in all their resource queues
	inflight int
	paused   bool
	reason   string
	// resumes counts Resume calls: a refusal that pauses the target
	// (pauseError) from an attempt started before the last Resume was
	// made with what the operator has since fixed, so it is retried, not
	// a new pause.
	resumes       int
	holdUntil     time.Time // Retry-After from a 429/503 holds the whole target
	unadmitted    int       // matching log events after cursor
	staged        int       // events in the replay bucket
	loadingReplay bool
	deadN         int
	stats         targetStats
	statsDirty    bool
	failing       bool // the last attempt failed; logged on transitions only

	frozen     bool   // a backfill is taking its snapshot: admit nothing past frozenAt
	frozenAt   uint64 //
	bf         *bfRun
	hist       *histRun
	bosPending bool // backfill_on_start not yet done: Run starts it
	bfRestart  bool // a backfill whose spool was not completely written: Run redoes it
}

// item is one pending event of a lane. key orders it in the lane and keys
// its pending, dead and replay entries: the log seq for a log event, a spool
// key (see isSpoolKey) for a snapshot event, whose ev.Seq is the snapshot's
// sequence.
type item struct {
	key     uint64
	ev      Event
	res     []string // deduplicated Resources
	st      deliveryState
	flying  bool
	retry   bool // RetryNow came while flying: if this attempt fails, the next is due at once
	heapIdx int  // index in lane.ready, -1 if absent
}

// resQueue is the FIFO of pending events that concern one resource key.
type resQueue struct {
	keys   []uint64
	flying int
}

type result struct {
	l          *lane
	t          *target // the target (and sender) the attempt used
	it         *item
	err        error
	start, end time.Time
	resumes    int // the lane's resumes when the attempt started (lane.resumes)
}

// load reads the delivery state of every target inside Run's first
// transaction, creating what is missing.
func (d *Dispatcher) load(tx *bolt.Tx) (*scheduler, error) {
	if err := InitBuckets(tx); err != nil {
		return nil, err
	}
	cfg, targets := d.config()
	d.cfgMu.RLock()
	window, pruneEvery := d.window, d.pruneEvery
	d.cfgMu.RUnlock()
	events := tx.Bucket(bucketEvents)
	tail := logTail(tx)
	s := &scheduler{d: d, cfg: cfg, window: window, pruneEvery: pruneEvery, byName: map[string]*lane{}, seenTail: tail}

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

	for _, t := range targets {
		b, err := d.ensureTarget(tx, t.cfg, d.initTail)
		if err != nil {
			return nil, err
		}
		l, orphans, err := loadLane(tx, b, t, d.logger)
		if err != nil {
			return nil, err
		}
		if err := repairRecords(b, l, d.now()); err != nil {
			return nil, err
		}
		pending := b.Bucket(bucketPending)
		for _, k := range orphans {
			// Only possible if the target was removed from the config while its
			// events were pruned, then added back.
			d.logger.Warn("Pending event missing from the log, dropped", logKeyTarget, t.cfg.Name, logKeySeq, k)
			if err := pending.Delete(be64(k)); err != nil {
				return nil, err
			}
		}
		s.lanes = append(s.lanes, l)
		s.byName[t.cfg.Name] = l
	}
	s.results = make(chan result, len(targets)*cfg.Concurrency+1)
	return s, nil
}

// loadLane reads one target's state bucket b into a lane. It returns the
// pending keys whose event is missing (the caller deletes them in a write
// transaction, or ignores them).
func loadLane(tx *bolt.Tx, b *bolt.Bucket, t *target, logger *slog.Logger) (*lane, []uint64, error) {
	events := tx.Bucket(bucketEvents)
	name := t.cfg.Name
	l := &lane{t: t, items: map[uint64]*item{}, rq: map[string]*resQueue{}}
	l.cursor = getU64(b, keyCursor)
	// A damaged record (bit rot) must not stop Run: each is replaced by
	// what is safe, and logged.
	var ps pauseState
	if ok, err := getJSON(b, keyPause, &ps); err != nil {
		l.paused, l.reason = true, "the pause record is damaged ("+err.Error()+"): resume the target to deliver"
		logger.Error("Damaged pause record: the target stays paused until resumed", logKeyTarget, name, logKeyErr, err)
	} else if ok {
		l.paused, l.reason = true, ps.Reason
	}
	if _, err := getJSON(b, keyStats, &l.stats); err != nil {
		l.stats = targetStats{}
		logger.Error("Damaged delivery counters: counting again from zero", logKeyTarget, name, logKeyErr, err)
	}
	l.deadN = int(getU64(b, keyDeadN))
	l.staged = int(getU64(b, keyReplayN))
	spool := b.Bucket(bucketSpool)

	// Every pending entry is loaded, whatever the window: they are the
	// events that were admitted and not yet finished.
	var orphans []uint64
	err := b.Bucket(bucketPending).ForEach(func(k, v []byte) error {
		key := fromBE64(k)
		ev, ok, err := pendingEvent(events, spool, key)
		if err != nil {
			return err
		}
		if !ok {
			orphans = append(orphans, key)
			return nil
		}
		it := &item{key: key, ev: ev, res: uniq(ev.Resources), heapIdx: -1}
		if err := json.Unmarshal(v, &it.st); err != nil {
			// Damaged attempt bookkeeping: the event is still owed, afresh.
			logger.Warn("Undecodable delivery state of a pending event: attempted again from the start",
				logKeyTarget, name, logKeySeq, key, logKeyErr, err)
			it.st = deliveryState{}
		}
		l.add(it)
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	l.unadmitted = countMatching(events, l.cursor, t.match)

	var rec backfillRecord
	if ok, err := getJSON(b, keyBackfill, &rec); err != nil {
		logger.Error("Damaged backfill record: no backfill resumed; start one again if it was running", logKeyTarget, name, logKeyErr, err)
	} else if ok && rec.active() {
		if rec.Spooled {
			l.bf = resumeBackfill(rec, spool, l)
		} else {
			l.bfRestart = true
		}
	}
	if string(b.Get(keyBackfillOnStart)) == bosPending && l.bf == nil {
		l.bosPending = true
	}
	var hr historyRecord
	if ok, err := getJSON(b, keyHistory, &hr); err != nil {
		logger.Error("Damaged history replay record: the replay is not resumed; start it again", logKeyTarget, name, logKeyErr, err)
	} else if ok {
		l.hist = &histRun{rec: hr}
	}
	return l, orphans, nil
}

// repairRecords rewrites the records of a target that do not decode
// (damaged on disk), as loadLane replaced them: the pause with its new
// reason; the counters, a backfill's and a history replay's records are
// dropped (the counters are written again at the next flush).
func repairRecords(b *bolt.Bucket, l *lane, now time.Time) error {
	var ps pauseState
	if _, err := getJSON(b, keyPause, &ps); err != nil {
		if err := putJSON(b, keyPause, pauseState{Reason: l.reason, At: now}); err != nil {
			return err
		}
	}
	var (
		ts targetStats
		bf backfillRecord
		hr historyRecord
	)
	for k, v := range map[string]any{string(keyStats): &ts, string(keyBackfill): &bf, string(keyHistory): &hr} {
		if _, err := getJSON(b, []byte(k), v); err != nil {
			if err := b.Delete([]byte(k)); err != nil {
				return err
			}
		}
	}
	return nil
}

// countMatching counts the log events after cursor that m matches.
func countMatching(events *bolt.Bucket, cursor uint64, m matcher) int {
	n := 0
	c := events.Cursor()
	for k, v := c.Seek(be64(cursor + 1)); k != nil; k, v = c.Next() {
		if m.match(peekType(v)) {
			n++
		}
	}
	return n
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
			s.nextPoll = now.Add(s.cfg.PollInterval)
			if err := s.pull(); err != nil {
				return err
			}
		}
		s.more = false
		for _, l := range s.lanes {
			if err := s.refill(l); err != nil {
				return err
			}
		}
		// While commits fail (Healthy), nothing new starts: no attempts,
		// whose outcomes could not be recorded, and no pruning.
		healthy := d.failing.Load() == nil
		if healthy && !now.Before(s.nextPrune) {
			if err := s.prune(now); err != nil {
				return err
			}
		}
		if healthy {
			for _, l := range s.lanes {
				s.dispatch(l, now)
			}
		}
		s.flushStats(now, false)
		s.publish(now)

		wait := max(s.nextWake(now).Sub(now), 0)
		if s.more {
			wait = 0
		}
		timer.Reset(wait)
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
	if s.d.failing.Load() != nil {
		return next // no attempt is due until the committer kicks the loop
	}
	for _, l := range s.lanes {
		if l.paused || l.inflight >= s.cfg.Concurrency || len(l.ready) == 0 {
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

func (s *scheduler) backoff(attempts int) time.Duration {
	return backoffOf(s.cfg.Backoff, s.d.jitter, attempts)
}

// submit queues a durable change. It blocks while the committer is behind,
// which is the back-pressure on delivery.
func (s *scheduler) submit(fn func(tx *bolt.Tx) error, after func()) {
	s.d.ops <- &op{fn: fn, after: after}
}

// admitLimit is the highest log seq a lane may admit: a backfill holds the
// live events after its sequence until its snapshot is delivered, and a
// backfill taking its snapshot freezes admission where it is.
func (l *lane) admitLimit() uint64 {
	switch {
	case l.frozen:
		return l.frozenAt
	case l.bf != nil:
		return l.bf.rec.Sequence
	}
	return math.MaxUint64
}

// pull reads new log entries, counts them, and admits them to lanes that are
// caught up and have room.
func (s *scheduler) pull() error {
	prev := s.seenTail
	var fresh []Event
	err := s.d.database().View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		for k, v := c.Seek(be64(prev + 1)); k != nil && len(fresh) < pullChunk; k, v = c.Next() {
			ev, err := decodeEvent(fromBE64(k), v)
			if err != nil {
				ev = salvageEvent(fromBE64(k), v, err) // dead-lettered unsent by the targets it concerns
				s.d.logger.Error("Undecodable event in the log: never sent; the targets it concerns dead-letter it",
					logKeySeq, ev.Seq, logKeyEventID, ev.ID, logKeyType, ev.Type, logKeyErr, err)
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

// refill admits from the log to a lane that fell behind (its window was full
// or its admission was held), loads replayed events, and feeds a backfill's
// snapshot or a history replay, once there is room.
func (s *scheduler) refill(l *lane) error {
	if l.bf != nil {
		holding, err := s.stepBackfill(l)
		if err != nil || holding {
			return err
		}
	}
	room := s.window - len(l.items)
	if room <= 0 {
		return nil
	}
	if l.staged > 0 && !l.loadingReplay && l.bf == nil {
		s.loadReplay(l, min(room, 1024))
	}
	if l.hist != nil && l.bf == nil && len(l.items) < s.window/2 {
		if err := s.refillHistory(l, s.window/2-len(l.items)); err != nil {
			return err
		}
	}
	limit := min(s.seenTail, l.admitLimit())
	if l.cursor >= limit || (room < s.window/4 && len(l.items) > 0) {
		return nil
	}
	room = s.window - len(l.items)
	var evs []Event
	err := s.d.database().View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		n := 0
		for k, v := c.Seek(be64(l.cursor + 1)); k != nil && n < room && len(evs) < pullChunk && fromBE64(k) <= limit; k, v = c.Next() {
			seq := fromBE64(k)
			if !l.t.match.match(peekType(v)) {
				evs = append(evs, Event{Seq: seq}) // examined, not subscribed
				continue
			}
			ev, err := decodeEvent(seq, v)
			if err != nil {
				ev = salvageEvent(seq, v, err) // dead-lettered unsent
			}
			evs = append(evs, ev)
			n++
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("outbox: read log: %w", err)
	}
	if len(evs) == pullChunk {
		s.more = true
	}
	s.admit(l, evs)
	return nil
}

// admit takes events in log order (seq > l.cursor) into the lane while there
// is room and the lane's admission limit allows, and persists the new pending
// entries and cursor.
func (s *scheduler) admit(l *lane, evs []Event) {
	room := s.window - len(l.items)
	limit := l.admitLimit()
	last := l.cursor
	var adm []*item
	for _, ev := range evs {
		if ev.Seq <= l.cursor {
			continue
		}
		if room <= 0 || ev.Seq > limit {
			break
		}
		last = ev.Seq
		if (ev.Type == "" && ev.undecodable == "") || !l.t.match.match(ev.Type) {
			continue // examined, not subscribed (a stand-in of unknown type: only by "*")
		}
		it := &item{key: ev.Seq, ev: ev, res: uniq(ev.Resources), heapIdx: -1}
		it.st.NextAttemptAt = ev.OccurredAt.Add(s.backoff(0))
		adm = append(adm, it)
		room--
	}
	if last == l.cursor {
		return
	}
	l.cursor = last
	l.unadmitted = max(l.unadmitted-len(adm), 0)
	keys := make([]uint64, len(adm))
	for i, it := range adm {
		keys[i] = it.key
		l.add(it)
	}
	name := l.t.cfg.Name
	s.submit(func(tx *bolt.Tx) error {
		b := targetBucket(tx, name)
		if err := putPending(b, keys); err != nil {
			return err
		}
		return b.Put(keyCursor, be64(last))
	}, nil)
}

// loadReplay moves up to n replayed events into pending, in the committer's
// transaction, and hands them to the lane afterwards. A replayed log event
// whose entry was pruned gets it back; a replayed snapshot event goes back to
// the target's spool, never into the log.
func (s *scheduler) loadReplay(l *lane, n int) {
	l.loadingReplay = true
	name := l.t.cfg.Name
	var loaded []*item
	var remaining int
	s.submit(func(tx *bolt.Tx) error {
		loaded, remaining = nil, 0
		b := targetBucket(tx, name)
		rb, pending, events := b.Bucket(bucketReplay), b.Bucket(bucketPending), tx.Bucket(bucketEvents)
		var keys [][]byte
		c := rb.Cursor()
		for k, v := c.First(); k != nil && len(keys) < n; k, v = c.Next() {
			dl := decodeDead(k, v)
			if dl.Quarantined && dl.Event.undecodable == "" {
				dl.Event.undecodable = dl.LastError // never sent
			}
			if lv := events.Get(k); dl.Event.undecodable != "" && lv != nil && !isSpoolKey(fromBE64(k)) {
				if ev, err := decodeEvent(fromBE64(k), lv); err == nil {
					dl.Event = ev // the replay entry is damaged, the log still has the event
				}
			}
			keys = append(keys, bytes.Clone(k))
			loaded = append(loaded, &item{key: fromBE64(k), ev: dl.Event})
		}
		for i, k := range keys {
			it := loaded[i]
			if it.ev.undecodable != "" {
				// Nothing to restore: its stand-in is dead-lettered unsent.
			} else if isSpoolKey(it.key) {
				spool, err := b.CreateBucketIfNotExists(bucketSpool)
				if err != nil {
					return err
				}
				v, err := encodeSpool(it.ev)
				if err != nil {
					return err
				}
				if err := spool.Put(k, v); err != nil {
					return err
				}
			} else if events.Get(k) == nil { // pruned since: restore it so that pending can refer to it
				v, err := encodeEvent(it.ev)
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
		its, rem := loaded, remaining
		s.d.post(func(s *scheduler) {
			l.loadingReplay = false
			l.staged = rem
			now := s.d.now()
			for _, it := range its {
				if _, ok := l.items[it.key]; !ok {
					it.res, it.heapIdx, it.st = uniq(it.ev.Resources), -1, deliveryState{NextAttemptAt: now}
					l.add(it)
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
	for l.inflight < s.cfg.Concurrency && len(l.ready) > 0 {
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
	if it.ev.undecodable != "" {
		s.quarantine(l, it, now)
		return
	}
	l.startFlight(it)
	if it.st.FirstAttemptAt.IsZero() {
		it.st.FirstAttemptAt = now
	}
	s.inflight++
	t := l.t
	t.use.inflight++
	ev, sender, ctx, results, clock, resumes := it.ev, t.sender, s.sendCtx, s.results, s.d.now, l.resumes
	s.wg.Go(func() {
		start := clock()
		err := sender.Send(ctx, ev)
		results <- result{l: l, t: t, it: it, err: err, start: start, end: clock(), resumes: resumes}
	})
}

// quarantine dead-letters, unsent, the stand-in of an event whose stored
// value does not decode, and says so in the log and the target's status.
func (s *scheduler) quarantine(l *lane, it *item, now time.Time) {
	it.st.LastError = truncate(it.ev.undecodable, maxErrorText)
	it.st.LastAttemptAt = now
	l.stats.LastError, l.stats.LastErrorAt, l.stats.LastStatus = it.st.LastError, now, 0
	l.stats.Quarantined++
	l.statsDirty = true
	s.d.logger.Error("Undecodable event quarantined: dead-lettered without being sent; restore the database from a backup, or discard the dead letter",
		logKeyTarget, l.t.cfg.Name, logKeySeq, it.key, logKeyEventID, it.ev.ID, logKeyType, it.ev.Type)
	s.dead(l, it, "")
}

// handle applies the outcome of one attempt.
func (s *scheduler) handle(r result) {
	s.inflight--
	l, it, d := r.l, r.it, s.d
	retry := it.retry
	it.retry = false
	if r.t.use.inflight--; r.t.use.retired && r.t.use.inflight == 0 {
		s.closeRetired(r.t)
	}
	name := l.t.cfg.Name
	if r.err != nil && s.sendCtx.Err() != nil {
		l.endFlight(it) // shutting down: the event stays pending for the next Run
		return
	}
	s.metricsOf(l).attempt(name, r.end.Sub(r.start), r.err == nil)
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
	case errors.As(r.err, &pe) && r.resumes == l.resumes:
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
		wait := s.backoff(it.st.Attempts)
		if retry { // the operator asked for a retry while this attempt was under way
			wait = 0
		}
		if retryAfter > 0 {
			wait = min(retryAfter, s.cfg.RetryAfterMax)
			if hold := now.Add(wait); hold.After(l.holdUntil) {
				l.holdUntil = hold // a rate limit concerns the whole target
			}
		}
		next := now.Add(wait)
		if (s.cfg.MaxAttempts > 0 && it.st.Attempts >= s.cfg.MaxAttempts) ||
			(s.cfg.MaxAge > 0 && next.Sub(it.st.FirstAttemptAt) > s.cfg.MaxAge) {
			s.dead(l, it, body)
			return
		}
		it.st.NextAttemptAt = next
		l.endFlight(it)
		s.metricsOf(l).retried(name)
		d.logger.Debug("Delivery failed, will retry", logKeyTarget, name, logKeyEventID, it.ev.ID,
			logKeyAttempt, it.st.Attempts, logKeyStatus, it.st.LastStatus, logKeyErr, it.st.LastError, logKeyRetryIn, wait.Round(time.Millisecond))
		key, st := it.key, it.st
		s.submit(func(tx *bolt.Tx) error {
			return putJSON(targetBucket(tx, name).Bucket(bucketPending), be64(key), st)
		}, nil)
	}
}

// lane returns a target's lane, also one that Reload removed (it is reused
// if the target comes back, so what an admin call sets must stay true).
func (s *scheduler) lane(name string) *lane {
	if l := s.byName[name]; l != nil {
		return l
	}
	return s.removed[name]
}

// metricsOf returns the metrics for a lane's outcomes: none for a lane that
// Reload removed (its series are gone; attempts in flight finish quietly).
func (s *scheduler) metricsOf(l *lane) *Metrics {
	if s.byName[l.t.cfg.Name] != l {
		return nil
	}
	return s.d.metrics
}

// finished updates a backfill's accounting when one of its events is done.
func (l *lane) finished(it *item) {
	if l.bf != nil && it.key >= l.bf.rec.First && it.key <= l.bf.rec.Last {
		l.bf.inLane--
	}
}

func (s *scheduler) delivered(l *lane, it *item, now time.Time) {
	name := l.t.cfg.Name
	l.land(it)
	l.remove(it)
	l.finished(it)
	l.stats.Delivered++
	l.stats.LastSuccess = now
	l.statsDirty = true
	if l.failing {
		l.failing = false
		s.d.logger.Info("Deliveries to target recovered", logKeyTarget, name, logKeyEventID, it.ev.ID)
	}
	s.metricsOf(l).delivered(name, now.Sub(it.ev.OccurredAt))
	if s.d.logger.Enabled(context.Background(), slog.LevelDebug) {
		s.d.logger.Debug("Delivered", logKeyTarget, name, logKeyEventID, it.ev.ID, logKeyAttempt, it.st.Attempts+1)
	}
	key, id := it.key, it.ev.ID
	s.submit(func(tx *bolt.Tx) error {
		b := targetBucket(tx, name)
		if err := b.Bucket(bucketPending).Delete(be64(key)); err != nil {
			return err
		}
		if err := clearProgress(b, id); err != nil {
			return err
		}
		return deleteSpooled(b, key)
	}, nil)
}

func (s *scheduler) dead(l *lane, it *item, body string) {
	name := l.t.cfg.Name
	l.land(it)
	l.remove(it)
	l.finished(it)
	l.deadN++
	s.metricsOf(l).deadLettered(name)
	s.d.logger.Warn("Event dead-lettered", logKeyTarget, name, logKeyEventID, it.ev.ID, logKeyType, it.ev.Type,
		logKeyAttempt, it.st.Attempts, logKeyStatus, it.st.LastStatus, logKeyErr, it.st.LastError)
	dl := DeadLetter{
		Event: it.ev, Target: name, Attempts: it.st.Attempts,
		FirstAttemptAt: it.st.FirstAttemptAt, LastAttemptAt: it.st.LastAttemptAt,
		LastStatus: it.st.LastStatus, LastError: it.st.LastError, ResponseBody: body,
		Quarantined: it.ev.undecodable != "",
	}
	key := it.key
	s.submit(func(tx *bolt.Tx) error {
		b := targetBucket(tx, name)
		k := be64(key)
		if err := b.Bucket(bucketPending).Delete(k); err != nil {
			return err
		}
		if err := deleteSpooled(b, key); err != nil { // the dead letter carries its own copy
			return err
		}
		if err := clearProgress(b, dl.Event.ID); err != nil { // a replay starts the steps afresh
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
	// What paused it: a webhook's 410 Gone, or a stream's refusal that every
	// event would meet (credentials, permissions).
	cause, short := "the webhook answered 410 Gone", "410 Gone"
	if it.st.LastStatus != http.StatusGone {
		cause, short = it.st.LastError, "refused by the target"
	}
	reason := fmt.Sprintf("paused automatically at %s (event %s): %s; resume the target once that is fixed",
		now.UTC().Format(time.RFC3339), it.ev.ID, cause)
	if !l.paused {
		s.d.logger.Warn("Target paused", logKeyTarget, name, logKeyEventID, it.ev.ID, logKeyStatus, it.st.LastStatus, logKeyReason, short)
	}
	l.paused, l.reason = true, reason
	key, st := it.key, it.st
	ps := pauseState{Reason: reason, At: now}
	s.submit(func(tx *bolt.Tx) error {
		b := targetBucket(tx, name)
		if err := putJSON(b.Bucket(bucketPending), be64(key), st); err != nil {
			return err
		}
		return putJSON(b, keyPause, ps)
	}, nil)
}

// retryNow makes the lane's pending events (those with the given IDs, or all
// when ids is empty) due now and lifts a Retry-After hold. Events in flight
// are left alone: they are being attempted. It returns how many matched and
// the IDs that are not pending.
func (s *scheduler) retryNow(l *lane, ids []string, done func(error)) (int, []string) {
	now := s.d.now()
	var match []*item
	if len(ids) == 0 {
		for _, it := range l.items {
			match = append(match, it)
		}
	} else {
		want := map[string]bool{}
		for _, id := range ids {
			want[id] = true
		}
		for _, it := range l.items {
			if want[it.ev.ID] {
				match = append(match, it)
				delete(want, it.ev.ID)
			}
		}
		if len(want) > 0 {
			var missing []string
			for _, id := range ids {
				if want[id] {
					missing = append(missing, id)
					delete(want, id)
				}
			}
			return 0, missing
		}
	}
	l.holdUntil = time.Time{}
	type change struct {
		key uint64
		st  deliveryState
	}
	var changes []change
	for _, it := range match {
		if it.flying {
			it.retry = true // its outcome is not known yet: a failure retries at once
			continue
		}
		if !it.st.NextAttemptAt.After(now) {
			continue
		}
		it.st.NextAttemptAt = now
		if it.heapIdx >= 0 {
			heap.Fix(&l.ready, it.heapIdx)
		}
		changes = append(changes, change{it.key, it.st})
	}
	name := l.t.cfg.Name
	s.submit(func(tx *bolt.Tx) error {
		p := targetBucket(tx, name).Bucket(bucketPending)
		for _, c := range changes {
			if p.Get(be64(c.key)) == nil {
				continue // finished meanwhile
			}
			if err := putJSON(p, be64(c.key), c.st); err != nil {
				return err
			}
		}
		return nil
	}, func() { done(nil) })
	return len(match), nil
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
		if l.bf != nil {
			snap.bfActive = true
			snap.bfRemaining = l.bf.unadmitted + l.bf.inLane
			snap.bfPhase = phaseName(l.bf)
			snap.backlog += l.bf.unadmitted
		}
		if l.hist != nil {
			snap.histLeft = max(l.hist.rec.Total-l.hist.rec.Admitted, 0)
			snap.backlog += snap.histLeft
		}
		d.snap[l.t.cfg.Name] = snap
		if gauges {
			var age time.Duration
			if !snap.oldest.IsZero() {
				age = max(now.Sub(snap.oldest), 0)
			}
			d.metrics.gauges(l.t.cfg.Name, snap.backlog, age, l.deadN, l.paused, snap.bfRemaining)
		}
	}
}

// prune deletes delivered events older than max(retention, feed retention):
// keys are collected in a View and deleted by the committer, which checks
// again that no target still has them pending, and advances the durable
// "pruned through" watermark the feed checks cursors against.
func (s *scheduler) prune(now time.Time) error {
	d := s.d
	s.nextPrune = now.Add(s.pruneEvery)
	limit := s.seenTail
	for _, l := range s.lanes {
		limit = min(limit, l.cursor)
		if l.hist != nil {
			limit = min(limit, l.hist.rec.Next) // not yet replayed
		}
	}
	cutoff := now.Add(-max(s.cfg.Retention, s.cfg.FeedRetention)).UnixNano()
	var keys []uint64
	err := d.database().View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		var undated []uint64 // undecodable entries: pruned with the older ones after them
		for k, v := c.First(); k != nil && len(keys) < pruneChunk; k, v = c.Next() {
			seq := fromBE64(k)
			if seq > limit {
				break
			}
			var at struct {
				At int64 `json:"at"`
			}
			if err := json.Unmarshal(v, &at); err != nil {
				if !s.pending(seq) {
					undated = append(undated, seq)
				}
				continue
			}
			if at.At > cutoff {
				break // the log is in commit order, so everything after is newer
			}
			keys = append(keys, undated...)
			undated = undated[:0]
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
		var through uint64
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
			through = max(through, seq)
		}
		return raisePruned(tx, through)
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

// reconfigure applies a Reload while Run runs: new lanes for added targets,
// new targets (filters, senders) for changed ones, removed lanes dropped with
// their state kept. A replaced or removed sender is closed once its attempts
// in flight have finished.
func (s *scheduler) reconfigure(p *reloadPlan) {
	s.cfg, s.window, s.pruneEvery = p.cfg, p.window, pruneInterval(p.cfg)
	lanes := make([]*lane, 0, len(p.targets))
	byName := make(map[string]*lane, len(p.targets))
	for _, t := range p.targets {
		name := t.cfg.Name
		l := s.byName[name]
		if l == nil && s.removed[name] != nil {
			// Added back: its lane still knows what is in flight, which a
			// fresh load from the database would send a second time.
			l = s.removed[name]
			delete(s.removed, name)
			old := l.t
			l.t = t
			if old.use != t.use && !old.use.retired {
				s.retire(old)
			}
			_ = s.d.database().View(func(tx *bolt.Tx) error { // pull did not count for it meanwhile
				l.unadmitted = countMatching(tx.Bucket(bucketEvents), l.cursor, t.match)
				return nil
			})
		} else if l == nil {
			var err error
			err = s.d.database().View(func(tx *bolt.Tx) error {
				b := targetBucket(tx, name)
				if b == nil {
					return fmt.Errorf("state bucket of %s missing", name)
				}
				l, _, err = loadLane(tx, b, t, s.d.logger)
				return err
			})
			if err != nil {
				s.d.logger.Error("Loading an added target failed; it starts with the next restart", logKeyTarget, name, logKeyErr, err)
				continue
			}
			s.startPendingBackfill(l)
		} else if old := l.t; old != t {
			l.t = t
			if old.use != t.use {
				s.retire(old)
			}
			if !slices.Equal(old.cfg.Events, t.cfg.Events) {
				_ = s.d.database().View(func(tx *bolt.Tx) error {
					l.unadmitted = countMatching(tx.Bucket(bucketEvents), l.cursor, t.match)
					return nil
				})
			}
		}
		lanes = append(lanes, l)
		byName[name] = l
	}
	s.d.snapMu.Lock()
	for _, l := range s.lanes {
		if byName[l.t.cfg.Name] == nil {
			s.retire(l.t)
			delete(s.d.snap, l.t.cfg.Name)
			if s.removed == nil {
				s.removed = map[string]*lane{}
			}
			s.removed[l.t.cfg.Name] = l
		}
	}
	s.d.snapMu.Unlock()
	s.lanes, s.byName = lanes, byName
	s.nextStats = time.Time{} // refresh the gauges now
}

// retire stops using a target's sender: it is closed now if idle, otherwise
// when its last attempt finishes.
func (s *scheduler) retire(t *target) {
	t.use.retired = true
	if t.use.inflight == 0 {
		s.closeRetired(t)
		return
	}
	s.retired = append(s.retired, t)
}

func (s *scheduler) closeRetired(t *target) {
	s.retired = slices.DeleteFunc(s.retired, func(r *target) bool { return r == t })
	s.wg.Go(func() { s.d.closeSender(t) }) // a stream's Close may flush; not on the scheduler
}

// add inserts an item into the lane's queues.
func (l *lane) add(it *item) {
	key := it.key
	l.items[key] = it
	l.order = insertSorted(l.order, key)
	for _, r := range it.res {
		q := l.rq[r]
		if q == nil {
			q = &resQueue{}
			l.rq[r] = q
		}
		q.keys = insertSorted(q.keys, key)
	}
	l.maybeReady(it)
}

// remove drops a finished item and releases the events that waited for it.
func (l *lane) remove(it *item) {
	key := it.key
	delete(l.items, key)
	if len(l.order) > 2*len(l.items)+1024 {
		// A long-retrying first event keeps oldest() from trimming the front.
		l.order = slices.DeleteFunc(l.order, func(k uint64) bool { _, ok := l.items[k]; return !ok })
	}
	if it.heapIdx >= 0 {
		heap.Remove(&l.ready, it.heapIdx)
	}
	for _, r := range it.res {
		q := l.rq[r]
		if i, ok := slices.BinarySearch(q.keys, key); ok {
			q.keys = slices.Delete(q.keys, i, i+1)
		}
		if len(q.keys) == 0 && q.flying == 0 {
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
	if len(q.keys) > 0 {
		if head := l.items[q.keys[0]]; head != nil {
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
		if q.flying > 0 || q.keys[0] != it.key {
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

// oldest returns OccurredAt of the lowest pending key, zero if none.
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

// readyHeap orders unblocked items by next attempt time, then key.
type readyHeap []*item

func (h readyHeap) Len() int { return len(h) }
func (h readyHeap) Less(i, j int) bool {
	a, b := h[i], h[j]
	if !a.st.NextAttemptAt.Equal(b.st.NextAttemptAt) {
		return a.st.NextAttemptAt.Before(b.st.NextAttemptAt)
	}
	return a.key < b.key
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
