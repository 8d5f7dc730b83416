package outbox

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// countingReceiver answers 204 and counts requests; it does no verification,
// so that the benchmark measures the dispatcher.
func countingReceiver(tb testing.TB) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	tb.Cleanup(srv.Close)
	return srv, &n
}

// preload enqueues n user events over 1000 resources, 1000 per transaction.
func preload(tb testing.TB, db *bolt.DB, n int) {
	tb.Helper()
	for done := 0; done < n; {
		batch := min(1000, n-done)
		evs := make([]Event, batch)
		for i := range evs {
			evs[i] = userEvent("user.updated", fmt.Sprint("u", (done+i)%1000))
		}
		enqueue(tb, db, nil, evs...)
		done += batch
	}
}

// BenchmarkDeliver measures delivery throughput to a local 204 receiver with
// b.N events enqueued before the dispatcher starts.
//
//	go test -run '^$' -bench BenchmarkDeliver -benchtime 50000x ./outbox/
func BenchmarkDeliver(b *testing.B) {
	secret := mustSecret(b)
	srv, n := countingReceiver(b)
	db := mustOpenDB(b)
	d := newTestDispatcher(b, db, testConfig(srv.URL, secret))
	preload(b, db, b.N)
	b.ResetTimer()
	start := time.Now()
	stop := runDispatcher(b, d)
	for n.Load() < int64(b.N) {
		time.Sleep(time.Millisecond)
	}
	for {
		sts, _ := d.Status()
		if sts[0].Backlog == 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	took := time.Since(start)
	b.StopTimer()
	stop()
	b.ReportMetric(float64(b.N)/took.Seconds(), "events/s")
}

// TestThroughput delivers 10,000 events and reports the rate. With
// SCIMGATE_SOAK=1 it delivers 200,000 and requires 5,000 events/s (run it
// without -race).
func TestThroughput(t *testing.T) {
	total, soak := 10000, os.Getenv("SCIMGATE_SOAK") == "1"
	if soak {
		total = 200000
	}
	secret := mustSecret(t)
	srv, n := countingReceiver(t)
	db := openDB(t, filepath.Join(t.TempDir(), "scimgate.db"))
	t.Cleanup(func() { closeDB(t, db) })
	d := newTestDispatcher(t, db, testConfig(srv.URL, secret))
	preload(t, db, total)
	start := time.Now()
	runDispatcher(t, d)
	waitStatus(t, d, 5*time.Minute, "backlog drained", func(st TargetStatus) bool { return st.Backlog == 0 })
	took := time.Since(start)
	rate := float64(total) / took.Seconds()
	t.Logf("delivered %d events (%d requests) in %v: %.0f events/s", total, n.Load(), took.Round(time.Millisecond), rate)
	if n.Load() < int64(total) {
		t.Errorf("receiver got %d requests, want ≥ %d", n.Load(), total)
	}
	if soak && rate < 5000 {
		t.Errorf("%.0f events/s, want ≥ 5000", rate)
	}
}

// TestLatency measures the time from the commit of an Enqueue to the arrival
// of its request at the receiver, at low load (one event at a time).
func TestLatency(t *testing.T) {
	arrived := make(chan time.Time, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- time.Now()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	secret := mustSecret(t)
	db := mustOpenDB(t)
	d := newTestDispatcher(t, db, testConfig(srv.URL, secret))
	runDispatcher(t, d)
	measureLatency(t, db, d, arrived, "receiver")
}

// measureLatency commits one event at a time to db and times each until
// arrived reports it (at the receiver, in the stream, at the consumer):
// 200 samples, 2,000 with SCIMGATE_SOAK=1. It logs the percentiles and
// fails when the median is not well under the poll interval.
func measureLatency(t *testing.T, db *bolt.DB, d *Dispatcher, arrived <-chan time.Time, where string) {
	t.Helper()
	samples := 200
	if os.Getenv("SCIMGATE_SOAK") == "1" {
		samples = 2000
	}
	lat := make([]time.Duration, 0, samples)
	for i := range samples {
		enqueue(t, db, d, userEvent("user.updated", fmt.Sprint("u", i%10)))
		committed := time.Now()
		select {
		case at := <-arrived:
			lat = append(lat, at.Sub(committed))
		case <-time.After(5 * time.Second):
			t.Fatalf("event %d did not arrive (%s)", i, where)
		}
		time.Sleep(time.Millisecond)
	}
	slices.Sort(lat)
	p := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))] }
	t.Logf("commit → %s, %d samples: p50 %v, p90 %v, p99 %v, max %v", where, len(lat), p(.5), p(.9), p(.99), lat[len(lat)-1])
	if p(.5) > 100*time.Millisecond {
		t.Errorf("p50 latency %v, want well under the poll interval", p(.5))
	}
}
