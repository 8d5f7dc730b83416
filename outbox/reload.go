package outbox

import (
	"fmt"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	"gopkg.in/yaml.v3"
)

// reloadPlan is a Reload handed to a running scheduler.
type reloadPlan struct {
	cfg     Config
	window  int
	targets []*target
}

// Reload validates cfg and, if it is valid, makes it the dispatcher's
// configuration, atomically and while Run runs. A config that fails
// validation (or whose senders cannot be built) changes nothing and the
// error says why.
//
// Everything in the outbox section reloads:
//   - A target added starts at the log's current tail (events committed
//     after the reload), or with a backfill first when it has
//     backfill_on_start and was never seen before. A target that comes back
//     after a removal resumes from its cursor.
//   - A target removed stops receiving deliveries; attempts in flight
//     finish. Its state (cursor, pending events, dead letters) is kept, but
//     it no longer holds back pruning, so adding it back later skips the
//     events pruned meanwhile.
//   - A target changed gets a new sender when its type, url, headers,
//     secrets, timeout or nats/kafka settings change (and every target when
//     concurrency changes, which sizes its connection pool). Attempts in
//     flight finish on the old sender, which is closed once idle. New event
//     patterns apply to events admitted from now on; events already queued
//     for the target are still delivered.
//   - max_attempts, max_age, backoff, retry_after_max and concurrency apply
//     from the next attempt outcome (a scheduled retry keeps its time; use
//     RetryNow to bring it forward); retention, feed_retention and
//     poll_interval from the next pass.
//
// A target's name is its identity (it keys the stored state), so a rename is
// a removal and an addition. The database and everything outside the outbox
// section are the application's to reload or not.
//
// It returns human-readable changes, in configuration order and without
// secret or header values, e.g. "target app: secrets changed (2 → 3)".
func (d *Dispatcher) Reload(cfg Config) ([]string, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	oldCfg, oldTargets := d.config()
	old := make(map[string]*target, len(oldTargets))
	for _, t := range oldTargets {
		old[t.cfg.Name] = t
	}
	rebuild := func(name string) bool {
		o := old[name]
		var n Target
		for _, tc := range cfg.Targets {
			if tc.Name == name {
				n = tc.withDefaults()
			}
		}
		return cfg.Concurrency != oldCfg.Concurrency || senderChanged(o.cfg, n)
	}
	targets, err := d.buildTargets(cfg, old, rebuild)
	if err != nil {
		return nil, fmt.Errorf("outbox: reload: %w", err)
	}
	dropNew := func() {
		for _, t := range targets {
			if o := old[t.cfg.Name]; o == nil || o.use != t.use {
				d.closeSender(t)
			}
		}
	}

	// State buckets for added targets, at the current tail.
	type addition struct {
		created bool
		cursor  uint64
	}
	added := map[string]addition{}
	err = d.write(func(tx *bolt.Tx) error {
		clear(added)
		tail := logTail(tx)
		for _, t := range targets {
			if old[t.cfg.Name] != nil {
				continue
			}
			existed := targetBucket(tx, t.cfg.Name) != nil
			b, err := d.ensureTarget(tx, t.cfg, tail)
			if err != nil {
				return err
			}
			added[t.cfg.Name] = addition{created: !existed, cursor: getU64(b, keyCursor)}
		}
		return nil
	}, nil)
	if err != nil {
		dropNew()
		return nil, fmt.Errorf("outbox: reload: %w", err)
	}

	var changes []string
	for _, t := range targets {
		name := t.cfg.Name
		o := old[name]
		if o == nil {
			a := added[name]
			switch {
			case a.created && t.cfg.BackfillOnStart:
				changes = append(changes, fmt.Sprintf("target %s added (%s %s): a snapshot of the directory first (backfill_on_start), then the events after it", name, t.cfg.kind(), t.redacted))
			case a.created:
				changes = append(changes, fmt.Sprintf("target %s added (%s %s): receives the events after sequence %d", name, t.cfg.kind(), t.redacted, a.cursor))
			default:
				changes = append(changes, fmt.Sprintf("target %s added back (%s %s): resumes after sequence %d where it stopped; events pruned meanwhile are not sent (backfill it if needed)", name, t.cfg.kind(), t.redacted, a.cursor))
			}
			continue
		}
		changes = append(changes, targetChanges(o, t)...)
	}
	for _, o := range oldTargets {
		if !slices.ContainsFunc(targets, func(t *target) bool { return t.cfg.Name == o.cfg.Name }) {
			changes = append(changes, fmt.Sprintf("target %s removed: deliveries stop; its cursor, pending events and dead letters are kept (adding it back resumes there)", o.cfg.Name))
		}
	}
	changes = append(changes, settingChanges(oldCfg, cfg)...)

	d.mu.RLock()
	d.setConfig(cfg, targets)
	d.cfgMu.RLock()
	plan := &reloadPlan{cfg: cfg, window: d.window, targets: targets}
	d.cfgMu.RUnlock()
	posted := d.opsOpen
	if posted {
		d.post(func(s *scheduler) { s.reconfigure(plan) })
	}
	d.mu.RUnlock()
	if !posted { // nothing is in flight: close what is no longer used now
		for _, o := range oldTargets {
			if t := findTarget(targets, o.cfg.Name); t == nil || t.use != o.use {
				d.closeSender(o)
			}
		}
	}
	for _, t := range targets {
		if old[t.cfg.Name] == nil {
			d.metrics.initTarget(t.cfg.Name)
		}
	}
	for _, o := range oldTargets {
		if findTarget(targets, o.cfg.Name) == nil {
			d.metrics.removeTarget(o.cfg.Name)
		}
	}
	for _, c := range changes {
		d.logger.Info("Outbox configuration reloaded", "change", c)
	}
	return changes, nil
}

func findTarget(ts []*target, name string) *target {
	for _, t := range ts {
		if t.cfg.Name == name {
			return t
		}
	}
	return nil
}

// senderChanged reports whether a target needs a new sender.
func senderChanged(a, b Target) bool {
	return a.kind() != b.kind() || a.URL != b.URL || !maps.Equal(a.Headers, b.Headers) ||
		!slices.Equal(a.Secrets, b.Secrets) || a.Timeout != b.Timeout ||
		!reflect.DeepEqual(a.NATS, b.NATS) || !reflect.DeepEqual(a.Kafka, b.Kafka) || !sameNode(&a.Rest, &b.Rest)
}

// sameNode reports whether two YAML sections hold the same content (lines
// and styles aside).
func sameNode(a, b *yaml.Node) bool {
	if a.IsZero() || b.IsZero() {
		return a.IsZero() == b.IsZero()
	}
	x, errA := yaml.Marshal(a)
	y, errB := yaml.Marshal(b)
	return errA == nil && errB == nil && string(x) == string(y)
}

// targetChanges describes what changed in a target, never with a secret,
// a header value or a URL's query or credentials.
func targetChanges(o, n *target) []string {
	a, b := o.cfg, n.cfg
	var out []string
	add := func(format string, args ...any) {
		out = append(out, fmt.Sprintf("target %s: ", a.Name)+fmt.Sprintf(format, args...))
	}
	if a.kind() != b.kind() {
		add("type %s → %s", a.kind(), b.kind())
	}
	if a.URL != b.URL {
		if o.redacted != n.redacted {
			add("url changed (%s → %s)", o.redacted, n.redacted)
		} else {
			add("url changed (its query or credentials)")
		}
	}
	if !maps.Equal(a.Headers, b.Headers) {
		var names []string
		for k, v := range a.Headers {
			if w, ok := b.Headers[k]; !ok || w != v {
				names = append(names, http.CanonicalHeaderKey(k))
			}
		}
		for k := range b.Headers {
			if _, ok := a.Headers[k]; !ok {
				names = append(names, http.CanonicalHeaderKey(k))
			}
		}
		slices.Sort(names)
		add("headers changed (%s)", strings.Join(slices.Compact(names), ", "))
	}
	if !slices.Equal(a.Secrets, b.Secrets) {
		add("secrets changed (%d → %d)", len(a.Secrets), len(b.Secrets))
	}
	if a.Timeout != b.Timeout {
		add("timeout %s → %s", a.Timeout, b.Timeout)
	}
	if !reflect.DeepEqual(a.NATS, b.NATS) && a.kind() == b.kind() {
		add("nats settings changed")
	}
	if !reflect.DeepEqual(a.Kafka, b.Kafka) && a.kind() == b.kind() {
		add("kafka settings changed")
	}
	if !sameNode(&a.Rest, &b.Rest) && a.kind() == b.kind() {
		add("%s settings changed", a.kind())
	}
	if !slices.Equal(a.Events, b.Events) {
		add("events %v → %v (applies to events admitted from now on)", a.Events, b.Events)
	}
	if a.BackfillOnStart != b.BackfillOnStart {
		add("backfill_on_start %v → %v (it acts only when a target is first seen; use backfill to send a snapshot now)", a.BackfillOnStart, b.BackfillOnStart)
	}
	return out
}

// settingChanges describes the changed outbox-wide settings.
func settingChanges(a, b Config) []string {
	var out []string
	dur := func(name string, x, y time.Duration) {
		if x != y {
			out = append(out, fmt.Sprintf("%s %s → %s", name, x, y))
		}
	}
	if a.MaxAttempts != b.MaxAttempts {
		out = append(out, fmt.Sprintf("max_attempts %d → %d", a.MaxAttempts, b.MaxAttempts))
	}
	dur("max_age", a.MaxAge, b.MaxAge)
	if !slices.Equal(a.Backoff, b.Backoff) {
		out = append(out, fmt.Sprintf("backoff %v → %v", a.Backoff, b.Backoff))
	}
	dur("retry_after_max", a.RetryAfterMax, b.RetryAfterMax)
	if a.Concurrency != b.Concurrency {
		out = append(out, fmt.Sprintf("concurrency %d → %d (every target gets a new sender)", a.Concurrency, b.Concurrency))
	}
	dur("retention", a.Retention, b.Retention)
	dur("feed_retention", a.FeedRetention, b.FeedRetention)
	dur("poll_interval", a.PollInterval, b.PollInterval)
	return out
}
