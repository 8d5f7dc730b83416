package store

import (
	"bytes"
	"hash/fnv"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scimgate/scimgate/gateway/scim"
	"github.com/scimgate/scimgate/mapping"
)

// CreateUser stores a new user from a POST body and enqueues user.created.
// Returns a *scim.Error for invalid input (an identifier with a control or
// invisible character included), a missing or duplicate userName (409
// uniqueness, compared by foldKey) or a mapping rejection.
func (s *Store) CreateUser(doc map[string]any) (*Resource, error) {
	doc, err := scim.Normalize(doc, s.users.rt)
	if err != nil {
		return nil, err
	}
	if err := userIdentifiers(doc, nil); err != nil {
		return nil, err
	}
	if err := checkStrings(doc, nil); err != nil {
		return nil, err
	}
	id, k := newID(), s.users
	var out *Resource
	err = s.write(func(tx *bolt.Tx, rs *readSet, m *mapping.Mapper) (writeFunc, error) {
		if err := k.checkName(tx, rs, doc, ""); err != nil {
			return nil, err
		}
		res, err := m.MapUser(doc, s.resolver(tx, rs))
		if err != nil {
			return nil, err
		}
		r, enc, created, err := s.newRecord(k, id, doc, res.Record, m.Fingerprint())
		if err != nil {
			return nil, err
		}
		now := r.Created
		idents := s.identifiers(r)
		out = k.resource(r) // a new user is in no group
		return func(tx *bolt.Tx) error {
			if err := s.checkMatch(tx, m, doc, ""); err != nil {
				return err
			}
			s.warned(tx, "user", id, res.WarnedFields)
			if err := k.insert(tx, r, enc); err != nil {
				return err
			}
			if err := indexEmails(tx, nil, r); err != nil {
				return err
			}
			if isActive(doc) {
				if err := addCounter(tx.Bucket(bucketMeta), keyActive, 1); err != nil {
					return err
				}
			}
			if err := setRefs(tx, id, res.Refs); err != nil {
				return err
			}
			if err := s.enqueueAll(tx, created); err != nil {
				return err
			}
			if err := s.resolveDependants(tx, m, r, idents, now); err != nil {
				return err
			}
			return s.touched(tx, now)
		}, nil
	})
	if err != nil {
		s.rejected("user", err)
		return nil, err
	}
	return out, nil
}

// GetUser returns the user with the given id, or ErrNotFound.
func (s *Store) GetUser(id string) (*Resource, error) {
	if err := checkID("id", id); err != nil {
		return nil, err
	}
	var out *Resource
	err := s.view(func(tx *bolt.Tx) error {
		r, err := s.users.get(tx, id)
		if err != nil {
			return err
		}
		out = s.userResource(tx, r)
		return nil
	})
	return out, err
}

// userResource renders a user with its (read-only, derived) groups.
func (s *Store) userResource(tx *bolt.Tx, r *record) *Resource {
	res := s.users.resource(r)
	s.addGroups(tx, res)
	return res
}

// addGroups fills in the groups attribute of a rendered user, and its
// entity tag, which covers them.
func (s *Store) addGroups(tx *bolt.Tx, res *Resource) {
	groups, h := s.userGroups(tx, res.ID)
	if len(groups) == 0 {
		return
	}
	res.Doc["groups"] = groups
	res.tag = userTag(res.Version, h)
	if meta, ok := res.Doc["meta"].(map[string]any); ok {
		meta["version"] = res.tag
	}
}

// userGroups returns the user's groups as rendered, and a hash of them
// (ids and display names) for its entity tag.
func (s *Store) userGroups(tx *bolt.Tx, id string) ([]any, uint64) {
	var groups []any
	h := fnv.New64a()
	scanPrefix(tx.Bucket(bucketMemberOf), id, func(tail, _ []byte) bool {
		gid := string(tail)
		g := map[string]any{"value": gid, "type": "direct"}
		h.Write(tail)
		h.Write([]byte{0})
		if _, _, _, display, err := s.memberData(tx, gid); err == nil {
			g["display"] = display
			h.Write([]byte(display))
		}
		h.Write([]byte{0})
		groups = append(groups, g)
		return true
	})
	return groups, h.Sum64()
}

// userETag is the entity tag of user r as rendered from tx (GetUser's).
func (s *Store) userETag(tx *bolt.Tx, r *record) string {
	groups, h := s.userGroups(tx, r.ID)
	if len(groups) == 0 {
		return etag(r.Version)
	}
	return userTag(r.Version, h)
}

// userTag is the entity tag of a user at version v in groups hashing to h:
// the group memberships change without a new version of the user.
func userTag(v, h uint64) string {
	return `W/"` + strconv.FormatUint(v, 10) + "-" + strconv.FormatUint(h, 16) + `"`
}

// ReplaceUser replaces the user's attributes with a PUT body. Read-only
// attributes in the body are ignored; an omitted "active" keeps the current
// value rather than deactivating (Okta's profile push sends a PUT without
// it: docs/okta.md).
func (s *Store) ReplaceUser(id, ifMatch string, doc map[string]any) (*Resource, error) {
	doc, err := scim.Normalize(doc, s.users.rt)
	if err != nil {
		return nil, err
	}
	return s.updateUser(id, ifMatch, func(cur *record, _ *mapping.Mapper) (map[string]any, error) {
		next := doc
		if _, ok := scim.Get(doc, "active"); !ok {
			if v, ok := scim.Get(cur.Doc, "active"); ok {
				// A copy: the write may be prepared again on another snapshot.
				next = make(map[string]any, len(doc)+1)
				for k, v := range doc {
					next[k] = v
				}
				next["active"] = v
			}
		}
		return next, nil
	})
}

// PatchUser applies PATCH operations to the user atomically.
func (s *Store) PatchUser(id, ifMatch string, ops []scim.Operation) (*Resource, error) {
	return s.updateUser(id, ifMatch, func(cur *record, m *mapping.Mapper) (map[string]any, error) {
		next, err := s.applyUserPatch(m, cur.Doc, ops)
		if err != nil {
			return nil, err
		}
		return scim.Normalize(next, s.users.rt)
	})
}

// applyUserPatch applies ops to a user's document. With a single-valued
// catalog type (multi_valued: false), an add operation replaces the type's
// value instead of adding a second one (RFC 7644 §3.5.2.1, by
// Mapper.ReplaceSingleValued after each add), so the user.updated event
// shows the old value going.
func (s *Store) applyUserPatch(m *mapping.Mapper, doc map[string]any, ops []scim.Operation) (map[string]any, error) {
	if m == nil || !m.HasSingleValued() {
		return scim.ApplyPatchLimits(doc, ops, s.users.rt, s.patchLimits())
	}
	return scim.ApplyPatchEach(doc, ops, s.users.rt, s.patchLimits(), func(i int, doc map[string]any) func() {
		if ops[i].Op != "add" {
			return nil
		}
		before := map[string]any{} // the assignments only, copied
		for _, attr := range []string{"roles", "entitlements"} {
			if v, ok := scim.Get(doc, attr); ok {
				before[attr] = scim.DeepCopy(v)
			}
		}
		return func() { m.ReplaceSingleValued(before, doc) }
	})
}

// updateUser is the one write path of a changed user: next computes the new
// attributes from the current record. An unchanged document writes nothing
// and emits nothing (Okta's repeated full PUTs); a changed document whose
// canonical record is unchanged is stored without an event.
func (s *Store) updateUser(id, ifMatch string, next func(cur *record, m *mapping.Mapper) (map[string]any, error)) (*Resource, error) {
	if err := checkID("id", id); err != nil {
		return nil, err
	}
	k := s.users
	var out *Resource
	changed := false
	err := s.write(func(tx *bolt.Tx, rs *readSet, m *mapping.Mapper) (writeFunc, error) {
		cur, err := k.getRS(tx, rs, id)
		if err != nil {
			return nil, err
		}
		if err := checkIfMatch(ifMatch, s.userETag(tx, cur)); err != nil {
			return nil, err
		}
		doc, err := next(cur, m)
		if err != nil {
			return nil, err
		}
		if jsonEqual(doc, cur.Doc) {
			out, changed = s.userResource(tx, cur), false
			return nil, nil
		}
		if err := userIdentifiers(doc, cur.Doc); err != nil {
			return nil, err
		}
		if err := checkStrings(doc, cur.Doc); err != nil {
			return nil, err
		}
		if err := k.checkName(tx, rs, doc, id); err != nil {
			return nil, err
		}
		res, err := m.MapUser(doc, s.resolver(tx, rs))
		if err != nil {
			return nil, err
		}
		now := s.now()
		r := &record{ID: id, Seq: cur.Seq, Created: cur.Created, Modified: now, Version: s.nextVersion(cur.Version), Doc: doc, Record: res.Record, FP: m.Fingerprint()}
		w, err := s.prepareUserWrite(m, cur, r, &res, now)
		if err != nil {
			return nil, err
		}
		out, changed = k.resource(r), true
		return w, nil
	})
	if err != nil {
		s.rejected("user", err)
		return nil, err
	}
	if changed { // its groups as they are now that the write committed
		_ = s.view(func(tx *bolt.Tx) error { s.addGroups(tx, out); return nil })
	}
	return out, nil
}

// prepareUserWrite prepares storing r over cur: the encoded record, the
// event the change amounts to, if any, and the apply step that moves its
// indexes and counters.
func (s *Store) prepareUserWrite(m *mapping.Mapper, cur, r *record, res *mapping.Result, now time.Time) (writeFunc, error) {
	k := s.users
	enc, err := k.encode(r)
	if err != nil {
		return nil, err
	}
	if err := s.checkSize(k, enc, cur.size); err != nil {
		return nil, err
	}
	wasActive, active := isActive(cur.Doc), isActive(r.Doc)
	changes := mapping.Diff(cur.Record, r.Record)
	typ := "user.updated"
	switch {
	case wasActive && !active:
		typ = "user.deactivated"
	case !wasActive && active:
		typ = "user.reactivated"
	case len(changes) == 0:
		typ = ""
	}
	var evs []event
	if typ != "" {
		ev, err := newEvent(typ, []string{resKey("User", r.ID)}, dataOf("user", r.Data), changes)
		if err != nil {
			return nil, err
		}
		evs = append(evs, ev)
	}
	idents := s.newIdentifiers(r, cur)
	return func(tx *bolt.Tx) error {
		if err := s.checkMatch(tx, m, r.Doc, r.ID); err != nil {
			return err
		}
		s.warned(tx, "user", r.ID, res.WarnedFields)
		if err := k.index(tx, cur, r); err != nil {
			return err
		}
		if err := indexEmails(tx, cur, r); err != nil {
			return err
		}
		if err := tx.Bucket(k.data).Put([]byte(r.ID), enc.bytes(r.Seq)); err != nil {
			return err
		}
		if err := clearRejected(tx, "user", r.ID); err != nil {
			return err
		}
		if wasActive != active {
			delta := 1
			if !active {
				delta = -1
			}
			if err := addCounter(tx.Bucket(bucketMeta), keyActive, delta); err != nil {
				return err
			}
		}
		if err := setRefs(tx, r.ID, res.Refs); err != nil {
			return err
		}
		if err := s.enqueueAll(tx, evs...); err != nil {
			return err
		}
		if err := s.resolveDependants(tx, m, r, idents, now); err != nil {
			return err
		}
		if err := s.remapReferencing(tx, m, r.ID, changes, now); err != nil {
			return err
		}
		return s.touched(tx, now)
	}, nil
}

// DeleteUser removes the user (Entra's hard delete). Its memberships go
// too, each with a group.member_removed event, then user.deleted, which
// carries a version above every earlier event's, so a consumer that drops
// lower versions keeps it. Users whose reference (manager) pointed at it are
// mapped again: the reference waits for the user's return, and each whose
// record changes gets user.updated.
func (s *Store) DeleteUser(id, ifMatch string) error {
	if err := checkID("id", id); err != nil {
		return err
	}
	return s.w.update(func(tx *bolt.Tx) error {
		k, m := s.users, s.mapper.Load()
		r, err := k.get(tx, id)
		if err != nil {
			return err
		}
		if err := checkIfMatch(ifMatch, s.userETag(tx, r)); err != nil {
			return err
		}
		now := s.now()
		// The membership events carry the user as it was; the deletion
		// is the user's own change, at a version above all of them.
		if err := s.dropMemberships(tx, id, eventData(r), now); err != nil {
			return err
		}
		r.Version, r.Modified = s.nextVersion(r.Version), now
		if err := r.encodeData(); err != nil {
			return err
		}
		if err := k.unindex(tx, r); err != nil {
			return err
		}
		if err := indexEmails(tx, r, nil); err != nil {
			return err
		}
		if isActive(r.Doc) {
			if err := addCounter(tx.Bucket(bucketMeta), keyActive, -1); err != nil {
				return err
			}
		}
		if err := setRefs(tx, id, nil); err != nil {
			return err
		}
		if err := tx.Bucket(k.data).Delete([]byte(id)); err != nil {
			return err
		}
		if err := clearRejected(tx, "user", id); err != nil {
			return err
		}
		if err := s.enqueue(tx, "user.deleted", []string{resKey("User", id)}, dataOf("user", eventData(r)), nil); err != nil {
			return err
		}
		var dependants []string
		scanPrefix(tx.Bucket(bucketRefsResolved), id, func(dep, _ []byte) bool {
			dependants = append(dependants, string(dep))
			return true
		})
		for _, dep := range dependants {
			if err := dropResolved(tx, dep, id); err != nil {
				return err
			}
			if _, err := s.remapUser(tx, m, dep, now, ""); err != nil {
				return err
			}
		}
		return s.touched(tx, now)
	})
}

// checkMatch enforces the mapping's matching attribute beyond userName:
// with "emails" or "externalId", a second user with the same value would be
// the same person twice, so it is a conflict (IdPs then link instead).
func (s *Store) checkMatch(tx *bolt.Tx, m *mapping.Mapper, doc map[string]any, id string) error {
	switch m.MatchAttribute() {
	case "emails":
		for i, e := range emailsOf(doc) {
			if other, ok := firstOtherByPrefix(tx.Bucket(bucketUsersByEmail), e, id); ok {
				return scim.Errorf(http.StatusConflict, scim.Uniqueness,
					"a user with the email of emails[%d] already exists (id %s); users are matched by email in this gateway", i, other)
			}
		}
	case "externalId":
		if ext := exactKey(externalIDOf(doc)); ext != "" {
			if other, ok := firstOtherByPrefix(tx.Bucket(bucketUsersByExtID), ext, id); ok {
				return scim.Errorf(http.StatusConflict, scim.Uniqueness,
					"a user with this externalId already exists (id %s); users are matched by externalId in this gateway", other)
			}
		}
	}
	return nil
}

// firstOtherByPrefix returns an id other than self under "value 0x00 id".
func firstOtherByPrefix(b *bolt.Bucket, value, self string) (other string, ok bool) {
	scanPrefix(b, value, func(id, _ []byte) bool {
		if string(id) != self {
			other, ok = string(id), true
		}
		return !ok
	})
	return other, ok
}

// isActive reads SCIM active; a user without it is active (RFC 7643 leaves
// the default to the provider, and Okta creates users with active:true).
func isActive(doc map[string]any) bool {
	v, ok := scim.Get(doc, "active")
	if !ok {
		return true
	}
	b, ok := scim.ParseBool(v)
	return !ok || b
}

// emailsOf returns the index keys (foldKey) of a user's email values.
func emailsOf(doc map[string]any) []string {
	var out []string
	for _, e := range emailValues(doc) {
		if key := foldKey(e); key != "" {
			out = append(out, key)
		}
	}
	return out
}

// indexEmails moves the email index entries from old to r (either may be nil).
func indexEmails(tx *bolt.Tx, old, r *record) error {
	b := tx.Bucket(bucketUsersByEmail)
	if old != nil {
		for _, e := range emailsOf(old.Doc) {
			if err := b.Delete(joinKey(e, old.ID)); err != nil {
				return err
			}
		}
	}
	if r != nil {
		for _, e := range emailsOf(r.Doc) {
			if err := b.Put(joinKey(e, r.ID), nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// firstByPrefix returns the first whole id under "value 0x00 id" keys of b.
func firstByPrefix(b *bolt.Bucket, value string) (id string, ok bool) {
	if value == "" {
		return "", false
	}
	scanPrefix(b, value, func(tail, _ []byte) bool {
		id, ok = string(tail), true
		return false
	})
	return id, ok
}

// txResolver resolves mapping references against the store inside the
// current transaction, with the same keys as the uniqueness checks.
type txResolver struct {
	tx *bolt.Tx
	s  *Store
}

// ResolveUser implements mapping.Resolver.
func (r txResolver) ResolveUser(by, value string) (string, bool) {
	if value == "" {
		return "", false
	}
	switch strings.ToLower(by) {
	case "id":
		if checkIdentifier("id", value) == nil && r.tx.Bucket(bucketUsers).Get([]byte(value)) != nil {
			return value, true
		}
	case "externalid":
		return firstByPrefix(r.tx.Bucket(bucketUsersByExtID), exactKey(value))
	case "username":
		if key := foldKey(value); key != "" {
			if id := r.tx.Bucket(bucketUsersByName).Get([]byte(key)); id != nil {
				return string(id), true
			}
		}
	case "email", "emails":
		return firstByPrefix(r.tx.Bucket(bucketUsersByEmail), foldKey(value))
	}
	return "", false
}

// UserRecord implements mapping.RecordResolver: the canonical record of
// user id, which a reference with a field outputs from.
func (r txResolver) UserRecord(id string) (map[string]any, bool) {
	return userRecordOf(r.tx.Bucket(bucketUsers).Get([]byte(id)))
}

// UserRecord is txResolver's, recording the user's stored bytes in the
// read set: a write of that user committed before this one is applied
// changes them, and the write is prepared again with the new value.
func (r recResolver) UserRecord(id string) (map[string]any, bool) {
	return userRecordOf(r.rs.get(r.tx, bucketUsers, []byte(id)))
}

// userRecordOf decodes only the canonical record of a stored user (nil:
// no such user).
func userRecordOf(v []byte) (map[string]any, bool) {
	if v == nil {
		return nil, false
	}
	var r struct {
		Record map[string]any `json:"record"`
	}
	if err := decodeJSON(v, &r); err != nil {
		return nil, false
	}
	return r.Record, true
}

// remapReferencing maps again the users whose references resolved to user
// id when its record changed in a field some reference outputs
// (mapping.Mapper.ReferencedFields): each whose record changes gets
// user.updated. A reference to the SCIM id alone needs nothing here.
func (s *Store) remapReferencing(tx *bolt.Tx, m *mapping.Mapper, id string, changes map[string]mapping.Change, now time.Time) error {
	if !slices.ContainsFunc(m.ReferencedFields(), func(f string) bool { _, ok := changes[f]; return ok }) {
		return nil
	}
	var dependants []string
	scanPrefix(tx.Bucket(bucketRefsResolved), id, func(dep, _ []byte) bool {
		dependants = append(dependants, string(dep))
		return true
	})
	for _, dep := range dependants {
		if _, err := s.remapUser(tx, m, dep, now, ""); err != nil {
			return err
		}
	}
	return nil
}

// setRefs replaces the references of dependant id: the unresolved ones
// wait under foldKey(value) in refs_pending (resolveDependants links them
// when a user with that value arrives), the resolved ones are indexed by
// their target in refs_resolved (DeleteUser unlinks them).
func setRefs(tx *bolt.Tx, id string, refs []mapping.Ref) error {
	pending, dep := tx.Bucket(bucketRefsPending), tx.Bucket(bucketRefsDependent)
	var old, targets [][]byte
	scanPrefix(dep, id, func(value, _ []byte) bool { old = append(old, bytes.Clone(value)); return true })
	scanPrefix(tx.Bucket(bucketRefsResolvedBy), id, func(t, _ []byte) bool { targets = append(targets, bytes.Clone(t)); return true })
	for _, value := range old {
		if err := dep.Delete(joinKey(id, string(value))); err != nil {
			return err
		}
		if err := pending.Delete(joinKey(string(value), id)); err != nil {
			return err
		}
	}
	for _, t := range targets {
		if err := dropResolved(tx, id, string(t)); err != nil {
			return err
		}
	}
	for _, ref := range refs {
		switch {
		case ref.Resolved && ref.ID != "" && ref.ID != id:
			if err := putResolved(tx, id, ref.ID, ref.Field); err != nil {
				return err
			}
		case !ref.Resolved:
			value := foldKey(ref.Value)
			if value == "" {
				continue
			}
			if err := pending.Put(joinKey(value, id), []byte(ref.Field)); err != nil {
				return err
			}
			if err := dep.Put(joinKey(id, value), nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// putResolved records that dependant dep's field references user target.
func putResolved(tx *bolt.Tx, dep, target, field string) error {
	if err := tx.Bucket(bucketRefsResolved).Put(joinKey(target, dep), []byte(field)); err != nil {
		return err
	}
	return tx.Bucket(bucketRefsResolvedBy).Put(joinKey(dep, target), nil)
}

func dropResolved(tx *bolt.Tx, dep, target string) error {
	if err := tx.Bucket(bucketRefsResolved).Delete(joinKey(target, dep)); err != nil {
		return err
	}
	return tx.Bucket(bucketRefsResolvedBy).Delete(joinKey(dep, target))
}

// resolveDependants re-maps every user whose reference waits for one of
// keys (r's identifiers — id, externalId, userName, emails — that it did
// not have before: newIdentifiers), emitting user.updated for each whose
// record changes. This is how a manager pushed after their reports is
// linked without a resync.
func (s *Store) resolveDependants(tx *bolt.Tx, m *mapping.Mapper, r *record, keys []string, now time.Time) error {
	pending := tx.Bucket(bucketRefsPending)
	var dependants []string
	for _, value := range keys {
		scanPrefix(pending, value, func(dep, _ []byte) bool {
			if string(dep) != r.ID {
				dependants = append(dependants, string(dep))
			}
			return true
		})
	}
	for _, id := range dedupe(dependants) {
		if _, err := s.remapUser(tx, m, id, now, ""); err != nil {
			return err
		}
	}
	return nil
}

// newIdentifiers are r's identifiers that cur (nil: none) did not have.
func (s *Store) newIdentifiers(r, cur *record) []string {
	keys := s.identifiers(r)
	if cur == nil {
		return keys
	}
	had := map[string]bool{}
	for _, k := range s.identifiers(cur) {
		had[k] = true
	}
	out := keys[:0:0]
	for _, k := range keys {
		if !had[k] {
			out = append(out, k)
		}
	}
	return out
}

// remapUser maps user id again with m (its references may resolve
// differently now, or the mapping changed), stores the new record and
// emits user.updated, with cause, when it changed. A record that does not
// change but was made by another mapping is stamped with m's fingerprint.
// A user m rejects keeps its record and references: the outcome says why.
func (s *Store) remapUser(tx *bolt.Tx, m *mapping.Mapper, id string, now time.Time, cause string) (remapOutcome, error) {
	d, err := s.users.get(tx, id)
	if err != nil {
		return remapOutcome{}, nil // deleted in the meantime: setRefs cleaned it, nothing to do
	}
	res, changes, rej := compareUser(tx, m, d)
	if rej != nil {
		// A dependant mapped before; a reference turning up or going
		// cannot make it invalid. Keep its references as they are rather
		// than fail the write of an unrelated user. A changed mapping can:
		// the caller lists it.
		return remapOutcome{rejected: rej}, nil
	}
	if err := setRefs(tx, id, res.Refs); err != nil {
		return remapOutcome{}, err
	}
	fp := m.Fingerprint()
	if len(changes) == 0 {
		if d.FP == fp {
			return remapOutcome{}, nil
		}
		d.FP = fp // the same record, now known to be the new mapping's
		return remapOutcome{}, s.users.put(tx, d)
	}
	s.warned(tx, "user", id, res.WarnedFields)
	next := *d
	next.Record, next.Version, next.Modified, next.Data, next.FP = res.Record, s.nextVersion(d.Version), now, nil, fp
	if err := s.users.put(tx, &next); err != nil {
		return remapOutcome{}, err
	}
	return remapOutcome{changes: changes}, s.enqueueCause(tx, "user.updated", []string{resKey("User", id)}, dataOf("user", eventData(&next)), changes, cause)
}

// identifiers are the keys (foldKey) a reference can name a user by.
func (s *Store) identifiers(r *record) []string {
	ids := []string{foldKey(r.ID)}
	if ext := foldKey(externalIDOf(r.Doc)); ext != "" {
		ids = append(ids, ext)
	}
	if name := foldKey(s.users.nameOf(r.Doc)); name != "" {
		ids = append(ids, name)
	}
	return append(ids, emailsOf(r.Doc)...)
}
