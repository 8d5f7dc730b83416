package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func fixedEnv(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func asJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The example file is the documentation of the defaults: both must agree,
// with and without the environment contract's variables set.
func TestExampleConfigEqualsDefaults(t *testing.T) {
	for name, getenv := range map[string]func(string) string{
		"empty env": fixedEnv(),
		"sidecar env": fixedEnv("SCIMGATE_LISTEN", ":9090", "SCIMGATE_ADMIN_LISTEN", "0.0.0.0:9091", "SCIMGATE_DATA_DIR", "/data",
			"SCIMGATE_SCIM_TOKEN", "tok-0123456789abcdef", "SCIMGATE_ADMIN_TOKEN", "adm-0123456789abcdef",
			"SCIMGATE_WEBHOOK_URL", "https://app.internal/hooks", "SCIMGATE_WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
	} {
		t.Run(name, func(t *testing.T) {
			cfg, doc, err := LoadConfig("../../config.example.yaml", getenv)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := asJSON(t, cfg), asJSON(t, DefaultConfig(getenv)); got != want {
				t.Errorf("config.example.yaml differs from DefaultConfig:\nfile:     %s\ndefaults: %s", got, want)
			}
			cfg.DataDir = t.TempDir() // generated secrets go there, not into the source tree
			if err := prepareSecrets(&cfg, &strings.Builder{}); err != nil {
				t.Fatal(err)
			}
			if err := cfg.Validate("config.example.yaml", doc); err != nil {
				t.Errorf("config.example.yaml does not validate: %v", err)
			}
		})
	}
}

func TestConfigErrorsNameFileLineAndKey(t *testing.T) {
	cases := []struct {
		name, yaml string
		line       int
		field      string
		is         error
	}{
		{"unknownKey", "scim:\n  listen: \":8080\"\n  timout: 3s\n", 3, "scim.timout", ErrUnknownKey},
		{"unknownNested", "outbox:\n  targets:\n    - name: a\n      urll: http://x\n", 4, "outbox.targets[0].urll", ErrUnknownKey},
		{"unknownRuleKey", "mapping:\n  user:\n    - {to: login, from: userName, requird: true}\n", 3, "mapping.user[0].requird", ErrUnknownKey},
		{"badListen", "scim:\n  listen: nope\n", 2, "scim.listen", nil},
		{"badLogLevel", "log:\n  level: loud\n", 2, "log.level", nil},
		{"badRuleType", "mapping:\n  user:\n    - {to: login, from: userName, required: true}\n    - {to: x, from: title, type: colour}\n", 4, "mapping.user[1]", nil},
		{"badTargetURL", "outbox:\n  targets:\n    - name: app\n      url: ftp://x\n      secrets: [whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw]\n", 4, "outbox.targets[0].url", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(dir, "c.yaml")
			os.WriteFile(file, []byte(c.yaml), 0o600)
			cfg, doc, err := LoadConfig(file, fixedEnv("SCIMGATE_DATA_DIR", dir))
			if err == nil {
				if err = prepareSecrets(&cfg, &strings.Builder{}); err == nil {
					err = cfg.Validate(file, doc)
				}
			}
			if err == nil {
				t.Fatal("no error")
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error %v is not a *ConfigError", err)
			}
			if ce.File != file || ce.Line != c.line || !strings.HasPrefix(ce.Field, c.field) {
				t.Errorf("got %s:%d %s, want line %d field %s (%v)", ce.File, ce.Line, ce.Field, c.line, c.field, err)
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Errorf("errors.Is(%v, %v) = false", err, c.is)
			}
			if !strings.Contains(err.Error(), file+":") {
				t.Errorf("message does not name the file: %v", err)
			}
		})
	}
}

func TestEnvExpansion(t *testing.T) {
	yaml := `data_dir: ${DIR}
scim:
  listen: ${PORT:-127.0.0.1:7777}
  auth:
    basic:
      - {username: key, password: "$2a$10$abcdefghijklmnopqrstuv"}
`
	cfg, _, err := ParseConfig("x.yaml", []byte(yaml), fixedEnv("DIR", "/var/lib/x"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DataDir != "/var/lib/x" || cfg.SCIM.Listen != "127.0.0.1:7777" || cfg.SCIM.Auth.Basic[0].Password != "$2a$10$abcdefghijklmnopqrstuv" {
		t.Errorf("expansion: data_dir %q listen %q password %q", cfg.DataDir, cfg.SCIM.Listen, cfg.SCIM.Auth.Basic[0].Password)
	}
	_, _, err = ParseConfig("x.yaml", []byte("data_dir: /x\nscim:\n  listen: ${MISSING}\n"), fixedEnv())
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Line != 3 || !strings.Contains(err.Error(), "MISSING") {
		t.Errorf("unset variable: %v", err)
	}
}
