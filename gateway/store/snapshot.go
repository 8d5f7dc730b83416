package store

import (
	"encoding/json"
	"fmt"
	"strconv"

	bolt "go.etcd.io/bbolt"

	"github.com/scimgate/scimgate/outbox"
)

// Snapshot event types (docs/events.md, "Types"). The outbox exports
// constants for them; until the two branches meet, these literals are the
// one place they are spelled in the store.
const (
	typeSnapshotStarted   = "snapshot.started"
	typeUserSnapshot      = "user.snapshot"
	typeGroupSnapshot     = "group.snapshot"
	typeMembersSnapshot   = "group.members_snapshot"
	typeSnapshotCompleted = "snapshot.completed"
)

// SnapshotChunk is the most members one group.members_snapshot carries.
const SnapshotChunk = 1000

// Snapshot emits the state tx sees, for a backfill (outbox.SnapshotFunc):
// snapshot.started ({"sequence":S,"users":n,"groups":m}, S = outbox.Tail),
// one user.snapshot per user ({"user": record}) in creation order, one
// group.snapshot per group ({"group": record}), then each group's members
// in group.members_snapshot events of at most SnapshotChunk members
// ({"group": record, "members":[{"id","type"}…], "chunk":{"index":i,
// "count":n}}; every group has at least one, an empty group one with no
// members, so a consumer can replace a group's membership chunk by chunk),
// and snapshot.completed ({"sequence":S}). Records are exactly as in live
// events; Resources are "User/<id>", "Group/<id>" (a members chunk
// concerns its group). It streams: each event is built from tx as it is
// emitted, and emit's error stops it.
func (s *Store) Snapshot(tx *bolt.Tx, emit func(outbox.Event) error) error {
	seq := outbox.Tail(tx)
	meta := tx.Bucket(bucketMeta)
	now := s.now()
	send := func(typ string, resources []string, data json.RawMessage) error {
		return emit(outbox.Event{Type: typ, Resources: resources, Data: data, OccurredAt: now})
	}
	started := fmt.Sprintf(`{"sequence":%d,"users":%d,"groups":%d}`, seq,
		getCounter(meta, s.users.count), getCounter(meta, s.groups.count))
	if err := send(typeSnapshotStarted, nil, json.RawMessage(started)); err != nil {
		return err
	}
	for _, k := range []*kind{s.users, s.groups} {
		if err := s.eachRecord(tx, k, func(id string, data json.RawMessage) error {
			typ := typeUserSnapshot
			if k == s.groups {
				typ = typeGroupSnapshot
			}
			return send(typ, []string{resKey(k.name, id)}, dataOf(k.event, data))
		}); err != nil {
			return err
		}
	}
	members := tx.Bucket(bucketMembers)
	if err := s.eachRecord(tx, s.groups, func(gid string, gdata json.RawMessage) error {
		chunks := max(1, (memberCount(tx, gid)+SnapshotChunk-1)/SnapshotChunk)
		index := 0
		buf := make([]byte, 0, 64*SnapshotChunk)
		n := 0
		flush := func() error {
			b := make([]byte, 0, len(gdata)+len(buf)+64)
			b = append(b, `{"group":`...)
			b = append(b, gdata...)
			b = append(b, `,"members":[`...)
			b = append(b, buf...)
			b = append(b, `],"chunk":{"index":`...)
			b = strconv.AppendInt(b, int64(index), 10)
			b = append(b, `,"count":`...)
			b = strconv.AppendInt(b, int64(max(chunks, index+1)), 10)
			b = append(b, `}}`...)
			index++
			buf, n = buf[:0], 0
			return send(typeMembersSnapshot, []string{resKey("Group", gid)}, b)
		}
		var err error
		scanPrefix(members, gid, func(mid, v []byte) bool {
			var m member
			if err = json.Unmarshal(v, &m); err != nil {
				err = fmt.Errorf("member %s of group %s: %w", mid, gid, err)
				return false
			}
			if n > 0 {
				buf = append(buf, ',')
			}
			q, _ := json.Marshal(string(mid)) // a string always marshals
			buf = append(buf, `{"id":`...)
			buf = append(buf, q...)
			buf = append(buf, `,"type":`...)
			q, _ = json.Marshal(m.Type)
			buf = append(buf, q...)
			buf = append(buf, '}')
			if n++; n == SnapshotChunk {
				err = flush()
			}
			return err == nil
		})
		if err != nil {
			return err
		}
		if n > 0 || index == 0 {
			return flush()
		}
		return nil
	}); err != nil {
		return err
	}
	return send(typeSnapshotCompleted, nil, json.RawMessage(fmt.Sprintf(`{"sequence":%d}`, seq)))
}

// eachRecord calls fn with the id and event data of every resource of k,
// in creation order.
func (s *Store) eachRecord(tx *bolt.Tx, k *kind, fn func(id string, data json.RawMessage) error) error {
	data := tx.Bucket(k.data)
	c := tx.Bucket(k.order).Cursor()
	for key, id := c.First(); key != nil; key, id = c.Next() {
		v := data.Get(id)
		if v == nil {
			continue
		}
		h, err := readHead(k, string(id), v)
		if err != nil {
			return err
		}
		if err := fn(string(id), h.Data); err != nil {
			return err
		}
	}
	return nil
}
