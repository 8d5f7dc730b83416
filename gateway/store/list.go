package store

import (
	"encoding/binary"
	"encoding/json"
	"net/http"
	"sort"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/scimgate/scimgate/gateway/scim"
)

// Query selects a page of resources.
type Query struct {
	Filter     *scim.Filter // nil: all
	StartIndex int          // 1-based position of the first result
	Count      int          // page size; 0 returns only the total
	// Members includes group members in the results (groups only). A
	// page holds Count resources whenever that many match: its size never
	// depends on the members it holds. The SCIM API lists groups without
	// members and reads each group's members as it writes the response
	// (gateway/resources.go), so what it holds is bounded by one group.
	Members bool
}

// ListUsers returns the total number of users matching q and the page q
// selects, in creation order (stable across pages, as Okta's import needs).
//
// Filters on group membership (`groups.value eq "<group id>"`, `groups eq
// …`, `groups[value eq …]`, as top-level "and" terms) are answered from the
// membership index, in id order; any other filter on groups is a 400
// invalidFilter that says which shapes work.
func (s *Store) ListUsers(q Query) (int, []*Resource, error) {
	return s.list(s.users, q, func(tx *bolt.Tx, r *record) *Resource { return s.userResource(tx, r) })
}

// ListGroups is ListUsers for groups, with members when q.Members;
// `members eq "<id>"` (also `members.value eq` and
// `members[value eq …]`, alone or and-ed with other terms such as Entra's
// `id eq "<group>" and members eq "<user>"`) is answered from the index.
func (s *Store) ListGroups(q Query) (int, []*Resource, error) {
	return s.list(s.groups, q, func(tx *bolt.Tx, r *record) *Resource {
		return s.groupResource(tx, r, q.Members)
	})
}

// page collects the resources of one list page: the matches at positions
// [start, start+count).
type page struct {
	tx           *bolt.Tx
	start, count int
	seen         int // matches so far
	items        []*Resource
	render       func(*bolt.Tx, *record) *Resource
}

// inWindow reports whether the next match would be rendered.
func (p *page) inWindow() bool {
	return p.seen+1 >= p.start && len(p.items) < p.count
}

// add counts a match and renders it when it belongs on the page.
func (p *page) add(r *record) {
	in := p.inWindow()
	p.seen++
	if !in {
		return
	}
	p.items = append(p.items, p.render(p.tx, r))
}

// done reports whether no further match can be rendered.
func (p *page) done() bool { return len(p.items) >= p.count }

func (s *Store) list(k *kind, q Query, render func(*bolt.Tx, *record) *Resource) (int, []*Resource, error) {
	q.StartIndex = max(q.StartIndex, 1)
	q.Count = max(q.Count, 0)
	var total int
	var items []*Resource
	err := s.view(func(tx *bolt.Tx) error {
		p := &page{tx: tx, start: q.StartIndex, count: q.Count, render: render}
		var err error
		switch {
		case q.Filter == nil:
			total = int(getCounter(tx.Bucket(bucketMeta), k.count))
			err = s.pageAll(tx, k, p)
		default:
			var terms []string
			var rest *scim.Filter
			if terms, rest, err = s.membershipTerms(k, q.Filter); err != nil {
				return err
			}
			switch ids, rest2, ok := s.candidates(tx, k, rest); {
			case len(terms) > 0 && ok:
				err = s.pageCandidates(tx, k, p, s.inAll(tx, k, ids, terms), rest2)
			case len(terms) > 0:
				err = s.pageMembers(tx, k, p, terms, rest)
			case ok:
				err = s.pageCandidates(tx, k, p, ids, rest2)
			default:
				err = s.pageScan(tx, k, p, q.Filter)
			}
			total = p.seen
		}
		items = p.items
		return err
	})
	return total, items, err
}

// pageAll walks the creation-order index from position StartIndex. The
// per-block live counts let it skip whole blocks of 1024 without reading
// them, so a deep page of a 100k import costs about as much as the first.
func (s *Store) pageAll(tx *bolt.Tx, k *kind, p *page) error {
	if p.count == 0 {
		return nil
	}
	skip := uint64(p.start - 1)
	var from []byte
	bc := tx.Bucket(k.blocks).Cursor()
	for bk, bv := bc.First(); bk != nil; bk, bv = bc.Next() {
		n := binary.BigEndian.Uint64(bv)
		if n > skip {
			from = be64(binary.BigEndian.Uint64(bk) << blockBits)
			break
		}
		skip -= n
	}
	if from == nil {
		return nil
	}
	p.seen = p.start - 1 - int(skip) // positions before the block
	c := tx.Bucket(k.order).Cursor()
	for key, id := c.Seek(from); key != nil && !p.done(); key, id = c.Next() {
		if !p.inWindow() {
			p.seen++
			continue
		}
		r, err := k.get(tx, string(id))
		if err != nil {
			return err
		}
		p.add(r)
	}
	return nil
}

// membershipAttr is the multi-valued reference attribute derived from the
// membership index: a group's members, a user's groups.
func (s *Store) membershipAttr(k *kind) string {
	if k == s.groups {
		return "members"
	}
	return "groups"
}

// membershipTerms takes the membership equalities out of f's top-level
// "and" chain: the ids they compare with, and the rest of the filter. A
// filter that names the membership attribute in any other way cannot be
// answered (the stored documents do not hold memberships) and is a 400.
func (s *Store) membershipTerms(k *kind, f *scim.Filter) ([]string, *scim.Filter, error) {
	attr := s.membershipAttr(k)
	if !f.Mentions(attr) {
		return nil, f, nil
	}
	var ids []string
	var rest []*scim.Filter
	for _, c := range f.Conjuncts() {
		if id, ok := c.MembershipValue(attr); ok {
			ids = append(ids, id)
			continue
		}
		if c.Mentions(attr) {
			other := "a user"
			if k == s.users {
				other = "a group"
			}
			return nil, nil, scim.Errorf(http.StatusBadRequest, scim.InvalidFilter,
				"this filter uses %s in a form scimgate cannot evaluate: %s is matched only by equality with the id of %s, as %s eq \"<id>\", %s.value eq \"<id>\" or %s[value eq \"<id>\"], alone or joined to other conditions with \"and\" (not under \"or\" or \"not\", and no other operator or sub-attribute)",
				attr, attr, other, attr, attr, attr)
		}
		rest = append(rest, c)
	}
	return ids, scim.And(rest...), nil
}

// isMember reports whether the membership (group, member) exists, where
// the resource listed is id and the term names the other side.
func (s *Store) isMember(tx *bolt.Tx, k *kind, id, term string) bool {
	group, member := id, term
	if k == s.users {
		group, member = term, id
	}
	return tx.Bucket(bucketMembers).Get(joinKey(group, member)) != nil
}

// inAll keeps the ids that satisfy every membership term.
func (s *Store) inAll(tx *bolt.Tx, k *kind, ids, terms []string) []string {
	out := ids[:0:0]
next:
	for _, id := range ids {
		for _, t := range terms {
			if !s.isMember(tx, k, id, t) {
				continue next
			}
		}
		out = append(out, id)
	}
	return out
}

// pageMembers answers a filter with membership terms from the index: the
// groups of the first term's member (member_of), or the users among the
// first term's group's members (members), in id order; the other terms are
// point lookups and rest is evaluated on each candidate. Without rest only
// the page's records are read.
func (s *Store) pageMembers(tx *bolt.Tx, k *kind, p *page, terms []string, rest *scim.Filter) error {
	var ids []string
	if k == s.groups {
		scanPrefix(tx.Bucket(bucketMemberOf), terms[0], func(gid, _ []byte) bool {
			ids = append(ids, string(gid))
			return true
		})
	} else {
		scanPrefix(tx.Bucket(bucketMembers), terms[0], func(id, v []byte) bool {
			var m member
			if json.Unmarshal(v, &m) == nil && m.Type == "User" {
				ids = append(ids, string(id))
			}
			return true
		})
	}
	ids = s.inAll(tx, k, ids, terms[1:])
	for _, id := range ids {
		if rest == nil && !p.inWindow() {
			p.seen++
			continue
		}
		r, err := k.get(tx, id)
		if err == ErrNotFound {
			continue
		} else if err != nil {
			return err
		}
		if rest == nil || rest.Match(s.matchDoc(k, r), k.rt) {
			p.add(r)
		}
	}
	return nil
}

// candidates answers an equality on an indexed attribute (id, the name,
// externalId, emails), also when it is one term of a top-level "and", with
// the ids to check, so Okta's and Entra's lookup before every create is a
// point lookup, not a scan. rest is what remains to evaluate with Match:
// the other terms, and the equality itself when the index does not decide
// it (emails[type eq "work"].value). The index decides with the same keys
// as uniqueness, so `userName eq "ada@example.com "` finds the user a
// create with that name would conflict with.
func (s *Store) candidates(tx *bolt.Tx, k *kind, f *scim.Filter) (ids []string, rest *scim.Filter, ok bool) {
	if f == nil {
		return nil, nil, false
	}
	terms := f.Conjuncts()
	for i, t := range terms {
		ids, exact, ok := s.lookup(tx, k, t)
		if !ok {
			continue
		}
		others := make([]*scim.Filter, 0, len(terms))
		for j, u := range terms {
			if j != i || !exact {
				others = append(others, u)
			}
		}
		return ids, scim.And(others...), true
	}
	return nil, nil, false
}

// lookup answers one `attr eq "value"` term from an index; exact reports
// whether the index alone decides it.
func (s *Store) lookup(tx *bolt.Tx, k *kind, t *scim.Filter) (ids []string, exact, ok bool) {
	p, value, ok := t.Equality()
	if !ok {
		return nil, false, false
	}
	if p.URN != "" && !strings.EqualFold(p.URN, k.rt.Schema.ID) {
		return nil, false, false
	}
	attr := strings.ToLower(p.Attr)
	plain := p.Filter == nil && p.Sub == ""
	switch {
	case plain && attr == "id":
		if tx.Bucket(k.data).Get([]byte(value)) != nil {
			return []string{value}, true, true
		}
		return nil, true, true
	case plain && attr == strings.ToLower(k.nameAttr):
		if key := foldKey(value); key != "" {
			if id := tx.Bucket(k.byName).Get([]byte(key)); id != nil {
				return []string{string(id)}, true, true
			}
		}
		return nil, true, true
	case plain && attr == "externalid":
		return idsByPrefix(tx.Bucket(k.byExtID), exactKey(value)), true, true
	case k == s.users && attr == "emails" && (p.Sub == "" || strings.EqualFold(p.Sub, "value")):
		return idsByPrefix(tx.Bucket(bucketUsersByEmail), foldKey(value)), p.Filter == nil, true
	}
	return nil, false, false
}

// pageCandidates evaluates rest on a few candidates and pages them in
// creation order.
func (s *Store) pageCandidates(tx *bolt.Tx, k *kind, p *page, ids []string, rest *scim.Filter) error {
	var matched []*record
	for _, id := range dedupe(ids) {
		r, err := k.get(tx, id)
		if err == ErrNotFound {
			continue
		} else if err != nil {
			return err
		}
		if rest.Match(s.matchDoc(k, r), k.rt) {
			matched = append(matched, r)
		}
	}
	sort.Slice(matched, func(i, j int) bool { return matched[i].Seq < matched[j].Seq })
	for _, r := range matched {
		p.add(r)
	}
	return nil
}

// pageScan evaluates the filter on every resource in creation order.
func (s *Store) pageScan(tx *bolt.Tx, k *kind, p *page, f *scim.Filter) error {
	c := tx.Bucket(k.order).Cursor()
	for key, id := c.First(); key != nil; key, id = c.Next() {
		r, err := k.get(tx, string(id))
		if err != nil {
			return err
		}
		if f.Match(s.matchDoc(k, r), k.rt) {
			p.add(r)
		}
	}
	return nil
}

// matchDoc is the document a filter sees: the stored attributes with id
// and meta, so meta.created and id filters work.
func (s *Store) matchDoc(k *kind, r *record) map[string]any {
	return k.resource(r).Doc
}
