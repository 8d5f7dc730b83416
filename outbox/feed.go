package outbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrCursorGone is returned by Feed.Read for a cursor the feed can no
// longer continue from: events after it were pruned, or it lies in the gap a
// restore left (sequences issued by a database that was replaced by an older
// backup), or it is ahead of every sequence this database issued. The
// wrapped message says which and what to do: reload the directory from
// /v1/users and /v1/groups and continue the feed from the sequence that
// response reports.
var ErrCursorGone = errors.New("outbox: feed cursor gone")

// FeedConfig tunes a Feed. Zero values take the defaults.
type FeedConfig struct {
	// MaxLimit caps FeedQuery.Limit (default 1000); the default limit is 100.
	MaxLimit int
	// MaxScan is how many log entries one read examines at most (default
	// 10,000): a filtered read that skips many non-matching events returns
	// what it found with the cursor advanced past what it examined.
	MaxScan int
	// MaxWait caps FeedQuery.Wait (default 60s).
	MaxWait time.Duration
}

// FeedQuery is one read of the feed.
type FeedQuery struct {
	// After is the last sequence the consumer processed; 0 starts at the
	// oldest retained event.
	After uint64
	// Limit is the most events returned (default 100, at most MaxLimit).
	Limit int
	// Types are event type patterns as in a target's events ("user.*",
	// "group.member_added", "*"); empty means all.
	Types []string
	// Wait makes Read block, when nothing after After matches, until an
	// event commits or Wait has passed (long poll). 0 returns at once.
	Wait time.Duration
	// Resource keeps only the events about one resource (an ordering key
	// of Event.Resources, e.g. "User/2819c223"); "" keeps all. Events are
	// matched on their stored bytes before any is decoded.
	Resource string
}

// FeedPage is the result of a read.
type FeedPage struct {
	// Events are envelopes, byte for byte what a webhook receives, in
	// sequence order.
	Events []json.RawMessage `json:"data"`
	// Next is the sequence to pass as After in the next read: the last one
	// examined, which may be past the last event returned when a filter
	// skipped events, or After itself when nothing new was examined.
	Next uint64 `json:"next"`
}

// Feed serves the outbox log as a pull API: the events in sequence order,
// the same envelopes the webhooks get, retained for feed_retention, with
// long polls woken on commit. It is safe for concurrent use; a waiting read
// costs one goroutine and one channel receive, and one commit wakes all of
// them with one channel close.
type Feed struct {
	dbp atomic.Pointer[bolt.DB] // SetDB replaces it (online compaction)
	cfg FeedConfig

	mu    sync.Mutex
	ch    chan struct{} // closed by Notify, then replaced
	taken bool          // someone waits on ch

	stop     chan struct{} // closed by Stop
	stopOnce sync.Once
}

// NewFeed returns a feed over db, whose outbox buckets must exist
// (InitBuckets). Call Notify after every commit that enqueued events (from
// tx.OnCommit, next to the dispatcher's Notify).
func NewFeed(db *bolt.DB, cfg FeedConfig) *Feed {
	if cfg.MaxLimit <= 0 {
		cfg.MaxLimit = 1000
	}
	if cfg.MaxScan <= 0 {
		cfg.MaxScan = 10000
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = time.Minute
	}
	f := &Feed{cfg: cfg, ch: make(chan struct{}), stop: make(chan struct{})}
	f.dbp.Store(db)
	return f
}

// SetDB makes the feed read db from then on: the file an online compaction
// replaced, opened again. Reads under way finish on the database they began.
func (f *Feed) SetDB(db *bolt.DB) { f.dbp.Store(db) }

// Stop ends every wait, now and from now on: a waiting read returns what it
// has (an empty page, its cursor unchanged), so that a shutdown is not held
// by long polls. Reads without a wait are not affected.
func (f *Feed) Stop() { f.stopOnce.Do(func() { close(f.stop) }) }

// Notify wakes every waiting read. It never blocks and is safe to call from
// tx.OnCommit.
func (f *Feed) Notify() {
	f.mu.Lock()
	if f.taken {
		close(f.ch)
		f.ch, f.taken = make(chan struct{}), false
	}
	f.mu.Unlock()
}

func (f *Feed) changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.taken = true
	return f.ch
}

// Read returns the events after q.After that match q.Types, at most q.Limit,
// and the sequence to continue from. With q.Wait, a read that finds nothing
// waits for a commit (or the end of the wait, or ctx) and reads again; the
// cursor it returns then is past every entry examined, so a consumer that
// filters on rare types still advances. It returns ErrCursorGone (wrapped,
// with what to do) for a cursor the feed cannot continue from, and
// ErrInvalidArgument for a bad type pattern.
func (f *Feed) Read(ctx context.Context, q FeedQuery) (FeedPage, error) {
	for i, p := range q.Types {
		if !patternRe.MatchString(p) {
			return FeedPage{}, fmt.Errorf("%w: types[%d] %q is not an event type, a prefix such as \"user.*\", or \"*\"", ErrInvalidArgument, i, p)
		}
	}
	m := newMatcher(q.Types)
	if len(q.Types) == 0 {
		m.all = true
	}
	limit := q.Limit
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, f.cfg.MaxLimit)
	wait := min(max(q.Wait, 0), f.cfg.MaxWait)
	var timer <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		timer = t.C
	}
	after := q.After
	for {
		woken := f.changed() // before reading, so that no commit is missed
		page, err := f.read(after, limit, m, q.Resource)
		if err != nil || len(page.Events) > 0 || wait == 0 {
			return page, err
		}
		after = page.Next
		select {
		case <-woken:
		case <-timer:
			return page, nil
		case <-f.stop:
			return page, nil
		case <-ctx.Done():
			return page, ctx.Err()
		}
	}
}

func (f *Feed) read(after uint64, limit int, m matcher, resource string) (FeedPage, error) {
	quoted, _ := json.Marshal(resource) // as the stored event spells it
	page := FeedPage{Events: []json.RawMessage{}, Next: after}
	err := f.dbp.Load().View(func(tx *bolt.Tx) error {
		events, meta := tx.Bucket(bucketEvents), tx.Bucket(bucketMeta)
		if events == nil || meta == nil {
			return errNoBuckets
		}
		pruned := getU64(meta, keyPruned)
		issued := events.Sequence()
		for _, g := range RestoreGaps(tx) {
			from, to := g[0], g[1]
			if after <= from || after > to {
				continue
			}
			return fmt.Errorf("%w: sequence %d was issued by a database that has since been replaced by a backup taken at sequence %d, "+
				"so the events after it are not the ones you processed; reload the directory from /v1/users and /v1/groups "+
				"and continue from the sequence that response reports", ErrCursorGone, after, from)
		}
		if after > issued {
			return fmt.Errorf("%w: sequence %d is ahead of every sequence this gateway issued (%d): the cursor comes from another gateway "+
				"or from before a restore; reload the directory from /v1/users and /v1/groups and continue from the sequence that response reports",
				ErrCursorGone, after, issued)
		}
		if after < pruned && after != 0 {
			oldest := pruned + 1
			if k, _ := events.Cursor().Seek(be64(pruned + 1)); k != nil {
				oldest = fromBE64(k)
			}
			return fmt.Errorf("%w: events after sequence %d are no longer retained (the oldest retained is %d); reload the directory "+
				"from /v1/users and /v1/groups and continue from the sequence that response reports", ErrCursorGone, after, oldest)
		}
		from := max(after, pruned) // 0: from the oldest retained, not from leftovers a target kept
		page.Next = from
		c := events.Cursor()
		examined := 0
		for k, v := c.Seek(be64(from + 1)); k != nil && examined < f.cfg.MaxScan && len(page.Events) < limit; k, v = c.Next() {
			seq := fromBE64(k)
			examined++
			page.Next = seq
			if !m.match(peekType(v)) || resource != "" && !bytes.Contains(v, quoted) {
				continue
			}
			ev, err := decodeEvent(seq, v)
			if err != nil {
				return err
			}
			if resource != "" && !slices.Contains(ev.Resources, resource) {
				continue // the name was in a value, not among its resources
			}
			page.Events = append(page.Events, ev.Envelope())
		}
		return nil
	})
	if err != nil {
		return FeedPage{}, err
	}
	return page, nil
}
