package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The binary-level test of issue 18: a mapping change reaches the stored
// records.

const remapConfig = `data_dir: ${SCIMGATE_DATA_DIR}
scim:
  listen: ${SCIMGATE_LISTEN}
  auth:
    bearer_tokens: ["` + e2eToken + `"]
admin:
  listen: ${SCIMGATE_ADMIN_LISTEN}
  tokens: ["${SCIMGATE_ADMIN_TOKEN}"]
api:
  tokens: ["` + remapAPIToken + `"]
outbox:
  targets:
    - {name: default, url: "${SCIMGATE_WEBHOOK_URL}", secrets: ["${SCIMGATE_WEBHOOK_SECRET}"], events: [group.*, user.snapshot]}
mapping:
%s`

const remapAPIToken = "api-token-0123456789abcdef"

const (
	remapRulesV1 = `  user:
    - {to: login, from: userName, required: true}
    - {to: title, from: title}
`
	// A rule changed (title upper-cased) and a rule added (department).
	remapRulesV2 = `  user:
    - {to: login, from: userName, required: true}
    - {to: title, from: title, transforms: [upper]}
    - {to: department, from: "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"}
`
	// Every user changes (shout): long enough to be killed half-way.
	remapRulesV3 = remapRulesV2 + `    - {to: shout, from: userName, transforms: [upper]}
`
	// title becomes required: the users without one are rejected.
	remapRulesV4 = `  user:
    - {to: login, from: userName, required: true}
    - {to: title, from: title, transforms: [lower], required: true}
    - {to: department, from: "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"}
    - {to: shout, from: userName, transforms: [upper]}
`
)

type remapRig struct {
	*restoreRig
	config string
	after  float64 // the feed's cursor
	events []map[string]any
}

func newRemapRig(t *testing.T) *remapRig {
	r := &remapRig{restoreRig: newRestoreRig(t)}
	r.config = filepath.Join(r.dataDir, "scimgate.yaml")
	r.env = append(r.env, "SCIMGATE_CONFIG="+r.config)
	r.writeRules(remapRulesV1)
	return r
}

func (r *remapRig) writeRules(rules string) {
	r.t.Helper()
	if err := os.WriteFile(r.config, []byte(fmt.Sprintf(remapConfig, rules)), 0o600); err != nil {
		r.t.Fatal(err)
	}
}

// candidate writes a configuration with rules beside the running one.
func (r *remapRig) candidate(rules string) string {
	r.t.Helper()
	path := filepath.Join(r.dataDir, "candidate.yaml")
	if err := os.WriteFile(path, []byte(fmt.Sprintf(remapConfig, rules)), 0o600); err != nil {
		r.t.Fatal(err)
	}
	return path
}

func (r *remapRig) get(base, token, path string, out any) {
	r.t.Helper()
	req, _ := http.NewRequest("GET", base+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := httpClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		r.t.Fatalf("GET %s: %s", path, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		r.t.Fatal(err)
	}
}

type remapStatusOut struct {
	Remap struct {
		Fingerprint string `json:"fingerprint"`
		Applied     string `json:"applied"`
		Last        *struct {
			Fingerprint string `json:"fingerprint"`
			State       string `json:"state"`
			Total       int    `json:"total"`
			Done        int    `json:"done"`
			Changed     int    `json:"changed"`
			Rejected    int    `json:"rejected"`
		} `json:"remap"`
		Rejected   int `json:"rejected"`
		Rejections []struct {
			Resource string   `json:"resource"`
			ID       string   `json:"id"`
			Reasons  []string `json:"reasons"`
		} `json:"rejections"`
	} `json:"remap"`
}

func (r *remapRig) status() remapStatusOut {
	r.t.Helper()
	var st remapStatusOut
	r.get(r.g.admin, e2eToken, "/admin/status", &st)
	return st
}

// waitRemap waits until the mapping in force is applied to every record.
func (r *remapRig) waitRemap(timeout time.Duration) remapStatusOut {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := r.status()
		if l := st.Remap.Last; l != nil && l.State == "done" && l.Fingerprint == st.Remap.Fingerprint {
			return st
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("remap not done after %s: %+v", timeout, st.Remap.Last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// feed reads the event feed from the rig's cursor to its end.
func (r *remapRig) feed() []map[string]any {
	r.t.Helper()
	var got []map[string]any
	for {
		var page struct {
			Data []map[string]any `json:"data"`
			Next float64          `json:"next"`
		}
		r.get(strings.TrimSuffix(r.g.admin, "/"), remapAPIToken, fmt.Sprintf("/v1/events?after=%.0f&limit=1000", r.after), &page)
		if len(page.Data) == 0 {
			return got
		}
		got = append(got, page.Data...)
		r.after = page.Next
	}
}

// createUsers creates n users with workers concurrent clients: user i has
// a title when i%3 == 0 and a department when i%4 == 0. It returns their
// ids in order, and the latency of each create.
func (r *remapRig) createUsers(from, n, workers int) ([]string, []time.Duration) {
	r.t.Helper()
	ids := make([]string, n)
	lat := make([]time.Duration, n)
	next := make(chan int)
	var wg sync.WaitGroup
	var failed sync.Once
	for range workers {
		wg.Go(func() {
			for i := range next {
				u := from + i
				body := fmt.Sprintf(`{"userName":"u%06d@example.com"`, u)
				if u%3 == 0 {
					body += `,"title":"Engineer"`
				}
				if u%4 == 0 {
					body += `,"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"Sales"}`
				}
				t0 := time.Now()
				status, out, err := tryDo(r.g.scim, "POST", "/Users", body+"}")
				lat[i] = time.Since(t0)
				if err != nil || status != 201 {
					failed.Do(func() { r.t.Errorf("create u%06d: %d %v %v", u, status, out, err) })
					continue
				}
				ids[i] = out["id"].(string)
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	if r.t.Failed() {
		r.t.FailNow()
	}
	return ids, lat
}

// mappingEvents groups the feed's user.updated events by user id: each
// distinct event id once (a redelivery is not a second event).
func mappingEvents(t *testing.T, evs []map[string]any) map[string][]map[string]any {
	t.Helper()
	out := map[string][]map[string]any{}
	seen := map[string]bool{}
	for _, ev := range evs {
		if ev["type"] != "user.updated" || seen[ev["id"].(string)] {
			continue
		}
		seen[ev["id"].(string)] = true
		if ev["cause"] != "mapping" {
			t.Errorf("user.updated %v without cause mapping: %v", ev["id"], ev["cause"])
		}
		id := userOf(ev)["id"].(string)
		out[id] = append(out[id], ev)
	}
	return out
}

func changesOf(ev map[string]any) map[string]any {
	c, _ := ev["changes"].(map[string]any)
	return c
}

func dryRun(t *testing.T, out string) (changed, rejected int, p map[string]any) {
	t.Helper()
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("dry run output: %v\n%s", err, out)
	}
	return int(p["changed"].(float64)), int(p["rejected"].(float64)), p
}

// TestRemapThroughBinary is issue 18's "done when", through the real
// binary: 10,000 users; a rule added and a rule changed, reloaded: one
// user.updated with the right changes and cause "mapping" per affected
// user, none for the others, /v1/users shows the new fields, and the dry
// run's counts are what the apply did; a remap killed with SIGKILL resumes
// at the next start and finishes with no record left on the old mapping
// and one event per user; a rule that rejects users lists them in the dry
// run and in the status, and they keep their record. SCIMGATE_REMAP_FULL=1
// also measures the SCIM create p99 during a remap against without one.
func TestRemapThroughBinary(t *testing.T) {
	const n = 10000
	r := newRemapRig(t)
	r.start()
	defer func() {
		if r.g != nil {
			r.g.kill()
		}
	}()
	t0 := time.Now()
	ids, baseLat := r.createUsers(0, n, 16)
	t.Logf("%d users created through SCIM in %s", n, time.Since(t0).Round(time.Millisecond))
	if got := len(r.feed()); got != n {
		t.Fatalf("%d events after the creates, want %d", got, n)
	}

	// 1. A rule changed and a rule added: preview, then reload.
	out := r.cli(0, "remap", "--dry-run", "--config", r.candidate(remapRulesV2), "--json")
	wantChanged, wantRejected, preview := dryRun(t, out)
	affected := 0
	for i := range n {
		if i%3 == 0 || i%4 == 0 {
			affected++
		}
	}
	if wantChanged != affected || wantRejected != 0 {
		t.Fatalf("dry run: %d changing, %d rejected; want %d, 0", wantChanged, wantRejected, affected)
	}
	if f := preview["user_fields"].(map[string]any); f["title"].(float64) != float64((n+2)/3) || f["department"].(float64) != float64((n+3)/4) {
		t.Errorf("dry run per field: %v", f)
	}
	r.writeRules(remapRulesV2)
	if out := r.cli(0, "reload"); !strings.Contains(out, "mapped again in the background") {
		t.Errorf("reload said:\n%s", out)
	}
	st := r.waitRemap(60 * time.Second)
	if l := st.Remap.Last; l.Changed != wantChanged || l.Rejected != wantRejected || l.Done != n {
		t.Errorf("applied: %+v; the dry run said %d changing, %d rejected", *l, wantChanged, wantRejected)
	}
	byUser := mappingEvents(t, r.feed())
	if len(byUser) != affected {
		t.Errorf("%d users got user.updated, want %d", len(byUser), affected)
	}
	for i, id := range ids {
		evs := byUser[id]
		if i%3 != 0 && i%4 != 0 {
			if len(evs) != 0 {
				t.Errorf("unaffected user %d got %d events", i, len(evs))
			}
			continue
		}
		if len(evs) != 1 {
			t.Errorf("user %d: %d events, want 1", i, len(evs))
			continue
		}
		want := map[string]any{}
		if i%3 == 0 {
			want["title"] = map[string]any{"old": "Engineer", "new": "ENGINEER"}
		}
		if i%4 == 0 {
			want["department"] = map[string]any{"old": nil, "new": "Sales"}
		}
		if got := changesOf(evs[0]); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("user %d: changes %v, want %v", i, got, want)
		}
	}
	var rec map[string]any
	r.get(r.g.admin, remapAPIToken, "/v1/users/"+ids[0], &rec)
	if rec["title"] != "ENGINEER" || rec["department"] != "Sales" {
		t.Errorf("/v1/users/%s: %v", ids[0], rec)
	}
	// A fresh backfill carries the new fields (the target takes group
	// events and user snapshots only: no other user event is delivered).
	r.cli(0, "backfill", "--target", "default")
	r.rcv.waitFor(t, "every user.snapshot", 60*time.Second, func(evs []map[string]any) bool {
		k := 0
		for _, ev := range evs {
			if ev["type"] == "user.snapshot" {
				k++
			}
		}
		return k >= n
	})
	r.rcv.mu.Lock()
	snap := map[string]map[string]any{}
	for _, ev := range r.rcv.events {
		if ev["type"] == "user.snapshot" {
			snap[userOf(ev)["id"].(string)] = userOf(ev)
		}
	}
	r.rcv.mu.Unlock()
	for i, id := range ids {
		u := snap[id]
		if (i%3 == 0) != (u["title"] == "ENGINEER") || (i%4 == 0) != (u["department"] == "Sales") {
			t.Errorf("user %d's snapshot: %v", i, u)
			break
		}
	}
	if t.Failed() {
		return
	}

	// 2. Killed half-way: resumes at the next start and finishes.
	r.writeRules(remapRulesV3)
	r.cli(0, "reload")
	for {
		l := r.status().Remap.Last
		if l.State == "running" && l.Done >= 300 {
			break
		}
		if l.State == "done" && l.Changed == n {
			t.Fatal("the remap finished before the test could kill it")
		}
		time.Sleep(5 * time.Millisecond)
	}
	r.g.kill()
	r.g = nil
	var doneBefore, changedBefore int
	db, err := bolt.Open(filepath.Join(r.dataDir, "scimgate.db"), 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	_ = db.View(func(tx *bolt.Tx) error {
		var s struct {
			State         string
			Done, Changed int
		}
		_ = json.Unmarshal(tx.Bucket([]byte("meta")).Get([]byte("remap")), &s)
		doneBefore, changedBefore = s.Done, s.Changed
		if s.State != "running" {
			t.Errorf("killed remap's state: %q", s.State)
		}
		return nil
	})
	db.Close()
	// The dry run on the stopped data dir counts what is left.
	c, _, _ := dryRun(t, r.cli(0, "remap", "--dry-run", "--config", r.config, "--data-dir", r.dataDir, "--json"))
	if c != n-changedBefore {
		t.Errorf("offline dry run: %d changing, want %d (%d changed before the kill)", c, n-changedBefore, changedBefore)
	}
	t.Logf("killed the remap after %d resources (%d changed); restarting", doneBefore, changedBefore)
	r.start()
	st = r.waitRemap(60 * time.Second)
	if l := st.Remap.Last; l.Changed != n || l.Done != n || st.Remap.Applied != st.Remap.Fingerprint {
		t.Errorf("after the restart: %+v, applied %s of %s", *l, st.Remap.Applied, st.Remap.Fingerprint)
	}
	byUser = mappingEvents(t, r.feed())
	for i, id := range ids {
		evs := byUser[id]
		if len(evs) != 1 || fmt.Sprint(changesOf(evs[0])["shout"]) != fmt.Sprint(map[string]any{"old": nil, "new": strings.ToUpper(fmt.Sprintf("u%06d@example.com", i))}) {
			t.Errorf("user %d after the kill: %d events %v", i, len(evs), evs)
			break
		}
	}

	// 3. A rule that rejects users: listed by the dry run and the status;
	// they keep their record, the others are remapped.
	wantChanged, wantRejected, preview = dryRun(t, r.cli(0, "remap", "--dry-run", "--config", r.candidate(remapRulesV4), "--json"))
	if wantChanged != (n+2)/3 || wantRejected != n-(n+2)/3 {
		t.Errorf("dry run: %d changing, %d rejected", wantChanged, wantRejected)
	}
	var previewRejected []string
	for _, rj := range preview["rejections"].([]any) {
		previewRejected = append(previewRejected, rj.(map[string]any)["id"].(string))
	}
	r.writeRules(remapRulesV4)
	r.cli(0, "reload")
	st = r.waitRemap(60 * time.Second)
	if l := st.Remap.Last; l.Changed != wantChanged || l.Rejected != wantRejected || st.Remap.Rejected != wantRejected {
		t.Errorf("applied: %+v (%d listed); the dry run said %d changing, %d rejected", *l, st.Remap.Rejected, wantChanged, wantRejected)
	}
	for _, rj := range st.Remap.Rejections {
		if !slices.Contains(previewRejected, rj.ID) || rj.Reasons[0] != "title: a value is required (from title)" {
			t.Errorf("status rejection %+v not in the dry run's or wrong reason", rj)
		}
	}
	if out := r.cli(0, "status"); !strings.Contains(out, fmt.Sprintf("rejected by the mapping in force, keeping their last good record: %d", wantRejected)) {
		t.Errorf("scimgate status:\n%s", out)
	}
	r.get(r.g.admin, remapAPIToken, "/v1/users/"+ids[1], &rec)
	if rec["shout"] != "U000001@EXAMPLE.COM" || rec["login"] != "u000001@example.com" {
		t.Errorf("a rejected user's record: %v", rec)
	}
	r.get(r.g.admin, remapAPIToken, "/v1/users/"+ids[3], &rec)
	if rec["title"] != "engineer" {
		t.Errorf("a remapped user's record: %v", rec)
	}

	// 4. What a reload cannot apply makes it exit 1, naming it.
	r.writeRules(remapRulesV4 + `    - {to: badge, from: "urn:ietf:params:scim:schemas:extension:acme:2.0:User:badge"}
`)
	if out := r.cli(1, "reload"); !strings.Contains(out, "extension schemas") {
		t.Errorf("reload with a new extension schema:\n%s", out)
	}
	r.waitRemap(60 * time.Second)

	// The rejected users keep the record (and fingerprint) of mapping 3.
	wantOnFP, wantFPs := (n+2)/3, 2
	if os.Getenv("SCIMGATE_REMAP_FULL") != "" {
		// Mapping 5 accepts everyone again: every record ends on it.
		wantOnFP, wantFPs = n+remapLatency(t, r, baseLat), 1
	}

	// No record is left on another mapping than the one in force.
	fp := r.status().Remap.Fingerprint
	r.g.cmd.Process.Signal(syscall.SIGTERM)
	r.g.cmd.Wait()
	r.g = nil
	db, err = bolt.Open(filepath.Join(r.dataDir, "scimgate.db"), 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	byFP := map[string]int{}
	_ = db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("users")).ForEach(func(_, v []byte) error {
			var rec struct {
				FP string `json:"fp"`
			}
			_ = json.Unmarshal(v, &rec)
			byFP[rec.FP]++
			return nil
		})
	})
	if byFP[fp] != wantOnFP || len(byFP) != wantFPs {
		t.Errorf("records by fingerprint: %v (in force: %s)", byFP, fp)
	}
}

// remapLatency measures SCIM create latency while a remap of every user
// runs, against the creates before any remap (SCIMGATE_REMAP_FULL).
// It returns the number of users it created.
func remapLatency(t *testing.T, r *remapRig, base []time.Duration) int {
	// Every user changes, and every create is accepted (title optional).
	r.writeRules(remapRulesV3 + `    - {to: shout2, from: userName, transforms: [lower]}
`)
	r.cli(1, "reload") // the acme extension leaves the schemas: a restart again
	var during []time.Duration
	for i := 0; ; i++ {
		_, lat := r.createUsers(1_000_000+i*500, 500, 16)
		during = append(during, lat...)
		if l := r.status().Remap.Last; l.State == "done" {
			break
		}
	}
	p99 := func(d []time.Duration) time.Duration {
		d = slices.Clone(d)
		slices.Sort(d)
		return d[len(d)*99/100]
	}
	b, d := p99(base), p99(during)
	t.Logf("SCIM create p99: %s without a remap (%d creates), %s during one (%d creates)", b, len(base), d, len(during))
	if d > 2*b {
		t.Errorf("create p99 during the remap %s is over twice %s", d, b)
	}
	r.waitRemap(60 * time.Second)
	return len(during)
}

// TestRemapManualThroughBinary: with mapping.remap: manual a reload maps
// new writes with the new rules but leaves the stored records, saying so in
// scimgate status, until scimgate remap --wait applies it.
func TestRemapManualThroughBinary(t *testing.T) {
	r := newRemapRig(t)
	r.writeRules("  remap: manual\n" + remapRulesV1)
	r.start()
	defer func() { r.g.kill() }()
	ids, _ := r.createUsers(0, 60, 4)
	r.feed()
	r.writeRules("  remap: manual\n" + remapRulesV2)
	if out := r.cli(0, "reload"); !strings.Contains(out, "remap: manual: the stored records keep the previous output until `scimgate remap`") {
		t.Errorf("reload said:\n%s", out)
	}
	if out := r.cli(0, "status"); !strings.Contains(out, "remap pending: mapping") || !strings.Contains(out, "run scimgate remap") {
		t.Errorf("status while pending:\n%s", out)
	}
	time.Sleep(200 * time.Millisecond) // a remap would have begun
	if evs := mappingEvents(t, r.feed()); len(evs) != 0 {
		t.Fatalf("%d users got an event before scimgate remap", len(evs))
	}
	var rec map[string]any
	r.get(r.g.admin, remapAPIToken, "/v1/users/"+ids[0], &rec)
	if rec["title"] != "Engineer" {
		t.Errorf("stored record changed before scimgate remap: %v", rec)
	}
	out := r.cli(0, "remap", "--wait")
	if !strings.Contains(out, "remap started") || !strings.Contains(out, "remap done: mapping") {
		t.Errorf("scimgate remap --wait:\n%s", out)
	}
	if got := len(mappingEvents(t, r.feed())); got != 30 { // i%3 == 0 or i%4 == 0, of 60
		t.Errorf("%d users got user.updated, want 30", got)
	}
	r.get(r.g.admin, remapAPIToken, "/v1/users/"+ids[0], &rec)
	if rec["title"] != "ENGINEER" || rec["department"] != "Sales" {
		t.Errorf("after scimgate remap: %v", rec)
	}
	resp, err := http.Get(r.g.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`scimgate_remap_resources{count="changed"} 30`, `scimgate_remap_resources{count="total"} 60`,
		`scimgate_remap_state{state="done"} 1`, `scimgate_remap_state{state="pending"} 0`, "scimgate_mapping_rejected_resources 0"} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if out := r.cli(0, "remap"); !strings.Contains(out, "nothing to remap") {
		t.Errorf("a second scimgate remap:\n%s", out)
	}
}
