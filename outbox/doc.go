// Package outbox stores events in the same bbolt transaction as the state
// change that caused them and delivers them at least once to every subscribed
// webhook target: signed per Standard Webhooks, ordered per resource,
// concurrent across unrelated resources, retried on a durable backoff
// schedule, and dead-lettered visibly when they cannot be delivered. It
// imports no package of this module.
//
// # Contract
//
// Enqueue appends an event inside the caller's write transaction, so an event
// exists if and only if its change committed. Delivery is at least once: the
// webhook-id header (the event ID) is stable across retries and restarts, and
// receivers deduplicate on it. Per target, an event is not sent before every
// earlier event sharing one of its Resources keys has been delivered or
// dead-lettered; unrelated events are sent in parallel, up to Concurrency per
// target. 2xx is success; network errors, timeouts, 408, 429 and 5xx are
// retried (Retry-After honoured, clamped); 3xx and other 4xx dead-letter at
// once; 410 pauses the target. After MaxAttempts or MaxAge an event is
// dead-lettered: kept, listed, counted and replayable. Nothing is dropped
// silently.
//
// # Bucket layout
//
//	outbox_meta                 "schema" → "1"
//	outbox_events               be64(seq) → JSON{id,type,at,res,data,changes}
//	                            the global log; seq from NextSequence
//	outbox_targets/<name>/      one nested bucket per target:
//	    "cursor"                be64: highest seq examined for admission
//	    "pause"                 JSON{reason,at}, present while paused
//	    "stats"                 JSON{delivered,last_success,last_error,…}
//	    "dead_n", "replay_n"    be64 counters of dead/ and replay/
//	    pending/                be64(seq) → JSON{attempts,next,first,last,status,error}
//	                            admitted events not yet delivered or dead
//	    replay/                 be64(seq) → JSON(DeadLetter), replayed and
//	                            waiting to move back to pending/
//	    dead/                   be64(seq) → JSON(DeadLetter), with a full copy
//	                            of the event
//	    dead_ids/               event ID → be64(seq), index into dead/
//
// The dispatcher reads the log past each target's cursor, admits the events
// the target subscribes to into pending/ (in memory too, up to a window) and
// advances the cursor in the same transaction. An outcome deletes the pending
// entry (delivered), rewrites it (retry: attempts, next attempt time, last
// error), or moves it to dead/. A restart reloads pending/ and resumes exactly
// there. Outcomes are committed in batches by a single writer goroutine (one
// fsync for many), in the order they happened. A new target starts with the
// events enqueued after NewDispatcher.
//
// A log entry is pruned once it is older than the retention, every configured
// target's cursor is past it and no target has it pending: keys are collected
// in a View and deleted in chunks by later write transactions. Dead letters
// carry their own copy of the event, so they survive pruning; replaying one
// restores its log entry if needed.
package outbox
