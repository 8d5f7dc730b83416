package outbox

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
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
	adminChunk      = 1000                  // keys per transaction of bulk admin work
	minCommitRetry  = 50 * time.Millisecond // first wait before a failed commit is tried again
	maxCommitRetry  = 5 * time.Second       // longest wait between tries
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
	// failing is set while the storage refuses commits of delivery state
	// (a full disk): Run keeps the outcomes in memory and retries.
	failing atomic.Pointer[commitFailure]
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

// commitFailure is why, since when, and how many changes wait.
type commitFailure struct {
	err   error
	since time.Time
	held  int
}

// Healthy returns an error while Run cannot record delivery state because
// the storage refuses to commit (a full disk, an I/O error): Run goes on,
// keeps what it has not recorded in memory, starts no new attempts, and
// tries the commit again, every few seconds at most, until it succeeds (the
// disk has room again). Admin calls that write fail meanwhile. A readiness
// probe should report the gateway not ready while it returns an error. It
// returns nil otherwise, also when Run is not running (see Ready).
func (d *Dispatcher) Healthy() error {
	f := d.failing.Load()
	if f == nil {
		return nil
	}
	return fmt.Errorf("outbox: recording delivery state fails since %s (%d changes kept in memory and retried; free disk space): %w",
		f.since.UTC().Format(time.RFC3339), f.held, f.err)
}

// setFailing records a failed commit; held changes wait for the next try.
func (d *Dispatcher) setFailing(err error, held int) {
	prev := d.failing.Load()
	since := d.now()
	if prev == nil {
		d.logger.Error("Recording delivery state failed; no new attempts until it succeeds, tried again every few seconds (free disk space)",
			logKeyCount, held, logKeyErr, err)
		d.metrics.commitFailing(true)
	} else {
		since = prev.since
	}
	d.failing.Store(&commitFailure{err: err, since: since, held: held})
}

// clearFailing records that commits succeed again and wakes Run's loop.
func (d *Dispatcher) clearFailing() {
	if prev := d.failing.Load(); prev != nil {
		d.metrics.commitFailing(false)
		d.failing.Store(nil)
		d.logger.Info("Recording delivery state works again", "failed_for", d.now().Sub(prev.since).Round(time.Millisecond))
		select {
		case d.kick <- struct{}{}:
		default:
		}
	}
}

// fnError is an error an op (or Run's load) returned, not a refused commit:
// damaged data or a defect, which trying again would not cure.
type fnError struct{ err error }

func (e *fnError) Error() string { return e.err.Error() }
func (e *fnError) Unwrap() error { return e.err }

// storageRefused reports whether err, from an Update, is the storage
// refusing a commit (worth trying again) rather than an op's own error or a
// closed database.
func storageRefused(err error) bool {
	var fe *fnError
	return err != nil && !errors.As(err, &fe) && !errors.Is(err, bolt.ErrDatabaseNotOpen) && !errors.Is(err, bolt.ErrTxClosed)
}

// op is one unit of work for the committer. Ops that are not admin are
// committed together in one transaction, in FIFO order; an error returned by
// one of them stops Run, while a commit the storage refuses is tried again
// (see Healthy). Admin ops get a transaction of their own and their error
// goes back to the caller.
type op struct {
	fn    func(tx *bolt.Tx) error
	after func() // after commit, in the committer goroutine; must not block
	admin bool
	// own marks a change whose error is its caller's (State.Update): it is
	// committed with the outcomes, in the same transaction, but an error it
	// returns fails it alone — the transaction is rolled back, the error goes
	// to done, and the others are committed without it. done gets nil once
	// it committed, or the error that kept it from committing.
	own  bool
	done chan error
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

	s, err := d.start(ctx)
	if err != nil {
		return err
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
	d.failing.Store(nil)
	d.metrics.commitFailing(false)
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

// start loads the delivery state in Run's first transaction and returns
// with d.mu held. A commit the storage refuses (a full disk) is tried again
// until it succeeds or ctx is done, with Healthy reporting it meanwhile: a
// restart on a full disk waits for room instead of failing.
func (d *Dispatcher) start(ctx context.Context) (*scheduler, error) {
	wait := minCommitRetry
	for {
		d.mu.Lock()
		var s *scheduler
		err := d.database().Update(func(tx *bolt.Tx) error {
			var err error
			if s, err = d.load(tx); err != nil {
				return &fnError{err}
			}
			return nil
		})
		if err == nil {
			d.clearFailing()
			return s, nil
		}
		d.mu.Unlock()
		if !storageRefused(err) {
			d.clearFailing()
			return nil, fmt.Errorf("outbox: load delivery state: %w", err)
		}
		d.setFailing(fmt.Errorf("load delivery state: %w", err), 0)
		select {
		case <-ctx.Done():
			d.clearFailing()
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, maxCommitRetry)
	}
}

// commitLoop is the single writer of delivery state. It commits whatever is
// queued in one transaction (group commit: one fsync for many outcomes).
//
// When the storage refuses a commit (a full disk), the ops stay held, in
// order, with every op queued after them, and are tried again with a
// growing wait (minCommitRetry to maxCommitRetry, or longer after a costly
// try) until the commit succeeds; Healthy reports it meanwhile, admin ops
// fail at once (unless a try made just before them succeeds), and the
// scheduler starts no new attempts. When ops is closed (Run stops) with ops still held, one last
// try is made; if it fails, what they recorded is lost (the events are
// delivered again by the next Run) and errc says so.
func (d *Dispatcher) commitLoop(ops <-chan *op, errc chan<- error) {
	var fatal error // an op's own error: nothing is committed after it
	var held []*op
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	wait := minCommitRetry
	// flush tries to commit what is held; it reports whether all of it is.
	flush := func() bool {
		start := time.Now()
		err := d.commitHeld(&held)
		switch {
		case err == nil:
			wait = minCommitRetry
			d.clearFailing()
			return true
		case storageRefused(err):
			// Own ops fail now rather than wait with the outcomes: their
			// callers retry (an event's step is done again), and Run's
			// shutdown does not wait on them.
			held = dropOwn(held, err)
			d.setFailing(err, len(held))
			// A refused commit can cost seconds (with NoFreelistSync,
			// bbolt's rollback rereads every page for its freelist): wait
			// at least four times that, so that trying stays a fraction of
			// the work.
			retry.Reset(max(wait, min(4*time.Since(start), time.Minute)))
			wait = min(2*wait, maxCommitRetry)
		default:
			fatal = fmt.Errorf("outbox: commit delivery state: %w", err)
			errc <- fatal // capacity 1, sent once
			dropOwn(held, fatal)
			held = nil
			d.clearFailing()
		}
		return false
	}
	batch := make([]*op, 0, maxCommitBatch)
	for {
		var first *op
		ok := true
		if len(held) == 0 {
			first, ok = <-ops
		} else {
			select {
			case first, ok = <-ops:
			case <-retry.C:
				flush()
				continue
			}
		}
		if !ok {
			if len(held) > 0 && !flush() && fatal == nil {
				err := fmt.Errorf("outbox: commit delivery state at shutdown: %w (%d changes not recorded: the events concerned are delivered again after a restart)",
					d.failing.Load().err, len(held))
				dropOwn(held, err)
				errc <- err
			}
			return
		}
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
				switch {
				case fatal != nil:
					o.done <- fatal
					continue
				case len(held) > 0 && !flush():
					o.done <- d.Healthy()
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
			if fatal != nil {
				dropOwn(run, fatal)
				continue
			}
			if len(held) > 0 { // the storage refuses commits: own ops fail at once, as admin ops do
				run = dropOwn(run, cmp.Or(d.Healthy(), errNotRecording))
			}
			held = append(held, run...) // in order after what is held already
			if len(held) == len(run) {
				flush()
			}
		}
		clear(batch) // drop references to closures
	}
}

// commitHeld commits the held ops in order, maxCommitBatch to a
// transaction, runs their after funcs, tells own ops they committed, and
// drops them from held. An own op's error rolls the transaction back: that
// op gets its error and leaves held, and the rest are tried again.
func (d *Dispatcher) commitHeld(held *[]*op) error {
	for len(*held) > 0 {
		run := (*held)[:min(len(*held), maxCommitBatch)]
		failed, failedErr := -1, error(nil)
		err := d.database().Update(func(tx *bolt.Tx) error {
			for i, o := range run {
				if err := o.fn(tx); err != nil {
					if o.own {
						failed, failedErr = i, err
						return errOwnFailed
					}
					return &fnError{err}
				}
			}
			return nil
		})
		if err == errOwnFailed {
			run[failed].done <- failedErr
			*held = slices.Delete(*held, failed, failed+1)
			continue
		}
		if err != nil {
			return err
		}
		for _, o := range run {
			if o.after != nil {
				o.after()
			}
			if o.own {
				o.done <- nil
			}
		}
		clear(run)
		*held = (*held)[len(run):]
	}
	*held = nil
	return nil
}

// errNotRecording is what an own op gets while commits are refused, should
// Healthy not say so.
var errNotRecording = errors.New("outbox: delivery state is not being recorded: try again")

// errOwnFailed is how commitHeld's transaction says an own op failed.
var errOwnFailed = errors.New("outbox: a state change failed")

// dropOwn tells the own ops among ops that they will not be committed and
// returns the others, in order (in ops' backing array).
func dropOwn(ops []*op, err error) []*op {
	keep := ops[:0]
	for _, o := range ops {
		if o.own {
			o.done <- err
			continue
		}
		keep = append(keep, o)
	}
	clear(ops[len(keep):])
	return keep
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

// writeOwn runs a change whose error is its caller's (State.Update):
// through the committer while Run is running, in the transaction of the
// outcomes queued with it (one commit for many), or as a plain Update
// otherwise. It returns once the change committed durably, or with the
// error that kept it from committing.
func (d *Dispatcher) writeOwn(fn func(tx *bolt.Tx) error) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.opsOpen {
		o := &op{fn: fn, own: true, done: make(chan error, 1)}
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
