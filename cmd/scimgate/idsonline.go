package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// errDataInUse: the data dir's database is open in a running gateway.
var errDataInUse = errors.New("in use")

// idEntryJSON is one entry of GET /admin/targets/{t}/ids.
type idEntryJSON struct {
	Type   string          `json:"type"`
	ID     string          `json:"id"`
	Values json.RawMessage `json:"values"`
}

// idsOnline is `scimgate ids` through a running gateway's admin API (the
// data dir is locked): the same lines as the offline read.
func (c *cli) idsOnline(cmd *cobra.Command, f *adminFlags, target string, args []string, appID, typ string) error {
	cl, err := c.client(cmd, f, true)
	if err != nil {
		return err
	}
	q := url.Values{}
	if typ != "" {
		q.Set("type", typ)
	}
	switch {
	case appID != "":
		q.Set("app_id", appID)
	case len(args) == 1:
		q.Set("scim_id", args[0])
	default:
		q.Set("limit", "1000")
	}
	for {
		var page struct {
			Entries []idEntryJSON `json:"entries"`
			Next    *string       `json:"next"`
		}
		err := cl.do(cmd.Context(), http.MethodGet, targetPath(target, "/ids?"+q.Encode()), nil, &page)
		var ae *apiError
		if errors.As(err, &ae) && ae.Code == http.StatusNotFound && strings.HasPrefix(ae.Message, "not in the id map") {
			fmt.Fprintln(c.stderr, ae.Message)
			return errSilent
		}
		if err != nil {
			return err
		}
		for _, e := range page.Entries {
			var v bytes.Buffer
			if json.Compact(&v, e.Values) != nil {
				v.Write(e.Values)
			}
			fmt.Fprintf(c.stdout, "%s/%s %s\n", e.Type, e.ID, v.Bytes())
		}
		if page.Next == nil {
			return nil
		}
		q.Set("after", *page.Next)
	}
}

// printActionTargets follows the status table with the action targets'
// id maps and request counters (GET /admin/status's id_map_size and
// requests), when there are any: a line per target, then a line per step
// with its mean latency.
func printActionTargets(w io.Writer, raw json.RawMessage) {
	var st struct {
		Targets []struct {
			Name      string `json:"name"`
			IDMapSize *int   `json:"id_map_size"`
			Requests  *struct {
				Requests       uint64            `json:"requests"`
				Outcomes       map[string]uint64 `json:"outcomes"`
				RateLimitWaits uint64            `json:"rate_limit_waits"`
				Steps          map[string]struct {
					Requests           uint64            `json:"requests"`
					Outcomes           map[string]uint64 `json:"outcomes"`
					MeanLatencySeconds float64           `json:"mean_latency_seconds"`
				} `json:"steps"`
			} `json:"requests"`
		} `json:"targets"`
	}
	if json.Unmarshal(raw, &st) != nil {
		return
	}
	rows := [][]string{{"ACTION TARGET", "ID MAP", "REQUESTS", "OK", "DONE", "RETRY", "DEAD", "NO ANSWER", "RATE-LIMIT WAITS", "MEAN LATENCY"}}
	for _, t := range st.Targets {
		if t.IDMapSize == nil && t.Requests == nil {
			continue
		}
		row := []string{t.Name, "-", "0", "0", "0", "0", "0", "0", "0", ""}
		if t.IDMapSize != nil {
			row[1] = strconv.Itoa(*t.IDMapSize)
		}
		if r := t.Requests; r != nil {
			row[2] = strconv.FormatUint(r.Requests, 10)
			for i, k := range []string{"ok", "done", "retry", "dead", "error"} {
				row[3+i] = strconv.FormatUint(r.Outcomes[k], 10)
			}
			row[8] = strconv.FormatUint(r.RateLimitWaits, 10)
		}
		rows = append(rows, row)
		if t.Requests == nil {
			continue
		}
		for _, name := range slices.Sorted(maps.Keys(t.Requests.Steps)) {
			sr := t.Requests.Steps[name]
			row := []string{"  step " + name, "", strconv.FormatUint(sr.Requests, 10)}
			for _, k := range []string{"ok", "done", "retry", "dead", "error"} {
				row = append(row, strconv.FormatUint(sr.Outcomes[k], 10))
			}
			lat := time.Duration(sr.MeanLatencySeconds * float64(time.Second))
			rows = append(rows, append(row, "", lat.Round(100*time.Microsecond).String()))
		}
	}
	if len(rows) == 1 {
		return
	}
	fmt.Fprintln(w)
	printTable(w, rows)
}
