package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	bolt "go.etcd.io/bbolt"
	"gopkg.in/yaml.v3"

	"github.com/scimgate/scimgate/gateway/store"
	"github.com/scimgate/scimgate/mapping"
)

// ---- remap ----

func (c *cli) remapCommand() *cobra.Command {
	var f adminFlags
	var dryRun, wait bool
	var dataDir, dbPath string
	var examples int
	cmd := &cobra.Command{
		Use:   "remap",
		Short: "apply the mapping to the stored records now, or preview a new mapping (--dry-run)",
		Long: `Without --dry-run: map every stored user and group again with the running gateway's mapping,
in the background (remap: manual, or to finish what a stop interrupted); scimgate status shows
the progress, --wait waits for the end. Each record that changes gets user.updated or
group.updated with its changes and "cause": "mapping".

With --dry-run: map every stored resource with the mapping of the configuration given by --config
(the candidate: the file you are about to deploy) and print how many records would change, per
field, the first examples as diffs, and every resource the candidate would reject, with the
reason. Nothing is written. It asks the running gateway (its admin API), or, with --data-dir or
--db, reads a stopped gateway's data directory or a backup file itself.`,
		Example: `  scimgate remap --dry-run --config new.yaml
  scimgate remap --dry-run --config new.yaml --db scimgate-backup.db
  scimgate remap --wait`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			offline := dataDir != "" || dbPath != ""
			if !dryRun {
				if offline {
					return usagef(cmd, "--data-dir and --db are for --dry-run: applying a mapping needs the running gateway")
				}
				cl, err := c.client(cmd, &f, true)
				if err != nil {
					return err
				}
				return c.remapApply(cmd.Context(), cl, wait, f.json)
			}
			if dataDir != "" && dbPath != "" {
				return usagef(cmd, "--data-dir and --db name the same thing: give one")
			}
			path := f.cf.value(cmd, c.getenv)
			if path == "" {
				return usagef(cmd, "--dry-run needs the candidate configuration: --config NEW.yaml")
			}
			m, rules, err := c.candidateMapping(path)
			if err != nil {
				return err
			}
			var p *store.Preview
			if offline {
				if dbPath == "" {
					dbPath = filepath.Join(dataDir, dbFile)
				}
				p, err = previewOffline(dbPath, m, examples)
			} else {
				var cl *adminClient
				if cl, err = c.client(cmd, &f, true); err != nil {
					return err
				}
				p, err = previewOnline(cmd.Context(), cl, rules, examples)
			}
			if err != nil {
				var ae *apiError
				if errors.As(err, &ae) && len(ae.Problems) > 0 {
					fmt.Fprintln(c.stderr, "the gateway refused the candidate mapping:")
					for _, p := range ae.Problems {
						fmt.Fprintf(c.stderr, "  %s\n", p)
					}
					return errSilent
				}
				return err
			}
			if p.Fingerprint != m.Fingerprint() {
				// The candidate travels as YAML re-encoded from the file.
				fmt.Fprintf(c.stderr, "warning: the gateway compiled the candidate mapping to fingerprint %s, this scimgate to %s: the gateway may be another version\n",
					p.Fingerprint, m.Fingerprint())
			}
			if f.json {
				return printJSON(c.stdout, p)
			}
			printPreview(c.stdout, p)
			return nil
		},
	}
	f.register(cmd, false, true)
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "preview the mapping of --config against the stored resources; write nothing")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the remap has finished, printing its progress")
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "with --dry-run: read this stopped gateway's data `DIR` instead of asking the running one")
	cmd.Flags().StringVar(&dbPath, "db", "", "with --dry-run: read this database `FILE` (a backup) instead of asking the running gateway")
	cmd.Flags().IntVar(&examples, "examples", 10, "with --dry-run: how many changing records to show as diffs")
	return cmd
}

// candidateMapping loads the mapping of the configuration at path (its
// secrets need not be set: only the mapping is read) and compiles it.
func (c *cli) candidateMapping(path string) (*mapping.Mapper, mapping.Rules, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, mapping.Rules{}, err
	}
	cfg, doc, err := parseConfig(path, data, c.getenv, true)
	if err != nil {
		return nil, mapping.Rules{}, err
	}
	m, err := compileMapping(cfg, path, doc)
	if err != nil {
		fmt.Fprintln(c.stderr, formatErrors(err))
		return nil, mapping.Rules{}, errSilent
	}
	return m, cfg.Mapping, nil
}

// previewOffline reads a database file that no gateway holds.
func previewOffline(path string, m *mapping.Mapper, examples int) (*store.Preview, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("%s is in use by a running gateway: preview through its admin API (leave out --data-dir and --db)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer db.Close()
	return store.PreviewRemap(db, m, store.PreviewOptions{Examples: examples})
}

// previewOnline asks the running gateway (POST /admin/remap/preview).
func previewOnline(ctx context.Context, cl *adminClient, rules mapping.Rules, examples int) (*store.Preview, error) {
	text, err := yaml.Marshal(rules)
	if err != nil {
		return nil, fmt.Errorf("encode the candidate mapping: %w", err)
	}
	var p store.Preview
	err = cl.do(ctx, http.MethodPost, "/admin/remap/preview", map[string]any{"mapping": string(text), "examples": examples}, &p)
	return &p, err
}

// printPreview prints a dry run for a terminal.
func printPreview(w io.Writer, p *store.Preview) {
	cur := p.Current
	if cur == "" {
		cur = "unknown"
	}
	fmt.Fprintf(w, "dry run: mapping %s (stored records: %s) over %d users and %d groups, %d ms; nothing written\n",
		p.Fingerprint, cur, p.Users, p.Groups, p.TookMS)
	fmt.Fprintf(w, "records that would change: %d (%d users, %d groups), one user.updated / group.updated each, \"cause\": \"mapping\"\n",
		p.Changed, p.ChangedUsers, p.ChangedGroups)
	type row struct {
		name string
		n    int
	}
	var rows []row
	for f, n := range p.UserFields {
		rows = append(rows, row{"user." + f, n})
	}
	for f, n := range p.GroupFields {
		rows = append(rows, row{"group." + f, n})
	}
	sort.Slice(rows, func(i, j int) bool {
		return rows[i].n > rows[j].n || rows[i].n == rows[j].n && rows[i].name < rows[j].name
	})
	if len(rows) > 0 {
		fmt.Fprintln(w, "values that would change, per field:")
		for _, r := range rows {
			fmt.Fprintf(w, "  %-30s %d\n", r.name, r.n)
		}
	}
	if p.Rejected > 0 {
		fmt.Fprintf(w, "rejected by the new mapping: %d (they would keep their current record)\n", p.Rejected)
		for _, rj := range p.Rejections {
			fmt.Fprintf(w, "  %s %s: %s\n", rj.Resource, rj.ID, strings.Join(rj.Reasons, "; "))
		}
		if len(p.Rejections) < p.Rejected {
			fmt.Fprintf(w, "  … and %d more (--json lists up to 1,000)\n", p.Rejected-len(p.Rejections))
		}
	} else {
		fmt.Fprintln(w, "rejected by the new mapping: none")
	}
	if len(p.Examples) > 0 {
		fmt.Fprintln(w, "examples:")
		for _, ex := range p.Examples {
			fmt.Fprintf(w, "  %s %s\n", ex.Resource, ex.ID)
			keys := make([]string, 0, len(ex.Changes))
			for k := range ex.Changes {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				ch := ex.Changes[k]
				fmt.Fprintf(w, "    %s: %s → %s\n", k, anyJSON(ch.Old), anyJSON(ch.New))
			}
		}
	}
}

func anyJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// remapStatusJSON is the "remap" object of GET /admin/status.
type remapStatusJSON struct {
	Fingerprint string            `json:"fingerprint"`
	Applied     string            `json:"applied"`
	Manual      bool              `json:"manual"`
	Last        *store.RemapState `json:"remap"`
	Rejected    int               `json:"rejected"`
	Rejections  []struct {
		Resource string   `json:"resource"`
		ID       string   `json:"id"`
		Reasons  []string `json:"reasons"`
	} `json:"rejections"`
}

// remapApply starts the remap (POST /admin/remap) and, with wait, follows
// it until it ends.
func (c *cli) remapApply(ctx context.Context, cl *adminClient, wait, jsonOut bool) error {
	var out struct {
		Started bool            `json:"started"`
		Remap   remapStatusJSON `json:"remap"`
	}
	if err := cl.do(ctx, http.MethodPost, "/admin/remap", nil, &out); err != nil {
		return err
	}
	st := out.Remap
	if !out.Started {
		fmt.Fprintf(c.stdout, "nothing to remap: every stored record is on the mapping in force (%s)\n", st.Fingerprint)
		printRejections(c.stdout, st)
		return nil
	}
	fmt.Fprintf(c.stdout, "remap started: mapping %s over %d resources\n", st.Fingerprint, st.Last.Total)
	if !wait {
		fmt.Fprintln(c.stdout, "follow it with scimgate status (or --wait)")
		return nil
	}
	last := ""
	for {
		var raw struct {
			Remap remapStatusJSON `json:"remap"`
		}
		if err := cl.do(ctx, http.MethodGet, "/admin/status", nil, &raw); err != nil {
			return err
		}
		st = raw.Remap
		if st.Last == nil {
			return errors.New("admin API: the status has no remap")
		}
		line := remapLine(st)
		if line != last && !jsonOut {
			fmt.Fprintln(c.stdout, line)
			last = line
		}
		if st.Last.State != store.RemapRunning {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	if jsonOut {
		return printJSON(c.stdout, st)
	}
	printRejections(c.stdout, st)
	return nil
}

// remapLine is one line of remap progress.
func remapLine(st remapStatusJSON) string {
	l := st.Last
	switch l.State {
	case store.RemapPending:
		return fmt.Sprintf("remap pending: mapping %s is not yet applied to the %d stored resources (remap: manual): run scimgate remap", l.Fingerprint, l.Total)
	case store.RemapRunning:
		return fmt.Sprintf("remap running: mapping %s, %d of %d resources, %d changed, %d rejected", l.Fingerprint, l.Done, l.Total, l.Changed, l.Rejected)
	}
	return fmt.Sprintf("remap done: mapping %s, %d resources, %d changed, %d rejected, took %s", l.Fingerprint, l.Done, l.Changed, l.Rejected,
		l.Finished.Sub(l.Started).Round(time.Millisecond))
}

func printRejections(w io.Writer, st remapStatusJSON) {
	if st.Rejected == 0 {
		return
	}
	fmt.Fprintf(w, "rejected by the mapping in force, keeping their last good record: %d\n", st.Rejected)
	for _, rj := range st.Rejections {
		fmt.Fprintf(w, "  %s %s: %s\n", rj.Resource, rj.ID, strings.Join(rj.Reasons, "; "))
	}
	if len(st.Rejections) < st.Rejected {
		fmt.Fprintf(w, "  … and %d more\n", st.Rejected-len(st.Rejections))
	}
}

// printRemapStatus is scimgate status's remap section: shown while a remap
// is pending or running, when one finished in the last day, and while
// resources are rejected.
func printRemapStatus(w io.Writer, raw json.RawMessage, now time.Time) {
	var st struct {
		Remap *remapStatusJSON `json:"remap"`
	}
	if json.Unmarshal(raw, &st) != nil || st.Remap == nil || st.Remap.Last == nil {
		return
	}
	l := st.Remap.Last
	if l.State == store.RemapDone && now.Sub(l.Finished) > 24*time.Hour && st.Remap.Rejected == 0 {
		return
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, remapLine(*st.Remap))
	printRejections(w, *st.Remap)
}
