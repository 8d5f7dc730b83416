package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	bolt "go.etcd.io/bbolt"

	"github.com/scimgate/scimgate/gateway"
	"github.com/scimgate/scimgate/gateway/store"
	"github.com/scimgate/scimgate/mapping"
	"github.com/scimgate/scimgate/outbox"
)

const adminToken = "admin-token-0123456789abcdef"

// adminEnv is a SCIM server, a dispatcher and the admin API over one
// database, with a webhook receiver whose answer the test controls.
type adminEnv struct {
	scim       *testServer
	admin      string
	status     atomic.Int32 // what the receiver answers
	got        atomic.Int32 // deliveries answered 2xx
	dispatcher *outbox.Dispatcher
	db         *bolt.DB
	reload     func() ([]string, error) // what POST /admin/reload runs
	adminAPI   *gateway.Admin
	mu         sync.Mutex
	bodies     []string // delivered event bodies, in arrival order
}

func newAdminEnv(t *testing.T) *adminEnv {
	t.Helper()
	return newAdminEnvAPI(t, gateway.DefaultAPIConfig())
}

// newAdminEnvAPI is newAdminEnv with the app API configured.
func newAdminEnvAPI(t testing.TB, api gateway.APIConfig) *adminEnv {
	t.Helper()
	env := &adminEnv{reload: func() ([]string, error) { return nil, errors.New("no configuration in this test") }}
	env.status.Store(204)
	db := mustOpenDB(t)
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s := int(env.status.Load())
		if s < 300 {
			env.got.Add(1)
			env.mu.Lock()
			env.bodies = append(env.bodies, string(body))
			env.mu.Unlock()
		}
		w.WriteHeader(s)
		io.WriteString(w, `{"error":"no such department"}`)
	}))
	t.Cleanup(rcv.Close)
	secret, _ := outbox.NewSecret()
	ocfg := testOutboxConfig()
	ocfg.PollInterval = 20 * time.Millisecond
	ocfg.Targets = []outbox.Target{{Name: "app", URL: rcv.URL + "/hooks?key=s3cret", Secrets: []string{secret}, Timeout: 2 * time.Second}}
	om := outbox.NewMetrics()
	d, err := outbox.NewDispatcher(db, ocfg, discardLogger(), om)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	mapper, _ := mapping.Compile(mapping.DefaultRules())
	feed := outbox.NewFeed(db, outbox.FeedConfig{})
	st := store.New(db, mapper, store.Options{OnCommit: func() { d.Notify(); feed.Notify() }})
	t.Cleanup(st.Close)
	d.SetSnapshot(st.Snapshot)
	env.dispatcher, env.db = d, db
	gcfg := gateway.DefaultConfig()
	gcfg.Auth.BearerTokens = gateway.Tokens(gateway.HashToken(testToken))
	gm := gateway.NewMetrics()
	srv := gateway.NewServer(gcfg, st, discardLogger(), gm)
	scimSrv := httptest.NewServer(srv)
	t.Cleanup(scimSrv.Close)
	reg := prometheus.NewRegistry()
	reg.MustRegister(gm.Collectors()...)
	reg.MustRegister(om.Collectors()...)
	admin := gateway.NewAdmin(gateway.AdminConfig{Listen: "127.0.0.1:0", Tokens: []string{gateway.HashToken(adminToken)}},
		gateway.AdminDeps{DB: db, Store: st, SCIM: srv, Dispatcher: d, Gatherer: reg, Logger: discardLogger(), Version: "test", API: api,
			Feed: feed, Reload: func() ([]string, error) { return env.reload() }})
	adminSrv := httptest.NewServer(admin)
	t.Cleanup(adminSrv.Close)
	env.scim = &testServer{t: t, url: scimSrv.URL + "/scim/v2", store: st, srv: scimSrv}
	env.adminAPI = admin
	env.admin = adminSrv.URL
	waitUntil(t, "the dispatcher to run", d.Ready)
	return env
}

func (env *adminEnv) call(t *testing.T, method, path, token string, out any) (int, string) {
	t.Helper()
	return env.send(t, method, path, token, "", out)
}

// send is call with a JSON request body ("" for none).
func (env *adminEnv) send(t *testing.T, method, path, token, body string, out any) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, env.admin+path, rd)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode == 200 {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: %v\n%s", method, path, err, raw)
		}
	}
	return resp.StatusCode, string(raw)
}

func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestAdminAPI(t *testing.T) {
	env := newAdminEnv(t)
	if code, _ := env.call(t, "GET", "/healthz", "", nil); code != 200 {
		t.Errorf("healthz = %d", code)
	}
	if code, body := env.call(t, "GET", "/readyz", "", nil); code != 200 {
		t.Errorf("readyz = %d %s", code, body)
	}
	for _, tok := range []string{"", "wrong-token-0123456789"} {
		if code, _ := env.call(t, "GET", "/admin/status", tok, nil); code != 401 {
			t.Errorf("status with token %q = %d, want 401", tok, code)
		}
	}

	createUser(t, env.scim, "ada@example.com")
	// The receiver counts a delivery before the dispatcher records it.
	var st gateway.Status
	waitUntil(t, "first delivery recorded", func() bool {
		env.call(t, "GET", "/admin/status", adminToken, &st)
		return env.got.Load() == 1 && len(st.Targets) == 1 && st.Targets[0].Delivered == 1
	})
	if st.Users != 1 || st.ActiveUsers != 1 || st.LastSCIMChange.IsZero() || st.LastSCIMRequest.IsZero() || len(st.Targets) != 1 {
		t.Fatalf("status = %+v", st)
	}
	if tg := st.Targets[0]; tg.Delivered != 1 || tg.LastSuccess.IsZero() || strings.Contains(tg.URL, "s3cret") {
		t.Errorf("target status = %+v", tg)
	}

	// A permanent 400 makes a dead letter, listed, shown, replayable.
	env.status.Store(400)
	createUser(t, env.scim, "grace@example.com")
	var list struct {
		DeadLetters []outbox.DeadLetter `json:"dead_letters"`
	}
	waitUntil(t, "a dead letter", func() bool {
		env.call(t, "GET", "/admin/targets/app/dead-letters", adminToken, &list)
		return len(list.DeadLetters) == 1
	})
	dl := list.DeadLetters[0]
	if dl.Event.Type != "user.created" || dl.LastStatus != 400 {
		t.Errorf("dead letter = %+v", dl)
	}
	var one outbox.DeadLetter
	if code, body := env.call(t, "GET", "/admin/targets/app/dead-letters/"+dl.Event.ID, adminToken, &one); code != 200 || !strings.Contains(one.ResponseBody, "no such department") {
		t.Errorf("dead letter detail: %d %s", code, body)
	}
	env.call(t, "GET", "/admin/status", adminToken, &st)
	if st.Targets[0].DeadLetters != 1 || st.Targets[0].LastStatus != 400 || st.Targets[0].LastError == "" {
		t.Errorf("status after dead letter = %+v", st.Targets[0])
	}
	if code, _ := env.call(t, "GET", "/admin/targets/nope/dead-letters", adminToken, nil); code != 404 {
		t.Errorf("unknown target = %d, want 404", code)
	}
	env.status.Store(204)
	if code, body := env.send(t, "POST", "/admin/targets/app/replay", adminToken, `{"all":true}`, nil); code != 200 || !strings.Contains(body, `"replayed": 1`) {
		t.Fatalf("replay: %d %s", code, body)
	}
	waitUntil(t, "replayed delivery", func() bool { return env.got.Load() == 2 })

	// Pause holds deliveries back; resume releases them.
	env.call(t, "POST", "/admin/targets/app/pause", adminToken, nil)
	createUser(t, env.scim, "linus@example.com")
	// Deliberately real time: a paused target that delivered anyway would
	// do so within this window (deliveries here take about a millisecond).
	time.Sleep(150 * time.Millisecond)
	env.call(t, "GET", "/admin/status", adminToken, &st)
	if !st.Targets[0].Paused || st.Targets[0].Backlog != 1 || env.got.Load() != 2 {
		t.Errorf("paused: %+v, delivered %d", st.Targets[0], env.got.Load())
	}
	env.call(t, "POST", "/admin/targets/app/resume", adminToken, nil)
	waitUntil(t, "delivery after resume, recorded", func() bool {
		env.call(t, "GET", "/admin/status", adminToken, &st)
		return env.got.Load() == 3 && st.Targets[0].Delivered == 3
	})

	// Metrics parse as Prometheus text and carry the figures.
	resp, err := http.Get(env.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("metrics do not parse: %v", err)
	}
	for _, name := range []string{"scimgate_scim_requests_total", "scimgate_scim_request_duration_seconds",
		"scimgate_outbox_delivered_total", "scimgate_outbox_dead_lettered_total", "scimgate_outbox_backlog"} {
		if families[name] == nil {
			t.Errorf("metric %s missing", name)
		}
	}
	if got := families["scimgate_outbox_delivered_total"].GetMetric()[0].GetCounter().GetValue(); got != 3 {
		t.Errorf("delivered counter = %v, want 3", got)
	}

	// The backup is a consistent bbolt file holding the users.
	code, body := env.call(t, "GET", "/admin/backup", adminToken, nil)
	if code != 200 {
		t.Fatalf("backup = %d", code)
	}
	file := filepath.Join(t.TempDir(), "backup.db")
	os.WriteFile(file, []byte(body), 0o600)
	bdb, err := bolt.Open(file, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatalf("backup does not open: %v", err)
	}
	defer bdb.Close()
	bdb.View(func(tx *bolt.Tx) error {
		if n := tx.Bucket([]byte("users")).Stats().KeyN; n != 3 {
			t.Errorf("backup has %d users, want 3", n)
		}
		return nil
	})
}
