package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/scimgate/scimgate/mapping"
	"github.com/scimgate/scimgate/outbox"
)

// Mapping warnings and rejections are logged at WARN with ids and
// field names, never values, and counted; the counters exist from start-up.
func TestMappingWarningsLoggedAndCounted(t *testing.T) {
	secret, _ := outbox.NewSecret()
	cfg := DefaultConfig(testEnv(t.TempDir(), "http://127.0.0.1:9/hooks", secret))
	cfg.Mapping.User = []mapping.Rule{
		{To: "login", From: mapping.StringList{"userName"}, Required: true},
		{To: "timezone", From: mapping.StringList{"timezone"}, Type: "timezone", OnInvalid: "drop"},
		{To: "contact", From: mapping.StringList{"nickName"}, Type: "email", OnInvalid: "reject"},
	}
	if err := prepareSecrets(&cfg, io.Discard); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate("(test)", nil); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	a, err := newApp(cfg, slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})), appOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	defer a.Close(context.Background())
	metrics := func() string {
		resp, err := http.Get("http://" + a.AdminAddr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if m := metrics(); !strings.Contains(m, `scimgate_mapping_rejections_total{resource="user"} 0`) {
		t.Errorf("rejection counter missing at start-up")
	}
	base := "http://" + a.SCIMAddr() + "/scim/v2"
	status, body, err := tryDo(base, "POST", "/Users", `{"userName":"ada@example.com","timezone":"Mars/Olympus_Mons"}`)
	if err != nil || status != 201 {
		t.Fatalf("create: %d %v %v", status, body, err)
	}
	id := body["id"].(string)
	if status, _, _ := tryDo(base, "POST", "/Users", `{"userName":"eve@example.com","nickName":"Atlantis"}`); status != 400 {
		t.Fatalf("invalid email = %d, want 400", status)
	}
	m := metrics()
	for _, want := range []string{`scimgate_mapping_warnings_total{field="timezone",resource="user"} 1`, `scimgate_mapping_rejections_total{resource="user"} 1`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	out := logs.String()
	if !strings.Contains(out, `"field":"timezone"`) || !strings.Contains(out, `"id":"`+id+`"`) || !strings.Contains(out, `"fields":["contact"]`) {
		t.Errorf("warn lines lack the ids and fields:\n%s", out)
	}
	for _, value := range []string{"Mars", "Atlantis", "ada@example.com", "eve@example.com"} {
		if strings.Contains(out, value) {
			t.Errorf("the log carries a value (%s):\n%s", value, out)
		}
	}
}
