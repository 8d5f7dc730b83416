package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeSecret(t *testing.T, content string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// Every secret variable has a _FILE form: the Docker and Kubernetes
// secrets convention.
func TestSecretsFromFiles(t *testing.T) {
	const scim, admin, whsec = "scim-token-from-a-file-0123", "admin-token-from-a-file-0123", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	env := fixedEnv(
		"SCIMGATE_SCIM_TOKEN_FILE", writeSecret(t, scim+"\n"), // trailing newline trimmed
		"SCIMGATE_ADMIN_TOKEN_FILE", writeSecret(t, admin+"\r\n"),
		"SCIMGATE_WEBHOOK_SECRET_FILE", writeSecret(t, whsec),
		"CYOLO_SCIM_SECRET_FILE", writeSecret(t, "cyolo-secret-from-a-file-0123\n"),
		"CYOLO_SCIM_KEY", "okta-key-1", "SCIMGATE_DATA_DIR", t.TempDir())
	check := func(name string, cfg Config) {
		t.Helper()
		if got := cfg.SCIM.Auth.BearerTokens; len(got) != 1 || got[0].Token != scim {
			t.Errorf("%s: bearer tokens %q", name, got)
		}
		if got := cfg.Admin.Tokens; len(got) != 1 || got[0] != admin {
			t.Errorf("%s: admin tokens %q", name, got)
		}
		if got := cfg.Outbox.Targets[0].Secrets; len(got) != 1 || got[0] != whsec {
			t.Errorf("%s: webhook secrets %q", name, got)
		}
	}
	// The built-in defaults and config.example.yaml (${VAR:-} references).
	cfg, _, _, err := loadConfig("", env)
	if err != nil {
		t.Fatal(err)
	}
	check("defaults", cfg)
	cfg, _, err = LoadConfig("../../config.example.yaml", env)
	if err != nil {
		t.Fatal(err)
	}
	check("config.example.yaml", cfg)
	// Any ${VAR} of a config: cyolo's Basic secret.
	cfg, _, err = LoadConfig(examplePath("cyolo"), env)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.SCIM.Auth.Basic; len(got) != 1 || got[0].Password != "cyolo-secret-from-a-file-0123" {
		t.Errorf("cyolo basic = %+v", got)
	}
	// serve validates it like any secret.
	if code, stdout, stderr := runCLI(t, env, "validate", "--config", examplePath("cyolo")); code != 0 {
		t.Errorf("validate cyolo with CYOLO_SCIM_SECRET_FILE: %d %s%s", code, stdout, stderr)
	}
}

func TestSecretFileErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope", "scim-token")
	content := "the-secret-content-must-not-appear"
	for _, c := range []struct {
		name   string
		env    func(string) string
		config string // "" for the built-in defaults
		want   []string
	}{
		{"both set", fixedEnv("SCIMGATE_SCIM_TOKEN", content, "SCIMGATE_SCIM_TOKEN_FILE", writeSecret(t, content)), "",
			[]string{"both SCIMGATE_SCIM_TOKEN and SCIMGATE_SCIM_TOKEN_FILE are set"}},
		{"missing file", fixedEnv("SCIMGATE_ADMIN_TOKEN_FILE", missing), "",
			[]string{"SCIMGATE_ADMIN_TOKEN_FILE=" + missing, "no such file"}},
		{"empty file", fixedEnv("SCIMGATE_WEBHOOK_SECRET_FILE", writeSecret(t, "\n")), "",
			[]string{"SCIMGATE_WEBHOOK_SECRET_FILE=", "the file is empty"}},
		{"config reference, missing file", fixedEnv("CYOLO_SCIM_SECRET_FILE", missing, "CYOLO_SCIM_KEY", "k"), examplePath("cyolo"),
			[]string{"cyolo.yaml:", "${CYOLO_SCIM_SECRET}", "CYOLO_SCIM_SECRET_FILE=" + missing}},
		{"config reference, both set", fixedEnv("CYOLO_SCIM_SECRET_FILE", writeSecret(t, content), "CYOLO_SCIM_SECRET", content, "CYOLO_SCIM_KEY", "k"), examplePath("cyolo"),
			[]string{"both CYOLO_SCIM_SECRET and CYOLO_SCIM_SECRET_FILE"}},
		{"config reference unset names both forms", fixedEnv("CYOLO_SCIM_KEY", "k"), examplePath("cyolo"),
			[]string{"${CYOLO_SCIM_SECRET} is not set", "CYOLO_SCIM_SECRET_FILE"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, _, err := loadConfig(c.config, c.env)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), content) {
				t.Errorf("error quotes the secret: %q", err)
			}
			// serve refuses to start with the same message.
			args := []string{"serve"}
			if c.config != "" {
				args = append(args, "--config", c.config)
			}
			code, _, stderr := runCLI(t, c.env, args...)
			if code != 1 || !strings.Contains(stderr, c.want[0]) || strings.Contains(stderr, content) {
				t.Errorf("serve: exit %d, stderr %q", code, stderr)
			}
		})
	}
}

// An empty or malformed generated-secret file in the
// data dir (scim-token.sha256, admin-token.sha256, webhook-secret) stops
// the start with one line that names it, instead of a "ready" gateway that
// refuses every request; nothing is generated over it.
func TestBadSecretFileRefusedWithOneLine(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	bin := buildBinary(t)
	const whsec = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	for _, c := range []struct {
		file, content string
		env           []string // the other secrets, so that only file is read
	}{
		{scimTokenFile, "", []string{"SCIMGATE_ADMIN_TOKEN=" + e2eToken, "SCIMGATE_WEBHOOK_SECRET=" + whsec}},
		{scimTokenFile, "\n", []string{"SCIMGATE_ADMIN_TOKEN=" + e2eToken, "SCIMGATE_WEBHOOK_SECRET=" + whsec}},
		{scimTokenFile, "sha256:0123\n", []string{"SCIMGATE_ADMIN_TOKEN=" + e2eToken, "SCIMGATE_WEBHOOK_SECRET=" + whsec}},
		{adminTokenFile, "", []string{"SCIMGATE_SCIM_TOKEN=" + e2eToken, "SCIMGATE_WEBHOOK_SECRET=" + whsec}},
		{webhookSecretFile, "", []string{"SCIMGATE_SCIM_TOKEN=" + e2eToken, "SCIMGATE_ADMIN_TOKEN=" + e2eToken}},
		{webhookSecretFile, "whsec_not base64!\n", []string{"SCIMGATE_SCIM_TOKEN=" + e2eToken, "SCIMGATE_ADMIN_TOKEN=" + e2eToken}},
	} {
		dataDir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dataDir, c.file), []byte(c.content), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "serve")
		cmd.Env = append(os.Environ(), append(c.env, "SCIMGATE_DATA_DIR="+dataDir, "SCIMGATE_CONFIG=",
			"SCIMGATE_LISTEN="+freePort(t), "SCIMGATE_ADMIN_LISTEN="+freePort(t), "SCIMGATE_WEBHOOK_URL=http://127.0.0.1:9/hooks")...)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		done := make(chan error, 1)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { done <- cmd.Wait() }()
		var err error
		select {
		case err = <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Fatalf("%s %q: serve started (or hung) instead of refusing:\n%s", c.file, c.content, stderr.String())
		}
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || strings.Count(stderr.String(), "\n") != 1 || !strings.Contains(stderr.String(), c.file) {
			t.Errorf("%s %q: want exit 1 and one line naming the file, got %v:\n%s", c.file, c.content, err, stderr.String())
		}
		if stdout.Len() != 0 {
			t.Errorf("%s %q: printed on stdout:\n%s", c.file, c.content, stdout.String())
		}
		if b, _ := os.ReadFile(filepath.Join(dataDir, c.file)); string(b) != c.content {
			t.Errorf("%s was replaced: %q", c.file, b)
		}
	}
}

// Generated files are replaced whole: a temporary file, synced, renamed
// over the old one, the directory synced; a failed write leaves neither a
// partial file nor the temporary one.
func TestWriteFileDurable(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "secret")
	for _, content := range []string{"first\n", "second\n"} {
		if err := writeFileDurable(file, []byte(content)); err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(file); err != nil || string(b) != content {
			t.Fatalf("content %q %v, want %q", b, err, content)
		}
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v %v, want 0600", fi.Mode(), err)
	}
	if err := writeFileDurable(filepath.Join(dir, "missing", "secret"), []byte("x")); err == nil {
		t.Error("a write into a missing directory succeeded")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("files left beside the secret: %v", entries)
	}
}
