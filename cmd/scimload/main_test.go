package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/scimgate/scimgate/gateway"
	"github.com/scimgate/scimgate/gateway/store"
	"github.com/scimgate/scimgate/mapping"
	"github.com/scimgate/scimgate/outbox"
	"github.com/scimgate/scimgate/outbox/webhook"
)

const testToken = "scimload-test-token-0123456789"

// gatewayFor starts a gateway as cmd/scimgate wires it — store, SCIM
// server, admin API, dispatcher delivering to hookURL — on a real bbolt
// file, and returns its SCIM base URL and admin URL.
func gatewayFor(t *testing.T, hookURL, secret string) (scimURL, adminURL string, db *bolt.DB) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "scimgate.db"), 0o600, store.BoltOptions())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Update(func(tx *bolt.Tx) error {
		if err := store.InitBuckets(tx); err != nil {
			return err
		}
		return outbox.InitBuckets(tx)
	}); err != nil {
		t.Fatal(err)
	}
	ocfg := outbox.DefaultConfig()
	ocfg.Transports = map[string]outbox.Transport{outbox.TypeWebhook: webhook.Transport()}
	ocfg.Targets = []outbox.Target{{Name: "app", URL: hookURL, Secrets: []string{secret}}}
	d, err := outbox.NewDispatcher(db, ocfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	mapper, err := mapping.Compile(mapping.DefaultRules())
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(db, mapper, store.Options{OnCommit: d.Notify})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; st.Close() })
	cfg := gateway.DefaultConfig()
	cfg.Auth.BearerTokens = gateway.Tokens(gateway.HashToken(testToken))
	logger := slog.New(slog.DiscardHandler)
	scim := gateway.NewServer(cfg, st, logger, nil)
	srv := httptest.NewServer(scim)
	t.Cleanup(srv.Close)
	acfg := gateway.DefaultAdminConfig()
	acfg.Tokens = []string{gateway.HashToken("admin-" + testToken)}
	admin := httptest.NewServer(gateway.NewAdmin(acfg, gateway.AdminDeps{DB: db, Store: st, SCIM: scim, Dispatcher: d,
		Gatherer: prometheus.NewRegistry(), Logger: logger}))
	t.Cleanup(admin.Close)
	return srv.URL + "/scim/v2", admin.URL, db
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestMixesAgainstGateway runs each mix briefly against a real gateway with
// delivery measured by scimload's own receiver, and checks the summary:
// every kind of the mix answered without errors, and every event the run
// caused arrived (redeliveries aside), signed.
func TestMixesAgainstGateway(t *testing.T) {
	secret, err := outbox.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		mix   string
		kinds []string
		// events each round causes at least (create, update, deactivate)
		perRound int
	}{
		{"okta", []string{"create", "deactivate", "filter", "group-add", "group-create", "replace"}, 3},
		{"entra", []string{"create", "deactivate", "filter", "group-add", "group-create", "member-check", "update"}, 3},
		{"import", []string{"filter", "import-page"}, 0},
	} {
		t.Run(c.mix, func(t *testing.T) {
			addr := freeAddr(t)
			scimURL, adminURL, db := gatewayFor(t, "http://"+addr+"/hooks", secret)
			var out bytes.Buffer
			const rounds = 40
			err := run(t.Context(), []string{"-url", scimURL, "-token", testToken, "-mix", c.mix,
				"-clients", "4", "-rounds", "40", "-users", "150", "-group-size", "10", "-duration", "1m",
				"-receive", addr, "-secret", secret, "-admin", adminURL, "-admin-token", "admin-" + testToken, "-json"}, &out)
			if err != nil {
				t.Fatalf("run: %v\n%s", err, out.String())
			}
			var s Summary
			if err := json.Unmarshal(out.Bytes(), &s); err != nil {
				t.Fatalf("summary: %v\n%s", err, out.String())
			}
			got := map[string]Kind{}
			for _, k := range s.Kinds {
				got[k.Kind] = k
				if k.Errors != 0 {
					t.Errorf("%s: %d errors, first: %s", k.Kind, k.Errors, k.FirstError)
				}
			}
			for _, kind := range c.kinds {
				if k := got[kind]; k.Count == 0 || k.P50 <= 0 || k.P99 < k.P50 || k.Rate <= 0 {
					t.Errorf("%s: %+v; want requests with latencies and a rate", kind, k)
				}
			}
			if p := got["preload"]; p.Count != 150 {
				t.Errorf("preload: %d users created, want 150", p.Count)
			}
			d := s.Delivery
			if d == nil {
				t.Fatal("no delivery report")
			}
			// Every event of the mix (the log's events after the preload's
			// 150 user.created) reached the receiver, signed.
			var tail uint64
			_ = db.View(func(tx *bolt.Tx) error { tail = outbox.Tail(tx); return nil })
			want := int64(tail) - 150
			if d.Received-d.Duplicates != want || d.BadSignatures != 0 || want < int64(rounds*c.perRound) {
				t.Errorf("delivery: %+v; want %d events (at least %d), all correctly signed", d, want, rounds*c.perRound)
			}
			if want > 0 && (d.P99 <= 0 || d.DrainSource != "admin status: backlog 0") {
				t.Errorf("delivery: %+v; want latencies and a drain read from the admin status", d)
			}
		})
	}
}

// TestTextSummary: the table a user reads names every kind with its
// figures, and the delivery lines.
func TestTextSummary(t *testing.T) {
	s := Summary{Mix: "okta", Clients: 2, Seconds: 1.5,
		Kinds:    []Kind{{Kind: "create", Count: 10, P50: 1.25, P90: 2, P99: 3, Rate: 6.7}, {Kind: "filter", Count: 10, Errors: 1, FirstError: "GET /Users: 500 boom"}},
		Total:    Kind{Kind: "total (mix)", Count: 20, Errors: 1, Rate: 13.3},
		Delivery: &Delivery{Received: 30, DuringRun: 28, P50: 1, P90: 2, P99: 9.5, DrainSeconds: 0.25, DrainSource: "admin status: backlog 0"}}
	var b bytes.Buffer
	s.print(&b)
	for _, want := range []string{"okta mix, 2 clients", "create", "1.25", "total (mix)", "first filter error: GET /Users: 500 boom",
		"p99 9.5 ms", "drained 0.25 s after the run"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, b.String())
		}
	}
}

// TestFlags: what a user gets wrong is said, and the token never printed.
func TestFlags(t *testing.T) {
	t.Setenv("SCIMLOAD_TOKEN", "")
	t.Setenv("SCIMGATE_SCIM_TOKEN", "")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{}, "no token"},
		{[]string{"-token", "secret-value", "-mix", "azure"}, `-mix "azure"`},
		{[]string{"-token", "secret-value", "-clients", "0"}, "at least 1"},
		{[]string{"-token", "secret-value", "-mix", "import", "-users", "10"}, "-users 100"},
	} {
		var out bytes.Buffer
		err := run(context.Background(), c.args, &out)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error saying %q", c.args, err, c.want)
		}
		if err != nil && strings.Contains(err.Error()+out.String(), "secret-value") {
			t.Errorf("%v: the token was printed", c.args)
		}
	}
	if _, err := parse([]string{"-token", "x"}, &bytes.Buffer{}); err != nil {
		t.Errorf("defaults: %v", err)
	}
}
