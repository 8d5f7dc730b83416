package gateway_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scimgate/scimgate/gateway"
	"github.com/scimgate/scimgate/gateway/store"
	"github.com/scimgate/scimgate/mapping"
	"github.com/scimgate/scimgate/outbox"
)

// Benchmarks for the figures docs/performance.md reports (targets, not
// timed tests):
//
//	go test -run '^$' -bench 'RawCeiling|OktaMix' -benchtime 3000x ./gateway/
//	go test -run '^$' -bench 'Create|GroupAdd50' -benchtime 2000x ./gateway/
//	go test -run '^$' -bench 'Scale' -benchtime 2000x ./gateway/
//
// Every benchmark runs over real HTTP on loopback against a real store on a
// real bbolt file opened with the options cmd/scimgate uses (fsync on), and
// — as in production — a real dispatcher delivers the events to a real
// receiver in the same process while the clients run.

// openBenchDB opens a fresh bbolt file with the options of
// cmd/scimgate/app.go and the store's and outbox's buckets.
func openBenchDB(b *testing.B) *bolt.DB {
	b.Helper()
	db, err := bolt.Open(filepath.Join(b.TempDir(), "scimgate.db"), 0o600, appBoltOptions())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	err = db.Update(func(tx *bolt.Tx) error {
		if err := store.InitBuckets(tx); err != nil {
			return err
		}
		return outbox.InitBuckets(tx)
	})
	if err != nil {
		b.Fatal(err)
	}
	return db
}

// appBoltOptions are cmd/scimgate/app.go's bbolt options.
func appBoltOptions() *bolt.Options {
	return &bolt.Options{Timeout: time.Second, NoFreelistSync: true, FreelistType: bolt.FreelistMapType,
		InitialMmapSize: 256 << 20}
}

// rawCeiling measures what the disk allows: one writer goroutine
// group-committing (as the store's writer does) 1 KiB puts under random
// 16-byte keys from 16 producers, fsync on, for d. It returns writes/s.
func rawCeiling(b *testing.B, d time.Duration) float64 {
	b.Helper()
	db, err := bolt.Open(filepath.Join(b.TempDir(), "raw.db"), 0o600, appBoltOptions())
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("raw")); return err }); err != nil {
		b.Fatal(err)
	}
	type req struct {
		key  []byte
		done chan error
	}
	queue := make(chan req, 512)
	go func() {
		value := make([]byte, 1024)
		for first := range queue {
			batch := []req{first}
		fill:
			for len(batch) < 512 {
				select {
				case r, ok := <-queue:
					if !ok {
						break fill
					}
					batch = append(batch, r)
				default:
					break fill
				}
			}
			err := db.Update(func(tx *bolt.Tx) error {
				bk := tx.Bucket([]byte("raw"))
				for _, r := range batch {
					if err := bk.Put(r.key, value); err != nil {
						return err
					}
				}
				return nil
			})
			for _, r := range batch {
				r.done <- err
			}
		}
	}()
	var n atomic.Int64
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			done := make(chan error, 1)
			for time.Now().Before(deadline) {
				key := make([]byte, 16)
				_, _ = rand.Read(key)
				queue <- req{key: key, done: done}
				if err := <-done; err != nil {
					b.Error(err)
					return
				}
				n.Add(1)
			}
		})
	}
	start := time.Now()
	wg.Wait()
	close(queue)
	return float64(n.Load()) / time.Since(start).Seconds()
}

// BenchmarkRawCeiling reports rawCeiling over 3 s (b.N is ignored).
func BenchmarkRawCeiling(b *testing.B) {
	b.ReportMetric(rawCeiling(b, 3*time.Second), "writes/s")
}

// receiver is the app's side in the benchmarks: it answers 204 and records,
// for each event, the time from its occurred_at (stamped inside the
// committing transaction, so the latency is a bound from above) to its
// arrival.
type receiver struct {
	n   atomic.Int64
	lat latencies
}

func newReceiver(b *testing.B) (*receiver, string) {
	r := &receiver{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var env struct {
			OccurredAt time.Time `json:"occurred_at"`
		}
		body, _ := io.ReadAll(req.Body)
		if json.Unmarshal(body, &env) == nil {
			r.lat.add(time.Since(env.OccurredAt))
		}
		r.n.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	b.Cleanup(srv.Close)
	return r, srv.URL
}

// benchEnv is one gateway as cmd/scimgate wires it: store, SCIM server,
// dispatcher delivering to a receiver.
type benchEnv struct {
	c    *benchClient
	st   *store.Store
	db   *bolt.DB
	d    *outbox.Dispatcher
	recv *receiver
}

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

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// benchClient sends SCIM requests with keep-alive, as Okta does within a job.
type benchClient struct {
	base string
	hc   *http.Client
}

// newBenchServer is newBenchEnv with delivery running.
func newBenchServer(b *testing.B) (*benchClient, *store.Store) {
	e := newBenchEnv(b, true)
	return e.c, e.st
}

// newBenchEnv starts a gateway on a fresh file; with delivery, a
// dispatcher (default config, one webhook target) delivers to a receiver.
func newBenchEnv(b *testing.B, delivery bool) *benchEnv {
	b.Helper()
	e := &benchEnv{db: openBenchDB(b)}
	mapper, err := mapping.Compile(mapping.DefaultRules())
	if err != nil {
		b.Fatal(err)
	}
	opts := store.Options{UserExtensions: mapper.UserExtensions()}
	if delivery {
		var url string
		e.recv, url = newReceiver(b)
		secret, err := outbox.NewSecret()
		if err != nil {
			b.Fatal(err)
		}
		cfg := testOutboxConfig()
		cfg.Targets = []outbox.Target{{Name: "app", URL: url + "/hooks", Secrets: []string{secret}}}
		if e.d, err = outbox.NewDispatcher(e.db, cfg, nil, outbox.NewMetrics()); err != nil {
			b.Fatal(err)
		}
		opts.OnCommit = e.d.Notify
	}
	e.st = store.New(e.db, mapper, opts)
	b.Cleanup(e.st.Close)
	if delivery {
		// Stopped before the store closes (cleanups run last first), as
		// cmd/scimgate does.
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- e.d.Run(ctx) }()
		b.Cleanup(func() {
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				b.Errorf("dispatcher: %v", err)
			}
		})
	}
	cfg := gateway.DefaultConfig()
	cfg.Auth.BearerTokens = gateway.Tokens(gateway.HashToken(testToken))
	srv := newHTTPServer(b, gateway.NewServer(cfg, e.st, discardLogger(), nil))
	tr := &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 64}
	e.c = &benchClient{base: srv + "/scim/v2", hc: &http.Client{Transport: tr}}
	return e
}

// drain waits until the dispatcher has delivered everything (at most
// limit) and returns how long that took.
func (e *benchEnv) drain(b *testing.B, limit time.Duration) time.Duration {
	start := time.Now()
	for time.Since(start) < limit {
		sts, err := e.d.Status()
		if err != nil {
			b.Fatal(err)
		}
		if sts[0].Backlog == 0 {
			return time.Since(start)
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.Errorf("backlog not drained after %v", limit)
	return limit
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

// create POSTs body and returns the id of the created resource.
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

func add50Body(ids func(k int) string) string {
	var vals []string
	for k := range 50 {
		vals = append(vals, fmt.Sprintf(`{"value":%q,"display":"u"}`, ids(k)))
	}
	return `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"add","path":"members","value":[` + strings.Join(vals, ",") + `]}]}`
}

// mixSeconds is SCIMGATE_MIX_SECONDS: run BenchmarkOktaMix for that long
// (docs/performance.md's 60 s full-rate run) instead of b.N rounds.
func mixSeconds() time.Duration {
	n, _ := strconv.Atoi(os.Getenv("SCIMGATE_MIX_SECONDS"))
	return time.Duration(n) * time.Second
}

// BenchmarkOktaMix drives what Okta sends when users are assigned and
// later unassigned, from 16 concurrent clients: filter pre-check, create,
// full PUT (profile push), PATCH deactivate — and, every fifth time, a
// group push adding 50 members to the client's group — while the
// dispatcher delivers every event to a receiver. b.N is the number of
// rounds (4 requests each, plus the group adds). Reported: requests/s,
// p50/p99 over all requests, of creates and of the 50-member adds, the
// commit-to-receiver p99 during the run, the time the backlog takes to
// drain after it, and the raw bbolt group-commit ceiling measured in the
// same run (rawCeiling, 2 s) with the ratio of the two. With
// SCIMGATE_USERS=N, N users are stored first (flatness); with
// SCIMGATE_MIX_SECONDS=S it runs S seconds instead of b.N rounds.
func BenchmarkOktaMix(b *testing.B) {
	full := b.N >= 100 // the framework's first call, b.N = 1, only warms up
	var ceiling float64
	if full {
		ceiling = rawCeiling(b, 2*time.Second)
	}
	// SCIMGATE_NO_DELIVERY=1: no dispatcher, to measure what its own
	// commits cost the SCIM writes (the events pile up undelivered).
	delivery := os.Getenv("SCIMGATE_NO_DELIVERY") == ""
	e := newBenchEnv(b, delivery)
	c := e.c
	stored, _ := strconv.Atoi(os.Getenv("SCIMGATE_USERS"))
	// Members for the group pushes: enough that no group gets one twice
	// in a run of b.N rounds (a fifth of them add 50).
	pool := preload(b, e.st, max(2000, stored, b.N*50/5+1000))
	var delivered0 int64
	if full && delivery {
		e.drain(b, 5*time.Minute) // the preload's events are not the run's
		delivered0 = e.recv.n.Load()
		e.recv.lat = latencies{}
	}
	groups := make(chan string, 64)
	for i := range cap(groups) {
		groups <- c.create(b, "/Groups", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"mix%d","members":[]}`, i))
	}
	var lat, createLat, groupLat latencies
	var seq, requests, rounds atomic.Int64
	timed := func(l *latencies, f func()) {
		t0 := time.Now()
		f()
		d := time.Since(t0)
		l.add(d)
		if l != &lat {
			lat.add(d)
		}
		requests.Add(1)
	}
	deadline := time.Now().Add(mixSeconds())
	more := func() bool {
		if mixSeconds() > 0 {
			return time.Now().Before(deadline)
		}
		return rounds.Add(1) <= int64(b.N)
	}
	ws0, bs0 := e.st.WriterStats(), e.db.Stats()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for client := range 16 {
		g := <-groups
		wg.Go(func() {
			// Each group gets pool users it does not have yet (a cursor
			// of its own), so every add of 50 is 50 new memberships.
			cursor := client * len(pool) / 16
			for i := 0; more(); i++ {
				n := seq.Add(1)
				name := fmt.Sprintf("bench.user%d@okta.local", n)
				timed(&lat, func() {
					c.do(b, "GET", "/Users?filter="+url.QueryEscape(`userName eq "`+name+`"`)+"&startIndex=1&count=100", "", 200)
				})
				var id string
				timed(&createLat, func() { id = c.create(b, "/Users", oktaUser(name, true, "Test")) })
				timed(&lat, func() { c.do(b, "PUT", "/Users/"+id, oktaUser(name, true, "Another"), 200) })
				timed(&lat, func() {
					c.do(b, "PATCH", "/Users/"+id, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"active":false}}]}`, 204)
				})
				if i%5 == 4 {
					body := add50Body(func(k int) string { return pool[(cursor+k)%len(pool)] })
					cursor += 50
					timed(&groupLat, func() { c.do(b, "PATCH", "/Groups/"+g, body, 204) })
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	rate := float64(requests.Load()) / elapsed.Seconds()
	ws, bs := e.st.WriterStats(), e.db.Stats()
	b.ReportMetric(rate, "req/s")
	// Pages written per request, the dispatcher's included: what each
	// commit's fsync has to push.
	b.ReportMetric(float64(bs.TxStats.GetWrite()-bs0.TxStats.GetWrite())/float64(requests.Load()), "pages/req")
	b.ReportMetric(float64(ws.Busy-ws0.Busy)/float64(elapsed), "writer-busy")
	b.ReportMetric(float64(ws.LockWait-ws0.LockWait)/float64(elapsed), "writer-lockwait")
	b.ReportMetric(float64(ws.Applying-ws0.Applying)/float64(elapsed), "writer-applying")
	b.ReportMetric(float64(ws.Writes-ws0.Writes)/float64(max(1, ws.Commits-ws0.Commits)), "writes/commit")
	b.ReportMetric(float64(ws.Conflicts-ws0.Conflicts), "conflicts")
	b.ReportMetric(ms(lat.pct(0.5)), "p50-ms")
	b.ReportMetric(ms(lat.pct(0.99)), "p99-ms")
	b.ReportMetric(ms(createLat.pct(0.5)), "create-p50-ms")
	b.ReportMetric(ms(createLat.pct(0.99)), "create-p99-ms")
	b.ReportMetric(ms(groupLat.pct(0.5)), "group50-p50-ms")
	b.ReportMetric(ms(groupLat.pct(0.99)), "group50-p99-ms")
	b.ReportMetric(ceiling, "ceiling-w/s")
	b.ReportMetric(rate/ceiling, "ceiling-ratio")
	if !full || !delivery {
		return
	}
	deliverP99 := e.recv.lat.pct(0.99) // during the run
	drained := e.drain(b, 5*time.Minute)
	b.ReportMetric(ms(deliverP99), "deliver-p99-ms")
	b.ReportMetric(drained.Seconds(), "drain-s")
	b.ReportMetric(float64(e.recv.n.Load()-delivered0)/elapsed.Seconds(), "delivered/s")
}

// BenchmarkCreate measures POST /Users alone, from 1 and from 16 clients,
// with delivery running.
func BenchmarkCreate(b *testing.B) {
	for _, clients := range []int{1, 16} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			e := newBenchEnv(b, true)
			var lat latencies
			var next atomic.Int64
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for range clients {
				wg.Go(func() {
					for {
						n := next.Add(1)
						if n > int64(b.N) {
							return
						}
						t0 := time.Now()
						e.c.create(b, "/Users", oktaUser(fmt.Sprintf("create%d@okta.local", n), true, "Test"))
						lat.add(time.Since(t0))
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
			b.ReportMetric(ms(lat.pct(0.5)), "p50-ms")
			b.ReportMetric(ms(lat.pct(0.99)), "p99-ms")
		})
	}
}

// BenchmarkGroupAdd50 measures Okta's member add of 50 users in one PATCH
// to groups that grow: from one client (Okta pushes a group's changes one
// request at a time) and from 16 concurrent clients, one group each.
func BenchmarkGroupAdd50(b *testing.B) {
	for _, clients := range []int{1, 16} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			c, st := newBenchServer(b)
			// Every add brings 50 users its group does not have yet.
			users := preload(b, st, b.N*50/clients+1000)
			groups := make(chan string, clients)
			for i := range clients {
				groups <- c.create(b, "/Groups", fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"g%d","members":[]}`, i))
			}
			var lat latencies
			var done atomic.Int64
			b.ResetTimer()
			var wg sync.WaitGroup
			for client := range clients {
				g := <-groups
				wg.Go(func() {
					cursor := client * len(users) / clients
					for done.Add(1) <= int64(b.N) {
						body := add50Body(func(k int) string { return users[(cursor+k)%len(users)] })
						cursor += 50
						t0 := time.Now()
						c.do(b, "PATCH", "/Groups/"+g, body, 204)
						lat.add(time.Since(t0))
					}
				})
			}
			wg.Wait()
			b.ReportMetric(ms(lat.pct(0.5)), "p50-ms")
			b.ReportMetric(ms(lat.pct(0.99)), "p99-ms")
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
		e := newBenchEnv(b, false) // reads only: nothing to deliver
		c := e.c
		preload(b, e.st, n)
		b.Run(fmt.Sprintf("userNameEq/users=%d", n), func(b *testing.B) {
			for b.Loop() {
				name := fmt.Sprintf("PRE%06d@example.com", mrand.IntN(n))
				c.do(b, "GET", "/Users?filter="+url.QueryEscape(`userName eq "`+name+`"`)+"&startIndex=1&count=100", "", 200)
			}
		})
		b.Run(fmt.Sprintf("importPage/users=%d", n), func(b *testing.B) {
			for b.Loop() {
				start := 1 + mrand.IntN(n/100)*100
				c.do(b, "GET", fmt.Sprintf("/Users?startIndex=%d&count=100", start), "", 200)
			}
		})
	}
}

// BenchmarkAppAPI is the app's side through HTTP, as an app calls it: a
// page of 100 canonical records from /v1/users (the first, and any page by
// its cursor) and a page of 100 members of a 50,000-member group, at 1,000
// and at 100,000 stored users. Paging must stay flat (O(page)).
//
//	go test -run '^$' -bench AppAPI -benchtime 2000x ./gateway/
func BenchmarkAppAPI(b *testing.B) {
	for _, n := range []int{1_000, 100_000} {
		e := newBenchEnv(b, false)
		ids := preload(b, e.st, n)
		admin := gateway.NewAdmin(gateway.AdminConfig{Listen: "127.0.0.1:0", Tokens: []string{gateway.HashToken(adminToken)}},
			gateway.AdminDeps{DB: e.db, Store: e.st, Logger: discardLogger(), Version: "bench",
				API: gateway.APIConfig{Tokens: []string{gateway.HashToken(apiToken)}, MaxWait: time.Second}})
		api := &benchClient{base: newHTTPServer(b, admin), hc: e.c.hc}
		// A group of min(n, 50,000) members, added 1,000 per PATCH.
		g := e.c.create(b, "/Groups", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"everyone"}`)
		members := ids[:min(n, 50_000)]
		for chunk := range slices.Chunk(members, 1000) {
			vals := make([]string, len(chunk))
			for i, id := range chunk {
				vals[i] = `{"value":"` + id + `"}`
			}
			e.c.do(b, "PATCH", "/Groups/"+g, `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"add","path":"members","value":[`+strings.Join(vals, ",")+`]}]}`, 204)
		}
		userCursors := api.cursors(b, "/v1/users?limit=100")
		memberCursors := api.cursors(b, "/v1/groups/"+g+"/members?limit=100")
		b.Logf("%d users: %d user pages, %d member pages", n, len(userCursors), len(memberCursors))
		for _, bench := range []struct {
			name, path string
			cursors    []string
		}{
			{"users/first", "/v1/users?limit=100", nil},
			{"users/any", "/v1/users?limit=100", userCursors},
			{"members/first", "/v1/groups/" + g + "/members?limit=100", nil},
			{"members/any", "/v1/groups/" + g + "/members?limit=100", memberCursors},
		} {
			b.Run(fmt.Sprintf("%s/users=%d", bench.name, n), func(b *testing.B) {
				lat := make([]time.Duration, 0, b.N)
				for b.Loop() {
					path := bench.path
					if len(bench.cursors) > 0 {
						path += "&cursor=" + url.QueryEscape(bench.cursors[mrand.IntN(len(bench.cursors))])
					}
					start := time.Now()
					api.apiGet(b, path, nil)
					lat = append(lat, time.Since(start))
				}
				slices.Sort(lat)
				b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
				b.ReportMetric(ms(lat[len(lat)*99/100]), "p99-ms")
			})
		}
	}
}

// apiGet GETs an app API path with the app token and decodes the page.
func (c *benchClient) apiGet(b *testing.B, path string, page any) {
	req, _ := http.NewRequest("GET", c.base+path, nil)
	req.Header.Set("Authorization", "Bearer "+apiToken)
	resp, err := c.hc.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		body, _ := io.ReadAll(resp.Body)
		b.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	if page == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return
	}
	if err := json.NewDecoder(resp.Body).Decode(page); err != nil {
		b.Fatal(err)
	}
}

// cursors walks every page of an app API list and returns the cursor of
// each page after the first.
func (c *benchClient) cursors(b *testing.B, path string) []string {
	var out []string
	next := ""
	for {
		p := path
		if next != "" {
			p += "&cursor=" + url.QueryEscape(next)
		}
		var page struct {
			Data       []json.RawMessage `json:"data"`
			NextCursor *string           `json:"next_cursor"`
		}
		c.apiGet(b, p, &page)
		if len(page.Data) == 0 || page.NextCursor == nil || *page.NextCursor == "" {
			return out
		}
		next = *page.NextCursor
		out = append(out, next)
	}
}
