package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/scimgate/scimgate/outbox"
)

// withAppIDs serves ?include=app_ids:TARGET[,app_ids:OTHER] on a directory
// endpoint of the app API: each record of the answer gets "app_ids":
// {"TARGET": {what the target's steps saved, e.g. "id": 7} or null}. kind
// is what the answer holds: "User" or "Group" records, or "member"
// entries of /v1/groups/{id}/members; single: the answer is one record,
// not a page. Without include, next runs as is.
func (a *Admin) withAppIDs(kind string, single bool, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		targets, err := a.includeTargets(r)
		if err != nil {
			writeError(w, http.StatusBadRequest, "%v", err)
			return
		}
		if len(targets) == 0 {
			next(w, r)
			return
		}
		rec := &bufferedWriter{header: http.Header{}, status: http.StatusOK}
		next(rec, r)
		if rec.status != http.StatusOK {
			rec.flush(w)
			return
		}
		var p page
		if single {
			p.Data = []json.RawMessage{bytes.TrimSpace(rec.body.Bytes())}
		} else if err := json.Unmarshal(rec.body.Bytes(), &p); err != nil {
			a.internal(w, "api include", err)
			return
		}
		if err := a.addAppIDs(kind, targets, p.Data); err != nil {
			a.internal(w, "api include", err)
			return
		}
		if single {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(append(p.Data[0], '\n'))
			return
		}
		writeJSON(w, http.StatusOK, p)
	}
}

// includeTargets reads include: app_ids:TARGET, comma-separated or
// repeated; each must be an action target.
func (a *Admin) includeTargets(r *http.Request) ([]string, error) {
	var out []string
	for _, v := range r.URL.Query()["include"] {
		for item := range strings.SplitSeq(v, ",") {
			item = strings.TrimSpace(item)
			if item == "" {
				continue
			}
			target, ok := strings.CutPrefix(item, "app_ids:")
			if !ok || target == "" {
				return nil, errors.New("include " + item + ": use app_ids:TARGET (an action target's name)")
			}
			err := a.dispatcher.ViewIDMap(target, func(outbox.IDMapTx) error { return nil })
			switch {
			case errors.Is(err, outbox.ErrUnknownTarget):
				return nil, errors.New("include " + item + ": no target named " + target)
			case errors.Is(err, outbox.ErrNoIDMap):
				return nil, errors.New("include " + item + ": target " + target + " keeps no id map (only type: rest does)")
			case err != nil:
				return nil, err
			}
			out = append(out, target)
		}
	}
	return out, nil
}

// addAppIDs adds "app_ids" to each record of list (in place).
func (a *Admin) addAppIDs(kind string, targets []string, list []json.RawMessage) error {
	type ref struct {
		typ, id string
		key     string          // a member entry's key ("user" or "group"); "" for a record
		rec     json.RawMessage // the record
	}
	refs := make([]ref, len(list))
	for i, raw := range list {
		rf := ref{typ: kind, rec: raw}
		if kind == "member" {
			var m struct {
				Type  string          `json:"type"`
				User  json.RawMessage `json:"user"`
				Group json.RawMessage `json:"group"`
			}
			if err := json.Unmarshal(raw, &m); err != nil {
				return err
			}
			rf.key, rf.typ, rf.rec = m.Type, "User", m.User
			if m.Type == "group" {
				rf.typ, rf.rec = "Group", m.Group
			}
		}
		var id struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(rf.rec, &id); err != nil {
			return err
		}
		rf.id = id.ID
		refs[i] = rf
	}
	found := make([]map[string]json.RawMessage, len(list))
	for i := range found {
		found[i] = make(map[string]json.RawMessage, len(targets))
	}
	for _, target := range targets {
		err := a.dispatcher.ViewIDMap(target, func(m outbox.IDMapTx) error {
			for i, rf := range refs {
				e, err := m.Get(rf.typ, rf.id)
				if err != nil {
					return err
				}
				found[i][target] = json.RawMessage("null")
				if e != nil {
					found[i][target] = e.Values
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	for i, rf := range refs {
		ids, err := json.Marshal(found[i])
		if err != nil {
			return err
		}
		rec := bytes.TrimSpace(rf.rec)
		if len(rec) < 2 || rec[len(rec)-1] != '}' {
			return errors.New("record is not a JSON object")
		}
		out := append([]byte(nil), rec[:len(rec)-1]...)
		if len(bytes.TrimSpace(rec[1:len(rec)-1])) > 0 {
			out = append(out, ',')
		}
		out = append(append(append(out, `"app_ids":`...), ids...), '}')
		if rf.key != "" {
			k, _ := json.Marshal(rf.key)
			var m bytes.Buffer
			m.WriteString(`{"type":`)
			m.Write(k)
			m.WriteByte(',')
			m.Write(k)
			m.WriteByte(':')
			m.Write(out)
			m.WriteByte('}')
			out = m.Bytes()
		}
		list[i] = out
	}
	return nil
}

// bufferedWriter holds an answer so that withAppIDs can extend it.
type bufferedWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferedWriter) Header() http.Header         { return b.header }
func (b *bufferedWriter) WriteHeader(status int)      { b.status = status }
func (b *bufferedWriter) Write(p []byte) (int, error) { return b.body.Write(p) }

// flush passes the held answer on unchanged.
func (b *bufferedWriter) flush(w http.ResponseWriter) {
	for k, v := range b.header {
		w.Header()[k] = v
	}
	w.WriteHeader(b.status)
	_, _ = w.Write(b.body.Bytes())
}
