package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/scimgate/scimgate/gateway"
	"github.com/scimgate/scimgate/mapping"
	"github.com/scimgate/scimgate/outbox"
)

// compileMapping compiles the mapping section, locating errors in the file.
func compileMapping(cfg Config, name string, doc *yaml.Node) (*mapping.Mapper, error) {
	m, err := mapping.Compile(cfg.Mapping)
	if err != nil {
		return nil, errors.Join(locate(name, doc, "mapping", err)...)
	}
	return m, nil
}

// adminClient talks to a running gateway's admin listener.
type adminClient struct {
	base  string
	token string
	http  *http.Client
}

func cmdAdmin(ctx context.Context, cmd string, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlag(fs, getenv)
	base := fs.String("admin", "", "admin API base URL (default: from admin.listen)")
	token := fs.String("token", getenv("SCIMGATE_ADMIN_TOKEN"), "admin token")
	target := fs.String("target", "default", "webhook target name")
	jsonOut := fs.Bool("json", false, "print raw JSON")
	if err := fs.Parse(args); err != nil {
		return errSilent
	}
	if *base == "" {
		cfg, _, _, err := loadConfig(*path, getenv)
		if err != nil {
			return err
		}
		host, port, _ := net.SplitHostPort(cfg.Admin.Listen)
		if host == "" || host == "0.0.0.0" || host == "::" {
			host = "127.0.0.1"
		}
		*base = "http://" + net.JoinHostPort(host, port)
	}
	c := &adminClient{base: strings.TrimSuffix(*base, "/"), token: *token, http: &http.Client{Timeout: 30 * time.Second}}
	rest := fs.Args()
	switch cmd {
	case "health":
		var v map[string]any
		if err := c.do(ctx, http.MethodGet, "/healthz", nil, &v); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "ok")
		return nil
	case "status":
		var st gateway.Status
		if err := c.do(ctx, http.MethodGet, "/admin/status", nil, &st); err != nil {
			return err
		}
		if *jsonOut {
			return printJSON(stdout, st)
		}
		printStatus(stdout, st)
		return nil
	case "replay":
		return c.replay(ctx, stdout, *target, rest)
	case "pause", "resume":
		if err := c.do(ctx, http.MethodPost, "/admin/targets/"+*target+"/"+cmd, nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "target %s: %sd\n", *target, cmd)
		return nil
	case "backup":
		if len(rest) != 1 {
			return errors.New("usage: scimgate backup FILE")
		}
		return c.backup(ctx, stdout, rest[0])
	}
	// dead-letters SUBCOMMAND
	if len(rest) == 0 {
		rest = []string{"list"}
	}
	sub, ids := rest[0], rest[1:]
	switch sub {
	case "list":
		var out struct {
			DeadLetters []outbox.DeadLetter `json:"dead_letters"`
		}
		var all []outbox.DeadLetter
		var after uint64
		for {
			if err := c.do(ctx, http.MethodGet, fmt.Sprintf("/admin/targets/%s/dead-letters?after=%d&limit=500", *target, after), nil, &out); err != nil {
				return err
			}
			all = append(all, out.DeadLetters...)
			if len(out.DeadLetters) < 500 {
				break
			}
			after = out.DeadLetters[len(out.DeadLetters)-1].Event.Seq
		}
		if *jsonOut {
			return printJSON(stdout, all)
		}
		tw := tabwriter.NewWriter(stdout, 0, 2, 2, ' ', 0)
		fmt.Fprintln(tw, "EVENT\tTYPE\tSEQ\tATTEMPTS\tLAST STATUS\tLAST ERROR")
		for _, d := range all {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\n", d.Event.ID, d.Event.Type, d.Event.Seq, d.Attempts, d.LastStatus, d.LastError)
		}
		tw.Flush()
		fmt.Fprintf(stdout, "%d dead letter(s) for target %s\n", len(all), *target)
		return nil
	case "show":
		if len(ids) != 1 {
			return errors.New("usage: scimgate dead-letters show EVENT-ID")
		}
		var d outbox.DeadLetter
		if err := c.do(ctx, http.MethodGet, "/admin/targets/"+*target+"/dead-letters/"+ids[0], nil, &d); err != nil {
			return err
		}
		return printJSON(stdout, d)
	case "replay":
		return c.replay(ctx, stdout, *target, ids)
	case "discard":
		var out map[string]int
		if err := c.do(ctx, http.MethodPost, "/admin/targets/"+*target+"/discard", idsJSON(ids), &out); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "discarded %d dead letter(s)\n", out["discarded"])
		return nil
	}
	return fmt.Errorf("unknown dead-letters command %q: use list, show, replay or discard", sub)
}

func idsJSON(ids []string) any {
	if len(ids) == 0 {
		return map[string]any{"all": true}
	}
	return map[string]any{"ids": ids}
}

// replay moves dead letters back to pending, in chunks so progress shows.
func (c *adminClient) replay(ctx context.Context, stdout io.Writer, target string, ids []string) error {
	if len(ids) == 0 {
		var out map[string]int
		fmt.Fprintf(stdout, "replaying all dead letters of target %s…\n", target)
		if err := c.do(ctx, http.MethodPost, "/admin/targets/"+target+"/replay", idsJSON(nil), &out); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "replayed %d dead letter(s); they are pending delivery again\n", out["replayed"])
		return nil
	}
	total := 0
	for i := 0; i < len(ids); i += 500 {
		chunk := ids[i:min(i+500, len(ids))]
		var out map[string]int
		if err := c.do(ctx, http.MethodPost, "/admin/targets/"+target+"/replay", idsJSON(chunk), &out); err != nil {
			return err
		}
		total += out["replayed"]
		fmt.Fprintf(stdout, "replayed %d/%d\n", total, len(ids))
	}
	return nil
}

// backup streams the database to file (via a temporary file, renamed when
// complete), printing progress.
func (c *adminClient) backup(ctx context.Context, stdout io.Writer, file string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/admin/backup", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	hc := &http.Client{} // no overall timeout: a large file takes as long as it takes
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return c.httpError(resp)
	}
	tmp := file + ".partial"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	pw := &progressWriter{w: f, out: stdout, total: resp.ContentLength}
	_, err = io.Copy(pw, resp.Body)
	pw.done()
	if err == nil && resp.ContentLength > 0 && pw.n != resp.ContentLength {
		err = fmt.Errorf("backup truncated: got %d of %d bytes", pw.n, resp.ContentLength)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, file); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "backup written to %s (%d bytes); restore by stopping scimgate and putting it in place of data/scimgate.db\n", file, pw.n)
	return nil
}

type progressWriter struct {
	w     io.Writer
	out   io.Writer
	total int64
	n     int64
	last  time.Time
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.n += int64(n)
	if time.Since(p.last) > 500*time.Millisecond {
		p.last = time.Now()
		p.print()
	}
	return n, err
}

func (p *progressWriter) print() {
	if p.total > 0 {
		fmt.Fprintf(p.out, "\r%d / %d bytes (%d%%)", p.n, p.total, p.n*100/p.total)
	} else {
		fmt.Fprintf(p.out, "\r%d bytes", p.n)
	}
}

func (p *progressWriter) done() {
	p.print()
	fmt.Fprintln(p.out)
}

func (c *adminClient) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = strings.NewReader(string(b))
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("admin API at %s: %w (is scimgate running? see --admin)", c.base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return c.httpError(resp)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func (c *adminClient) httpError(resp *http.Response) error {
	var e struct {
		Error string `json:"error"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		return fmt.Errorf("admin API: %s: %s", resp.Status, e.Error)
	}
	return fmt.Errorf("admin API: %s", resp.Status)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printStatus(w io.Writer, st gateway.Status) {
	ago := func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return fmt.Sprintf("%s (%s ago)", t.Format(time.RFC3339), time.Since(t).Round(time.Second))
	}
	fmt.Fprintf(w, "scimgate %s, up since %s\n", st.Version, st.StartedAt.Format(time.RFC3339))
	fmt.Fprintf(w, "last SCIM request: %s\nlast SCIM change:  %s\n", ago(st.LastSCIMRequest), ago(st.LastSCIMChange))
	fmt.Fprintf(w, "users: %d (%d active)   groups: %d\n\n", st.Users, st.ActiveUsers, st.Groups)
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "TARGET\tSTATE\tBACKLOG\tOLDEST PENDING\tDEAD LETTERS\tDELIVERED\tLAST SUCCESS\tLAST ERROR")
	for _, t := range st.Targets {
		state := "active"
		if t.Paused {
			state = "paused: " + t.PausedReason
		}
		lastErr := "-"
		if t.LastError != "" {
			lastErr = fmt.Sprintf("%s at %s", t.LastError, t.LastErrorAt.Format(time.RFC3339))
		}
		lastOK := "never"
		if !t.LastSuccess.IsZero() {
			lastOK = t.LastSuccess.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%d\t%s\t%s\n", t.Name, state, t.Backlog, t.OldestPendingAge.Round(time.Second), t.DeadLetters, t.Delivered, lastOK, lastErr)
	}
	tw.Flush()
}
