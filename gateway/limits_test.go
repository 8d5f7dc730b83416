package gateway_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/scimgate/scimgate/gateway"
)

// Every scim.limits key is bounded at load, with an error
// naming the key and its bounds.
func TestLimitsBounded(t *testing.T) {
	for _, tc := range []struct {
		key string
		set func(*gateway.LimitsConfig)
	}{
		{"limits.max_depth", func(l *gateway.LimitsConfig) { l.MaxDepth = 10000 }},
		{"limits.max_depth", func(l *gateway.LimitsConfig) { l.MaxDepth = 2 }},
		{"limits.max_body_bytes", func(l *gateway.LimitsConfig) { l.MaxBodyBytes = 1 << 40 }},
		{"limits.max_page_size", func(l *gateway.LimitsConfig) { l.MaxPageSize = 1 << 30 }},
		{"limits.max_operations", func(l *gateway.LimitsConfig) { l.MaxOperations = 1 << 30 }},
		{"limits.max_members", func(l *gateway.LimitsConfig) { l.MaxMembers = 1 << 30 }},
		{"limits.max_filter_bytes", func(l *gateway.LimitsConfig) { l.MaxFilterBytes = 1 << 30 }},
		{"limits.max_values", func(l *gateway.LimitsConfig) { l.MaxValues = 1 << 30 }},
		{"limits.max_members_per_list", func(l *gateway.LimitsConfig) { l.MaxMembersPerList = 1 << 30 }},
		{"limits.max_resource_bytes", func(l *gateway.LimitsConfig) { l.MaxResourceBytes = 1 << 40 }},
		{"limits.max_resource_bytes", func(l *gateway.LimitsConfig) { l.MaxResourceBytes = 100 }},
		{"limits.read_timeout", func(l *gateway.LimitsConfig) { l.ReadTimeout = 100 * time.Hour }},
		{"limits.write_timeout", func(l *gateway.LimitsConfig) { l.WriteTimeout = time.Millisecond }},
		{"limits.idle_timeout", func(l *gateway.LimitsConfig) { l.IdleTimeout = 100 * time.Hour }},
		{"limits.max_connections", func(l *gateway.LimitsConfig) { l.MaxConnections = 1 << 30 }},
		{"limits.rate_per_second", func(l *gateway.LimitsConfig) { l.RatePerSecond = 1e12 }},
		{"limits.burst", func(l *gateway.LimitsConfig) { l.Burst = 1 << 30 }},
		{"limits.token_rate_per_second", func(l *gateway.LimitsConfig) { l.TokenRatePerSecond = 1e12 }},
		{"limits.token_burst", func(l *gateway.LimitsConfig) { l.TokenBurst = 1 << 30 }},
	} {
		c := gateway.DefaultConfig()
		tc.set(&c.Limits)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.key+":") || !strings.Contains(err.Error(), "between") {
			t.Errorf("%s out of bounds: %v, want an error naming it and its bounds", tc.key, err)
		}
	}
	if c := gateway.DefaultConfig(); c.Validate() != nil {
		err := c.Validate()
		t.Errorf("defaults: %v", err)
	}
}

// nested returns a JSON object nested n levels deep ({"a":{"a":…{}}}).
func nested(n int) string {
	return strings.Repeat(`{"a":`, n-1) + `{}` + strings.Repeat(`}`, n-1)
}

// scim.limits.max_depth has one source: a reload that
// reports it changed applies it to what a PATCH may produce too (it used
// to be copied into the store at start and never reloaded).
func TestMaxDepthReloadApplies(t *testing.T) {
	os := newOAuthServer(t)
	u := createUser(t, os.testServer, "ada@example.com")
	patch := func(depth int) response {
		return os.do("PATCH", "/Users/"+u, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"x","value":`+nested(depth)+`}]}`)
	}
	// At the default 32, a value 36 deep is refused (by the body bound).
	patch(36).scimError(t, 400, "invalidSyntax")
	cfg := os.cfg
	cfg.Limits.MaxDepth = 48
	changes, err := os.srv.Reload(cfg)
	if err != nil || !strings.Contains(strings.Join(changes, "\n"), "scim.limits.max_depth: 32 → 48") {
		t.Fatalf("Reload = %q, %v", changes, err)
	}
	// The body (40 levels) and the document it makes (38) are within 48.
	if r := patch(36); r.status >= 300 {
		t.Errorf("after reloading max_depth 48, a PATCH producing a 38-deep document: %d %s", r.status, r.raw)
	}
	cfg.Limits.MaxDepth = 16
	if _, err := os.srv.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	patch(14).scimError(t, 400, "invalidSyntax")
}

// A stored resource is bounded (scim.limits.max_resource_bytes, 512 KiB):
// twelve in-limit PATCHes of 10,000 emails each (unbounded, they made a
// 3 MB user whose every write took over a second) store what fits and
// are then refused with 413 naming the limit, changing nothing; the user
// can still be deactivated.
func TestResourceSizeBounded(t *testing.T) {
	ts := newTestServer(t)
	u := createUser(t, ts, "ada@example.com")
	count := func() int {
		list, _ := ts.do("GET", "/Users/"+u, "").must(t, 200).body["emails"].([]any)
		return len(list)
	}
	n0 := count()
	emails := func(batch, n int, pad string) string {
		var b strings.Builder
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `{"value":"a%d-%d%s@example.com","type":"work"}`, batch, i, pad)
		}
		return b.String()
	}
	accepted, refused := 0, 0
	for batch := range 12 {
		r := ts.do("PATCH", "/Users/"+u, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"add","path":"emails","value":[`+emails(batch, 10000, "")+`]}]}`)
		switch r.status {
		case http.StatusNoContent:
			if refused > 0 {
				t.Fatalf("PATCH %d accepted after a refusal", batch)
			}
			accepted++
		case http.StatusRequestEntityTooLarge:
			refused++
			if detail, _ := r.body["detail"].(string); !strings.Contains(detail, "scim.limits.max_resource_bytes") || !strings.Contains(detail, "524288") {
				t.Errorf("413 detail %q should name scim.limits.max_resource_bytes and its value", detail)
			}
		default:
			t.Fatalf("PATCH %d of 10,000 emails: %d %s", batch, r.status, r.raw)
		}
	}
	got := ts.do("GET", "/Users/"+u, "").must(t, 200)
	t.Logf("12 PATCHes of 10,000 emails: %d accepted, %d refused; the user is %d bytes as served", accepted, refused, len(got.raw))
	if accepted == 0 || refused < 10 || len(got.raw) > 512<<10 {
		t.Errorf("12 PATCHes of 10,000 emails: %d accepted, %d refused, user of %d bytes; want the bound to stop it under 512 KiB", accepted, refused, len(got.raw))
	}
	if n := count(); n != n0+accepted*10000 {
		t.Errorf("%d emails stored, want %d: a refused PATCH changed the user", n, n0+accepted*10000)
	}
	// Deactivating the user still works at the bound.
	ts.do("PATCH", "/Users/"+u, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"active","value":false}]}`).must(t, 204)
	// A POST of a resource past the bound (a body within max_body_bytes
	// and max_values) is refused the same way.
	ts.do("POST", "/Users", `{`+coreUser+`,"userName":"big@example.com","emails":[`+emails(999, 9000, strings.Repeat("x", 40))+`]}`).must(t, http.StatusRequestEntityTooLarge)
}
