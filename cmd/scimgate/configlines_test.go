package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestYAMLSyntaxErrorLines: a YAML syntax error names
// the line where it is, not yaml.v3's (the line before, or the start of the
// enclosing block), and a tab in the indentation is called a tab.
func TestYAMLSyntaxErrorLines(t *testing.T) {
	cases := []struct {
		name, yaml string
		line       int
		say        []string
	}{
		{"unclosed brace", "mapping:\n  user:\n    - {to: login, from: userName\n    - {to: email, from: emails.value}\n", 3,
			[]string{"did not find expected ',' or '}'", "not closed"}},
		{"unclosed bracket", "mapping:\n  user:\n    - {to: login, from: userName}\n    - {to: email, from: [emails.value, userName}\n", 4,
			[]string{"not closed"}},
		{"indent under a list item", "mapping:\n  user:\n  - to: a\n   from: b\n", 4, []string{"indentation"}},
		{"indent in a rule", "mapping:\n  user:\n    - to: login\n      from: userName\n     type: string\n", 5, []string{"indentation"}},
		{"indent at the top", "data_dir: /x\n log: {level: info}\n", 2, []string{"indentation"}},
		{"tab in a rule", "mapping:\n  user:\n    - to: login\n\t  from: userName\n", 4, []string{"tab"}},
		{"tab before a key", "mapping:\n\tuser:\n  - {to: a}\n", 2, []string{"tab"}},
		{"tab before a list item", "mapping:\n  user:\n\t- to: login\n", 3, []string{"tab"}},
		{"after values over several lines", "log: {level: info,\n  format: json}\ndata_dir: \"/var/lib/\n  scimgate\"\nadmin: {tokens: [a,\n  b]}\napi: {}\n scim: {}\n", 8,
			[]string{"indentation"}},
		{"unclosed quote", "log:\n  level: info\nmapping:\n  match: \"userName\n  user: []\n", 4, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := ParseConfig("c.yaml", []byte(c.yaml), fixedEnv())
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("ParseConfig = %v, want a *ConfigError", err)
			}
			if ce.Line != c.line {
				t.Errorf("line %d, want %d: %v", ce.Line, c.line, err)
			}
			for _, s := range c.say {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("%v does not say %q", err, s)
				}
			}
			if prefix := fmt.Sprintf("c.yaml:%d: ", c.line); !strings.HasPrefix(err.Error(), prefix) || regexp.MustCompile(`line \d`).MatchString(err.Error()) {
				t.Errorf("%v: want it to start %q, as every config error, and no other line", err, prefix)
			}
		})
	}
}

// TestValidateReportsEveryMappingError: `scimgate validate` prints every
// problem of the mapping, a value of the wrong kind and an unknown key
// among them, each on its line (the unknown key used to hide the other
// errors, and yaml.v3's type error everything else).
func TestValidateReportsEveryMappingError(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	yaml := "mapping:\n  user:\n    - {to: login, from: userName, required: maybe}\n" +
		"    - {to: email, from: \"emails[\", type: email, requird: true}\n" +
		"    - {to: hired, from: x, type: datte, format: dd/MM/yyyy}\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runCLI(t, fixedEnv("SCIMGATE_DATA_DIR", dir), "validate", "--config", file)
	if code == 0 {
		t.Fatalf("validate exited 0: %s", stderr)
	}
	// The example of docs/mapping.md, "Configuration errors".
	want := []string{
		file + `:3: mapping.user[0].required: want true or false, not "maybe"`,
		file + `:4: mapping.user[1].requird: unknown key (allowed here: `,
		file + `:4: mapping.user[1].from: invalid path "emails["`,
		file + `:5: mapping.user[2].type: unknown type "datte"`,
	}
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	if len(lines) != len(want) {
		t.Fatalf("validate printed %d lines, want %d:\n%s", len(lines), len(want), stderr)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d: %s\nwant it to start %s", i+1, lines[i], w)
		}
	}
}
