package outbox

import (
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// deliveryState is the per-target state of a pending event (outbox_targets/
// <name>/pending). A fresh admission stores "{}".
type deliveryState struct {
	Attempts       int       `json:"attempts,omitempty"`
	NextAttemptAt  time.Time `json:"next,omitzero"`
	FirstAttemptAt time.Time `json:"first,omitzero"` // start of the max_age budget; reset by Replay
	LastAttemptAt  time.Time `json:"last,omitzero"`
	LastStatus     int       `json:"status,omitempty"`
	LastError      string    `json:"error,omitempty"`
}

var freshState = []byte("{}")

// putPending records keys as pending in a target's bucket b, each with a
// fresh delivery state.
func putPending(b *bolt.Bucket, keys []uint64) error {
	p := b.Bucket(bucketPending)
	for _, k := range keys {
		if err := p.Put(be64(k), freshState); err != nil {
			return err
		}
	}
	return nil
}

// pauseState is stored under keyPause while a target is paused.
type pauseState struct {
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// targetStats is stored under keyStats and rewritten with each batch of
// outcomes.
type targetStats struct {
	Delivered   uint64    `json:"delivered"`
	LastSuccess time.Time `json:"last_success,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	LastStatus  int       `json:"last_status,omitempty"`
	Quarantined uint64    `json:"quarantined,omitempty"` // undecodable events dead-lettered unsent
}

// targetBucket returns the state bucket of a target, or nil if the target has
// never been set up.
func targetBucket(tx *bolt.Tx, name string) *bolt.Bucket {
	tb := tx.Bucket(bucketTargets)
	if tb == nil {
		return nil
	}
	return tb.Bucket([]byte(name))
}

// ensureTarget returns the state bucket of a target, creating it with its
// cursor at initCursor if needed: a new target starts with the events that
// follow initCursor. A target created with backfill_on_start gets the marker
// that makes Run send it a snapshot, once.
func (d *Dispatcher) ensureTarget(tx *bolt.Tx, tc Target, initCursor uint64) (*bolt.Bucket, error) {
	root, err := tx.CreateBucketIfNotExists(bucketTargets)
	if err != nil {
		return nil, err
	}
	name := tc.Name
	if b := root.Bucket([]byte(name)); b != nil {
		if _, err := b.CreateBucketIfNotExists(bucketSpool); err != nil { // a bucket from release 1
			return nil, err
		}
		return b, nil
	}
	b, err := root.CreateBucket([]byte(name))
	if err != nil {
		return nil, fmt.Errorf("create target bucket %s: %w", name, err)
	}
	for _, sub := range [][]byte{bucketPending, bucketReplay, bucketDead, bucketDeadIDs, bucketSpool} {
		if _, err := b.CreateBucket(sub); err != nil {
			return nil, fmt.Errorf("create target bucket %s/%s: %w", name, sub, err)
		}
	}
	if err := b.Put(keyCursor, be64(initCursor)); err != nil {
		return nil, err
	}
	if tc.BackfillOnStart {
		if err := b.Put(keyBackfillOnStart, []byte(bosPending)); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// ensureNamed is ensureTarget for a configured target's name.
func (d *Dispatcher) ensureNamed(tx *bolt.Tx, name string) (*bolt.Bucket, error) {
	t, err := d.lookup(name)
	if err != nil {
		return nil, err
	}
	return d.ensureTarget(tx, t.cfg, d.initTail)
}

// Spool keys. A snapshot event is not in the log, so it has no log seq of
// its own: it is keyed in the target's spool, pending, dead and replay
// buckets by spoolBit | n, n from the target's spool_n counter. Every log seq
// is below spoolBit, so the two never collide, and a target's lane orders a
// snapshot event after every log event it holds.
const spoolBit = uint64(1) << 63

func isSpoolKey(k uint64) bool { return k&spoolBit != 0 }

// pendingEvent returns the event of a pending key: from the log, or from the
// target's spool for a snapshot event. ok is false if it is missing. A value
// that does not decode gives its stand-in (salvageEvent), not an error.
func pendingEvent(events, spool *bolt.Bucket, key uint64) (Event, bool, error) {
	if isSpoolKey(key) {
		if spool == nil {
			return Event{}, false, nil
		}
		v := spool.Get(be64(key))
		if v == nil {
			return Event{}, false, nil
		}
		ev, err := decodeSpool(key, v)
		if err != nil {
			return salvageEvent(key, v, err), true, nil
		}
		return ev, true, nil
	}
	v := events.Get(be64(key))
	if v == nil {
		return Event{}, false, nil
	}
	ev, err := decodeEvent(key, v)
	if err != nil {
		return salvageEvent(key, v, err), true, nil
	}
	return ev, true, nil
}

// deleteSpooled deletes a finished snapshot event from the target's spool.
func deleteSpooled(b *bolt.Bucket, key uint64) error {
	if !isSpoolKey(key) {
		return nil
	}
	if sp := b.Bucket(bucketSpool); sp != nil {
		return sp.Delete(be64(key))
	}
	return nil
}

// raisePruned advances the "pruned through" watermark: every log entry with
// a seq up to it may have been deleted, none after it.
func raisePruned(tx *bolt.Tx, through uint64) error {
	meta := tx.Bucket(bucketMeta)
	if through <= getU64(meta, keyPruned) {
		return nil
	}
	return meta.Put(keyPruned, be64(through))
}

// logTail returns the highest seq in the log, 0 if it is empty.
func logTail(tx *bolt.Tx) uint64 {
	b := tx.Bucket(bucketEvents)
	if b == nil {
		return 0
	}
	k, _ := b.Cursor().Last()
	return fromBE64(k)
}

func getU64(b *bolt.Bucket, key []byte) uint64 { return fromBE64(b.Get(key)) }

// addU64 adds delta to a counter key, never going below zero.
func addU64(b *bolt.Bucket, key []byte, delta int) error {
	v := int64(getU64(b, key)) + int64(delta)
	return b.Put(key, be64(uint64(max(v, 0))))
}

func getJSON(b *bolt.Bucket, key []byte, v any) (bool, error) {
	raw := b.Get(key)
	if raw == nil {
		return false, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return true, fmt.Errorf("decode %s: %w", key, err)
	}
	return true, nil
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, raw)
}
