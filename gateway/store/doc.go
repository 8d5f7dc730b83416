// Package store keeps SCIM users and groups in bbolt, with the secondary
// indexes an identity provider's lookups need, and appends the resulting
// webhook events to the outbox in the same write transaction. A write is
// acknowledged only after that transaction has committed with fsync, so no
// acknowledged change and no event is ever lost, and no event is emitted for
// a change that did not commit.
//
// Bucket layout, schema 3 (one bbolt file, shared with the outbox). fold(v)
// is foldKey (trim, NFC, full case folding, invisible characters dropped),
// exact(v) is exactKey (trim, NFC); ids never contain 0x00, and a prefix
// lookup only accepts a whole id after "value 0x00":
//
//	meta                 "schema" → "3"; counters; "last_change"; "mapping_fp", "remap" (remap.go)
//	users                id → JSON(record)                    record.fp: the mapping's fingerprint
//	users_by_name        fold(userName) → id                  unique
//	users_name_shadowed  fold(userName) 0x00 id → be64(seq)   migrated look-alikes (see Collision)
//	users_by_extid       exact(externalId) 0x00 id → ""
//	users_by_email       fold(email) 0x00 id → ""
//	users_order          be64(seq) → id                       creation order, for paging and cursors
//	users_blocks         be64(seq>>10) → be64(live count)     so startIndex costs O(n/1024 + 1024)
//	users_remap          id → ""                              users New maps again (see migrate1)
//	groups…              the same for groups (by displayName)
//	members              groupID 0x00 memberID → JSON(member) one key per membership …
//	member_of            memberID 0x00 groupID → ""           … in both directions
//	member_counts        groupID → be64(members)              counted without reading them
//	refs_pending         fold(value) 0x00 dependentID → field unresolved references (manager)
//	refs_dependent       dependentID 0x00 fold(value) → ""
//	refs_resolved        targetID 0x00 dependentID → field    resolved references, unlinked when the target goes
//	refs_resolved_by     dependentID 0x00 targetID → ""
//	mapping_rejected     "user/"id or "group/"id → JSON       resources the mapping in force rejects (remap.go)
//
// Writes go through a single writer goroutine that commits whatever is
// queued in one transaction (group commit); a write that panics there
// fails alone and is logged, the writer goes on. Creates, PUTs and PATCHes
// are prepared outside it, in the caller's goroutine against a read
// snapshot, and the writer only checks that what they read is unchanged
// before applying the prepared bytes (prepare.go). Ids are UUID version 7,
// so new keys append; CompactFile, SyncFreelist and BoltOptions are what
// the application opens, closes and compacts the file with (compact.go).
package store
