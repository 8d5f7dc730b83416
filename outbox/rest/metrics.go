package rest

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/scimgate/scimgate/outbox"
)

// restMetrics are the action targets' collectors, shared by every target
// (labelled by target and step).
type restMetrics struct {
	requests  *prometheus.CounterVec   // target, step, outcome (ok|done|retry|dead|error)
	latency   *prometheus.HistogramVec // target, step
	rateWaits *prometheus.CounterVec   // target
	idMapSize *prometheus.GaugeVec     // target
}

var metrics = func() *restMetrics {
	const ns, sub = "scimgate", "rest"
	return &restMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "requests_total",
			Help: "Requests of action targets by target, step and outcome (ok, done, retry, dead, error: no response)."}, []string{"target", "step", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "request_duration_seconds",
			Help:    "Duration of action target requests by target and step.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 15, 30}}, []string{"target", "step"}),
		rateWaits: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "rate_limit_waits_total",
			Help: "Requests an action target's rate limit held back."}, []string{"target"}),
		idMapSize: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "id_map_entries",
			Help: "Resources an action target's id map holds."}, []string{"target"}),
	}
}()

// Collectors returns the action targets' collectors, for the command to
// register (scimgate_rest_*).
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{metrics.requests, metrics.latency, metrics.rateWaits, metrics.idMapSize}
}

func (m *restMetrics) observeSize(s *Sender) {
	if s.state == nil {
		return
	}
	_ = s.state.View(func(tx *outbox.StateTx) error {
		n, err := tx.Count(SpaceIDs)
		if err == nil {
			m.idMapSize.WithLabelValues(s.cfg.target).Set(float64(n))
		}
		return nil
	})
}
