package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scimgate/scimgate/gateway/scim"
	"github.com/scimgate/scimgate/internal/dbtest"
	"github.com/scimgate/scimgate/mapping"
	"github.com/scimgate/scimgate/outbox"
)

// openDB opens a bolt file at path with the store's and the outbox's
// buckets; it is checked for consistency and closed when the test ends.
func openDB(t testing.TB, path string) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	dbtest.CloseWhenDone(t, db)
	err = db.Update(func(tx *bolt.Tx) error {
		if err := InitBuckets(tx); err != nil {
			return err
		}
		return outbox.InitBuckets(tx)
	})
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// testStore is a Store over a fresh bolt file, with the default mapping.
type testStore struct {
	*Store
	t   testing.TB
	db  *bolt.DB
	log *logBuffer
}

func newTestStore(t testing.TB, opts ...func(*Options)) *testStore {
	t.Helper()
	return newTestStoreAt(t, filepath.Join(t.TempDir(), "scimgate.db"), mapping.DefaultRules(), opts...)
}

func newTestStoreAt(t testing.TB, path string, rules mapping.Rules, opts ...func(*Options)) *testStore {
	t.Helper()
	db := openDB(t, path)
	mapper, err := mapping.Compile(rules)
	if err != nil {
		t.Fatal(err)
	}
	lb := &logBuffer{}
	o := Options{Logger: slog.New(slog.NewJSONHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	for _, f := range opts {
		f(&o)
	}
	s := New(db, mapper, o)
	t.Cleanup(s.Close)
	return &testStore{Store: s, t: t, db: db, log: lb}
}

// logBuffer is a goroutine-safe log sink.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// doc decodes a JSON document as the gateway does (UseNumber).
func doc(t testing.TB, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := decodeJSON([]byte(s), &m); err != nil {
		t.Fatalf("test document %s: %v", s, err)
	}
	return m
}

func (ts *testStore) createUser(body string) string {
	ts.t.Helper()
	r, err := ts.CreateUser(doc(ts.t, body))
	if err != nil {
		ts.t.Fatalf("CreateUser(%s): %v", body, err)
	}
	return r.ID
}

func (ts *testStore) createGroup(body string) string {
	ts.t.Helper()
	r, err := ts.CreateGroup(doc(ts.t, body))
	if err != nil {
		ts.t.Fatalf("CreateGroup(%s): %v", body, err)
	}
	return r.ID
}

// wantSCIMError fails unless err is a *scim.Error with that status and
// scimType (and, when given, a detail containing each fragment).
func wantSCIMError(t testing.TB, what string, err error, status int, scimType string, detail ...string) *scim.Error {
	t.Helper()
	var se *scim.Error
	if !errors.As(err, &se) {
		t.Fatalf("%s: err = %v, want a SCIM %d %s", what, err, status, scimType)
	}
	if se.Status != status || se.ScimType != scimType {
		t.Fatalf("%s: got %d %q (%s), want %d %q", what, se.Status, se.ScimType, se.Detail, status, scimType)
	}
	for _, d := range detail {
		if !strings.Contains(se.Detail, d) {
			t.Errorf("%s: detail %q does not say %q", what, se.Detail, d)
		}
	}
	return se
}

// loggedEvent is an event as the outbox stored it (its log encoding; the
// outbox has no exported reader of its log, and this test must see every
// event the store enqueued, in order).
type loggedEvent struct {
	Seq       uint64
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	Resources []string        `json:"res"`
	Data      json.RawMessage `json:"data"`
	Changes   json.RawMessage `json:"changes"`
	Cause     string          `json:"cause"`
}

// events returns the outbox log after seq.
func (ts *testStore) events(after uint64) []loggedEvent {
	ts.t.Helper()
	var out []loggedEvent
	err := ts.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket([]byte("outbox_events")).Cursor()
		for k, v := c.Seek(be64(after + 1)); k != nil; k, v = c.Next() {
			var e loggedEvent
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			e.Seq = fromBE64(k)
			out = append(out, e)
		}
		return nil
	})
	if err != nil {
		ts.t.Fatal(err)
	}
	return out
}

func (ts *testStore) tail() uint64 {
	ts.t.Helper()
	var seq uint64
	_ = ts.db.View(func(tx *bolt.Tx) error { seq = outbox.Tail(tx); return nil })
	return seq
}

// field decodes one dotted path of an event's data ("user.version").
func field(t testing.TB, data json.RawMessage, path string) any {
	t.Helper()
	var m map[string]any
	if err := decodeJSON(data, &m); err != nil {
		t.Fatalf("event data %s: %v", data, err)
	}
	var v any = m
	for _, key := range strings.Split(path, ".") {
		obj, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = obj[key]
	}
	return v
}

func types(evs []loggedEvent) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Type)
	}
	return out
}

// ids returns the ids of resources, in order.
func ids(rs []*Resource) []string {
	out := []string{}
	for _, r := range rs {
		out = append(out, r.ID)
	}
	return out
}

func sameStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
