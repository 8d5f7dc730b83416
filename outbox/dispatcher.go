package outbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Log keys (STYLE H7). URLs, bodies and secrets are never logged.
const (
	logKeyTarget  = "target"
	logKeyEventID = "event_id"
	logKeySeq     = "seq"
	logKeyType    = "event_type"
	logKeyAttempt = "attempt"
	logKeyStatus  = "status"
	logKeyErr     = "err"
	logKeyRetryIn = "retry_in"
	logKeyCount   = "count"
	logKeyReason  = "reason"
)

// Tuning that is not configuration.
const (
	defaultJitter   = 0.2                    // ±20% on every backoff wait
	minWindow       = 1024                   // events held in memory per target, at least
	pullChunk       = 4096                   // log entries read per pass
	maxCommitBatch  = 4096                   // ops committed per bolt transaction
	pruneChunk      = 2000                   // log keys deleted per transaction
	statsEvery      = time.Second            // gauge refresh
	statsFlushEvery = 100 * time.Millisecond // persistence of delivered counts
	maxPruneEvery   = time.Minute            // prune pass interval, at most
	maxErrorText    = 1024                   // bytes of an error kept in state
	minPruneEvery   = 5 * time.Millisecond
)

// Dispatcher delivers the outbox log to the configured targets: at least once,
// signed, ordered per resource, concurrently across unrelated resources, with
// durable retries and dead letters. Build it with NewDispatcher, start it with
// Run. Its admin methods are safe for concurrent use, with or without Run;
// they write to the database, so never call them inside a bolt transaction.
type Dispatcher struct {
	db       *bolt.DB
	cfg      Config
	logger   *slog.Logger
	metrics  *Metrics
	targets  []*target
	byName   map[string]*target
	initTail uint64 // log tail at NewDispatcher: where a new target starts

	now        func() time.Time
	jitter     float64
	window     int
	pruneEvery time.Duration

	wake    chan struct{} // Notify; capacity 1
	kick    chan struct{} // inbox has work; capacity 1
	running atomic.Bool
	ready   atomic.Bool
	counted uint64 // log entries counted in EventsEnqueued; owned by Run

	// mu orders admin writes against Run's start and stop: while opsOpen,
	// writes go through the committer so that they interleave with delivery
	// outcomes in one FIFO; otherwise they are plain Updates.
	mu      sync.RWMutex
	ops     chan *op
	opsOpen bool

	inboxMu sync.Mutex
	inbox   []func(*scheduler)

	snapMu sync.Mutex
	snap   map[string]laneSnap
}

type target struct {
	cfg      Target
	redacted string
	match    matcher
	sender   Sender
}

type laneSnap struct {
	backlog int
	oldest  time.Time
	stats   targetStats
}

// NewDispatcher builds (does not start) a dispatcher over db for cfg.Targets.
// cfg must be valid; m and logger may be nil. A target seen for the first time
// receives the events enqueued after NewDispatcher returns; its state bucket
// is created when Run starts or an admin call first writes to it.
func NewDispatcher(db *bolt.DB, cfg Config, logger *slog.Logger, m *Metrics) (*Dispatcher, error) {
	if db == nil {
		return nil, errors.New("outbox: nil database")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	d := &Dispatcher{
		db:         db,
		cfg:        cfg,
		logger:     logger.With("component", "dispatcher"),
		metrics:    m,
		byName:     map[string]*target{},
		now:        time.Now,
		jitter:     defaultJitter,
		window:     max(minWindow, 8*cfg.Concurrency),
		pruneEvery: min(max(cfg.Retention/4, minPruneEvery), maxPruneEvery),
		wake:       make(chan struct{}, 1),
		kick:       make(chan struct{}, 1),
		snap:       map[string]laneSnap{},
	}
	for _, tc := range cfg.Targets {
		tc = tc.withDefaults()
		snd, err := newSender(tc, cfg, m)
		if err != nil {
			return nil, err
		}
		t := &target{cfg: tc, redacted: tc.describe(), match: newMatcher(tc.Events), sender: snd}
		d.targets = append(d.targets, t)
		d.byName[tc.Name] = t
	}
	if err := db.View(func(tx *bolt.Tx) error { d.initTail = logTail(tx); return nil }); err != nil {
		return nil, fmt.Errorf("outbox: read log tail: %w", err)
	}
	d.counted = d.initTail
	for _, t := range d.targets {
		m.gauges(t.cfg.Name, 0, 0, 0, false)
	}
	return d, nil
}

// Notify wakes Run to look for new events. It never blocks and is safe to
// call from tx.OnCommit.
func (d *Dispatcher) Notify() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Ready reports whether Run is running.
func (d *Dispatcher) Ready() bool { return d.ready.Load() }

// op is one unit of work for the committer. Ops that are not admin are
// committed together in one transaction, in FIFO order; an error from one of
// them is a storage failure that stops Run. Admin ops get a transaction of
// their own and their error goes back to the caller.
type op struct {
	fn    func(tx *bolt.Tx) error
	after func() // after commit, in the committer goroutine; must not block
	admin bool
	done  chan error
}

// Run delivers events until ctx is done and then returns ctx.Err(). Any other
// error is a storage failure. On shutdown, in-flight HTTP attempts are
// cancelled and their events stay pending (delivered again by the next Run);
// outcomes already known are committed before Run returns.
func (d *Dispatcher) Run(ctx context.Context) error {
	if !d.running.CompareAndSwap(false, true) {
		return errors.New("outbox: dispatcher already running")
	}
	defer d.running.Store(false)

	d.mu.Lock()
	var s *scheduler
	err := d.db.Update(func(tx *bolt.Tx) error {
		var err error
		s, err = d.load(tx)
		return err
	})
	if err != nil {
		d.mu.Unlock()
		return fmt.Errorf("outbox: load delivery state: %w", err)
	}
	d.inboxMu.Lock()
	d.inbox = nil // stale notices from an earlier Run; state was just reloaded
	d.inboxMu.Unlock()
	ops := make(chan *op, maxCommitBatch)
	d.ops, d.opsOpen = ops, true
	d.mu.Unlock()

	commitErr := make(chan error, 1)
	var committer sync.WaitGroup
	committer.Go(func() { d.commitLoop(ops, commitErr) })

	s.sendCtx, s.cancelSends = context.WithCancel(context.WithoutCancel(ctx))
	s.publish(d.now()) // Status reads the snapshot as soon as Ready
	d.ready.Store(true)
	d.logger.Info("Dispatcher started", logKeyCount, len(d.targets))
	err = s.loop(ctx, commitErr)
	d.ready.Store(false)

	// Shutdown: cancel attempts, record what finished, flush, stop the committer.
	s.cancelSends()
	for s.inflight > 0 {
		s.handle(<-s.results)
	}
	s.wg.Wait()
	s.flushStats(d.now(), true)
	d.mu.Lock()
	d.opsOpen = false
	close(ops)
	d.mu.Unlock()
	committer.Wait()
	select {
	case cerr := <-commitErr:
		if err == nil || errors.Is(err, ctx.Err()) {
			err = cerr
		}
	default:
	}
	for _, t := range d.targets {
		if c, ok := t.sender.(io.Closer); ok {
			if err := c.Close(); err != nil {
				d.logger.Warn("Closing target sender failed", logKeyTarget, t.cfg.Name, logKeyErr, err)
			}
		}
	}
	d.logger.Info("Dispatcher stopped")
	return err
}

// commitLoop is the single writer of delivery state. It commits whatever is
// queued in one transaction (group commit: one fsync for many outcomes).
func (d *Dispatcher) commitLoop(ops <-chan *op, errc chan<- error) {
	var failed error
	batch := make([]*op, 0, maxCommitBatch)
	for first := range ops {
		batch = append(batch[:0], first)
	collect:
		for len(batch) < maxCommitBatch {
			select {
			case o, ok := <-ops:
				if !ok {
					break collect
				}
				batch = append(batch, o)
			default:
				break collect
			}
		}
		for i := 0; i < len(batch); {
			if o := batch[i]; o.admin {
				i++
				if failed != nil {
					o.done <- failed
					continue
				}
				err := d.db.Update(o.fn)
				if err == nil && o.after != nil {
					o.after()
				}
				o.done <- err
				continue
			}
			j := i
			for j < len(batch) && !batch[j].admin {
				j++
			}
			run := batch[i:j]
			i = j
			if failed != nil {
				continue
			}
			err := d.db.Update(func(tx *bolt.Tx) error {
				for _, o := range run {
					if err := o.fn(tx); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				failed = fmt.Errorf("outbox: commit delivery state: %w", err)
				errc <- failed // capacity 1, sent once
				continue
			}
			for _, o := range run {
				if o.after != nil {
					o.after()
				}
			}
		}
		clear(batch) // drop references to closures
	}
}

// write runs an admin change: through the committer while Run is running, so
// that it is ordered with delivery outcomes, or as a plain Update otherwise.
// after runs only if the change committed while Run was running.
func (d *Dispatcher) write(fn func(tx *bolt.Tx) error, after func()) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.opsOpen {
		o := &op{fn: fn, after: after, admin: true, done: make(chan error, 1)}
		d.ops <- o
		return <-o.done
	}
	return d.db.Update(fn)
}

// post queues f to run on the scheduler goroutine. It never blocks.
func (d *Dispatcher) post(f func(*scheduler)) {
	d.inboxMu.Lock()
	d.inbox = append(d.inbox, f)
	d.inboxMu.Unlock()
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// backoff returns the wait after attempts failed attempts (0: before the
// first), from the schedule whose last entry repeats, with jitter.
func (d *Dispatcher) backoff(attempts int) time.Duration {
	b := d.cfg.Backoff
	w := b[min(max(attempts, 0), len(b)-1)]
	if d.jitter > 0 && w > 0 {
		w = time.Duration(float64(w) * (1 + d.jitter*(2*rand.Float64()-1)))
	}
	return w
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
