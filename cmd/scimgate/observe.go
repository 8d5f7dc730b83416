package main

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
)

// observer is the store's Observer: what operators watch about mapping
// and memberships, as WARN lines (ids and field names, never values) and
// counters.
type observer struct {
	logger     *slog.Logger
	warnings   *prometheus.CounterVec
	rejections *prometheus.CounterVec
	unknown    prometheus.Counter
}

func newObserver(logger *slog.Logger) *observer {
	return &observer{
		logger: logger.With("component", "mapping"),
		warnings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scimgate_mapping_warnings_total",
			Help: "Optional record fields dropped or defaulted because the value sent was invalid, by resource and field.",
		}, []string{"resource", "field"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scimgate_mapping_rejections_total",
			Help: "SCIM writes refused by the mapping (400 invalidValue), by resource.",
		}, []string{"resource"}),
		unknown: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "scimgate_scim_unknown_members_total",
			Help: "Member ids that named no user or group and were ignored (scim.unknown_members: ignore).",
		}),
	}
}

func (o *observer) collectors() []prometheus.Collector {
	return []prometheus.Collector{o.warnings, o.rejections, o.unknown}
}

// init makes the rejection series exist from start-up, so increase()
// alerts see the first one.
func (o *observer) init() {
	for _, r := range []string{"user", "group"} {
		o.rejections.WithLabelValues(r)
	}
}

func (o *observer) MappingWarning(resource, id, field string) {
	o.warnings.WithLabelValues(resource, field).Inc()
	o.logger.Warn("mapping warning: an optional field was dropped or defaulted because its value was invalid",
		"resource", resource, "id", id, "field", field)
}

func (o *observer) MappingRejected(resource string, fields []string) {
	o.rejections.WithLabelValues(resource).Inc()
	o.logger.Warn("mapping rejected a write (400 invalidValue to the identity provider)", "resource", resource, "fields", fields)
}

func (o *observer) UnknownMembers(groupID string, ids int) {
	o.unknown.Add(float64(ids))
}
