//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// openPTY returns a pseudo-terminal: what is written to tty is read from
// pty.
func openPTY(t *testing.T) (pty, tty *os.File) {
	t.Helper()
	pty, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(pty.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Skipf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetInt(int(pty.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Skipf("ptsname: %v", err)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("open pts: %v", err)
	}
	t.Cleanup(func() { tty.Close(); pty.Close() })
	if _, err := term.MakeRaw(int(tty.Fd())); err != nil { // no \n → \r\n translation
		t.Skipf("raw mode: %v", err)
	}
	return pty, tty
}

// slowBackup is an admin API whose backup takes about a second.
func slowBackup(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/admin/backup" {
			http.NotFound(w, r)
			return
		}
		chunk := bytes.Repeat([]byte{0}, 64<<10)
		w.Header().Set("Content-Length", fmt.Sprint(40*len(chunk)))
		for range 40 {
			w.Write(chunk)
			w.(http.Flusher).Flush()
			time.Sleep(25 * time.Millisecond)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// Progress is redrawn with \r on a terminal and never written that way
// elsewhere (a CronJob's log would be one run-on line).
func TestBackupProgressOnlyOnATerminal(t *testing.T) {
	srv := slowBackup(t)
	env := fixedEnv("SCIMGATE_ADMIN_TOKEN", "t")
	pty, tty := openPTY(t)
	var got bytes.Buffer
	var wg sync.WaitGroup
	wg.Go(func() { io.Copy(&got, pty) })
	file := filepath.Join(t.TempDir(), "b.db")
	err := run(context.Background(), []string{"backup", file, "--admin", srv.URL}, env, strings.NewReader(""), tty, tty)
	if err != nil {
		t.Fatal(err)
	}
	tty.Close()
	pty.SetReadDeadline(time.Now().Add(time.Second))
	wg.Wait()
	out := got.String()
	redraws := regexp.MustCompile(`\r\d+ / 2621440 bytes \(\d+%\)`).FindAllString(out, -1)
	if len(redraws) < 3 || !strings.Contains(out, "backup written to") {
		t.Errorf("terminal output has no redrawn progress: %q", out)
	}
	// The same to a file: plain lines only.
	logFile, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	if err := run(context.Background(), []string{"backup", file, "--admin", srv.URL}, env, strings.NewReader(""), logFile, logFile); err != nil {
		t.Fatal(err)
	}
	logFile.Close()
	b, _ := os.ReadFile(logFile.Name())
	if bytes.ContainsRune(b, '\r') || !bytes.HasSuffix(b, []byte("\n")) || !bytes.Contains(b, []byte("backup written to")) {
		t.Errorf("log output: %q", b)
	}
}
