package main

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scimgate/scimgate/gateway"
	"github.com/scimgate/scimgate/outbox"
)

// reloadRig is an in-process gateway whose configuration is a file the
// test rewrites, reloaded as serve reloads it.
type reloadRig struct {
	t     *testing.T
	path  string
	a     *app
	level *slog.LevelVar
}

const reloadBase = `data_dir: ${SCIMGATE_DATA_DIR}
scim:
  listen: 127.0.0.1:0
  auth:
    bearer_tokens: ["${SCIMGATE_SCIM_TOKEN}"]
admin:
  listen: 127.0.0.1:0
  tokens: ["${SCIMGATE_ADMIN_TOKEN}"]
outbox:
  targets:
    - name: default
      url: http://127.0.0.1:9/hooks
      secrets: ["${SCIMGATE_WEBHOOK_SECRET}"]
log:
  level: info
`

func newReloadRig(t *testing.T) *reloadRig {
	t.Helper()
	secret, _ := outbox.NewSecret()
	env := testEnv(t.TempDir(), "http://127.0.0.1:9/hooks", secret)
	r := &reloadRig{t: t, path: filepath.Join(t.TempDir(), "scimgate.yaml"), level: new(slog.LevelVar)}
	r.write(reloadBase)
	cfg, err := loadServeConfig(r.path, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	r.a = startAppCfg(t, cfg, appOptions{LogLevel: r.level,
		Reload: func(running Config) (Config, error) { return loadReloadConfig(r.path, env, running) }})
	t.Cleanup(func() { closeApp(t, r.a) })
	return r
}

func (r *reloadRig) write(yaml string) {
	r.t.Helper()
	if err := os.WriteFile(r.path, []byte(yaml), 0o600); err != nil {
		r.t.Fatal(err)
	}
}

// A configuration that fails validation is refused with its problems and
// the running one is kept; a valid one is applied and what changed is
// listed, without secret values, with what needs a restart said so.
func TestReloadRefusesOrReportsChanges(t *testing.T) {
	r := newReloadRig(t)
	before := r.a.cfg
	r.write(strings.Replace(reloadBase, "level: info", "level: loud", 1) + "scim:\n  nosuchkey: 1\n")
	_, err := r.a.reload("test")
	var re *reloadError
	if !errors.As(err, &re) || len(re.Problems()) == 0 || !strings.Contains(err.Error(), r.path) {
		t.Fatalf("reload of an invalid config = %v", err)
	}
	if asJSON(t, r.a.cfg) != asJSON(t, before) {
		t.Error("a refused reload changed the running configuration")
	}
	r.write(strings.Replace(reloadBase, "level: info", "level: loud", 1))
	if _, err := r.a.reload("test"); !errors.As(err, &re) || !strings.Contains(strings.Join(re.Problems(), "\n"), "log.level") {
		t.Fatalf("reload with a bad log level = %v", err)
	}

	const newToken = "a-brand-new-scim-token-0123456789"
	next := strings.NewReplacer(
		"level: info", "level: debug",
		`bearer_tokens: ["${SCIMGATE_SCIM_TOKEN}"]`, `bearer_tokens: ["${SCIMGATE_SCIM_TOKEN}", "`+newToken+`"]`,
		"url: http://127.0.0.1:9/hooks", "url: http://127.0.0.1:10/hooks?key=s3cret-in-query",
		"listen: 127.0.0.1:0\n  auth", "listen: 127.0.0.1:0\n  limits:\n    read_timeout: 10s\n  auth",
	).Replace(reloadBase)
	r.write(next)
	changes, err := r.a.reload("test")
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(changes, "\n")
	for _, want := range []string{
		"log.level: info → debug",
		"scim.limits.read_timeout: 30s → 10s: needs a restart",
		"scim.auth.bearer_tokens",
		"target default: url changed",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("changes lack %q:\n%s", want, all)
		}
	}
	// Secrets never show: the token, a URL's query (the URL itself shows
	// redacted to scheme://host/path, as in status).
	if strings.Contains(all, newToken) || strings.Contains(all, "s3cret-in-query") {
		t.Errorf("changes show secret values:\n%s", all)
	}
	if r.level.Level() != slog.LevelDebug {
		t.Errorf("log level = %v after reload, want debug", r.level.Level())
	}
	// What needs a restart keeps running as it was.
	if r.a.cfg.SCIM.Limits.ReadTimeout != 30*time.Second || r.a.cfg.Log.Level != "debug" {
		t.Errorf("running config after reload: read_timeout %s, log level %s", r.a.cfg.SCIM.Limits.ReadTimeout, r.a.cfg.Log.Level)
	}
	// Nothing else changed: only what still needs a restart is reported.
	changes, err = r.a.reload("test")
	if err != nil || len(changes) != 1 || !strings.HasSuffix(changes[0], "needs a restart") {
		t.Errorf("second reload: %q %v", changes, err)
	}
}

func TestConfigChangesNamesTargets(t *testing.T) {
	old := DefaultConfig(fixedEnv())
	new := old
	new.Outbox.Targets = []outbox.Target{{Name: "app", URL: "https://app/hooks"}}
	var got []string
	for _, c := range configChanges(old, new) {
		got = append(got, c.String())
	}
	if strings.Join(got, "; ") != "outbox.targets[app] added; outbox.targets[default] removed" {
		t.Errorf("changes = %q", got)
	}
}

// SIGHUP to the real binary: a broken config is refused and the gateway
// keeps serving; a good one is applied and logged.
func TestSIGHUPReload(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "scimgate.yaml")
	good := strings.Replace(strings.Replace(reloadBase, "listen: 127.0.0.1:0\n  auth", "listen: ${SCIMGATE_LISTEN}\n  auth", 1),
		"listen: 127.0.0.1:0\n  tokens", "listen: ${SCIMGATE_ADMIN_LISTEN}\n  tokens", 1)
	os.WriteFile(path, []byte(good), 0o600)
	secret, _ := outbox.NewSecret()
	env := append(os.Environ(), "SCIMGATE_CONFIG="+path, "SCIMGATE_DATA_DIR="+dir, "SCIMGATE_SCIM_TOKEN="+e2eToken,
		"SCIMGATE_ADMIN_TOKEN="+e2eToken, "SCIMGATE_WEBHOOK_SECRET="+secret)
	g := startBinary(t, bin, env, freePort(t), freePort(t))
	defer g.kill()
	os.WriteFile(path, []byte(good+"bogus: 1\n"), 0o600)
	g.cmd.Process.Signal(syscall.SIGHUP)
	waitOutput(t, g.out, "configuration reload refused", 10*time.Second)
	if status, _, err := tryDo(g.scim, "GET", "/Users", ""); err != nil || status != 200 {
		t.Fatalf("after a refused reload: %d %v", status, err)
	}
	os.WriteFile(path, []byte(strings.Replace(good, "level: info", "level: warn", 1)), 0o600)
	g.cmd.Process.Signal(syscall.SIGHUP)
	waitOutput(t, g.out, "log.level: info → warn", 10*time.Second)
}

// The catalog reloads; a reload whose catalog drops a value some
// user still holds is refused, naming it, and the running catalog is kept.
func TestReloadCatalog(t *testing.T) {
	r := newReloadRig(t)
	catalog := func(values string) string {
		return reloadBase + `mapping:
  user:
    - {to: login, from: userName, required: true}
    - {to: roles, from: roles.value, type: list}
  catalog:
    - {name: Role, attribute: roles, values: [` + values + `]}
`
	}
	r.write(catalog("{id: admin}, {id: editor}, {id: viewer}"))
	changes, err := r.a.reload("test")
	if err != nil || !strings.Contains(strings.Join(changes, "\n"), "mapping.catalog: type Role added (3 values)") {
		t.Fatalf("first catalog: %q %v", changes, err)
	}
	base := "http://" + r.a.SCIMAddr() + "/scim/v2"
	status, body, err := tryDo(base, "POST", "/Users", `{"userName":"ada@example.com","roles":[{"value":"editor"}]}`)
	if err != nil || status != 201 {
		t.Fatalf("create with a role: %d %v %v", status, body, err)
	}
	if status, _, _ := tryDo(base, "POST", "/Users", `{"userName":"eve@example.com","roles":[{"value":"owner"}]}`); status != 400 {
		t.Errorf("a role outside the catalog = %d, want 400", status)
	}
	// Dropping editor, which ada holds, is refused.
	r.write(catalog("{id: admin}, {id: viewer}, {id: owner}"))
	_, err = r.a.reload("test")
	var re *reloadError
	if !errors.As(err, &re) || !strings.Contains(strings.Join(re.Problems(), "\n"), `Role "editor" is removed but still assigned to 1 user(s), e.g. `+body["id"].(string)) {
		t.Fatalf("reload dropping an assigned value = %v", err)
	}
	if status, _, _ := tryDo(base, "POST", "/Users", `{"userName":"eve@example.com","roles":[{"value":"owner"}]}`); status != 400 {
		t.Errorf("the refused catalog was applied: owner accepted (%d)", status)
	}
	// Dropping an unassigned value and adding one is applied.
	r.write(catalog("{id: admin}, {id: editor}, {id: owner}"))
	if changes, err := r.a.reload("test"); err != nil || !strings.Contains(strings.Join(changes, "\n"), "mapping.catalog") {
		t.Fatalf("reload with a new value: %q %v", changes, err)
	}
	if status, _, _ := tryDo(base, "POST", "/Users", `{"userName":"eve@example.com","roles":[{"value":"owner"}]}`); status != 201 {
		t.Errorf("the reloaded catalog's new value refused (%d)", status)
	}
}

// A reload never generates secrets. A configuration that
// leaves the SCIM listener without credentials (the auth section removed
// while editing, the token's _FILE emptied) or an empty document is
// refused, the running configuration is kept (the old token still works),
// and no token is generated or printed.
func TestReloadNeverGeneratesSecrets(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "scimgate.yaml")
	tokenFile := filepath.Join(dir, "scim-token")
	os.WriteFile(tokenFile, []byte(e2eToken+"\n"), 0o600)
	good := strings.NewReplacer("listen: 127.0.0.1:0\n  auth", "listen: ${SCIMGATE_LISTEN}\n  auth",
		"listen: 127.0.0.1:0\n  tokens", "listen: ${SCIMGATE_ADMIN_LISTEN}\n  tokens",
		"${SCIMGATE_SCIM_TOKEN}", "${IDP_TOKEN}").Replace(reloadBase)
	os.WriteFile(path, []byte(good), 0o600)
	secret, _ := outbox.NewSecret()
	env := append(os.Environ(), "SCIMGATE_CONFIG="+path, "SCIMGATE_DATA_DIR="+filepath.Join(dir, "data"), "IDP_TOKEN_FILE="+tokenFile,
		"SCIMGATE_ADMIN_TOKEN="+e2eToken, "SCIMGATE_WEBHOOK_SECRET="+secret)
	g := startBinary(t, bin, env, freePort(t), freePort(t))
	defer g.kill()
	refused := 0
	for _, c := range []struct {
		name   string
		config string
		token  string
	}{
		{"auth section removed", strings.Replace(good, "  auth:\n    bearer_tokens: [\"${IDP_TOKEN}\"]\n", "", 1), e2eToken + "\n"},
		{"token file emptied", good, ""},
		{"empty config file", "", e2eToken + "\n"},
	} {
		os.WriteFile(path, []byte(c.config), 0o600)
		os.WriteFile(tokenFile, []byte(c.token), 0o600)
		g.cmd.Process.Signal(syscall.SIGHUP)
		refused++
		deadline := time.Now().Add(10 * time.Second)
		for strings.Count(g.out.String(), "configuration reload refused") < refused {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the reload was not refused:\n%s", c.name, g.out)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if status, _, err := tryDo(g.scim, "GET", "/Users", ""); err != nil || status != 200 {
			t.Errorf("%s: the running token stopped working: %d %v", c.name, status, err)
		}
	}
	for _, leak := range []string{"Generated", "shown only this once"} {
		if strings.Contains(g.out.String(), leak) {
			t.Errorf("a reload printed a generated secret:\n%s", g.out)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "data", scimTokenFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a reload generated %s (%v)", scimTokenFile, err)
	}
}

// A gateway that runs on its generated token (no credentials configured)
// reloads the same configuration: the data dir's token is read again, not
// replaced.
func TestReloadKeepsGeneratedCredentials(t *testing.T) {
	dataDir := t.TempDir()
	path := filepath.Join(t.TempDir(), "scimgate.yaml")
	noAuth := strings.Replace(reloadBase, "  auth:\n    bearer_tokens: [\"${SCIMGATE_SCIM_TOKEN}\"]\n", "", 1)
	os.WriteFile(path, []byte(noAuth), 0o600)
	secret, _ := outbox.NewSecret()
	base := testEnv(dataDir, "http://127.0.0.1:9/hooks", secret)
	env := func(k string) string {
		if k == "SCIMGATE_SCIM_TOKEN" {
			return ""
		}
		return base(k)
	}
	var printed strings.Builder
	cfg, err := loadServeConfig(path, env, &printed)
	if err != nil || !strings.Contains(printed.String(), "shown only this once") {
		t.Fatalf("start: %v\n%s", err, printed.String())
	}
	a := startAppCfg(t, cfg, appOptions{Reload: func(running Config) (Config, error) { return loadReloadConfig(path, env, running) }})
	t.Cleanup(func() { closeApp(t, a) })
	os.WriteFile(path, []byte(strings.Replace(noAuth, "level: info", "level: warn", 1)), 0o600)
	changes, err := a.reload("test")
	if err != nil || strings.Contains(strings.Join(changes, "\n"), "scim.auth") {
		t.Fatalf("reload on the generated token: %q %v", changes, err)
	}
}

// `scimgate reload` says once that the running
// configuration is kept when it refuses, and a reload that leaves a change
// unapplied until a restart exits 1, naming it.
func TestReloadCommandOutcome(t *testing.T) {
	r := newReloadRig(t)
	env := fixedEnv("SCIMGATE_ADMIN_TOKEN", e2eToken)
	admin := "http://" + r.a.AdminAddr()
	r.write(reloadBase + "bogus: 1\n")
	code, stdout, stderr := runCLI(t, env, "reload", "--admin", admin)
	if code != 1 || strings.Count(strings.ToLower(stdout+stderr), "kept") != 1 || !strings.Contains(stderr, "bogus") {
		t.Errorf("refused reload: exit %d, want 1 and one \"kept\":\n%s%s", code, stdout, stderr)
	}
	r.write(strings.Replace(reloadBase, "listen: 127.0.0.1:0\n  auth", "listen: 127.0.0.1:0\n  limits:\n    read_timeout: 10s\n  auth", 1))
	code, stdout, stderr = runCLI(t, env, "reload", "--admin", admin)
	if code != 1 || !strings.Contains(stderr, "not applied") || !strings.Contains(stderr, "scim.limits.read_timeout") {
		t.Errorf("reload needing a restart: exit %d, want 1 naming what was not applied:\n%s%s", code, stdout, stderr)
	}
	r.write(strings.Replace(reloadBase, "level: info", "level: warn", 1))
	if code, stdout, stderr = runCLI(t, env, "reload", "--admin", admin); code != 0 || !strings.Contains(stdout, "log.level") {
		t.Errorf("applied reload: exit %d:\n%s%s", code, stdout, stderr)
	}
}

// A secret removed by a reload and added back across a restart does not
// revive the tokens issued under it before its removal (the secrets'
// incarnations are kept in the data dir); a secret kept across the restart
// keeps its tokens, and the re-added secret issues working ones.
func TestReAddedSecretAcrossRestartKeepsTokensDead(t *testing.T) {
	dataDir := t.TempDir()
	secret, _ := outbox.NewSecret()
	env := testEnv(dataDir, "http://127.0.0.1:9/hooks", secret)
	path := filepath.Join(t.TempDir(), "scimgate.yaml")
	const a, b = "client-secret-a-0123456789abcdef", "client-secret-b-0123456789abcdef"
	conf := func(secrets ...string) {
		var hashes []string
		for _, s := range secrets {
			hashes = append(hashes, `"`+gateway.HashToken(s)+`"`)
		}
		yaml := strings.Replace(reloadBase, `    bearer_tokens: ["${SCIMGATE_SCIM_TOKEN}"]`,
			`    bearer_tokens: ["${SCIMGATE_SCIM_TOKEN}"]
    oauth_clients:
      - {client_id: entra, client_secrets: [`+strings.Join(hashes, ", ")+`]}`, 1)
		if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	start := func() *app {
		cfg, err := loadServeConfig(path, env, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		return startAppCfg(t, cfg, appOptions{Reload: func(running Config) (Config, error) { return loadReloadConfig(path, env, running) }})
	}
	token := func(g *app, secret string) string {
		t.Helper()
		req, _ := http.NewRequest("POST", "http://"+g.SCIMAddr()+"/scim/v2/oauth/token", strings.NewReader("grant_type=client_credentials"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth("entra", secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct {
			AccessToken string `json:"access_token"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != 200 {
			t.Fatalf("token with a secret: %d %v", resp.StatusCode, err)
		}
		return body.AccessToken
	}
	status := func(g *app, tok string) int {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+g.SCIMAddr()+"/scim/v2/Users?count=1", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	conf(a, b)
	g := start()
	ta, tb := token(g, a), token(g, b)
	if status(g, ta) != 200 || status(g, tb) != 200 {
		t.Fatal("fresh tokens refused")
	}
	conf(b) // a removed
	if _, err := g.reload("test"); err != nil {
		t.Fatal(err)
	}
	if got := status(g, ta); got != 401 {
		t.Fatalf("a token of a removed secret: %d", got)
	}
	closeApp(t, g)
	conf(a, b) // a added back while stopped
	g = start()
	defer closeApp(t, g)
	if got := status(g, ta); got != 401 {
		t.Errorf("a token issued before its secret's removal, after the secret came back across a restart: %d, want 401", got)
	}
	if got := status(g, tb); got != 200 {
		t.Errorf("a token of a secret kept across the restart: %d, want 200", got)
	}
	if got := status(g, token(g, a)); got != 200 {
		t.Errorf("a token of the re-added secret: %d, want 200", got)
	}
	raw, err := os.ReadFile(filepath.Join(dataDir, incarnationsFile))
	if err != nil || strings.Contains(string(raw), gateway.HashToken(a)[7:]) || strings.Contains(string(raw), a) {
		t.Errorf("the incarnations file holds a secret or its hash (err %v):\n%s", err, raw)
	}
}
