package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/spf13/cobra"
)

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
	list := func(cmd *cobra.Command, cl *adminClient, _ []string) error { return c.listDeadLetters(cmd, cl, &f) }
	cmd := c.adminCommand(&cobra.Command{
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
	}, &f, true, true, list)
	cmd.AddCommand(c.adminCommand(&cobra.Command{
		Use:   "list",
		Short: "list a target's dead letters: id, type, sequence, attempts, last status and error",
		Args:  noArgs,
	}, &f, true, true, list))
	cmd.AddCommand(c.adminCommand(&cobra.Command{
		Use:   "show EVENT-ID",
		Short: "show one dead letter, with up to 4 KiB of the target's last answer",
		Args:  argsBetween(1, 1, "EVENT-ID"),
	}, &f, true, false, func(cmd *cobra.Command, cl *adminClient, args []string) error {
		var raw json.RawMessage
		if err := cl.do(cmd.Context(), http.MethodGet, targetPath(f.target, "/dead-letters/"+url.PathEscape(args[0])), nil, &raw); err != nil {
			return err
		}
		return printJSON(c.stdout, raw)
	}))
	var all bool
	replay := c.adminCommand(&cobra.Command{
		Use:   "replay (EVENT-ID… | --all)",
		Short: "deliver dead letters again (the given ones, or --all)",
		Long: `Move dead letters back to pending: each is delivered again with its original id, before the
later pending events of the same user or group. Give their ids, or --all for every one.`,
		Args: idsOrAll("replay", &all),
	}, &f, true, false, func(cmd *cobra.Command, cl *adminClient, args []string) error {
		return c.takeDeadLetters(cmd, cl, &f, "replay", args, all)
	})
	replay.Flags().BoolVar(&all, "all", false, "every dead letter of the target")
	var discardAll bool
	discard := c.adminCommand(&cobra.Command{
		Use:   "discard (EVENT-ID… | --all)",
		Short: "delete dead letters for good (the given ones, or --all)",
		Args:  idsOrAll("discard", &discardAll),
	}, &f, true, false, func(cmd *cobra.Command, cl *adminClient, args []string) error {
		return c.takeDeadLetters(cmd, cl, &f, "discard", args, discardAll)
	})
	discard.Flags().BoolVar(&discardAll, "all", false, "every dead letter of the target")
	cmd.AddCommand(replay, discard)
	return cmd
}

func (c *cli) listDeadLetters(cmd *cobra.Command, cl *adminClient, f *adminFlags) error {
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
func (c *cli) takeDeadLetters(cmd *cobra.Command, cl *adminClient, f *adminFlags, op string, ids []string, all bool) error {
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
