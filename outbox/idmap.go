package outbox

import (
	"encoding/json"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// IDEntry is one resource in a target's id map: our (SCIM) id and what the
// target's steps saved for it, the app's id first ({"id": 7, …}).
type IDEntry struct {
	Type   string          `json:"type"` // User or Group
	ID     string          `json:"id"`
	Values json.RawMessage `json:"values"`
}

// IDMap reads the id map a transport keeps in a target's State (an action
// target's: our resource ids ↔ the app's). A transport that keeps one sets
// Transport.IDs; the engine runs these inside a read transaction, for the
// admin API, the app API and status, without knowing the key layout.
type IDMap struct {
	// List returns up to limit entries after the cursor after ("" from the
	// start), in a stable order, and the cursor of the next page ("" at the
	// end).
	List func(tx *StateTx, after string, limit int) (list []IDEntry, next string, err error)
	// Get returns resource typ/id's entry, or nil.
	Get func(tx *StateTx, typ, id string) (*IDEntry, error)
	// ByApp returns the entry of the resource of type typ the app knows by
	// appID, or nil.
	ByApp func(tx *StateTx, typ, appID string) (*IDEntry, error)
	// Count returns the number of entries.
	Count func(tx *StateTx) (int, error)
}

// RequestStats are a transport's counters for one target since the
// process started (Transport.Stats), for status.
type RequestStats struct {
	// Requests is the number of requests sent (every outcome).
	Requests uint64 `json:"requests"`
	// Outcomes counts them by class: ok, done, retry, dead, error (no
	// response).
	Outcomes map[string]uint64 `json:"outcomes,omitempty"`
	// RateLimitWaits counts the requests the target's rate limit held back.
	RateLimitWaits uint64 `json:"rate_limit_waits"`
	// Steps are the requests and outcomes by step, with their mean
	// latency (a session login's steps as login.<name>).
	Steps map[string]*StepStats `json:"steps,omitempty"`
}

// StepStats are one step's counters in RequestStats.
type StepStats struct {
	Requests           uint64            `json:"requests"`
	Outcomes           map[string]uint64 `json:"outcomes,omitempty"`
	MeanLatencySeconds float64           `json:"mean_latency_seconds"`
}

// ErrNoIDMap is returned for a target whose type keeps no id map.
var ErrNoIDMap = errors.New("outbox: target keeps no id map")

// IDMapTx reads one target's id map inside one read transaction.
type IDMapTx struct {
	m  *IDMap
	tx *StateTx
}

// List: see IDMap.List; limit is held to 1..1000 (default 100).
func (r IDMapTx) List(after string, limit int) ([]IDEntry, string, error) {
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	return r.m.List(r.tx, after, limit)
}

// Get: see IDMap.Get.
func (r IDMapTx) Get(typ, id string) (*IDEntry, error) { return r.m.Get(r.tx, typ, id) }

// ByApp: see IDMap.ByApp.
func (r IDMapTx) ByApp(typ, appID string) (*IDEntry, error) { return r.m.ByApp(r.tx, typ, appID) }

// Count: see IDMap.Count.
func (r IDMapTx) Count() (int, error) { return r.m.Count(r.tx) }

// ViewIDMap runs fn with target name's id map inside one read transaction
// of the database the dispatcher uses now. It returns ErrUnknownTarget for
// a target not configured and ErrNoIDMap for one whose type keeps none.
func (d *Dispatcher) ViewIDMap(name string, fn func(r IDMapTx) error) error {
	t, err := d.lookup(name)
	if err != nil {
		return err
	}
	cfg, _ := d.config()
	m := idMapOf(cfg, t.cfg)
	if m == nil {
		return fmt.Errorf("%w: %q is of type %s", ErrNoIDMap, name, t.cfg.kind())
	}
	return d.State(name).View(func(tx *StateTx) error { return fn(IDMapTx{m: m, tx: tx}) })
}

// ReadIDMap returns target t's id map inside tx, a read-only transaction on
// a database no dispatcher runs on (a stopped data dir or a backup), or
// ErrNoIDMap.
func ReadIDMap(tx *bolt.Tx, cfg Config, t Target) (IDMapTx, error) {
	m := idMapOf(cfg, t)
	if m == nil {
		return IDMapTx{}, fmt.Errorf("%w: %q is of type %s", ErrNoIDMap, t.Name, t.kind())
	}
	return IDMapTx{m: m, tx: ReadState(tx, t.Name)}, nil
}

func idMapOf(cfg Config, t Target) *IDMap {
	tr, ok := cfg.Transports[t.kind()]
	if !ok || tr.IDs == nil {
		return nil
	}
	return tr.IDs
}

// transportStatus adds the id map's size and the transport's counters to
// st (a target of a transport with Transport.IDs or Transport.Stats).
func transportStatus(cfg Config, t Target, btx *bolt.Tx, st *TargetStatus) error {
	tr, ok := cfg.Transports[t.kind()]
	if !ok {
		return nil
	}
	if tr.IDs != nil {
		n, err := tr.IDs.Count(ReadState(btx, t.Name))
		if err != nil {
			return err
		}
		st.IDMapSize = &n
	}
	if tr.Stats != nil {
		st.Requests = tr.Stats(t.Name)
	}
	return nil
}
