package store

import (
	"bytes"
	"encoding/binary"
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
	// Members includes group members in the results (groups only).
	Members bool
}

// ListUsers returns the total number of users matching q and the page q
// selects, in creation order (stable across pages, as Okta's import needs).
func (s *Store) ListUsers(q Query) (int, []*Resource, error) {
	return s.list(s.users, q, func(tx *bolt.Tx, r *record) *Resource { return s.userResource(tx, r) })
}

// ListGroups is ListUsers for groups.
func (s *Store) ListGroups(q Query) (int, []*Resource, error) {
	return s.list(s.groups, q, func(tx *bolt.Tx, r *record) *Resource { return s.groupResource(tx, r, q.Members) })
}

func (s *Store) list(k *kind, q Query, render func(*bolt.Tx, *record) *Resource) (int, []*Resource, error) {
	if q.StartIndex < 1 {
		q.StartIndex = 1
	}
	if q.Count < 0 {
		q.Count = 0
	}
	var total int
	var page []*Resource
	err := s.db.View(func(tx *bolt.Tx) error {
		switch {
		case q.Filter == nil:
			total = int(getCounter(tx.Bucket(bucketMeta), k.count))
			return s.pageAll(tx, k, q, func(r *record) { page = append(page, render(tx, r)) })
		default:
			if ids, ok := s.candidates(tx, k, q.Filter); ok {
				return s.pageCandidates(tx, k, q, ids, &total, func(r *record) { page = append(page, render(tx, r)) })
			}
			return s.pageScan(tx, k, q, &total, func(r *record) { page = append(page, render(tx, r)) })
		}
	})
	return total, page, err
}

// pageAll walks the creation-order index from position StartIndex. The
// per-block live counts let it skip whole blocks of 1024 without reading
// them, so a deep page of a 100k import costs about as much as the first.
func (s *Store) pageAll(tx *bolt.Tx, k *kind, q Query, emit func(*record)) error {
	if q.Count == 0 {
		return nil
	}
	skip := uint64(q.StartIndex - 1)
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
	c := tx.Bucket(k.order).Cursor()
	got := 0
	for key, id := c.Seek(from); key != nil && got < q.Count; key, id = c.Next() {
		if skip > 0 {
			skip--
			continue
		}
		r, err := k.get(tx, string(id))
		if err != nil {
			return err
		}
		emit(r)
		got++
	}
	return nil
}

// candidates answers `attr eq "value"` on an indexed attribute (also when
// it is one term of a top-level and) with the ids to check, so Okta's and
// Entra's lookup before every create is a point lookup, not a scan.
func (s *Store) candidates(tx *bolt.Tx, k *kind, f *scim.Filter) ([]string, bool) {
	p, value, ok := f.Equality()
	if !ok {
		return nil, false
	}
	if p.URN != "" && !strings.EqualFold(p.URN, k.rt.Schema.ID) {
		return nil, false
	}
	attr := strings.ToLower(p.Attr)
	switch {
	case p.Filter == nil && p.Sub == "" && attr == "id":
		if tx.Bucket(k.data).Get([]byte(value)) != nil {
			return []string{value}, true
		}
		return nil, true
	case p.Filter == nil && p.Sub == "" && attr == strings.ToLower(k.nameAttr):
		if id := tx.Bucket(k.byName).Get([]byte(strings.ToLower(value))); id != nil {
			return []string{string(id)}, true
		}
		return nil, true
	case p.Filter == nil && p.Sub == "" && attr == "externalid":
		return idsByPrefix(tx.Bucket(k.byExtID), value), true
	case k == s.users && attr == "emails" && (p.Sub == "" || strings.EqualFold(p.Sub, "value")):
		return idsByPrefix(tx.Bucket(bucketUsersByEmail), strings.ToLower(value)), true
	}
	return nil, false
}

func idsByPrefix(b *bolt.Bucket, value string) []string {
	prefix := []byte(value + "\x00")
	var ids []string
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		ids = append(ids, string(k[len(prefix):]))
	}
	return ids
}

func (s *Store) pageCandidates(tx *bolt.Tx, k *kind, q Query, ids []string, total *int, emit func(*record)) error {
	var matched []*record
	for _, id := range ids {
		r, err := k.get(tx, id)
		if err == ErrNotFound {
			continue
		} else if err != nil {
			return err
		}
		if q.Filter.Match(s.matchDoc(k, r), k.rt) {
			matched = append(matched, r)
		}
	}
	sort.Slice(matched, func(i, j int) bool { return matched[i].Seq < matched[j].Seq })
	*total = len(matched)
	for i := q.StartIndex - 1; i < len(matched) && i < q.StartIndex-1+q.Count; i++ {
		emit(matched[i])
	}
	return nil
}

// pageScan evaluates the filter on every resource in creation order.
func (s *Store) pageScan(tx *bolt.Tx, k *kind, q Query, total *int, emit func(*record)) error {
	c := tx.Bucket(k.order).Cursor()
	for key, id := c.First(); key != nil; key, id = c.Next() {
		r, err := k.get(tx, string(id))
		if err != nil {
			return err
		}
		if !q.Filter.Match(s.matchDoc(k, r), k.rt) {
			continue
		}
		*total++
		if *total >= q.StartIndex && *total < q.StartIndex+q.Count {
			emit(r)
		}
	}
	return nil
}

// matchDoc is the document a filter sees: the stored attributes with id
// and meta, so meta.created and id filters work.
func (s *Store) matchDoc(k *kind, r *record) map[string]any {
	return k.resource(r).Doc
}
