// Package outbox stores webhook events in the same bbolt transaction as the
// state change that caused them, and delivers them at least once to every
// subscribed webhook target: signed per Standard Webhooks, ordered per
// resource, retried with backoff, and dead-lettered visibly when they
// cannot be delivered. It imports no package of this module.
//
// Bucket layout:
//
//	outbox_events            be64(seq) → JSON(record)    the log, appended by Enqueue
//	outbox_targets/<name>/   one bucket per target:
//	    "cursor"             be64(seq): every event ≤ cursor is settled for this target
//	    done/                be64(seq) → ""               settled events above the cursor
//	    retry/               be64(seq) → JSON(attempt)    failed attempts of unsettled events
//	    dead/                be64(seq) → JSON(DeadLetter) kept until replayed or discarded
//	    replay/              be64(seq) → JSON(record)     replayed dead letters, pending again
//	    "paused"             reason, when paused
//	    "stats"              JSON(counters)
//
// An event is settled for a target when it was delivered, dead-lettered,
// or is not one the target subscribes to. Per target, an event is sent only
// when every earlier unsettled event sharing one of its resource keys has
// settled, so a user's events arrive in order while unrelated users' events
// flow in parallel. The log is pruned behind the slowest target's cursor
// once events are older than the retention period.
package outbox
