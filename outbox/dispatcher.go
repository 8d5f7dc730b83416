package outbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// windowSize bounds the unsettled events a target holds in memory. While a
// resource's event waits for a retry, later events of unrelated resources
// keep flowing until this many are waiting.
const windowSize = 5000

// pruneEvery is how often delivered events older than the retention are
// removed from the log; pruneChunk how many keys one transaction deletes.
const (
	pruneEvery = time.Minute
	pruneChunk = 1000
)

// Dispatcher delivers the outbox's events to its targets. Build it with
// NewDispatcher, run it with Run.
type Dispatcher struct {
	db      *bolt.DB
	cfg     Config
	logger  *slog.Logger
	m       *Metrics
	now     func() time.Time
	targets []*target
	byName  map[string]*target
	running atomic.Bool
}

// attempt is the retry state of an unsettled event.
type attempt struct {
	Attempts   int       `json:"attempts"`
	First      time.Time `json:"first_attempt_at,omitzero"`
	Last       time.Time `json:"last_attempt_at,omitzero"`
	NextAt     time.Time `json:"next_at,omitzero"`
	Since      time.Time `json:"since,omitzero"` // start of the age budget: commit, or replay
	LastStatus int       `json:"last_status,omitempty"`
	LastError  string    `json:"last_error,omitempty"`
	LastBody   string    `json:"last_body,omitempty"`
}

// pending is an unsettled event in a target's window.
type pending struct {
	rec      record
	att      attempt
	inflight bool
	replayed bool
}

// targetStats persist across restarts.
type targetStats struct {
	Delivered   uint64    `json:"delivered"`
	LastSuccess time.Time `json:"last_success,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	LastStatus  int       `json:"last_status,omitempty"`
}

type target struct {
	d    *Dispatcher
	cfg  TargetConfig
	name []byte
	hook *webhook
	wake chan struct{}

	mu        sync.Mutex // guards the fields below
	loaded    bool
	cursor    uint64 // every event ≤ cursor is settled (durable)
	scanned   uint64 // highest log sequence read into the window or settled
	window    []*pending
	inflight  int
	paused    string // reason; "" when running
	stats     targetStats
	deadCount int
}

// result is a finished attempt.
type result struct {
	p *pending
	o outcome
}

// NewDispatcher builds (does not start) a dispatcher over db for
// cfg.Targets. m may be nil.
func NewDispatcher(db *bolt.DB, cfg Config, logger *slog.Logger, m *Metrics) (*Dispatcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if m == nil {
		m = NewMetrics()
	}
	d := &Dispatcher{db: db, cfg: cfg, logger: logger.With("component", "dispatcher"), m: m, now: time.Now, byName: map[string]*target{}}
	for _, tc := range cfg.Targets {
		t := &target{d: d, cfg: tc, name: []byte(tc.Name), wake: make(chan struct{}, 1)}
		t.hook = newWebhook(tc, cfg.Concurrency, cfg.RetryAfterMax, func() time.Time { return d.now() }, m)
		d.targets = append(d.targets, t)
		d.byName[tc.Name] = t
	}
	return d, nil
}

// Notify wakes the dispatcher without blocking; safe from tx.OnCommit.
func (d *Dispatcher) Notify() {
	for _, t := range d.targets {
		select {
		case t.wake <- struct{}{}:
		default:
		}
	}
}

// Ready reports whether Run is running.
func (d *Dispatcher) Ready() bool { return d.running.Load() }

// Run delivers events until ctx is done, then returns ctx.Err(). Any other
// error is a storage failure. Deliveries in flight when ctx ends are
// cancelled; their events stay pending and are sent again on the next start.
func (d *Dispatcher) Run(ctx context.Context) error {
	for _, t := range d.targets {
		if err := t.load(); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, len(d.targets))
	var wg sync.WaitGroup
	for _, t := range d.targets {
		wg.Go(func() {
			if err := t.run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				errc <- fmt.Errorf("target %s: %w", t.cfg.Name, err)
				cancel()
			}
		})
	}
	d.running.Store(true)
	defer d.running.Store(false)
	ticker := time.NewTicker(pruneEvery)
	defer ticker.Stop()
	for {
		if err := d.prune(); err != nil {
			d.logger.Error("prune failed", "err", err)
		}
		select {
		case <-ctx.Done():
			wg.Wait()
			select {
			case err := <-errc:
				return err
			default:
				return context.Cause(ctx)
			}
		case <-ticker.C:
		}
	}
}

// bucket returns the target's bucket inside tx (created by load).
func (t *target) bucket(tx *bolt.Tx) *bolt.Bucket {
	return tx.Bucket(bucketTargets).Bucket(t.name)
}

// load reads the target's durable state; events are read by fill.
func (t *target) load() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.loaded {
		return nil
	}
	err := t.d.db.Update(func(tx *bolt.Tx) error {
		tb, err := tx.Bucket(bucketTargets).CreateBucketIfNotExists(t.name)
		if err != nil {
			return err
		}
		for _, sub := range [][]byte{subDone, subRetry, subDead, subReplay} {
			if _, err := tb.CreateBucketIfNotExists(sub); err != nil {
				return err
			}
		}
		t.cursor = fromBE64(tb.Get(keyCursor))
		t.scanned = t.cursor
		t.paused = string(tb.Get(keyPaused))
		if v := tb.Get(keyStats); v != nil {
			_ = json.Unmarshal(v, &t.stats)
		}
		t.deadCount = tb.Bucket(subDead).Stats().KeyN
		return tb.Bucket(subReplay).ForEach(func(k, v []byte) error {
			rec, err := decodeRecord(v)
			if err != nil {
				return err
			}
			t.window = append(t.window, &pending{rec: rec, replayed: true, att: attempt{Since: t.d.now()}})
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("load target %s: %w", t.cfg.Name, err)
	}
	t.sortWindow()
	t.loaded = true
	t.gauges()
	return nil
}

func (t *target) sortWindow() {
	sort.Slice(t.window, func(i, j int) bool { return t.window[i].rec.Seq < t.window[j].rec.Seq })
}

// run is the target's loop: read new events, start the eligible ones,
// record what finished.
func (t *target) run(ctx context.Context) error {
	results := make(chan result, t.d.cfg.Concurrency)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		if err := t.fill(); err != nil {
			return err
		}
		wait := t.dispatch(ctx, results)
		timer.Reset(min(wait, t.d.cfg.PollInterval))
		select {
		case <-ctx.Done():
			// Let in-flight attempts finish (they are cancelled) and keep
			// what they achieved.
			for t.inflightCount() > 0 {
				r := <-results
				if err := t.record([]result{r}, ctx); err != nil {
					return err
				}
			}
			return ctx.Err()
		case r := <-results:
			batch := []result{r}
		drain:
			for {
				select {
				case r := <-results:
					batch = append(batch, r)
				default:
					break drain
				}
			}
			if err := t.record(batch, ctx); err != nil {
				return err
			}
		case <-t.wake:
		case <-timer.C:
		}
	}
}

func (t *target) inflightCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.inflight
}

// fill reads events after t.scanned into the window, up to windowSize.
// Events the target does not subscribe to, and ones already settled before
// a restart (done markers), are settled on the spot.
func (t *target) fill() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.window) >= windowSize {
		return nil
	}
	first := t.d.targets[0] == t
	return t.d.db.View(func(tx *bolt.Tx) error {
		tb := t.bucket(tx)
		done, retry := tb.Bucket(subDone), tb.Bucket(subRetry)
		c := tx.Bucket(bucketEvents).Cursor()
		for k, v := c.Seek(be64(t.scanned + 1)); k != nil && len(t.window) < windowSize; k, v = c.Next() {
			seq := fromBE64(k)
			t.scanned = seq
			if done.Get(k) != nil {
				continue
			}
			rec, err := decodeRecord(v)
			if err != nil {
				return fmt.Errorf("decode event %d: %w", seq, err)
			}
			if first {
				t.d.m.enqueued.WithLabelValues(rec.Type).Inc()
			}
			if !t.cfg.subscribed(rec.Type) {
				continue
			}
			p := &pending{rec: rec, att: attempt{Since: rec.OccurredAt}}
			if rv := retry.Get(k); rv != nil {
				_ = json.Unmarshal(rv, &p.att)
			}
			t.window = append(t.window, p)
		}
		return nil
	})
}

// dispatch starts every eligible event and returns how long until the
// earliest scheduled retry.
func (t *target) dispatch(ctx context.Context, results chan<- result) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	wait := t.d.cfg.PollInterval
	if t.paused != "" {
		return wait
	}
	now := t.d.now()
	busy := make(map[string]bool, len(t.window))
	for _, p := range t.window {
		blocked := false
		for _, k := range p.rec.Resources {
			if busy[k] {
				blocked = true
			}
			busy[k] = true
		}
		if blocked || p.inflight {
			continue
		}
		if p.att.NextAt.After(now) {
			wait = min(wait, p.att.NextAt.Sub(now))
			continue
		}
		if t.inflight >= t.d.cfg.Concurrency {
			break
		}
		p.inflight = true
		t.inflight++
		go func(p *pending) {
			results <- result{p: p, o: t.hook.send(ctx, p.rec.ID, p.rec.Body)}
		}(p)
	}
	return wait
}

// backoff returns the wait before retry n (1-based), with ±20% jitter.
func (d *Dispatcher) backoff(n int) time.Duration {
	b := d.cfg.Backoff[min(n, len(d.cfg.Backoff)-1)]
	return time.Duration(float64(b) * (0.8 + 0.4*rand.Float64()))
}

// record applies finished attempts in one transaction: delivered events
// are settled, failures rescheduled or dead-lettered, and the cursor moves
// past every settled prefix.
func (t *target) record(batch []result, ctx context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.d.now()
	settled := map[*pending]bool{}
	logs := make([]func(), 0, len(batch))
	err := t.d.db.Update(func(tx *bolt.Tx) error {
		tb := t.bucket(tx)
		done, retry, dead, replay := tb.Bucket(subDone), tb.Bucket(subRetry), tb.Bucket(subDead), tb.Bucket(subReplay)
		for _, r := range batch {
			p, o := r.p, r.o
			p.inflight = false
			t.inflight--
			key := be64(p.rec.Seq)
			if o.err != nil && ctx.Err() != nil {
				continue // cancelled by shutdown: not an attempt; stays pending
			}
			if o.err == nil {
				settled[p] = true
				t.stats.Delivered++
				t.stats.LastSuccess = now
				t.d.m.delivered.WithLabelValues(t.cfg.Name).Inc()
				t.d.m.latency.WithLabelValues(t.cfg.Name).Observe(now.Sub(p.rec.OccurredAt).Seconds())
				if err := t.settle(p, key, done, retry, replay); err != nil {
					return err
				}
				continue
			}
			t.stats.LastError, t.stats.LastErrorAt, t.stats.LastStatus = o.err.Error(), now, o.status
			if o.gone {
				t.paused = fmt.Sprintf("the webhook answered 410 Gone at %s; resume once it is back", now.UTC().Format(time.RFC3339))
				if err := tb.Put(keyPaused, []byte(t.paused)); err != nil {
					return err
				}
				logs = append(logs, func() {
					t.d.logger.Warn("target paused: 410 Gone", "target", t.cfg.Name, "event_id", p.rec.ID)
				})
				continue
			}
			p.att.Attempts++
			if p.att.First.IsZero() {
				p.att.First = now
			}
			p.att.Last, p.att.LastStatus, p.att.LastError, p.att.LastBody = now, o.status, o.err.Error(), o.body
			exhausted := p.att.Attempts >= t.d.cfg.MaxAttempts || now.Sub(p.att.Since) >= t.d.cfg.MaxAge
			if o.permanent || exhausted {
				settled[p] = true
				dl := DeadLetter{Event: p.rec.Event, Target: t.cfg.Name, Attempts: p.att.Attempts, FirstAttemptAt: p.att.First,
					LastAttemptAt: now, LastStatus: o.status, LastError: o.err.Error(), ResponseBody: o.body, Body: p.rec.Body}
				v, err := json.Marshal(dl)
				if err != nil {
					return err
				}
				if err := dead.Put(key, v); err != nil {
					return err
				}
				if err := t.settle(p, key, done, retry, replay); err != nil {
					return err
				}
				t.deadCount++
				t.d.m.deadLettered.WithLabelValues(t.cfg.Name).Inc()
				reason := "retry budget exhausted"
				if o.permanent {
					reason = "permanent failure"
				}
				logs = append(logs, func() {
					t.d.logger.Warn("event dead-lettered", "target", t.cfg.Name, "event_id", p.rec.ID, "type", p.rec.Type,
						"attempt", p.att.Attempts, "status", o.status, "reason", reason)
				})
				continue
			}
			wait := t.d.backoff(p.att.Attempts)
			if o.retryAfter > wait {
				wait = o.retryAfter
			}
			p.att.NextAt = now.Add(wait)
			t.d.m.failed.WithLabelValues(t.cfg.Name).Inc()
			v, err := json.Marshal(p.att)
			if err != nil {
				return err
			}
			if err := retry.Put(key, v); err != nil {
				return err
			}
			logs = append(logs, func() {
				t.d.logger.Debug("delivery failed, will retry", "target", t.cfg.Name, "event_id", p.rec.ID,
					"attempt", p.att.Attempts, "status", o.status, "retry_in", wait.Round(time.Millisecond))
			})
		}
		// Drop settled events from the window, then advance the cursor.
		kept := t.window[:0]
		for _, p := range t.window {
			if !settled[p] {
				kept = append(kept, p)
			}
		}
		clear(t.window[len(kept):])
		t.window = kept
		next := t.scanned
		for _, p := range t.window {
			if !p.replayed {
				next = min(next, p.rec.Seq-1)
				break
			}
		}
		if next > t.cursor {
			if err := tb.Put(keyCursor, be64(next)); err != nil {
				return err
			}
			var old [][]byte
			c := done.Cursor()
			for k, _ := c.First(); k != nil && fromBE64(k) <= next; k, _ = c.Next() {
				old = append(old, bytes.Clone(k))
			}
			for _, k := range old {
				if err := done.Delete(k); err != nil {
					return err
				}
			}
			t.cursor = next
		}
		v, err := json.Marshal(t.stats)
		if err != nil {
			return err
		}
		return tb.Put(keyStats, v)
	})
	for _, l := range logs {
		l()
	}
	t.gauges()
	return err
}

// settle marks one event settled for the target in tx.
func (t *target) settle(p *pending, key []byte, done, retry, replay *bolt.Bucket) error {
	if err := retry.Delete(key); err != nil {
		return err
	}
	if p.replayed {
		return replay.Delete(key)
	}
	if p.rec.Seq > t.cursor {
		return done.Put(key, nil)
	}
	return nil
}

// gauges refreshes the target's gauges; t.mu is held.
func (t *target) gauges() {
	n := t.cfg.Name
	t.d.m.backlog.WithLabelValues(n).Set(float64(len(t.window)))
	age := 0.0
	if len(t.window) > 0 {
		age = t.d.now().Sub(t.oldest()).Seconds()
	}
	t.d.m.oldest.WithLabelValues(n).Set(age)
	t.d.m.dead.WithLabelValues(n).Set(float64(t.deadCount))
	paused := 0.0
	if t.paused != "" {
		paused = 1
	}
	t.d.m.paused.WithLabelValues(n).Set(paused)
}

// oldest returns the commit time of the oldest waiting event; t.mu is held.
func (t *target) oldest() time.Time {
	var o time.Time
	for _, p := range t.window {
		if o.IsZero() || p.rec.OccurredAt.Before(o) {
			o = p.rec.OccurredAt
		}
	}
	return o
}

// prune deletes events every target has settled that are older than the
// retention, in chunks, so the file stays bounded under steady load.
func (d *Dispatcher) prune() error {
	var floor uint64 = 1<<64 - 1
	for _, t := range d.targets {
		t.mu.Lock()
		floor = min(floor, t.cursor)
		t.mu.Unlock()
	}
	cutoff := d.now().Add(-d.cfg.Retention)
	for {
		var keys [][]byte
		err := d.db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketEvents).Cursor()
			for k, v := c.First(); k != nil && len(keys) < pruneChunk; k, v = c.Next() {
				if fromBE64(k) > floor {
					break
				}
				var head struct {
					OccurredAt time.Time `json:"occurred_at"`
				}
				if err := json.Unmarshal(v, &head); err != nil {
					return err
				}
				if !head.OccurredAt.Before(cutoff) {
					break
				}
				keys = append(keys, bytes.Clone(k))
			}
			return nil
		})
		if err != nil || len(keys) == 0 {
			return err
		}
		err = d.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketEvents)
			for _, k := range keys {
				if err := b.Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if len(keys) < pruneChunk {
			return nil
		}
	}
}
