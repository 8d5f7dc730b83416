//go:build linux

package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/scimgate/scimgate/outbox"
)

// `scimgate status --watch` through the real binary: to a pipe, refreshes
// follow one another, each after a line with its time and without escape
// codes; on a terminal, each clears the screen and draws at the top. Both
// stop on Ctrl-C (SIGINT) with exit status 0.
func TestStatusWatch(t *testing.T) {
	const adminToken = "admin-token-for-watch-0123456789ab"
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }))
	defer rcv.Close()
	secret, _ := outbox.NewSecret()
	bin := buildBinary(t)
	env := append(os.Environ(), "SCIMGATE_DATA_DIR="+t.TempDir(), "SCIMGATE_SCIM_TOKEN=scim-token-for-watch-0123456789abc",
		"SCIMGATE_ADMIN_TOKEN="+adminToken, "SCIMGATE_WEBHOOK_URL="+rcv.URL+"/hooks", "SCIMGATE_WEBHOOK_SECRET="+secret)
	g := startBinary(t, bin, env, freePort(t), freePort(t))
	defer g.kill()

	watch := func(t *testing.T, stdout *os.File, read io.Reader, marker string) string {
		cmd := exec.Command(bin, "status", "--watch", "--interval", "200ms", "--admin", g.admin)
		cmd.Env = append(os.Environ(), "SCIMGATE_ADMIN_TOKEN="+adminToken)
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		stdout.Close() // the child holds it
		var mu sync.Mutex
		var got bytes.Buffer
		go func() {
			buf := make([]byte, 4096)
			for {
				n, err := read.Read(buf)
				mu.Lock()
				got.Write(buf[:n])
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
		text := func() string { mu.Lock(); defer mu.Unlock(); return got.String() }
		deadline := time.Now().Add(10 * time.Second)
		for strings.Count(text(), marker) < 2 || strings.Count(text(), "TARGET") < 2 {
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("no two refreshes in 10 s:\n%q\nstderr: %s", text(), stderr.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Errorf("status --watch after Ctrl-C: %v, want exit status 0; stderr: %s", err, stderr.String())
		}
		return text()
	}

	t.Run("pipe", func(t *testing.T) {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		out := watch(t, w, r, "== scimgate status at ")
		if strings.Contains(out, "\x1b[") {
			t.Errorf("escape codes in piped output: %q", out)
		}
		if strings.Count(out, "users: 0 (0 active)") < 2 {
			t.Errorf("the refreshes lack the counts: %q", out)
		}
	})
	t.Run("terminal", func(t *testing.T) {
		pty, tty := openPTY(t)
		out := watch(t, tty, pty, "\x1b[H\x1b[2J")
		if !strings.Contains(out, "(Ctrl-C to stop)") {
			t.Errorf("no header on the terminal: %q", out)
		}
	})
}

// A zero interval is refused before anything is fetched.
func TestStatusWatchIntervalRefused(t *testing.T) {
	var out bytes.Buffer
	err := run(t.Context(), []string{"status", "--watch", "--interval", "0s", "--admin", "http://127.0.0.1:1"},
		fixedEnv("SCIMGATE_ADMIN_TOKEN", "t"), strings.NewReader(""), &out, &out)
	if err == nil || !strings.Contains(err.Error(), "--interval 0s: give a positive duration") {
		t.Errorf("status --watch --interval 0s = %v, want the interval refused", err)
	}
}
