package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/scimgate/scimgate/outbox"
)

// TestCrashLosesNothing runs the real binary under an Okta-shaped write
// load, kills it with SIGKILL at a random moment, restarts it on the same
// data dir, and repeats. Afterwards every write that got a 2xx must be in
// the store and its event must have reached the receiver (duplicates are
// allowed: delivery is at least once). SCIMGATE_CRASH_CYCLES sets the
// number of cycles (default 4).
func TestCrashLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the binary")
	}
	cycles := 4
	if v, err := strconv.Atoi(os.Getenv("SCIMGATE_CRASH_CYCLES")); err == nil && v > 0 {
		cycles = v
	}
	bin := buildBinary(t)
	secret, _ := outbox.NewSecret()
	rcv, srv := newReceiver(t, secret)
	dir := t.TempDir()
	env := append(os.Environ(),
		"SCIMGATE_DATA_DIR="+dir, "SCIMGATE_SCIM_TOKEN="+e2eToken, "SCIMGATE_ADMIN_TOKEN="+e2eToken,
		"SCIMGATE_WEBHOOK_URL="+srv.URL+"/hooks", "SCIMGATE_WEBHOOK_SECRET="+secret)

	var mu sync.Mutex
	created := map[string]bool{}     // acknowledged creates
	deactivated := map[string]bool{} // acknowledged deactivations
	writes := 0
	for cycle := range cycles {
		g := startBinary(t, bin, env, freePort(t), freePort(t))
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					name := fmt.Sprintf("c%d-w%d-u%d@example.com", cycle, w, i)
					status, body, err := tryDo(g.scim, "POST", "/Users", fmt.Sprintf(`{"userName":%q,"name":{"givenName":"G","familyName":"F"},
						"emails":[{"value":%q,"type":"work","primary":true}],"active":true}`, name, name))
					if err != nil {
						return // killed
					}
					if status != 201 {
						t.Errorf("create: %d %v", status, body)
						return
					}
					id := body["id"].(string)
					mu.Lock()
					created[id] = true
					writes++
					mu.Unlock()
					status, _, err = tryDo(g.scim, "PATCH", "/Users/"+id, `{"Operations":[{"op":"replace","value":{"active":false}}]}`)
					if err != nil {
						return
					}
					if status == 204 {
						mu.Lock()
						deactivated[id] = true
						writes++
						mu.Unlock()
					}
				}
			})
		}
		time.Sleep(time.Duration(300+rand.IntN(500)) * time.Millisecond)
		g.kill()
		close(stop)
		wg.Wait()
	}
	// Recover: one more start, then everything acknowledged must be there.
	g := startBinary(t, bin, env, freePort(t), freePort(t))
	defer g.kill()
	mu.Lock()
	defer mu.Unlock()
	if len(created) == 0 {
		t.Fatal("no write was acknowledged")
	}
	for id := range created {
		status, body, err := tryDo(g.scim, "GET", "/Users/"+id, "")
		if err != nil || status != 200 {
			t.Fatalf("acknowledged user %s: status %d, err %v", id, status, err)
		}
		if deactivated[id] && body["active"] != false {
			t.Errorf("acknowledged deactivation of %s lost: active = %v", id, body["active"])
		}
	}
	rcv.waitFor(t, "every acknowledged change's event", 60*time.Second, func(evs []map[string]any) bool {
		seen := map[string]bool{}
		for _, ev := range evs {
			if d, _ := ev["data"].(map[string]any); d != nil {
				if u, _ := d["user"].(map[string]any); u != nil {
					seen[ev["type"].(string)+"/"+fmt.Sprint(u["id"])] = true
				}
			}
		}
		for id := range created {
			if !seen["user.created/"+id] {
				return false
			}
		}
		for id := range deactivated {
			if !seen["user.deactivated/"+id] {
				return false
			}
		}
		return true
	})
	rcv.mu.Lock()
	dups := 0
	for _, n := range rcv.ids {
		if n > 1 {
			dups += n - 1
		}
	}
	t.Logf("crash test: %d kill -9 cycles, %d acknowledged writes (%d creates, %d deactivations), %d events received, %d redelivered duplicates",
		cycles, writes, len(created), len(deactivated), len(rcv.events), dups)
	rcv.mu.Unlock()
}

// TestRunsAsNonRootWithOnlyDataWritable starts the binary as uid/gid 65534
// (distroless "nonroot" is 65532; any unprivileged id will do) in a
// directory it cannot write, with only the data dir writable, as the
// Docker image runs it.
func TestRunsAsNonRootWithOnlyDataWritable(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch to an unprivileged user")
	}
	bin := buildBinary(t)
	root := t.TempDir()
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	// The binary must be reachable by the unprivileged user.
	binCopy := filepath.Join(root, "scimgate")
	data, _ := os.ReadFile(bin)
	if err := os.WriteFile(binCopy, data, 0o755); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(root, "data")
	if err := os.Mkdir(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dataDir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	for p := filepath.Dir(root); p != "/"; p = filepath.Dir(p) {
		// t.TempDir's parents may be 0700; the test user must traverse them.
		if fi, err := os.Stat(p); err == nil && fi.Mode().Perm()&0o001 == 0 {
			os.Chmod(p, fi.Mode().Perm()|0o001)
		}
	}
	scimAddr, adminAddr := freePort(t), freePort(t)
	cmd := exec.Command(binCopy, "serve")
	cmd.Dir = root
	cmd.Env = []string{"SCIMGATE_DATA_DIR=" + dataDir, "SCIMGATE_LISTEN=" + scimAddr, "SCIMGATE_ADMIN_LISTEN=" + adminAddr}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	g := &binaryGateway{cmd: cmd, admin: "http://" + adminAddr}
	deadline := time.Now().Add(10 * time.Second)
	for {
		status, _, err := tryDo(g.admin, "GET", "/readyz", "")
		if err == nil && status == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready as uid 65534:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The generated SCIM token is printed once; use it.
	var token string
	for _, line := range strings.Split(out.String(), "\n") {
		if f := strings.TrimSpace(line); len(f) == 43 && !strings.Contains(f, " ") {
			token = f
			break
		}
	}
	if token == "" {
		t.Fatalf("no generated token printed:\n%s", out.String())
	}
	status, _, err := tryDoAuth("http://"+scimAddr+"/scim/v2", token, "POST", "/Users", `{"userName":"nonroot@example.com"}`)
	if err != nil || status != 201 {
		t.Fatalf("create as nonroot: %d %v\n%s", status, err, out.String())
	}
	// Nothing was written outside the data dir.
	entries, _ := os.ReadDir(root)
	for _, e := range entries {
		if e.Name() != "data" && e.Name() != "scimgate" {
			t.Errorf("unexpected file outside the data dir: %s", e.Name())
		}
	}
	for _, f := range []string{dbFile, scimTokenFile, adminTokenFile, webhookSecretFile} {
		fi, err := os.Stat(filepath.Join(dataDir, f))
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
}
