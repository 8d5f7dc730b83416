package console

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/scimgate/scimgate/gateway/scim"
	"github.com/scimgate/scimgate/gateway/store"
	"github.com/scimgate/scimgate/mapping"
	"github.com/scimgate/scimgate/outbox"
)

// userRow is one search result.
type userRow struct {
	ID, UserName, ExternalID string
	Active                   bool
}

func rowOf(r *store.Resource) userRow {
	row := userRow{ID: r.ID, Active: true}
	if v, ok := r.Doc["userName"].(string); ok {
		row.UserName = v
	}
	if v, ok := r.Doc["externalId"].(string); ok {
		row.ExternalID = v
	}
	if v, ok := r.Doc["active"]; ok {
		if b, ok := scim.ParseBool(v); ok {
			row.Active = b
		}
	}
	return row
}

// users searches by userName, email, external id or id; without a query it
// lists users in creation order, a page at a time.
func (c *Console) users(w http.ResponseWriter, r *http.Request, who caller) {
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	start, _ := strconv.Atoi(r.URL.Query().Get("start"))
	start = max(start, 1)
	var rows []userRow
	var total int
	seen := map[string]bool{}
	if q != "" {
		// One indexed lookup per key (an "or" filter would scan every user).
		if u, err := c.d.Store.GetUser(q); err == nil {
			rows, seen[u.ID] = append(rows, rowOf(u)), true
		}
		quoted, _ := json.Marshal(q)
		for _, attr := range []string{"userName", "emails.value", "externalId"} {
			f, err := scim.ParseFilter(fmt.Sprintf(`%s eq %s`, attr, quoted))
			if err != nil {
				c.fail(w, who, err)
				return
			}
			_, list, err := c.d.Store.ListUsers(store.Query{Filter: f, StartIndex: 1, Count: PageSize})
			if err != nil {
				c.fail(w, who, err)
				return
			}
			for _, u := range list {
				if !seen[u.ID] && len(rows) < PageSize {
					rows, seen[u.ID] = append(rows, rowOf(u)), true
				}
			}
		}
		total, start = len(rows), 1
	} else {
		n, list, err := c.d.Store.ListUsers(store.Query{StartIndex: start, Count: PageSize})
		if err != nil {
			c.fail(w, who, err)
			return
		}
		total = n
		for _, u := range list {
			rows = append(rows, rowOf(u))
		}
	}
	next := 0
	if start-1+PageSize < total && len(rows) > 0 {
		next = start + PageSize
	}
	c.render(w, http.StatusOK, "users", who, map[string]any{"Q": q, "Rows": rows, "Total": total, "Start": start, "Next": next})
}

type groupRow struct{ ID, Name string }

// groups searches groups by displayName, external id or id; without a
// query it lists them in creation order, a page at a time.
func (c *Console) groups(w http.ResponseWriter, r *http.Request, who caller) {
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	start, _ := strconv.Atoi(r.URL.Query().Get("start"))
	start = max(start, 1)
	var rows []groupRow
	total := 0
	add := func(g *store.Resource) {
		name, _ := g.Doc["displayName"].(string)
		rows = append(rows, groupRow{ID: g.ID, Name: name})
	}
	if q != "" {
		seen := map[string]bool{}
		if g, err := c.d.Store.GetGroup(q, false); err == nil {
			add(g)
			seen[g.ID] = true
		}
		quoted, _ := json.Marshal(q)
		for _, attr := range []string{"displayName", "externalId"} {
			f, err := scim.ParseFilter(fmt.Sprintf(`%s eq %s`, attr, quoted))
			if err != nil {
				c.fail(w, who, err)
				return
			}
			_, list, err := c.d.Store.ListGroups(store.Query{Filter: f, StartIndex: 1, Count: PageSize})
			if err != nil {
				c.fail(w, who, err)
				return
			}
			for _, g := range list {
				if !seen[g.ID] && len(rows) < PageSize {
					add(g)
					seen[g.ID] = true
				}
			}
		}
		total, start = len(rows), 1
	} else {
		n, list, err := c.d.Store.ListGroups(store.Query{StartIndex: start, Count: PageSize})
		if err != nil {
			c.fail(w, who, err)
			return
		}
		total = n
		for _, g := range list {
			add(g)
		}
	}
	next := 0
	if q == "" && start-1+PageSize < total {
		next = start + PageSize
	}
	c.render(w, http.StatusOK, "groups", who, map[string]any{"Q": q, "Rows": rows, "Total": total, "Next": next})
}

func groupRows(records []json.RawMessage) []groupRow {
	var out []groupRow
	for _, raw := range records {
		var g map[string]any
		_ = json.Unmarshal(raw, &g)
		row := groupRow{ID: fmt.Sprint(g["id"])}
		for _, k := range []string{"displayName", "display_name", "name"} {
			if v, ok := g[k].(string); ok {
				row.Name = v
				break
			}
		}
		out = append(out, row)
	}
	return out
}

func (c *Console) user(w http.ResponseWriter, r *http.Request, who caller) {
	id := r.PathValue("id")
	u, err := c.d.Store.GetUser(id)
	if err != nil {
		c.fail(w, who, err)
		return
	}
	rec, err := c.d.Store.UserRecord(id)
	if err != nil {
		c.fail(w, who, err)
		return
	}
	groups, err := c.d.Store.UserGroups(id, "", PageSize)
	if err != nil {
		c.fail(w, who, err)
		return
	}
	c.d.Logger.Info("console: user opened", "session", who.id, "user", id)
	hist := c.history(r, id, groups.Sequence)
	c.fromRequests(id, hist)
	c.render(w, http.StatusOK, "user", who, map[string]any{"Row": rowOf(u), "Version": u.Version, "Modified": u.Modified,
		"SCIM": indentJSON(u.Doc), "Record": prettyRaw(rec), "Groups": groupRows(groups.Records), "MoreGroups": groups.NextCursor != "",
		"History": hist, "HistoryScan": HistoryScan, "HasFeed": c.d.Feed != nil, "Targets": c.perTarget(id, hist)})
}

// HistoryScan is how many of the newest retained events a user's page
// searches for that user's history.
const HistoryScan = 10000

// change is one event of a user's history.
type change struct {
	At       time.Time
	Type     string
	Sequence uint64
	Version  uint64   // the user's version after it (0: not in the event)
	Fields   []string // what changed: "title: Engineer → CTO"
	Cause    string   // the event's cause, e.g. "mapping" for a remap ("": a SCIM request's)
	From     *Request // the SCIM request that made it, if still kept
	FromNote string   // why From is nil
}

// history returns the user's events among the newest HistoryScan retained
// ones (up to tail), newest first.
func (c *Console) history(r *http.Request, id string, tail uint64) []change {
	if c.d.Feed == nil {
		return nil
	}
	after := uint64(0)
	if tail > HistoryScan {
		after = tail - HistoryScan
	}
	var out []change
	for scanned := 0; scanned < HistoryScan; {
		page, err := c.d.Feed.Read(r.Context(), outbox.FeedQuery{After: after, Limit: 1000, Types: []string{"user.*"}, Resource: "User/" + id})
		if errors.Is(err, outbox.ErrCursorGone) && after != 0 {
			after = 0 // fewer events retained than the scan: read them all
			continue
		}
		if err != nil {
			c.d.Logger.Warn("console: user history", "user", id, "err", err)
			break
		}
		for _, raw := range page.Events {
			if !bytes.Contains(raw, []byte(`"`+id+`"`)) {
				continue // not about this user: skip the decoding
			}
			var ev struct {
				Type       string    `json:"type"`
				OccurredAt time.Time `json:"occurred_at"`
				Sequence   uint64    `json:"sequence"`
				Cause      string    `json:"cause"`
				Data       struct {
					User struct {
						ID      string `json:"id"`
						Version uint64 `json:"version"`
					} `json:"user"`
				} `json:"data"`
				Changes map[string]struct {
					Old any `json:"old"`
					New any `json:"new"`
				} `json:"changes"`
			}
			if json.Unmarshal(raw, &ev) != nil || ev.Data.User.ID != id {
				continue
			}
			ch := change{At: ev.OccurredAt, Type: ev.Type, Sequence: ev.Sequence, Version: ev.Data.User.Version, Cause: ev.Cause}
			for k, v := range ev.Changes {
				ch.Fields = append(ch.Fields, fmt.Sprintf("%s: %s → %s", k, short(v.Old), short(v.New)))
			}
			slices.Sort(ch.Fields)
			out = append(out, ch)
		}
		if page.Next <= after || page.Next >= tail {
			break
		}
		scanned += int(page.Next - after)
		after = page.Next
	}
	slices.Reverse(out)
	return out
}

func short(v any) string {
	b, _ := json.Marshal(v)
	if len(b) > 80 {
		return string(b[:77]) + "…"
	}
	return string(b)
}

func (c *Console) group(w http.ResponseWriter, r *http.Request, who caller) {
	id := r.PathValue("id")
	g, err := c.d.Store.GetGroup(id, false)
	if err != nil {
		c.fail(w, who, err)
		return
	}
	rec, err := c.d.Store.GroupRecord(id)
	if err != nil {
		c.fail(w, who, err)
		return
	}
	members, err := c.d.Store.GroupMembers(id, "", PageSize)
	if err != nil {
		c.fail(w, who, err)
		return
	}
	var rows []groupRow
	for _, m := range members.Members {
		row := groupRow{ID: m.ID, Name: m.Type}
		rows = append(rows, row)
	}
	c.render(w, http.StatusOK, "group", who, map[string]any{"ID": id, "SCIM": indentJSON(g.Doc), "Record": prettyRaw(rec),
		"Members": rows, "MoreMembers": members.NextCursor != ""})
}

// ---- mapping preview

const samplePayload = `{
  "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
  "userName": "ada@example.com",
  "name": {"givenName": "Ada", "familyName": "Lovelace"},
  "emails": [{"value": "ada@example.com", "type": "work", "primary": true}],
  "active": true
}`

func (c *Console) mapForm(w http.ResponseWriter, r *http.Request, who caller) {
	payload := samplePayload
	if id := r.URL.Query().Get("user"); id != "" {
		u, err := c.d.Store.GetUser(id)
		if err != nil {
			c.fail(w, who, err)
			return
		}
		payload = indentJSON(u.Doc)
	}
	c.render(w, http.StatusOK, "map", who, map[string]any{"Payload": payload, "Kind": "auto"})
}

// mapPreview runs the mapping in force on a pasted SCIM resource, as
// `scimgate map` does: the record, its warnings, or the rejection.
func (c *Console) mapPreview(w http.ResponseWriter, r *http.Request, who caller) {
	payload, kind := r.PostFormValue("payload"), r.PostFormValue("kind")
	data := map[string]any{"Payload": payload, "Kind": kind}
	res, err := c.preview(payload, kind)
	if err != nil {
		data["Rejected"] = err.Error()
	} else {
		data["Record"] = indentJSON(res.Record)
		data["Warnings"] = res.Warnings
		data["Refs"] = res.Refs
	}
	c.d.Logger.Info("console: mapping preview", "session", who.id, "ok", err == nil)
	c.render(w, http.StatusOK, "map", who, data)
}

func (c *Console) preview(payload, kind string) (mapping.Result, error) {
	var m *mapping.Mapper
	if c.d.Mapper != nil {
		m = c.d.Mapper()
	}
	if m == nil {
		return mapping.Result{}, errors.New("this gateway has no mapping loaded")
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(payload)))
	dec.UseNumber()
	var res map[string]any
	if err := dec.Decode(&res); err != nil {
		return mapping.Result{}, fmt.Errorf("not a JSON object: %v", err)
	}
	if kind == "" || kind == "auto" {
		kind = "User"
		if v, _ := scim.Get(res, "schemas"); strings.Contains(fmt.Sprint(v), scim.SchemaGroup) {
			kind = "Group"
		}
	}
	var out mapping.Result
	var err error
	if strings.EqualFold(kind, "group") {
		var norm map[string]any
		if norm, err = scim.Normalize(res, scim.NewGroupResourceType()); err == nil {
			out, err = m.MapGroup(norm)
		}
	} else {
		var norm map[string]any
		if norm, err = scim.Normalize(res, scim.NewUserResourceType(m.UserExtensions()...)); err == nil {
			out, err = m.MapUser(norm, c.resolver())
		}
	}
	var se *scim.Error
	if errors.As(err, &se) {
		return out, fmt.Errorf("rejected (%d %s): %s", se.Status, se.ScimType, se.Detail)
	}
	return out, err
}

// noResolver resolves nothing: references show as pending.
type noResolver struct{}

func (noResolver) ResolveUser(by, value string) (string, bool) { return "", false }

func (c *Console) resolver() mapping.Resolver { return noResolver{} }

// ---- recent activity

func (c *Console) activity(w http.ResponseWriter, r *http.Request, who caller) {
	var list []Request
	kept := c.d.Recent != nil
	if kept {
		list = c.d.Recent()
	}
	c.render(w, http.StatusOK, "activity", who, map[string]any{"Requests": list, "Kept": kept, "LastRequest": c.d.LastRequest()})
}
