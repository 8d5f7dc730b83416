// Package store keeps SCIM users and groups in bbolt, with the secondary
// indexes an identity provider's lookups need, and appends the resulting
// webhook events to the outbox in the same write transaction. A write is
// acknowledged only after that transaction has committed with fsync, so no
// acknowledged change and no event is ever lost, and no event is emitted for
// a change that did not commit.
//
// Bucket layout (one bbolt file, shared with the outbox):
//
//	meta            "schema" → "1"; counters; "last_change"
//	users           id → JSON(record)
//	users_by_name   lower(userName) → id                 unique
//	users_by_extid  externalId 0x00 id → ""
//	users_by_email  lower(email) 0x00 id → ""
//	users_order     be64(seq) → id                       creation order, for paging
//	users_blocks    be64(seq>>10) → be64(live count)     so startIndex costs O(n/1024 + 1024)
//	groups…         the same for groups (by displayName)
//	members         groupID 0x00 memberID → JSON(member) one key per membership …
//	member_of       memberID 0x00 groupID → ""           … in both directions
//	refs_pending    lower(value) 0x00 dependentID → field   unresolved references (manager)
//	refs_dependent  dependentID 0x00 lower(value) → ""
//
// Writes go through a single writer goroutine that commits whatever is
// queued in one transaction (group commit).
package store
