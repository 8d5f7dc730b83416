package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/scimgate/scimgate/mapping"
)

// The admin commands are clients of the admin HTTP API (docs/operations.md
// lists its routes); they decode its JSON into their own types, not the
// server's, so that they depend on the wire contract only.

// compileMapping compiles the mapping section, locating errors in the file.
func compileMapping(cfg Config, name string, doc *yaml.Node) (*mapping.Mapper, error) {
	m, err := mapping.Compile(cfg.Mapping)
	if err != nil {
		return nil, errors.Join(locate(name, doc, "mapping", err)...)
	}
	return m, nil
}

// adminFlags are the flags every admin command shares.
type adminFlags struct {
	cf     configFlag
	admin  string
	token  string
	target string
	json   bool
}

// register adds --config, --admin and --token, and --target and --json
// where the command uses them.
func (f *adminFlags) register(cmd *cobra.Command, target, jsonOut bool) {
	f.cf.register(cmd)
	cmd.Flags().StringVar(&f.admin, "admin", "", "admin API base `URL` (default: http:// and the config's admin.listen, $SCIMGATE_ADMIN_LISTEN, 127.0.0.1:8081)")
	cmd.Flags().StringVar(&f.token, "token", "", "admin `TOKEN` (default $SCIMGATE_ADMIN_TOKEN, or the content of the file named by $SCIMGATE_ADMIN_TOKEN_FILE)")
	if target {
		cmd.Flags().StringVar(&f.target, "target", "default", "event target `NAME`")
	}
	if jsonOut {
		cmd.Flags().BoolVar(&f.json, "json", false, "print the API's JSON")
	}
}

// adminClient talks to a running gateway's admin listener.
type adminClient struct {
	base  string
	token string
	http  *http.Client
}

// client resolves the base URL and the token of an admin command.
func (c *cli) client(cmd *cobra.Command, f *adminFlags, needToken bool) (*adminClient, error) {
	base := f.admin
	if base == "" {
		cfg, err := c.adminConfig(cmd, f)
		if err != nil {
			// A file that does not parse may be exactly what `reload` is
			// about to have the gateway refuse: find the gateway the way
			// the defaults do (SCIMGATE_ADMIN_LISTEN), and say so.
			env := newFileEnv(c.getenv)
			if env.Get("SCIMGATE_ADMIN_LISTEN") == "" {
				return nil, fmt.Errorf("%w (or pass --admin URL)", err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "scimgate: the config does not parse (%v); using SCIMGATE_ADMIN_LISTEN to reach the gateway\n", err)
			cfg = DefaultConfig(env.Get)
		}
		host, port, err := net.SplitHostPort(cfg.Admin.Listen)
		if err != nil {
			return nil, fmt.Errorf("admin.listen %q is not host:port: set SCIMGATE_ADMIN_LISTEN, or pass --admin URL", cfg.Admin.Listen)
		}
		if host == "" || host == "0.0.0.0" || host == "::" {
			host = "127.0.0.1"
		}
		base = "http://" + net.JoinHostPort(host, port)
	}
	if u, err := url.Parse(base); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usagef(cmd, "--admin %q is not an http(s) URL such as http://127.0.0.1:8081", base)
	}
	token := f.token
	if !cmd.Flags().Changed("token") {
		var err error
		if token, err = lookupEnv(c.getenv, "SCIMGATE_ADMIN_TOKEN"); err != nil {
			return nil, err
		}
	}
	if needToken && token == "" {
		return nil, errors.New("no admin token: set SCIMGATE_ADMIN_TOKEN (or SCIMGATE_ADMIN_TOKEN_FILE), or pass --token; the gateway printed it on first start")
	}
	return &adminClient{base: strings.TrimSuffix(base, "/"), token: token, http: &http.Client{Timeout: 60 * time.Second}}, nil
}

// adminConfig reads the configuration for admin.listen only: variables
// the CLI's environment lacks (the gateway's secrets) are not errors here.
func (c *cli) adminConfig(cmd *cobra.Command, f *adminFlags) (Config, error) {
	path := f.cf.value(cmd, c.getenv)
	if path == "" {
		return DefaultConfig(newFileEnv(c.getenv).Get), nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, err
	}
	cfg, _, err := parseConfig(path, data, c.getenv, true)
	return cfg, err
}

// targetPath is /admin/targets/{t} with the name escaped.
func targetPath(target, rest string) string {
	return "/admin/targets/" + url.PathEscape(target) + rest
}

func (c *adminClient) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
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
		err := c.httpError(resp)
		if ae, ok := err.(*apiError); ok && ae.Code == http.StatusNotFound && ae.Message == "" {
			ae.Message = fmt.Sprintf("the gateway at %s does not serve %s %s (is it an older version than this scimgate, %s?)", c.base, method, strings.SplitN(path, "?", 2)[0], version)
		}
		return err
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	if raw, ok := out.(*json.RawMessage); ok {
		b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
		*raw = b
		return err
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// apiError is a non-2xx answer of the admin API.
type apiError struct {
	Status   string
	Code     int
	Message  string   `json:"error"`
	Problems []string `json:"problems"`
}

func (e *apiError) Error() string {
	if e.Message == "" {
		return "admin API: " + e.Status
	}
	return fmt.Sprintf("admin API: %s: %s", e.Status, e.Message)
}

func (c *adminClient) httpError(resp *http.Response) error {
	e := &apiError{Status: resp.Status, Code: resp.StatusCode}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	_ = json.Unmarshal(b, e)
	return e
}

func printJSON(w io.Writer, v any) error {
	if raw, ok := v.(json.RawMessage); ok {
		var buf bytes.Buffer
		if err := json.Indent(&buf, raw, "", "  "); err != nil {
			_, err = w.Write(raw)
			return err
		}
		buf.WriteByte('\n')
		_, err := buf.WriteTo(w)
		return err
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// ---- status, health ----

func (c *cli) statusCommand() *cobra.Command {
	var f adminFlags
	cmd := &cobra.Command{
		Use:   "status",
		Short: "show a running gateway's counts, last SCIM activity and delivery per target",
		Long: `Show a running gateway's counts, the last SCIM request and change, and each target's
delivery: state, backlog, oldest pending event, dead letters, deliveries, last success.
Why a target is paused, the last delivery errors and backfills in progress follow the table.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client(cmd, &f, true)
			if err != nil {
				return err
			}
			var raw json.RawMessage
			if err := cl.do(cmd.Context(), http.MethodGet, "/admin/status", nil, &raw); err != nil {
				return err
			}
			if f.json {
				return printJSON(c.stdout, raw)
			}
			var st statusJSON
			if err := json.Unmarshal(raw, &st); err != nil {
				return fmt.Errorf("admin API: status: %w", err)
			}
			printStatus(c.stdout, st, time.Now())
			printActionTargets(c.stdout, raw)
			return nil
		},
	}
	f.register(cmd, false, true)
	return cmd
}

func (c *cli) healthCommand() *cobra.Command {
	var f adminFlags
	cmd := &cobra.Command{
		Use:   "health",
		Short: "exit 0 when the gateway answers /healthz (Docker HEALTHCHECK)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client(cmd, &f, false)
			if err != nil {
				return err
			}
			if err := cl.do(cmd.Context(), http.MethodGet, "/healthz", nil, nil); err != nil {
				return err
			}
			fmt.Fprintln(c.stdout, "ok")
			return nil
		},
	}
	f.cf.register(cmd)
	cmd.Flags().StringVar(&f.admin, "admin", "", "admin API base `URL` (default: from admin.listen)")
	return cmd
}

// statusJSON is GET /admin/status.
type statusJSON struct {
	Version         string       `json:"version"`
	StartedAt       time.Time    `json:"started_at"`
	LastSCIMRequest time.Time    `json:"last_scim_request"`
	LastSCIMChange  time.Time    `json:"last_scim_change"`
	Users           int          `json:"users"`
	ActiveUsers     int          `json:"active_users"`
	Groups          int          `json:"groups"`
	Targets         []targetJSON `json:"targets"`
}

// targetJSON is one target of the status.
type targetJSON struct {
	Name         string `json:"name"`
	URL          string `json:"url"`
	Paused       bool   `json:"paused"`
	PausedReason string `json:"paused_reason"`
	Backlog      int    `json:"backlog"`
	// OldestPendingAgeSeconds is the second release's field; release 1
	// sent nanoseconds in oldest_pending_age.
	OldestPendingAgeSeconds *float64        `json:"oldest_pending_age_seconds"`
	OldestPendingAgeNanos   *int64          `json:"oldest_pending_age"`
	DeadLetters             int             `json:"dead_letters"`
	Delivered               uint64          `json:"delivered"`
	LastSuccess             time.Time       `json:"last_success"`
	LastError               string          `json:"last_error"`
	LastErrorAt             time.Time       `json:"last_error_at"`
	Backfill                json.RawMessage `json:"backfill"`
}

func (t targetJSON) oldestPending() time.Duration {
	switch {
	case t.OldestPendingAgeSeconds != nil:
		return time.Duration(*t.OldestPendingAgeSeconds * float64(time.Second))
	case t.OldestPendingAgeNanos != nil:
		return time.Duration(*t.OldestPendingAgeNanos)
	}
	return 0
}

// printStatus keeps the table to short cells; reasons and errors, which
// can be long, follow it one per line.
func printStatus(w io.Writer, st statusJSON, now time.Time) {
	ago := func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return fmt.Sprintf("%s (%s ago)", t.UTC().Format(time.RFC3339), now.Sub(t).Round(time.Second))
	}
	fmt.Fprintf(w, "scimgate %s, up since %s\n", st.Version, st.StartedAt.UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "last SCIM request: %s\nlast SCIM change:  %s\n", ago(st.LastSCIMRequest), ago(st.LastSCIMChange))
	fmt.Fprintf(w, "users: %d (%d active)   groups: %d\n\n", st.Users, st.ActiveUsers, st.Groups)
	rows := [][]string{{"TARGET", "STATE", "BACKLOG", "OLDEST PENDING", "DEAD LETTERS", "DELIVERED", "LAST SUCCESS", "LAST ERROR"}}
	var notes []string
	for _, t := range st.Targets {
		state := "active"
		if t.Paused {
			state = "paused"
			reason := t.PausedReason
			if reason == "" {
				reason = "(no reason given)"
			}
			notes = append(notes, fmt.Sprintf("%s is paused: %s", t.Name, oneLine(reason)))
		}
		if len(t.Backfill) > 0 && string(t.Backfill) != "null" {
			line, active := describeBackfill(t.Backfill, now)
			if active {
				state += "+backfill"
			}
			notes = append(notes, fmt.Sprintf("%s backfill: %s", t.Name, line))
		}
		lastOK, lastErr := "never", "-"
		if !t.LastSuccess.IsZero() {
			lastOK = now.Sub(t.LastSuccess).Round(time.Second).String() + " ago"
		}
		if t.LastError != "" {
			lastErr = "see below"
			at := ""
			if !t.LastErrorAt.IsZero() {
				lastErr = now.Sub(t.LastErrorAt).Round(time.Second).String() + " ago"
				at = " at " + t.LastErrorAt.UTC().Format(time.RFC3339)
			}
			notes = append(notes, fmt.Sprintf("%s last error%s: %s", t.Name, at, oneLine(t.LastError)))
		}
		rows = append(rows, []string{t.Name, state, strconv.Itoa(t.Backlog), t.oldestPending().Round(time.Second).String(),
			strconv.Itoa(t.DeadLetters), strconv.FormatUint(t.Delivered, 10), lastOK, lastErr})
	}
	printTable(w, rows)
	if len(notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range notes {
			fmt.Fprintln(w, n)
		}
	}
}

// describeBackfill words a target's last backfill (outbox.BackfillStatus)
// and says whether it is still under way.
func describeBackfill(raw json.RawMessage, now time.Time) (string, bool) {
	var b struct {
		State      string    `json:"state"`
		Sequence   uint64    `json:"sequence"`
		Total      int       `json:"total"`
		Remaining  int       `json:"remaining"`
		Phase      string    `json:"phase"`
		StartedAt  time.Time `json:"started_at"`
		FinishedAt time.Time `json:"finished_at"`
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		return compactJSON(raw), true
	}
	snap := fmt.Sprintf("snapshot at sequence %d", b.Sequence)
	switch b.State {
	case "done":
		return fmt.Sprintf("finished %s (%s ago), %d events, %s", b.FinishedAt.UTC().Format(time.RFC3339),
			now.Sub(b.FinishedAt).Round(time.Second), b.Total, snap), false
	case "running":
		phase := ""
		if b.Phase != "" {
			phase = " (" + b.Phase + ")"
		}
		return fmt.Sprintf("running, %d of %d events delivered%s, %s, started %s ago", b.Total-b.Remaining, b.Total, phase, snap,
			now.Sub(b.StartedAt).Round(time.Second)), true
	default:
		return fmt.Sprintf("%s, %d events, %s, started %s ago", b.State, b.Total, snap, now.Sub(b.StartedAt).Round(time.Second)), true
	}
}

// printTable aligns cells in columns two spaces apart.
func printTable(w io.Writer, rows [][]string) {
	widths := map[int]int{}
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], len([]rune(c)))
		}
	}
	for _, r := range rows {
		var b strings.Builder
		for i, c := range r {
			if i == len(r)-1 {
				b.WriteString(c)
				break
			}
			b.WriteString(c)
			b.WriteString(strings.Repeat(" ", widths[i]-len([]rune(c))+2))
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func compactJSON(raw json.RawMessage) string {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return string(raw)
	}
	return b.String()
}

// ---- dead letters ----

// deadLetterJSON is one dead letter of the list.
type deadLetterJSON struct {
	Event struct {
		ID   string `json:"id"`
		Type string `json:"type"`
		Seq  uint64 `json:"sequence"`
	} `json:"event"`
	Attempts   int    `json:"attempts"`
	LastStatus int    `json:"last_status"`
	LastError  string `json:"last_error"`
}

func (c *cli) deadLettersCommand() *cobra.Command {
	var f adminFlags
	cmd := &cobra.Command{
		Use:   "dead-letters",
		Short: "list, show, replay or discard the events a target refused",
		Long: `Dead letters are events a target refused (a 4xx other than 408/429) or that failed for the
whole retry budget: kept, counted in status, listed here. Without a subcommand: list.`,
		Example: `  scimgate dead-letters list --target default
  scimgate dead-letters show "$EVENT_ID" --target default
  scimgate dead-letters replay --all --target default
  scimgate dead-letters discard "$EVENT_ID" --target default`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef(cmd, "unknown command %q: use list, show, replay or discard", args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return c.listDeadLetters(cmd, &f) },
	}
	f.register(cmd, true, true)
	list := &cobra.Command{
		Use:   "list",
		Short: "list a target's dead letters: id, type, sequence, attempts, last status and error",
		Args:  noArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return c.listDeadLetters(cmd, &f) },
	}
	show := &cobra.Command{
		Use:   "show EVENT-ID",
		Short: "show one dead letter, with up to 4 KiB of the target's last answer",
		Args:  argsBetween(1, 1, "EVENT-ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client(cmd, &f, true)
			if err != nil {
				return err
			}
			var raw json.RawMessage
			if err := cl.do(cmd.Context(), http.MethodGet, targetPath(f.target, "/dead-letters/"+url.PathEscape(args[0])), nil, &raw); err != nil {
				return err
			}
			return printJSON(c.stdout, raw)
		},
	}
	var all bool
	replay := &cobra.Command{
		Use:   "replay (EVENT-ID… | --all)",
		Short: "deliver dead letters again (the given ones, or --all)",
		Long: `Move dead letters back to pending: each is delivered again with its original id, before the
later pending events of the same user or group. Give their ids, or --all for every one.`,
		Args: idsOrAll("replay", &all),
		RunE: func(cmd *cobra.Command, args []string) error { return c.takeDeadLetters(cmd, &f, "replay", args, all) },
	}
	replay.Flags().BoolVar(&all, "all", false, "every dead letter of the target")
	var discardAll bool
	discard := &cobra.Command{
		Use:   "discard (EVENT-ID… | --all)",
		Short: "delete dead letters for good (the given ones, or --all)",
		Args:  idsOrAll("discard", &discardAll),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.takeDeadLetters(cmd, &f, "discard", args, discardAll)
		},
	}
	discard.Flags().BoolVar(&discardAll, "all", false, "every dead letter of the target")
	for _, sub := range []*cobra.Command{list, show, replay, discard} {
		f.register(sub, true, sub == list)
		cmd.AddCommand(sub)
	}
	return cmd
}

func (c *cli) listDeadLetters(cmd *cobra.Command, f *adminFlags) error {
	cl, err := c.client(cmd, f, true)
	if err != nil {
		return err
	}
	const page = 500
	var all []json.RawMessage
	var after uint64
	for {
		var out struct {
			DeadLetters []json.RawMessage `json:"dead_letters"`
		}
		if err := cl.do(cmd.Context(), http.MethodGet, targetPath(f.target, fmt.Sprintf("/dead-letters?after=%d&limit=%d", after, page)), nil, &out); err != nil {
			return err
		}
		all = append(all, out.DeadLetters...)
		if len(out.DeadLetters) < page {
			break
		}
		var last deadLetterJSON
		if err := json.Unmarshal(out.DeadLetters[len(out.DeadLetters)-1], &last); err != nil || last.Event.Seq <= after {
			return fmt.Errorf("admin API: dead letters: cannot page past sequence %d", after)
		}
		after = last.Event.Seq
	}
	if f.json {
		if all == nil {
			all = []json.RawMessage{}
		}
		return printJSON(c.stdout, all)
	}
	rows := [][]string{{"EVENT", "TYPE", "SEQ", "ATTEMPTS", "LAST STATUS", "LAST ERROR"}}
	for _, raw := range all {
		var d deadLetterJSON
		if err := json.Unmarshal(raw, &d); err != nil {
			return fmt.Errorf("admin API: dead letter: %w", err)
		}
		status := "-"
		if d.LastStatus != 0 {
			status = strconv.Itoa(d.LastStatus)
		}
		rows = append(rows, []string{d.Event.ID, d.Event.Type, strconv.FormatUint(d.Event.Seq, 10), strconv.Itoa(d.Attempts), status, truncate(oneLine(d.LastError), 60)})
	}
	printTable(c.stdout, rows)
	fmt.Fprintf(c.stdout, "%d dead letter(s) for target %s\n", len(all), f.target)
	return nil
}

// idsOrAll accepts EVENT-IDs or --all, exactly one of the two: an empty
// request never means "all".
func idsOrAll(op string, all *bool) cobra.PositionalArgs {
	return func(cmd *cobra.Command, ids []string) error {
		if err := argsBetween(0, -1, "EVENT-IDs")(cmd, ids); err != nil {
			return err
		}
		switch {
		case *all && len(ids) > 0:
			return usagef(cmd, "give EVENT-IDs or --all, not both")
		case !*all && len(ids) == 0:
			return usagef(cmd, "give the EVENT-IDs of the dead letters to %s, or --all for every one", op)
		}
		return nil
	}
}

// takeDeadLetters replays or discards: the given ids in chunks (progress
// shown), or all of them with --all.
func (c *cli) takeDeadLetters(cmd *cobra.Command, f *adminFlags, op string, ids []string, all bool) error {
	cl, err := c.client(cmd, f, true)
	if err != nil {
		return err
	}
	key, done := "replayed", "they are pending delivery again"
	if op == "discard" {
		key, done = "discarded", "they are deleted"
	}
	if all {
		var out map[string]int
		if err := cl.do(cmd.Context(), http.MethodPost, targetPath(f.target, "/"+op), map[string]bool{"all": true}, &out); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "%s %d dead letter(s) of target %s; %s\n", key, out[key], f.target, done)
		return nil
	}
	total, err := c.chunked(cmd.Context(), cl, targetPath(f.target, "/"+op), key, ids)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "%s %d of %d dead letter(s) of target %s; %s\n", key, total, len(ids), f.target, done)
	return nil
}

// chunked posts {"ids": …} in chunks of 500 and sums the answers' key,
// showing progress.
func (c *cli) chunked(ctx context.Context, cl *adminClient, path, key string, ids []string) (int, error) {
	const chunk = 500
	p := newProgress(c.stdout)
	total := 0
	for i := 0; i < len(ids); i += chunk {
		var out map[string]int
		if err := cl.do(ctx, http.MethodPost, path, map[string][]string{"ids": ids[i:min(i+chunk, len(ids))]}, &out); err != nil {
			p.clear()
			return total, err
		}
		total += out[key]
		if len(ids) > chunk {
			p.update(fmt.Sprintf("%s %d, sent %d of %d ids", key, total, min(i+chunk, len(ids)), len(ids)), i+chunk >= len(ids))
		}
	}
	p.clear()
	return total, nil
}

// ---- replay history, retry, pause, resume, backfill ----

func (c *cli) replayCommand() *cobra.Command {
	var f adminFlags
	var after uint64
	var since string
	var inclDiscarded bool
	cmd := &cobra.Command{
		Use:   "replay --target NAME (--after SEQ | --since TIME) [--include-discarded]",
		Short: "deliver retained events again to a target (after a sequence, or since a time)",
		Long: `Re-deliver events that were already delivered and are still retained, to one target, in order
and with their original ids (the app lost its database): every event after sequence SEQ, or
every event since TIME (RFC 3339), not in the future. Live delivery order is not disturbed.
Events whose dead letter an operator discarded are skipped unless --include-discarded.

Dead letters are replayed with 'scimgate dead-letters replay'.`,
		Example: `  scimgate replay --target default --after 1200
  scimgate replay --target default --since 2026-11-23T00:00:00Z`,
		// The flags are parsed when Args runs: the checks are here so that
		// they apply before anything else (and to the docs test's parse).
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef(cmd, "unexpected argument %q: this replays history; to replay dead letters: scimgate dead-letters replay EVENT-ID… | --all", args[0])
			}
			if cmd.Flags().Changed("after") == cmd.Flags().Changed("since") {
				return usagef(cmd, "give exactly one of --after SEQ and --since TIME")
			}
			if _, err := time.Parse(time.RFC3339, since); cmd.Flags().Changed("since") && err != nil {
				return usagef(cmd, "--since %q is not an RFC 3339 time such as 2026-11-23T09:00:00Z", since)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			body := map[string]any{"after": after}
			if cmd.Flags().Changed("since") {
				t, _ := time.Parse(time.RFC3339, since)
				body = map[string]any{"since": t.UTC().Format(time.RFC3339Nano)}
			}
			if inclDiscarded {
				body["include_discarded"] = true
			}
			cl, err := c.client(cmd, &f, true)
			if err != nil {
				return err
			}
			var out struct {
				Replayed         int    `json:"replayed"`
				FromSequence     uint64 `json:"from_sequence"`
				ToSequence       uint64 `json:"to_sequence"`
				SkippedDiscarded int    `json:"skipped_discarded"`
			}
			if err := cl.do(cmd.Context(), http.MethodPost, targetPath(f.target, "/history"), body, &out); err != nil {
				return err
			}
			skipped := ""
			if out.SkippedDiscarded > 0 {
				skipped = fmt.Sprintf(" (%d discarded event(s) skipped: --include-discarded sends them too)", out.SkippedDiscarded)
			}
			if out.Replayed == 0 {
				fmt.Fprintf(c.stdout, "no retained event to replay to target %s%s\n", f.target, skipped)
				return nil
			}
			fmt.Fprintf(c.stdout, "replaying %d event(s) to target %s, sequences %d to %d, with their original ids%s\n", out.Replayed, f.target, out.FromSequence, out.ToSequence, skipped)
			return nil
		},
	}
	f.register(cmd, true, false)
	cmd.Flags().Uint64Var(&after, "after", 0, "replay the events after this sequence `SEQ`")
	cmd.Flags().StringVar(&since, "since", "", "replay the events since this RFC 3339 `TIME`")
	cmd.Flags().BoolVar(&inclDiscarded, "include-discarded", false, "also re-deliver events whose dead letter was discarded")
	return cmd
}

func (c *cli) retryCommand() *cobra.Command {
	var f adminFlags
	cmd := &cobra.Command{
		Use:   "retry --target NAME [EVENT-ID…]",
		Short: "make pending events due now (all of the target's, or the given ones)",
		Long: `Make events that wait out their backoff (or a Retry-After) due now: after the app's outage is
over, instead of waiting up to hours for the next attempt. Without ids, every pending event of
the target. 'scimgate resume' does the same for a paused target.`,
		Example: `  scimgate retry --target default`,
		Args:    argsBetween(0, -1, "EVENT-IDs"),
		RunE: func(cmd *cobra.Command, ids []string) error {
			cl, err := c.client(cmd, &f, true)
			if err != nil {
				return err
			}
			if len(ids) == 0 {
				var out map[string]int
				if err := cl.do(cmd.Context(), http.MethodPost, targetPath(f.target, "/retry"), map[string]any{}, &out); err != nil {
					return err
				}
				fmt.Fprintf(c.stdout, "retrying %d pending event(s) of target %s now\n", out["retried"], f.target)
				return nil
			}
			n, err := c.chunked(cmd.Context(), cl, targetPath(f.target, "/retry"), "retried", ids)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "retrying %d of %d event(s) of target %s now\n", n, len(ids), f.target)
			return nil
		},
	}
	f.register(cmd, true, false)
	return cmd
}

func (c *cli) pauseCommand() *cobra.Command {
	var f adminFlags
	var reason string
	cmd := &cobra.Command{
		Use:   "pause --target NAME [--reason TEXT]",
		Short: "stop deliveries to a target (events keep queueing)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client(cmd, &f, true)
			if err != nil {
				return err
			}
			q := ""
			if reason != "" {
				q = "?reason=" + url.QueryEscape(reason)
			}
			if err := cl.do(cmd.Context(), http.MethodPost, targetPath(f.target, "/pause"+q), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "target %s: paused; events keep queueing until 'scimgate resume --target %s'\n", f.target, f.target)
			return nil
		},
	}
	f.register(cmd, true, false)
	cmd.Flags().StringVar(&reason, "reason", "", "why, shown in status (default \"paused by operator\")")
	return cmd
}

func (c *cli) resumeCommand() *cobra.Command {
	var f adminFlags
	cmd := &cobra.Command{
		Use:   "resume --target NAME",
		Short: "restart deliveries to a paused target, retrying pending events now",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client(cmd, &f, true)
			if err != nil {
				return err
			}
			var out struct {
				Retried *int `json:"retried"`
			}
			if err := cl.do(cmd.Context(), http.MethodPost, targetPath(f.target, "/resume"), nil, &out); err != nil {
				return err
			}
			if out.Retried != nil {
				fmt.Fprintf(c.stdout, "target %s: resumed; %d pending event(s) are due now\n", f.target, *out.Retried)
				return nil
			}
			fmt.Fprintf(c.stdout, "target %s: resumed\n", f.target)
			return nil
		},
	}
	f.register(cmd, true, false)
	return cmd
}

func (c *cli) backfillCommand() *cobra.Command {
	var f adminFlags
	cmd := &cobra.Command{
		Use:   "backfill --target NAME",
		Short: "send a target a consistent snapshot of every user, group and membership",
		Long: `Send one target a snapshot of the current state — every user, every group, every membership —
taken at one sequence, followed by the live events after it (docs/events.md, snapshot events).
For a target added to a gateway that has run for a while. Progress shows in 'scimgate status'.`,
		Example: `  scimgate backfill --target app`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client(cmd, &f, true)
			if err != nil {
				return err
			}
			var raw json.RawMessage
			if err := cl.do(cmd.Context(), http.MethodPost, targetPath(f.target, "/backfill"), nil, &raw); err != nil {
				return err
			}
			if f.json {
				return printJSON(c.stdout, raw)
			}
			var out struct {
				Backfill json.RawMessage `json:"backfill"`
			}
			_ = json.Unmarshal(raw, &out)
			fmt.Fprintf(c.stdout, "backfill of target %s started: %s\nfollow it with: scimgate status\n", f.target, compactJSON(out.Backfill))
			return nil
		},
	}
	f.register(cmd, true, true)
	return cmd
}

// ---- reload ----

func (c *cli) reloadCommand() *cobra.Command {
	var f adminFlags
	cmd := &cobra.Command{
		Use:   "reload",
		Short: "reload the running gateway's configuration and secrets (as SIGHUP does)",
		Long: `Reload the running gateway's configuration and environment (tokens, Basic credentials,
limits, targets, the TLS certificate, and secrets from _FILE variables), as SIGHUP does. The new
configuration is validated as at start; if it has problems they are printed and the running
configuration is kept. Listeners, data_dir and the mapping need a restart: a reload that changes
them applies the rest, names what was not applied, and exits 1.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client(cmd, &f, true)
			if err != nil {
				return err
			}
			var out struct {
				Changes []string `json:"changes"`
			}
			err = cl.do(cmd.Context(), http.MethodPost, "/admin/reload", nil, &out)
			var ae *apiError
			if errors.As(err, &ae) && ae.Code == http.StatusBadRequest && len(ae.Problems) > 0 {
				fmt.Fprintln(c.stderr, "reload refused; the running configuration is kept. Fix:")
				for _, p := range ae.Problems {
					fmt.Fprintf(c.stderr, "  %s\n", p)
				}
				return errSilent
			} else if err != nil {
				return err
			}
			if len(out.Changes) == 0 {
				fmt.Fprintln(c.stdout, "reloaded: no changes")
				return nil
			}
			var applied, restart []string
			for _, ch := range out.Changes {
				if strings.Contains(ch, "needs a restart") {
					restart = append(restart, ch)
				} else {
					applied = append(applied, ch)
				}
			}
			if len(applied) > 0 {
				fmt.Fprintln(c.stdout, "reloaded:")
				for _, ch := range applied {
					fmt.Fprintf(c.stdout, "  %s\n", ch)
				}
			}
			if len(restart) == 0 {
				return nil
			}
			// The configuration on disk is not what runs: say so, and fail.
			fmt.Fprintln(c.stderr, "not applied until the gateway restarts:")
			for _, ch := range restart {
				fmt.Fprintf(c.stderr, "  %s\n", ch)
			}
			return errSilent
		},
	}
	f.register(cmd, false, false)
	return cmd
}

// ---- compact ----

func (c *cli) compactCommand() *cobra.Command {
	var f adminFlags
	var force bool
	cmd := &cobra.Command{
		Use:   "compact",
		Short: "rewrite the running gateway's database without its free pages",
		Long: `Rewrite the running gateway's database file without its free pages, while it serves. bbolt never
gives pages back to the file system: after a large leaver wave or a retention cut the file stays at
its largest. The copy is made while writes go on; SCIM writes and deliveries wait only while it
catches up (about 300 ms for a 1 GB file, docs/performance.md), then the gateway goes on with the
new file. The gateway does this by itself every 10 minutes for a file of 64 MiB or more that is at
least half free, and at start-up; without --force this command, too, leaves a file that is less than
half free alone.`,
		Example: `  scimgate compact
  scimgate compact --force`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client(cmd, &f, true)
			if err != nil {
				return err
			}
			path := "/admin/compact"
			if force {
				path += "?force=true"
			}
			var raw json.RawMessage
			if err := cl.do(cmd.Context(), http.MethodPost, path, nil, &raw); err != nil {
				return err
			}
			if f.json {
				return printJSON(c.stdout, raw)
			}
			var out struct {
				Compacted   bool    `json:"compacted"`
				Before      int64   `json:"bytes_before"`
				After       int64   `json:"bytes_after"`
				Free        float64 `json:"free_before"`
				TookSeconds float64 `json:"took_seconds"`
			}
			if err := json.Unmarshal(raw, &out); err != nil {
				return fmt.Errorf("unexpected answer from the gateway: %w", err)
			}
			// free_before is the share of the file a compaction reclaims
			// (live data is the rest), an estimate until it is done.
			if !out.Compacted {
				reclaim := int64(float64(out.Before) * out.Free)
				fmt.Fprintf(c.stdout, "not compacted: %s file, about %s live data, %s reclaimable (under half; --force compacts anyway)\n",
					humanBytes(out.Before), humanBytes(out.Before-reclaim), humanBytes(reclaim))
				return nil
			}
			fmt.Fprintf(c.stdout, "compacted: %s → %s (live data), %s reclaimed in %.2fs\n", humanBytes(out.Before), humanBytes(out.After),
				humanBytes(out.Before-out.After), out.TookSeconds)
			return nil
		},
	}
	f.register(cmd, false, true)
	cmd.Flags().BoolVar(&force, "force", false, "compact even a file that is less than half free")
	return cmd
}

// ---- backup ----

func (c *cli) backupCommand() *cobra.Command {
	var f adminFlags
	cmd := &cobra.Command{
		Use:   "backup FILE",
		Short: "write a consistent copy of the running gateway's database to FILE",
		Long: `Write a consistent copy of the running gateway's database to FILE, from one read transaction,
while SCIM writes and deliveries continue. The copy goes to FILE.partial, is fsynced, and is
renamed to FILE when complete. Progress is redrawn on a terminal and printed as plain lines
otherwise. Restore with 'scimgate restore FILE' (with scimgate stopped).`,
		Example: `  scimgate backup scimgate-$(date +%F).db`,
		Args:    argsBetween(1, 1, "FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client(cmd, &f, true)
			if err != nil {
				return err
			}
			return cl.backup(cmd.Context(), c.stdout, args[0])
		},
	}
	f.register(cmd, false, false)
	return cmd
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
		return fmt.Errorf("admin API at %s: %w (is scimgate running? see --admin)", c.base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return c.httpError(resp)
	}
	tmp := file + ".partial"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	pw := &progressWriter{w: out, p: newProgress(stdout), total: resp.ContentLength}
	_, err = io.Copy(pw, resp.Body)
	pw.p.clear()
	if err == nil && resp.ContentLength > 0 && pw.n != resp.ContentLength {
		err = fmt.Errorf("backup truncated: got %d of %d bytes", pw.n, resp.ContentLength)
	}
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, file); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "backup written to %s (%d bytes); to restore it, stop scimgate and run: scimgate restore %s\n", file, pw.n, file)
	return nil
}

// progressWriter counts bytes through to w and reports them.
type progressWriter struct {
	w     io.Writer
	p     *progress
	total int64
	n     int64
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.n += int64(n)
	line := fmt.Sprintf("%d bytes", p.n)
	if p.total > 0 {
		line = fmt.Sprintf("%d / %d bytes (%d%%)", p.n, p.total, p.n*100/p.total)
	}
	p.p.update(line, false)
	return n, err
}

// progress reports a long operation: on a terminal one line redrawn with
// \r at most every 200 ms; elsewhere (a CronJob's log) plain lines at most
// every 5 s, so that a log never holds a run-on line of carriage returns.
type progress struct {
	out   io.Writer
	tty   bool
	last  time.Time
	drawn bool
}

func newProgress(out io.Writer) *progress {
	return &progress{out: out, tty: isTerminal(out), last: time.Now()}
}

// update shows line if enough time has passed (or final is set).
func (p *progress) update(line string, final bool) {
	every := 5 * time.Second
	if p.tty {
		every = 200 * time.Millisecond
	}
	if !final && time.Since(p.last) < every {
		return
	}
	p.last = time.Now()
	if p.tty {
		fmt.Fprintf(p.out, "\r%s\x1b[K", line)
		p.drawn = true
		return
	}
	fmt.Fprintln(p.out, line)
}

// clear ends a redrawn line so that what follows starts on its own.
func (p *progress) clear() {
	if p.drawn {
		fmt.Fprint(p.out, "\r\x1b[K")
		p.drawn = false
	}
}

// humanBytes is n in B, KiB, MiB or GiB, to one decimal.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, suffix := float64(n)/unit, "KiB"
	for _, s := range []string{"MiB", "GiB", "TiB"} {
		if v < unit {
			break
		}
		v, suffix = v/unit, s
	}
	return fmt.Sprintf("%.1f %s", v, suffix)
}
