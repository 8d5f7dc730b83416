package check

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
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

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// receiver is one verification program of docs/events.md, running.
type receiver struct {
	lang string
	port string
	out  *lineBuffer
}

// lineBuffer collects a process's output for a test to wait on.
type lineBuffer struct {
	mu   sync.Mutex
	b    bytes.Buffer
	done chan struct{} // closed when the process has exited
}

// exited reports whether the process has ended.
func (l *lineBuffer) exited() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

func (l *lineBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lineBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// wait waits until the output matches re and returns the match.
func (l *lineBuffer) wait(t *testing.T, re *regexp.Regexp, timeout time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(l.String()); m != nil {
			return m
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s in:\n%s", re, l.String())
	return nil
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// start runs a command until the test ends, its output in a lineBuffer.
func start(t *testing.T, dir string, env []string, name string, args ...string) *lineBuffer {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out := &lineBuffer{done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	go func() { cmd.Wait(); close(out.done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-out.done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-out.done
		}
	})
	return out
}

// waitListening waits until something accepts connections on the port.
func waitListening(t *testing.T, port string, out *lineBuffer, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, 200*time.Millisecond); err == nil {
			c.Close()
			return
		}
		if out.exited() {
			t.Fatalf("exited before listening on %s:\n%s", port, out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("nothing listens on %s after %s:\n%s", port, timeout, out.String())
}

func newSecret(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "whsec_" + base64.StdEncoding.EncodeToString(b)
}

// goSumLines returns this module's go.sum lines for one module path, so
// that the Go program builds from the module cache alone.
func goSumLines(t *testing.T, module string) string {
	t.Helper()
	b, err := os.ReadFile("go.sum")
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, module+" ") {
			out.WriteString(line + "\n")
		}
	}
	if out.Len() == 0 {
		t.Fatalf("go.sum has no %s", module)
	}
	return out.String()
}

// startReceiver writes a snippet to its own directory, prepares it as the
// page says (a Go module, npm install) and runs it on a free port.
func startReceiver(t *testing.T, s Snippet, secret string) receiver {
	t.Helper()
	dir := t.TempDir()
	port := freePort(t)
	env := []string{"SCIM_WEBHOOK_SECRET=" + secret, "PORT=" + port}
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var out *lineBuffer
	switch s.Lang {
	case "go":
		const mod = "github.com/standard-webhooks/standard-webhooks/libraries"
		write("main.go", s.Code)
		write("go.mod", "module receiver\n\ngo 1.22\n\nrequire "+mod+" v0.0.1\n")
		write("go.sum", goSumLines(t, mod))
		build := exec.Command("go", "build", "-o", "receiver", ".")
		build.Dir = dir
		build.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
		if b, err := build.CombinedOutput(); err != nil {
			t.Fatalf("docs/events.md:%d: the Go program does not build: %v\n%s", s.Line, err, b)
		}
		out = start(t, dir, env, filepath.Join(dir, "receiver"))
	case "python":
		write("receiver.py", s.Code)
		out = start(t, dir, env, "python3", "receiver.py")
	case "js":
		write("receiver.mjs", s.Code)
		npm := exec.Command("npm", "install", "--no-audit", "--no-fund", "--loglevel=error", "standardwebhooks@1")
		npm.Dir = dir
		if b, err := npm.CombinedOutput(); err != nil {
			t.Fatalf("npm install standardwebhooks: %v\n%s", err, b)
		}
		out = start(t, dir, env, "node", "receiver.mjs")
	default:
		t.Fatalf("docs/events.md:%d: a %q block in the signature section; CI runs go, python and js", s.Line, s.Lang)
	}
	waitListening(t, port, out, 60*time.Second)
	return receiver{lang: s.Lang, port: port, out: out}
}

// TestSignatureSnippets runs the Go, Python and Node programs of
// docs/events.md, copied literally, as the receivers of the real gateway
// binary, creates a user over SCIM, and checks each program verified the
// real event. The target signs with two secrets (a rotation in progress)
// and the programs know only the second. Then each program must refuse a
// tampered body, a foreign secret and a stale timestamp.
func TestSignatureSnippets(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the gateway and three receivers")
	}
	snippets, err := Snippets(filepath.Join(repo, "docs/events.md"), "Headers and signatures")
	if err != nil {
		t.Fatal(err)
	}
	var progs []Snippet
	for _, s := range snippets {
		if s.Lang != "" { // the header listing has no language
			progs = append(progs, s)
		}
	}
	var langs []string
	for _, s := range progs {
		langs = append(langs, s.Lang)
	}
	if got, want := strings.Join(langs, ","), "go,python,js"; got != want {
		t.Fatalf("signature section's programs = %s, want %s", got, want)
	}

	oldSecret, secret := newSecret(t), newSecret(t)
	var receivers []receiver
	for _, s := range progs {
		receivers = append(receivers, startReceiver(t, s, secret))
	}

	// The gateway: one webhook target per receiver.
	bin := gatewayBinary(t)
	dataDir := t.TempDir()
	scimPort, adminPort := freePort(t), freePort(t)
	var targets strings.Builder
	for _, r := range receivers {
		fmt.Fprintf(&targets, "    - name: %s\n      url: http://127.0.0.1:%s/scim-events\n      secrets: [\"${OLD_SECRET}\", \"${NEW_SECRET}\"]\n", r.lang, r.port)
	}
	config := fmt.Sprintf(`data_dir: %s
scim:
  listen: 127.0.0.1:%s
  auth: {bearer_tokens: ["${SCIM_TOKEN}"]}
admin:
  listen: 127.0.0.1:%s
  tokens: ["${ADMIN_TOKEN}"]
outbox:
  targets:
%s
mapping:
  user:
    - {to: login, from: userName, required: true}
    - {to: email, from: emails.value, type: email}
  group:
    - {to: name, from: displayName, required: true}
log: {level: info, format: text}
`, dataDir, scimPort, adminPort, targets.String())
	configFile := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(configFile, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	const scimToken, adminToken = "scim-token-for-the-snippet-test", "admin-token-for-the-snippet-test"
	gwEnv := []string{"OLD_SECRET=" + oldSecret, "NEW_SECRET=" + secret, "SCIM_TOKEN=" + scimToken, "ADMIN_TOKEN=" + adminToken}
	gwOut := start(t, t.TempDir(), gwEnv, bin, "serve", "--config", configFile)
	waitListening(t, scimPort, gwOut, 30*time.Second)

	body := `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ada@example.com",
	  "name":{"givenName":"Ada","familyName":"Lovelace"},"emails":[{"value":"ada@example.com","type":"work","primary":true}],"active":true}`
	req, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1:"+scimPort+"/scim/v2/Users", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+scimToken)
	req.Header.Set("Content-Type", "application/scim+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /Users = %d %s", resp.StatusCode, b)
	}

	verified := regexp.MustCompile(`verified (evt_\S+) user\.created sequence=(\d+)`)
	ids := map[string]string{}
	for _, r := range receivers {
		m := r.out.wait(t, verified, 30*time.Second)
		ids[r.lang] = m[1]
		if strings.Contains(r.out.String(), "rejected") {
			t.Errorf("%s receiver rejected a real delivery:\n%s", r.lang, r.out.String())
		}
	}
	// One event, one id, delivered to every target.
	if ids["go"] != ids["python"] || ids["go"] != ids["js"] {
		t.Errorf("event ids differ across receivers: %v", ids)
	}

	// The gateway counts each as delivered, none pending or dead.
	var st struct {
		Targets []struct {
			Name        string `json:"name"`
			Backlog     int    `json:"backlog"`
			DeadLetters int    `json:"dead_letters"`
			Delivered   uint64 `json:"delivered"`
		} `json:"targets"`
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		st.Targets = nil
		adminGet(t, adminPort, "/admin/status", adminToken, &st)
		done := len(st.Targets) == len(receivers)
		for _, tg := range st.Targets {
			done = done && tg.Delivered >= 1 && tg.Backlog == 0 && tg.DeadLetters == 0
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("targets not all delivered: %+v\n%s", st.Targets, gwOut.String())
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Forged deliveries: each program must refuse them with 401.
	payload := []byte(`{"id":"evt_forged","type":"user.created","occurred_at":"2026-11-23T09:10:02.511Z","sequence":1,"data":{"user":{"id":"x","version":1}}}`)
	good, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	foreign, _ := standardwebhooks.NewWebhook(newSecret(t))
	sign := func(wh *standardwebhooks.Webhook, at time.Time, p []byte) http.Header {
		sig, err := wh.Sign("evt_forged", at, p)
		if err != nil {
			t.Fatal(err)
		}
		return http.Header{"Webhook-Id": {"evt_forged"}, "Webhook-Timestamp": {fmt.Sprint(at.Unix())}, "Webhook-Signature": {sig}, "Content-Type": {"application/json"}}
	}
	tampered := bytes.Replace(payload, []byte(`"version":1`), []byte(`"version":9`), 1)
	cases := []struct {
		name   string
		header http.Header
		body   []byte
		want   int
	}{
		{"tampered body", sign(good, time.Now(), payload), tampered, http.StatusUnauthorized},
		{"foreign secret", sign(foreign, time.Now(), payload), payload, http.StatusUnauthorized},
		{"stale timestamp", sign(good, time.Now().Add(-10*time.Minute), payload), payload, http.StatusUnauthorized},
		{"no signature", http.Header{"Webhook-Id": {"evt_forged"}, "Webhook-Timestamp": {fmt.Sprint(time.Now().Unix())}}, payload, http.StatusUnauthorized},
		// And the control: the same request, correctly signed, is taken.
		{"genuine", sign(good, time.Now(), payload), payload, http.StatusNoContent},
	}
	for _, r := range receivers {
		for _, c := range cases {
			req, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1:"+r.port+"/scim-events", bytes.NewReader(c.body))
			req.Header = c.header.Clone()
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Errorf("%s, %s: %v", r.lang, c.name, err)
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.want {
				t.Errorf("%s receiver, %s: status %d, want %d", r.lang, c.name, resp.StatusCode, c.want)
			}
		}
		if got := strings.Count(r.out.String(), "rejected evt_forged"); got != 4 {
			t.Errorf("%s receiver printed %d rejections, want 4:\n%s", r.lang, got, r.out.String())
		}
	}
	t.Logf("event %s verified by the go, python and js programs of docs/events.md", ids["go"])

	// The alerts select series the gateway really exports.
	checkRuleMetrics(t, adminPort)
}

// adminGet decodes a JSON answer of the admin listener.
func adminGet(t *testing.T, port, path, token string, v any) {
	t.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, "http://127.0.0.1:"+port+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s = %d %s", path, resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

// exported lists the metric names of a Prometheus text exposition.
func exported(r io.Reader) map[string]bool {
	names := map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	return names
}
