package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/spf13/cobra"
)

// ---- replay history, retry, pause, resume, backfill ----

func (c *cli) replayCommand() *cobra.Command {
	var f adminFlags
	var after uint64
	var since string
	var inclDiscarded bool
	cmd := c.adminCommand(&cobra.Command{
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
	}, &f, true, false, func(cmd *cobra.Command, cl *adminClient, _ []string) error {
		body := map[string]any{"after": after}
		if cmd.Flags().Changed("since") {
			t, _ := time.Parse(time.RFC3339, since)
			body = map[string]any{"since": t.UTC().Format(time.RFC3339Nano)}
		}
		if inclDiscarded {
			body["include_discarded"] = true
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
	})
	cmd.Flags().Uint64Var(&after, "after", 0, "replay the events after this sequence `SEQ`")
	cmd.Flags().StringVar(&since, "since", "", "replay the events since this RFC 3339 `TIME`")
	cmd.Flags().BoolVar(&inclDiscarded, "include-discarded", false, "also re-deliver events whose dead letter was discarded")
	return cmd
}

func (c *cli) retryCommand() *cobra.Command {
	var f adminFlags
	return c.adminCommand(&cobra.Command{
		Use:   "retry --target NAME [EVENT-ID…]",
		Short: "make pending events due now (all of the target's, or the given ones)",
		Long: `Make events that wait out their backoff (or a Retry-After) due now: after the app's outage is
over, instead of waiting up to hours for the next attempt. Without ids, every pending event of
the target. 'scimgate resume' does the same for a paused target.`,
		Example: `  scimgate retry --target default`,
		Args:    argsBetween(0, -1, "EVENT-IDs"),
	}, &f, true, false, func(cmd *cobra.Command, cl *adminClient, ids []string) error {
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
	})
}

func (c *cli) pauseCommand() *cobra.Command {
	var f adminFlags
	var reason string
	cmd := c.adminCommand(&cobra.Command{
		Use:   "pause --target NAME [--reason TEXT]",
		Short: "stop deliveries to a target (events keep queueing)",
		Args:  noArgs,
	}, &f, true, false, func(cmd *cobra.Command, cl *adminClient, _ []string) error {
		q := ""
		if reason != "" {
			q = "?reason=" + url.QueryEscape(reason)
		}
		if err := cl.do(cmd.Context(), http.MethodPost, targetPath(f.target, "/pause"+q), nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "target %s: paused; events keep queueing until 'scimgate resume --target %s'\n", f.target, f.target)
		return nil
	})
	cmd.Flags().StringVar(&reason, "reason", "", "why, shown in status (default \"paused by operator\")")
	return cmd
}

func (c *cli) resumeCommand() *cobra.Command {
	var f adminFlags
	return c.adminCommand(&cobra.Command{
		Use:   "resume --target NAME",
		Short: "restart deliveries to a paused target, retrying pending events now",
		Args:  noArgs,
	}, &f, true, false, func(cmd *cobra.Command, cl *adminClient, _ []string) error {
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
	})
}

func (c *cli) backfillCommand() *cobra.Command {
	var f adminFlags
	return c.adminCommand(&cobra.Command{
		Use:   "backfill --target NAME",
		Short: "send a target a consistent snapshot of every user, group and membership",
		Long: `Send one target a snapshot of the current state — every user, every group, every membership —
taken at one sequence, followed by the live events after it (docs/events.md, snapshot events).
For a target added to a gateway that has run for a while. Progress shows in 'scimgate status'.`,
		Example: `  scimgate backfill --target app`,
		Args:    noArgs,
	}, &f, true, true, func(cmd *cobra.Command, cl *adminClient, _ []string) error {
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
	})
}
