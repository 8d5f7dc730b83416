package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/scimgate/scimgate/outbox"
)

// defaultChromium is Debian's Chromium (.ci/run installs it);
// SCIMGATE_CHROMIUM names another.
const defaultChromium = "/usr/bin/chromium"

// TestConsoleInBrowser drives the console of the real binary in headless
// Chromium: sign-in (the SCIM token cannot), a dead letter after the
// receiver answered 400 shown on the overview and opened with its request
// and answer, replay once the receiver is fixed, a user search, a mapping
// rejection naming the field, a POST without the CSRF token refused, and
// a change made while the target is paused listed pending and opened.
// Screenshots of each page go to $SCIMGATE_SCREENSHOTS (default: the test's
// artifact directory); SCIMGATE_DOCS_SCREENSHOT=1 also writes
// docs/console.png.
func TestConsoleInBrowser(t *testing.T) {
	chromiumPath := cmp.Or(os.Getenv("SCIMGATE_CHROMIUM"), defaultChromium)
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "" {
			t.Skip("no Chromium at " + chromiumPath + " (apt-get install chromium); with CI=true this test fails instead")
		}
		t.Fatalf("CI=%s and no Chromium at %s: .ci/run installs it (apt-get install -y chromium)", os.Getenv("CI"), chromiumPath)
	}
	const scimToken, adminToken = "scim-token-for-console-0123456789", "admin-token-for-console-0123456789"
	shots := os.Getenv("SCIMGATE_SCREENSHOTS")
	if shots == "" {
		shots = t.ArtifactDir()
	}
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}

	// The receiver refuses with 400 until the test fixes it.
	var status atomic.Int32
	var delivered atomic.Int32
	status.Store(400)
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		s := int(status.Load())
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(s)
		if s >= 300 {
			io.WriteString(w, `{"error":"department \"Research\" does not exist"}`)
			return
		}
		delivered.Add(1)
	}))
	defer rcv.Close()
	secret, _ := outbox.NewSecret()
	bin := buildBinary(t)
	env := append(os.Environ(), "SCIMGATE_DATA_DIR="+t.TempDir(), "SCIMGATE_SCIM_TOKEN="+scimToken, "SCIMGATE_ADMIN_TOKEN="+adminToken,
		"SCIMGATE_WEBHOOK_URL="+rcv.URL+"/hooks", "SCIMGATE_WEBHOOK_SECRET="+secret)
	g := startBinary(t, bin, env, freePort(t), freePort(t))
	defer g.kill()

	const ada = `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],
		"userName":"ada@example.com","externalId":"00u1ada","name":{"givenName":"Ada","familyName":"Lovelace"},"title":"%s",
		"emails":[{"value":"ada@example.com","type":"work","primary":true}]}`
	code, created, err := tryDoAuth(g.scim, scimToken, "POST", "/Users", fmt.Sprintf(ada, "Analyst"))
	if err != nil || code != 201 {
		t.Fatalf("create user: %d %v", code, err)
	}
	adaID, _ := created["id"].(string)
	deadLetters := func() int {
		req, _ := http.NewRequest("GET", g.admin+"/admin/status", nil)
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var st struct {
			Targets []struct {
				DeadLetters int `json:"dead_letters"`
			} `json:"targets"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&st)
		if len(st.Targets) == 0 {
			return -1
		}
		return st.Targets[0].DeadLetters
	}
	waitUntil(t, "the 400 dead-letters the event", func() bool { return deadLetters() == 1 })

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromiumPath), chromedp.NoSandbox,
		chromedp.WindowSize(1280, 900))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	defer cancelCtx()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute) // the whole browser's life
	defer cancel()

	if err := chromedp.Do(ctx); err != nil { // start the browser
		t.Fatalf("start %s: %v", chromiumPath, err)
	}
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := chromedp.Do(sctx, steps...); err != nil {
			t.Fatalf("%s: %v\ngateway output:\n%s", what, err, g.out)
		}
	}
	text := func(sel string) string {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		s, err := chromedp.Run(sctx, chromedp.Text(sel))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}
	shot := func(name string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			png, err := chromedp.FullScreenshot(100)(ctx, tg)
			if err != nil {
				return err
			}
			if name == "overview" && os.Getenv("SCIMGATE_DOCS_SCREENSHOT") == "1" {
				if err := os.WriteFile(filepath.Join("..", "..", "docs", "console.png"), png, 0o644); err != nil {
					return err
				}
			}
			return os.WriteFile(filepath.Join(shots, "console-"+name+".png"), png, 0o644)
		})
	}
	contains := func(what, got, want string) {
		t.Helper()
		if !strings.Contains(got, want) {
			t.Errorf("%s: %q does not contain %q", what, got, want)
		}
	}

	// The SCIM token cannot sign in; the admin token can.
	do("sign in with the SCIM token",
		chromedp.Navigate(g.admin+"/"),
		chromedp.WaitVisible("#token"),
		shot("signin"),
		chromedp.SendKeys("#token", scimToken),
		chromedp.Click("#signin"),
		chromedp.WaitVisible("#error"))
	contains("sign-in with the SCIM token", text("#error"), "not an admin token")
	do("sign in with the admin token",
		chromedp.SendKeys("#token", adminToken),
		chromedp.Click("#signin"),
		chromedp.WaitVisible("#health"))
	health := text("#health")
	contains("overview health line", health, "Not healthy")
	contains("overview health line", health, "default: dead letters")
	if got := strings.TrimSpace(text("table.targets td.dead")); got != "1" {
		t.Errorf("overview: dead letters %q, want 1", got)
	}
	do("overview screenshots", shot("overview"),
		chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile), shot("overview-phone"), chromedp.EmulateViewport(1280, 900))

	// Open the target and its dead letter: the request and the answer.
	do("open the dead letter",
		chromedp.Click(`a[href="/targets/default"]`),
		chromedp.WaitVisible("a.dl"),
		shot("target"),
		chromedp.Click("a.dl"),
		chromedp.WaitVisible("#response"),
		shot("dead-letter"))
	if got := text("#status"); got != "400" {
		t.Errorf("dead letter status %q, want 400", got)
	}
	contains("dead letter answer", text("#response"), `department \"Research\" does not exist`)
	contains("dead letter request", text("#request"), "400")
	contains("dead letter event", text("#event"), "user.created")

	// Fix the receiver, replay, see it delivered.
	status.Store(204)
	do("replay", chromedp.Click("#replay"), chromedp.WaitVisible("#done"))
	contains("after replay", text("#done"), "replay: 1 dead letter")
	waitUntil(t, "the replayed event delivered", func() bool { return delivered.Load() == 1 })
	do("target after replay", chromedp.Navigate(g.admin+"/targets/default"), chromedp.WaitVisible("#nodead"))
	contains("target state after replay", text("#state"), "0 dead letters")
	do("overview after replay", chromedp.Navigate(g.admin+"/"), chromedp.WaitVisible("#health"))
	contains("overview after replay", text("#health"), "Healthy")

	// Three changes, then search the user by email and open it: SCIM
	// resource and record side by side, and its history.
	for _, title := range []string{"Mathematician", "Writer", "Programmer"} {
		if code, _, err := tryDoAuth(g.scim, scimToken, "PUT", "/Users/"+adaID, fmt.Sprintf(ada, title)); err != nil || code != 200 {
			t.Fatalf("replace user: %d %v", code, err)
		}
	}
	do("search a user",
		chromedp.Navigate(g.admin+"/users"),
		chromedp.WaitVisible("#q"),
		chromedp.SendKeys("#q", "ada@example.com"),
		chromedp.Click("#search"),
		chromedp.WaitVisible("#matches"),
		shot("users"),
		chromedp.Click("a.user"),
		chromedp.WaitVisible("#record"),
		shot("user"))
	record := text("#record")
	contains("mapped record", record, `"login": "ada@example.com"`)
	contains("mapped record", record, `"first_name": "Ada"`)
	contains("SCIM resource", text("#scim"), `"externalId": "00u1ada"`)
	history := text("#history")
	for _, want := range []string{`title: "Analyst" → "Mathematician"`, `title: "Mathematician" → "Writer"`, `title: "Writer" → "Programmer"`, "user.created"} {
		contains("user history", history, want)
	}
	contains("user history: the request that made a change", history, "PUT /scim/v2/Users/:id → 200")

	// The mapping preview names the field a payload lacks.
	do("mapping preview",
		chromedp.Navigate(g.admin+"/map"),
		chromedp.WaitVisible("#payload"),
		chromedp.SetValue("#payload", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"name":{"givenName":"Nobody"}}`),
		chromedp.Click("#preview"),
		chromedp.WaitVisible("#rejected"),
		shot("map"))
	rejected := text("#rejected")
	contains("mapping rejection", rejected, "rejected (400")
	contains("mapping rejection", rejected, "userName")

	do("activity", chromedp.Navigate(g.admin+"/activity"), chromedp.WaitVisible("table"), shot("activity"))
	contains("recent activity", text("table"), "/scim/v2/Users")

	// A POST without the CSRF token is refused: rename the form's token field and press Pause.
	do("pause without the CSRF token",
		chromedp.Navigate(g.admin+"/targets/default"),
		chromedp.WaitVisible("#pause"),
		chromedp.SetAttributeValue(`form[action="/targets/default/pause"] input[name="csrf"]`, "name", "not-csrf"),
		chromedp.Click("#pause"),
		chromedp.WaitVisible("#error"))
	contains("pause without CSRF", text("#error"), "CSRF token is missing or wrong")
	do("target after the refused POST", chromedp.Navigate(g.admin+"/targets/default"), chromedp.WaitVisible("#state"))
	if st := text("#state"); strings.Contains(st, "paused") {
		t.Errorf("the POST without a CSRF token paused the target: %q", st)
	}

	// Paused, a change waits: the target lists it pending and opens it.
	do("pause", chromedp.Click("#pause"), chromedp.WaitVisible("#done"))
	if code, _, err := tryDoAuth(g.scim, scimToken, "PUT", "/Users/"+adaID, fmt.Sprintf(ada, "Countess")); err != nil || code != 200 {
		t.Fatalf("replace user: %d %v", code, err)
	}
	do("pending list",
		chromedp.Navigate(g.admin+"/targets/default"),
		chromedp.WaitVisible("a.pe"),
		shot("target-pending"),
		chromedp.Click("a.pe"),
		chromedp.WaitVisible("#pstate"),
		shot("pending-event"))
	contains("pending event", text("#event"), "Countess")
	t.Logf("screenshots in %s", shots)
}

// waitUntil polls cond for up to 15 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
