package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scimgate/scimgate/mapping"
)

// Remapping: applying a changed mapping to the records already stored.
//
// Every record carries the fingerprint of the mapping that made it
// (record.FP, mapping.Mapper.Fingerprint). meta/mapping_fp is the
// fingerprint every stored record was last brought to, and meta/remap the
// state of the pass that brings them to a new one: the target fingerprint,
// the kind and creation sequence it has reached (its cursor), and its
// counters. The pass runs in the background through the writer, in batches
// of at most remapBatch resources or remapBudget of work, each its own
// write function committed with the SCIM writes queued beside it: a SCIM
// write waits for at most one batch. A batch's records, events and cursor
// commit together, so a pass killed at any point resumes at the next start
// from its last committed batch, with no event lost or sent twice.
//
// A resource whose record changes gets user.updated / group.updated with
// its changes and cause "mapping"; one whose record does not change is
// only stamped with the new fingerprint. A resource the new mapping
// rejects keeps its last good record (and its old fingerprint) and is
// listed in mapping_rejected, with the reasons (no values), until it is
// written again or deleted, or another mapping comes.

var (
	bucketRejected = []byte("mapping_rejected") // "user/<id>" or "group/<id>" → JSON(RemapRejection)
	keyMappingFP   = []byte("mapping_fp")       // the fingerprint every record was brought to
	keyRemap       = []byte("remap")            // JSON(RemapState)
)

// Bounds of one remap batch: resources, and time spent inside the writer.
var (
	remapBatch  = 256
	remapBudget = 3 * time.Millisecond
)

// CauseMapping is the cause of the events a remap emits.
const CauseMapping = "mapping"

// The states of a remap.
const (
	RemapPending = "pending" // waiting for `scimgate remap` (remap: manual)
	RemapRunning = "running"
	RemapDone    = "done"
)

// RemapState is the progress of the pass that brings the stored records
// to a mapping (meta/remap).
type RemapState struct {
	// Fingerprint is the mapping's the pass brings records to; From the
	// one they were on before (empty: unknown, records older than
	// fingerprints).
	Fingerprint string `json:"fingerprint"`
	From        string `json:"from,omitempty"`
	State       string `json:"state"`
	// Kind ("user", then "group") and After (its creation sequence) are
	// the cursor: every resource of an earlier kind or sequence is done.
	Kind  string `json:"kind,omitempty"`
	After uint64 `json:"after,omitempty"`
	// Total is the number of users and groups when the pass began; Done
	// counts those examined, Changed those whose record changed (one
	// event each), Rejected those the mapping rejected.
	Total    int       `json:"total"`
	Done     int       `json:"done"`
	Changed  int       `json:"changed"`
	Rejected int       `json:"rejected"`
	Started  time.Time `json:"started,omitzero"`
	Finished time.Time `json:"finished,omitzero"`
}

// RemapRejection is a stored resource that the mapping in force rejects:
// it keeps the record an earlier mapping made.
type RemapRejection struct {
	Resource    string   `json:"resource"` // "user" or "group"
	ID          string   `json:"id"`
	Fields      []string `json:"fields,omitempty"`
	Reasons     []string `json:"reasons"` // without values
	Fingerprint string   `json:"fingerprint"`
}

// RemapStatus is what status and metrics show of remapping.
type RemapStatus struct {
	// Fingerprint is the mapping in force; Applied the one every stored
	// record was last brought to.
	Fingerprint string `json:"fingerprint"`
	Applied     string `json:"applied,omitempty"`
	// Manual is remap: manual (a changed mapping waits for `scimgate remap`).
	Manual bool        `json:"manual,omitempty"`
	Last   *RemapState `json:"remap,omitempty"`
	// Rejected counts the resources listed in Rejections (at most
	// maxListedRejections of them).
	Rejected   int              `json:"rejected"`
	Rejections []RemapRejection `json:"rejections,omitempty"`
	// LongestBatchMS is the longest a remap batch ran inside the writer
	// (SCIM writes queued behind it waited that long, plus the commit)
	// since the gateway started.
	LongestBatchMS float64 `json:"longest_batch_ms,omitempty"`
}

const maxListedRejections = 100

// maxLoggedRejections bounds the rejections a pass logs one by one.
const maxLoggedRejections = 100

// remapOutcome is what mapping one stored resource again did.
type remapOutcome struct {
	changes  map[string]mapping.Change // nil: the record did not change
	rejected *mapping.Rejection        // set: the mapping rejects it; nothing was written
}

// mapSafely runs a mapping and turns a panic in it into a rejection, so one
// resource cannot stop a remap or crash the process.
func mapSafely(f func() (mapping.Result, error)) (res mapping.Result, rej *mapping.Rejection) {
	defer func() {
		if p := recover(); p != nil {
			rej = &mapping.Rejection{Reasons: []string{fmt.Sprintf("the mapping failed on this resource (internal error: %v)", p)}}
		}
	}()
	res, err := f()
	if err != nil {
		if !errors.As(err, &rej) {
			rej = &mapping.Rejection{Reasons: []string{err.Error()}}
		}
		return mapping.Result{}, rej
	}
	return res, nil
}

// compareUser maps stored user d with m, resolving its references in tx,
// and returns the result and how its record would change, or why m rejects
// it. The remap and its preview (PreviewRemap) both decide with it, so the
// preview counts what the remap then does.
func compareUser(tx *bolt.Tx, m *mapping.Mapper, d *record) (mapping.Result, map[string]mapping.Change, *mapping.Rejection) {
	res, rej := mapSafely(func() (mapping.Result, error) { return m.MapUser(d.Doc, txResolver{tx: tx}) })
	if rej != nil {
		return res, nil, rej
	}
	return res, mapping.Diff(d.Record, res.Record), nil
}

// compareGroup is compareUser for a group.
func compareGroup(m *mapping.Mapper, d *record) (mapping.Result, map[string]mapping.Change, *mapping.Rejection) {
	res, rej := mapSafely(func() (mapping.Result, error) { return m.MapGroup(d.Doc) })
	if rej != nil {
		return res, nil, rej
	}
	return res, mapping.Diff(d.Record, res.Record), nil
}

// remapGroup is remapUser for a group (group rules hold no references).
func (s *Store) remapGroup(tx *bolt.Tx, m *mapping.Mapper, id string, now time.Time, cause string) (remapOutcome, error) {
	d, err := s.groups.get(tx, id)
	if err != nil {
		return remapOutcome{}, nil
	}
	res, changes, rej := compareGroup(m, d)
	if rej != nil {
		return remapOutcome{rejected: rej}, nil
	}
	fp := m.Fingerprint()
	if len(changes) == 0 {
		if d.FP == fp {
			return remapOutcome{}, nil
		}
		d.FP = fp
		return remapOutcome{}, s.groups.put(tx, d)
	}
	s.warned(tx, "group", id, res.WarnedFields)
	next := *d
	next.Record, next.Version, next.Modified, next.Data, next.FP = res.Record, s.nextVersion(d.Version), now, nil, fp
	if err := s.groups.put(tx, &next); err != nil {
		return remapOutcome{}, err
	}
	return remapOutcome{changes: changes}, s.enqueueCause(tx, "group.updated", []string{resKey("Group", id)}, dataOf("group", eventData(&next)), changes, cause)
}

func rejectedKey(resource, id string) []byte { return []byte(resource + "/" + id) }

// clearRejected drops a resource from the rejections: it was written (so
// mapped by the mapping in force) or deleted.
func clearRejected(tx *bolt.Tx, resource, id string) error {
	if b := tx.Bucket(bucketRejected); b != nil {
		return b.Delete(rejectedKey(resource, id))
	}
	return nil
}

func loadRemap(tx *bolt.Tx) *RemapState {
	v := tx.Bucket(bucketMeta).Get(keyRemap)
	if v == nil {
		return nil
	}
	var st RemapState
	if json.Unmarshal(v, &st) != nil {
		return nil
	}
	return &st
}

func saveRemap(tx *bolt.Tx, st *RemapState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketMeta).Put(keyRemap, b)
}

// remapper runs the background pass: one goroutine, woken by kick.
type remapper struct {
	manual  atomic.Bool  // remap: manual (SetRemapManual)
	longest atomic.Int64 // ns: the longest a batch ran inside the writer since New
	kick    chan struct{}
	stop    chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
}

func (r *remapper) wake() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// initRemap decides at New what the stored records need: nothing (they are
// on the mapping's fingerprint), a new pass (the fingerprint changed while
// the gateway was stopped), or the rest of a pass a stop interrupted.
func (s *Store) initRemap(manual bool) {
	s.rm = &remapper{kick: make(chan struct{}, 1), stop: make(chan struct{})}
	s.rm.manual.Store(manual)
	m := s.mapper.Load()
	if m == nil {
		return
	}
	err := s.w.update(func(tx *bolt.Tx) error { return s.beginRemap(tx, m.Fingerprint(), "start", manual) })
	if err != nil {
		s.log.Error("could not check the stored records against the mapping; retried at the next start", "err", err)
	}
	s.rm.wg.Add(1)
	go s.remapLoop()
	s.rm.wake()
}

// beginRemap starts a pass to fingerprint fp unless the records are
// already on it or one is under way; with remap: manual it waits
// (pending) for Remap. It runs in the writer.
func (s *Store) beginRemap(tx *bolt.Tx, fp, trigger string, manual bool) error {
	meta := tx.Bucket(bucketMeta)
	applied := string(meta.Get(keyMappingFP))
	st := loadRemap(tx)
	if st != nil && st.Fingerprint == fp && st.State != RemapDone {
		if st.State == RemapPending && !manual {
			st.State = RemapRunning
			return saveRemap(tx, st)
		}
		return nil // under way (or waiting): resumed by the loop
	}
	if applied == fp && (st == nil || st.State == RemapDone) {
		return nil
	}
	total := int(getCounter(meta, s.users.count) + getCounter(meta, s.groups.count))
	if total == 0 && applied == "" && st == nil {
		return meta.Put(keyMappingFP, []byte(fp)) // a new database: nothing to map again
	}
	// A new pass: the rejections of the previous mapping no longer hold.
	if tx.Bucket(bucketRejected) != nil {
		if err := tx.DeleteBucket(bucketRejected); err != nil {
			return err
		}
	}
	if _, err := tx.CreateBucket(bucketRejected); err != nil {
		return err
	}
	from := applied
	if st != nil && st.State != RemapDone {
		from = st.From // an unfinished pass: the records are on its origin or on its target
	}
	next := &RemapState{Fingerprint: fp, From: from, State: RemapRunning, Kind: "user", Total: total, Started: s.now().UTC()}
	if manual {
		next.State = RemapPending
	}
	tx.OnCommit(func() {
		s.log.Info("the mapping changed: stored records will be mapped again", "trigger", trigger, "fingerprint", fp,
			"from", from, "resources", total, "state", next.State)
		if next.State == RemapPending {
			s.log.Warn("remap: manual: the stored records keep the previous mapping's output until `scimgate remap` runs",
				"fingerprint", fp, "resources", total)
		}
	})
	return saveRemap(tx, next)
}

// SetMapper makes m the mapping of every write from now on (a reload) and,
// when its fingerprint differs from the stored records', starts mapping
// them again in the background (remap: on_change) or records that they
// wait for Remap (remap: manual). The swap happens in the writer, between
// two transactions: no write is applied with the old mapping after it,
// and a write prepared with the old one is prepared again.
func (s *Store) SetMapper(m *mapping.Mapper) error {
	err := s.w.update(func(tx *bolt.Tx) error {
		if err := s.beginRemap(tx, m.Fingerprint(), "reload", s.rm.manual.Load()); err != nil {
			return err
		}
		tx.OnCommit(func() { s.mapper.Store(m) })
		return nil
	})
	if err != nil {
		return fmt.Errorf("apply the new mapping: %w", err)
	}
	s.rm.wake()
	return nil
}

// SetRemapManual sets remap: manual (true) or on_change (a reload); it
// applies to the next mapping change.
func (s *Store) SetRemapManual(manual bool) { s.rm.manual.Store(manual) }

// Mapper returns the mapping in force.
func (s *Store) Mapper() *mapping.Mapper { return s.mapper.Load() }

// Remap starts the pending pass (remap: manual), or a new one if records
// are left on another fingerprint, and returns at once; RemapStatus shows
// its progress. It reports whether anything was to do.
func (s *Store) Remap() (bool, error) {
	m := s.mapper.Load()
	fp := m.Fingerprint()
	started := false
	err := s.w.update(func(tx *bolt.Tx) error {
		st := loadRemap(tx)
		switch {
		case st != nil && st.Fingerprint == fp && st.State == RemapPending:
			st.State, st.Started = RemapRunning, s.now().UTC()
			started = true
			return saveRemap(tx, st)
		case st != nil && st.Fingerprint == fp && st.State == RemapRunning:
			started = true
			return nil
		}
		if string(tx.Bucket(bucketMeta).Get(keyMappingFP)) == fp {
			return nil
		}
		started = true
		return s.beginRemap(tx, fp, "remap", false) // this pass runs now
	})
	if err == nil && started {
		s.rm.wake()
	}
	return started, err
}

// WaitRemap waits until no pass is running (for tests and tools), or d.
func (s *Store) WaitRemap(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		st := s.RemapStatus()
		if st.Last == nil || st.Last.State != RemapRunning {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// stopRemap stops the background pass (Close); a running one resumes at the
// next New.
func (s *Store) stopRemap() {
	if s.rm == nil {
		return
	}
	s.rm.once.Do(func() { close(s.rm.stop) })
	s.rm.wg.Wait()
}

func (s *Store) remapLoop() {
	defer s.rm.wg.Done()
	backoff := time.Second
	for {
		select {
		case <-s.rm.stop:
			return
		case <-s.rm.kick:
		}
		for {
			select {
			case <-s.rm.stop:
				return
			default:
			}
			t0, writes0 := time.Now(), s.w.writes.Load()
			more, err := s.remapStep()
			if err != nil {
				s.log.Error("a remap batch failed; it is retried", "err", err, "retry_in", backoff.String())
				select {
				case <-s.rm.stop:
					return
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, 30*time.Second)
				continue
			}
			backoff = time.Second
			if !more {
				break
			}
			// When other writes ran beside the batch (an identity
			// provider's), leave the writer (and the CPU) to them for as
			// long as the batch took, commit included: a remap then takes
			// at most half of either, so their latency holds while it
			// runs. Alone, it goes on at once.
			if s.w.writes.Load()-writes0 <= 1 {
				continue
			}
			select {
			case <-s.rm.stop:
				return
			case <-time.After(remapPause(time.Since(t0))):
			}
		}
	}
}

// onRemapBatch, when set (tests), hears how long each batch ran in the writer.
var onRemapBatch func(time.Duration)

// remapPause is the pause after a batch that took d.
var remapPause = func(d time.Duration) time.Duration { return d }

// remapStep runs one batch of the pass in the writer. It reports whether
// there is more to do.
func (s *Store) remapStep() (more bool, err error) {
	var rejections []RemapRejection
	var finished *RemapState
	err = s.w.update(func(tx *bolt.Tx) error {
		t0 := time.Now()
		defer func() {
			d := time.Since(t0)
			if int64(d) > s.rm.longest.Load() {
				s.rm.longest.Store(int64(d))
			}
			if onRemapBatch != nil {
				onRemapBatch(d)
			}
		}()
		more, rejections, finished = false, nil, nil
		st := loadRemap(tx)
		m := s.mapper.Load()
		if st == nil || st.State != RemapRunning || m == nil || st.Fingerprint != m.Fingerprint() {
			return nil // nothing running, or SetMapper began another pass
		}
		now := s.now()
		deadline := time.Now().Add(remapBudget)
		for n := 0; n < remapBatch && (n == 0 || time.Now().Before(deadline)); n++ {
			k := s.users
			if st.Kind == "group" {
				k = s.groups
			}
			c := tx.Bucket(k.order).Cursor()
			seqKey, idb := c.Seek(be64(st.After + 1))
			if seqKey == nil {
				if st.Kind == "user" {
					st.Kind, st.After = "group", 0
					continue
				}
				st.State, st.Kind, st.After, st.Finished = RemapDone, "", 0, now.UTC()
				if err := tx.Bucket(bucketMeta).Put(keyMappingFP, []byte(st.Fingerprint)); err != nil {
					return err
				}
				done := *st
				finished = &done
				return saveRemap(tx, st)
			}
			st.After = fromBE64(seqKey)
			id := string(idb)
			st.Done++
			if fp := recordFP(tx.Bucket(k.data).Get(idb)); fp == st.Fingerprint {
				continue // written with this mapping since the pass began
			}
			var out remapOutcome
			if k == s.users {
				out, err = s.remapUser(tx, m, id, now, CauseMapping)
			} else {
				out, err = s.remapGroup(tx, m, id, now, CauseMapping)
			}
			if err != nil {
				return err
			}
			if out.rejected != nil {
				st.Rejected++
				rj := RemapRejection{Resource: k.event, ID: id, Fields: out.rejected.Fields, Reasons: out.rejected.Reasons, Fingerprint: st.Fingerprint}
				b, err := json.Marshal(rj)
				if err != nil {
					return err
				}
				if err := tx.Bucket(bucketRejected).Put(rejectedKey(k.event, id), b); err != nil {
					return err
				}
				if st.Rejected <= maxLoggedRejections {
					rejections = append(rejections, rj)
				}
				continue
			}
			if out.changes != nil {
				st.Changed++
			}
		}
		more = true
		if st.Changed > 0 {
			if err := s.touched(tx, now); err != nil {
				return err
			}
		}
		return saveRemap(tx, st)
	})
	if err != nil {
		return false, err
	}
	for _, rj := range rejections {
		s.log.Warn("the new mapping rejects a stored resource; it keeps its last good record",
			"resource", rj.Resource, "id", rj.ID, "fields", rj.Fields, "reasons", rj.Reasons)
	}
	if finished != nil && finished.Rejected > maxLoggedRejections {
		s.log.Warn("more stored resources are rejected by the new mapping than are logged one by one; scimgate status lists them",
			"rejected", finished.Rejected, "logged", maxLoggedRejections)
	}
	if finished != nil {
		s.log.Info("remap finished: every stored record is on the mapping in force", "fingerprint", finished.Fingerprint,
			"resources", finished.Done, "changed", finished.Changed, "rejected", finished.Rejected,
			"took", finished.Finished.Sub(finished.Started).Round(time.Millisecond).String())
	}
	return more, nil
}

// recordFP reads the fingerprint of a stored record without decoding it all.
func recordFP(v []byte) string {
	var r struct {
		FP string `json:"fp"`
	}
	if v == nil || json.Unmarshal(v, &r) != nil {
		return ""
	}
	return r.FP
}

// RemapStatus returns the remap progress and the rejected resources.
func (s *Store) RemapStatus() RemapStatus {
	var out RemapStatus
	if m := s.mapper.Load(); m != nil {
		out.Fingerprint = m.Fingerprint()
	}
	if s.rm != nil {
		out.Manual = s.rm.manual.Load()
		out.LongestBatchMS = float64(s.rm.longest.Load()) / 1e6
	}
	_ = s.view(func(tx *bolt.Tx) error {
		out.Applied = string(tx.Bucket(bucketMeta).Get(keyMappingFP))
		out.Last = loadRemap(tx)
		b := tx.Bucket(bucketRejected)
		if b == nil {
			return nil
		}
		out.Rejected = b.Stats().KeyN
		c := b.Cursor()
		for k, v := c.First(); k != nil && len(out.Rejections) < maxListedRejections; k, v = c.Next() {
			var rj RemapRejection
			if json.Unmarshal(v, &rj) == nil {
				out.Rejections = append(out.Rejections, rj)
			}
		}
		sort.SliceStable(out.Rejections, func(i, j int) bool { return out.Rejections[i].Resource > out.Rejections[j].Resource })
		return nil
	})
	return out
}
