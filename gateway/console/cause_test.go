package console

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// A history row whose event has a cause (a mapping change's remap) shows
// it and names no request; one without a cause and with no request kept
// for it says which bound it fell outside.
func TestHistoryCauseAndUnknownRequest(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 15, 0, 0, 0, time.UTC)
	kept := []Request{{At: t0.Add(time.Minute), Method: "PUT", Path: "/scim/v2/Users/:id", Status: 200, ResourceID: "u1", Version: 5}}
	c := New(Deps{AdminToken: func(string) bool { return false }, Recent: func() []Request { return kept }})
	hist := []change{
		{At: t0.Add(3 * time.Minute), Type: "user.updated", Sequence: 9, Version: 6, Cause: "mapping"},
		{At: t0.Add(2 * time.Minute), Type: "user.updated", Sequence: 8, Version: 6},
		{At: t0.Add(time.Minute), Type: "user.updated", Sequence: 7, Version: 5},
		{At: t0, Type: "user.created", Sequence: 3, Version: 1},
	}
	c.fromRequests("u1", hist)
	if hist[0].From != nil || hist[0].FromNote != "not a SCIM request: cause mapping" {
		t.Errorf("remap row: %+v", hist[0])
	}
	if hist[1].From != nil || !strings.HasPrefix(hist[1].FromNote, "no kept SCIM request made it") {
		t.Errorf("row newer than the oldest kept request, none matching: %+v", hist[1])
	}
	if hist[2].From == nil || hist[2].From.Version != 5 {
		t.Errorf("row made by the kept PUT: %+v", hist[2])
	}
	if hist[3].From != nil || hist[3].FromNote != "earlier than the recent requests kept" {
		t.Errorf("row older than the ring: %+v", hist[3])
	}
	w := httptest.NewRecorder()
	c.render(w, 200, "user", caller{id: "test"}, map[string]any{"Row": userRow{ID: "u1", UserName: "hedy"}, "Modified": t0,
		"HasFeed": true, "History": hist})
	body := w.Body.String()
	if !strings.Contains(body, `<span class="cause">cause: mapping</span>`) || !strings.Contains(body, "PUT /scim/v2/Users/:id → 200") ||
		!strings.Contains(body, "earlier than the recent requests kept") {
		t.Errorf("user page:\n%s", body)
	}
}
