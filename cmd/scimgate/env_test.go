package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
// secrets convention (issue 9).
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
