package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scimgate/scimgate/mapping"
	"github.com/scimgate/scimgate/outbox"
)

// Optimistic writes. A SCIM write is prepared in the request's
// goroutine against a read snapshot: normalising, PATCH, the uniqueness
// decisions, mapping, the diff and the encoding of the record, its member
// keys and its events all happen there, recording in a readSet what they
// read. The single writer then only checks that everything in the read set
// is still as it was and applies the prepared bytes, in the shared
// transaction: resource, indexes and events still commit together, and
// versions and event order are the writer's order. When something changed
// (errConflict: another write to the same resource, name or member
// committed first) the write is prepared again on a fresh snapshot; after
// maxOptimistic conflicts it is prepared inside the writer, so a resource
// that many clients write at once still makes progress.
//
// What validation covers: every key read through readSet.get (the
// resource's own record, so its version; name index entries; the records
// of members added or removed, so their existence and the data their
// events carry) and every reference the mapping resolved. A group's
// membership is covered by its record: every change of the members bucket
// rewrites the group's record with a new version (applyMembers,
// dropMemberships) or deletes it.

// errConflict is what a prepared write's apply fails with when something
// it read has changed. It is clean: apply checks before writing anything.
var errConflict = errors.New("store: a prepared write read something that has changed since")

// maxOptimistic is how many times a write is prepared outside the writer
// before it is prepared inside it.
const maxOptimistic = 3

// readSet records what a prepared write read, to be checked by the writer.
type readSet struct {
	vals     []readVal
	resolved []resolution
}

type readVal struct {
	bucket, key []byte
	val         []byte // a copy; nil when absent
	present     bool
}

type resolution struct {
	by, value, id string
	ok            bool
}

// get reads key from bucket in tx and records what it saw (a nil rs
// records nothing: a write prepared inside the writer, or the deletes).
// The slice is valid only inside tx.
func (rs *readSet) get(tx *bolt.Tx, bucket, key []byte) []byte {
	v := tx.Bucket(bucket).Get(key)
	if rs != nil {
		rs.vals = append(rs.vals, readVal{bucket: bucket, key: key, val: bytes.Clone(v), present: v != nil})
	}
	return v
}

// valid reports whether tx still holds what the write read.
func (rs *readSet) valid(tx *bolt.Tx, s *Store) bool {
	for _, r := range rs.vals {
		v := tx.Bucket(r.bucket).Get(r.key)
		if (v != nil) != r.present || !bytes.Equal(v, r.val) {
			return false
		}
	}
	res := txResolver{tx: tx, s: s}
	for _, r := range rs.resolved {
		if id, ok := res.ResolveUser(r.by, r.value); id != r.id || ok != r.ok {
			return false
		}
	}
	return true
}

// recResolver is txResolver recording its answers in a read set.
type recResolver struct {
	txResolver
	rs *readSet
}

// ResolveUser implements mapping.Resolver.
func (r recResolver) ResolveUser(by, value string) (string, bool) {
	id, ok := r.txResolver.ResolveUser(by, value)
	r.rs.resolved = append(r.rs.resolved, resolution{by: by, value: value, id: id, ok: ok})
	return id, ok
}

func (s *Store) resolver(tx *bolt.Tx, rs *readSet) mapping.Resolver {
	if rs == nil {
		return txResolver{tx: tx, s: s}
	}
	return recResolver{txResolver: txResolver{tx: tx, s: s}, rs: rs}
}

// prepFunc prepares a write against tx (a snapshot, or the writer's own
// transaction, with rs nil), recording what it reads in rs. It returns the apply step
// the writer runs, or nil when there is nothing to write (an unchanged
// resource), or a refusal. It must not write to tx.
//
// m is the mapping to map with: the store's current one, loaded once per
// attempt. The apply step runs only while it is still the current one
// (SetMapper swaps it inside the writer), so every record is written with
// the fingerprint of the mapper that made it, and a write prepared before a
// swap is prepared again after it.
type prepFunc func(tx *bolt.Tx, rs *readSet, m *mapping.Mapper) (apply writeFunc, err error)

// write runs one prepared write (see the comment at the top of the file).
func (s *Store) write(prep prepFunc) error {
	for range maxOptimistic {
		rs := &readSet{}
		var apply writeFunc
		m := s.mapper.Load()
		err := s.prepareView(func(tx *bolt.Tx) (err error) {
			apply, err = prep(tx, rs, m)
			return err
		})
		if err != nil || apply == nil {
			return err
		}
		err = s.w.update(func(tx *bolt.Tx) error {
			if s.mapper.Load() != m || !rs.valid(tx, s) {
				return errConflict
			}
			return apply(tx)
		})
		if !errors.Is(err, errConflict) {
			return err
		}
		s.conflicts.Add(1)
	}
	s.pessimistic.Add(1)
	return s.w.update(func(tx *bolt.Tx) error {
		apply, err := prep(tx, nil, s.mapper.Load())
		if err != nil || apply == nil {
			return err
		}
		return apply(tx)
	})
}

// prepareView runs fn in a read transaction in the calling goroutine. A
// panic there (request-derived code: PATCH, mapping transforms) fails
// this write with ErrInternal and is logged, as in the writer.
func (s *Store) prepareView(fn func(tx *bolt.Tx) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("store write panicked while being prepared; it failed and changed nothing, the store keeps running",
				"panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			err = fmt.Errorf("%w (recovered panic)", ErrInternal)
		}
	}()
	return s.view(fn)
}

// writeCounters count how writes went, for tests and benchmarks.
type writeCounters struct {
	conflicts   atomic.Int64 // prepared writes that had to be prepared again
	pessimistic atomic.Int64 // writes finally prepared inside the writer
}

// encoded is a record's stored form, prepared outside the writer. For a new
// record the creation sequence is not known until the writer assigns it:
// head ends with `"seq":` and tail follows the number.
type encoded struct {
	head, tail []byte
	full       []byte // set when the sequence was known (updates)
}

// bytes returns the stored value for creation sequence seq.
func (e encoded) bytes(seq uint64) []byte {
	if e.full != nil {
		return e.full
	}
	b := make([]byte, 0, len(e.head)+20+len(e.tail))
	b = append(b, e.head...)
	b = strconv.AppendUint(b, seq, 10)
	return append(b, e.tail...)
}

// encode prepares the stored form of r (its event data and display value
// included). With r.Seq == 0 the sequence is left to fill in.
func (k *kind) encode(r *record) (encoded, error) {
	if err := r.encodeData(); err != nil {
		return encoded{}, err
	}
	r.Display = k.display(r.Doc)
	b, err := json.Marshal(r)
	if err != nil {
		return encoded{}, fmt.Errorf("encode %s %s: %w", k.event, r.ID, err)
	}
	if r.Seq != 0 {
		return encoded{full: b}, nil
	}
	// {"id":"<id>","seq":0,…: ids are made by newID (hex and dashes), so
	// the prefix is exactly this; anything else is a bug caught here.
	id, _ := json.Marshal(r.ID)
	head := append(append([]byte(`{"id":`), id...), `,"seq":`...)
	if !bytes.HasPrefix(b, head) || len(b) < len(head)+1 || b[len(head)] != '0' {
		return encoded{}, fmt.Errorf("encode %s %s: unexpected record layout", k.event, r.ID)
	}
	return encoded{head: b[:len(head)], tail: b[len(head)+1:]}, nil
}

// display is a member's display value: the displayName when there is one,
// else the unique name (a group's displayName is both).
func (k *kind) display(doc map[string]any) string {
	if d := stringAttr(doc, "displayName"); d != "" {
		return d
	}
	return k.nameOf(doc)
}

// event is an outbox event prepared outside the writer (data and changes
// encoded); the writer's Enqueue numbers it.
type event = outbox.Event

// newEvent prepares one event.
func newEvent(typ string, resources []string, data json.RawMessage, changes map[string]mapping.Change) (event, error) {
	ev := event{Type: typ, Resources: resources, Data: data}
	if changes != nil {
		var err error
		if ev.Changes, err = json.Marshal(changes); err != nil {
			return ev, fmt.Errorf("encode event changes: %w", err)
		}
	}
	return ev, nil
}

// enqueueAll appends prepared events to the outbox in tx, in order.
func (s *Store) enqueueAll(tx *bolt.Tx, evs ...event) error {
	now := s.now()
	for _, ev := range evs {
		if _, err := outbox.Enqueue(tx, ev, now); err != nil {
			return err
		}
	}
	if len(evs) > 0 {
		tx.OnCommit(s.wake)
	}
	return nil
}

// insertNew encodes and inserts a new record in one step (migrations and
// tests, inside a write transaction).
func (k *kind) insertNew(tx *bolt.Tx, r *record) error {
	enc, err := k.encode(r)
	if err != nil {
		return err
	}
	return k.insert(tx, r, enc)
}

// WriterStats describe the writer's work since New, for benchmarks and
// metrics.
type WriterStats struct {
	Commits int64 // write transactions the writer ran (rolled-back ones included)
	Writes  int64 // writes they committed or refused
	// Busy is the time spent inside transactions (applying, waiting for
	// bbolt's write lock, committing with fsync).
	Busy time.Duration
	// LockWait is the part of Busy before the writes ran: waiting for
	// bbolt's write lock (held by other writers of the file, such as the
	// dispatcher) and beginning the transaction. Applying is the part spent
	// running the writes; the rest is the commit (pages written, fsync).
	LockWait, Applying time.Duration
	// Conflicts counts prepared writes that found what they read changed
	// and were prepared again; Pessimistic, writes that conflicted
	// maxOptimistic times and were finally prepared inside the writer.
	Conflicts, Pessimistic int64
}

// WriterStats returns the writer's counters.
func (s *Store) WriterStats() WriterStats {
	return WriterStats{Commits: s.w.commits.Load(), Writes: s.w.writes.Load(), Busy: time.Duration(s.w.busy.Load()),
		LockWait: time.Duration(s.w.lockWait.Load()), Applying: time.Duration(s.w.applying.Load()),
		Conflicts: s.conflicts.Load(), Pessimistic: s.pessimistic.Load()}
}

// Submit runs fn in the writer's next shared transaction, with the SCIM
// writes queued at that moment, and returns once that transaction has
// committed (fsync) or failed. It is the seam for the other writers of the
// file — the dispatcher's admissions and outcomes — so that their state
// rides the SCIM writes' commits instead of taking bbolt's write lock and
// an fsync of their own (measured in docs/performance.md). fn must only
// read and write the database: no blocking, no calls back into the
// store. Any error fn returns is taken as a storage failure: the shared
// transaction is rolled back, fn's caller gets the error and the other
// writes of the batch are committed again without it. fn may run more
// than once (a batch retried without another write), so it must be
// idempotent over tx; tx.OnCommit handlers fire once.
func (s *Store) Submit(fn func(tx *bolt.Tx) error) error { return s.w.update(fn) }
