package outbox

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics holds the outbox's Prometheus collectors. The dispatcher updates
// them; cmd registers Collectors. A nil *Metrics disables metrics.
type Metrics struct {
	// EventsEnqueued counts events by type as the dispatcher first reads
	// them from the log (events enqueued while no dispatcher ran are counted
	// by none).
	EventsEnqueued *prometheus.CounterVec
	// Delivered counts events a target acknowledged with 2xx.
	Delivered *prometheus.CounterVec
	// Retries counts failed attempts that were rescheduled by the outbox.
	Retries *prometheus.CounterVec
	// DeadLettered counts events moved to a target's dead letters.
	DeadLettered *prometheus.CounterVec
	// FailedAttempts counts delivery attempts that did not end in 2xx.
	FailedAttempts *prometheus.CounterVec
	// DeliveryLatency is the time from OccurredAt to the 2xx, retries included.
	DeliveryLatency *prometheus.HistogramVec
	// AttemptDuration is the duration of one delivery attempt.
	AttemptDuration *prometheus.HistogramVec
	// Backlog is the number of events waiting for a target.
	Backlog *prometheus.GaugeVec
	// OldestPendingAge is the age in seconds of the oldest waiting event.
	OldestPendingAge *prometheus.GaugeVec
	// DeadLetters is the number of dead letters a target holds.
	DeadLetters *prometheus.GaugeVec
	// Paused is 1 while a target is paused.
	Paused *prometheus.GaugeVec
	// BackfillRemaining is the number of snapshot events of a running
	// backfill not yet delivered or dead-lettered (0 when none runs).
	BackfillRemaining *prometheus.GaugeVec
	// CommitFailing is 1 while the storage refuses to record delivery state
	// (a full disk): the dispatcher retries and starts no new attempts.
	CommitFailing prometheus.Gauge
}

// NewMetrics builds unregistered collectors named scimgate_outbox_*.
func NewMetrics() *Metrics {
	const ns, sub = "scimgate", "outbox"
	counter := func(name, help string, label string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help}, []string{label})
	}
	gauge := func(name, help string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help}, []string{"target"})
	}
	return &Metrics{
		EventsEnqueued: counter("events_enqueued_total", "Events appended to the outbox log, by type.", "type"),
		Delivered:      counter("delivered_total", "Events delivered (2xx), by target.", "target"),
		Retries:        counter("retries_total", "Failed delivery attempts rescheduled by the outbox, by target.", "target"),
		DeadLettered:   counter("dead_lettered_total", "Events moved to dead letters, by target.", "target"),
		FailedAttempts: counter("failed_attempts_total", "Delivery attempts that did not end in 2xx, by target.", "target"),
		DeliveryLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "delivery_latency_seconds",
			Help:    "Time from the event's commit to its successful delivery, by target.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5, 30, 300, 1800, 3 * 3600, 24 * 3600},
		}, []string{"target"}),
		AttemptDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "attempt_duration_seconds",
			Help:    "Duration of one delivery attempt (one request), by target.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}, []string{"target"}),
		Backlog:           gauge("backlog", "Events waiting for delivery, by target."),
		OldestPendingAge:  gauge("oldest_pending_age_seconds", "Age of the oldest event waiting for delivery, by target."),
		DeadLetters:       gauge("dead_letters", "Dead letters held, by target."),
		Paused:            gauge("target_paused", "1 while the target is paused."),
		BackfillRemaining: gauge("backfill_remaining", "Snapshot events of a running backfill not yet delivered or dead-lettered, by target."),
		CommitFailing: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "commit_failing",
			Help: "1 while the storage refuses to record delivery state (a full disk); deliveries wait and the commit is retried."}),
	}
}

// Collectors returns every collector, for registration by cmd.
func (m *Metrics) Collectors() []prometheus.Collector {
	if m == nil {
		return nil
	}
	return []prometheus.Collector{
		m.EventsEnqueued, m.Delivered, m.Retries, m.DeadLettered, m.FailedAttempts,
		m.DeliveryLatency, m.AttemptDuration, m.Backlog, m.OldestPendingAge, m.DeadLetters, m.Paused,
		m.BackfillRemaining, m.CommitFailing,
	}
}

func (m *Metrics) incEnqueued(typ string, n int) {
	if m != nil && n > 0 {
		m.EventsEnqueued.WithLabelValues(typ).Add(float64(n))
	}
}

// perTarget returns the collectors labelled by target.
func (m *Metrics) perTarget() []interface{ DeleteLabelValues(...string) bool } {
	return []interface{ DeleteLabelValues(...string) bool }{
		m.Delivered, m.Retries, m.DeadLettered, m.FailedAttempts, m.DeliveryLatency, m.AttemptDuration,
		m.Backlog, m.OldestPendingAge, m.DeadLetters, m.Paused, m.BackfillRemaining,
	}
}

// initTarget creates every per-target series at 0, so that increase() and
// rate() see a target from its first scrape, not from its first event.
func (m *Metrics) initTarget(target string) {
	if m == nil {
		return
	}
	for _, c := range []*prometheus.CounterVec{m.Delivered, m.Retries, m.DeadLettered, m.FailedAttempts} {
		c.WithLabelValues(target)
	}
	m.DeliveryLatency.WithLabelValues(target)
	m.AttemptDuration.WithLabelValues(target)
	for _, g := range []*prometheus.GaugeVec{m.Backlog, m.OldestPendingAge, m.DeadLetters, m.Paused, m.BackfillRemaining} {
		g.WithLabelValues(target)
	}
}

// removeTarget drops the series of a target removed from the configuration.
func (m *Metrics) removeTarget(target string) {
	if m == nil {
		return
	}
	for _, c := range m.perTarget() {
		c.DeleteLabelValues(target)
	}
}

// attempt records the outcome of one attempt.
func (m *Metrics) attempt(target string, took time.Duration, ok bool) {
	if m == nil {
		return
	}
	m.AttemptDuration.WithLabelValues(target).Observe(took.Seconds())
	if !ok {
		m.FailedAttempts.WithLabelValues(target).Inc()
	}
}

func (m *Metrics) delivered(target string, latency time.Duration) {
	if m != nil {
		m.Delivered.WithLabelValues(target).Inc()
		m.DeliveryLatency.WithLabelValues(target).Observe(max(latency, 0).Seconds())
	}
}

func (m *Metrics) retried(target string) {
	if m != nil {
		m.Retries.WithLabelValues(target).Inc()
	}
}

func (m *Metrics) deadLettered(target string) {
	if m != nil {
		m.DeadLettered.WithLabelValues(target).Inc()
	}
}

// gauges sets the per-target gauges.
func (m *Metrics) gauges(target string, backlog int, oldest time.Duration, dead int, paused bool, backfill int) {
	if m == nil {
		return
	}
	m.BackfillRemaining.WithLabelValues(target).Set(float64(backfill))
	m.Backlog.WithLabelValues(target).Set(float64(backlog))
	m.OldestPendingAge.WithLabelValues(target).Set(oldest.Seconds())
	m.DeadLetters.WithLabelValues(target).Set(float64(dead))
	p := 0.0
	if paused {
		p = 1
	}
	m.Paused.WithLabelValues(target).Set(p)
}

func (m *Metrics) commitFailing(on bool) {
	if m == nil {
		return
	}
	v := 0.0
	if on {
		v = 1
	}
	m.CommitFailing.Set(v)
}
