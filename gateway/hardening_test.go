package gateway_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/scimgate/scimgate/outbox"
)

// Issue 8 item 9: an empty or mistyped discard must not delete every dead
// letter; "all" has to be asked for.
func TestAdminBulkNeedsExplicitSelection(t *testing.T) {
	env := newAdminEnv(t)
	env.status.Store(400) // every delivery dead-letters
	for _, u := range []string{"ada@example.com", "grace@example.com", "linus@example.com"} {
		createUser(t, env.scim, u)
	}
	var list struct {
		DeadLetters []outbox.DeadLetter `json:"dead_letters"`
	}
	count := func() int {
		env.call(t, "GET", "/admin/targets/app/dead-letters", adminToken, &list)
		return len(list.DeadLetters)
	}
	waitUntil(t, "three dead letters", func() bool { return count() == 3 })
	for _, verb := range []string{"discard", "replay"} {
		for _, body := range []string{"", "{}", `{"ids":[]}`, `{"id":["evt_x"]}`, `{"all":false}`, `{"ids":[""]}`,
			`{"all":true,"ids":["evt_x"]}`, `{"all":true} {}`, "[]"} {
			code, resp := env.send(t, "POST", "/admin/targets/app/"+verb, adminToken, body, nil)
			if code != http.StatusBadRequest || !strings.Contains(resp, `{\"all\": true}`) {
				t.Errorf("%s with body %q = %d %s, want 400 telling how to select", verb, body, code, resp)
			}
			if n := count(); n != 3 {
				t.Fatalf("%s with body %q changed the dead letters: %d left, want 3", verb, body, n)
			}
		}
	}
	one := list.DeadLetters[0].Event.ID
	if code, resp := env.send(t, "POST", "/admin/targets/app/discard", adminToken, `{"ids":["`+one+`"]}`, nil); code != 200 || !strings.Contains(resp, `"discarded": 1`) {
		t.Fatalf("discard one = %d %s", code, resp)
	}
	if code, resp := env.send(t, "POST", "/admin/targets/app/discard", adminToken, `{"all":true}`, nil); code != 200 || !strings.Contains(resp, `"discarded": 2`) {
		t.Fatalf("discard all = %d %s", code, resp)
	}
	if n := count(); n != 0 {
		t.Errorf("%d dead letters after discarding all", n)
	}
}

// Issue 9: a wrong admin token says so, rather than "token required".
func TestAdminTokenMessages(t *testing.T) {
	env := newAdminEnv(t)
	for _, tc := range []struct{ token, want string }{
		{"", "admin token required"},
		{"wrong-token-0123456789", "invalid admin token"},
	} {
		code, body := env.call(t, "GET", "/admin/status", tc.token, nil)
		if code != 401 || !strings.Contains(body, tc.want) {
			t.Errorf("token %q: %d %s, want 401 %q", tc.token, code, body, tc.want)
		}
	}
}

// Issue 8 item 3: after a 401 the server closes the connection instead of
// waiting for the rest of a (possibly trickled) body.
func TestUnauthorizedClosesConnection(t *testing.T) {
	ts := newTestServer(t)
	for _, auth := range []string{"", "Authorization: Bearer wrong-token-0123456789\r\n"} {
		conn, err := net.Dial("tcp", ts.srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// Announce a 10 KB body and send none of it.
		fmt.Fprintf(conn, "POST /scim/v2/Users HTTP/1.1\r\nHost: x\r\n%sContent-Type: application/scim+json\r\nContent-Length: 10000\r\n\r\n", auth)
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 401 || !resp.Close {
			t.Errorf("auth %q: status %d, Connection close %v; want 401 and close", auth, resp.StatusCode, resp.Close)
		}
		start := time.Now()
		if _, err := conn.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("auth %q: read after 401 = %v, want EOF (connection closed)", auth, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("auth %q: connection closed only after %s", auth, d)
		}
	}
}

// Issue 8 item 15: a wrong method on an endpoint is 405 with Allow, not a
// 404 that says the endpoint does not exist.
func TestMethodNotAllowed(t *testing.T) {
	ts := newTestServer(t)
	for _, tc := range []struct{ method, path, allow string }{
		{"DELETE", "/Users", "GET, POST"},
		{"PUT", "/Groups", "GET, POST"},
		{"PATCH", "/Users/", "GET, POST"},
		{"POST", "/Users/some-id", "GET, PUT, PATCH, DELETE"},
		{"POST", "/Groups/some-id", "GET, PUT, PATCH, DELETE"},
		{"DELETE", "/ServiceProviderConfig", "GET"},
	} {
		r := ts.do(tc.method, tc.path, "")
		detail := r.scimError(t, http.StatusMethodNotAllowed, "")
		if got := r.header.Get("Allow"); got != tc.allow {
			t.Errorf("%s %s: Allow = %q, want %q", tc.method, tc.path, got, tc.allow)
		}
		if strings.Contains(detail, "no SCIM endpoint") {
			t.Errorf("%s %s: detail contradicts the endpoint: %s", tc.method, tc.path, detail)
		}
	}
	for _, path := range []string{"/.search", "/Users/.search", "/Groups/.search"} {
		ts.do("POST", path, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:SearchRequest"]}`).scimError(t, http.StatusNotImplemented, "")
	}
}

// Issue 8 item 15: a storage failure is 503 with a detail, so the IdP
// retries, rather than an opaque 500.
func TestStorageFailureIs503(t *testing.T) {
	ts := newTestServer(t)
	ts.store.Close() // the writer stops: every write fails as on a dead disk
	r := ts.do("POST", "/Users", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ada@example.com"}`)
	detail := r.scimError(t, http.StatusServiceUnavailable, "")
	if !strings.Contains(detail, "retry") || r.header.Get("Retry-After") == "" {
		t.Errorf("503 detail %q, Retry-After %q: want a retry hint", detail, r.header.Get("Retry-After"))
	}
}
