package console

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// RateWindow is how many minutes the overview's delivery chart shows.
const RateWindow = 60

// SampleEvery is how often Run samples the targets' delivered counts.
const SampleEvery = 15 * time.Second

// rates keeps, per target, the delivered count last seen in each of the
// last RateWindow+1 minutes: in memory only, so the chart starts empty
// when the process starts, and a minute without a sample (Run not running,
// or the process was busy) shows as a gap, not as zero.
type rates struct {
	mu      sync.Mutex
	targets map[string]*rateRing
}

type rateRing struct {
	minute [RateWindow + 1]int64  // unix minute of the slot; 0: empty
	count  [RateWindow + 1]uint64 // the delivered count last seen in it
}

// observe records target's delivered count at now.
func (r *rates) observe(target string, now time.Time, delivered uint64) {
	m := now.Unix() / 60
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.targets == nil {
		r.targets = map[string]*rateRing{}
	}
	ring := r.targets[target]
	if ring == nil {
		ring = &rateRing{}
		r.targets[target] = ring
	}
	i := m % int64(len(ring.minute))
	ring.minute[i], ring.count[i] = m, delivered
}

// bar is one minute of a chart.
type bar struct {
	X, Y, H int
	N       uint64
	Known   bool
	Label   string // "14:32Z: 12 delivered"
}

// chart is a target's deliveries per minute over the last hour, for an
// inline SVG (attributes only: the CSP forbids inline styles).
type chart struct {
	Bars  []bar
	Max   uint64
	Total uint64
	Known int // minutes with a figure
	W, H  int
}

const chartH, barW = 24, 3

// chart returns the deliveries in each of the RateWindow minutes before
// now's (the current minute is not over), oldest first.
func (r *rates) chart(target string, now time.Time) chart {
	cur := now.Unix() / 60
	out := chart{W: RateWindow * barW, H: chartH}
	r.mu.Lock()
	ring := r.targets[target]
	at := func(m int64) (uint64, bool) {
		if ring == nil {
			return 0, false
		}
		i := m % int64(len(ring.minute))
		return ring.count[i], ring.minute[i] == m
	}
	for k := RateWindow; k >= 1; k-- {
		m := cur - int64(k)
		b := bar{X: (RateWindow - k) * barW}
		end, ok1 := at(m)
		start, ok2 := at(m - 1)
		if ok1 && ok2 {
			b.Known = true
			if end > start { // a count never goes down; a reset reads as 0
				b.N = end - start
			}
			out.Known++
			out.Total += b.N
			out.Max = max(out.Max, b.N)
		}
		b.Label = time.Unix(m*60, 0).UTC().Format("15:04Z") + ": "
		if b.Known {
			b.Label += fmt.Sprintf("%d delivered", b.N)
		} else {
			b.Label += "not sampled"
		}
		out.Bars = append(out.Bars, b)
	}
	r.mu.Unlock()
	for i := range out.Bars {
		b := &out.Bars[i]
		if b.Known && b.N > 0 && out.Max > 0 {
			b.H = max(1, int(b.N*uint64(chartH)/out.Max))
		}
		b.Y = chartH - b.H
	}
	return out
}

// sample records every target's delivered count now.
func (c *Console) sample() {
	ts, err := c.d.Dispatcher.Status()
	if err != nil {
		return
	}
	now := c.d.Now()
	for _, t := range ts {
		c.rates.observe(t.Name, now, t.Delivered)
	}
}

// Run samples the targets' delivered counts every SampleEvery until ctx
// ends, for the overview's delivery chart. Without it, the chart has a
// figure only for the minutes in which a page was rendered.
func (c *Console) Run(ctx context.Context) {
	t := time.NewTicker(SampleEvery)
	defer t.Stop()
	c.sample()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.sample()
		}
	}
}
