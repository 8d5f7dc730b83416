package outbox

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Top-level buckets owned by the outbox. doc.go describes their contents.
var (
	bucketMeta    = []byte("outbox_meta")    // "schema" → "1"
	bucketEvents  = []byte("outbox_events")  // be64(seq) → JSON(storedEvent); the global FIFO log
	bucketTargets = []byte("outbox_targets") // target name → nested bucket of delivery state
)

// Keys and nested buckets inside each outbox_targets/<name> bucket.
var (
	keyCursor     = []byte("cursor")   // be64: highest log seq examined for admission
	keyPause      = []byte("pause")    // JSON(pauseState); absent when running
	keyStats      = []byte("stats")    // JSON(targetStats)
	keyDeadN      = []byte("dead_n")   // be64: number of keys in dead
	keyReplayN    = []byte("replay_n") // be64: number of keys in replay
	bucketPending = []byte("pending")  // be64(seq) → JSON(deliveryState)
	bucketReplay  = []byte("replay")   // be64(seq) → JSON(DeadLetter) staged for redelivery
	bucketDead    = []byte("dead")     // be64(seq) → JSON(DeadLetter)
	bucketDeadIDs = []byte("dead_ids") // event ID → be64(seq), index into dead
	bucketSpool   = []byte("spool")    // spool key → JSON(storedEvent with seq): snapshot events not yet finished

	keySpoolN          = []byte("spool_n")           // be64: spool keys handed out
	keyBackfill        = []byte("backfill")          // JSON(backfillRecord): the last backfill
	keyBackfillOnStart = []byte("backfill_on_start") // "pending" until backfill_on_start ran, then "done"
	keyHistory         = []byte("history")           // JSON(historyRecord) while a history replay runs
)

// Values of keyBackfillOnStart.
const (
	bosPending = "pending"
	bosDone    = "done"
)

var (
	keySchema     = []byte("schema")
	keyRestoreGap = []byte("restore_gap") // be64(old tail) be64(floor), one pair per restore, see RaiseSequence
	keyBoot       = []byte("boot")        // be64(epoch) boot id, see WriteBoot
	keyPruned     = []byte("pruned")      // be64: highest seq pruning deleted (the feed's watermark)
)

const schemaVersion = "1"

// errNoBuckets is returned when InitBuckets has not been run on the database.
var errNoBuckets = errors.New("outbox: buckets missing (InitBuckets not run)")

// InitBuckets creates the outbox's buckets if they do not exist and checks the
// schema version. Call it inside the application's start-up write transaction.
func InitBuckets(tx *bolt.Tx) error {
	meta, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return fmt.Errorf("outbox: create bucket %s: %w", bucketMeta, err)
	}
	switch v := meta.Get(keySchema); {
	case v == nil:
		if err := meta.Put(keySchema, []byte(schemaVersion)); err != nil {
			return fmt.Errorf("outbox: write schema version: %w", err)
		}
	case string(v) != schemaVersion:
		return fmt.Errorf("outbox: unsupported schema version %q (this build reads %q)", v, schemaVersion)
	}
	for _, name := range [][]byte{bucketEvents, bucketTargets} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("outbox: create bucket %s: %w", name, err)
		}
	}
	return nil
}

// Event is one change to deliver. The gateway fills Type, Resources, Data and
// Changes; Enqueue fills ID, Seq and OccurredAt.
type Event struct {
	// ID is random, unique and stable across retries. It is sent as the
	// webhook-id header so that receivers can deduplicate.
	ID string `json:"id"`
	// Seq is global and strictly increasing (the log bucket's NextSequence).
	Seq uint64 `json:"sequence"`
	// Type is e.g. "user.created" or "group.member_added".
	Type       string    `json:"type"`
	OccurredAt time.Time `json:"occurred_at"`
	// Resources are the ordering keys of the resources the event concerns,
	// e.g. ["User/2819c223"] or ["Group/g1", "User/u1"]. Per target, an event
	// is not sent before every earlier event sharing one of these keys has been
	// delivered or dead-lettered.
	Resources []string `json:"resources,omitempty"`
	// Data is the envelope's "data" object. It must be valid JSON.
	Data json.RawMessage `json:"data,omitempty"`
	// Changes is the envelope's "changes" object, or nil.
	Changes json.RawMessage `json:"changes,omitempty"`
	// Cause says why the event was made when it was not an identity
	// provider's write: "mapping" for a record mapped again after the
	// mapping changed. Empty (and left out of the envelope) otherwise.
	Cause string `json:"cause,omitempty"`

	// undecodable is set on the stand-in for a stored event whose value
	// does not decode (see salvageEvent): the dispatcher never sends it; it
	// dead-letters it with this reason.
	undecodable string
}

// storedEvent is the log encoding of an Event; the seq is the key. ID and type
// come first so that peekType can read the type without a full decode.
type storedEvent struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	At        int64           `json:"at"` // unix nanoseconds
	Resources []string        `json:"res,omitempty"`
	Data      json.RawMessage `json:"data,omitempty"`
	Changes   json.RawMessage `json:"changes,omitempty"`
	Cause     string          `json:"cause,omitempty"`
	// Seq is set in a target's spool only, where the key is not the seq.
	Seq uint64 `json:"seq,omitempty"`
}

// Enqueue appends ev to the durable log inside tx, the caller's write
// transaction that also carries the state change, so that the change and its
// event commit or roll back together. It assigns ID, Seq and OccurredAt (now)
// and returns the stored event. It does no I/O beyond tx and never blocks; wake
// the dispatcher with tx.OnCommit(d.Notify).
//
// Enqueue returns an error if ev.Type is empty, if Data or Changes is not valid
// JSON, or if InitBuckets has not been run.
func Enqueue(tx *bolt.Tx, ev Event, now time.Time) (Event, error) {
	if ev.Type == "" {
		return Event{}, errors.New("outbox: enqueue: event type required")
	}
	b := tx.Bucket(bucketEvents)
	if b == nil {
		return Event{}, errNoBuckets
	}
	seq, err := b.NextSequence()
	if err != nil {
		return Event{}, fmt.Errorf("outbox: enqueue %s: %w", ev.Type, err)
	}
	ev.Seq = seq
	ev.ID = newEventID()
	ev.OccurredAt = time.Unix(0, now.UnixNano()).UTC()
	v, err := encodeEvent(ev)
	if err != nil {
		return Event{}, fmt.Errorf("outbox: enqueue %s: %w", ev.Type, err)
	}
	if err := b.Put(be64(seq), v); err != nil {
		return Event{}, fmt.Errorf("outbox: enqueue %s: %w", ev.Type, err)
	}
	return ev, nil
}

// newEventID returns "evt_" and 26 lower-case base32 characters (128 bits)
// from crypto/rand.
func newEventID() string {
	return "evt_" + strings.ToLower(rand.Text())
}

func encodeEvent(ev Event) ([]byte, error) {
	// json.Marshal validates and compacts the raw messages.
	return json.Marshal(storedEvent{
		ID:        ev.ID,
		Type:      ev.Type,
		At:        ev.OccurredAt.UnixNano(),
		Resources: ev.Resources,
		Data:      ev.Data,
		Changes:   ev.Changes,
		Cause:     ev.Cause,
	})
}

// decodeEvent decodes a log value. The result shares no memory with v, so it
// may leave the transaction.
func decodeEvent(seq uint64, v []byte) (Event, error) {
	var s storedEvent
	if err := json.Unmarshal(v, &s); err != nil {
		return Event{}, fmt.Errorf("outbox: decode event %d: %w", seq, err)
	}
	return Event{
		ID:         s.ID,
		Seq:        seq,
		Type:       s.Type,
		OccurredAt: time.Unix(0, s.At).UTC(),
		Resources:  s.Resources,
		Data:       s.Data,
		Changes:    s.Changes,
		Cause:      s.Cause,
	}, nil
}

// salvageEvent stands in for a stored event (log seq, or spool key) whose
// value v does not decode, damaged on disk: the id and type when they can
// still be read (the type decides which targets it concerns), the time of
// the salvage, and the reason it is quarantined. One damaged value must not
// stop delivery: the dispatcher dead-letters the stand-in, unsent, and says
// so in the log and the target's status.
func salvageEvent(key uint64, v []byte, err error) Event {
	where := fmt.Sprintf("log sequence %d", key)
	id := fmt.Sprintf("evt_undecodable_%d", key)
	if isSpoolKey(key) {
		where = fmt.Sprintf("snapshot event %x", key)
		id = fmt.Sprintf("evt_undecodable_%x", key)
	}
	if got := peekID(v); got != "" {
		id = got
	}
	return Event{ID: id, Seq: key, Type: peekType(v), OccurredAt: time.Now().UTC(),
		undecodable: fmt.Sprintf("quarantined, not sent: the stored event (%s) does not decode (%v); the database file is damaged: restore it from a backup, or discard this dead letter", where, err)}
}

// peekID returns the id of an encoded event when it can be read without
// decoding (it comes first), "" otherwise.
func peekID(v []byte) string {
	if rest, ok := bytes.CutPrefix(v, []byte(`{"id":"`)); ok {
		if i := bytes.IndexByte(rest, '"'); i > 0 && plainASCII(rest[:i]) {
			return string(rest[:i])
		}
	}
	return ""
}

// peekType returns the type of an encoded event without decoding all of it.
// It relies on the field order of storedEvent and falls back to a full decode.
func peekType(v []byte) string {
	idKey, typeKey := []byte(`{"id":"`), []byte(`","type":"`)
	if rest, ok := bytes.CutPrefix(v, idKey); ok {
		if i := bytes.IndexByte(rest, '"'); i >= 0 && bytes.HasPrefix(rest[i:], typeKey) {
			rest = rest[i+len(typeKey):]
			if j := bytes.IndexByte(rest, '"'); j >= 0 && plainASCII(rest[:j]) {
				return string(rest[:j])
			}
		}
	}
	var t struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(v, &t)
	return t.Type
}

// plainASCII reports whether b holds only printable ASCII other than the
// backslash: bytes a JSON decode returns as they are. Anything else (escapes,
// control characters, invalid UTF-8, which a decode replaces) takes the full
// decode.
func plainASCII(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c >= 0x7f || c == '\\' {
			return false
		}
	}
	return true
}

// envelopeTime is RFC 3339 in UTC with milliseconds.
const envelopeTime = "2006-01-02T15:04:05.000Z07:00"

// Envelope returns the JSON body sent to webhooks:
//
//	{"id":…,"type":…,"occurred_at":…,"sequence":…,"data":…,"changes":…,"cause":…}
//
// occurred_at is RFC 3339 in UTC with milliseconds; "changes" is omitted when
// nil, "cause" when empty, and "data" is null when nil. Data and Changes are copied as they are, so
// they must be valid JSON (Enqueue checks this).
func (e Event) Envelope() []byte {
	b := make([]byte, 0, 128+len(e.ID)+len(e.Type)+len(e.Data)+len(e.Changes))
	b = append(b, `{"id":`...)
	b = appendJSONString(b, e.ID)
	b = append(b, `,"type":`...)
	b = appendJSONString(b, e.Type)
	b = append(b, `,"occurred_at":"`...)
	b = e.OccurredAt.UTC().AppendFormat(b, envelopeTime)
	b = append(b, `","sequence":`...)
	b = strconv.AppendUint(b, e.Seq, 10)
	b = append(b, `,"data":`...)
	if len(e.Data) == 0 {
		b = append(b, "null"...)
	} else {
		b = append(b, e.Data...)
	}
	if len(e.Changes) > 0 {
		b = append(b, `,"changes":`...)
		b = append(b, e.Changes...)
	}
	if e.Cause != "" {
		b = append(b, `,"cause":`...)
		b = appendJSONString(b, e.Cause)
	}
	return append(b, '}')
}

func appendJSONString(b []byte, s string) []byte {
	q, _ := json.Marshal(s) // a string always marshals
	return append(b, q...)
}

// be64 returns the 8-byte big-endian form of v, so keys sort by number.
func be64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

// fromBE64 is the inverse of be64; it returns 0 for a key of the wrong length.
func fromBE64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

// RaiseSequence makes every sequence number issued after tx commits greater
// than floor: it moves the log's sequence up to floor when it is below. It
// is how sequences stay monotonic across a restore of an older backup (the
// caller keeps an epoch beside the database and folds it into floor).
// When it raises the sequence, it records the gap (the old tail, floor) in
// the outbox meta bucket so that a consumer holding a cursor inside it can
// be told to reload (RestoreGap). It reports whether it raised.
func RaiseSequence(tx *bolt.Tx, floor uint64) (bool, error) {
	b := tx.Bucket(bucketEvents)
	meta := tx.Bucket(bucketMeta)
	if b == nil || meta == nil {
		return false, errNoBuckets
	}
	cur := b.Sequence()
	if cur >= floor {
		return false, nil
	}
	if err := b.SetSequence(floor); err != nil {
		return false, fmt.Errorf("outbox: raise sequence: %w", err)
	}
	// Every gap is kept, appended to those before: a cursor from any
	// database a restore discarded is refused.
	old := meta.Get(keyRestoreGap)
	gap := make([]byte, len(old)-len(old)%16, len(old)+16)
	copy(gap, old)
	gap = binary.BigEndian.AppendUint64(gap, cur)
	gap = binary.BigEndian.AppendUint64(gap, floor)
	if err := meta.Put(keyRestoreGap, gap); err != nil {
		return false, fmt.Errorf("outbox: raise sequence: %w", err)
	}
	return true, nil
}

// RestoreGap returns the last gap RaiseSequence recorded: sequences in
// (from, to] were issued by the database before it was replaced by an older
// backup, or never. ok is false when no restore raised the sequence.
func RestoreGap(tx *bolt.Tx) (from, to uint64, ok bool) {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		return 0, 0, false
	}
	v := meta.Get(keyRestoreGap)
	if len(v) < 16 {
		return 0, 0, false
	}
	v = v[len(v)-len(v)%16-16:]
	return binary.BigEndian.Uint64(v[:8]), binary.BigEndian.Uint64(v[8:16]), true
}

// RestoreGaps returns every gap RaiseSequence recorded, oldest first, each
// as RestoreGap's (from, to].
func RestoreGaps(tx *bolt.Tx) [][2]uint64 {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		return nil
	}
	var gaps [][2]uint64
	for v := meta.Get(keyRestoreGap); len(v) >= 16; v = v[16:] {
		gaps = append(gaps, [2]uint64{binary.BigEndian.Uint64(v[:8]), binary.BigEndian.Uint64(v[8:16])})
	}
	return gaps
}

// Tail returns the highest sequence in the log (0 when empty): the sequence
// a snapshot read in tx is consistent with.
func Tail(tx *bolt.Tx) uint64 { return logTail(tx) }

// ReadBoot returns the epoch and boot id the application last recorded in
// the database with WriteBoot (0 and "" when never).
func ReadBoot(tx *bolt.Tx) (epoch uint64, boot string) {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		return 0, ""
	}
	v := meta.Get(keyBoot)
	if len(v) < 8 {
		return 0, ""
	}
	return binary.BigEndian.Uint64(v[:8]), string(v[8:])
}

// WriteBoot records the application's epoch and boot id in the database.
// The application keeps the same pair in a file beside the database; a
// database whose pair differs from the file's was put in place from a
// backup, so the application raises its epoch (see RaiseSequence).
func WriteBoot(tx *bolt.Tx, epoch uint64, boot string) error {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		return errNoBuckets
	}
	v := make([]byte, 8, 8+len(boot))
	binary.BigEndian.PutUint64(v, epoch)
	return meta.Put(keyBoot, append(v, boot...))
}
