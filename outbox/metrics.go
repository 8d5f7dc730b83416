package outbox

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the outbox's Prometheus collectors; cmd registers them.
type Metrics struct {
	enqueued     *prometheus.CounterVec
	delivered    *prometheus.CounterVec
	retried      *prometheus.CounterVec
	failed       *prometheus.CounterVec
	deadLettered *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	backlog      *prometheus.GaugeVec
	oldest       *prometheus.GaugeVec
	dead         *prometheus.GaugeVec
	paused       *prometheus.GaugeVec
}

// NewMetrics returns unregistered collectors.
func NewMetrics() *Metrics {
	target := []string{"target"}
	return &Metrics{
		enqueued: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scimgate_outbox_events_enqueued_total",
			Help: "Events committed to the outbox, by type (counted when a dispatcher first reads them)."}, []string{"type"}),
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scimgate_outbox_events_delivered_total",
			Help: "Events delivered (2xx), by target."}, target),
		retried: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scimgate_outbox_http_retries_total",
			Help: "In-process HTTP retries of a delivery attempt, by target."}, target),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scimgate_outbox_attempts_failed_total",
			Help: "Delivery attempts that failed and were rescheduled, by target."}, target),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scimgate_outbox_events_dead_lettered_total",
			Help: "Events moved to dead letters, by target."}, target),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "scimgate_outbox_delivery_latency_seconds",
			Help:    "Time from commit to successful delivery, by target.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 5, 30, 300, 3600}}, target),
		backlog: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "scimgate_outbox_backlog",
			Help: "Events waiting for delivery, by target."}, target),
		oldest: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "scimgate_outbox_oldest_pending_age_seconds",
			Help: "Age of the oldest event waiting for delivery, by target."}, target),
		dead: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "scimgate_outbox_dead_letters",
			Help: "Dead letters kept, by target."}, target),
		paused: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "scimgate_outbox_target_paused",
			Help: "1 when deliveries to the target are paused."}, target),
	}
}

// Collectors returns the collectors to register.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.enqueued, m.delivered, m.retried, m.failed, m.deadLettered, m.latency,
		m.backlog, m.oldest, m.dead, m.paused}
}
