package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/spf13/cobra"
)

// ---- status, health ----

func (c *cli) statusCommand() *cobra.Command {
	var f adminFlags
	var watch bool
	var interval time.Duration
	cmd := c.adminCommand(&cobra.Command{
		Use:   "status",
		Short: "show a running gateway's counts, last SCIM activity and delivery per target",
		Long: `Show a running gateway's counts, the last SCIM request and change, and each target's
delivery: state, backlog, oldest pending event, dead letters, deliveries, last success.
Why a target is paused, the last delivery errors and backfills in progress follow the table.

With --watch it refreshes every --interval until Ctrl-C: in place on a terminal, as
repeated output (each preceded by a line with the time) when stdout is not one.`,
		Args: noArgs,
	}, &f, false, true, func(cmd *cobra.Command, cl *adminClient, _ []string) error {
		if !watch {
			return c.showStatus(cmd, cl, f.json)
		}
		if interval <= 0 {
			return fmt.Errorf("--interval %s: give a positive duration, such as 2s", interval)
		}
		return c.watchStatus(cmd, cl, f.json, interval)
	})
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "refresh until Ctrl-C (in place on a terminal)")
	cmd.Flags().DurationVar(&interval, "interval", 2*time.Second, "time between refreshes with --watch")
	return cmd
}

// showStatus prints the status once, as a table or JSON.
func (c *cli) showStatus(cmd *cobra.Command, cl *adminClient, asJSON bool) error {
	return c.writeStatus(cmd, cl, c.stdout, asJSON)
}

func (c *cli) writeStatus(cmd *cobra.Command, cl *adminClient, w io.Writer, asJSON bool) error {
	var raw json.RawMessage
	if err := cl.do(cmd.Context(), http.MethodGet, "/admin/status", nil, &raw); err != nil {
		return err
	}
	if asJSON {
		return printJSON(w, raw)
	}
	var st statusJSON
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("admin API: status: %w", err)
	}
	printStatus(w, st, time.Now())
	printActionTargets(w, raw)
	printRemapStatus(w, raw, time.Now())
	return nil
}

// watchStatus prints the status every interval until the command's
// context ends (Ctrl-C). On a terminal each refresh clears the screen and
// draws at the top; otherwise refreshes follow one another, each after a
// line with its time. A first failure ends it; a later one (the gateway
// restarting) is shown and the next refresh tries again.
func (c *cli) watchStatus(cmd *cobra.Command, cl *adminClient, asJSON bool, interval time.Duration) error {
	tty := isTerminal(c.stdout)
	ctx := cmd.Context()
	for n := 0; ; n++ {
		var buf bytes.Buffer
		now := time.Now().UTC().Format(time.RFC3339)
		if tty {
			fmt.Fprintf(&buf, "\x1b[H\x1b[2JEvery %s: scimgate status   %s   (Ctrl-C to stop)\n\n", interval, now)
		} else {
			fmt.Fprintf(&buf, "== scimgate status at %s ==\n", now)
		}
		err := c.writeStatus(cmd, cl, &buf, asJSON)
		if err != nil && ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if n == 0 {
				return err
			}
			fmt.Fprintf(&buf, "error: %v (trying again in %s)\n", err, interval)
		}
		if !tty {
			buf.WriteString("\n")
		}
		if _, err := c.stdout.Write(buf.Bytes()); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
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
