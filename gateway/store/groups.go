package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scimgate/scimgate/gateway/scim"
	"github.com/scimgate/scimgate/mapping"
)

// member is the value of a members key.
type member struct {
	Type    string `json:"type"` // "User" or "Group"
	Display string `json:"display,omitempty"`
}

// delta is a membership change: ids to add and to remove, in order, and
// the display values the client sent for added members.
type delta struct {
	add, remove []string
	display     map[string]string
}

func (d delta) empty() bool { return len(d.add) == 0 && len(d.remove) == 0 }

// CreateGroup stores a new group from a POST body, with its members, and
// enqueues group.created followed by one group.member_added per member.
// Member ids that name no user or group are ignored (reported through the
// Observer) or refused, as Options.UnknownMembers says.
func (s *Store) CreateGroup(doc map[string]any) (*Resource, error) {
	doc, members, display, hasMembers, err := s.splitMembers(doc)
	if err != nil {
		return nil, err
	}
	if err := groupIdentifiers(doc, nil); err != nil {
		return nil, err
	}
	if err := checkStrings(doc, nil); err != nil {
		return nil, err
	}
	id, k := newID(), s.groups
	var out *Resource
	err = s.write(func(tx *bolt.Tx, rs *readSet, m *mapping.Mapper) (writeFunc, error) {
		if err := k.checkName(tx, rs, doc, ""); err != nil {
			return nil, err
		}
		d := delta{display: display}
		if hasMembers {
			d.add = dedupe(members)
		}
		unknown, err := s.knownMembers(tx, rs, id, &d)
		if err != nil {
			return nil, err
		}
		res, err := m.MapGroup(doc)
		if err != nil {
			return nil, err
		}
		r, enc, created, err := s.newRecord(k, id, doc, res.Record, m.Fingerprint())
		if err != nil {
			return nil, err
		}
		now := r.Created
		mops, err := s.prepareMembers(tx, rs, r, d)
		if err != nil {
			return nil, err
		}
		out = k.resource(r)
		out.Doc["members"] = mops.rendered()
		return func(tx *bolt.Tx) error {
			s.warned(tx, "group", id, res.WarnedFields)
			s.ignoredMembers(tx, id, unknown)
			if err := k.insert(tx, r, enc); err != nil {
				return err
			}
			if err := s.enqueueAll(tx, created); err != nil {
				return err
			}
			if err := mops.apply(tx, s); err != nil {
				return err
			}
			return s.touched(tx, now)
		}, nil
	})
	if err != nil {
		s.rejected("group", err)
		return nil, err
	}
	return out, nil
}

// GetGroup returns the group with the given id, with its members unless
// withMembers is false (excludedAttributes=members: no member scan at all).
func (s *Store) GetGroup(id string, withMembers bool) (*Resource, error) {
	if err := checkID("id", id); err != nil {
		return nil, err
	}
	var out *Resource
	err := s.view(func(tx *bolt.Tx) error {
		r, err := s.groups.get(tx, id)
		if err != nil {
			return err
		}
		out = s.groupResource(tx, r, withMembers)
		return nil
	})
	return out, err
}

func (s *Store) groupResource(tx *bolt.Tx, r *record, withMembers bool) *Resource {
	res := s.groups.resource(r)
	if !withMembers {
		return res
	}
	members := make([]any, 0, memberCount(tx, r.ID))
	scanPrefix(tx.Bucket(bucketMembers), r.ID, func(id, v []byte) bool {
		var m member
		_ = json.Unmarshal(v, &m)
		e := map[string]any{"value": string(id), "type": m.Type}
		if m.Display != "" {
			e["display"] = m.Display
		}
		members = append(members, e)
		return true
	})
	res.Doc["members"] = members
	return res
}

// ReplaceGroup and PatchGroup return the group without its members.
//
// ReplaceGroup replaces the group's attributes with a PUT body. When the
// body has "members", membership becomes exactly that list (the adds and
// removes of the difference are emitted); when it has none, membership is
// left alone, so a PUT that only renames cannot empty a group by accident.
func (s *Store) ReplaceGroup(id, ifMatch string, doc map[string]any) (*Resource, error) {
	doc, members, display, hasMembers, err := s.splitMembers(doc)
	if err != nil {
		return nil, err
	}
	return s.updateGroup(id, ifMatch, func(tx *bolt.Tx, cur *record) (map[string]any, delta, error) {
		if !hasMembers {
			return doc, delta{}, nil
		}
		d := replaceDelta(s.memberIDs(tx, id), members)
		d.display = display
		return doc, d, nil
	})
}

// PatchGroup applies PATCH operations to the group atomically. Operations
// on members change the membership index directly (O(change), not
// O(group size)); the others go through scim.ApplyPatch.
func (s *Store) PatchGroup(id, ifMatch string, ops []scim.Operation) (*Resource, error) {
	var docOps, memberOps []scim.Operation
	for _, op := range ops {
		switch {
		case op.Path != nil && isMembersPath(op.Path):
			memberOps = append(memberOps, op)
		case op.Path == nil:
			obj, ok := op.Value.(map[string]any)
			if !ok {
				docOps = append(docOps, op)
				continue
			}
			v, found, rest, err := scim.SplitAttr(obj, "members", s.groups.rt)
			if err != nil {
				return nil, err
			}
			if found {
				memberOps = append(memberOps, scim.Operation{Op: op.Op, Path: &scim.Path{Attr: "members"}, Value: v})
			}
			if len(rest) > 0 {
				docOps = append(docOps, scim.Operation{Op: op.Op, Value: rest})
			}
		default:
			docOps = append(docOps, op)
		}
	}
	return s.updateGroup(id, ifMatch, func(tx *bolt.Tx, cur *record) (map[string]any, delta, error) {
		doc := cur.Doc
		if len(docOps) > 0 {
			next, err := scim.ApplyPatchLimits(cur.Doc, docOps, s.groups.rt, s.patchLimits())
			if err != nil {
				return nil, delta{}, err
			}
			if doc, err = scim.Normalize(next, s.groups.rt); err != nil {
				return nil, delta{}, err
			}
		}
		d, err := s.memberDelta(tx, id, memberOps)
		return doc, d, err
	})
}

// updateGroup is the one write path of a changed group.
func (s *Store) updateGroup(id, ifMatch string, next func(tx *bolt.Tx, cur *record) (map[string]any, delta, error)) (*Resource, error) {
	if err := checkID("id", id); err != nil {
		return nil, err
	}
	k := s.groups
	var out *Resource
	err := s.write(func(tx *bolt.Tx, rs *readSet, m *mapping.Mapper) (writeFunc, error) {
		// The group's record covers its membership: every change of its
		// members rewrites it (see prepare.go).
		cur, err := k.getRS(tx, rs, id)
		if err != nil {
			return nil, err
		}
		if err := checkIfMatch(ifMatch, etag(cur.Version)); err != nil {
			return nil, err
		}
		doc, d, err := next(tx, cur)
		if err != nil {
			return nil, err
		}
		docChanged := !jsonEqual(doc, cur.Doc)
		if !docChanged && d.empty() {
			out = s.groupResource(tx, cur, false)
			return nil, nil
		}
		if docChanged {
			if err := groupIdentifiers(doc, cur.Doc); err != nil {
				return nil, err
			}
			if err := checkStrings(doc, cur.Doc); err != nil {
				return nil, err
			}
		}
		unknown, err := s.knownMembers(tx, rs, id, &d)
		if err != nil {
			return nil, err
		}
		if !docChanged && d.empty() { // only unknown ids: nothing changes
			s.reportIgnored(id, unknown)
			out = s.groupResource(tx, cur, false)
			return nil, nil
		}
		if err := k.checkName(tx, rs, doc, id); err != nil {
			return nil, err
		}
		res, err := m.MapGroup(doc)
		if err != nil {
			return nil, err
		}
		now := s.now()
		r := &record{ID: id, Seq: cur.Seq, Created: cur.Created, Modified: now, Version: s.nextVersion(cur.Version), Doc: doc, Record: res.Record, FP: m.Fingerprint()}
		enc, err := k.encode(r)
		if err != nil {
			return nil, err
		}
		if err := s.checkSize(k, enc, cur.size); err != nil {
			return nil, err
		}
		var evs []event
		if changes := mapping.Diff(cur.Record, r.Record); len(changes) > 0 {
			ev, err := newEvent("group.updated", []string{resKey("Group", id)}, dataOf("group", r.Data), changes)
			if err != nil {
				return nil, err
			}
			evs = append(evs, ev)
		}
		mops, err := s.prepareMembers(tx, rs, r, d)
		if err != nil {
			return nil, err
		}
		// Without members: rendering them is O(group size), and a PATCH
		// answered 204 needs none (GetGroup reads them when needed).
		out = k.resource(r)
		return func(tx *bolt.Tx) error {
			s.warned(tx, "group", id, res.WarnedFields)
			s.ignoredMembers(tx, id, unknown)
			if err := k.index(tx, cur, r); err != nil {
				return err
			}
			if err := tx.Bucket(k.data).Put([]byte(id), enc.bytes(r.Seq)); err != nil {
				return err
			}
			if err := clearRejected(tx, "group", id); err != nil {
				return err
			}
			if err := s.enqueueAll(tx, evs...); err != nil {
				return err
			}
			if err := mops.apply(tx, s); err != nil {
				return err
			}
			return s.touched(tx, now)
		}, nil
	})
	if err != nil {
		s.rejected("group", err)
		return nil, err
	}
	return out, nil
}

// deleteChunk bounds the members one transaction of DeleteGroup removes.
var deleteChunk = 2000

// DeleteGroup removes the group: first its members (group.member_removed
// each, the group at a new version), its own memberships in other groups,
// then group.deleted at a version above those events'. A group of more than
// deleteChunk members is emptied in several transactions of deleteChunk
// members each (each a new version of the group, committed before the
// next), so the writer is never held for the whole group — measured for
// 50,000 members: one transaction of 1.1 s that every other write waited
// for (BenchmarkDeleteBigGroup). The delete is acknowledged once the last
// one, which removes the group, has committed; a crash in between leaves a
// smaller group, and the identity provider's retry finishes it.
func (s *Store) DeleteGroup(id, ifMatch string) error {
	if err := checkID("id", id); err != nil {
		return err
	}
	for first := true; ; first = false {
		done := false
		err := s.w.update(func(tx *bolt.Tx) error {
			k := s.groups
			r, err := k.get(tx, id)
			if err != nil {
				return err
			}
			if first {
				if err := checkIfMatch(ifMatch, etag(r.Version)); err != nil {
					return err
				}
			}
			now := s.now()
			r.Version, r.Modified = s.nextVersion(r.Version), now
			ids := s.firstMemberIDs(tx, id, deleteChunk+1)
			if len(ids) > deleteChunk { // a chunk: the group stays, smaller, at its new version
				if err := k.put(tx, r); err != nil {
					return err
				}
				if err := s.applyDelta(tx, r, delta{remove: ids[:deleteChunk]}); err != nil {
					return err
				}
				done = false
				return s.touched(tx, now)
			}
			if err := r.encodeData(); err != nil {
				return err
			}
			if err := s.applyDelta(tx, r, delta{remove: ids}); err != nil {
				return err
			}
			if err := s.dropMemberships(tx, id, eventData(r), now); err != nil {
				return err
			}
			// group.deleted comes after the member events, above their version.
			r.Version = s.nextVersion(r.Version)
			if err := r.encodeData(); err != nil {
				return err
			}
			if err := k.unindex(tx, r); err != nil {
				return err
			}
			if err := tx.Bucket(k.data).Delete([]byte(id)); err != nil {
				return err
			}
			if err := tx.Bucket(bucketMemberCounts).Delete([]byte(id)); err != nil {
				return err
			}
			if err := clearRejected(tx, "group", id); err != nil {
				return err
			}
			if err := s.enqueue(tx, "group.deleted", []string{resKey("Group", id)}, dataOf("group", eventData(r)), nil); err != nil {
				return err
			}
			done = true
			return s.touched(tx, now)
		})
		switch {
		case !first && errors.Is(err, ErrNotFound):
			return nil // another delete finished it
		case err != nil:
			return err
		case done:
			return nil
		}
	}
}

// firstMemberIDs lists up to n of the group's member ids, in id order.
func (s *Store) firstMemberIDs(tx *bolt.Tx, groupID string, n int) []string {
	ids := make([]string, 0, min(n, memberCount(tx, groupID)))
	scanPrefix(tx.Bucket(bucketMembers), groupID, func(id, _ []byte) bool {
		ids = append(ids, string(id))
		return len(ids) < n
	})
	return ids
}

// splitMembers takes "members" out of a POST or PUT body and normalises the
// rest. hasMembers reports whether the body had the attribute at all.
func (s *Store) splitMembers(doc map[string]any) (rest map[string]any, ids []string, display map[string]string, hasMembers bool, err error) {
	// members however qualified ("members", "<core URN>:members", or under
	// the core URN key): they live in the membership index, not the document.
	v, hasMembers, rest, err := scim.SplitAttr(doc, "members", s.groups.rt)
	if err != nil {
		return nil, nil, nil, false, err
	}
	if hasMembers {
		if ids, display, err = memberValues(v); err != nil {
			return nil, nil, nil, false, err
		}
	}
	if rest, err = scim.Normalize(rest, s.groups.rt); err != nil {
		return nil, nil, nil, false, err
	}
	return rest, ids, display, hasMembers, nil
}

// memberValues reads member ids from a members value: a list of
// {"value": id, "display": …} objects, bare id strings (seen from
// Microsoft's test collection), or one of either. null means none. The
// display each member was sent with is returned too (Microsoft's collection
// calls it displayName); it is stored as sent, as Entra asks.
func memberValues(v any) ([]string, map[string]string, error) {
	var list []any
	switch v := v.(type) {
	case nil:
		return nil, nil, nil
	case []any:
		list = v
	default:
		list = []any{v}
	}
	ids := make([]string, 0, len(list))
	var display map[string]string
	for i, e := range list {
		var id string
		switch e := e.(type) {
		case string:
			id = e
		case map[string]any:
			val, _ := scim.Get(e, "value")
			id, _ = val.(string)
			for _, key := range []string{"display", "displayName"} {
				if d, _ := scim.Get(e, key); d != nil {
					if ds, ok := d.(string); ok && ds != "" && id != "" {
						if err := checkControl(fmt.Sprintf("members[%d].%s", i, key), ds); err != nil {
							return nil, nil, err
						}
						if display == nil {
							display = map[string]string{}
						}
						display[id] = ds
						break
					}
				}
			}
		}
		if id == "" {
			return nil, nil, scim.Errorf(http.StatusBadRequest, scim.InvalidValue,
				"members[%d] has no \"value\": each member must be {\"value\": \"<id of a user or group in scimgate>\"}", i)
		}
		if err := checkIdentifier(fmt.Sprintf("members[%d].value", i), id); err != nil {
			return nil, nil, err
		}
		ids = append(ids, id)
	}
	return ids, display, nil
}

// knownMembers applies Options.UnknownMembers to the ids d adds: ids that
// name no user or group of this gateway (a membership must point at
// something a webhook consumer knows) are dropped from d and counted, or
// refused with 400 under UnknownReject. A group in its own members is
// always refused.
func (s *Store) knownMembers(tx *bolt.Tx, rs *readSet, groupID string, d *delta) (unknown int, err error) {
	var names []string
	kept := d.add[:0:0]
	for _, id := range d.add {
		if id == groupID {
			return 0, scim.Errorf(http.StatusBadRequest, scim.InvalidValue, "a group cannot be a member of itself (%s)", id)
		}
		if rs.get(tx, bucketUsers, []byte(id)) == nil && rs.get(tx, bucketGroups, []byte(id)) == nil {
			if unknown++; len(names) < 5 {
				names = append(names, id)
			}
			continue
		}
		kept = append(kept, id)
	}
	if unknown > 0 && s.reject {
		if unknown > len(names) {
			names = append(names, fmt.Sprintf("and %d more", unknown-len(names)))
		}
		return 0, scim.Errorf(http.StatusBadRequest, scim.InvalidValue,
			"members must be ids of users or groups provisioned to scimgate; unknown: %s (push the user to the app before adding it to a group)",
			strings.Join(names, ", "))
	}
	d.add = kept
	return unknown, nil
}

func isMembersPath(p *scim.Path) bool {
	return strings.EqualFold(p.Attr, "members") && (p.URN == "" || strings.EqualFold(p.URN, scim.SchemaGroup))
}

// memberDelta works out what member operations do to the membership, in
// order, reading only the members they touch (all of them only for a full
// replace or a remove-all).
func (s *Store) memberDelta(tx *bolt.Tx, groupID string, ops []scim.Operation) (delta, error) {
	state := map[string]bool{} // overlay on the index: id → member after the ops so far
	var order []string
	display := map[string]string{}
	values := func(v any) ([]string, error) {
		ids, ds, err := memberValues(v)
		for id, d := range ds {
			display[id] = d
		}
		return ids, err
	}
	set := func(id string, in bool) {
		if _, seen := state[id]; !seen {
			order = append(order, id)
		}
		state[id] = in
	}
	isMember := func(id string) bool {
		if in, ok := state[id]; ok {
			return in
		}
		return tx.Bucket(bucketMembers).Get(joinKey(groupID, id)) != nil
	}
	current := func() []string {
		var ids []string
		for _, id := range s.memberIDs(tx, groupID) {
			if isMember(id) {
				ids = append(ids, id)
			}
		}
		for _, id := range order {
			if state[id] && tx.Bucket(bucketMembers).Get(joinKey(groupID, id)) == nil {
				ids = append(ids, id)
			}
		}
		return ids
	}
	for i, op := range ops {
		p := op.Path
		if p.Sub != "" {
			// members[…].display and the like: display is computed by
			// the server, so there is nothing to change.
			continue
		}
		switch {
		case p.Filter != nil && op.Op == "add":
			return delta{}, scim.Errorf(http.StatusBadRequest, scim.InvalidPath,
				"operation %d: add takes path \"members\" without a filter", i)
		case p.Filter != nil: // remove or replace the members the filter selects
			for _, id := range current() {
				if p.Filter.Match(map[string]any{"value": id}, nil) {
					set(id, false)
				}
			}
			if op.Op == "replace" {
				ids, err := values(op.Value)
				if err != nil {
					return delta{}, err
				}
				for _, id := range ids {
					set(id, true)
				}
			}
		case op.Op == "add":
			ids, err := values(op.Value)
			if err != nil {
				return delta{}, err
			}
			for _, id := range ids {
				set(id, true)
			}
		case op.Op == "remove" && op.Value != nil:
			// Entra's default shape: remove path "members" with a value
			// list means "remove these", not "remove all".
			ids, err := values(op.Value)
			if err != nil {
				return delta{}, err
			}
			for _, id := range ids {
				set(id, false)
			}
		case op.Op == "remove":
			for _, id := range current() {
				set(id, false)
			}
		case op.Op == "replace":
			ids, err := values(op.Value)
			if err != nil {
				return delta{}, err
			}
			want := map[string]bool{}
			for _, id := range ids {
				want[id] = true
			}
			for _, id := range current() {
				if !want[id] {
					set(id, false)
				}
			}
			for _, id := range ids {
				set(id, true)
			}
		}
	}
	d := delta{display: display}
	for _, id := range order {
		was := tx.Bucket(bucketMembers).Get(joinKey(groupID, id)) != nil
		switch {
		case state[id] && !was:
			d.add = append(d.add, id)
		case !state[id] && was:
			d.remove = append(d.remove, id)
		}
	}
	return d, nil
}

// replaceDelta is the difference between the current members and want.
func replaceDelta(cur, want []string) delta {
	want = dedupe(want)
	in := make(map[string]bool, len(cur))
	for _, id := range cur {
		in[id] = true
	}
	keep := make(map[string]bool, len(want))
	var d delta
	for _, id := range want {
		keep[id] = true
		if !in[id] {
			d.add = append(d.add, id)
		}
	}
	for _, id := range cur {
		if !keep[id] {
			d.remove = append(d.remove, id)
		}
	}
	return d
}

func dedupe(ids []string) []string {
	seen := make(map[string]bool, len(ids))
	out := ids[:0:0]
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

// memberIDs lists the group's member ids.
func (s *Store) memberIDs(tx *bolt.Tx, groupID string) []string {
	ids := make([]string, 0, memberCount(tx, groupID))
	scanPrefix(tx.Bucket(bucketMembers), groupID, func(id, _ []byte) bool {
		ids = append(ids, string(id))
		return true
	})
	return ids
}

// memberData loads what a member event needs of a member, without
// decoding its SCIM document: ("User", "user", data) for a user,
// ("Group", "member_group", data) for a nested group.
func (s *Store) memberData(tx *bolt.Tx, id string) (typ, key string, data json.RawMessage, display string, err error) {
	return s.memberDataRS(tx, nil, id)
}

// memberDataRS is memberData reading through rs.
func (s *Store) memberDataRS(tx *bolt.Tx, rs *readSet, id string) (typ, key string, data json.RawMessage, display string, err error) {
	var head struct {
		Data    json.RawMessage `json:"data"`
		Display string          `json:"display"`
	}
	if v := rs.get(tx, bucketUsers, []byte(id)); v != nil {
		typ, key = "User", "user"
		err = json.Unmarshal(v, &head)
	} else if v := rs.get(tx, bucketGroups, []byte(id)); v != nil {
		typ, key = "Group", "member_group"
		err = json.Unmarshal(v, &head)
	} else {
		return "", "", nil, "", ErrNotFound
	}
	return typ, key, head.Data, head.Display, err // Unmarshal copied it out of the tx
}

// memberOps is a membership change prepared outside the writer: the keys
// to delete and put in both directions and one member event per change,
// removals first, in the order of the delta.
type memberOps struct {
	groupID string
	removes []string      // member ids
	adds    []addedMember // in order
	events  []event       // one per change: removes, then adds
}

type addedMember struct {
	id, typ, display string
	value            []byte // JSON(member)
}

// prepareMembers prepares d for group g as it is after this change (its
// Data encoded): the member records are read through rs, so a member that
// changes or goes before the writer applies this is a conflict.
func (s *Store) prepareMembers(tx *bolt.Tx, rs *readSet, g *record, d delta) (memberOps, error) {
	ops := memberOps{groupID: g.ID}
	if d.empty() {
		return ops, nil
	}
	gdata := eventData(g) // every member event of this change carries the same group
	for _, id := range d.remove {
		typ, key, data, _, err := s.memberDataRS(tx, rs, id)
		if err != nil {
			return ops, fmt.Errorf("member %s of group %s: %w", id, g.ID, err)
		}
		ops.removes = append(ops.removes, id)
		ops.events = append(ops.events, event{Type: "group.member_removed",
			Resources: []string{resKey("Group", g.ID), resKey(typ, id)}, Data: dataOf("group", gdata, key, data)})
	}
	for _, id := range d.add {
		typ, key, data, display, err := s.memberDataRS(tx, rs, id)
		if err != nil {
			return ops, fmt.Errorf("member %s of group %s: %w", id, g.ID, err)
		}
		if sent := d.display[id]; sent != "" {
			display = sent
		}
		v, err := json.Marshal(member{Type: typ, Display: display})
		if err != nil {
			return ops, err
		}
		ops.adds = append(ops.adds, addedMember{id: id, typ: typ, display: display, value: v})
		ops.events = append(ops.events, event{Type: "group.member_added",
			Resources: []string{resKey("Group", g.ID), resKey(typ, id)}, Data: dataOf("group", gdata, key, data)})
	}
	return ops, nil
}

// apply writes the membership keys and counts and enqueues the events.
func (ops memberOps) apply(tx *bolt.Tx, s *Store) error {
	if len(ops.events) == 0 {
		return nil
	}
	members, memberOf := tx.Bucket(bucketMembers), tx.Bucket(bucketMemberOf)
	if err := addCounter(tx.Bucket(bucketMemberCounts), []byte(ops.groupID), len(ops.adds)-len(ops.removes)); err != nil {
		return err
	}
	for _, id := range ops.removes {
		if err := members.Delete(joinKey(ops.groupID, id)); err != nil {
			return err
		}
		if err := memberOf.Delete(joinKey(id, ops.groupID)); err != nil {
			return err
		}
	}
	for _, m := range ops.adds {
		if err := members.Put(joinKey(ops.groupID, m.id), m.value); err != nil {
			return err
		}
		if err := memberOf.Put(joinKey(m.id, ops.groupID), nil); err != nil {
			return err
		}
	}
	return s.enqueueAll(tx, ops.events...)
}

// rendered is the members attribute of a new group holding ops.adds, in
// the index's (id) order.
func (ops memberOps) rendered() []any {
	adds := slices.Clone(ops.adds)
	slices.SortFunc(adds, func(a, b addedMember) int { return strings.Compare(a.id, b.id) })
	out := make([]any, 0, len(adds))
	for _, m := range adds {
		e := map[string]any{"value": m.id, "type": m.typ}
		if m.display != "" {
			e["display"] = m.display
		}
		out = append(out, e)
	}
	return out
}

// applyDelta prepares and applies d for group g inside the writer (the
// deletes, which run there).
func (s *Store) applyDelta(tx *bolt.Tx, g *record, d delta) error {
	ops, err := s.prepareMembers(tx, nil, g, d)
	if err != nil {
		return err
	}
	return ops.apply(tx, s)
}

// dropMemberships removes memberID from every group it belongs to, before
// memberID itself is deleted; each group's version grows.
func (s *Store) dropMemberships(tx *bolt.Tx, memberID string, memberData json.RawMessage, now time.Time) error {
	var groups []string
	scanPrefix(tx.Bucket(bucketMemberOf), memberID, func(gid, _ []byte) bool {
		groups = append(groups, string(gid))
		return true
	})
	typ, key := "User", "user"
	if tx.Bucket(bucketGroups).Get([]byte(memberID)) != nil {
		typ, key = "Group", "member_group"
	}
	for _, gid := range groups {
		g, err := s.groups.get(tx, gid)
		if err != nil {
			return fmt.Errorf("group %s of member %s: %w", gid, memberID, err)
		}
		g.Version = s.nextVersion(g.Version)
		g.Modified = now
		if err := s.groups.put(tx, g); err != nil {
			return err
		}
		if err := tx.Bucket(bucketMembers).Delete(joinKey(gid, memberID)); err != nil {
			return err
		}
		if err := tx.Bucket(bucketMemberOf).Delete(joinKey(memberID, gid)); err != nil {
			return err
		}
		if err := addCounter(tx.Bucket(bucketMemberCounts), []byte(gid), -1); err != nil {
			return err
		}
		if err := s.enqueue(tx, "group.member_removed", []string{resKey("Group", gid), resKey(typ, memberID)},
			dataOf("group", eventData(g), key, memberData), nil); err != nil {
			return err
		}
	}
	return nil
}
