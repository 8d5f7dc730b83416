package main

import (
	"context"
	"encoding/json"
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

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

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

	created, deactivated, writes := crashCycles(t, bin, env, cycles)
	// Recover: one more start, then everything acknowledged must be there.
	g := startBinary(t, bin, env, freePort(t), freePort(t))
	defer g.kill()
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

// crashCycles runs 8 writers creating and deactivating users against the
// binary, kills it with SIGKILL at a random moment, and repeats; it returns
// the acknowledged creates and deactivations.
func crashCycles(t *testing.T, bin string, env []string, cycles int) (created, deactivated map[string]bool, writes int) {
	t.Helper()
	var mu sync.Mutex
	created, deactivated = map[string]bool{}, map[string]bool{} // acknowledged
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
	return created, deactivated, writes
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

// TestCrashLosesNothingNATS is the crash test with examples/nats.yaml (a
// JetStream target and no webhook) against a real in-process NATS server:
// afterwards every acknowledged change's event is in the stream, and each
// event exactly once — the redeliveries after each kill -9 are absorbed by
// JetStream's duplicate window (Nats-Msg-Id = the event id).
func TestCrashLosesNothingNATS(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the binary")
	}
	cycles := 3
	if v, err := strconv.Atoi(os.Getenv("SCIMGATE_CRASH_CYCLES")); err == nil && v > 0 {
		cycles = v
	}
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	config, _ := filepath.Abs(examplePath("nats"))
	env := append(os.Environ(), "SCIMGATE_CONFIG="+config, "SCIMGATE_NATS_URL="+ns.ClientURL(),
		"SCIMGATE_DATA_DIR="+dir, "SCIMGATE_SCIM_TOKEN="+e2eToken, "SCIMGATE_ADMIN_TOKEN="+e2eToken)
	created, deactivated, writes := crashCycles(t, bin, env, cycles)
	if len(created) == 0 {
		t.Fatal("no write was acknowledged")
	}
	g := startBinary(t, bin, env, freePort(t), freePort(t))
	defer g.kill()

	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var perID map[string]int
	var seen map[string]bool
	for {
		perID, seen = map[string]int{}, map[string]bool{}
		stream, err := js.Stream(ctx, "SCIMGATE")
		if err != nil {
			t.Fatal(err)
		}
		info, _ := stream.Info(ctx)
		for seq := uint64(1); info != nil && seq <= info.State.LastSeq; seq++ {
			msg, err := stream.GetMsg(ctx, seq)
			if err != nil {
				continue // deleted or not there
			}
			var ev struct {
				ID, Type string
				Data     map[string]map[string]any
			}
			if err := json.Unmarshal(msg.Data, &ev); err != nil {
				t.Fatal(err)
			}
			perID[msg.Header.Get("Nats-Msg-Id")]++
			if u := ev.Data["user"]; u != nil {
				seen[ev.Type+"/"+fmt.Sprint(u["id"])] = true
			}
		}
		missing := 0
		for id := range created {
			if !seen["user.created/"+id] {
				missing++
			}
		}
		for id := range deactivated {
			if !seen["user.deactivated/"+id] {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("%d acknowledged changes have no event in the stream", missing)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for id, n := range perID {
		if n != 1 {
			t.Errorf("event %s is in the stream %d times", id, n)
		}
	}
	t.Logf("crash test with NATS: %d kill -9 cycles, %d acknowledged writes (%d creates, %d deactivations), %d messages in the stream, each once",
		cycles, writes, len(created), len(deactivated), len(perID))
}
