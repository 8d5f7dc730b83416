package store

import (
	"errors"
	"fmt"
	"runtime/debug"
	"slices"

	bolt "go.etcd.io/bbolt"

	"github.com/scimgate/scimgate/mapping"
)

// warned reports the mapping warnings of resource id to the Observer once
// tx commits (a batch that rolls back and runs again reports them once).
func (s *Store) warned(tx *bolt.Tx, resource, id string, fields []string) {
	if s.obs == nil || len(fields) == 0 {
		return
	}
	fields = slices.Clone(fields)
	tx.OnCommit(func() {
		s.observe(func() {
			for _, f := range fields {
				s.obs.MappingWarning(resource, id, f)
			}
		})
	})
}

// rejected reports a write the mapping refused, once it has been answered.
func (s *Store) rejected(resource string, err error) {
	var rej *mapping.Rejection
	if s.obs != nil && errors.As(err, &rej) {
		s.observe(func() { s.obs.MappingRejected(resource, slices.Clone(rej.Fields)) })
	}
}

// ignoredMembers logs and reports, once tx commits, the member ids of a
// write of group id that named nothing and were dropped (UnknownIgnore).
func (s *Store) ignoredMembers(tx *bolt.Tx, groupID string, n int) {
	if n == 0 {
		return
	}
	tx.OnCommit(func() { s.reportIgnored(groupID, n) })
}

// reportIgnored logs and reports ignored member ids now: for a write that
// had nothing else to change, so commits nothing.
func (s *Store) reportIgnored(groupID string, n int) {
	if n == 0 {
		return
	}
	s.log.Warn("group write named member ids that are not users or groups of this gateway; they were ignored (scim.unknown_members: ignore)",
		"group_id", groupID, "unknown_members", n)
	if s.obs != nil {
		s.observe(func() { s.obs.UnknownMembers(groupID, n) })
	}
}

// observe calls the Observer. A panic there is logged and goes no
// further: it runs in the writer's commit handlers, where it would stop
// the writer after the commit, before the writes are answered.
func (s *Store) observe(call func()) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("store observer panicked", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		}
	}()
	call()
}
