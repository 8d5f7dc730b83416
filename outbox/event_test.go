package outbox

import (
	"encoding/json"
	"errors"
	"regexp"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestEnqueue(t *testing.T) {
	db := mustOpenDB(t)
	now := time.Date(2025, 3, 1, 12, 30, 45, 123456789, time.FixedZone("CET", 3600))
	var got []Event
	err := db.Update(func(tx *bolt.Tx) error {
		for _, ev := range []Event{userEvent("user.created", "u1"), memberEvent("group.member_added", "g1", "u1")} {
			stored, err := Enqueue(tx, ev, now)
			if err != nil {
				return err
			}
			got = append(got, stored)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	idRe := regexp.MustCompile(`^evt_[a-z2-7]{26}$`)
	for i, ev := range got {
		if !idRe.MatchString(ev.ID) {
			t.Errorf("ID = %q, want evt_ + 26 base32", ev.ID)
		}
		if ev.Seq != uint64(i+1) {
			t.Errorf("Seq = %d, want %d", ev.Seq, i+1)
		}
		if !ev.OccurredAt.Equal(now) || ev.OccurredAt.Location() != time.UTC {
			t.Errorf("OccurredAt = %v, want %v in UTC", ev.OccurredAt, now)
		}
	}
	if got[0].ID == got[1].ID {
		t.Error("IDs are not unique")
	}
	// The stored event decodes to what Enqueue returned.
	err = db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketEvents).Get(be64(2))
		ev, err := decodeEvent(2, v)
		if err != nil {
			return err
		}
		if ev.ID != got[1].ID || ev.Type != "group.member_added" || len(ev.Resources) != 2 || !ev.OccurredAt.Equal(now) {
			t.Errorf("stored %+v, want %+v", ev, got[1])
		}
		if typ := peekType(v); typ != "group.member_added" {
			t.Errorf("peekType = %q", typ)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestEnqueueRollback(t *testing.T) {
	db := mustOpenDB(t)
	errAbort := errors.New("abort")
	err := db.Update(func(tx *bolt.Tx) error {
		if _, err := Enqueue(tx, userEvent("user.created", "u1"), time.Now()); err != nil {
			return err
		}
		return errAbort // the state change failed: its event must vanish too
	})
	if !errors.Is(err, errAbort) {
		t.Fatal(err)
	}
	_ = db.View(func(tx *bolt.Tx) error {
		if n := tx.Bucket(bucketEvents).Stats().KeyN; n != 0 {
			t.Errorf("log has %d events after rollback, want 0", n)
		}
		return nil
	})
}

func TestEnqueueInvalid(t *testing.T) {
	db := mustOpenDB(t)
	for name, ev := range map[string]Event{
		"noType":     {Data: json.RawMessage(`{}`)},
		"badData":    {Type: "user.created", Data: json.RawMessage(`{"a":`)},
		"badChanges": {Type: "user.updated", Data: json.RawMessage(`{}`), Changes: json.RawMessage(`nope`)},
	} {
		err := db.Update(func(tx *bolt.Tx) error { _, err := Enqueue(tx, ev, time.Now()); return err })
		if err == nil {
			t.Errorf("%s: Enqueue succeeded, want error", name)
		}
	}
	fresh, err := bolt.Open(t.TempDir()+"/x.db", 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	err = fresh.Update(func(tx *bolt.Tx) error { _, err := Enqueue(tx, userEvent("user.created", "u"), time.Now()); return err })
	if !errors.Is(err, errNoBuckets) {
		t.Errorf("Enqueue without InitBuckets = %v, want errNoBuckets", err)
	}
}

// peekType's shortcut returns only bytes a decode would return as they are;
// invalid UTF-8 and control characters, which a decode replaces or refuses,
// take the full decode (a CI fuzz run found the invalid UTF-8 case).
func TestPeekTypeAgreesWithDecode(t *testing.T) {
	for _, v := range []string{
		"{\"id\":\"\",\"type\":\"\x93\"}",
		"{\"id\":\"e\",\"type\":\"user.\xff\xfecreated\",\"at\":1}",
		"{\"id\":\"e\",\"type\":\"a\tb\"}",
		`{"id":"e","type":"gr\u00fcn"}`,
		`{"id":"e","type":"grün"}`,
	} {
		var s struct {
			Type string `json:"type"`
		}
		_ = json.Unmarshal([]byte(v), &s)
		if got := peekType([]byte(v)); got != s.Type {
			t.Errorf("peekType(%q) = %q, a decode says %q", v, got, s.Type)
		}
	}
}

func TestEnvelope(t *testing.T) {
	ev := Event{
		ID: "evt_abc", Seq: 42, Type: "user.updated",
		OccurredAt: time.Date(2025, 3, 1, 13, 30, 45, 123456789, time.FixedZone("CET", 3600)),
		Resources:  []string{"User/u1"},
		Data:       json.RawMessage(`{"user":{"id":"u1","version":3}}`),
		Changes:    json.RawMessage(`{"email":{"old":"a@x","new":"b@x"}}`),
	}
	want := `{"id":"evt_abc","type":"user.updated","occurred_at":"2025-03-01T12:30:45.123Z","sequence":42,` +
		`"data":{"user":{"id":"u1","version":3}},"changes":{"email":{"old":"a@x","new":"b@x"}}}`
	if got := string(ev.Envelope()); got != want {
		t.Errorf("Envelope =\n%s\nwant\n%s", got, want)
	}
	ev.Cause = "mapping"
	if got, want := string(ev.Envelope()), want[:len(want)-1]+`,"cause":"mapping"}`; got != want {
		t.Errorf("Envelope with a cause =\n%s\nwant\n%s", got, want)
	}
	// The cause survives the log and the spool.
	enc, err := encodeEvent(ev)
	if err != nil {
		t.Fatal(err)
	}
	if back, err := decodeEvent(ev.Seq, enc); err != nil || back.Cause != "mapping" {
		t.Errorf("decodeEvent: cause %q, err %v; want mapping", back.Cause, err)
	}
	if sp, err := encodeSpool(ev); err != nil {
		t.Fatal(err)
	} else if back, err := decodeSpool(1, sp); err != nil || back.Cause != "mapping" {
		t.Errorf("decodeSpool: cause %q, err %v; want mapping", back.Cause, err)
	}
	ev.Cause = ""
	ev.Changes = nil
	var m map[string]any
	if err := json.Unmarshal(ev.Envelope(), &m); err != nil {
		t.Fatal(err)
	}
	if _, ok := m["changes"]; ok {
		t.Error(`"changes" present although nil`)
	}
	if _, ok := m["resources"]; ok {
		t.Error(`"resources" is internal and must not be in the envelope`)
	}
}

func TestRaiseSequence(t *testing.T) {
	db := mustOpenDB(t)
	var first Event
	err := db.Update(func(tx *bolt.Tx) error {
		var err error
		first, err = Enqueue(tx, Event{Type: "user.created"}, time.Now())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	const floor = 1 << 40
	var raised, again bool
	var next Event
	err = db.Update(func(tx *bolt.Tx) error {
		var err error
		if raised, err = RaiseSequence(tx, floor); err != nil {
			return err
		}
		if again, err = RaiseSequence(tx, floor); err != nil {
			return err
		}
		next, err = Enqueue(tx, Event{Type: "user.updated"}, time.Now())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if !raised || again {
		t.Errorf("raised = %v then %v, want true then false", raised, again)
	}
	if next.Seq != floor+1 {
		t.Errorf("next seq = %d, want %d", next.Seq, floor+1)
	}
	_ = db.View(func(tx *bolt.Tx) error {
		from, to, ok := RestoreGap(tx)
		if !ok || from != first.Seq || to != floor {
			t.Errorf("RestoreGap = %d, %d, %v; want %d, %d, true", from, to, ok, first.Seq, floor)
		}
		if got := Tail(tx); got != next.Seq {
			t.Errorf("Tail = %d, want %d", got, next.Seq)
		}
		return nil
	})
}

func TestBoot(t *testing.T) {
	db := mustOpenDB(t)
	_ = db.View(func(tx *bolt.Tx) error {
		if e, b := ReadBoot(tx); e != 0 || b != "" {
			t.Errorf("ReadBoot on a new database = %d, %q", e, b)
		}
		return nil
	})
	if err := db.Update(func(tx *bolt.Tx) error { return WriteBoot(tx, 3, "b00t") }); err != nil {
		t.Fatal(err)
	}
	_ = db.View(func(tx *bolt.Tx) error {
		if e, b := ReadBoot(tx); e != 3 || b != "b00t" {
			t.Errorf("ReadBoot = %d, %q; want 3, b00t", e, b)
		}
		return nil
	})
}
