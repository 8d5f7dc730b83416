package gateway_test

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scimgate/scimgate/gateway"
	"github.com/scimgate/scimgate/gateway/store"
	"github.com/scimgate/scimgate/mapping"
)

// Benchmarks for the figures issue 2 names (targets, not timed tests):
//
//	go test -run '^$' -bench . -benchtime 2000x ./gateway/
//
// Every benchmark runs over real HTTP on loopback against a real store on a
// real bbolt file (fsync on).

// latencies collects request durations from concurrent clients.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

func (l *latencies) pct(p float64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0
	}
	slices.Sort(l.d)
	return l.d[min(len(l.d)-1, int(float64(len(l.d))*p))]
}

// benchClient sends SCIM requests with keep-alive, as Okta does within a job.
type benchClient struct {
	base string
	hc   *http.Client
}

func newBenchServer(b *testing.B) (*benchClient, *store.Store) {
	b.Helper()
	db := mustOpenDB(b)
	mapper, err := mapping.Compile(mapping.DefaultRules())
	if err != nil {
		b.Fatal(err)
	}
	st := store.New(db, mapper, store.Options{})
	b.Cleanup(st.Close)
	cfg := gateway.DefaultConfig()
	cfg.Auth.BearerTokens = gateway.Tokens(gateway.HashToken(testToken))
	srv := newHTTPServer(b, gateway.NewServer(cfg, st, discardLogger(), nil))
	tr := &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 64}
	return &benchClient{base: srv + "/scim/v2", hc: &http.Client{Transport: tr}}, st
}

func (c *benchClient) do(b *testing.B, method, path, body string, want int) {
	req, _ := http.NewRequest(method, c.base+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testToken)
	if body != "" {
		req.Header.Set("Content-Type", "application/scim+json; charset=utf-8")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		b.Error(err)
		return
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		b.Errorf("%s %s: %d, want %d", method, path, resp.StatusCode, want)
	}
}

// doJSON is do that returns the id of the created resource.
func (c *benchClient) create(b *testing.B, path, body string) string {
	req, _ := http.NewRequest("POST", c.base+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+testToken)
	req.Header.Set("Content-Type", "application/scim+json")
	resp, err := c.hc.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 201 {
		b.Fatalf("POST %s: %d %s", path, resp.StatusCode, raw)
	}
	_, rest, _ := strings.Cut(string(raw), `"id":"`)
	id, _, _ := strings.Cut(rest, `"`)
	return id
}

func oktaUser(name string, active bool, given string) string {
	return fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":%q,
 "name":{"givenName":%q,"familyName":"User"},"emails":[{"primary":true,"value":%q,"type":"work"}],
 "displayName":"Test User","locale":"en-US","externalId":"00u%s","groups":[],"password":"1mz050nq","active":%t}`,
		name, given, name, strings.ReplaceAll(name, "@", ""), active)
}

// BenchmarkOktaMix drives what Okta sends when users are assigned and
// later unassigned, from 16 concurrent clients: filter pre-check, create,
// full PUT (profile push), PATCH deactivate — and, every fifth time, a
// group push adding 50 members to the client's group. Reported: requests/s
// over all requests, per-request p50/p99, and the p50/p99 of the 50-member
// adds on their own.
func BenchmarkOktaMix(b *testing.B) {
	c, st := newBenchServer(b)
	pool := preload(b, st, 2000) // members for the group pushes
	groups := make(chan string, 64)
	for i := range cap(groups) {
		groups <- c.create(b, "/Groups", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"mix%d","members":[]}`, i))
	}
	var lat, groupLat latencies
	var seq, requests atomic.Int64
	timed := func(l *latencies, f func()) {
		t0 := time.Now()
		f()
		l.add(time.Since(t0))
		requests.Add(1)
	}
	b.SetParallelism(8) // 2 cores × 8 = 16 clients
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		g := <-groups
		for i := 0; pb.Next(); i++ {
			n := seq.Add(1)
			name := fmt.Sprintf("bench.user%d@okta.local", n)
			timed(&lat, func() {
				c.do(b, "GET", "/Users?filter="+url.QueryEscape(`userName eq "`+name+`"`)+"&startIndex=1&count=100", "", 200)
			})
			var id string
			timed(&lat, func() { id = c.create(b, "/Users", oktaUser(name, true, "Test")) })
			timed(&lat, func() { c.do(b, "PUT", "/Users/"+id, oktaUser(name, true, "Another"), 200) })
			timed(&lat, func() {
				c.do(b, "PATCH", "/Users/"+id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"active":false}}]}`, 204)
			})
			if i%5 == 4 {
				var vals []string
				for k := range 50 {
					vals = append(vals, fmt.Sprintf(`{"value":%q,"display":"u"}`, pool[(int(n)*50+k)%len(pool)]))
				}
				body := `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"add","path":"members","value":[` + strings.Join(vals, ",") + `]}]}`
				timed(&groupLat, func() { c.do(b, "PATCH", "/Groups/"+g, body, 204) })
			}
		}
	})
	elapsed := time.Since(start)
	b.ReportMetric(float64(requests.Load())/elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(lat.pct(0.5).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat.pct(0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(groupLat.pct(0.5).Microseconds())/1000, "group50-p50-ms")
	b.ReportMetric(float64(groupLat.pct(0.99).Microseconds())/1000, "group50-p99-ms")
}

// BenchmarkGroupAdd50 measures Okta's member add of 50 users in one PATCH
// to groups that grow: from one client (Okta pushes a group's changes one
// request at a time) and from 16 concurrent clients, one group each.
func BenchmarkGroupAdd50(b *testing.B) {
	for _, clients := range []int{1, 16} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			c, st := newBenchServer(b)
			users := preload(b, st, 5000)
			groups := make(chan string, clients)
			for i := range clients {
				groups <- c.create(b, "/Groups", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"g%d","members":[]}`, i))
			}
			var lat latencies
			var next, done atomic.Int64
			add := func(g string) {
				var vals []string
				for range 50 {
					vals = append(vals, fmt.Sprintf(`{"value":%q,"display":"u"}`, users[int(next.Add(1))%len(users)]))
				}
				body := `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"add","path":"members","value":[` + strings.Join(vals, ",") + `]}]}`
				t0 := time.Now()
				c.do(b, "PATCH", "/Groups/"+g, body, 204)
				lat.add(time.Since(t0))
			}
			b.ResetTimer()
			var wg sync.WaitGroup
			for range clients {
				g := <-groups
				wg.Go(func() {
					for done.Add(1) <= int64(b.N) {
						add(g)
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(lat.pct(0.5).Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat.pct(0.99).Microseconds())/1000, "p99-ms")
		})
	}
}

// preload creates n users through the store (16 writers, group commit) and
// returns their ids.
func preload(b *testing.B, st *store.Store, n int) []string {
	b.Helper()
	ids := make([]string, n)
	var wg sync.WaitGroup
	var next atomic.Int64
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				name := fmt.Sprintf("pre%06d@example.com", i)
				res, err := st.CreateUser(map[string]any{"userName": name, "active": true,
					"name":   map[string]any{"givenName": "Pre", "familyName": "Load"},
					"emails": []any{map[string]any{"value": name, "type": "work", "primary": true}}})
				if err != nil {
					b.Error(err)
					return
				}
				ids[i] = res.ID
			}
		})
	}
	wg.Wait()
	return ids
}

// BenchmarkScale checks that Okta's lookup (userName eq) and its paged
// import (count=100 at any startIndex) stay flat from 1k to 100k users.
func BenchmarkScale(b *testing.B) {
	for _, n := range []int{1_000, 10_000, 100_000} {
		c, st := newBenchServer(b)
		preload(b, st, n)
		b.Run(fmt.Sprintf("userNameEq/users=%d", n), func(b *testing.B) {
			for b.Loop() {
				name := fmt.Sprintf("PRE%06d@example.com", rand.IntN(n))
				c.do(b, "GET", "/Users?filter="+url.QueryEscape(`userName eq "`+name+`"`)+"&startIndex=1&count=100", "", 200)
			}
		})
		b.Run(fmt.Sprintf("importPage/users=%d", n), func(b *testing.B) {
			for b.Loop() {
				start := 1 + rand.IntN(n/100)*100
				c.do(b, "GET", fmt.Sprintf("/Users?startIndex=%d&count=100", start), "", 200)
			}
		})
	}
}
