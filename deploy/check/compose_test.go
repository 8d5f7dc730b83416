package check

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var composeFile = filepath.Join(repo, "deploy/compose.yaml")

// TestCompose loads deploy/compose.yaml against the Compose specification
// and checks how it runs the gateway.
func TestCompose(t *testing.T) {
	p, err := LoadCompose(context.Background(), composeFile, map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	for _, problem := range ComposeProblems(p) {
		t.Error(problem)
	}
	if got, want := p.Name, "scimgate"; got != want {
		t.Errorf("project name = %q, want %q", got, want)
	}
	if got, want := p.Services["scimgate"].Image, "scimgate:local"; got != want {
		t.Errorf("image = %q, want %q", got, want)
	}
	if got, want := p.Services["scimgate"].Build.Context, repo; got != want {
		t.Errorf("build context = %q, want the repository root %q", got, want)
	}
	for name, s := range p.Secrets {
		if dir := filepath.Dir(s.File); dir != filepath.Join(repo, "deploy/secrets") {
			t.Errorf("secret %s is read from %s, not deploy/secrets where docs/operations.md creates it", name, s.File)
		}
	}
	// SCIMGATE_IMAGE picks a pushed image instead.
	p, err = LoadCompose(context.Background(), composeFile, map[string]string{"SCIMGATE_IMAGE": "registry.example.com/scimgate:0.2.0"})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := p.Services["receiver"].Image, "registry.example.com/scimgate:0.2.0"; got != want {
		t.Errorf("receiver image = %q, want %q", got, want)
	}
}

// TestComposeCatchesBreakage breaks the file one way at a time.
func TestComposeCatchesBreakage(t *testing.T) {
	orig, err := os.ReadFile(composeFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, old, new, want string }{
		{"unknown key", "healthcheck:", "healthchek:", "healthchek"},
		{"wrong type", "retries: 3", "retries: three", "retries"},
		{"undeclared secret", "secrets: [webhook_secret]", "secrets: [webhook_secrt]", "webhook_secrt"},
		{"secret in env", "SCIMGATE_WEBHOOK_URL: http://receiver:9000/hooks", "SCIMGATE_WEBHOOK_URL: http://receiver:9000/hooks\n      SCIMGATE_ADMIN_TOKEN: hunter2", "SCIMGATE_ADMIN_TOKEN in the environment"},
		{"writable root", "read_only: true", "read_only: false", "read_only must be true"},
		{"health check", `"health"]`, `"status"]`, "healthcheck must run"},
		{"public port", `"127.0.0.1:8080:8080"`, `"8080:8080"`, "publish on 127.0.0.1"},
		{"receiver port", `"0.0.0.0:9000"`, `"0.0.0.0:9001"`, "delivers to port 9000"},
		{"data not a volume", "- scimgate-data:/data", "- scimgate-data:/var/data", "not a named volume"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(string(orig), tc.old) {
				t.Fatalf("compose.yaml has no %q: the breakage no longer applies", tc.old)
			}
			file := filepath.Join(filepath.Dir(composeFile), ".compose-broken-"+strings.ReplaceAll(tc.name, " ", "-")+".yaml")
			if err := os.WriteFile(file, []byte(strings.Replace(string(orig), tc.old, tc.new, 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.Remove(file) })
			p, err := LoadCompose(context.Background(), file, map[string]string{})
			all := ""
			if err != nil {
				all = err.Error()
			} else {
				all = strings.Join(ComposeProblems(p), "\n")
			}
			if !strings.Contains(all, tc.want) {
				t.Errorf("want %q among:\n%s", tc.want, all)
			}
		})
	}
}
