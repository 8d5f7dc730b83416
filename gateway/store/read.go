package store

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scimgate/scimgate/outbox"
)

// The app's read API: the directory as the canonical records
// events carry, paged in O(page) with opaque cursors that stay valid across
// inserts and deletes.

// ErrInvalidQuery is wrapped by the read API's errors about its input (a
// malformed cursor, a cursor of another listing, an option that does not
// apply); the message says what to fix. The gateway answers 400.
var ErrInvalidQuery = errors.New("invalid query")

// DefaultRecordLimit and MaxRecordLimit bound a read API page: a Limit of
// 0 or less means DefaultRecordLimit, more than MaxRecordLimit means
// MaxRecordLimit.
const (
	DefaultRecordLimit = 100
	MaxRecordLimit     = 1000
)

// examineFactor bounds the records a filtered page examines: Limit times
// this (at least minExamine). A page that reaches it returns what it has
// found, possibly nothing, with a NextCursor to go on from.
const (
	examineFactor = 10
	minExamine    = 1000
)

// RecordQuery selects a page of UserRecords or GroupRecords.
type RecordQuery struct {
	Cursor string // NextCursor of the previous page; "" for the first
	Limit  int    // records per page (see DefaultRecordLimit)
	// Active keeps users whose SCIM active is this value (users only; an
	// ErrInvalidQuery for groups).
	Active *bool
	// UpdatedSince keeps resources last modified at or after it.
	UpdatedSince time.Time
}

// RecordPage is a page of canonical records, each exactly as data.user or
// data.group of events (the mapped fields with id and version).
type RecordPage struct {
	Records []json.RawMessage
	// NextCursor continues the listing; "" on the last page. A filtered
	// page may hold fewer than Limit records (even none) and still have
	// one.
	NextCursor string
	// Sequence is the outbox tail when the page was read: every event up
	// to it is reflected in the page.
	Sequence uint64
}

// MemberPage is a page of a group's members.
type MemberPage struct {
	Members    []Member
	NextCursor string // "" on the last page
	Sequence   uint64 // as in RecordPage
}

// Member is one member of a group: its id, "User" or "Group", and its
// canonical record (data.user, or data.member_group, of member events).
type Member struct {
	ID     string          `json:"id"`
	Type   string          `json:"type"`
	Record json.RawMessage `json:"record"`
}

// Cursor kinds: a cursor of one listing is refused by another.
const (
	cursorUsers      = 'u'
	cursorGroups     = 'g'
	cursorMembers    = 'm'
	cursorUserGroups = 'o'
)

// encodeCursor is the opaque form of a position: a version byte, the
// listing's kind and the position (a creation sequence or the last id).
func encodeCursor(kind byte, pos []byte) string {
	return base64.RawURLEncoding.EncodeToString(append([]byte{1, kind}, pos...))
}

func decodeCursor(kind byte, c string) ([]byte, error) {
	if c == "" {
		return nil, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) < 3 || b[0] != 1 {
		return nil, fmt.Errorf("%w: the cursor is malformed; pass next_cursor exactly as a previous page returned it, or none to start over", ErrInvalidQuery)
	}
	if b[1] != kind {
		return nil, fmt.Errorf("%w: the cursor belongs to another listing; pass the next_cursor this listing returned", ErrInvalidQuery)
	}
	return b[2:], nil
}

func clampLimit(n int) int {
	switch {
	case n <= 0:
		return DefaultRecordLimit
	case n > MaxRecordLimit:
		return MaxRecordLimit
	}
	return n
}

// head is the part of a stored record the read API needs; decoding it
// skips the documents.
type head struct {
	Modified time.Time       `json:"modified"`
	Data     json.RawMessage `json:"data"`
	Doc      struct {
		Active any `json:"active"`
	} `json:"doc"`
}

func readHead(k *kind, id string, v []byte) (head, error) {
	var h head
	if err := json.Unmarshal(v, &h); err != nil {
		return h, fmt.Errorf("decode %s %s: %w", k.event, id, err)
	}
	if len(h.Data) == 0 { // written before records carried their data
		r, err := k.getRaw(id, v)
		if err != nil {
			return h, err
		}
		h.Data = eventData(r)
	}
	return h, nil
}

func (k *kind) getRaw(id string, v []byte) (*record, error) {
	var r record
	if err := decodeJSON(v, &r); err != nil {
		return nil, fmt.Errorf("decode %s %s: %w", k.event, id, err)
	}
	return &r, nil
}

// UserRecords returns a page of users' canonical records in creation
// order. Paging costs O(Limit) at any depth; with Active or UpdatedSince a
// page examines at most 10×Limit (at least 1,000) records.
func (s *Store) UserRecords(q RecordQuery) (RecordPage, error) {
	return s.records(s.users, cursorUsers, q)
}

// GroupRecords is UserRecords for groups (Active does not apply).
func (s *Store) GroupRecords(q RecordQuery) (RecordPage, error) {
	if q.Active != nil {
		return RecordPage{}, fmt.Errorf("%w: active applies to users only", ErrInvalidQuery)
	}
	return s.records(s.groups, cursorGroups, q)
}

func (s *Store) records(k *kind, ck byte, q RecordQuery) (RecordPage, error) {
	pos, err := decodeCursor(ck, q.Cursor)
	if err != nil {
		return RecordPage{}, err
	}
	if pos != nil && len(pos) != 8 {
		return RecordPage{}, fmt.Errorf("%w: the cursor is malformed; pass next_cursor exactly as a previous page returned it", ErrInvalidQuery)
	}
	limit := clampLimit(q.Limit)
	filtered := q.Active != nil || !q.UpdatedSince.IsZero()
	examine := max(minExamine, examineFactor*limit)
	page := RecordPage{Records: []json.RawMessage{}}
	err = s.view(func(tx *bolt.Tx) error {
		page.Sequence = outbox.Tail(tx)
		data := tx.Bucket(k.data)
		c := tx.Bucket(k.order).Cursor()
		key, id := c.First()
		if pos != nil {
			key, id = c.Seek(be64(fromBE64(pos) + 1))
		}
		examined := 0
		var last []byte
		for ; key != nil; key, id = c.Next() {
			if len(page.Records) == limit || (filtered && examined == examine) {
				page.NextCursor = encodeCursor(ck, last)
				return nil
			}
			last = key
			v := data.Get(id)
			if v == nil {
				continue
			}
			examined++
			h, err := readHead(k, string(id), v)
			if err != nil {
				return err
			}
			if q.Active != nil && isActive(map[string]any{"active": h.Doc.Active}) != *q.Active {
				continue
			}
			if !q.UpdatedSince.IsZero() && h.Modified.Before(q.UpdatedSince) {
				continue
			}
			page.Records = append(page.Records, h.Data) // Unmarshal copied it out of the tx
		}
		return nil
	})
	return page, err
}

// UserRecord returns a user's canonical record (data.user of its events,
// with id and version), or ErrNotFound. Here and in GroupMembers and
// UserGroups, an id that cannot be one (empty, or with a control or
// invisible character) is a 400 *scim.Error naming the character.
func (s *Store) UserRecord(id string) (json.RawMessage, error) { return s.oneRecord(s.users, id) }

// GroupRecord is UserRecord for groups.
func (s *Store) GroupRecord(id string) (json.RawMessage, error) { return s.oneRecord(s.groups, id) }

func (s *Store) oneRecord(k *kind, id string) (json.RawMessage, error) {
	if err := checkID("id", id); err != nil {
		return nil, err
	}
	var out json.RawMessage
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(k.data).Get([]byte(id))
		if v == nil {
			return ErrNotFound
		}
		h, err := readHead(k, id, v)
		out = h.Data
		return err
	})
	return out, err
}

// GroupMembers returns a page of group id's members, in id order, each
// with its canonical record; O(limit) whatever the group's size. An
// unknown group is ErrNotFound.
func (s *Store) GroupMembers(id, cursor string, limit int) (MemberPage, error) {
	after, err := decodeCursor(cursorMembers, cursor)
	if err != nil {
		return MemberPage{}, err
	}
	if err := checkID("id", id); err != nil {
		return MemberPage{}, err
	}
	limit = clampLimit(limit)
	page := MemberPage{Members: []Member{}}
	err = s.view(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketGroups).Get([]byte(id)) == nil {
			return ErrNotFound
		}
		page.Sequence = outbox.Tail(tx)
		return s.scanAfter(tx.Bucket(bucketMembers), id, after, limit, &page.NextCursor, cursorMembers, func(mid []byte) error {
			typ, _, data, _, err := s.memberData(tx, string(mid))
			if err != nil {
				return fmt.Errorf("member %s of group %s: %w", mid, id, err)
			}
			page.Members = append(page.Members, Member{ID: string(mid), Type: typ, Record: data})
			return nil
		})
	})
	return page, err
}

// UserGroups returns a page of the canonical records of the groups user
// id is a direct member of, in group id order; ErrNotFound for an unknown
// user.
func (s *Store) UserGroups(id, cursor string, limit int) (RecordPage, error) {
	after, err := decodeCursor(cursorUserGroups, cursor)
	if err != nil {
		return RecordPage{}, err
	}
	if err := checkID("id", id); err != nil {
		return RecordPage{}, err
	}
	limit = clampLimit(limit)
	page := RecordPage{Records: []json.RawMessage{}}
	err = s.view(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketUsers).Get([]byte(id)) == nil {
			return ErrNotFound
		}
		page.Sequence = outbox.Tail(tx)
		groups := tx.Bucket(bucketGroups)
		return s.scanAfter(tx.Bucket(bucketMemberOf), id, after, limit, &page.NextCursor, cursorUserGroups, func(gid []byte) error {
			v := groups.Get(gid)
			if v == nil {
				return fmt.Errorf("group %s of user %s: %w", gid, id, ErrNotFound)
			}
			h, err := readHead(s.groups, string(gid), v)
			if err != nil {
				return err
			}
			page.Records = append(page.Records, h.Data)
			return nil
		})
	})
	return page, err
}

// scanAfter calls fn with up to limit tails of "head 0x00 tail" keys of b
// after the tail after (nil: from the first), and sets next when more
// follow.
func (s *Store) scanAfter(b *bolt.Bucket, head string, after []byte, limit int, next *string, ck byte, fn func(tail []byte) error) error {
	prefix := []byte(head + "\x00")
	c := b.Cursor()
	k, _ := c.Seek(append(bytes.Clone(prefix), after...))
	if after != nil && k != nil && bytes.Equal(k[len(prefix):], after) && bytes.HasPrefix(k, prefix) {
		k, _ = c.Next()
	}
	n := 0
	var last []byte
	for ; k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		tail := k[len(prefix):]
		if len(tail) == 0 || bytes.IndexByte(tail, 0) >= 0 {
			continue
		}
		if n == limit {
			*next = encodeCursor(ck, last)
			return nil
		}
		if err := fn(tail); err != nil {
			return err
		}
		last = bytes.Clone(tail)
		n++
	}
	return nil
}
