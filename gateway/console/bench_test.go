package console_test

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scimgate/scimgate/gateway/store"
)

// BenchmarkConsolePages renders the overview, a target page (its first and
// a middle page of dead letters, a middle page of pending events), one
// pending event, and the users pages with 100,000 users
// stored, 10,000 of whose user.created events are dead letters (the
// receiver answered 400) and 90,000 pending behind a paused target. The
// figures are in docs/performance.md.
//
//	go test -run '^$' -bench ConsolePages -benchtime 200x ./gateway/console/
func BenchmarkConsolePages(b *testing.B) {
	const users, dead = 100_000, 10_000
	e := newEnv(b, true)
	e.db.NoSync = true // the fixture only: the pages read
	e.status.Store(400)
	create := func(from, to int) {
		var next atomic.Int64
		next.Store(int64(from))
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for {
					i := int(next.Add(1)) - 1
					if i >= to {
						return
					}
					name := fmt.Sprintf("user%06d@example.com", i)
					if _, err := e.st.CreateUser(map[string]any{"userName": name, "externalId": fmt.Sprintf("00u%06d", i), "active": true,
						"name":   map[string]any{"givenName": "Pre", "familyName": "Load"},
						"emails": []any{map[string]any{"value": name, "type": "work", "primary": true}}}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
	}
	start := time.Now()
	create(0, dead)
	for deadline := time.Now().Add(5 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
		if st, _ := e.d.Status(); st[0].DeadLetters == dead {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("timed out waiting for 10,000 dead letters")
		}
	}
	if err := e.d.Pause("app", "benchmark"); err != nil {
		b.Fatal(err)
	}
	create(dead, users)
	b.Logf("fixture: %d users, %d dead letters in %s", users, dead, time.Since(start).Round(time.Second))
	st, _ := e.d.Status()
	b.Logf("target: backlog %d, dead letters %d", st[0].Backlog, st[0].DeadLetters)
	list, err := e.d.DeadLetters("app", 0, dead/2)
	if err != nil {
		b.Fatal(err)
	}
	mid := list[len(list)-1].Position
	pend, err := e.d.Pending("app", 0, 1000)
	if err != nil || len(pend) < 1000 {
		b.Fatalf("pending: %d, %v", len(pend), err)
	}
	pmid := pend[len(pend)-1].Position
	for range 44 { // about the middle of the 90,000 pending events
		if pend, err = e.d.Pending("app", pmid, 1000); err != nil || len(pend) == 0 {
			b.Fatalf("pending: %v", err)
		}
		pmid = pend[len(pend)-1].Position
	}

	req, _ := http.NewRequest("GET", "", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	for _, page := range []struct{ name, path string }{
		{"overview", "/"},
		{"target/first", "/targets/app"},
		{"target/middle", fmt.Sprintf("/targets/app?after=%d", mid)},
		{"target/pending-middle", fmt.Sprintf("/targets/app?pafter=%d", pmid)},
		{"pending-event", fmt.Sprintf("/targets/app/pending/%d", pmid+1)},
		{"users/first", "/users"},
		{"users/search", "/users?q=" + url.QueryEscape("user054321@example.com")},
		{"user", ""},
	} {
		b.Run(page.name, func(b *testing.B) {
			path := page.path
			if page.name == "user" {
				_, list, err := e.st.ListUsers(storeQueryAt(50_000))
				if err != nil || len(list) == 0 {
					b.Fatal(err)
				}
				path = "/users/" + list[0].ID
			}
			lat := make([]time.Duration, 0, b.N)
			for b.Loop() {
				r := req.Clone(req.Context())
				r.URL, _ = url.Parse(e.admin + path)
				t0 := time.Now()
				resp, err := http.DefaultClient.Do(r)
				if err != nil {
					b.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("GET %s: %d", path, resp.StatusCode)
				}
				lat = append(lat, time.Since(t0))
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}

func storeQueryAt(i int) store.Query { return store.Query{StartIndex: i, Count: 1} }
