package rest

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/scimgate/scimgate/outbox"
)

// IDMap reads an action target's id map (SpaceIDs and its reverse,
// SpaceApp) for the engine: Transport().IDs.
var IDMap = &outbox.IDMap{List: listIDs, Get: getID, ByApp: byAppID, Count: countIDs}

func entry(key string, v []byte) outbox.IDEntry {
	typ, id, _ := strings.Cut(key, "/")
	return outbox.IDEntry{Type: typ, ID: id, Values: append([]byte(nil), v...)}
}

// listIDs lists entries in key order (Group/… before User/…); the cursor
// is the last key listed.
func listIDs(tx *outbox.StateTx, after string, limit int) ([]outbox.IDEntry, string, error) {
	var out []outbox.IDEntry
	next := ""
	from := []byte(after)
	if after != "" {
		from = append(from, 0) // the first key after the cursor
	}
	err := tx.Scan(SpaceIDs, from, func(k, v []byte) (bool, error) {
		if len(out) == limit {
			next = out[len(out)-1].Type + "/" + out[len(out)-1].ID
			return false, nil
		}
		out = append(out, entry(string(k), v))
		return true, nil
	})
	return out, next, err
}

func getID(tx *outbox.StateTx, typ, id string) (*outbox.IDEntry, error) {
	key := typ + "/" + id
	v, err := tx.Get(SpaceIDs, []byte(key))
	if err != nil || v == nil {
		return nil, err
	}
	e := entry(key, v)
	return &e, nil
}

func byAppID(tx *outbox.StateTx, typ, appID string) (*outbox.IDEntry, error) {
	scimID, err := tx.Get(SpaceApp, []byte(typ+"/"+appID))
	if err != nil || scimID == nil {
		return nil, err
	}
	return getID(tx, typ, string(scimID))
}

func countIDs(tx *outbox.StateTx) (int, error) { return tx.Count(SpaceIDs) }

// Stats returns target's request counters since the process started, read
// from the scimgate_rest_* collectors; nil if it sent nothing yet.
func Stats(target string) *outbox.RequestStats {
	var st outbox.RequestStats
	seen := false
	collect(metrics.requests, func(labels map[string]string, m *dto.Metric) {
		if labels["target"] != target || m.Counter == nil {
			return
		}
		n := uint64(m.Counter.GetValue())
		if st.Outcomes == nil {
			st.Outcomes, st.Steps = map[string]uint64{}, map[string]*outbox.StepStats{}
		}
		st.Outcomes[labels["outcome"]] += n
		st.Requests += n
		step := st.Steps[labels["step"]]
		if step == nil {
			step = &outbox.StepStats{Outcomes: map[string]uint64{}}
			st.Steps[labels["step"]] = step
		}
		step.Outcomes[labels["outcome"]] += n
		step.Requests += n
		seen = true
	})
	collect(metrics.latency, func(labels map[string]string, m *dto.Metric) {
		h := m.Histogram
		if labels["target"] != target || h == nil || h.GetSampleCount() == 0 || st.Steps[labels["step"]] == nil {
			return
		}
		st.Steps[labels["step"]].MeanLatencySeconds = h.GetSampleSum() / float64(h.GetSampleCount())
	})
	collect(metrics.rateWaits, func(labels map[string]string, m *dto.Metric) {
		if labels["target"] == target && m.Counter != nil {
			st.RateLimitWaits += uint64(m.Counter.GetValue())
			seen = true
		}
	})
	if !seen {
		return nil
	}
	return &st
}

func collect(c prometheus.Collector, fn func(labels map[string]string, m *dto.Metric)) {
	ch := make(chan prometheus.Metric, 64)
	go func() { c.Collect(ch); close(ch) }()
	for pm := range ch {
		var m dto.Metric
		if err := pm.Write(&m); err != nil {
			continue
		}
		labels := make(map[string]string, len(m.Label))
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		fn(labels, &m)
	}
}
