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
	adminChunk      = 1000 // keys per transaction of bulk admin work
)

// Dispatcher delivers the outbox log to the configured targets: at least once,
// signed, ordered per resource, concurrently across unrelated resources, with
// durable retries and dead letters. Build it with NewDispatcher, start it with
// Run. Its admin methods are safe for concurrent use, with or without Run;
// they write to the database, so never call them inside a bolt transaction.
type Dispatcher struct {
	dbp     atomic.Pointer[bolt.DB] // replaced by Suspend's resume (online compaction)
	logger  *slog.Logger
	metrics *Metrics

	// cfgMu guards the configuration that Reload replaces. Run copies what
	// it needs when it starts and receives Reload's changes through post.
	cfgMu      sync.RWMutex
	cfg        Config
	targets    []*target
	byName     map[string]*target
	window     int           // events held in memory per target
	pruneEvery time.Duration // prune pass interval
	initTail   uint64        // log tail at NewDispatcher: where a target configured then starts

	now    func() time.Time
	jitter float64
	chunk  int // keys per transaction of bulk admin work (replay, discard, spool, cleanup)

	snapshot atomic.Pointer[SnapshotFunc]
	bfMu     sync.Mutex // serialises starting backfills and history replays
	reloadMu sync.Mutex // serialises Reload

	wake    chan struct{} // Notify; capacity 1
	kick    chan struct{} // inbox has work; capacity 1
	running atomic.Bool
	ready   atomic.Bool
	counted uint64 // log entries counted in EventsEnqueued; owned by Run

	// mu orders admin writes against Run's start and stop: while opsOpen,
	// writes go through the committer so that they interleave with delivery
	// outcomes in one FIFO; otherwise they are plain Updates. loopDone is
	// closed when Run's loop has returned (nothing posted runs after it).
	mu       sync.RWMutex
	ops      chan *op
	opsOpen  bool
	loopDone chan struct{}
	bg       sync.WaitGroup // backfills started by Run itself

	inboxMu sync.Mutex
	inbox   []func(*scheduler)

	snapMu sync.Mutex
	snap   map[string]laneSnap
}

// target is one configured target with its sender. A Reload that changes a
// target replaces its *target; use is shared by the targets that share a
// sender, so that the sender is closed only when no attempt uses it.
type target struct {
	cfg      Target
	redacted string
	match    matcher
	sender   Sender
	use      *senderUse
}

// senderUse tracks the attempts in flight on one sender. Only the scheduler
// goroutine touches inflight and retired.
type senderUse struct {
	inflight int
	retired  bool
	once     sync.Once
}

type laneSnap struct {
	backlog     int
	oldest      time.Time
	stats       targetStats
	bfActive    bool // the lane runs a backfill: bfRemaining and bfPhase are current
	bfRemaining int
	bfPhase     string
	histLeft    int
}

// NewDispatcher builds (does not start) a dispatcher over db for cfg.Targets.
// cfg must be valid; m and logger may be nil. A target seen for the first time
// receives the events enqueued after NewDispatcher returns (or, with
// backfill_on_start, a snapshot first); its state bucket is created when Run
// starts or an admin call first writes to it. Every per-target metric exists
// from here on, at 0.
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
		logger:  logger.With("component", "dispatcher"),
		metrics: m,
		now:     time.Now,
		jitter:  defaultJitter,
		chunk:   adminChunk,
		wake:    make(chan struct{}, 1),
		kick:    make(chan struct{}, 1),
		snap:    map[string]laneSnap{},
	}
	d.dbp.Store(db)
	targets, err := d.buildTargets(cfg, nil, nil)
	if err != nil {
		return nil, err
	}
	d.setConfig(cfg, targets)
	if err := db.View(func(tx *bolt.Tx) error { d.initTail = logTail(tx); return nil }); err != nil {
		return nil, fmt.Errorf("outbox: read log tail: %w", err)
	}
	d.counted = d.initTail
	for _, t := range d.targets {
		m.initTarget(t.cfg.Name)
	}
	return d, nil
}

// buildTargets makes the targets of cfg. A target whose old version (in old)
// needs no new sender (keep reports false for rebuild) reuses its sender.
// On error, the senders built so far are closed.
func (d *Dispatcher) buildTargets(cfg Config, old map[string]*target, rebuild func(name string) bool) ([]*target, error) {
	var out []*target
	for _, tc := range cfg.Targets {
		tc = tc.withDefaults()
		t := &target{cfg: tc, redacted: cfg.describe(tc), match: newMatcher(tc.Events)}
		if o := old[tc.Name]; o != nil && !rebuild(tc.Name) {
			t.sender, t.use = o.sender, o.use
		} else {
			var snd Sender
			var err error
			if tr, ok := cfg.Transports[tc.kind()]; ok && tr.New != nil {
				snd, err = tr.New(tc, Env{Config: cfg, Metrics: d.metrics, State: d.State(tc.Name),
					Logger: d.logger.With(logKeyTarget, tc.Name)})
			} else {
				err = fmt.Errorf("outbox: target %s: no transport for type %q", tc.Name, tc.kind())
			}
			if err != nil {
				for _, b := range out {
					if o := old[b.cfg.Name]; o == nil || o.use != b.use {
						d.closeSender(b)
					}
				}
				return nil, err
			}
			t.sender, t.use = snd, &senderUse{}
		}
		out = append(out, t)
	}
	return out, nil
}

// setConfig installs a configuration; the caller holds no lock.
func (d *Dispatcher) setConfig(cfg Config, targets []*target) {
	byName := make(map[string]*target, len(targets))
	for _, t := range targets {
		byName[t.cfg.Name] = t
	}
	d.cfgMu.Lock()
	defer d.cfgMu.Unlock()
	if d.window == 0 || cfg.Concurrency != d.cfg.Concurrency { // the window follows concurrency
		d.window = max(minWindow, 8*cfg.Concurrency)
	}
	d.cfg, d.targets, d.byName = cfg, targets, byName
	d.pruneEvery = pruneInterval(cfg)
}

func pruneInterval(cfg Config) time.Duration {
	return min(max(cfg.Retention/4, minPruneEvery), maxPruneEvery)
}

// config returns the current configuration and targets.
func (d *Dispatcher) config() (Config, []*target) {
	d.cfgMu.RLock()
	defer d.cfgMu.RUnlock()
	return d.cfg, d.targets
}

// lookup returns a configured target.
func (d *Dispatcher) lookup(name string) (*target, error) {
	d.cfgMu.RLock()
	defer d.cfgMu.RUnlock()
	t, ok := d.byName[name]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownTarget, name)
	}
	return t, nil
}

// closeSender closes a target's sender once, if it is an io.Closer.
func (d *Dispatcher) closeSender(t *target) {
	t.use.once.Do(func() {
		if c, ok := t.sender.(io.Closer); ok {
			if err := c.Close(); err != nil {
				d.logger.Warn("Closing target sender failed", logKeyTarget, t.cfg.Name, logKeyErr, err)
			}
		}
	})
}

// database is the database the dispatcher works on.
func (d *Dispatcher) database() *bolt.DB { return d.dbp.Load() }

// Suspend holds the dispatcher's writes to its database while Run is not
// running: admin calls that write (replay, discard, pause, retry …) wait
// until resume, which makes the dispatcher use db from then on (the file
// an online compaction replaced, opened again; nil: the same database) and
// lets them go on. Reads go on meanwhile. It fails while Run runs: stop
// Run first, and call Run again after resume. resume must be called once.
func (d *Dispatcher) Suspend() (resume func(db *bolt.DB), err error) {
	d.mu.Lock()
	if d.running.Load() {
		d.mu.Unlock()
		return nil, errors.New("outbox: suspend while Run runs: stop it first")
	}
	return func(db *bolt.DB) {
		if db != nil {
			d.dbp.Store(db)
		}
		d.mu.Unlock()
	}, nil
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
// outcomes already known are committed before Run returns, and every sender
// is closed.
func (d *Dispatcher) Run(ctx context.Context) error {
	if !d.running.CompareAndSwap(false, true) {
		return errors.New("outbox: dispatcher already running")
	}
	defer d.running.Store(false)

	d.mu.Lock()
	var s *scheduler
	err := d.database().Update(func(tx *bolt.Tx) error {
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
	loopDone := make(chan struct{})
	d.loopDone = loopDone
	d.mu.Unlock()

	commitErr := make(chan error, 1)
	var committer sync.WaitGroup
	committer.Go(func() { d.commitLoop(ops, commitErr) })

	s.sendCtx, s.cancelSends = context.WithCancel(context.WithoutCancel(ctx))
	s.bgCtx, s.cancelBG = context.WithCancel(ctx)
	s.publish(d.now()) // Status reads the snapshot as soon as Ready
	d.ready.Store(true)
	d.logger.Info("Dispatcher started", logKeyCount, len(s.lanes))
	for _, l := range s.lanes {
		s.startPendingBackfill(l)
	}
	err = s.loop(ctx, commitErr)
	d.ready.Store(false)
	close(loopDone)

	// Shutdown: cancel attempts and backfills being prepared, record what
	// finished, flush, stop the committer.
	s.cancelSends()
	s.cancelBG()
	for s.inflight > 0 {
		s.handle(<-s.results)
	}
	s.wg.Wait()
	d.bg.Wait()
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
	for _, l := range s.lanes {
		d.closeSender(l.t)
	}
	for _, t := range s.retired {
		d.closeSender(t)
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
				err := d.database().Update(o.fn)
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
			err := d.database().Update(func(tx *bolt.Tx) error {
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
	return d.writeLocked(fn, after)
}

// writeLocked is write for a caller that holds d.mu.RLock (an RWMutex must
// not be read-locked twice by one goroutine).
func (d *Dispatcher) writeLocked(fn func(tx *bolt.Tx) error, after func()) error {
	if d.opsOpen {
		o := &op{fn: fn, after: after, admin: true, done: make(chan error, 1)}
		d.ops <- o
		return <-o.done
	}
	return d.database().Update(fn)
}

// inRunLocked runs f on the scheduler goroutine and waits for it. It reports
// false, without running f, when Run is not running or its loop has ended.
// The caller holds d.mu.RLock.
func (d *Dispatcher) inRunLocked(f func(*scheduler)) bool {
	if !d.opsOpen {
		return false
	}
	done := make(chan struct{})
	d.post(func(s *scheduler) { f(s); close(done) })
	select {
	case <-done:
		return true
	case <-d.loopDone:
		select { // f runs on Run's goroutine, so it either ran already or never will
		case <-done:
			return true
		default:
			return false
		}
	}
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
	return backoffOf(d.cfg.Backoff, d.jitter, attempts)
}

func backoffOf(b []time.Duration, jitter float64, attempts int) time.Duration {
	w := b[min(max(attempts, 0), len(b)-1)]
	if jitter > 0 && w > 0 {
		w = time.Duration(float64(w) * (1 + jitter*(2*rand.Float64()-1)))
	}
	return w
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
