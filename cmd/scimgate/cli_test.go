package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/scimgate/scimgate/outbox"
)

// runCLI runs the command line in process and returns its exit code and
// output, as main would.
func runCLI(t *testing.T, getenv func(string) string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := run(ctx, args, getenv, strings.NewReader(""), &out, &errOut)
	code = report(err, &errOut)
	return code, out.String(), errOut.String()
}

// commandPaths lists every command of the tree, as argument lists.
func commandPaths(cmd *cobra.Command, prefix []string) [][]string {
	var out [][]string
	for _, sub := range cmd.Commands() {
		p := append(append([]string{}, prefix...), sub.Name())
		out = append(out, p)
		out = append(out, commandPaths(sub, p)...)
	}
	return out
}

// Every command has its own help: exit 0, its usage line, nothing run, and
// no secret of the environment in it.
func TestHelpEverywhereWithoutSecrets(t *testing.T) {
	secrets := map[string]string{
		"SCIMGATE_ADMIN_TOKEN":    "admin-secret-value-0123456789",
		"SCIMGATE_SCIM_TOKEN":     "scim-secret-value-0123456789",
		"SCIMGATE_WEBHOOK_SECRET": "whsec_c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0",
	}
	env := fixedEnv("SCIMGATE_ADMIN_TOKEN", secrets["SCIMGATE_ADMIN_TOKEN"], "SCIMGATE_SCIM_TOKEN", secrets["SCIMGATE_SCIM_TOKEN"],
		"SCIMGATE_WEBHOOK_SECRET", secrets["SCIMGATE_WEBHOOK_SECRET"], "SCIMGATE_DATA_DIR", t.TempDir())
	paths := commandPaths((&cli{getenv: env}).rootCommand(), nil)
	if len(paths) < 20 {
		t.Fatalf("only %d commands: %v", len(paths), paths)
	}
	for _, p := range paths {
		for _, form := range [][]string{append(append([]string{}, p...), "--help"), append([]string{"help"}, p...)} {
			code, stdout, stderr := runCLI(t, env, form...)
			if code != 0 {
				t.Errorf("scimgate %s: exit %d\n%s", strings.Join(form, " "), code, stderr)
			}
			if !strings.Contains(stdout, "Usage:\n  scimgate "+strings.Join(p, " ")) {
				t.Errorf("scimgate %s: no usage line for the command:\n%s", strings.Join(form, " "), stdout)
			}
			for name, v := range secrets {
				if strings.Contains(stdout+stderr, v) {
					t.Errorf("scimgate %s prints the value of %s", strings.Join(form, " "), name)
				}
			}
			if strings.Contains(stdout, "--token") && !strings.Contains(stdout, "$SCIMGATE_ADMIN_TOKEN") {
				t.Errorf("scimgate %s: --token does not name its variable:\n%s", strings.Join(form, " "), stdout)
			}
		}
	}
	// token --help does not mint a token.
	if _, stdout, _ := runCLI(t, env, "token", "--help"); strings.Contains(stdout, "hash:") {
		t.Errorf("token --help minted a token:\n%s", stdout)
	}
	if _, stdout, _ := runCLI(t, env, "secret", "-h"); strings.Contains(stdout, "whsec_") && regexp.MustCompile(`(?m)^whsec_\S{20,}$`).MatchString(stdout) {
		t.Errorf("secret -h minted a secret:\n%s", stdout)
	}
}

// Wrong usage exits 2 with one line that names the command and where its
// help is.
func TestWrongUsageExitsTwoWithOneLine(t *testing.T) {
	env := fixedEnv("SCIMGATE_DATA_DIR", t.TempDir())
	for _, c := range []struct {
		args []string
		says string
	}{
		{[]string{"nosuch"}, `unknown command "nosuch"`},
		{[]string{"serv"}, `did you mean "serve"?`},
		{[]string{"backup"}, "missing FILE"},
		{[]string{"backup", "a.db", "b.db"}, `unexpected argument "b.db"`},
		{[]string{"status", "--bogus"}, "unknown flag: --bogus"},
		{[]string{"status", "-target", "x"}, "unknown shorthand flag"},
		{[]string{"status", "extra"}, `unexpected argument "extra"`},
		{[]string{"dead-letters", "lst"}, `unknown command "lst"`},
		{[]string{"dead-letters", "show"}, "missing EVENT-ID"},
		{[]string{"dead-letters", "replay"}, "or --all"},
		{[]string{"dead-letters", "discard", "--target", "app"}, "or --all"},
		{[]string{"dead-letters", "discard", "evt_1", "--all"}, "not both"},
		{[]string{"dead-letters", "show", "--", "--target"}, "looks like a flag"},
		{[]string{"replay", "--target", "app"}, "exactly one of --after SEQ and --since TIME"},
		{[]string{"replay", "--after", "1", "--since", "2026-01-01T00:00:00Z"}, "exactly one of"},
		{[]string{"replay", "--since", "yesterday"}, "not an RFC 3339 time"},
		{[]string{"replay", "evt_1"}, "scimgate dead-letters replay"},
		{[]string{"replay", "--after", "x"}, `invalid argument "x"`},
		{[]string{"token", "extra"}, `unexpected argument "extra"`},
		{[]string{"map", "a.json", "b.json"}, `unexpected argument "b.json"`},
		{[]string{"restore"}, "missing FILE"},
		{[]string{"status", "--admin", "localhost:8081"}, "not an http(s) URL"},
	} {
		code, stdout, stderr := runCLI(t, env, c.args...)
		cmdPath := "scimgate"
		if found, _, err := (&cli{getenv: env}).rootCommand().Find(c.args); err == nil && found.Name() != "scimgate" {
			cmdPath = found.CommandPath()
		}
		switch {
		case code != exitUsage:
			t.Errorf("scimgate %v: exit %d, want %d\nstdout: %s\nstderr: %s", c.args, code, exitUsage, stdout, stderr)
		case strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, cmdPath+": "):
			t.Errorf("scimgate %v: want one line starting %q, got %q", c.args, cmdPath+": ", stderr)
		case !strings.Contains(stderr, c.says) || !strings.Contains(stderr, "'"+cmdPath+" --help'"):
			t.Errorf("scimgate %v: %q lacks %q or the help hint", c.args, stderr, c.says)
		}
	}
	// Bare scimgate: the command list on stderr, exit 2.
	code, stdout, stderr := runCLI(t, env)
	if code != exitUsage || stdout != "" || !strings.Contains(stderr, "dead-letters") {
		t.Errorf("bare scimgate: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

func TestVersionAndSecret(t *testing.T) {
	env := fixedEnv()
	for _, args := range [][]string{{"version"}, {"--version"}} {
		code, stdout, _ := runCLI(t, env, args...)
		if code != 0 || !strings.HasPrefix(stdout, "scimgate "+version+" (go") {
			t.Errorf("scimgate %v: %d %q", args, code, stdout)
		}
	}
	code, stdout, _ := runCLI(t, env, "secret")
	s := strings.TrimSpace(stdout)
	if code != 0 || !strings.HasPrefix(s, "whsec_") {
		t.Fatalf("secret: %d %q", code, stdout)
	}
	// It is a secret the outbox signs with and a verifier accepts.
	body, now := []byte(`{"id":"evt_1"}`), time.Now()
	sig, err := outbox.Sign([]string{s}, "evt_1", now, body)
	if err != nil {
		t.Fatalf("Sign with the printed secret: %v", err)
	}
	h := http.Header{"Webhook-Id": {"evt_1"}, "Webhook-Timestamp": {strconv.FormatInt(now.Unix(), 10)}, "Webhook-Signature": {sig}}
	if err := outbox.Verify([]string{s}, h, body, now); err != nil {
		t.Errorf("Verify: %v", err)
	}
	_, again, _ := runCLI(t, env, "secret")
	if strings.TrimSpace(again) == s {
		t.Error("two secrets are equal")
	}
}

// adminGateway is an in-process gateway with two targets, default and
// app; app's receiver refuses everything (400), so its events become dead
// letters while default's are delivered.
type adminGateway struct {
	app      *app
	admin    string
	dataDir  string
	received *receiver
}

func startAdminGateway(t *testing.T) *adminGateway {
	t.Helper()
	secret, _ := outbox.NewSecret()
	rcv, ok := newReceiver(t, secret)
	refuse := newRefusingServer(t)
	dir := t.TempDir()
	cfg := DefaultConfig(testEnv(dir, ok.URL+"/hooks", secret))
	cfg.Outbox.Backoff = []time.Duration{0, 50 * time.Millisecond}
	cfg.Outbox.Targets = append(cfg.Outbox.Targets, outbox.Target{Name: "app", URL: refuse.URL + "/hooks", Events: []string{"*"},
		Secrets: []string{secret}, Timeout: 5 * time.Second})
	a := startAppCfg(t, cfg, appOptions{})
	t.Cleanup(func() { closeApp(t, a) })
	return &adminGateway{app: a, admin: "http://" + a.AdminAddr(), dataDir: dir, received: rcv}
}

// newRefusingServer answers every delivery with 400, as an app that
// rejects the event.
func newRefusingServer(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		http.Error(w, `{"error":"refused by the test"}`, http.StatusBadRequest)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// startAppCfg validates cfg (secrets prepared) and starts an app on it.
func startAppCfg(t *testing.T, cfg Config, opts appOptions) *app {
	t.Helper()
	if err := prepareSecrets(&cfg, io.Discard); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate("(test)", nil); err != nil {
		t.Fatal(err)
	}
	a, err := newApp(cfg, slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})), opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	return a
}

// Flags work after the verb and its arguments: --target, --admin and
// --token are honoured wherever they are (with the flag package, a flag
// after a positional was silently ignored).
func TestFlagsAnywhere(t *testing.T) {
	g := startAdminGateway(t)
	status, body, err := tryDo("http://"+g.app.SCIMAddr()+"/scim/v2", "POST", "/Users", `{"userName":"ada@example.com"}`)
	if err != nil || status != 201 {
		t.Fatalf("create: %d %v %v", status, body, err)
	}
	// The CLI's default admin address points nowhere: only --admin can
	// reach the gateway; the token is only in --token.
	env := fixedEnv("SCIMGATE_ADMIN_LISTEN", freePort(t), "SCIMGATE_DATA_DIR", t.TempDir())
	list := func(args ...string) string {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			code, stdout, stderr := runCLI(t, env, args...)
			if code != 0 {
				t.Fatalf("scimgate %v: exit %d: %s", args, code, stderr)
			}
			if strings.Contains(stdout, "user.created") || time.Now().After(deadline) {
				return stdout
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	out := list("dead-letters", "list", "--target", "app", "--admin", g.admin, "--token", e2eToken)
	m := regexp.MustCompile(`(?m)^(evt_\S+)\s+user\.created\s+1\s+1\s+400\s`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("dead-letters list --target app:\n%s", out)
	}
	id := m[1]
	if _, stdout, _ := runCLI(t, env, "dead-letters", "list", "--admin", g.admin, "--token", e2eToken); strings.Contains(stdout, id) {
		t.Errorf("target default lists app's dead letter:\n%s", stdout)
	}
	code, stdout, stderr := runCLI(t, env, "dead-letters", "show", id, "--target", "app", "--admin", g.admin, "--token", e2eToken)
	if code != 0 || !strings.Contains(stdout, `refused by the test`) || !strings.Contains(stdout, `"last_status": 400`) {
		t.Errorf("dead-letters show ID --target app: %d\n%s%s", code, stdout, stderr)
	}
	file := filepath.Join(t.TempDir(), "b.db")
	code, stdout, stderr = runCLI(t, env, "backup", file, "--token", e2eToken, "--admin", g.admin)
	if code != 0 || !strings.Contains(stdout, "scimgate restore "+file) {
		t.Errorf("backup FILE --token T: %d\n%s%s", code, stdout, stderr)
	}
	if _, err := checkDatabase(file); err != nil {
		t.Errorf("the backup does not pass the check: %v", err)
	}
	// A plain (non-terminal) output has no carriage returns.
	if strings.Contains(stdout, "\r") {
		t.Errorf("backup to a non-terminal printed \\r: %q", stdout)
	}
	// Without --admin the default address is used, and fails.
	if code, _, stderr := runCLI(t, env, "status", "--token", e2eToken); code != 1 || !strings.Contains(stderr, "is scimgate running?") {
		t.Errorf("status without --admin: %d %s", code, stderr)
	}
	// An unknown target is the API's 404, said as such.
	if code, _, stderr := runCLI(t, env, "dead-letters", "list", "--target", "nosuch", "--admin", g.admin, "--token", e2eToken); code != 1 || !strings.Contains(stderr, "404") {
		t.Errorf("unknown target: %d %s", code, stderr)
	}
}

// The admin token may come from a file; both forms at once are refused by
// name; without a token the CLI says how to give one.
func TestAdminTokenFromFile(t *testing.T) {
	g := startAdminGateway(t)
	file := filepath.Join(t.TempDir(), "admin-token")
	if err := os.WriteFile(file, []byte(e2eToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCLI(t, fixedEnv("SCIMGATE_ADMIN_TOKEN_FILE", file), "status", "--admin", g.admin)
	if code != 0 || !strings.Contains(stdout, "users: 0") {
		t.Fatalf("status with SCIMGATE_ADMIN_TOKEN_FILE: %d\n%s%s", code, stdout, stderr)
	}
	code, _, stderr = runCLI(t, fixedEnv("SCIMGATE_ADMIN_TOKEN_FILE", file, "SCIMGATE_ADMIN_TOKEN", "x"), "status", "--admin", g.admin)
	if code != 1 || !strings.Contains(stderr, "both SCIMGATE_ADMIN_TOKEN and SCIMGATE_ADMIN_TOKEN_FILE are set") {
		t.Errorf("both set: %d %s", code, stderr)
	}
	code, _, stderr = runCLI(t, fixedEnv(), "status", "--admin", g.admin)
	if code != 1 || !strings.Contains(stderr, "no admin token: set SCIMGATE_ADMIN_TOKEN") {
		t.Errorf("no token: %d %s", code, stderr)
	}
	code, _, stderr = runCLI(t, fixedEnv(), "status", "--admin", g.admin, "--token", "wrong-token-0123456789")
	if code != 1 || !strings.Contains(stderr, "401") {
		t.Errorf("wrong token: %d %s", code, stderr)
	}
}

// status stays readable with a paused target whose reason is long: the
// table has short cells, the reason follows it on its own line.
func TestStatusReadableWhenPaused(t *testing.T) {
	g := startAdminGateway(t)
	reason := "receiver returned 410 Gone: the app's webhook endpoint was removed; " + strings.Repeat("see the runbook ", 8)
	env := fixedEnv("SCIMGATE_ADMIN_TOKEN", e2eToken)
	if code, stdout, stderr := runCLI(t, env, "pause", "--target", "app", "--reason", reason, "--admin", g.admin); code != 0 {
		t.Fatalf("pause: %d %s%s", code, stdout, stderr)
	}
	code, stdout, stderr := runCLI(t, env, "status", "--admin", g.admin)
	if code != 0 {
		t.Fatalf("status: %d %s", code, stderr)
	}
	lines := strings.Split(stdout, "\n")
	var header, appRow string
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "TARGET"):
			header = l
		case regexp.MustCompile(`^app\s+(active|paused)`).MatchString(l):
			appRow = l
		}
	}
	if header == "" || appRow == "" {
		t.Fatalf("no table:\n%s", stdout)
	}
	if !regexp.MustCompile(`^app\s+paused\s+0\s`).MatchString(appRow) {
		t.Errorf("app row = %q", appRow)
	}
	if len(appRow) > len(header)+20 || len(appRow) > 120 {
		t.Errorf("the app row is %d characters wide (header %d): %q", len(appRow), len(header), appRow)
	}
	if !strings.Contains(stdout, "\napp is paused: "+oneLine(reason)+"\n") {
		t.Errorf("the reason is not below the table:\n%s", stdout)
	}
	if code, stdout, _ := runCLI(t, env, "resume", "--target", "app", "--admin", g.admin); code != 0 || !strings.Contains(stdout, "resumed") {
		t.Errorf("resume: %d %s", code, stdout)
	}
	if _, stdout, _ := runCLI(t, env, "status", "--admin", g.admin); strings.Contains(stdout, "is paused") {
		t.Errorf("still paused after resume:\n%s", stdout)
	}
}

// printStatus with both duration encodings of the JSON.
func TestPrintStatusDurations(t *testing.T) {
	now := time.Date(2026, 11, 23, 9, 10, 0, 0, time.UTC)
	secs, nanos := 75.4, int64(3*time.Minute)
	var b strings.Builder
	printStatus(&b, statusJSON{Version: "x", StartedAt: now, Targets: []targetJSON{
		{Name: "new", OldestPendingAgeSeconds: &secs, LastError: "dial tcp: connection refused", LastErrorAt: now.Add(-4 * time.Second)},
		{Name: "old", OldestPendingAgeNanos: &nanos},
	}}, now)
	for _, want := range []string{"new     active  0        1m15s", "old     active  0        3m0s", "new last error at 2026-11-23T09:09:56Z: dial tcp: connection refused", "4s ago"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, b.String())
		}
	}
}

// The build info gauge is served with the other metrics.
func TestBuildInfoMetric(t *testing.T) {
	g := startAdminGateway(t)
	resp, err := http.Get(g.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	want := regexp.MustCompile(`(?m)^scimgate_build_info\{goversion="go[^"]+",version="` + regexp.QuoteMeta(version) + `"\} 1$`)
	if !want.Match(b) {
		t.Errorf("no scimgate_build_info in /metrics:\n%s", grepLines(string(b), "build_info"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// The admin commands read only admin.listen from a config: the gateway's
// secrets need not be in the operator's environment.
func TestAdminCommandsNeedOnlyAdminListen(t *testing.T) {
	g := startAdminGateway(t)
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(cfg, []byte("admin:\n  listen: ${ADMIN_ADDR}\nscim:\n  auth:\n    basic:\n      - {username: k, password: \"${SECRET_NOT_HERE}\"}\n"), 0o600)
	env := fixedEnv("ADMIN_ADDR", g.app.AdminAddr(), "SCIMGATE_ADMIN_TOKEN", e2eToken)
	if code, stdout, stderr := runCLI(t, env, "status", "--config", cfg); code != 0 || !strings.Contains(stdout, "users: 0") {
		t.Errorf("status --config: %d %s%s", code, stdout, stderr)
	}
	// serve, which needs them, refuses the same file by name.
	if code, _, stderr := runCLI(t, env, "validate", "--config", cfg); code != 1 || !strings.Contains(stderr, "SECRET_NOT_HERE") {
		t.Errorf("validate: %d %s", code, stderr)
	}
	// A route this gateway does not serve says so.
	code, _, stderr := runCLI(t, env, "backfill", "--target", "default", "--admin", "http://"+g.app.AdminAddr())
	if code == 0 {
		t.Skip("the gateway serves backfill now")
	}
	if !strings.Contains(stderr, "does not serve POST /admin/targets/default/backfill") {
		t.Errorf("backfill on a gateway without it: %s", stderr)
	}
}

// Every example in the help parses as a command line of the tree.
func TestHelpExamplesParse(t *testing.T) {
	root := (&cli{getenv: fixedEnv()}).rootCommand()
	n := 0
	var walk func(*cobra.Command)
	walk = func(cmd *cobra.Command) {
		for _, line := range strings.Split(cmd.Example, "\n") {
			line = strings.TrimSpace(line)
			if scimgateArgs(line) == nil {
				continue
			}
			n++
			if err := checkSpan(line); err != nil {
				t.Errorf("%s: example %q: %v", cmd.CommandPath(), line, err)
			}
		}
		for _, sub := range cmd.Commands() {
			walk(sub)
		}
	}
	walk(root)
	if n < 15 {
		t.Errorf("only %d examples", n)
	}
}

// a finished backfill is not shown as active+backfill,
// and a backfill is described in words, not as raw JSON.
func TestPrintStatusBackfill(t *testing.T) {
	now := time.Date(2026, 11, 23, 9, 10, 0, 0, time.UTC)
	raw := func(b outbox.BackfillStatus) json.RawMessage {
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	var b strings.Builder
	printStatus(&b, statusJSON{Version: "x", StartedAt: now, Targets: []targetJSON{
		{Name: "done", Backfill: raw(outbox.BackfillStatus{State: outbox.BackfillDone, Sequence: 1234, Total: 5000,
			StartedAt: now.Add(-time.Hour), FinishedAt: now.Add(-50 * time.Minute)})},
		{Name: "running", Backfill: raw(outbox.BackfillStatus{State: outbox.BackfillRunning, Sequence: 99, Total: 5000, Remaining: 1200,
			Phase: "user.snapshot", StartedAt: now.Add(-2 * time.Minute)})},
	}}, now)
	out := b.String()
	for _, want := range []string{
		"done     active  ",
		"running  active+backfill",
		"done backfill: finished 2026-11-23T08:20:00Z (50m0s ago), 5000 events, snapshot at sequence 1234",
		"running backfill: running, 3800 of 5000 events delivered (user.snapshot), snapshot at sequence 99, started 2m0s ago",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "{") || strings.Contains(out, "done     active+backfill") {
		t.Errorf("status shows raw JSON or a finished backfill as active:\n%s", out)
	}
}
