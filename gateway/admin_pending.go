package gateway

import (
	"net/http"
	"strconv"
)

// pending lists a target's pending events, a page at a time:
// GET /admin/targets/{target}/pending?after=<position>&limit=<n>. The
// answer's next_after, when present, is the after of the next page.
func (a *Admin) pending(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var after uint64
	if v := q.Get("after"); v != "" {
		var err error
		if after, err = strconv.ParseUint(v, 10, 64); err != nil {
			writeError(w, http.StatusBadRequest, "after=%q is not a position: pass the position of the last pending event of the previous page", v)
			return
		}
	}
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > 1000 {
			writeError(w, http.StatusBadRequest, "limit=%q: give a number from 1 to 1000", v)
			return
		}
		limit = n
	}
	list, err := a.dispatcher.Pending(r.PathValue("target"), after, limit)
	if err != nil {
		a.outboxErr(w, "pending", err)
		return
	}
	body := map[string]any{"pending": list}
	if len(list) == limit {
		body["next_after"] = list[len(list)-1].Position
	}
	writeJSON(w, http.StatusOK, body)
}

// pendingOne returns one pending event by its position:
// GET /admin/targets/{target}/pending/{position}.
func (a *Admin) pendingOne(w http.ResponseWriter, r *http.Request) {
	pos, err := strconv.ParseUint(r.PathValue("position"), 10, 64)
	if err != nil {
		writeError(w, http.StatusBadRequest, "%q is not a position: use the position the pending list gives", r.PathValue("position"))
		return
	}
	p, err := a.dispatcher.PendingAt(r.PathValue("target"), pos)
	if err != nil {
		a.outboxErr(w, "pending event", err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}
