package outbox

import (
	"bytes"
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

var (
	bucketEvents  = []byte("outbox_events")
	bucketTargets = []byte("outbox_targets")

	keyCursor = []byte("cursor")
	keyPaused = []byte("paused")
	keyStats  = []byte("stats")
	subDone   = []byte("done")
	subRetry  = []byte("retry")
	subDead   = []byte("dead")
	subReplay = []byte("replay")
)

// Errors of the admin operations.
var (
	ErrNotFound      = errors.New("dead letter not found")
	ErrUnknownTarget = errors.New("unknown webhook target")
)

// Event is one change to deliver. The gateway fills Type, Resources, Data
// and Changes; Enqueue fills ID, Seq and OccurredAt.
type Event struct {
	ID         string          `json:"id"`
	Seq        uint64          `json:"sequence"`
	Type       string          `json:"type"`
	OccurredAt time.Time       `json:"occurred_at"`
	Resources  []string        `json:"resources,omitempty"` // ordering keys, e.g. "User/2819c223"
	Data       json.RawMessage `json:"data,omitempty"`
	Changes    json.RawMessage `json:"changes,omitempty"`
}

// Envelope returns the JSON body sent to webhooks:
// {"id","type","occurred_at","sequence","data","changes"}.
func (e Event) Envelope() []byte {
	var b bytes.Buffer
	b.Grow(96 + len(e.Data) + len(e.Changes))
	b.WriteString(`{"id":`)
	writeJSONString(&b, e.ID)
	b.WriteString(`,"type":`)
	writeJSONString(&b, e.Type)
	b.WriteString(`,"occurred_at":"`)
	b.WriteString(e.OccurredAt.UTC().Format("2006-01-02T15:04:05.000Z07:00"))
	fmt.Fprintf(&b, `","sequence":%d,"data":`, e.Seq)
	if len(e.Data) == 0 {
		b.WriteString("{}")
	} else {
		b.Write(e.Data)
	}
	if len(e.Changes) > 0 {
		b.WriteString(`,"changes":`)
		b.Write(e.Changes)
	}
	b.WriteByte('}')
	return b.Bytes()
}

func writeJSONString(b *bytes.Buffer, s string) {
	q, _ := json.Marshal(s)
	b.Write(q)
}

// record is an event as the log stores it.
type record struct {
	Event
	Body []byte `json:"body"` // the envelope, built once at Enqueue
}

// InitBuckets creates the outbox's buckets; called inside the app's
// start-up write transaction.
func InitBuckets(tx *bolt.Tx) error {
	for _, name := range [][]byte{bucketEvents, bucketTargets} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	return nil
}

var idEncoding = base32.NewEncoding("0123456789abcdefghjkmnpqrstvwxyz").WithPadding(base32.NoPadding)

// newEventID returns "evt_" and 26 characters of crypto randomness.
func newEventID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "evt_" + idEncoding.EncodeToString(b[:])
}

// Enqueue appends ev to the durable log inside the caller's write
// transaction — the same one as the state change, which is the point. It
// assigns ID, Seq and OccurredAt and returns the stored event. It does no
// I/O beyond the transaction and never blocks.
func Enqueue(tx *bolt.Tx, ev Event, now time.Time) (Event, error) {
	b := tx.Bucket(bucketEvents)
	if b == nil {
		return ev, errors.New("outbox: buckets not initialised")
	}
	seq, err := b.NextSequence()
	if err != nil {
		return ev, err
	}
	ev.Seq, ev.ID, ev.OccurredAt = seq, newEventID(), now.UTC()
	rec := record{Event: ev, Body: ev.Envelope()}
	v, err := json.Marshal(rec)
	if err != nil {
		return ev, fmt.Errorf("encode event: %w", err)
	}
	return ev, b.Put(be64(seq), v)
}

func be64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}

func fromBE64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

func decodeRecord(v []byte) (record, error) {
	var r record
	err := json.Unmarshal(v, &r)
	return r, err
}

// matches reports whether an event type matches a subscription pattern:
// an exact type, "user.*", or "*".
func matches(pattern, typ string) bool {
	if pattern == "*" || pattern == typ {
		return true
	}
	if prefix, ok := strings.CutSuffix(pattern, ".*"); ok {
		return strings.HasPrefix(typ, prefix+".")
	}
	return false
}
