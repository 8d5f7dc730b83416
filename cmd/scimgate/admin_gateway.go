package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/spf13/cobra"
)

// ---- reload ----

func (c *cli) reloadCommand() *cobra.Command {
	var f adminFlags
	return c.adminCommand(&cobra.Command{
		Use:   "reload",
		Short: "reload the running gateway's configuration and secrets (as SIGHUP does)",
		Long: `Reload the running gateway's configuration and environment (tokens, Basic credentials,
limits, targets, the TLS certificate, and secrets from _FILE variables), as SIGHUP does. The new
configuration is validated as at start; if it has problems they are printed and the running
configuration is kept. A changed mapping is applied to the stored records in the background
(remap: on_change) or by scimgate remap (remap: manual). Listeners, data_dir and a mapping's
extension schemas need a restart: a reload that changes them applies the rest, names what was
not applied, and exits 1.`,
		Args: noArgs,
	}, &f, false, false, func(cmd *cobra.Command, cl *adminClient, _ []string) error {
		var out struct {
			Changes []string `json:"changes"`
		}
		err := cl.do(cmd.Context(), http.MethodPost, "/admin/reload", nil, &out)
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
			if notApplied(ch) {
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
		fmt.Fprintln(c.stderr, "not applied:")
		for _, ch := range restart {
			fmt.Fprintf(c.stderr, "  %s\n", ch)
		}
		return errSilent
	})
}

// ---- compact ----

func (c *cli) compactCommand() *cobra.Command {
	var f adminFlags
	var force bool
	cmd := c.adminCommand(&cobra.Command{
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
	}, &f, false, true, func(cmd *cobra.Command, cl *adminClient, _ []string) error {
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
	})
	cmd.Flags().BoolVar(&force, "force", false, "compact even a file that is less than half free")
	return cmd
}

// ---- backup ----

func (c *cli) backupCommand() *cobra.Command {
	var f adminFlags
	return c.adminCommand(&cobra.Command{
		Use:   "backup FILE",
		Short: "write a consistent copy of the running gateway's database to FILE",
		Long: `Write a consistent copy of the running gateway's database to FILE, from one read transaction,
while SCIM writes and deliveries continue. The copy goes to FILE.partial, is fsynced, and is
renamed to FILE when complete. Progress is redrawn on a terminal and printed as plain lines
otherwise. Restore with 'scimgate restore FILE' (with scimgate stopped).`,
		Example: `  scimgate backup scimgate-$(date +%F).db`,
		Args:    argsBetween(1, 1, "FILE"),
	}, &f, false, false, func(cmd *cobra.Command, cl *adminClient, args []string) error {
		return cl.backup(cmd.Context(), c.stdout, args[0])
	})
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
