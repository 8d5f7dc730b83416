package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/scimgate/scimgate/outbox"
)

// A database that became mostly free shrinks at the next start,
// and a clean stop leaves the freelist written so that the start does not
// read every page.
func TestStartUpCompaction(t *testing.T) {
	secret, _ := outbox.NewSecret()
	dir := t.TempDir()
	cfg := DefaultConfig(testEnv(dir, "http://127.0.0.1:9/hooks", secret))
	// No target and a short retention: once the log is pruned, deleting
	// the users has freed their pages.
	cfg.Outbox.Targets = nil
	cfg.Outbox.Retention, cfg.Outbox.FeedRetention = 20*time.Millisecond, 0
	a := startAppCfg(t, cfg, appOptions{})
	base := "http://" + a.SCIMAddr() + "/scim/v2"
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ids []string
	for w := range 8 {
		wg.Go(func() {
			for i := range 250 {
				status, body, err := tryDo(base, "POST", "/Users", fmt.Sprintf(`{"userName":"u%d-%d@example.com","title":"%0500d"}`, w, i, i))
				if err != nil || status != 201 {
					t.Errorf("create: %d %v", status, err)
					return
				}
				mu.Lock()
				ids = append(ids, body["id"].(string))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < len(ids); i += 8 {
				tryDo(base, "DELETE", "/Users/"+ids[i], "")
			}
		})
	}
	wg.Wait()
	waitPruned(t, a)
	if err := a.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, dbFile)
	before, _ := os.Stat(path)
	b := startAppCfg(t, cfg, appOptions{})
	defer b.Close(context.Background())
	after, _ := os.Stat(path)
	if after.Size() >= before.Size()/2 {
		t.Errorf("file %d bytes before the start, %d after: not compacted", before.Size(), after.Size())
	}
	// The compacted file is the same gateway: it keeps serving.
	if status, body, err := tryDo("http://"+b.SCIMAddr()+"/scim/v2", "GET", "/Users", ""); err != nil || status != 200 || body["totalResults"] != float64(0) {
		t.Errorf("after compaction: %d %v %v", status, body, err)
	}
	t.Logf("start-up compaction: %d → %d bytes", before.Size(), after.Size())
}

// POST /admin/compact (scimgate compact) rewrites the file while
// the gateway serves. Writes that go on during the compaction are all
// acknowledged, kept and delivered, events keep flowing after the swap,
// and the feed and backups read the new file.
func TestOnlineCompaction(t *testing.T) {
	secret, _ := outbox.NewSecret()
	rcv, srv := newReceiver(t, secret)
	dir := t.TempDir()
	cfg := DefaultConfig(testEnv(dir, srv.URL+"/hooks", secret))
	cfg.API.Tokens = []string{apiTestToken}
	a := startAppCfg(t, cfg, appOptions{})
	defer func() { closeApp(t, a) }()
	base := "http://" + a.SCIMAddr() + "/scim/v2"
	admin := "http://" + a.AdminAddr()
	path := filepath.Join(dir, dbFile)

	var mu sync.Mutex
	var ids []string
	create := func(name string) bool {
		status, body, err := tryDo(base, "POST", "/Users", fmt.Sprintf(`{"userName":"%s@example.com","title":"%0500d"}`, name, 7))
		if err != nil || status != 201 {
			t.Errorf("create %s: %d %v", name, status, err)
			return false
		}
		mu.Lock()
		ids = append(ids, body["id"].(string))
		mu.Unlock()
		return true
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 250 {
				create(fmt.Sprintf("u%d-%d", w, i))
			}
		})
	}
	wg.Wait()
	deleted := ids[:1800]
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < len(deleted); i += 8 {
				if status, _, err := tryDo(base, "DELETE", "/Users/"+deleted[i], ""); err != nil || status != 204 {
					t.Errorf("delete: %d %v", status, err)
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	// Writes go on while the file is compacted.
	stop := make(chan struct{})
	var during sync.WaitGroup
	for w := range 2 {
		during.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if !create(fmt.Sprintf("during%d-%d", w, i)) {
					return
				}
			}
		})
	}
	mu.Lock()
	atStart := len(ids)
	mu.Unlock()
	before, _ := os.Stat(path)
	onDiskBefore := diskUsage(t, path)
	code, stdout, stderr := runCLI(t, fixedEnv("SCIMGATE_ADMIN_TOKEN", e2eToken), "compact", "--force", "--admin", admin)
	time.Sleep(200 * time.Millisecond) // deliberately real time: the writes go on after the compaction too
	close(stop)
	during.Wait()
	if code != 0 || !strings.HasPrefix(stdout, "compacted: ") {
		t.Fatalf("scimgate compact --force: %d %q %s", code, stdout, stderr)
	}
	// The file is replaced. bbolt grows it again by 16 MiB at the next
	// write, but that tail is sparse: what it holds on disk is what shrank.
	after, _ := os.Stat(path)
	onDiskAfter := diskUsage(t, path)
	if os.SameFile(before, after) || onDiskAfter >= onDiskBefore*3/4 {
		t.Errorf("file of %d bytes on disk before, %d after (same file: %v): not compacted", onDiskBefore, onDiskAfter, os.SameFile(before, after))
	}
	mu.Lock()
	all, live := slices.Clone(ids), slices.Clone(ids[1800:])
	mu.Unlock()
	if len(all) == atStart {
		t.Error("no write was acknowledged while the gateway compacted")
	}
	t.Logf("online compaction: %d → %d bytes on disk, %d writes acknowledged meanwhile; %s", onDiskBefore, onDiskAfter, len(all)-atStart, strings.TrimSpace(stdout))

	// Nothing acknowledged is lost: every user is there, and every event
	// reaches the target once at least — the ones after the swap too.
	if status, body, err := tryDo(base, "GET", "/Users?count=1", ""); err != nil || status != 200 || body["totalResults"] != float64(len(live)) {
		t.Errorf("users after compaction: %d %v %v; want %d", status, body["totalResults"], err, len(live))
	}
	create("after")
	mu.Lock()
	lateID := ids[len(ids)-1]
	mu.Unlock()
	rcv.waitFor(t, "every user.created and user.deleted", 30*time.Second, func(evs []map[string]any) bool {
		created, gone := map[string]bool{}, map[string]bool{}
		for _, ev := range evs {
			d, _ := ev["data"].(map[string]any)
			u, _ := d["user"].(map[string]any)
			id, _ := u["id"].(string)
			switch ev["type"] {
			case "user.created":
				created[id] = true
			case "user.deleted":
				gone[id] = true
			}
		}
		for _, id := range all {
			if !created[id] {
				return false
			}
		}
		for _, id := range deleted {
			if !gone[id] {
				return false
			}
		}
		return created[lateID]
	})

	// The feed reads the new file: the last event is the late create.
	var last map[string]any
	read := 0
	for after := uint64(0); ; {
		var page struct {
			Data []map[string]any `json:"data"`
			Next uint64           `json:"next"`
		}
		apiGet(t, admin, fmt.Sprintf("/v1/events?after=%d&limit=1000", after), &page)
		if len(page.Data) == 0 {
			break
		}
		read += len(page.Data)
		last, after = page.Data[len(page.Data)-1], page.Next
	}
	if want := len(all) + len(deleted) + 1; read != want || last["type"] != "user.created" || !strings.Contains(fmt.Sprint(last["data"]), lateID) {
		t.Errorf("feed after compaction: %d events, the last %v; want %d, the last the late user.created", read, last, want)
	}
	// A backup is a copy of the new file, and a second compaction without
	// --force leaves a file that is no longer mostly free alone.
	backup := filepath.Join(t.TempDir(), "b.db")
	if code, _, stderr := runCLI(t, fixedEnv("SCIMGATE_ADMIN_TOKEN", e2eToken), "backup", backup, "--admin", admin); code != 0 {
		t.Fatalf("backup after compaction: %d %s", code, stderr)
	}
	if code, stdout, stderr := runCLI(t, fixedEnv("SCIMGATE_ADMIN_TOKEN", e2eToken), "compact", "--admin", admin); code != 0 || !strings.HasPrefix(stdout, "not compacted: ") {
		t.Errorf("scimgate compact on a compacted file: %d %q %s", code, stdout, stderr)
	}

	// The next start opens the compacted file with everything in it.
	closeApp(t, a)
	a = startAppCfg(t, cfg, appOptions{})
	if status, body, err := tryDo("http://"+a.SCIMAddr()+"/scim/v2", "GET", "/Users/"+lateID, ""); err != nil || status != 200 {
		t.Errorf("user after restart: %d %v %v", status, body, err)
	}
}

// diskUsage is the space path takes on disk, holes not counted.
func diskUsage(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		t.Skip("no block counts on this system")
	}
	return st.Blocks * 512
}

// waitPruned waits until the gateway's event log has been pruned to its
// last few events.
func waitPruned(t *testing.T, a *app) {
	t.Helper()
	var tail uint64
	for {
		p, err := a.feed.Read(context.Background(), outbox.FeedQuery{After: tail, Limit: 1000})
		if errors.Is(err, outbox.ErrCursorGone) {
			tail = 0 // pruned meanwhile: the first page starts after the pruned part
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Events) == 0 {
			break
		}
		tail = p.Next
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := a.feed.Read(context.Background(), outbox.FeedQuery{After: tail - 2, Limit: 1})
		if errors.Is(err, outbox.ErrCursorGone) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the log was not pruned up to %d in 10s (%v)", tail-2, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// `scimgate compact` reports the live data and what a
// compaction reclaims, and the estimate holds: the forced compaction that
// follows leaves a file of about the live size it announced.
func TestCompactReportsLiveAndReclaimable(t *testing.T) {
	secret, _ := outbox.NewSecret()
	dir := t.TempDir()
	a := startAppCfg(t, DefaultConfig(testEnv(dir, "http://127.0.0.1:9/hooks", secret)), appOptions{})
	defer func() { closeApp(t, a) }()
	base, admin := "http://"+a.SCIMAddr()+"/scim/v2", "http://"+a.AdminAddr()
	var ids []string
	for i := range 600 {
		status, body, err := tryDo(base, "POST", "/Users", fmt.Sprintf(`{"userName":"u%d@example.com","title":"%0900d"}`, i, 7))
		if err != nil || status != 201 {
			t.Fatalf("create: %d %v", status, err)
		}
		ids = append(ids, body["id"].(string))
	}
	for i := 0; i < len(ids); i += 2 { // every other one: pages left half used
		if status, _, err := tryDo(base, "DELETE", "/Users/"+ids[i], ""); err != nil || status != 204 {
			t.Fatalf("delete: %d %v", status, err)
		}
	}
	env := fixedEnv("SCIMGATE_ADMIN_TOKEN", e2eToken)
	code, stdout, stderr := runCLI(t, env, "compact", "--admin", admin)
	var live, reclaim string
	switch {
	case code != 0:
		t.Fatalf("compact: %d %s", code, stderr)
	case strings.Contains(stdout, "% free"):
		t.Fatalf("compact reports free pages, not what it reclaims: %s", stdout)
	}
	re := regexp.MustCompile(`about ([0-9.]+ \w+) live data, ([0-9.]+ \w+) reclaimable|→ ([0-9.]+ \w+) \(live data\), ([0-9.]+ \w+) reclaimed`)
	m := re.FindStringSubmatch(stdout)
	if m == nil {
		t.Fatalf("compact does not report live data and reclaimable bytes: %q", stdout)
	}
	live, reclaim = m[1]+m[3], m[2]+m[4]
	code, stdout, stderr = runCLI(t, env, "compact", "--force", "--admin", admin)
	after := regexp.MustCompile(`→ ([0-9.]+) (\w+)`).FindStringSubmatch(stdout)
	if code != 0 || after == nil {
		t.Fatalf("compact --force: %d %q %s", code, stdout, stderr)
	}
	t.Logf("announced %s live, %s reclaimable; compacted to %s %s", live, reclaim, after[1], after[2])
	if got, want := parseHuman(t, after[1]+" "+after[2]), parseHuman(t, live); got > 2*want+64<<10 || want > 2*got+64<<10 {
		t.Errorf("announced %s live data, the compacted file is %s %s", live, after[1], after[2])
	}
}

func parseHuman(t *testing.T, s string) int64 {
	t.Helper()
	var v float64
	var unit string
	if _, err := fmt.Sscanf(s, "%f %s", &v, &unit); err != nil {
		t.Fatalf("size %q: %v", s, err)
	}
	mult := map[string]float64{"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[unit]
	return int64(v * mult)
}

// a kill -9 during an online compaction leaves the copy,
// scimgate.db.compact, as large as the database; the next start removes it
// and says so.
func TestLeftoverCompactionCopyRemovedAtStart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	dir := t.TempDir()
	if r := serveOn(t, dir); !r.started { // a database of this data dir
		t.Fatalf("first start:\n%s", r.stderr)
	}
	leftover := filepath.Join(dir, dbFile+".compact")
	if err := os.WriteFile(leftover, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	r := serveOn(t, dir)
	if !r.started {
		t.Fatalf("start with a leftover copy:\n%s", r.stderr)
	}
	if _, err := os.Stat(leftover); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s is still there (%v)", leftover, err)
	}
	if !strings.Contains(r.stderr, "removed "+leftover) {
		t.Errorf("the start did not say it removed the leftover copy:\n%s", r.stderr)
	}
}
