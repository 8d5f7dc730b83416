// Package outbox stores events in the same bbolt transaction as the state
// change that caused them and delivers them at least once to every subscribed
// target: signed per Standard Webhooks (or published to a stream), ordered per
// resource, concurrent across unrelated resources, retried on a durable
// backoff schedule, and dead-lettered visibly when they cannot be delivered.
// It also sends a target a snapshot of the directory (Backfill), re-delivers
// retained history (ReplayHistory), and serves the log as a pull feed (Feed).
// It imports no package of this module.
//
// # Transports
//
// The engine knows no target type by itself. Each type lives in its own
// package under outbox/ (webhook, nats, kafka, rest), which imports only
// this one, and offers a Transport (Validate, New, Describe); the command
// puts them in Config.Transports, and a target whose type has none is a
// configuration error. A type's settings are its section of Target.
//
// # Contract
//
// Enqueue appends an event inside the caller's write transaction, so an event
// exists if and only if its change committed. Delivery is at least once: the
// webhook-id header (the event ID) is stable across retries and restarts, and
// receivers deduplicate on it. Per target, an event is not sent before every
// earlier event sharing one of its Resources keys has been delivered or
// dead-lettered; unrelated events are sent in parallel, up to Concurrency per
// target. One attempt is one request (one Send): the dispatcher's durable
// schedule owns every retry, so a receiver sees at most MaxAttempts requests
// per event. 2xx is success; network errors, timeouts, 408, 429 and 5xx are
// retried (Retry-After honoured, clamped); 3xx and other 4xx dead-letter at
// once; 410 pauses the target. After MaxAttempts or MaxAge an event is
// dead-lettered: kept, listed, counted and replayable. Nothing is dropped
// silently.
//
// # Bucket layout
//
//	outbox_meta                 "schema" → "1"
//	                            "restore_gap" → be64(old tail) be64(floor), one pair per restore, see RaiseSequence
//	                            "boot" → be64(epoch) boot id, see WriteBoot
//	                            "pruned" → be64: highest seq pruning deleted (the feed's watermark)
//	outbox_events               be64(seq) → JSON{id,type,at,res,data,changes}
//	                            the global log; seq from NextSequence
//	outbox_targets/<name>/      one nested bucket per target:
//	    "cursor"                be64: highest seq examined for admission
//	    "pause"                 JSON{reason,at}, present while paused
//	    "stats"                 JSON{delivered,last_success,last_error,…}
//	    "dead_n", "replay_n"    be64 counters of dead/ and replay/
//	    "spool_n"               be64: spool keys handed out
//	    "backfill"              JSON: the last backfill (state, sequence, spool key range)
//	    "backfill_on_start"     "pending" until backfill_on_start ran, then "done"
//	    "history"               JSON{from,to,next,…} while a history replay runs
//	    pending/                key → JSON{attempts,next,first,last,status,error}
//	                            admitted events not yet delivered or dead
//	    spool/                  spool key → JSON event (with its seq): snapshot
//	                            events not yet delivered or dead-lettered
//	    replay/                 key → JSON(DeadLetter), replayed and waiting to
//	                            move back to pending/
//	    dead/                   key → JSON(DeadLetter), with a full copy of the
//	                            event
//	    dead_ids/               event ID → key, index into dead/
//
// A key is be64 of the log seq for a log event, and be64(1<<63 | n) for a
// snapshot event, which is not in the log (its seq is its snapshot's).
//
// The dispatcher reads the log past each target's cursor, admits the events
// the target subscribes to into pending/ (in memory too, up to a window) and
// advances the cursor in the same transaction. An outcome deletes the pending
// entry (delivered), rewrites it (retry: attempts, next attempt time, last
// error), or moves it to dead/. A restart reloads pending/ and resumes exactly
// there. Outcomes are committed in batches by a single writer goroutine (one
// fsync for many), in the order they happened. A target seen for the first
// time starts with the events enqueued after NewDispatcher (or after the
// Reload that added it).
//
// A backfill caps the target's admission at its snapshot's sequence S, waits
// until nothing is pending, then admits the spooled snapshot phase by phase;
// when the last event is done it lifts the cap. A history replay admits
// already-examined log events from a second cursor, into at most half the
// window.
//
// A log entry is pruned once it is older than max(retention, feed
// retention), every configured target's cursor (and history replay) is past
// it and no target has it pending: keys are collected in a View and deleted in
// chunks by later write transactions, which also advance the "pruned"
// watermark. Dead letters carry their own copy of the event, so they survive
// pruning; replaying one restores its log entry if needed (a snapshot event
// goes back to the target's spool instead, never into the log).
package outbox
