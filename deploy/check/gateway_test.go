package check

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
	buildOut  []byte
)

// gatewayBinary is the real scimgate binary: $SCIMGATE_BIN (CI passes the
// one its Docker build step made), else built once from the repository.
func gatewayBinary(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("SCIMGATE_BIN"); bin != "" {
		abs, err := filepath.Abs(bin)
		if err != nil {
			t.Fatal(err)
		}
		return abs
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "scimgate-check-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "scimgate")
		cmd := exec.Command("go", "build", "-o", builtBin, "./cmd/scimgate")
		cmd.Dir = repo
		buildOut, buildErr = cmd.CombinedOutput()
	})
	if buildErr != nil {
		t.Fatalf("build scimgate: %v\n%s", buildErr, buildOut)
	}
	return builtBin
}
