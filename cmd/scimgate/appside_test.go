package main

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
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

// The app's side, end to end through the real binary: a
// consumer that loads the directory and follows the feed — the program
// docs/app-api.md shows, built from the doc — ends with exactly the
// gateway's state after an Okta-shaped run with concurrent writes; the feed
// carries the ids the webhook got, in order; and a target added later with
// backfill_on_start rebuilds the whole state from what it receives alone.

const apiTestToken = "app-api-token-0123456789abcdef"

// directory is users, groups and memberships, as records.
type directory struct {
	Users   map[string]map[string]any  `json:"users"`
	Groups  map[string]map[string]any  `json:"groups"`
	Members map[string]map[string]bool `json:"members"`
}

func (d directory) json(t *testing.T) string {
	t.Helper()
	for id, m := range d.Members {
		if len(m) == 0 {
			delete(d.Members, id) // an empty group and no entry are the same state
		}
	}
	b, err := json.MarshalIndent(d, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// buildDocConsumer extracts the Go program of docs/app-api.md and builds it.
func buildDocConsumer(t *testing.T) string {
	t.Helper()
	doc, err := os.ReadFile("../../docs/app-api.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```go\n(.*?)```").FindSubmatch(doc)
	if m == nil {
		t.Fatal("docs/app-api.md has no Go program")
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "main.go"), m[1], 0o600)
	os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module consumer\n\ngo 1.26\n"), 0o600)
	bin := filepath.Join(dir, "consumer")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the consumer of docs/app-api.md does not build: %v\n%s", err, out)
	}
	return bin
}

// apiGet reads the app API.
func apiGet(t *testing.T, admin, path string, v any) {
	t.Helper()
	req, _ := http.NewRequest("GET", admin+path, nil)
	req.Header.Set("Authorization", "Bearer "+apiTestToken)
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		t.Fatalf("GET %s: %s %s", path, resp.Status, b.String())
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

// gatewayState reads the whole directory through the app API.
func gatewayState(t *testing.T, admin string) directory {
	t.Helper()
	d := directory{Users: map[string]map[string]any{}, Groups: map[string]map[string]any{}, Members: map[string]map[string]bool{}}
	each := func(path string, fn func(map[string]any)) {
		cursor := ""
		for {
			var p struct {
				Data       []map[string]any `json:"data"`
				NextCursor *string          `json:"next_cursor"`
			}
			apiGet(t, admin, path+"?limit=1000&cursor="+url.QueryEscape(cursor), &p)
			for _, r := range p.Data {
				fn(r)
			}
			if p.NextCursor == nil {
				return
			}
			cursor = *p.NextCursor
		}
	}
	each("/v1/users", func(r map[string]any) { d.Users[r["id"].(string)] = r })
	each("/v1/groups", func(r map[string]any) { d.Groups[r["id"].(string)] = r })
	for gid := range d.Groups {
		d.Members[gid] = map[string]bool{}
		each("/v1/groups/"+gid+"/members", func(r map[string]any) {
			d.Members[gid][r[r["type"].(string)].(map[string]any)["id"].(string)] = true
		})
	}
	return d
}

// oktaRun drives an Okta-shaped run with concurrent clients: users created,
// renamed by full PUT, some deactivated; groups pushed with members, some
// members removed, one user deleted. It returns when every request is done.
func oktaRun(t *testing.T, scim, prefix string, clients, users int) {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ids []string
	for c := range clients {
		wg.Go(func() {
			for i := range users / clients {
				name := fmt.Sprintf("%s%d-%d@example.com", prefix, c, i)
				status, body, err := tryDo(scim, "POST", "/Users", fmt.Sprintf(`{"userName":%q,"name":{"givenName":"G%d","familyName":"F"},"active":true}`, name, i))
				if err != nil || status != 201 {
					t.Errorf("create %s: %d %v %v", name, status, body, err)
					return
				}
				id := body["id"].(string)
				tryDo(scim, "PUT", "/Users/"+id, fmt.Sprintf(`{"userName":%q,"name":{"givenName":"G%d","familyName":"Renamed"},"title":"Engineer","active":true}`, name, i))
				if i%3 == 0 {
					tryDo(scim, "PATCH", "/Users/"+id, `{"Operations":[{"op":"replace","value":{"active":false}}]}`)
				}
				mu.Lock()
				ids = append(ids, id)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for g := range 3 {
		wg.Go(func() {
			var members []string
			mu.Lock()
			for i := g; i < len(ids); i += 3 {
				members = append(members, fmt.Sprintf(`{"value":%q}`, ids[i]))
			}
			mu.Unlock()
			status, body, err := tryDo(scim, "POST", "/Groups", fmt.Sprintf(`{"displayName":"%sgroup-%d"}`, prefix, g))
			if err != nil || status != 201 {
				t.Errorf("group: %d %v %v", status, body, err)
				return
			}
			gid := body["id"].(string)
			for len(members) > 0 {
				n := min(len(members), 7)
				tryDo(scim, "PATCH", "/Groups/"+gid, `{"Operations":[{"op":"add","path":"members","value":[`+strings.Join(members[:n], ",")+`]}]}`)
				members = members[n:]
			}
			mu.Lock()
			victim := ids[rand.IntN(len(ids))]
			mu.Unlock()
			tryDo(scim, "PATCH", "/Groups/"+gid, fmt.Sprintf(`{"Operations":[{"op":"remove","path":"members[value eq %q]"}]}`, victim))
			tryDo(scim, "PATCH", "/Groups/"+gid, fmt.Sprintf(`{"Operations":[{"op":"replace","value":{"id":%q,"displayName":"%sgroup-%d-renamed"}}]}`, gid, prefix, g))
		})
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if status, _, err := tryDo(scim, "DELETE", "/Users/"+ids[len(ids)-1], ""); err != nil || status != 204 {
		t.Errorf("delete: %d %v", status, err)
	}
}

func TestAppConsumerFollowsTheGateway(t *testing.T) {
	consumer := buildDocConsumer(t)
	r := newOpRig(t, "")
	r.env = append(r.env, "SCIMGATE_API_TOKEN="+apiTestToken)
	r.start()
	defer r.stop()

	// The consumer starts while the run writes: its load and the feed overlap.
	oktaRun(t, r.g.scim, "a", 4, 40)
	var out bytes.Buffer
	cmd := exec.Command(consumer)
	cmd.Env = append(os.Environ(), "SCIMGATE_API_URL="+r.g.admin, "SCIMGATE_API_TOKEN="+apiTestToken, "STOP_WHEN_IDLE=1")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	oktaRun(t, r.g.scim, "b", 4, 40)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("consumer: %v\n%s", err, out.String())
		}
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("the consumer did not go idle\n%s", out.String())
	}
	var got directory
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("consumer output: %v\n%s", err, out.String())
	}
	want := gatewayState(t, r.g.admin)
	if len(want.Users) < 70 || len(want.Groups) != 6 {
		t.Fatalf("the run made %d users and %d groups", len(want.Users), len(want.Groups))
	}
	if g, w := got.json(t), want.json(t); g != w {
		t.Errorf("the consumer's directory differs from the gateway's:\n%s", lineDiff(g, w))
	}

	// The feed carries the events the webhook got: the same ids, in order.
	var feed []string
	for after := uint64(0); ; {
		var p struct {
			Data []struct {
				ID string `json:"id"`
			} `json:"data"`
			Next uint64 `json:"next"`
		}
		apiGet(t, r.g.admin, fmt.Sprintf("/v1/events?after=%d&limit=1000", after), &p)
		for _, ev := range p.Data {
			feed = append(feed, ev.ID)
		}
		if len(p.Data) == 0 {
			break
		}
		after = p.Next
	}
	r.rcv.waitFor(t, "every event delivered", 20*time.Second, func(evs []map[string]any) bool { return len(dedupe(evs)) >= len(feed) })
	r.rcv.mu.Lock()
	hooks := dedupe(r.rcv.events)
	r.rcv.mu.Unlock()
	var hookIDs []string
	for _, ev := range hooks {
		hookIDs = append(hookIDs, ev["id"].(string))
	}
	if !slices.Equal(feed, hookIDs) {
		t.Errorf("the feed's %d ids differ from the %d the webhook got (in sequence order)", len(feed), len(hookIDs))
	}
}

// dedupe keeps the first of each event id, in sequence order.
func dedupe(evs []map[string]any) []map[string]any {
	seen := map[string]bool{}
	var out []map[string]any
	for _, ev := range evs {
		if id := ev["id"].(string); !seen[id] {
			seen[id] = true
			out = append(out, ev)
		}
	}
	slices.SortFunc(out, func(a, b map[string]any) int { return cmp.Compare(a["sequence"].(float64), b["sequence"].(float64)) })
	return out
}

// rebuild applies what a backfilled target received, snapshot and live
// events, in arrival order, keeping the higher version of each record.
func rebuild(evs []map[string]any) directory {
	d := directory{Users: map[string]map[string]any{}, Groups: map[string]map[string]any{}, Members: map[string]map[string]bool{}}
	newer := func(held map[string]map[string]any, rec map[string]any) bool {
		old, ok := held[rec["id"].(string)]
		return !ok || old["version"].(float64) <= rec["version"].(float64)
	}
	seen := map[string]bool{}
	for _, ev := range evs {
		if seen[ev["id"].(string)] {
			continue
		}
		seen[ev["id"].(string)] = true
		data, _ := ev["data"].(map[string]any)
		u, _ := data["user"].(map[string]any)
		g, _ := data["group"].(map[string]any)
		switch ev["type"] {
		case "user.snapshot", "user.created", "user.updated", "user.deactivated", "user.reactivated":
			if newer(d.Users, u) {
				d.Users[u["id"].(string)] = u
			}
		case "user.deleted":
			delete(d.Users, u["id"].(string))
		case "group.snapshot", "group.created", "group.updated":
			if newer(d.Groups, g) {
				d.Groups[g["id"].(string)] = g
			}
		case "group.deleted":
			delete(d.Groups, g["id"].(string))
			delete(d.Members, g["id"].(string))
		case "group.members_snapshot":
			gid := g["id"].(string)
			if d.Members[gid] == nil {
				d.Members[gid] = map[string]bool{}
			}
			for _, m := range data["members"].([]any) {
				d.Members[gid][m.(map[string]any)["id"].(string)] = true
			}
		case "group.member_added", "group.member_removed":
			if newer(d.Groups, g) {
				d.Groups[g["id"].(string)] = g
			}
			gid, mid := g["id"].(string), u["id"].(string)
			if d.Members[gid] == nil {
				d.Members[gid] = map[string]bool{}
			}
			if ev["type"] == "group.member_added" {
				d.Members[gid][mid] = true
			} else {
				delete(d.Members[gid], mid)
			}
		}
	}
	return d
}

func TestBackfilledTargetRebuildsTheState(t *testing.T) {
	r := newOpRig(t, "")
	r.env = append(r.env, "SCIMGATE_API_TOKEN="+apiTestToken)
	r.start()
	defer r.stop()
	oktaRun(t, r.g.scim, "a", 4, 40)

	// A second app appears: its target is added with backfill_on_start.
	secret := strings.TrimPrefix(envValue(r.env, "SCIMGATE_WEBHOOK_SECRET"), "")
	late, srv := newReceiver(t, secret)
	r.writeConfig(`    - {name: default, url: "${SCIMGATE_WEBHOOK_URL}", secrets: ["${SCIMGATE_WEBHOOK_SECRET}"]}
    - {name: late, url: "` + srv.URL + `/hooks", secrets: ["${SCIMGATE_WEBHOOK_SECRET}"], backfill_on_start: true}`)
	if err := r.g.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// Live writes continue during the backfill.
	oktaRun(t, r.g.scim, "b", 4, 20)
	want := gatewayState(t, r.g.admin)
	late.waitFor(t, "the snapshot and the live events", 30*time.Second, func(evs []map[string]any) bool {
		completed := false
		for _, ev := range evs {
			completed = completed || ev["type"] == outbox.TypeSnapshotCompleted
		}
		if !completed {
			return false
		}
		return rebuild(evs).json(t) == want.json(t)
	})
	// The snapshot's events come between its start and its end (live events
	// of the moment between the target's appearance and the snapshot may
	// come first: they are older than the snapshot, which supersedes them).
	late.mu.Lock()
	defer late.mu.Unlock()
	start, end := -1, -1
	for i, ev := range late.events {
		switch typ := ev["type"].(string); {
		case typ == outbox.TypeSnapshotStarted && start < 0:
			start = i
		case typ == outbox.TypeSnapshotCompleted:
			end = i
		case strings.HasSuffix(typ, "snapshot") && (start < 0 || end >= 0):
			t.Errorf("%s at %d, outside the snapshot (%d…%d)", typ, i, start, end)
		}
	}
	if start < 0 || end < start {
		t.Errorf("snapshot started at %d, completed at %d", start, end)
	}
}

func envValue(env []string, name string) string {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, name+"="); ok {
			return v
		}
	}
	return ""
}

// lineDiff shows the lines of a that b lacks (-) and of b that a lacks (+).
func lineDiff(a, b string) string {
	in := func(s string) map[string]int {
		m := map[string]int{}
		for _, l := range strings.Split(s, "\n") {
			m[l]++
		}
		return m
	}
	ma, mb := in(a), in(b)
	var out []string
	for _, l := range strings.Split(a, "\n") {
		if mb[l] == 0 {
			out = append(out, "- "+l)
		}
	}
	for _, l := range strings.Split(b, "\n") {
		if ma[l] == 0 {
			out = append(out, "+ "+l)
		}
	}
	if len(out) > 40 {
		out = append(out[:40], fmt.Sprintf("… %d more", len(out)-40))
	}
	return strings.Join(out, "\n")
}
