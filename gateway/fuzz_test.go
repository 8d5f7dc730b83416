package gateway_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/scimgate/scimgate/gateway"
	"github.com/scimgate/scimgate/gateway/store"
	"github.com/scimgate/scimgate/mapping"
)

// FuzzHandlers drives the SCIM handlers with arbitrary methods, paths,
// queries, content types and bodies against a real store on a real bbolt
// file, and checks after every request that:
//   - no status is 5xx other than 503 (a storage fault) and 501 (/.search
//     and /Bulk, which RFC 7644 answers so when unsupported);
//   - the store stays readable: every user and group lists and reads;
//   - a refused request (4xx/5xx) changed nothing.
//
// Run longer with: go test -run '^$' -fuzz FuzzHandlers -fuzztime 5m ./gateway/
func FuzzHandlers(f *testing.F) {
	seeds := []struct{ method, path, query, ctype, body string }{
		{"POST", "/Users", "", "application/scim+json", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"ada@example.com","active":true,"emails":[{"value":"ada@example.com","primary":true}]}`},
		{"POST", "/Users", "", "application/json", `{"userName":"x","a":` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `}`},
		{"POST", "/Users", "", "application/scim+json", `{"userName":"ada@example.com ","emails":[{"value":"boss@x.com\u0000zzz"}]}`},
		{"POST", "/Users", "", "application/scim+json", `{"urn:ietf:params:scim:schemas:core:2.0:User":{"password":"hunter2"},"userName":"p"}`},
		{"POST", "/Users", "", "application/scim+json", `{"userName":"\xff\xfe"}`},
		{"POST", "/Groups", "", "application/scim+json", `{"displayName":"Eng","members":[{"value":"nope"}]}`},
		{"PATCH", "/Users/ID", "", "application/scim+json", `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"add","value":{"emails":[{"value":"a@b"},{"value":"c@d"}]}}]}`},
		{"PATCH", "/Groups/ID", "", "application/scim+json", `{"Operations":[{"op":"Remove","path":"members","value":[{"value":"ID"}]}]}`},
		{"PUT", "/Users/ID", "", "application/scim+json", `{"userName":"renamed","active":"False"}`},
		{"GET", "/Users", `filter=members.value eq "x" or userName sw "a"&startIndex=-5&count=99999`, "", ""},
		{"GET", "/Groups", `filter=members[value eq "ID"]&attributes=members&excludedAttributes=displayName`, "", ""},
		{"GET", "/Users", `filter=emails[type eq "work" and value co "@"].value pr`, "", ""},
		{"DELETE", "/Users/ID", "", "", ""},
		{"GET", "/Schemas/urn:ietf:params:scim:schemas:core:2.0:User", "", "", ""},
		{"POST", "/.search", "", "application/scim+json", `{}`},
	}
	for _, s := range seeds {
		f.Add(s.method, s.path, s.query, s.ctype, []byte(s.body))
	}
	db := mustOpenDB(f)
	mapper, err := mapping.Compile(mapping.DefaultRules())
	if err != nil {
		f.Fatal(err)
	}
	st := store.New(db, mapper, store.Options{})
	f.Cleanup(st.Close)
	cfg := gateway.DefaultConfig()
	cfg.Auth.BearerTokens = gateway.Tokens(gateway.HashToken(testToken))
	cfg.Limits.MaxBodyBytes = 64 << 10
	srv := gateway.NewServer(cfg, st, discardLogger(), nil)
	serve := func(method, target, ctype string, body []byte) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, "http://scim.test/scim/v2"+target, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testToken)
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		return rec
	}
	// state is a digest of everything the store holds, read through the
	// store's own API: listing and reading every resource must work.
	state := func(t *testing.T) [32]byte {
		t.Helper()
		h := sha256.New()
		for _, list := range []func(store.Query) (int, []*store.Resource, error){st.ListUsers, st.ListGroups} {
			total, page, err := list(store.Query{StartIndex: 1, Count: 1 << 20, Members: true})
			if err != nil {
				t.Fatalf("store unreadable: list: %v", err)
			}
			if total != len(page) {
				t.Fatalf("store list: total %d, page %d", total, len(page))
			}
			for _, r := range page {
				b, err := json.Marshal(r.Doc)
				if err != nil {
					t.Fatalf("store resource %s does not encode: %v", r.ID, err)
				}
				h.Write(b)
			}
		}
		_, users, _ := st.ListUsers(store.Query{StartIndex: 1, Count: 1 << 20})
		for _, u := range users {
			if _, err := st.GetUser(u.ID); err != nil {
				t.Fatalf("store unreadable: GET user %s: %v", u.ID, err)
			}
		}
		return [32]byte(h.Sum(nil))
	}
	// ids the fuzzer's paths can name: "ID" is replaced by a real user or
	// group id, so updates and deletes reach existing resources.
	someID := func() string {
		if _, us, _ := st.ListUsers(store.Query{StartIndex: 1, Count: 1}); len(us) > 0 {
			return us[0].ID
		}
		return "no-such-id"
	}
	f.Fuzz(func(t *testing.T, method, path, query, ctype string, body []byte) {
		switch method {
		case "GET", "POST", "PUT", "PATCH", "DELETE":
		default:
			return
		}
		if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \r\n\t#?%") || strings.ContainsAny(query, " \r\n\t#") {
			return // not a request line a client can send
		}
		path = strings.ReplaceAll(path, "ID", someID())
		body = bytes.ReplaceAll(body, []byte("ID"), []byte(someID()))
		target := path
		if query != "" {
			target += "?" + strings.NewReplacer(" ", "%20", `"`, "%22").Replace(query)
		}
		if _, err := url.ParseRequestURI("http://scim.test/scim/v2" + target); err != nil {
			return // no client can send it
		}
		before := state(t)
		done := make(chan *httptest.ResponseRecorder, 1)
		go func() { done <- serve(method, target, ctype, body) }()
		var rec *httptest.ResponseRecorder
		select {
		case rec = <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s %s (%d-byte body) did not finish in 10 s", method, target, len(body))
		}
		// 501 is RFC 7644's answer for the features scimgate does not offer
		// (/.search, /Bulk); 503 a storage fault. Nothing else may be 5xx.
		if rec.Code >= 500 && rec.Code != http.StatusServiceUnavailable && rec.Code != http.StatusNotImplemented {
			t.Fatalf("%s %s: %d %s", method, target, rec.Code, rec.Body.String())
		}
		after := state(t)
		if rec.Code >= 400 && before != after {
			t.Fatalf("%s %s was refused with %d but changed the store: %s", method, target, rec.Code, rec.Body.String())
		}
		if ct := rec.Header().Get("Content-Type"); rec.Body.Len() > 0 && ct != "application/scim+json" {
			t.Fatalf("%s %s: Content-Type %q", method, target, ct)
		}
	})
}

// FuzzAdminAndAppAPI drives the admin listener — the operator API under
// /admin/ and the app API under /v1/ — with arbitrary methods, paths,
// queries, tokens and bodies, against a real store, a running dispatcher
// and the feed over one bbolt file, and checks after every request that:
//   - no status is 5xx other than 501 and 503;
//   - a token opens only its own API: the app token nothing under /admin/,
//     the admin token nothing under /v1/, no token or a wrong one neither;
//   - the store stays readable.
//
// Run longer with: go test -run '^$' -fuzz FuzzAdminAndAppAPI -fuzztime 5m ./gateway/
func FuzzAdminAndAppAPI(f *testing.F) {
	const (
		noToken = iota
		admin
		app
		wrong
	)
	seeds := []struct {
		method, path, query string
		token               uint8
		body                string
	}{
		{"GET", "/v1/users", "limit=2&active=true", app, ""},
		{"GET", "/v1/users", "cursor=!!&updated_since=yesterday", app, ""},
		{"GET", "/v1/users/UID", "", app, ""},
		{"GET", "/v1/users/UID/groups", "limit=0", app, ""},
		{"GET", "/v1/groups/GID/members", "limit=1001", app, ""},
		{"GET", "/v1/groups", "", admin, ""},
		{"GET", "/v1/events", "after=0&limit=5&types=user.*,group.member_added", app, ""},
		{"GET", "/v1/events", "after=99999999999999&wait=10ms&types=**", app, ""},
		{"GET", "/admin/status", "", app, ""},
		{"GET", "/admin/status", "", admin, ""},
		{"GET", "/admin/targets/app/dead-letters", "after=x&limit=-1", admin, ""},
		{"POST", "/admin/targets/app/discard", "", admin, `{"ids":[]}`},
		{"POST", "/admin/targets/app/discard", "", admin, `{"id":["x"]}`},
		{"POST", "/admin/targets/app/replay", "", admin, `{"all":true}`},
		{"POST", "/admin/targets/app/history", "", admin, `{"after":"0","since":"2026-01-01T00:00:00Z"}`},
		{"POST", "/admin/targets/nope/pause", "reason=x", admin, ""},
		{"POST", "/admin/targets/app/retry", "", admin, `{"ids":["UID"]}`},
		{"POST", "/admin/reload", "", wrong, ""},
		{"POST", "/admin/compact", "force=true", admin, ""},
		{"GET", "/admin/backup", "", noToken, ""},
		{"GET", "/metrics", "", noToken, ""},
	}
	for _, s := range seeds {
		f.Add(s.method, s.path, s.query, s.token, []byte(s.body))
	}
	env := newAdminEnvAPI(f, gateway.APIConfig{Tokens: []string{gateway.HashToken(apiToken)}, MaxWait: 20 * time.Millisecond})
	env.reload = func() ([]string, error) { return nil, nil }
	st := env.scim.store
	user, err := st.CreateUser(map[string]any{"userName": "fuzz@example.com"})
	if err != nil {
		f.Fatal(err)
	}
	group, err := st.CreateGroup(map[string]any{"displayName": "fuzz", "members": []any{map[string]any{"value": user.ID}}})
	if err != nil {
		f.Fatal(err)
	}
	tokens := map[uint8]string{admin: adminToken, app: apiToken, wrong: "wrong-token-0123456789abcdef"}
	f.Fuzz(func(t *testing.T, method, path, query string, token uint8, body []byte) {
		switch method {
		case "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD":
		default:
			return
		}
		if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \r\n\t#?%") || strings.ContainsAny(query, " \r\n\t#") {
			return // not a request line a client can send
		}
		path = strings.NewReplacer("UID", user.ID, "GID", group.ID).Replace(path)
		body = bytes.ReplaceAll(body, []byte("UID"), []byte(user.ID))
		target := path
		if query != "" {
			target += "?" + strings.NewReplacer(`"`, "%22").Replace(query)
		}
		if _, err := url.ParseRequestURI("http://admin.test" + target); err != nil {
			return
		}
		token %= 4
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req := httptest.NewRequestWithContext(ctx, method, "http://admin.test"+target, bytes.NewReader(body))
		if tok := tokens[token]; tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		env.adminAPI.ServeHTTP(rec, req)
		if rec.Code >= 500 && rec.Code != http.StatusServiceUnavailable && rec.Code != http.StatusNotImplemented {
			t.Fatalf("%s %s: %d %s", method, target, rec.Code, rec.Body.String())
		}
		ok := rec.Code < 300
		clean := strings.TrimRight(path, "/")
		switch {
		case !ok:
		case strings.HasPrefix(clean, "/admin") && token != admin:
			t.Fatalf("%s %s with token %d: %d; only the admin token opens /admin/", method, target, token, rec.Code)
		case strings.HasPrefix(clean, "/v1") && token != app:
			t.Fatalf("%s %s with token %d: %d; only an app token opens /v1/", method, target, token, rec.Code)
		}
		if _, _, err := st.ListUsers(store.Query{StartIndex: 1, Count: 10}); err != nil {
			t.Fatalf("store unreadable after %s %s: %v", method, target, err)
		}
	})
}
