package gateway

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/scimgate/scimgate/gateway/store"
	"github.com/scimgate/scimgate/mapping"
)

// remapPreviewRequest is the body of POST /admin/remap/preview: the
// candidate `mapping:` section, as YAML text, and how many changing
// records to show.
type remapPreviewRequest struct {
	Mapping       string `json:"mapping"`
	Examples      int    `json:"examples"`
	MaxRejections int    `json:"max_rejections"`
}

// remapPreview maps every stored resource with a candidate mapping and
// answers what applying it would do (store.Preview); nothing is written.
func (a *Admin) remapPreview(w http.ResponseWriter, r *http.Request) {
	var body remapPreviewRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		writeError(w, http.StatusBadRequest, `send {"mapping": "<the candidate mapping section, as YAML>"}: %v`, err)
		return
	}
	if strings.TrimSpace(body.Mapping) == "" {
		writeError(w, http.StatusBadRequest, `the candidate mapping is empty: send {"mapping": "<the mapping section, as YAML: user:, group:, …>"}`)
		return
	}
	rules := mapping.DefaultRules()
	if err := yaml.Unmarshal([]byte(body.Mapping), &rules); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "the candidate mapping does not parse", "problems": []string{"mapping: " + err.Error()}})
		return
	}
	m, err := mapping.Compile(rules)
	if err != nil {
		var problems []string
		for _, e := range flattenErrors(err) {
			problems = append(problems, "mapping."+e.Error())
		}
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "the candidate mapping has problems", "problems": problems})
		return
	}
	// A large store takes seconds: no write deadline for this answer.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	p, err := a.store.PreviewRemap(m, store.PreviewOptions{Examples: body.Examples, MaxRejections: body.MaxRejections})
	if err != nil {
		a.internal(w, "remap preview", err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

// remap starts mapping the stored records again with the mapping in force
// (remap: manual, or records left on another mapping) and answers at once;
// GET /admin/status shows the progress.
func (a *Admin) remap(w http.ResponseWriter, r *http.Request) {
	started, err := a.store.Remap()
	if err != nil {
		a.internal(w, "remap", err)
		return
	}
	st := a.store.RemapStatus()
	writeJSON(w, http.StatusOK, map[string]any{"started": started, "remap": st})
}
