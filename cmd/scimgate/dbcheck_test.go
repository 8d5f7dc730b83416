package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scimgate/scimgate/gateway/store"
)

// goodDatabase returns the path of a real gateway database with enough
// users and memberships for branch pages, overflow values and nested
// buckets, written by the gateway itself and closed. It is built once per
// test run; callers copy it.
func goodDatabase(t *testing.T) string {
	t.Helper()
	goodDBOnce.Do(func() { goodDBPath, goodDBErr = buildGoodDatabase(t) })
	if goodDBErr != nil {
		t.Fatal(goodDBErr)
	}
	return goodDBPath
}

var (
	goodDBOnce sync.Once
	goodDBPath string
	goodDBErr  error
)

// TestMain removes what the tests build once for the whole run.
func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	if goodDBPath != "" {
		os.RemoveAll(filepath.Dir(goodDBPath))
	}
	os.Exit(code)
}

func buildGoodDatabase(t *testing.T) (string, error) {
	dir, err := os.MkdirTemp("", "scimgate-gooddb")
	if err != nil {
		return "", err
	}
	cfg := DefaultConfig(testEnv(dir, "http://127.0.0.1:9/hooks", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))
	a := startAppCfg(t, cfg, appOptions{})
	base := "http://" + a.SCIMAddr() + "/scim/v2"
	long := strings.Repeat("x", 5000) // values longer than a page: overflow pages
	members := make([]string, 150)
	errs := make(chan error, len(members))
	var wg sync.WaitGroup
	for w := range 8 { // concurrent writers: group commit keeps this fast
		wg.Go(func() {
			for i := w; i < len(members); i += 8 {
				title := "Engineer"
				if i%10 == 0 {
					title = long
				}
				status, body, err := tryDo(base, "POST", "/Users", fmt.Sprintf(`{"userName":"u%03d@example.com","title":%q,"name":{"givenName":"G%d","familyName":"F"}}`, i, title, i))
				if err != nil || status != 201 {
					errs <- fmt.Errorf("create user: %d %v %v", status, body, err)
					return
				}
				members[i] = fmt.Sprintf(`{"value":%q}`, body["id"])
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		a.Close(context.Background())
		return "", err
	}
	if status, body, err := tryDo(base, "POST", "/Groups", `{"displayName":"Everyone","members":[`+strings.Join(members, ",")+`]}`); err != nil || status != 201 {
		a.Close(context.Background())
		return "", fmt.Errorf("create group: %d %v %v", status, body, err)
	}
	if err := a.Close(context.Background()); err != nil {
		return "", err
	}
	return filepath.Join(dir, dbFile), nil
}

// pageLayout is where the pages of a database file are.
type pageLayout struct {
	pageSize int
	hwm      int   // pages in use
	leaves   []int // page ids
	branches []int
}

func layoutOf(t *testing.T, path string) pageLayout {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, NoFreelistSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	l := pageLayout{pageSize: db.Info().PageSize}
	err = db.View(func(tx *bolt.Tx) error {
		l.hwm = int(tx.Size()) / l.pageSize
		for id := 2; ; {
			p, err := tx.Page(id)
			if err != nil || p == nil {
				return err
			}
			switch p.Type {
			case "leaf":
				l.leaves = append(l.leaves, id)
			case "branch":
				l.branches = append(l.branches, id)
			}
			id += 1 + p.OverflowCount
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(l.leaves) < 10 || len(l.branches) == 0 {
		t.Fatalf("the test database is too small: %d leaves, %d branches", len(l.leaves), len(l.branches))
	}
	return l
}

// damaged copies the good database into a new data dir, applies damage to
// the bytes, and returns the data dir.
func damaged(t *testing.T, damage func(b []byte, l pageLayout) []byte) string {
	t.Helper()
	src := goodDatabase(t)
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	l := layoutOf(t, src)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, dbFile), damage(b, l), 0o600); err != nil {
		t.Fatal(err)
	}
	// The epoch file of the source (so that only the damage differs).
	if e, err := os.ReadFile(filepath.Join(filepath.Dir(src), epochFile)); err == nil {
		os.WriteFile(filepath.Join(dir, epochFile), e, 0o600)
	}
	return dir
}

// serveResult is how the real binary ended on a data dir.
type serveResult struct {
	hung    bool   // neither ready nor exited within 20 s (then killed)
	started bool   // it became ready (and was then stopped)
	exit    int    // exit code when it did not start; -1 when killed by a signal
	signal  string // the signal, if any
	stderr  string
	elapsed time.Duration
}

// serveOn runs `scimgate serve` on dataDir and reports whether it started
// or how it failed.
func serveOn(t *testing.T, dataDir string, args ...string) serveResult {
	t.Helper()
	bin := buildBinary(t)
	scimAddr, adminAddr := freePort(t), freePort(t)
	cmd := exec.Command(bin, append([]string{"serve"}, args...)...)
	cmd.Env = append(os.Environ(), "SCIMGATE_DATA_DIR="+dataDir, "SCIMGATE_SCIM_TOKEN="+e2eToken, "SCIMGATE_ADMIN_TOKEN="+e2eToken,
		"SCIMGATE_WEBHOOK_URL=http://127.0.0.1:9/hooks", "SCIMGATE_WEBHOOK_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
		"SCIMGATE_LISTEN="+scimAddr, "SCIMGATE_ADMIN_LISTEN="+adminAddr, "SCIMGATE_CONFIG=")
	var stderr syncBuffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case err := <-done:
			r := serveResult{stderr: stderr.String(), elapsed: time.Since(start)}
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				r.exit = ee.ExitCode()
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					r.signal = ws.Signal().String()
				}
			}
			return r
		case <-deadline:
			cmd.Process.Kill()
			<-done
			return serveResult{hung: true, stderr: stderr.String(), elapsed: time.Since(start)}
		case <-time.After(20 * time.Millisecond):
			if status, _, err := tryDo("http://"+adminAddr, "GET", "/readyz", ""); err == nil && status == 200 {
				cmd.Process.Signal(syscall.SIGTERM)
				<-done
				return serveResult{started: true, stderr: stderr.String(), elapsed: time.Since(start)}
			}
		}
	}
}

// wantRefused checks the one clear line (no crash, no goroutine dump).
func wantRefused(t *testing.T, r serveResult, contains ...string) {
	t.Helper()
	switch {
	case r.hung:
		t.Fatalf("serve neither started nor exited within 20 s:\n%s", r.stderr)
	case r.started:
		t.Fatalf("serve started on a damaged database:\n%s", r.stderr)
	case r.signal != "" || r.exit != 1:
		t.Fatalf("serve crashed (exit %d, signal %q):\n%s", r.exit, r.signal, r.stderr)
	case strings.Count(r.stderr, "\n") != 1:
		t.Fatalf("want exactly one line on stderr, got:\n%s", r.stderr)
	}
	for _, c := range contains {
		if !strings.Contains(r.stderr, c) {
			t.Errorf("stderr %q lacks %q", r.stderr, c)
		}
	}
	if strings.Contains(r.stderr, "another scimgate") {
		t.Errorf("the lock hint on a damaged file: %q", r.stderr)
	}
}

func TestDamagedDatabaseRefusedWithOneLine(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	const corruptLine = "scimgate: database file is corrupt: "
	const advice = "; restore it from a backup, see docs/operations.md\n"
	put64 := func(b []byte, off int, v uint64) { binary.LittleEndian.PutUint64(b[off:], v) }
	goodDatabase(t)
	cases := []struct {
		name   string
		damage func(b []byte, l pageLayout) []byte
		says   string
	}{
		{"truncated to half its pages", func(b []byte, l pageLayout) []byte {
			return b[:(l.hwm/2)*l.pageSize]
		}, "the file is truncated"},
		{"truncated by one page", func(b []byte, l pageLayout) []byte { return b[:(l.hwm-1)*l.pageSize] }, "the file is truncated"},
		{"preallocated tail cut (not damage)", nil, ""},
		{"truncated to 100 bytes", func(b []byte, l pageLayout) []byte { return b[:100] }, "less than two pages"},
		{"both meta pages bit-flipped", func(b []byte, l pageLayout) []byte {
			b[16+20] ^= 0x10
			b[l.pageSize+16+20] ^= 0x10
			return b
		}, "both meta pages are damaged"},
		{"not a database", func(b []byte, l pageLayout) []byte {
			r := rand.New(rand.NewPCG(1, 2))
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			return b
		}, "not a bbolt database"},
		{"leaf page id bit-flipped", func(b []byte, l pageLayout) []byte {
			b[l.leaves[len(l.leaves)/2]*l.pageSize] ^= 0x04
			return b
		}, "identifies as page"},
		{"leaf page zeroed", func(b []byte, l pageLayout) []byte {
			clear(b[l.leaves[len(l.leaves)/3]*l.pageSize:][:l.pageSize])
			return b
		}, "database file is corrupt"},
		{"branch child page number bit-flipped", func(b []byte, l pageLayout) []byte {
			off := l.branches[0]*l.pageSize + 16 + 8 // first element: pos u32, ksize u32, pgid u64
			put64(b, off, binary.LittleEndian.Uint64(b[off:])|1<<40)
			return b
		}, "database file is corrupt"},
		// What only bbolt's freelist rebuild reads, in a goroutine of its own
		// (a fault there was "unexpected fault address" and exit 2).
		{"branch key offset bit-flipped", func(b []byte, l pageLayout) []byte {
			b[l.branches[0]*l.pageSize+16+3] ^= 0x40 // first element: pos u32, high byte
			return b
		}, "lies outside the page"},
		{"branch key size bit-flipped", func(b []byte, l pageLayout) []byte {
			b[l.branches[0]*l.pageSize+16+7] ^= 0x40 // first element: ksize u32, high byte
			return b
		}, "lies outside the page"},
		{"leaf element offset bit-flipped", func(b []byte, l pageLayout) []byte {
			off := l.leaves[len(l.leaves)/2]*l.pageSize + 16 + 4 // first element: flags u32, pos u32
			b[off+3] ^= 0x40
			return b
		}, "database file is corrupt"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.damage == nil {
				// bbolt grows the file ahead of its data: cutting what is
				// beyond the high-water mark loses nothing.
				r := serveOn(t, damaged(t, func(b []byte, l pageLayout) []byte { return b[:l.hwm*l.pageSize] }))
				if !r.started {
					t.Fatalf("refused a file cut at its high-water mark:\n%s", r.stderr)
				}
				return
			}
			r := serveOn(t, damaged(t, c.damage))
			wantRefused(t, r, corruptLine, c.says, advice)
			t.Logf("%s: %s (%s)", c.name, strings.TrimSpace(r.stderr), r.elapsed.Round(time.Millisecond))
		})
	}
}

// A zero-length file is refused unless serve --init is given; a missing
// file is created (a first start).
func TestEmptyDatabaseFile(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, dbFile), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r := serveOn(t, dir)
	if r.started || r.exit != 1 || strings.Count(r.stderr, "\n") != 1 ||
		!strings.Contains(r.stderr, dbFile+" is empty; if this is a new installation, delete it or start with --init") {
		t.Fatalf("empty file: started %v exit %d:\n%s", r.started, r.exit, r.stderr)
	}
	if r := serveOn(t, dir, "--init"); !r.started {
		t.Fatalf("serve --init on an empty file did not start:\n%s", r.stderr)
	}
	if r := serveOn(t, t.TempDir()); !r.started {
		t.Fatalf("serve on a new data dir did not start:\n%s", r.stderr)
	}
}

// The lock hint is for the lock timeout only.
func TestSecondGatewayOnTheSameDataDir(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	env := append(os.Environ(), "SCIMGATE_DATA_DIR="+dir, "SCIMGATE_SCIM_TOKEN="+e2eToken, "SCIMGATE_ADMIN_TOKEN="+e2eToken,
		"SCIMGATE_WEBHOOK_URL=http://127.0.0.1:9/hooks", "SCIMGATE_WEBHOOK_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "SCIMGATE_CONFIG=")
	g := startBinary(t, bin, env, freePort(t), freePort(t))
	defer g.kill()
	r := serveOn(t, dir)
	if r.started || r.exit != 1 || !strings.Contains(r.stderr, "is another scimgate using this data dir?") || strings.Contains(r.stderr, "corrupt") {
		t.Fatalf("second gateway: started %v exit %d:\n%s", r.started, r.exit, r.stderr)
	}
}

// One damaged meta page: bbolt reads the other; the start logs a warning.
// The transaction lost with it is the clean stop's last, the freelist's
// (store.SyncFreelist after the boot id's rotation), so the boot id is kept
// and the epoch is not raised; the file counts as not cleanly closed and
// is checked whole.
func TestOneDamagedMetaPage(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	dir := damaged(t, func(b []byte, l pageLayout) []byte {
		// Damage the newer meta page.
		t0, t1 := binary.LittleEndian.Uint64(b[16+48:]), binary.LittleEndian.Uint64(b[l.pageSize+16+48:])
		off := 16 + 20
		if t1 > t0 {
			off += l.pageSize
		}
		b[off] ^= 0x01
		return b
	})
	r := serveOn(t, dir)
	if !r.started {
		t.Fatalf("did not start with one good meta page:\n%s", r.stderr)
	}
	for _, want := range []string{"database file damaged but readable", "meta page is damaged"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("log lacks %q:\n%s", want, r.stderr)
		}
	}
	if strings.Contains(r.stderr, "raised the restore epoch") {
		t.Errorf("the boot id's commit survived, yet the epoch was raised:\n%s", r.stderr)
	}
}

// Random single-bit flips anywhere in the file: the binary starts (the
// flip landed in a value, which bbolt cannot see), refuses with the one
// line, or stops with an error once a damaged value is read; it never
// crashes (no signal, no panic or goroutine dump) and never hangs.
// SCIMGATE_CORRUPT_FLIPS sets how many (12).
func TestRandomBitFlipsNeverCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	n := 12
	if v, err := fmt.Sscan(os.Getenv("SCIMGATE_CORRUPT_FLIPS"), &n); v != 1 || err != nil {
		n = 12
	}
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	var started, refused, valueErrors int
	for i := range n {
		var at int
		var bit byte
		dir := damaged(t, func(b []byte, l pageLayout) []byte {
			// Half the flips in page headers and element headers, where
			// the structure is; the rest anywhere.
			if i%2 == 0 {
				p := l.leaves[r.IntN(len(l.leaves))]
				if r.IntN(3) == 0 {
					p = l.branches[r.IntN(len(l.branches))]
				}
				at = p*l.pageSize + r.IntN(48)
			} else {
				at = r.IntN(len(b))
			}
			bit = 1 << r.IntN(8)
			b[at] ^= bit
			return b
		})
		res := serveOn(t, dir)
		crashed := res.hung || res.signal != "" || res.exit > 1
		for _, sign := range []string{"goroutine ", "panic:", "fatal error", "unexpected fault address"} {
			crashed = crashed || strings.Contains(res.stderr, sign)
		}
		switch {
		case crashed:
			t.Errorf("flip of bit %#x at byte %d: hung %v, exit %d, signal %q:\n%s", bit, at, res.hung, res.exit, res.signal, truncate(res.stderr, 2000))
		case res.started:
			started++
		case strings.Count(res.stderr, "\n") == 1 && (strings.Contains(res.stderr, "database file is corrupt") || strings.Contains(res.stderr, "init ")):
			refused++
		case res.exit == 1 && strings.Contains(res.stderr, "\nscimgate: "):
			valueErrors++ // e.g. the outbox cannot decode a damaged event at load
			t.Logf("flip of bit %#x at byte %d: stopped on a damaged value: %s", bit, at, lastLine(res.stderr))
		default:
			t.Errorf("flip of bit %#x at byte %d: exit %d, signal %q:\n%s", bit, at, res.exit, res.signal, truncate(res.stderr, 2000))
		}
	}
	t.Logf("%d random bit flips: %d started (flip in data), %d refused with one line, %d stopped on a damaged value", n, started, refused, valueErrors)
}

// The check on its own, in process: what it reports for a good file and
// what it costs.
func TestCheckDatabaseGood(t *testing.T) {
	src := goodDatabase(t)
	res, err := checkDatabase(src)
	if err != nil {
		t.Fatal(err)
	}
	if res.Keys < 300 || res.Buckets < 10 || res.Pages < 20 || res.Warning != "" {
		t.Errorf("check of a good file: %+v", res)
	}
	t.Logf("good file: %d bytes, %d pages, %d keys in %d buckets, checked in %s", res.Size, res.Pages, res.Keys, res.Buckets, res.Elapsed)
	if _, err := checkDatabase(filepath.Join(t.TempDir(), "none.db")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

// The cost of the start-up check and open on a large file: set
// SCIMGATE_BIG_DB to a copy of one (it is opened for writing). The first
// open is as cold as the page cache is; the second is warm.
func TestStartupCheckCost(t *testing.T) {
	path := os.Getenv("SCIMGATE_BIG_DB")
	if path == "" {
		t.Skip("set SCIMGATE_BIG_DB to a large database file")
	}
	for _, run := range []string{"first", "second"} {
		start := time.Now()
		db, res, err := openDatabase(path, false)
		if err != nil {
			t.Fatal(err)
		}
		total := time.Since(start)
		db.Close()
		t.Logf("%s open of %d bytes (%d keys in %d buckets): check %s, check and read-write open %s",
			run, res.Size, res.Keys, res.Buckets, res.Elapsed.Round(time.Millisecond), total.Round(time.Millisecond))
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// Flips where the structure is: the page header (id, type, count,
// overflow) and the first elements' offsets, sizes and child page numbers
// of branch pages and leaves (four branch pages and every twentieth leaf; all
// of them, every fifth leaf, with SCIMGATE_CORRUPT_FLIPS set). None may
// crash the binary: these are what bbolt's own page walk at open reads in
// its goroutine.
func TestStructureFlipsNeverCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	l := layoutOf(t, goodDatabase(t))
	type flip struct {
		page, off int
		bit       byte
	}
	var flips []flip
	branches, every := l.branches[:min(4, len(l.branches))], 20
	if os.Getenv("SCIMGATE_CORRUPT_FLIPS") != "" {
		branches, every = l.branches, 5
	}
	for _, p := range branches {
		for _, off := range []int{0, 8, 10, 13, 19, 23, 27, 31, 35, 43} { // header; element 0 and 1: pos, ksize, pgid high bytes
			flips = append(flips, flip{p, off, 0x20})
		}
	}
	for i, p := range l.leaves {
		if i%every == 0 {
			for _, off := range []int{0, 10, 13, 23, 27, 31, 43} { // header; element 0 and 1: pos, ksize, vsize
				flips = append(flips, flip{p, off, 0x10})
			}
		}
	}
	crashes := 0
	for _, f := range flips {
		r := serveOn(t, damaged(t, func(b []byte, l pageLayout) []byte {
			b[f.page*l.pageSize+f.off] ^= f.bit
			return b
		}))
		if r.hung || r.signal != "" || r.exit > 1 || strings.Contains(r.stderr, "goroutine ") {
			crashes++
			i := strings.Index(r.stderr, "goroutine ")
			t.Errorf("page %d byte %d bit %#x: hung %v exit %d signal %q\n%s", f.page, f.off, f.bit, r.hung, r.exit, r.signal, truncate(r.stderr[max(0, i-300):], 1500))
		}
	}
	t.Logf("%d flips in page structure: %d crashes", len(flips), crashes)
}

// a start that fails after the configuration is read (the
// SCIM port in use, a database refused) prints no generated token and keeps
// no hash of one: the tokens are kept and shown only once the database is
// checked and the listeners are bound, and the next start generates them.
func TestFailedStartPrintsNoToken(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	bin := buildBinary(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	emptyDB := t.TempDir()
	os.WriteFile(filepath.Join(emptyDB, dbFile), nil, 0o600)
	for _, c := range []struct {
		name, dataDir, scim string
	}{
		{"port in use", t.TempDir(), busy.Addr().String()},
		{"empty database file", emptyDB, freePort(t)},
	} {
		cmd := exec.Command(bin, "serve")
		cmd.Env = append(os.Environ(), "SCIMGATE_DATA_DIR="+c.dataDir, "SCIMGATE_CONFIG=", "SCIMGATE_SCIM_TOKEN=", "SCIMGATE_ADMIN_TOKEN=",
			"SCIMGATE_LISTEN="+c.scim, "SCIMGATE_ADMIN_LISTEN="+freePort(t), "SCIMGATE_WEBHOOK_URL=http://127.0.0.1:9/hooks")
		var stdout, stderr syncBuffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err = <-done:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Fatalf("%s: serve did not fail:\n%s", c.name, stderr.String())
		}
		if err == nil {
			t.Errorf("%s: serve exited 0", c.name)
		}
		if strings.Contains(stdout.String(), "shown only this once") {
			t.Errorf("%s: a start that failed printed tokens:\n%s", c.name, stdout.String())
		}
		for _, f := range []string{scimTokenFile, adminTokenFile} {
			if _, err := os.Stat(filepath.Join(c.dataDir, f)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s: a start that failed kept %s (%v)", c.name, f, err)
			}
		}
	}
}

// A clean stop leaves the file marked clean (its last commit wrote the
// freelist, after the boot id's rotation: the rotation once came last and
// undid it, so every start read the whole file), and a run cut short
// does not.
func TestCleanStopMarksTheFile(t *testing.T) {
	res, err := checkMeta(goodDatabase(t)) // closed by app.Close
	if err != nil || !res.Clean {
		t.Fatalf("after a clean stop: clean %v, err %v", res.Clean, err)
	}
	dir := damaged(t, func(b []byte, _ pageLayout) []byte { return b })
	path := filepath.Join(dir, dbFile)
	db, err := bolt.Open(path, 0o600, boltOptions())
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("meta")).Put([]byte("x-test"), []byte("1")) }); err != nil {
		t.Fatal(err)
	}
	db.Close() // a crash after a commit: no freelist written
	if res, err := checkMeta(path); err != nil || res.Clean {
		t.Fatalf("after a commit without the freelist: clean %v, err %v", res.Clean, err)
	}
	if res, err := checkFile(path, true); err != nil || res.Deferred {
		t.Fatalf("a file not closed cleanly is checked whole at start: deferred %v, err %v", res.Deferred, err)
	}
}

// inlineDisorder is a good database with one more bucket holding a small
// nested bucket (stored inline, inside its parent's leaf) whose two keys
// are swapped in place: the page-tree walk (step 2) does not read inline
// buckets, bbolt's cursors (step 3) find the keys out of order. The file
// is left as a clean stop leaves it.
func inlineDisorder(t *testing.T) string {
	t.Helper()
	dir := damaged(t, func(b []byte, _ pageLayout) []byte { return b })
	path := filepath.Join(dir, dbFile)
	db, err := bolt.Open(path, 0o600, boltOptions())
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("zz-test"))
		if err != nil {
			return err
		}
		nb, err := b.CreateBucket([]byte("inline"))
		if err != nil {
			return err
		}
		if err := nb.Put([]byte("key-aaaa-1"), []byte("v")); err != nil {
			return err
		}
		return nb.Put([]byte("key-bbbb-2"), []byte("v"))
	})
	if err == nil {
		err = store.SyncFreelist(db)
	}
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	i, j := bytes.Index(raw, []byte("key-aaaa-1")), bytes.Index(raw, []byte("key-bbbb-2"))
	if i < 0 || j < 0 || bytes.Count(raw, []byte("key-aaaa-1")) != 1 {
		t.Fatalf("inline keys not found once in the file (%d, %d)", i, j)
	}
	copy(raw[i:], "key-cccc-1")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// After a clean stop the start-up checks the page tree and leaves bbolt's
// walk of every key (step 3) to run beside the gateway; damage only that
// walk finds stops the gateway with the one line, and leaves the file
// marked as not cleanly closed, so that the next start checks it whole and
// refuses it. Without a clean stop nothing is deferred.
func TestDeferredCheckStopsOnDamage(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	dir := inlineDisorder(t)
	path := filepath.Join(dir, dbFile)
	if res, err := checkFile(path, true); err != nil || !res.Deferred {
		t.Fatalf("clean file at start: deferred %v, err %v", res.Deferred, err)
	}
	if _, err := checkDatabase(path); err == nil || !strings.Contains(err.Error(), "keys out of order") {
		t.Fatalf("the whole check of the damaged file: %v", err)
	}
	bin := buildBinary(t)
	env := append(os.Environ(), "SCIMGATE_DATA_DIR="+dir, "SCIMGATE_SCIM_TOKEN="+e2eToken, "SCIMGATE_ADMIN_TOKEN="+e2eToken,
		"SCIMGATE_WEBHOOK_URL=http://127.0.0.1:9/hooks", "SCIMGATE_WEBHOOK_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
		"SCIMGATE_LISTEN="+freePort(t), "SCIMGATE_ADMIN_LISTEN="+freePort(t), "SCIMGATE_CONFIG=")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "serve")
	cmd.Env = env
	var errOut strings.Builder
	cmd.Stderr = &errOut
	err := cmd.Run()
	code, stderr := cmd.ProcessState.ExitCode(), errOut.String()
	if ctx.Err() != nil {
		t.Fatalf("serve did not stop on a damaged file within 20 s (%v):\n%s", err, stderr)
	}
	if code != 1 || !strings.Contains(stderr, "scimgate started") ||
		!strings.Contains(lastLine(stderr), "scimgate: database file is corrupt: ") || !strings.Contains(stderr, "keys out of order") {
		t.Fatalf("serve on a clean file that only step 3 finds damaged: exit %d:\n%s", code, stderr)
	}
	if res, err := checkMeta(path); err != nil || res.Clean {
		t.Fatalf("after the deferred check failed the file is marked clean %v (err %v)", res.Clean, err)
	}
	r := serveOn(t, dir)
	wantRefused(t, r, "scimgate: database file is corrupt: ", "keys out of order")
}
