package console

import (
	"log/slog"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/scimgate/scimgate/gateway/store"
	"github.com/scimgate/scimgate/outbox"
)

// The chart shows each finished minute's deliveries (the difference of the
// counts sampled at the ends of two minutes), a sampled idle minute as
// zero, an unsampled one as a gap, and nothing older than an hour.
func TestDeliveryRateChart(t *testing.T) {
	var r rates
	now := time.Date(2026, 12, 6, 15, 30, 20, 0, time.UTC)
	min := func(k int) time.Time { return now.Add(-time.Duration(k) * time.Minute) }
	r.observe("app", min(90), 1)    // older than the window: not shown
	r.observe("app", min(5), 100)   // minute -5 ends at 100
	r.observe("app", min(4), 110)   // minute -4: 10 delivered
	r.observe("app", min(4), 130)   // a later sample in it: 30
	r.observe("app", min(3), 130)   // minute -3: 0
	r.observe("app", min(1), 170)   // minute -2 unsampled: -1 unknown
	r.observe("app", now, 999)      // the current minute is not over: not shown
	r.observe("other", min(2), 500) // another target's ring
	c := r.chart("app", now)
	if len(c.Bars) != RateWindow {
		t.Fatalf("%d bars, want %d", len(c.Bars), RateWindow)
	}
	got := map[int]bar{}
	for i, b := range c.Bars {
		if b.Known {
			got[RateWindow-i] = b
		}
	}
	if len(got) != 2 || got[4].N != 30 || got[3].N != 0 || !got[3].Known {
		t.Fatalf("known minutes = %+v; want minute -4: 30, minute -3: 0", got)
	}
	if c.Total != 30 || c.Max != 30 || c.Known != 2 || got[4].H != chartH || got[4].Y != 0 {
		t.Errorf("chart = total %d, max %d, known %d, bar %+v", c.Total, c.Max, c.Known, got[4])
	}
	if !strings.HasSuffix(got[4].Label, ": 30 delivered") || !strings.HasSuffix(c.Bars[RateWindow-2].Label, "not sampled") {
		t.Errorf("labels %q, %q", got[4].Label, c.Bars[RateWindow-2].Label)
	}
	if e := r.chart("none", now); e.Known != 0 || len(e.Bars) != RateWindow {
		t.Errorf("an unsampled target's chart = %+v", e)
	}

	// The overview draws it as attributes of an inline SVG: no style
	// attribute, no script (the CSP allows neither).
	con := New(Deps{AdminToken: func(string) bool { return false }, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))})
	w := httptest.NewRecorder()
	con.render(w, 200, "overview", caller{id: "test"}, map[string]any{"Healthy": true, "Stats": store.Stats{}, "LastRequest": time.Time{},
		"Targets": []targetView{{TargetStatus: outbox.TargetStatus{Name: "app"}, State: "up to date", Rate: c}}})
	body := w.Body.String()
	if n := strings.Count(body, `<rect class="bar"`); n != 1 {
		t.Errorf("%d bars drawn, want 1:\n%s", n, body)
	}
	if n := strings.Count(body, `<rect class="zero"`); n != 1 {
		t.Errorf("%d zero ticks drawn, want 1", n)
	}
	if !regexp.MustCompile(`<svg class="spark"[^>]*>`).MatchString(body) || !strings.Contains(body, `id="rate-app">30/h<`) {
		t.Errorf("no sparkline for app:\n%s", body)
	}
	if strings.Contains(body, "style=") || strings.Contains(body, "<script") {
		t.Errorf("the overview has an inline style or script:\n%s", body)
	}
}
