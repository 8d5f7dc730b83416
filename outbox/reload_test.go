package outbox

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"
)

// trackedSender wraps a sender and records its Close.
type trackedSender struct {
	Sender
	closed atomic.Bool
}

func (s *trackedSender) Close() error {
	s.closed.Store(true)
	if c, ok := s.Sender.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// trackSenders makes cfg's transports (and those of the configs cloned
// from it afterwards) build trackedSenders and returns them by target, in
// build order.
func trackSenders(cfg *Config) func(name string) []*trackedSender {
	var mu sync.Mutex
	built := map[string][]*trackedSender{}
	wrapped := make(map[string]Transport, len(cfg.Transports))
	for typ, tr := range cfg.Transports {
		build := tr.New
		tr.New = func(t Target, env Env) (Sender, error) {
			s, err := build(t, env)
			if err != nil {
				return nil, err
			}
			ts := &trackedSender{Sender: s}
			mu.Lock()
			built[t.Name] = append(built[t.Name], ts)
			mu.Unlock()
			return ts, nil
		}
		wrapped[typ] = tr
	}
	cfg.Transports = wrapped
	return func(name string) []*trackedSender {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(built[name])
	}
}

func cloneConfig(c Config) Config {
	c.Targets = slices.Clone(c.Targets)
	c.Backoff = slices.Clone(c.Backoff)
	return c
}

// Reload while Run runs: a changed target delivers to its new URL with its new
// secrets, a removed one stops (its state kept), an added one starts at the
// tail; the changes are described without secrets; an invalid config changes
// nothing.
func TestReloadTargets(t *testing.T) {
	secretA, secretB := mustSecret(t), mustSecret(t)
	a := newReceiver(t, secretA, nil)
	gone := newReceiver(t, secretA, nil)
	db := mustOpenDB(t)
	cfg := testConfig(a.srv.URL+"/hooks", secretA)
	cfg.Targets = append(cfg.Targets, Target{Name: "old", URL: gone.srv.URL, Secrets: []string{secretA}})
	d := newTestDispatcher(t, db, cfg)
	runDispatcher(t, d)
	ev1 := enqueue(t, db, d, userEvent("user.created", "u1"))
	a.waitAcked(t, 5*time.Second, ev1)
	gone.waitAcked(t, 5*time.Second, ev1)

	b := newReceiver(t, secretB, nil)
	added := newReceiver(t, secretA, nil)
	cfg2 := cloneConfig(cfg)
	cfg2.MaxAttempts = 7
	cfg2.Targets = []Target{
		{Name: "app", URL: b.srv.URL + "/v2?token=x", Secrets: []string{secretA, secretB}, Headers: map[string]string{"X-Api-Key": "k2"}},
		{Name: "new", URL: added.srv.URL, Secrets: []string{secretA}, Events: []string{"user.*"}},
	}
	changes, err := d.Reload(cfg2)
	if err != nil {
		t.Fatalf("Reload: %v", err)
	}
	joined := strings.Join(changes, "\n")
	for _, want := range []string{
		"target app: url changed (" + a.srv.URL + "/hooks → " + b.srv.URL + "/v2)",
		"target app: secrets changed (1 → 2)",
		"target app: headers changed (X-Api-Key)",
		"target new added (webhook " + added.srv.URL + "): receives the events after sequence " + jsonNum(ev1[0].Seq),
		"target old removed",
		"max_attempts 100 → 7",
	} {
		if !strings.Contains(joined, want) {
			t.Errorf("changes lack %q:\n%s", want, joined)
		}
	}
	for _, leak := range []string{strings.TrimPrefix(secretB, "whsec_"), strings.TrimPrefix(secretA, "whsec_"), "k2", "token=x"} {
		if strings.Contains(joined, leak) {
			t.Errorf("changes reveal %q:\n%s", leak, joined)
		}
	}

	ev2 := enqueue(t, db, d, userEvent("user.updated", "u1"), Event{Type: "group.created", Resources: []string{"Group/g1"}, Data: []byte(`{}`)})
	b.waitAcked(t, 5*time.Second, ev2)
	added.waitAcked(t, 5*time.Second, ev2[:1])
	b.checkSignatures(t) // signed with secret B among others
	b.mu.Lock()
	if k := b.got[0].Header.Get("X-Api-Key"); k != "k2" {
		t.Errorf("new header value %q, want k2", k)
	}
	b.mu.Unlock()
	// Deliberately real time: a request that should not come would come
	// within this window (nothing signals its absence).
	time.Sleep(50 * time.Millisecond)
	for _, rc := range []*receiver{a, gone} {
		rc.mu.Lock()
		if len(rc.got) != 1 {
			t.Errorf("a replaced or removed target's old receiver got %d requests, want only the one before the reload", len(rc.got))
		}
		rc.mu.Unlock()
	}
	added.mu.Lock()
	for _, g := range added.got {
		if g.ID == ev1[0].ID || g.Type == "group.created" {
			t.Errorf("added target received %s (seq %d): it starts at the tail and subscribes to user.*", g.Type, g.Seq)
		}
	}
	added.mu.Unlock()
	sts, err := d.Status()
	if err != nil || len(sts) != 2 || sts[0].Name != "app" || sts[1].Name != "new" || sts[0].URL != b.srv.URL+"/v2" {
		t.Errorf("Status after reload = %+v, %v", sts, err)
	}
	_ = db.View(func(tx *bolt.Tx) error {
		if targetBucket(tx, "old") == nil {
			t.Error("the removed target's state was deleted")
		}
		return nil
	})
	if err := d.Pause("old", ""); !errors.Is(err, ErrUnknownTarget) {
		t.Errorf("Pause(removed target) = %v, want ErrUnknownTarget", err)
	}

	bad := cloneConfig(cfg2)
	bad.Targets[0].URL = "ftp://nowhere"
	bad.Targets = append(bad.Targets, Target{Name: "x", URL: added.srv.URL, Secrets: []string{"whsec_***"}})
	var fe *FieldError
	ch, err := d.Reload(bad)
	if err == nil || !errors.As(err, &fe) || ch != nil {
		t.Fatalf("Reload(invalid) = %v, %v; want field errors", ch, err)
	}
	if strings.Contains(err.Error(), "***") {
		t.Errorf("error quotes a secret: %v", err)
	}
	ev3 := enqueue(t, db, d, userEvent("user.updated", "u2"))
	b.waitAcked(t, 5*time.Second, ev3) // the running configuration is kept
	if sts, _ := d.Status(); len(sts) != 2 {
		t.Errorf("an invalid reload changed the targets: %+v", sts)
	}
	if changes, err := d.Reload(cfg2); err != nil || len(changes) != 0 {
		t.Errorf("reloading the same config = %q, %v; want no changes", changes, err)
	}
}

func jsonNum(n uint64) string { b, _ := json.Marshal(n); return string(b) }

// An attempt in flight when its target changes finishes on the old sender,
// which is closed once idle; the next events use the new one.
func TestReloadInFlight(t *testing.T) {
	secret := mustSecret(t)
	release := make(chan struct{})
	var once sync.Once
	a := newReceiver(t, secret, func(w http.ResponseWriter, r *http.Request, dl delivery, attempt int) int {
		<-release
		return 0
	})
	b := newReceiver(t, secret, nil)
	db := mustOpenDB(t)
	cfg := testConfig(a.srv.URL, secret)
	d := newTestDispatcher(t, db, cfg)
	senders := trackSenders(&cfg)
	// NewDispatcher built the first sender before tracking: rebuild it tracked.
	d.closeSender(d.targets[0])
	d.targets[0].use = &senderUse{}
	var err error
	if d.targets[0].sender, err = cfg.Transports[TypeWebhook].New(d.targets[0].cfg, Env{Config: cfg}); err != nil {
		t.Fatal(err)
	}
	runDispatcher(t, d)
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	ev1 := enqueue(t, db, d, userEvent("user.created", "u1"))[0]
	a.waitFor(t, 5*time.Second, "the request in flight", func() bool { return a.inFlight == 1 })

	cfg2 := cloneConfig(cfg)
	cfg2.Targets[0].URL = b.srv.URL
	if _, err := d.Reload(cfg2); err != nil {
		t.Fatal(err)
	}
	old := senders("app")[0]
	// Deliberately real time: a sender closed too early, the defect, would
	// be closed within this window.
	time.Sleep(50 * time.Millisecond)
	if old.closed.Load() {
		t.Fatal("old sender closed while its attempt is in flight")
	}
	ev2 := enqueue(t, db, d, userEvent("user.created", "u2"))[0]
	b.waitAcked(t, 5*time.Second, []Event{ev2}) // unrelated resource: not held by the first
	once.Do(func() { close(release) })
	a.waitAcked(t, 5*time.Second, []Event{ev1})
	waitStatus(t, d, 5*time.Second, "both delivered", func(st TargetStatus) bool { return st.Delivered == 2 && st.Backlog == 0 })
	deadline := time.Now().Add(5 * time.Second)
	for !old.closed.Load() {
		if time.Now().After(deadline) {
			t.Fatal("old sender not closed after its last attempt")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if s := senders("app"); len(s) != 2 || s[1].closed.Load() {
		t.Errorf("senders %d; the new one must be open", len(s))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, g := range b.got {
		if g.ID == ev1.ID {
			t.Error("the event delivered on the old sender was sent again")
		}
	}
}

// A reload without Run takes effect at the next Run; senders no longer used
// are closed at once.
func TestReloadWithoutRun(t *testing.T) {
	secret := mustSecret(t)
	a := newReceiver(t, secret, nil)
	b := newReceiver(t, secret, nil)
	db := mustOpenDB(t)
	cfg := testConfig(a.srv.URL, secret)
	d := newTestDispatcher(t, db, cfg)
	senders := trackSenders(&cfg)
	cfg2 := cloneConfig(cfg)
	cfg2.Targets = append(cfg2.Targets, Target{Name: "b", URL: b.srv.URL, Secrets: []string{secret}})
	cfg2.Targets[0].Timeout = 3 * time.Second
	changes, err := d.Reload(cfg2)
	if err != nil || !slices.Contains(changes, "target app: timeout 2s → 3s") {
		t.Fatalf("Reload = %q, %v", changes, err)
	}
	cfg3 := cloneConfig(cfg2)
	cfg3.Targets[0].Timeout = 4 * time.Second
	if _, err := d.Reload(cfg3); err != nil {
		t.Fatal(err)
	}
	if s := senders("app"); len(s) != 2 || !s[0].closed.Load() || s[1].closed.Load() {
		t.Errorf("the replaced sender must be closed at once without Run, the current one open")
	}
	runDispatcher(t, d)
	evs := enqueue(t, db, d, userEvent("user.created", "u1"))
	a.waitAcked(t, 5*time.Second, evs)
	b.waitAcked(t, 5*time.Second, evs)
}

// gather returns every metric as name{labels} → value (a histogram's
// sample count).
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			var parts []string
			for _, l := range mt.GetLabel() {
				parts = append(parts, l.GetName()+"="+`"`+l.GetValue()+`"`)
			}
			v := mt.GetCounter().GetValue() + mt.GetGauge().GetValue() + float64(mt.GetHistogram().GetSampleCount())
			got[mf.GetName()+"{"+strings.Join(parts, ",")+"}"] = v
		}
	}
	return got
}

var perTargetMetrics = []string{
	"scimgate_outbox_delivered_total", "scimgate_outbox_retries_total", "scimgate_outbox_dead_lettered_total",
	"scimgate_outbox_failed_attempts_total", "scimgate_outbox_delivery_latency_seconds", "scimgate_outbox_attempt_duration_seconds",
	"scimgate_outbox_backlog", "scimgate_outbox_oldest_pending_age_seconds", "scimgate_outbox_dead_letters",
	"scimgate_outbox_target_paused", "scimgate_outbox_backfill_remaining",
}

// Every per-target series exists at 0 from NewDispatcher on (increase()
// alerts need the 0), for targets added by Reload too; a removed target's
// series go.
func TestMetricsFromStartup(t *testing.T) {
	secret := mustSecret(t)
	db := mustOpenDB(t)
	m := NewMetrics()
	reg := prometheus.NewRegistry()
	for _, c := range m.Collectors() {
		reg.MustRegister(c)
	}
	cfg := testConfig("http://127.0.0.1:1/", secret)
	cfg.Targets = append(cfg.Targets, Target{Name: "b", URL: "http://127.0.0.1:1/", Secrets: []string{secret}})
	d, err := NewDispatcher(db, cfg, nil, m)
	if err != nil {
		t.Fatal(err)
	}
	got := gather(t, reg)
	for _, name := range perTargetMetrics {
		for _, target := range []string{"app", "b"} {
			k := name + `{target="` + target + `"}`
			if v, ok := got[k]; !ok || v != 0 {
				t.Errorf("%s = %v (present %v) before any event, want 0", k, v, ok)
			}
		}
	}
	cfg2 := cloneConfig(cfg)
	cfg2.Targets = []Target{cfg.Targets[0], {Name: "c", URL: "http://127.0.0.1:1/", Secrets: []string{secret}}}
	if _, err := d.Reload(cfg2); err != nil {
		t.Fatal(err)
	}
	got = gather(t, reg)
	for _, name := range perTargetMetrics {
		if _, ok := got[name+`{target="c"}`]; !ok {
			t.Errorf("%s missing for the target added by Reload", name)
		}
		if _, ok := got[name+`{target="b"}`]; ok {
			t.Errorf("%s still reported for the removed target", name)
		}
	}
}

// Status JSON: durations in seconds with the unit in the name, the sender
// kind; decoding fills the Go duration again.
func TestStatusJSON(t *testing.T) {
	secret := mustSecret(t)
	db := mustOpenDB(t)
	d := newTestDispatcher(t, db, testConfig("http://127.0.0.1:1/", secret))
	if err := d.Pause("app", "x"); err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-90 * time.Second)
	err := db.Update(func(tx *bolt.Tx) error {
		_, err := Enqueue(tx, userEvent("user.created", "u1"), past)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	sts, err := d.Status()
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(sts[0])
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	if _, ok := m["oldest_pending_age"]; ok {
		t.Errorf("JSON still carries oldest_pending_age (nanoseconds): %s", raw)
	}
	if s, ok := m["oldest_pending_age_seconds"].(float64); !ok || s < 89 || s > 120 {
		t.Errorf("oldest_pending_age_seconds = %v, want about 90: %s", m["oldest_pending_age_seconds"], raw)
	}
	if m["type"] != "webhook" {
		t.Errorf("type = %v, want webhook", m["type"])
	}
	var back TargetStatus
	if err := json.Unmarshal(raw, &back); err != nil || back.OldestPendingAge < 89*time.Second || back.Name != "app" || !back.Paused {
		t.Errorf("decoded %+v, %v", back, err)
	}
}

// A target removed and added back resumes where it stopped: the events
// committed meanwhile are delivered to it after the re-add.
func TestReloadRemoveAndAddBack(t *testing.T) {
	secret := mustSecret(t)
	a := newReceiver(t, secret, nil)
	b := newReceiver(t, secret, nil)
	db := mustOpenDB(t)
	cfg := testConfig(a.srv.URL, secret)
	cfg.Targets = append(cfg.Targets, Target{Name: "b", URL: b.srv.URL, Secrets: []string{secret}})
	d := newTestDispatcher(t, db, cfg)
	runDispatcher(t, d)
	first := enqueue(t, db, d, userEvent("user.created", "u1"))
	b.waitAcked(t, 5*time.Second, first)

	only := cloneConfig(cfg)
	only.Targets = only.Targets[:1]
	if _, err := d.Reload(only); err != nil {
		t.Fatal(err)
	}
	meanwhile := enqueue(t, db, d, userEvent("user.updated", "u1"), userEvent("user.created", "u2"))
	a.waitAcked(t, 5*time.Second, meanwhile)
	b.mu.Lock()
	if len(b.got) != 1 {
		t.Errorf("removed target received %d requests, want 1", len(b.got))
	}
	b.mu.Unlock()
	changes, err := d.Reload(cfg)
	if err != nil || len(changes) != 1 || !strings.Contains(changes[0], "target b added back") ||
		!strings.Contains(changes[0], "resumes after sequence "+jsonNum(first[0].Seq)) {
		t.Fatalf("Reload(add back) = %q, %v", changes, err)
	}
	b.waitAcked(t, 5*time.Second, meanwhile)
	waitStatus(t, d, 5*time.Second, "both caught up", func(st TargetStatus) bool { return st.Backlog == 0 })
}
