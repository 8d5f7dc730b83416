package outbox

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

// peekType reads the type of any stored value without panicking, and agrees
// with a full decode whenever the value is one the log encoder writes: both
// for arbitrary bytes that happen to be such a value and for values encoded
// from any id and type (escapes, control characters, invalid UTF-8).
func FuzzPeekType(f *testing.F) {
	f.Add([]byte(`{"id":"evt_1","type":"user.created","at":1}`), "evt_1", "user.created")
	f.Add([]byte(`{"id":"evt_\"1","type":"user.created"}`), "evt_\"1", "user.created")
	f.Add([]byte(`{"type":"x"}`), "", "x")
	f.Add([]byte(`{"id":"a","type":"b\u0022c"}`), "a", "b\"c")
	f.Add([]byte(`{"id":"","type":"a","type":"b"}`), "", "<\x93>")
	f.Add([]byte(``), "\\", "\x00")
	f.Fuzz(func(t *testing.T, v []byte, id, typ string) {
		got := peekType(v)
		var s storedEvent
		if json.Unmarshal(v, &s) == nil {
			if again, err := json.Marshal(s); err == nil && bytes.Equal(again, v) && got != s.Type {
				t.Errorf("peekType(%q) = %q, a decode says %q", v, got, s.Type)
			}
		}
		enc, err := encodeEvent(Event{ID: id, Type: typ, OccurredAt: time.Unix(0, 1)})
		if err != nil {
			t.Fatalf("encodeEvent(%q, %q): %v", id, typ, err)
		}
		ev, err := decodeEvent(1, enc)
		if err != nil {
			t.Fatalf("decodeEvent(%q): %v", enc, err)
		}
		if got := peekType(enc); got != ev.Type {
			t.Errorf("peekType(%q) = %q, a decode says %q", enc, got, ev.Type)
		}
	})
}

// Feed queries from an app: any types and numbers give events or a clear
// error (a bad pattern, a cursor gone), never a panic or another error.
func FuzzFeedQuery(f *testing.F) {
	db := mustOpenDB(f)
	feed := NewFeed(db, FeedConfig{MaxScan: 50})
	enqueueFeed(f, db, nil, feed, userEvent("user.created", "u1"), memberEvent("group.member_added", "g", "u1"))
	f.Add(uint64(0), 10, "user.*")
	f.Add(uint64(1), 0, "*,group.member_added")
	f.Add(uint64(99), -5, "user.")
	f.Add(^uint64(0), 2000, "")
	f.Fuzz(func(t *testing.T, after uint64, limit int, types string) {
		var ts []string
		if types != "" {
			ts = strings.Split(types, ",")
		}
		page, err := feed.Read(t.Context(), FeedQuery{After: after, Limit: limit, Types: ts})
		switch {
		case err == nil:
			if len(page.Events) > 1000 || page.Next < after {
				t.Errorf("Read(%d, %d, %q) = %d events, next %d", after, limit, types, len(page.Events), page.Next)
			}
		case errors.Is(err, ErrInvalidArgument), errors.Is(err, ErrCursorGone):
		default:
			t.Errorf("Read(%d, %d, %q): %v", after, limit, types, err)
		}
	})
}

// BenchmarkFeedRead measures feed throughput: pages of 1,000 envelopes read
// from a log of b.N events.
//
//	go test -run '^$' -bench FeedRead -benchtime 100000x ./outbox/
func BenchmarkFeedRead(b *testing.B) {
	db := mustOpenDB(b)
	preload(b, db, b.N)
	feed := NewFeed(db, FeedConfig{})
	b.ResetTimer()
	start := time.Now()
	var after uint64
	n := 0
	for n < b.N {
		page, err := feed.Read(b.Context(), FeedQuery{After: after, Limit: 1000})
		if err != nil {
			b.Fatal(err)
		}
		n += len(page.Events)
		after = page.Next
	}
	b.ReportMetric(float64(n)/time.Since(start).Seconds(), "events/s")
}
