package gateway

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/scimgate/scimgate/outbox"
)

// idsPage is what GET /admin/targets/{target}/ids returns: entries of the
// target's id map and the cursor of the next page (null at the end).
type idsPage struct {
	Entries []outbox.IDEntry `json:"entries"`
	Next    *string          `json:"next"`
}

// ids serves GET /admin/targets/{target}/ids: the target's id map, paged
// (after, limit 1-1000) or one resource by ?scim_id= or ?app_id= (with
// ?type=User|Group to narrow a look-up).
func (a *Admin) ids(w http.ResponseWriter, r *http.Request) {
	target, q := r.PathValue("target"), r.URL.Query()
	scimID, appID, typ := q.Get("scim_id"), q.Get("app_id"), q.Get("type")
	if scimID != "" && appID != "" {
		writeError(w, http.StatusBadRequest, "give scim_id or app_id, not both")
		return
	}
	if typ != "" && typ != "User" && typ != "Group" {
		writeError(w, http.StatusBadRequest, "type %q: use User or Group", typ)
		return
	}
	limit := 0
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, http.StatusBadRequest, "limit %q: use an integer from 1 to 1000", s)
			return
		}
		limit = n
	}
	types := []string{"User", "Group"}
	if typ != "" {
		types = []string{typ}
	}
	out := idsPage{Entries: []outbox.IDEntry{}}
	err := a.dispatcher.ViewIDMap(target, func(m outbox.IDMapTx) error {
		if scimID == "" && appID == "" {
			list, next, err := m.List(q.Get("after"), limit)
			if next != "" {
				out.Next = &next
			}
			for _, e := range list {
				if typ == "" || e.Type == typ {
					out.Entries = append(out.Entries, e)
				}
			}
			return err
		}
		for _, ty := range types {
			var e *outbox.IDEntry
			var err error
			if scimID != "" {
				e, err = m.Get(ty, scimID)
			} else {
				e, err = m.ByApp(ty, appID)
			}
			if err != nil {
				return err
			}
			if e != nil {
				out.Entries = append(out.Entries, *e)
			}
		}
		return nil
	})
	switch {
	case errors.Is(err, outbox.ErrNoIDMap):
		writeError(w, http.StatusNotFound, "%v: only action targets (type: rest) keep one", err)
	case err != nil:
		a.outboxErr(w, "ids", err)
	case len(out.Entries) == 0 && (scimID != "" || appID != ""):
		writeError(w, http.StatusNotFound, "not in the id map of target %s", target)
	default:
		writeJSON(w, http.StatusOK, out)
	}
}
