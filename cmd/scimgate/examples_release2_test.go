package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/oauth2/clientcredentials"
)

// The examples of the second release run as is, driven by the environment,
// like config.example.yaml: entitlements.yaml (a roles and entitlements
// catalog), entra-oauth.yaml (an OAuth client), nats.yaml and kafka.yaml
// (a stream target each, against real in-process brokers).

// exampleApp loads examples/<name>.yaml under env (plus a data dir, local
// listeners and an admin token) and starts it; it stops with the test.
func exampleApp(t *testing.T, name, dataDir string, kv ...string) *app {
	t.Helper()
	getenv := fixedEnv(append([]string{"SCIMGATE_DATA_DIR", dataDir, "SCIMGATE_LISTEN", "127.0.0.1:0",
		"SCIMGATE_ADMIN_LISTEN", "127.0.0.1:0", "SCIMGATE_ADMIN_TOKEN", "admin-token-0123456789abcdef"}, kv...)...)
	var out bytes.Buffer
	if err := run(context.Background(), []string{"validate", "--config", examplePath(name)}, getenv, strings.NewReader(""), &out, &out); err != nil {
		t.Fatalf("validate %s: %v\n%s", name, err, out.String())
	}
	cfg, doc, err := LoadConfig(examplePath(name), getenv)
	if err != nil {
		t.Fatal(err)
	}
	if err := prepareSecrets(&cfg, io.Discard); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(name, doc); err != nil {
		t.Fatal(err)
	}
	a, err := newApp(cfg, slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})), appOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close(context.Background()) })
	return a
}

// scimCall makes one SCIM request with an Authorization header.
func scimCall(t *testing.T, a *app, auth, method, path, body string) (int, map[string]any) {
	t.Helper()
	return scimAuthDo(t, "http://"+a.SCIMAddr()+"/scim/v2", auth, method, path, body)
}

// recorder is a webhook receiver keeping the bodies.
type recorder struct {
	mu     sync.Mutex
	bodies []map[string]any
}

func newRecorder(t *testing.T) (*recorder, *httptest.Server) {
	r := &recorder{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var m map[string]any
		_ = json.NewDecoder(req.Body).Decode(&m)
		r.mu.Lock()
		r.bodies = append(r.bodies, m)
		r.mu.Unlock()
		w.WriteHeader(204)
	}))
	t.Cleanup(srv.Close)
	return r, srv
}

func (r *recorder) wait(t *testing.T, n int) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r.mu.Lock()
		got := append([]map[string]any(nil), r.bodies...)
		r.mu.Unlock()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events received, want %d", len(got), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

const exampleUser = `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ada@example.com","active":true,
	"emails":[{"value":"ada@example.com","type":"work","primary":true}]`

func TestExampleEntitlements(t *testing.T) {
	rec, hook := newRecorder(t)
	a := exampleApp(t, "entitlements", t.TempDir(), "SCIMGATE_SCIM_TOKEN", exToken, "SCIMGATE_WEBHOOK_URL", hook.URL)
	auth := "Bearer " + exToken
	if code, body := scimCall(t, a, auth, "GET", "/Roles?count=1&startIndex=1", ""); code != 200 || body["totalResults"] != float64(3) || body["itemsPerPage"] != float64(1) {
		t.Errorf("/Roles = %d %v", code, body)
	}
	if code, body := scimCall(t, a, auth, "POST", "/Users", exampleUser+`,"roles":[{"value":"admin"}],"entitlements":[{"value":"billing"}]}`); code != 201 {
		t.Fatalf("create with roles = %d %v", code, body)
	}
	ev := rec.wait(t, 1)[0]
	user := ev["data"].(map[string]any)["user"].(map[string]any)
	if b, _ := json.Marshal([]any{user["roles"], user["entitlements"]}); string(b) != `[["admin"],["billing"]]` {
		t.Errorf("record roles and entitlements = %s", b)
	}
	if code, body := scimCall(t, a, auth, "POST", "/Users", strings.Replace(exampleUser, "ada@", "eve@", 2)+`,"roles":[{"value":"root"}]}`); code != 400 || body["scimType"] != "invalidValue" {
		t.Errorf("unknown role = %d %v", code, body)
	}
}

func TestExampleEntraOAuth(t *testing.T) {
	const id, secret = "entra-provisioning", "client-secret-from-entra-0123456789"
	env := []string{"SCIMGATE_OAUTH_CLIENT_ID", id, "SCIMGATE_OAUTH_CLIENT_SECRET", secret}
	dir := t.TempDir()
	a := exampleApp(t, "entra-oauth", dir, env...)
	cc := clientcredentials.Config{ClientID: id, ClientSecret: secret, TokenURL: "http://" + a.SCIMAddr() + "/scim/v2/oauth/token"}
	tok, err := cc.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if code, body := scimCall(t, a, "Bearer "+tok.AccessToken, "POST", "/Users", exampleUser+`}`); code != 201 {
		t.Fatalf("create with the access token = %d %v", code, body)
	}
	// Tokens survive a restart: they are signed with a key kept in the data dir.
	if err := a.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	b := exampleApp(t, "entra-oauth", dir, env...)
	if code, body := scimCall(t, b, "Bearer "+tok.AccessToken, "GET", "/Users", ""); code != 200 || body["totalResults"] != float64(1) {
		t.Errorf("the access token after a restart = %d %v", code, body)
	}
	// Without the variables the example says which are missing.
	var out bytes.Buffer
	err = run(context.Background(), []string{"validate", "--config", examplePath("entra-oauth")}, fixedEnv("SCIMGATE_DATA_DIR", t.TempDir()),
		strings.NewReader(""), &out, &out)
	if err == nil || !strings.Contains(err.Error()+out.String(), "SCIMGATE_OAUTH_CLIENT_ID") {
		t.Errorf("validate without the client = %v %s", err, out.String())
	}
}

func TestExampleNATS(t *testing.T) {
	opts := &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true}
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	a := exampleApp(t, "nats", t.TempDir(), "SCIMGATE_SCIM_TOKEN", exToken, "SCIMGATE_NATS_URL", ns.ClientURL())
	if code, body := scimCall(t, a, "Bearer "+exToken, "POST", "/Users", exampleUser+`}`); code != 201 {
		t.Fatalf("create = %d %v", code, body)
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var msg *jetstream.RawStreamMsg
	for ctx.Err() == nil {
		if s, err := js.Stream(ctx, "SCIMGATE"); err == nil {
			if msg, err = s.GetMsg(ctx, 1); err == nil {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if msg == nil {
		t.Fatal("no message in stream SCIMGATE")
	}
	var ev map[string]any
	_ = json.Unmarshal(msg.Data, &ev)
	if msg.Subject != "scimgate.user.created" || msg.Header.Get("Nats-Msg-Id") != ev["id"] || ev["type"] != "user.created" {
		t.Errorf("message on %s, Nats-Msg-Id %q, event %v", msg.Subject, msg.Header.Get("Nats-Msg-Id"), ev)
	}
}

func TestExampleKafka(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	broker := c.ListenAddrs()[0]
	a := exampleApp(t, "kafka", t.TempDir(), "SCIMGATE_SCIM_TOKEN", exToken, "SCIMGATE_KAFKA_BROKERS", broker)
	code, body := scimCall(t, a, "Bearer "+exToken, "POST", "/Users", exampleUser+`}`)
	if code != 201 {
		t.Fatalf("create = %d %v", code, body)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(broker), kgo.ConsumeTopics("scimgate-events"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var rec *kgo.Record
	for rec == nil && ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		fs.EachRecord(func(r *kgo.Record) {
			if rec == nil {
				rec = r
			}
		})
	}
	if rec == nil {
		t.Fatal("no record in topic scimgate-events")
	}
	var ev map[string]any
	_ = json.Unmarshal(rec.Value, &ev)
	if string(rec.Key) != "User/"+body["id"].(string) || ev["type"] != "user.created" {
		t.Errorf("record key %q, event %v", rec.Key, ev)
	}
}
