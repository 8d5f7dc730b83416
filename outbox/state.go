package outbox

import (
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// State is one target's durable key-value state, beside its delivery state
// in the same bbolt file (outbox_targets/<name>/state): what a transport
// keeps across events, such as an action target's id map. It survives
// restarts, backups, restores and compaction as the rest of the file does,
// and it is the target's own: a renamed target starts without it.
//
// Keys live in spaces (nested buckets) a transport names. The space
// "progress" is the engine's: it holds each event's progress through a
// transport's steps (see StateTx.SetProgress), and the engine deletes an
// event's entry in the same transaction that records the event delivered
// or dead-lettered.
type State struct {
	d    *Dispatcher
	name string
}

// State returns target name's state. It is valid for the dispatcher's
// life, also across Suspend (it reads the file the dispatcher uses now).
func (d *Dispatcher) State(name string) *State { return &State{d: d, name: name} }

var (
	bucketState    = []byte("state")    // in outbox_targets/<name>: spaces → keys
	bucketProgress = []byte("progress") // in state: event ID → a transport's progress
)

var errStateReadOnly = errors.New("outbox: state is read-only here")

// ErrStateSpace is returned for a space name that is empty or reserved.
var ErrStateSpace = errors.New("outbox: state space must be non-empty and not \"progress\"")

// View runs fn in a read-only transaction.
func (s *State) View(fn func(tx *StateTx) error) error {
	s.d.mu.RLock()
	defer s.d.mu.RUnlock()
	return s.d.database().View(func(btx *bolt.Tx) error {
		return fn(&StateTx{tx: btx, name: s.name})
	})
}

// Update runs fn in a write transaction and returns once it committed
// durably (or failed: then nothing fn wrote is kept). While the dispatcher
// runs, fn runs in its committer's transaction, ordered with the delivery
// outcomes and other targets' updates committed with it (one commit for
// many: concurrent senders share it); fn may then run more than once (a
// commit the storage refused, another update's error), so it must only
// write, the same each time.
func (s *State) Update(fn func(tx *StateTx) error) error {
	return s.d.writeOwn(func(btx *bolt.Tx) error {
		return fn(&StateTx{tx: btx, name: s.name, writable: true})
	})
}

// StateTx is a transaction over one target's state. Slices it returns are
// valid only inside the transaction.
type StateTx struct {
	tx       *bolt.Tx
	name     string
	writable bool
}

// root returns the target's state bucket, created in a write transaction;
// nil in a read-only one where it does not exist yet.
func (t *StateTx) root() (*bolt.Bucket, error) {
	if !t.writable {
		tb := targetBucket(t.tx, t.name)
		if tb == nil {
			return nil, nil
		}
		return tb.Bucket(bucketState), nil
	}
	root := t.tx.Bucket(bucketTargets)
	if root == nil {
		return nil, errNoBuckets
	}
	tb := root.Bucket([]byte(t.name))
	if tb == nil {
		// The target's delivery state is made by Run (ensureTarget) with its
		// cursor; a transport that writes first must not make it without.
		return nil, fmt.Errorf("outbox: target %s has no state yet (the dispatcher has not started it)", t.name)
	}
	return tb.CreateBucketIfNotExists(bucketState)
}

func (t *StateTx) space(space string, create bool) (*bolt.Bucket, error) {
	if create && !t.writable {
		return nil, errStateReadOnly
	}
	root, err := t.root()
	if err != nil || root == nil {
		return nil, err
	}
	if create {
		return root.CreateBucketIfNotExists([]byte(space))
	}
	return root.Bucket([]byte(space)), nil
}

func checkSpace(space string) error {
	if space == "" || space == string(bucketProgress) {
		return ErrStateSpace
	}
	return nil
}

// Get returns the value of key in space, or nil.
func (t *StateTx) Get(space string, key []byte) ([]byte, error) {
	if err := checkSpace(space); err != nil {
		return nil, err
	}
	b, err := t.space(space, false)
	if err != nil || b == nil {
		return nil, err
	}
	return b.Get(key), nil
}

// Put sets key in space to v.
func (t *StateTx) Put(space string, key, v []byte) error {
	if err := checkSpace(space); err != nil {
		return err
	}
	b, err := t.space(space, true)
	if err != nil {
		return err
	}
	return b.Put(key, v)
}

// Delete removes key from space (nothing if it is absent).
func (t *StateTx) Delete(space string, key []byte) error {
	if err := checkSpace(space); err != nil {
		return err
	}
	b, err := t.space(space, false)
	if err != nil || b == nil {
		return err
	}
	return b.Delete(key)
}

// Scan calls fn for the keys of space from the first key >= from, in key
// order, until fn returns false or an error.
func (t *StateTx) Scan(space string, from []byte, fn func(k, v []byte) (bool, error)) error {
	if err := checkSpace(space); err != nil {
		return err
	}
	b, err := t.space(space, false)
	if err != nil || b == nil {
		return err
	}
	c := b.Cursor()
	for k, v := c.Seek(from); k != nil; k, v = c.Next() {
		more, err := fn(k, v)
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// Count returns the number of keys in space.
func (t *StateTx) Count(space string) (int, error) {
	if err := checkSpace(space); err != nil {
		return 0, err
	}
	b, err := t.space(space, false)
	if err != nil || b == nil {
		return 0, err
	}
	return b.Stats().KeyN, nil
}

// Progress returns what SetProgress last stored for event id, or nil.
func (t *StateTx) Progress(id string) ([]byte, error) {
	root, err := t.root()
	if err != nil || root == nil {
		return nil, err
	}
	if b := root.Bucket(bucketProgress); b != nil {
		return b.Get([]byte(id)), nil
	}
	return nil, nil
}

// SetProgress stores a transport's progress through event id's steps; the
// engine deletes it when the event is delivered or dead-lettered, so a
// retry of the same event reads it and a replay starts afresh.
func (t *StateTx) SetProgress(id string, v []byte) error {
	if !t.writable {
		return errStateReadOnly
	}
	root, err := t.root()
	if err != nil {
		return err
	}
	b, err := root.CreateBucketIfNotExists(bucketProgress)
	if err != nil {
		return err
	}
	return b.Put([]byte(id), v)
}

// clearProgress deletes event id's progress inside the engine's own write
// transaction (tb is the target's bucket).
func clearProgress(tb *bolt.Bucket, id string) error {
	st := tb.Bucket(bucketState)
	if st == nil {
		return nil
	}
	if b := st.Bucket(bucketProgress); b != nil {
		return b.Delete([]byte(id))
	}
	return nil
}

// ReadState returns target name's state inside tx, a read-only transaction
// on a database no dispatcher runs on (a stopped data dir or a backup, as
// the CLI reads them). Its Get, Scan and Count work; writes fail.
func ReadState(tx *bolt.Tx, name string) *StateTx { return &StateTx{tx: tx, name: name} }
