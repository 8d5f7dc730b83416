package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for a process writing and a test reading.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitOutput waits until out contains want.
func waitOutput(t *testing.T, out *syncBuffer, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(out.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %q in:\n%s", want, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestNewcomerPath follows README and docs/operations.md through the real
// binary: the gateway on its defaults (generated tokens and secret), signed
// events printed by `scimgate listen`, `scimgate status`, a dead letter
// forced by a receiver answering 400, and `scimgate replay`.
func TestNewcomerPath(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	bin := buildBinary(t)
	dataDir := filepath.Join(t.TempDir(), "data") // not there yet, as on a fresh clone
	hookAddr, scimAddr, adminAddr := freePort(t), freePort(t), freePort(t)
	env := append(os.Environ(), "SCIMGATE_DATA_DIR="+dataDir, "SCIMGATE_WEBHOOK_URL=http://"+hookAddr+"/hooks",
		"SCIMGATE_SCIM_TOKEN=", "SCIMGATE_ADMIN_TOKEN=", "SCIMGATE_WEBHOOK_SECRET=", "SCIMGATE_CONFIG=")

	start := func(args ...string) (*exec.Cmd, *syncBuffer) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(env, "SCIMGATE_LISTEN="+scimAddr, "SCIMGATE_ADMIN_LISTEN="+adminAddr)
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() })
		return cmd, out
	}
	var adminToken string // printed by the gateway on first start
	cli := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = append(env, "SCIMGATE_ADMIN_LISTEN="+adminAddr, "SCIMGATE_ADMIN_TOKEN="+adminToken)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("scimgate %v: %v\n%s", args, err, out)
		}
		return string(out)
	}

	// Terminal 1: the receiver (it creates the webhook secret in the data dir).
	listener, heard := start("listen")
	waitOutput(t, heard, "listening on", 10*time.Second)
	// Terminal 2: the gateway; it prints the generated tokens once.
	_, served := start("serve")
	waitOutput(t, served, "admin token", 10*time.Second)
	tokens := regexp.MustCompile(`(?m)^\s{4}(\S{43})\s*$`).FindAllStringSubmatch(served.String(), -1)
	if len(tokens) != 2 {
		t.Fatalf("want 2 generated tokens in the output:\n%s", served.String())
	}
	scimToken := tokens[0][1]
	adminToken = tokens[1][1]
	waitReady(t, "http://"+adminAddr)

	base := "http://" + scimAddr + "/scim/v2"
	status, body, err := tryDoAuth(base, scimToken, "POST", "/Users", `{"userName":"ada@example.com","name":{"givenName":"Ada","familyName":"Lovelace"},"emails":[{"value":"ada@example.com","type":"work","primary":true}]}`)
	if err != nil || status != 201 {
		t.Fatalf("create: %d %v %v", status, body, err)
	}
	// listen prints the event's line, then its record (a second write).
	waitOutput(t, heard, "✓ user.created", 10*time.Second)
	waitOutput(t, heard, `"login":"ada@example.com"`, 10*time.Second)

	st := cli("status")
	for _, want := range []string{"users: 1 (1 active)", "default", "last SCIM change:"} {
		if !strings.Contains(st, want) {
			t.Errorf("status lacks %q:\n%s", want, st)
		}
	}

	// The app refuses the next event: a permanent 400 dead-letters it.
	listener.Process.Signal(os.Interrupt)
	listener.Wait()
	refuse := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		http.Error(w, `{"error":"unknown department"}`, http.StatusBadRequest)
	})}
	ln, err := net.Listen("tcp", hookAddr)
	if err != nil {
		t.Fatal(err)
	}
	go refuse.Serve(ln)
	status, _, _ = tryDoAuth(base, scimToken, "POST", "/Users", `{"userName":"grace@example.com","emails":[{"value":"grace@example.com","type":"work"}]}`)
	if status != 201 {
		t.Fatalf("second create: %d", status)
	}
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(cli("dead-letters", "list"), "user.created") {
		if time.Now().After(deadline) {
			t.Fatalf("no dead letter:\n%s\n%s", cli("status"), served.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st := cli("status"); !regexp.MustCompile(`default\s+active\s+0\s+\S+\s+1\s`).MatchString(st) {
		t.Errorf("status does not show one dead letter:\n%s", st)
	}
	refuse.Close()

	// The app is fixed: replay delivers it.
	_, heard = start("listen")
	waitOutput(t, heard, "listening on", 10*time.Second)
	if out := cli("dead-letters", "replay", "--all"); !strings.Contains(out, "replayed 1") {
		t.Errorf("replay: %s", out)
	}
	waitOutput(t, heard, "grace@example.com", 15*time.Second)
	t.Logf("listen printed:\n%s", heard.String())
	sc := bufio.NewScanner(strings.NewReader(cli("dead-letters", "list")))
	for sc.Scan() {
		if strings.Contains(sc.Text(), "user.created") {
			t.Errorf("dead letter still listed after replay: %s", sc.Text())
		}
	}
}

func waitReady(t *testing.T, admin string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if status, _, err := tryDo(admin, "GET", "/readyz", ""); err == nil && status == 200 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("gateway not ready")
}
