package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// TestDocsCommandLines runs every command line that README.md and
// docs/*.md show, literally, against a running gateway, so that the docs
// cannot drift from the program again. The convention, which the
// docs follow:
//
//   - A command line is a line of a ```sh, ```bash or ```shell block. A
//     line ending in "\" continues on the next; blank lines and lines that
//     start with # are skipped.
//   - Each file runs in a scratch directory of its own that mirrors the
//     repository (a symlink to each top-level entry, so `go run
//     ./cmd/scimgate` and `examples/cybsafe.yaml` work) and holds the
//     fixtures config.yaml (a copy of config.example.yaml), user.json and
//     group.json (an Okta-shaped User and Group). Its lines run in order,
//     each as `bash -euo pipefail -c LINE`, and must exit 0 within 60 s.
//   - PATH starts with GOBIN (where `go install ./cmd/scimgate` puts the
//     binary) and then the scimgate this test built. No SCIMGATE_*
//     variable is set unless listed here, so the defaults apply (the data
//     in ./data), except the documented ports: the quick start's own
//     gateway may be running on them while the tests run (README), so the
//     test takes three free ports and moves the defaults there —
//     SCIMGATE_LISTEN, SCIMGATE_ADMIN_LISTEN and SCIMGATE_WEBHOOK_URL are
//     set to them, and ":8080", ":8081" and ":9000" in a line are
//     rewritten to them before it runs. To prove it, the test holds the
//     documented ports itself while it runs, when they are free.
//   - `serve` and `listen` (as `scimgate …` or `go run ./cmd/scimgate …`)
//     start in the background; the next line runs once they say they are
//     up; they are stopped (SIGINT) when the file is done.
//   - A file that does not start `serve` itself gets a gateway started by
//     the test before its first line, with two dead letters in target
//     default (its events were refused while the test's receiver was on
//     the receiver's port; then the port is free again).
//   - Prepared variables: TOKEN, the SCIM bearer token serve printed on
//     first start; SCIMGATE_ADMIN_TOKEN, the admin token it printed;
//     EVENT_ID and EVENT_ID_2, the two dead letters' ids (in files whose
//     gateway the test started). A line `export NAME=…` (the value is
//     literally "…", and a comment says what to paste) stands for the reader
//     pasting that value: it is not run, and NAME must be one of these.
//   - Lines that cannot run here are checked another way (notRunnable):
//     `docker build` (the Dockerfile's build line is what
//     .ci/docker-build-steps.sh runs), `docker run`, `docker compose`,
//     `kubectl` and `helm` (the files and paths they name exist; the
//     variables they pass are ones scimgate reads), and `go test` (the test
//     suite itself, or benchmarks: the packages exist and their -run and
//     -bench patterns match test functions).
//   - An inline code span `scimgate …` in prose must name a command, flags
//     and arguments the CLI accepts (parsed, not run).
//
// A failure names the file, the line, the command and its output. Lines
// known to fail, with the reason, are in testdata/docs-known-failures.txt
// (file, a tab, the command as written); the test fails when one of them
// passes, so that the list shrinks as the docs are fixed.
func TestDocsCommandLines(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the docs against the binary")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	files = append([]string{filepath.Join(root, "README.md")}, files...)
	// Beside a running quick-start gateway: the documented ports are taken
	// (by it, or here by the test) and the docs run on free ones.
	for _, p := range []string{"127.0.0.1:8080", "127.0.0.1:8081", "127.0.0.1:9000"} {
		if l, err := net.Listen("tcp", p); err == nil {
			defer l.Close()
		}
	}
	setDocPorts(t)
	known := readKnownFailures(t, "testdata/docs-known-failures.txt")
	bin := buildBinary(t)
	seen := map[string]bool{}
	total := 0
	for _, file := range files {
		rel, _ := filepath.Rel(root, file)
		lines, spans := docCommands(t, file)
		total += len(lines) + len(spans)
		for _, sp := range spans {
			checkOutcome(t, known, seen, rel, sp.line, sp.cmd, checkSpan(sp.cmd))
		}
		if len(lines) == 0 {
			continue
		}
		t.Run(rel, func(t *testing.T) {
			d := newDocRun(t, root, bin)
			defer d.stopAll()
			if !startsServe(lines) {
				d.prepareGateway()
			}
			for _, l := range lines {
				checkOutcome(t, known, seen, rel, l.line, l.cmd, d.run(l))
			}
		})
	}
	for key, reason := range known {
		if !seen[key] {
			t.Errorf("testdata/docs-known-failures.txt lists a line no doc shows any more (remove it): %s (%s)", key, reason)
		}
	}
	t.Logf("%d command lines and code spans in %d files", total, len(files))
}

// checkOutcome reports a failure unless it is known, and a known failure
// that passes.
func checkOutcome(t *testing.T, known map[string]string, seen map[string]bool, file string, line int, cmd string, err error) {
	t.Helper()
	key := file + "\t" + cmd
	seen[key] = true
	reason, isKnown := known[key]
	switch {
	case err != nil && !isKnown:
		t.Errorf("%s:%d: %s\n%v", file, line, cmd, err)
	case err == nil && isKnown:
		t.Errorf("%s:%d: %s passes now: remove it from testdata/docs-known-failures.txt (%s)", file, line, cmd, reason)
	}
}

// docLine is one command line of a doc.
type docLine struct {
	line int // of its first physical line
	cmd  string
}

var (
	fenceRe = regexp.MustCompile("^\\s*```\\s*(\\S*)")
	spanRe  = regexp.MustCompile("`(scimgate [^`]+)`")
)

// docCommands returns the command lines of the shell blocks and the
// inline `scimgate …` spans outside blocks.
func docCommands(t *testing.T, file string) (lines, spans []docLine) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var inBlock, shell bool
	var cur *docLine
	for n := 1; sc.Scan(); n++ {
		text := sc.Text()
		if m := fenceRe.FindStringSubmatch(text); m != nil {
			if inBlock {
				inBlock, shell = false, false
			} else {
				inBlock = true
				shell = m[1] == "sh" || m[1] == "bash" || m[1] == "shell"
			}
			continue
		}
		if !inBlock {
			for _, m := range spanRe.FindAllStringSubmatch(text, -1) {
				spans = append(spans, docLine{line: n, cmd: m[1]})
			}
			continue
		}
		if !shell {
			continue
		}
		trimmed := strings.TrimSpace(text)
		if cur == nil && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if cur == nil {
			cur = &docLine{line: n}
		} else {
			cur.cmd += "\n"
		}
		cur.cmd += text
		if !strings.HasSuffix(text, "\\") && !openQuote(cur.cmd) {
			cur.cmd = strings.TrimSpace(cur.cmd)
			lines = append(lines, *cur)
			cur = nil
		}
	}
	return lines, spans
}

// openQuote reports whether s ends inside a quoted string (the command
// continues on the next line, as in a multi-line -d '…').
func openQuote(s string) bool {
	var quote rune
	comment := false
	prev := ' '
	for _, r := range s {
		switch {
		case comment: // a # comment runs to the end of its line
			comment = r != '\n'
		case quote != 0 && r == quote:
			quote = 0
		case quote == 0 && (r == '\'' || r == '"'):
			quote = r
		case quote == 0 && r == '#' && (prev == ' ' || prev == '\t'):
			comment = true
		}
		prev = r
	}
	return quote != 0
}

func readKnownFailures(t *testing.T, path string) map[string]string {
	t.Helper()
	out := map[string]string{}
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return out
	} else if err != nil {
		t.Fatal(err)
	}
	for n, line := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		// file \t command \t reason
		parts := strings.SplitN(line, "\t", 3)
		if len(parts) != 3 {
			t.Fatalf("%s:%d: want file, a tab, the command, a tab, the reason", path, n+1)
		}
		out[parts[0]+"\t"+parts[1]] = parts[2]
	}
	return out
}

// words splits a command line as the shell would for these simple lines:
// on blanks, with quotes removed and comments dropped.
func words(s string) []string {
	var out []string
	var cur strings.Builder
	var quote rune
	has, depth := false, 0
	rs := []rune(s)
	for i, r := range rs {
		switch {
		case r == 0: // consumed
		case depth > 0: // inside $( … ): one word with the rest
			cur.WriteRune(r)
			if r == '(' {
				depth++
			} else if r == ')' {
				depth--
			}
		case quote == 0 && r == '$' && i+1 < len(rs) && rs[i+1] == '(':
			cur.WriteRune(r)
			has = true
			depth = 1
			cur.WriteRune('(')
			rs[i+1] = 0
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '\'' || r == '"':
			quote, has = r, true
		case r == '#' && !has && cur.Len() == 0:
			return out
		case r == ' ' || r == '\t' || r == '\n' || r == '\\':
			if has || cur.Len() > 0 {
				out = append(out, cur.String())
				cur.Reset()
				has = false
			}
		default:
			cur.WriteRune(r)
			has = true
		}
	}
	if has || cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

// scimgateArgs returns the arguments of a scimgate invocation (`scimgate
// …`, `bin/scimgate …` or `go run ./cmd/scimgate …`), or nil.
func scimgateArgs(cmd string) []string {
	w := words(cmd)
	for i, a := range w { // the shell's redirections and pipes are not arguments
		if a == "|" || a == "&&" || a == ";" || strings.HasPrefix(a, "<") || strings.HasPrefix(a, ">") || strings.HasPrefix(a, "2>") {
			w = w[:i]
			break
		}
	}
	for len(w) > 0 && strings.Contains(w[0], "=") && !strings.HasPrefix(w[0], "-") { // VAR=value prefixes
		w = w[1:]
	}
	switch {
	case len(w) > 0 && (w[0] == "scimgate" || strings.HasSuffix(w[0], "/scimgate")):
		return w[1:]
	case len(w) > 2 && w[0] == "go" && w[1] == "run" && w[2] == "./cmd/scimgate":
		return w[3:]
	}
	return nil
}

// checkSpan parses an inline `scimgate …` with the real command tree.
func checkSpan(span string) error {
	args := scimgateArgs(span)
	if args == nil {
		return fmt.Errorf("not a scimgate command line")
	}
	root := (&cli{getenv: fixedEnv()}).rootCommand()
	cmd, rest, err := root.Find(args)
	if err != nil {
		return err
	}
	if err := cmd.ParseFlags(rest); errors.Is(err, pflag.ErrHelp) {
		return nil
	} else if err != nil {
		return fmt.Errorf("%s: %v", cmd.CommandPath(), err)
	}
	if cmd.Args != nil {
		if err := cmd.Args(cmd, cmd.Flags().Args()); err != nil {
			return err
		}
	}
	if cmd == root && len(cmd.Flags().Args()) > 0 {
		return fmt.Errorf("no command %q", cmd.Flags().Args()[0])
	}
	return nil
}

// startsServe reports whether the lines start the gateway themselves.
func startsServe(lines []docLine) bool {
	for _, l := range lines {
		if a := scimgateArgs(l.cmd); len(a) > 0 && a[0] == "serve" {
			return true
		}
	}
	return false
}

// ---- one doc's run ----

type docRun struct {
	t       *testing.T
	root    string // the repository
	dir     string // scratch
	env     []string
	vars    map[string]string // prepared variables
	bg      []*bgProc
	adminOK bool
}

type bgProc struct {
	what string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

// docPorts maps each documented default port to the free one the test
// runs the docs on.
var docPorts map[string]string

// docAddr is a documented address with its port moved (docPorts).
func docAddr(addr string) string { return docPortRe.ReplaceAllStringFunc(addr, movePort) }

var docPortRe = regexp.MustCompile(`:(8080|8081|9000)\b`)

func movePort(m string) string {
	if p, ok := docPorts[m[1:]]; ok {
		return ":" + p
	}
	return m
}

// setDocPorts picks the free ports the docs run on.
func setDocPorts(t *testing.T) {
	docPorts = map[string]string{}
	for _, def := range []string{"8080", "8081", "9000"} {
		_, port, _ := net.SplitHostPort(freePort(t))
		docPorts[def] = port
	}
}

func newDocRun(t *testing.T, root, bin string) *docRun {
	t.Helper()
	var ports []string
	for _, p := range docPorts {
		ports = append(ports, "127.0.0.1:"+p)
	}
	if err := waitPortsFree(ports, 10*time.Second); err != nil {
		t.Fatal(err) // freed by the previous file's processes, or held by someone else
	}
	dir := t.TempDir()
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() == ".git" || e.Name() == "data" || e.Name() == "bin" {
			continue
		}
		if err := os.Symlink(filepath.Join(root, e.Name()), filepath.Join(dir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	cfg, _ := os.ReadFile(filepath.Join(root, "config.example.yaml"))
	os.WriteFile(filepath.Join(dir, "config.yaml"), cfg, 0o600)
	os.WriteFile(filepath.Join(dir, "user.json"), []byte(docUserJSON), 0o600)
	os.WriteFile(filepath.Join(dir, "group.json"), []byte(docGroupJSON), 0o600)
	gobin := filepath.Join(dir, ".gobin")
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SCIMGATE_") && !strings.HasPrefix(kv, "PATH=") && !strings.HasPrefix(kv, "GOFLAGS=") &&
			!strings.HasPrefix(kv, "GOBIN=") && !strings.HasPrefix(kv, "TOKEN=") {
			env = append(env, kv)
		}
	}
	// The same build flags as buildBinary, so that `go run` and `go
	// install` find the packages in the build cache.
	env = append(env, "PATH="+gobin+":"+filepath.Dir(bin)+":"+os.Getenv("PATH"), "GOBIN="+gobin,
		"GOFLAGS=-trimpath", "CGO_ENABLED=0", "GOPROXY=off",
		"SCIMGATE_LISTEN="+docAddr(defaultListen), "SCIMGATE_ADMIN_LISTEN="+docAddr(defaultAdminListen),
		"SCIMGATE_WEBHOOK_URL="+docAddr("http://127.0.0.1:9000/hooks"))
	return &docRun{t: t, root: root, dir: dir, env: env, vars: map[string]string{}}
}

func waitPortsFree(ports []string, max time.Duration) error {
	deadline := time.Now().Add(max)
	for _, p := range ports {
		for {
			l, err := net.Listen("tcp", p)
			if err == nil {
				l.Close()
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s is in use: the docs test runs the gateway on the documented default ports (is a scimgate running?)", p)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return nil
}

func (d *docRun) environ() []string {
	env := append([]string{}, d.env...)
	for k, v := range d.vars {
		env = append(env, k+"="+v)
	}
	return env
}

// run runs one command line as the convention says.
func (d *docRun) run(l docLine) error {
	w := words(l.cmd)
	if len(w) == 0 {
		return nil
	}
	if m := regexp.MustCompile(`^export ([A-Z_][A-Z0-9_]*)=…(\s|$)`).FindStringSubmatch(l.cmd); m != nil {
		if _, ok := d.vars[m[1]]; !ok {
			return fmt.Errorf("%s is not a prepared variable here (prepared: %s)", m[1], strings.Join(sortedKeys(d.vars), ", "))
		}
		return nil
	}
	if err, checked := notRunnable(d.root, w, l.cmd); checked {
		return err
	}
	if a := scimgateArgs(l.cmd); len(a) > 0 && (a[0] == "serve" || a[0] == "listen") {
		return d.background(l, a[0])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", docAddr(l.cmd))
	cmd.Dir, cmd.Env = d.dir, d.environ()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v\n%s%s", err, truncate(string(out), 3000), d.bgOutput())
	}
	return nil
}

// tail is the end of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// background starts serve or listen and waits until it is up.
func (d *docRun) background(l docLine, verb string) error {
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", "exec "+docAddr(l.cmd))
	cmd.Dir, cmd.Env = d.dir, d.environ()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // go run's child gets the signal too
	p := &bgProc{what: l.cmd, cmd: cmd, out: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() { cmd.Wait(); close(p.done) }()
	d.bg = append(d.bg, p)
	ready := map[string]string{"serve": "scimgate started", "listen": "listening on"}[verb]
	deadline := time.After(90 * time.Second) // go run may compile
	for !strings.Contains(p.out.String(), ready) {
		select {
		case <-p.done:
			return fmt.Errorf("exited before it was up:\n%s", truncate(p.out.String(), 3000))
		case <-deadline:
			return fmt.Errorf("not up after 90 s:\n%s", truncate(p.out.String(), 3000))
		case <-time.After(50 * time.Millisecond):
		}
	}
	if verb == "serve" {
		d.takeTokens(p.out.String())
	}
	return nil
}

var generatedRe = regexp.MustCompile(`Generated (SCIM bearer token|admin token)[^\n]*\n\n\s{4}(\S+)`)

// takeTokens sets TOKEN and SCIMGATE_ADMIN_TOKEN from what serve printed.
func (d *docRun) takeTokens(out string) {
	for _, m := range generatedRe.FindAllStringSubmatch(out, -1) {
		if m[1] == "SCIM bearer token" {
			d.vars["TOKEN"] = m[2]
		} else {
			d.vars["SCIMGATE_ADMIN_TOKEN"] = m[2]
		}
	}
}

func (d *docRun) bgOutput() string {
	var b strings.Builder
	for _, p := range d.bg {
		fmt.Fprintf(&b, "\n--- the end of the output of `%s`:\n%s", p.what, tail(p.out.String(), 1500))
	}
	return b.String()
}

func (d *docRun) stopAll() {
	for i := len(d.bg) - 1; i >= 0; i-- {
		p := d.bg[i]
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGINT)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	}
	d.bg = nil
}

// prepareGateway starts the gateway for a doc that does not start one,
// with two dead letters in target default.
func (d *docRun) prepareGateway() {
	t := d.t
	t.Helper()
	refuse := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		http.Error(w, `{"error":"refused while the docs test prepares dead letters"}`, http.StatusBadRequest)
	})}
	ln, err := net.Listen("tcp", docAddr("127.0.0.1:9000"))
	if err != nil {
		t.Fatal(err)
	}
	go refuse.Serve(ln)
	defer refuse.Close()
	if err := d.background(docLine{cmd: "scimgate serve"}, "serve"); err != nil {
		t.Fatalf("the test's gateway: %v", err)
	}
	for _, u := range []string{"dead.letter@example.com", "dead.letter.2@example.com"} {
		status, body, err := tryDoAuth(docAddr("http://127.0.0.1:8080/scim/v2"), d.vars["TOKEN"], "POST", "/Users", fmt.Sprintf(`{"userName":%q}`, u))
		if err != nil || status != 201 {
			t.Fatalf("prepare a dead letter: %d %v %v", status, body, err)
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		ids := d.deadLetterIDs()
		if len(ids) >= 2 {
			d.vars["EVENT_ID"], d.vars["EVENT_ID_2"] = ids[0], ids[1]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no dead letters prepared:%s", d.bgOutput())
		}
		time.Sleep(100 * time.Millisecond)
	}
	refuse.Close()
}

func (d *docRun) deadLetterIDs() []string {
	req, _ := http.NewRequest("GET", docAddr("http://127.0.0.1:8081/admin/targets/default/dead-letters"), nil)
	req.Header.Set("Authorization", "Bearer "+d.vars["SCIMGATE_ADMIN_TOKEN"])
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var out struct {
		DeadLetters []struct {
			Event struct {
				ID string `json:"id"`
			} `json:"event"`
		} `json:"dead_letters"`
	}
	json.NewDecoder(resp.Body).Decode(&out)
	var ids []string
	for _, dl := range out.DeadLetters {
		ids = append(ids, dl.Event.ID)
	}
	return ids
}

func sortedKeys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ---- lines that cannot run here ----

// notRunnable checks the lines this machine cannot run (no Docker engine,
// no cluster) or that must not run inside the tests (the test suite,
// benchmarks); checked reports whether the line was one of them.
func notRunnable(root string, w []string, line string) (err error, checked bool) {
	switch {
	case w[0] == "docker" && len(w) > 1 && w[1] == "build":
		// .ci/docker-build-steps.sh runs the Dockerfile's build line.
		df, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
		if err != nil {
			return err, true
		}
		steps, err := os.ReadFile(filepath.Join(root, ".ci", "docker-build-steps.sh"))
		if err != nil {
			return err, true
		}
		if !regexp.MustCompile(`CGO_ENABLED=0 .*go build `).Match(df) || !strings.Contains(string(steps), "Dockerfile") {
			return fmt.Errorf("the Dockerfile's build line is not the one .ci/docker-build-steps.sh runs"), true
		}
		return nil, true
	case w[0] == "docker" || w[0] == "docker-compose" || w[0] == "kubectl" || w[0] == "helm":
		return checkNamedPathsAndVars(root, w), true
	case w[0] == "nats" || w[0] == "kcat":
		// The brokers' own clients (no broker here; outbox's stream tests
		// run real ones in process): the stream or topic they name is the
		// one the examples configure.
		return checkStreamNames(root, w), true
	case w[0] == "go" && len(w) > 1 && w[1] == "test":
		return checkGoTest(root, w), true
	case strings.Contains(w[0], "="): // VAR=1 [VAR=2 …] go test …
		i := 0
		for i < len(w) && strings.Contains(w[i], "=") && !strings.HasPrefix(w[i], "-") {
			i++
		}
		if i+1 < len(w) && w[i] == "go" && w[i+1] == "test" {
			return checkGoTest(root, w[i:]), true
		}
	case w[0] == "scimload":
		// A load run of minutes against a gateway on the default ports:
		// its flags are the ones scimload defines.
		return checkScimloadFlags(root, w), true
	}
	return nil, false
}

// checkScimloadFlags builds cmd/scimload and checks that every flag the line
// passes is one its -h lists.
func checkScimloadFlags(root string, w []string) error {
	bin := filepath.Join(os.TempDir(), "scimload-docs-check")
	build := exec.Command("go", "build", "-o", bin, "./cmd/scimload")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("cmd/scimload does not build: %v\n%s", err, out)
	}
	help, _ := exec.Command(bin, "-h").CombinedOutput()
	for _, a := range w[1:] {
		if !strings.HasPrefix(a, "-") {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !regexp.MustCompile(`(?m)^\s+-` + regexp.QuoteMeta(name) + `\b`).Match(help) {
			return fmt.Errorf("scimload has no flag -%s", name)
		}
	}
	return nil
}

// checkNamedPathsAndVars: paths a docker/kubectl/helm line names exist,
// and the SCIMGATE_ variables it passes are ones scimgate reads.
func checkNamedPathsAndVars(root string, w []string) error {
	known := knownVariables()
	for i, a := range w {
		if name, _, ok := strings.Cut(a, "="); ok && strings.HasPrefix(name, "SCIMGATE_") && i > 0 && w[i-1] == "-e" {
			if !known[name] {
				return fmt.Errorf("%s is not a variable scimgate reads", name)
			}
		}
		if strings.HasPrefix(a, "-") || strings.Contains(a, "://") || strings.Contains(a, "=") || strings.Contains(a, ":") {
			continue
		}
		if w[0] == "kubectl" && strings.HasPrefix(a, "deploy/") {
			continue // a Deployment (kubectl's deploy/NAME), not a path; deploy/check renders these
		}
		if strings.HasPrefix(a, "./") || strings.HasPrefix(a, "deploy/") || strings.HasSuffix(a, ".yaml") || strings.HasSuffix(a, ".yml") {
			if _, err := os.Stat(filepath.Join(root, a)); err != nil {
				return fmt.Errorf("%s does not exist in the repository", a)
			}
		}
	}
	return nil
}

// checkStreamNames: a nats line names the stream examples/nats.yaml
// creates, a kcat line the topic of examples/kafka.yaml.
func checkStreamNames(root string, w []string) error {
	file, want := "examples/nats.yaml", "SCIMGATE"
	if w[0] == "kcat" {
		file, want = "examples/kafka.yaml", "scimgate-events"
	}
	ex, err := os.ReadFile(filepath.Join(root, file))
	if err != nil {
		return err
	}
	line := strings.Join(w, " ")
	if !strings.Contains(line, want) && !strings.Contains(line, "scimgate.") {
		return fmt.Errorf("names neither %s nor a scimgate.> subject", want)
	}
	if !strings.Contains(string(ex), want) {
		return fmt.Errorf("%s does not configure %s", file, want)
	}
	return nil
}

// knownVariables are the environment variables the configuration reads.
func knownVariables() map[string]bool {
	known := map[string]bool{"SCIMGATE_CONFIG": true}
	DefaultConfig(func(name string) string {
		known[name], known[name+"_FILE"] = true, true
		return ""
	})
	return known
}

var testFuncRe = regexp.MustCompile(`(?m)^func ((Test|Benchmark|Fuzz)\w*)\(`)

// checkGoTest: the packages exist and -run/-bench patterns match.
func checkGoTest(root string, w []string) error {
	var run, bench string
	var pkgs []string
	for i := 2; i < len(w); i++ {
		switch a := w[i]; {
		case a == "-run" && i+1 < len(w):
			run, i = w[i+1], i+1
		case a == "-bench" && i+1 < len(w):
			bench, i = w[i+1], i+1
		case strings.HasPrefix(a, "-run="):
			run = strings.TrimPrefix(a, "-run=")
		case strings.HasPrefix(a, "-bench="):
			bench = strings.TrimPrefix(a, "-bench=")
		case strings.HasPrefix(a, "-"):
			if (a == "-benchtime" || a == "-count" || a == "-timeout" || a == "-fuzztime" || a == "-fuzz") && i+1 < len(w) {
				i++
			}
		case strings.HasPrefix(a, "./"):
			pkgs = append(pkgs, a)
		}
	}
	if len(pkgs) == 0 {
		return fmt.Errorf("no package")
	}
	var funcs []string
	for _, p := range pkgs {
		dir := filepath.Join(root, strings.TrimSuffix(strings.TrimSuffix(p, "..."), "/"))
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			return fmt.Errorf("package %s does not exist", p)
		}
		if strings.HasSuffix(p, "...") {
			continue
		}
		srcs, _ := filepath.Glob(filepath.Join(dir, "*_test.go"))
		for _, s := range srcs {
			b, _ := os.ReadFile(s)
			for _, m := range testFuncRe.FindAllStringSubmatch(string(b), -1) {
				funcs = append(funcs, m[1])
			}
		}
	}
	match := func(flag, pattern, prefix string) error {
		if pattern == "" || pattern == "^$" || strings.HasSuffix(pkgs[0], "...") {
			return nil
		}
		re, err := regexp.Compile(strings.SplitN(pattern, "/", 2)[0])
		if err != nil {
			return fmt.Errorf("%s %q: %v", flag, pattern, err)
		}
		for _, f := range funcs {
			if strings.HasPrefix(f, prefix) && re.MatchString(f) {
				return nil
			}
		}
		return fmt.Errorf("%s %q matches no %s function in %s", flag, pattern, prefix, strings.Join(pkgs, " "))
	}
	if err := match("-run", run, "Test"); err != nil {
		return err
	}
	return match("-bench", bench, "Benchmark")
}

// The fixtures: what Okta sends for a user and a group.
const docUserJSON = `{
  "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
  "userName": "ada@example.com",
  "name": {"givenName": "Ada", "familyName": "Lovelace"},
  "emails": [{"value": "ada@example.com", "type": "work", "primary": true}],
  "displayName": "Ada Lovelace",
  "active": true
}
`

const docGroupJSON = `{
  "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
  "displayName": "Engineering",
  "members": []
}
`

// The convention's parsing, on the shapes the docs use.
func TestDocsConventionParsing(t *testing.T) {
	for in, want := range map[string]string{
		`scimgate dead-letters show "$EVENT_ID" --target default   # with the answer`:    `scimgate|dead-letters|show|$EVENT_ID|--target|default`,
		`SCIMGATE_CRASH_CYCLES=20 go test -run TestCrashLosesNothing -v ./cmd/scimgate/`: `SCIMGATE_CRASH_CYCLES=20|go|test|-run|TestCrashLosesNothing|-v|./cmd/scimgate/`,
		"curl -s -X POST http://x \\\n  -H 'A: b c'":                                     `curl|-s|-X|POST|http://x|-H|A: b c`,
		"scimgate backup scimgate-$(date +%F).db":                                        `scimgate|backup|scimgate-$(date +%F).db`,
	} {
		if got := strings.Join(words(in), "|"); got != want {
			t.Errorf("words(%q) = %q, want %q", in, got, want)
		}
	}
	for span, ok := range map[string]bool{
		"scimgate backup FILE": true, "scimgate map --config FILE user.json": true, "scimgate status": true,
		"scimgate dead-letters list": true, "scimgate nosuch": false, "scimgate status --nosuch": false,
		"scimgate backup": false, "scimgate replay evt_1": false, "scimgate status --help": true, "scimgate --help": true,
	} {
		if err := checkSpan(span); (err == nil) != ok {
			t.Errorf("checkSpan(%q) = %v", span, err)
		}
	}
	if openQuote("scimgate dead-letters show x   # the app's answer") || !openQuote("curl -d '{\"a\":") {
		t.Error("openQuote")
	}
	if a := scimgateArgs("go run ./cmd/scimgate serve     # the gateway"); strings.Join(a, " ") != "serve" {
		t.Errorf("scimgateArgs(go run) = %q", a)
	}
	if err := checkGoTest("../..", words("go test -run '^$' -bench 'NoSuchBench' ./gateway/")); err == nil {
		t.Error("a -bench matching nothing passed")
	}
	if err := checkGoTest("../..", words("go test -run TestCrashLosesNothing -v ./cmd/scimgate/")); err != nil {
		t.Error(err)
	}
}

// The harness on the lines a fixed docs/operations.md would show: the
// prepared dead letters, the background gateway and the checked lines
// work as the convention says.
func TestDocsHarness(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	root, _ := filepath.Abs("../..")
	doc := filepath.Join(t.TempDir(), "fixed.md")
	os.WriteFile(doc, []byte("# fixed\n\n```sh\n"+`export SCIMGATE_ADMIN_TOKEN=…   # the admin token serve printed
scimgate dead-letters list --target default        # id, type, attempts, last status and error
scimgate dead-letters show "$EVENT_ID" --target default
scimgate dead-letters replay "$EVENT_ID" --target default
scimgate dead-letters discard "$EVENT_ID_2" --target default
scimgate pause --target default --reason "the app's maintenance window"
scimgate resume --target default
scimgate backup scimgate-$(date +%F).db
scimgate status
docker build -t scimgate .
docker run -d -e SCIMGATE_SCIM_TOKEN="$SCIM_TOKEN" -e SCIMGATE_ADMIN_TOKEN_FILE=/run/secrets/admin scimgate
SCIMGATE_CRASH_CYCLES=20 go test -run TestCrashLosesNothing -v ./cmd/scimgate/
`+"```\n\nAnd `scimgate dead-letters replay --all` in prose.\n"), 0o600)
	lines, spans := docCommands(t, doc)
	if len(lines) != 12 || len(spans) != 1 {
		t.Fatalf("parsed %d lines and %d spans", len(lines), len(spans))
	}
	if err := checkSpan(spans[0].cmd); err != nil {
		t.Error(err)
	}
	setDocPorts(t)
	d := newDocRun(t, root, buildBinary(t))
	defer d.stopAll()
	d.prepareGateway()
	for _, l := range lines {
		if err := d.run(l); err != nil {
			t.Errorf("line %d: %s\n%v", l.line, l.cmd, err)
		}
	}
	// A wrong line fails, with its output; an unknown placeholder too.
	for _, bad := range []string{`scimgate dead-letters show evt_nosuch --target default`, `export SCIM_TOKEN=…`,
		`docker run -e SCIMGATE_NO_SUCH=1 scimgate`, `go test -run TestNoSuchTest ./cmd/scimgate/`} {
		if err := d.run(docLine{cmd: bad}); err == nil {
			t.Errorf("%s passed", bad)
		}
	}
}

// the image context leaves out the secrets the docs make
// (deploy/secrets/), the Dockerfile cites only documents in the repo, and
// every variable row of README's environment table is inside the table.
func TestPackagingHygiene(t *testing.T) {
	root := filepath.Join("..", "..")
	ignore, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	excluded := false
	for _, l := range strings.Split(string(ignore), "\n") {
		switch strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(l), "/"), "/") {
		case "deploy/secrets", "deploy/secrets/*", "deploy/secrets/**", "**/secrets":
			excluded = true
		}
	}
	if !excluded {
		t.Errorf(".dockerignore does not exclude deploy/secrets/, where docs/operations.md creates the secrets:\n%s", ignore)
	}
	df, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`[\w./-]+\.md\b`).FindAllString(string(df), -1) {
		if _, err := os.Stat(filepath.Join(root, m)); err != nil {
			t.Errorf("the Dockerfile cites %s, which is not in the repo", m)
		}
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(readme), "\n")
	inTable := false
	for i, l := range lines {
		row := strings.HasPrefix(l, "| `SCIMGATE_")
		if row && !inTable {
			t.Errorf("README.md:%d: %q sits outside the environment table", i+1, l)
		}
		inTable = strings.HasPrefix(l, "|") && (inTable || strings.HasPrefix(l, "| variable") || strings.HasPrefix(l, "|---"))
		if strings.HasPrefix(l, "| variable") {
			inTable = true
		}
	}
}
