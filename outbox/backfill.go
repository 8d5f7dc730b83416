package outbox

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Snapshot event types. A SnapshotFunc emits them in this order: one
// snapshot.started, every user, every group, every group's members (in
// chunks), one snapshot.completed.
const (
	// TypeSnapshotStarted opens a snapshot: data {"sequence":S,"users":n,"groups":m}.
	TypeSnapshotStarted = "snapshot.started"
	// TypeUserSnapshot carries one user: data.user, the record as in user events.
	TypeUserSnapshot = "user.snapshot"
	// TypeGroupSnapshot carries one group: data.group.
	TypeGroupSnapshot = "group.snapshot"
	// TypeMembersSnapshot carries up to 1,000 members of one group: data.group,
	// data.members [{"id","type"}…] and data.chunk {"index","count"}.
	TypeMembersSnapshot = "group.members_snapshot"
	// TypeSnapshotCompleted closes a snapshot: data {"sequence":S}.
	TypeSnapshotCompleted = "snapshot.completed"
)

// snapshotPhases are the snapshot types in delivery order; a phase is
// finished (every event delivered or dead-lettered) before the next starts.
var snapshotPhases = []string{TypeSnapshotStarted, TypeUserSnapshot, TypeGroupSnapshot, TypeMembersSnapshot, TypeSnapshotCompleted}

func snapshotPhase(typ string) int {
	for i, p := range snapshotPhases {
		if p == typ {
			return i
		}
	}
	return -1
}

// MaxSnapshotEvent bounds one snapshot event as stored (its envelope is a
// few dozen bytes longer). A snapshot with a larger event fails: the
// application chunks membership lists so that none comes near it.
const MaxSnapshotEvent = 1 << 20

// SnapshotFunc produces a consistent snapshot of the directory inside tx, a
// read transaction that the outbox opens: it calls emit for every snapshot
// event, in phase order (see TypeSnapshotStarted). emit assigns ID, Seq (the
// sequence the snapshot is consistent with, Tail(tx)) and OccurredAt; the
// function fills Type, Resources and Data. emit writes to a spool file, not
// to memory, so the function should stream rather than collect.
type SnapshotFunc func(tx *bolt.Tx, emit func(Event) error) error

// Errors of Backfill and ReplayHistory.
var (
	// ErrConflict: a backfill or history replay of the target is already
	// running (HTTP 409).
	ErrConflict = errors.New("outbox: conflict")
	// ErrNoSnapshot: the application gave the dispatcher no SnapshotFunc.
	ErrNoSnapshot = errors.New("outbox: no snapshot source configured")
	// ErrInvalidArgument: a request the caller must correct (HTTP 400).
	ErrInvalidArgument = errors.New("outbox: invalid argument")
)

// Backfill states.
const (
	// BackfillQueued: the snapshot is taken and stored; the events up to its
	// sequence that were already pending for the target are delivered first.
	BackfillQueued = "queued"
	// BackfillRunning: the snapshot's events are being delivered.
	BackfillRunning = "running"
	// BackfillDone: snapshot.completed was delivered (or dead-lettered); the
	// target receives the live events after the snapshot's sequence.
	BackfillDone = "done"
)

// BackfillStatus is the state of a target's last backfill.
type BackfillStatus struct {
	State string `json:"state"`
	// Sequence is the log sequence the snapshot is consistent with: it
	// reflects every event up to it and none after.
	Sequence uint64 `json:"sequence"`
	// Total is the number of snapshot events; Remaining those not yet
	// delivered or dead-lettered.
	Total     int `json:"total"`
	Remaining int `json:"remaining"`
	// Phase is the snapshot event type being delivered while running.
	Phase      string    `json:"phase,omitempty"`
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
}

// backfillRecord is stored under keyBackfill in the target's bucket. The
// snapshot's events are in the target's spool under keys First…Last.
type backfillRecord struct {
	State      string    `json:"state"`
	Sequence   uint64    `json:"sequence"`
	Total      int       `json:"total"`
	First      uint64    `json:"first"`
	Last       uint64    `json:"last"`
	Spooled    bool      `json:"spooled"` // false while the spool is being written
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
}

func (r backfillRecord) active() bool { return r.State == BackfillQueued || r.State == BackfillRunning }

func (r backfillRecord) status(remaining int, phase string) BackfillStatus {
	return BackfillStatus{State: r.State, Sequence: r.Sequence, Total: r.Total, Remaining: remaining, Phase: phase,
		StartedAt: r.StartedAt, FinishedAt: r.FinishedAt}
}

// bfRun is a lane's running backfill.
type bfRun struct {
	rec        backfillRecord
	phase      int    // index in snapshotPhases of the events being admitted
	next       uint64 // highest spool key admitted
	inLane     int    // admitted, not finished
	unadmitted int
}

func phaseName(bf *bfRun) string {
	if bf.rec.State != BackfillRunning || bf.phase < 0 || bf.phase >= len(snapshotPhases) {
		return ""
	}
	return snapshotPhases[bf.phase]
}

// resumeBackfill rebuilds a backfill from its record and the spool: finished
// events were deleted from the spool, admitted ones are pending (in l), and
// admission is in key order, so what is neither follows the highest pending
// key.
func resumeBackfill(rec backfillRecord, spool *bolt.Bucket, l *lane) *bfRun {
	bf := &bfRun{rec: rec, next: rec.First - 1, phase: -1}
	if spool != nil {
		c := spool.Cursor()
		for k, v := c.Seek(be64(rec.First)); k != nil && fromBE64(k) <= rec.Last; k, v = c.Next() {
			key := fromBE64(k)
			if bf.phase < 0 {
				bf.phase = snapshotPhase(peekType(v))
			}
			if _, ok := l.items[key]; ok {
				bf.inLane++
				bf.next = max(bf.next, key)
			} else {
				bf.unadmitted++
			}
		}
	}
	bf.phase = max(bf.phase, 0)
	return bf
}

// encodeSpool encodes a snapshot event for the spool; unlike the log, the
// value carries the seq (the snapshot's sequence).
func encodeSpool(ev Event) ([]byte, error) {
	return json.Marshal(storedEvent{
		ID: ev.ID, Type: ev.Type, At: ev.OccurredAt.UnixNano(), Resources: ev.Resources,
		Data: ev.Data, Changes: ev.Changes, Cause: ev.Cause, Seq: ev.Seq,
	})
}

func decodeSpool(key uint64, v []byte) (Event, error) {
	var s storedEvent
	if err := json.Unmarshal(v, &s); err != nil {
		return Event{}, fmt.Errorf("outbox: decode snapshot event %x: %w", key, err)
	}
	return Event{ID: s.ID, Seq: s.Seq, Type: s.Type, OccurredAt: time.Unix(0, s.At).UTC(),
		Resources: s.Resources, Data: s.Data, Changes: s.Changes, Cause: s.Cause}, nil
}

// SetSnapshot gives the dispatcher the application's snapshot source, which
// Backfill and backfill_on_start need. Call it before Run.
func (d *Dispatcher) SetSnapshot(f SnapshotFunc) {
	if f == nil {
		d.snapshot.Store(nil)
		return
	}
	d.snapshot.Store(&f)
}

// Backfill sends a target a consistent snapshot of the directory, taken at
// one sequence S (the log's tail in one read transaction): first every event
// up to S already pending for the target, then the snapshot phase by phase
// (snapshot.started; user.snapshot; group.snapshot;
// group.members_snapshot; snapshot.completed), each phase finished —
// delivered or dead-lettered — before the next, concurrent within a phase
// and ordered per resource; then the live events after S, which are held
// until snapshot.completed is done. Snapshot events the target's event
// patterns do not match are left out, except snapshot.started and
// snapshot.completed. They never enter the global log or the feed.
//
// The snapshot is written to a spool file while the read transaction is
// open, then copied into the target's state in chunks of short write
// transactions, and delivered from there: no read transaction stays open
// while delivering, no write transaction grows with the directory, and
// memory stays bounded. Backfill returns once the snapshot is stored
// (durable); delivery follows, also without Run (the next Run delivers). A
// crash while the snapshot is being stored restarts the backfill with a new
// snapshot at the next Run; a crash while it is delivered resumes it. Either
// way delivery is at least once.
//
// It returns ErrUnknownTarget, ErrNoSnapshot, or ErrConflict while a
// backfill or history replay of the target runs.
func (d *Dispatcher) Backfill(target string) (BackfillStatus, error) {
	return d.backfill(context.Background(), target)
}

func (d *Dispatcher) backfill(ctx context.Context, name string) (BackfillStatus, error) {
	d.bfMu.Lock()
	defer d.bfMu.Unlock()
	t, err := d.lookup(name)
	if err != nil {
		return BackfillStatus{}, err
	}
	snap := d.snapshot.Load()
	if snap == nil {
		return BackfillStatus{}, fmt.Errorf("%w: the application must call SetSnapshot", ErrNoSnapshot)
	}
	d.mu.RLock()
	defer d.mu.RUnlock()

	var prev, partial *backfillRecord
	err = d.database().View(func(tx *bolt.Tx) error {
		b := targetBucket(tx, name)
		if b == nil {
			return nil
		}
		var rec backfillRecord
		if ok, err := getJSON(b, keyBackfill, &rec); err != nil {
			return err
		} else if ok {
			switch {
			case rec.active() && rec.Spooled:
				return fmt.Errorf("%w: a backfill of target %s is %s (snapshot at sequence %d, started %s); wait for it to finish",
					ErrConflict, name, rec.State, rec.Sequence, rec.StartedAt.UTC().Format(time.RFC3339))
			case rec.active():
				partial = &rec // interrupted while storing its snapshot: redo
			default:
				prev = &rec
			}
		}
		if b.Get(keyHistory) != nil {
			return fmt.Errorf("%w: a history replay of target %s is running; wait for it to finish", ErrConflict, name)
		}
		return nil
	})
	if err != nil {
		return BackfillStatus{}, fmt.Errorf("outbox: backfill %s: %w", name, err)
	}
	if partial != nil {
		if err := d.dropSpool(name, *partial, nil); err != nil {
			return BackfillStatus{}, fmt.Errorf("outbox: backfill %s: remove an interrupted snapshot: %w", name, err)
		}
	}

	// Freeze the target's admission before the snapshot: an event committed
	// after the read transaction began must not be delivered before it.
	running := d.inRunLocked(func(s *scheduler) {
		if l := s.lane(name); l != nil {
			l.frozen, l.frozenAt = true, l.cursor
		}
	})
	rec, err := d.takeSnapshot(ctx, t, *snap, prev)
	if err != nil {
		if running {
			d.inRunLocked(func(s *scheduler) {
				if l := s.lane(name); l != nil {
					l.frozen = false
				}
			})
		}
		return BackfillStatus{}, fmt.Errorf("outbox: backfill %s: %w", name, err)
	}
	d.inRunLocked(func(s *scheduler) {
		if l := s.lane(name); l != nil {
			l.frozen, l.bosPending = false, false
			l.bf = &bfRun{rec: rec, next: rec.First - 1, unadmitted: rec.Total}
		}
	})
	d.logger.Info("Backfill queued", logKeyTarget, name, logKeySeq, rec.Sequence, logKeyCount, rec.Total)
	return rec.status(rec.Total, ""), nil
}

// takeSnapshot runs snap in one read transaction into a spool file, then
// copies the file into the target's spool in chunks. On error it removes
// what it stored and puts prev (the last backfill's record) back.
func (d *Dispatcher) takeSnapshot(ctx context.Context, t *target, snap SnapshotFunc, prev *backfillRecord) (backfillRecord, error) {
	f, err := os.CreateTemp(filepath.Dir(d.database().Path()), ".scimgate-snapshot-*.spool")
	if err != nil {
		return backfillRecord{}, fmt.Errorf("create spool file: %w", err)
	}
	defer func() {
		f.Close()
		os.Remove(f.Name())
	}()
	w := bufio.NewWriterSize(f, 1<<20)
	at := time.Unix(0, d.now().UnixNano()).UTC()
	var seq uint64
	total, phase := 0, -1
	var lenBuf [binary.MaxVarintLen64]byte
	err = d.database().View(func(tx *bolt.Tx) error {
		seq = logTail(tx)
		return snap(tx, func(ev Event) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			p := snapshotPhase(ev.Type)
			switch {
			case p < 0:
				return fmt.Errorf("%w: snapshot event type %q", ErrInvalidArgument, ev.Type)
			case phase < 0 && p != 0:
				return fmt.Errorf("%w: a snapshot starts with %s, not %s", ErrInvalidArgument, TypeSnapshotStarted, ev.Type)
			case p < phase, p == phase && (p == 0 || p == len(snapshotPhases)-1):
				return fmt.Errorf("%w: snapshot event %s after %s", ErrInvalidArgument, ev.Type, snapshotPhases[phase])
			}
			phase = p
			if p != 0 && p != len(snapshotPhases)-1 && !t.match.match(ev.Type) {
				return nil // not subscribed
			}
			ev.ID, ev.Seq, ev.OccurredAt = newEventID(), seq, at
			v, err := encodeSpool(ev)
			if err != nil {
				return fmt.Errorf("snapshot event %s: %w", ev.Type, err)
			}
			if len(v) > MaxSnapshotEvent {
				return fmt.Errorf("%w: snapshot event %s for %v is %d bytes (at most %d)", ErrInvalidArgument, ev.Type, ev.Resources, len(v), MaxSnapshotEvent)
			}
			n := binary.PutUvarint(lenBuf[:], uint64(len(v)))
			if _, err := w.Write(lenBuf[:n]); err != nil {
				return fmt.Errorf("write spool file: %w", err)
			}
			if _, err := w.Write(v); err != nil {
				return fmt.Errorf("write spool file: %w", err)
			}
			total++
			return nil
		})
	})
	if err != nil {
		return backfillRecord{}, fmt.Errorf("snapshot: %w", err)
	}
	if phase != len(snapshotPhases)-1 {
		return backfillRecord{}, fmt.Errorf("%w: the snapshot did not end with %s", ErrInvalidArgument, TypeSnapshotCompleted)
	}
	if err := w.Flush(); err != nil {
		return backfillRecord{}, fmt.Errorf("write spool file: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return backfillRecord{}, fmt.Errorf("read spool file: %w", err)
	}

	// Copy in chunks: the first transaction reserves the keys and records the
	// backfill as not yet spooled, the last marks it spooled.
	r := bufio.NewReaderSize(f, 1<<20)
	name := t.cfg.Name
	rec := backfillRecord{State: BackfillQueued, Sequence: seq, Total: total, StartedAt: at}
	written := 0
	for written < total {
		var chunk [][]byte
		size := 0
		for written+len(chunk) < total && len(chunk) < d.chunk && size < 4<<20 {
			n, err := binary.ReadUvarint(r)
			if err != nil {
				return rec, d.abortSpool(name, rec, written > 0, prev, fmt.Errorf("read spool file: %w", err))
			}
			v := make([]byte, n)
			if _, err := io.ReadFull(r, v); err != nil {
				return rec, d.abortSpool(name, rec, written > 0, prev, fmt.Errorf("read spool file: %w", err))
			}
			chunk = append(chunk, v)
			size += len(v)
		}
		first, last := written == 0, written+len(chunk) == total
		err := d.writeLocked(func(tx *bolt.Tx) error {
			b, err := d.ensureTarget(tx, t.cfg, logTail(tx))
			if err != nil {
				return err
			}
			nrec := rec
			if first {
				n0 := getU64(b, keySpoolN)
				nrec.First, nrec.Last = spoolBit|(n0+1), spoolBit|(n0+uint64(total))
				if err := b.Put(keySpoolN, be64(n0+uint64(total))); err != nil {
					return err
				}
			}
			sp := b.Bucket(bucketSpool)
			for i, v := range chunk {
				if err := sp.Put(be64(nrec.First+uint64(written+i)), v); err != nil {
					return err
				}
			}
			nrec.Spooled = last
			if err := putJSON(b, keyBackfill, nrec); err != nil {
				return err
			}
			if last {
				if err := b.Put(keyBackfillOnStart, []byte(bosDone)); err != nil {
					return err
				}
			}
			rec = nrec
			return nil
		}, nil)
		if err != nil {
			return rec, d.abortSpool(name, rec, !first, prev, fmt.Errorf("store snapshot: %w", err))
		}
		written += len(chunk)
	}
	return rec, nil
}

// abortSpool removes a partly stored snapshot (if stored is true) and
// returns cause. If the removal fails too, the record stays unspooled and
// the next Run removes it.
func (d *Dispatcher) abortSpool(name string, rec backfillRecord, stored bool, prev *backfillRecord, cause error) error {
	if !stored {
		return cause
	}
	if err := d.dropSpool(name, rec, prev); err != nil {
		d.logger.Error("Removing an incomplete snapshot failed; the next start removes it", logKeyTarget, name, logKeyErr, err)
	}
	return cause
}

// dropSpool deletes the spool keys of rec in chunks, then the record (or
// puts prev back). The caller holds d.mu.RLock.
func (d *Dispatcher) dropSpool(name string, rec backfillRecord, prev *backfillRecord) error {
	for from := rec.First; ; {
		var more bool
		err := d.writeLocked(func(tx *bolt.Tx) error {
			b := targetBucket(tx, name)
			if b == nil {
				return nil
			}
			sp := b.Bucket(bucketSpool)
			if sp == nil {
				return nil
			}
			var keys [][]byte
			c := sp.Cursor()
			for k, _ := c.Seek(be64(from)); k != nil && fromBE64(k) <= rec.Last && len(keys) < d.chunk; k, _ = c.Next() {
				keys = append(keys, append([]byte(nil), k...))
			}
			for _, k := range keys {
				if err := sp.Delete(k); err != nil {
					return err
				}
			}
			more = len(keys) == d.chunk
			if more {
				from = fromBE64(keys[len(keys)-1]) + 1
				return nil
			}
			if prev != nil {
				return putJSON(b, keyBackfill, *prev)
			}
			return b.Delete(keyBackfill)
		}, nil)
		if err != nil || !more {
			return err
		}
	}
}

// startPendingBackfill starts, in the background, a backfill the lane is
// owed: backfill_on_start for a new target, or one whose snapshot a crash
// interrupted while it was being stored.
func (s *scheduler) startPendingBackfill(l *lane) {
	if !l.bosPending && !l.bfRestart {
		return
	}
	name, why := l.t.cfg.Name, "backfill_on_start"
	if l.bfRestart {
		why = "restarting a backfill interrupted while its snapshot was stored"
	}
	l.bosPending, l.bfRestart = false, false
	d := s.d
	if d.snapshot.Load() == nil {
		d.logger.Error("Backfill not started: the application gave no snapshot source", logKeyTarget, name, logKeyReason, why)
		return
	}
	ctx := s.bgCtx
	d.bg.Go(func() {
		d.logger.Info("Backfill starting", logKeyTarget, name, logKeyReason, why)
		if _, err := d.backfill(ctx, name); err != nil && !errors.Is(err, ErrConflict) {
			if ctx.Err() != nil {
				d.logger.Info("Backfill interrupted by shutdown; it restarts with the next start", logKeyTarget, name)
				return
			}
			d.logger.Error("Backfill failed", logKeyTarget, name, logKeyReason, why, logKeyErr, err)
		}
	})
}

// stepBackfill advances a lane's backfill. While the snapshot is delivered
// (holding), the lane admits nothing else.
func (s *scheduler) stepBackfill(l *lane) (holding bool, err error) {
	bf, name := l.bf, l.t.cfg.Name
	if bf.rec.State == BackfillQueued {
		if l.cursor < bf.rec.Sequence || len(l.items) > 0 {
			return false, nil // still delivering the events up to the snapshot's sequence
		}
		bf.rec.State = BackfillRunning
		rec := bf.rec
		s.submit(func(tx *bolt.Tx) error { return putJSON(targetBucket(tx, name), keyBackfill, rec) }, nil)
		s.d.logger.Info("Backfill delivering its snapshot", logKeyTarget, name, logKeySeq, rec.Sequence, logKeyCount, rec.Total)
	}
	if bf.unadmitted == 0 && bf.inLane == 0 {
		bf.rec.State, bf.rec.FinishedAt = BackfillDone, s.d.now().UTC()
		rec := bf.rec
		s.submit(func(tx *bolt.Tx) error { return putJSON(targetBucket(tx, name), keyBackfill, rec) }, nil)
		l.bf = nil
		s.d.logger.Info("Backfill done", logKeyTarget, name, logKeySeq, rec.Sequence, logKeyCount, rec.Total)
		return false, nil
	}
	if room := s.window - len(l.items); room > 0 && bf.unadmitted > 0 {
		return true, s.admitSpool(l, room)
	}
	return true, nil
}

// admitSpool admits snapshot events of the current phase from the spool;
// the next phase starts once nothing of the current one is left.
func (s *scheduler) admitSpool(l *lane, room int) error {
	bf, name := l.bf, l.t.cfg.Name
	type spooled struct {
		key uint64
		ev  Event
	}
	var adm []spooled
	phase := bf.phase
	err := s.d.database().View(func(tx *bolt.Tx) error {
		sp := targetBucket(tx, name).Bucket(bucketSpool)
		c := sp.Cursor()
		for k, v := c.Seek(be64(bf.next + 1)); k != nil && len(adm) < min(room, pullChunk); k, v = c.Next() {
			key := fromBE64(k)
			if key > bf.rec.Last {
				break
			}
			if p := snapshotPhase(peekType(v)); p != phase {
				if bf.inLane > 0 || len(adm) > 0 {
					break // finish this phase first
				}
				phase = p
			}
			ev, err := decodeSpool(key, v)
			if err != nil {
				ev = salvageEvent(key, v, err) // dead-lettered unsent
			}
			adm = append(adm, spooled{key, ev})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("outbox: read snapshot of %s: %w", name, err)
	}
	if len(adm) == 0 {
		return nil
	}
	if len(adm) == pullChunk {
		s.more = true
	}
	bf.phase = phase
	now := s.d.now()
	keys := make([]uint64, len(adm))
	for i, a := range adm {
		l.add(&item{key: a.key, ev: a.ev, res: uniq(a.ev.Resources), heapIdx: -1, st: deliveryState{NextAttemptAt: now}})
		keys[i] = a.key
		bf.inLane++
		bf.unadmitted--
		bf.next = a.key
	}
	s.submit(func(tx *bolt.Tx) error {
		return putPending(targetBucket(tx, name), keys)
	}, nil)
	return nil
}
