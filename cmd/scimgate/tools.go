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
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/scimgate/scimgate/gateway"
	"github.com/scimgate/scimgate/gateway/scim"
	"github.com/scimgate/scimgate/outbox"
)

func hashOf(token string) string { return gateway.HashToken(token) }

func (c *cli) mapCommand() *cobra.Command {
	var cf configFlag
	var kind string
	cmd := &cobra.Command{
		Use:   "map [FILE]",
		Short: "map a sample SCIM resource through the config's rules and print the record",
		Long: `Map a sample SCIM User or Group (FILE, or stdin without it) through the mapping of the
config and print the canonical record your app would receive, or the errors an identity
provider would get. The way to write and test the YAML rules (docs/mapping.md).`,
		Example: `  scimgate map --config examples/cybsafe.yaml user.json
  scimgate map --config config.yaml --type Group < group.json`,
		Args: argsBetween(0, 1, "at most one FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.mapResource(cf.value(cmd, c.getenv), kind, args)
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&kind, "type", "", "`User` or Group (default: from the resource's schemas)")
	return cmd
}

// mapResource runs the mapping on a sample SCIM resource.
func (c *cli) mapResource(path, kind string, args []string) error {
	cfg, doc, name, err := loadConfig(path, c.getenv)
	if err != nil {
		return err
	}
	mapper, err := compileMapping(cfg, name, doc)
	if err != nil {
		fmt.Fprintln(c.stderr, formatErrors(err))
		return errSilent
	}
	in := c.stdin
	if len(args) > 0 && args[0] != "-" {
		f, err := os.Open(args[0])
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	dec := json.NewDecoder(in)
	dec.UseNumber()
	var res map[string]any
	if err := dec.Decode(&res); err != nil {
		return fmt.Errorf("read SCIM resource: %w", err)
	}
	if kind == "" {
		kind = "User"
		if v, _ := scim.Get(res, "schemas"); fmt.Sprint(v) != "" && strings.Contains(fmt.Sprint(v), scim.SchemaGroup) {
			kind = "Group"
		}
	}
	var out any
	switch strings.ToLower(kind) {
	case "user":
		norm, err := scim.Normalize(res, scim.NewUserResourceType(mapper.UserExtensions()...))
		if err != nil {
			return mapFailed(c.stderr, err)
		}
		r, err := mapper.MapUser(norm, noResolver{})
		if err != nil {
			return mapFailed(c.stderr, err)
		}
		out = r
	case "group":
		norm, err := scim.Normalize(res, scim.NewGroupResourceType())
		if err != nil {
			return mapFailed(c.stderr, err)
		}
		r, err := mapper.MapGroup(norm)
		if err != nil {
			return mapFailed(c.stderr, err)
		}
		out = r
	default:
		return fmt.Errorf("--type must be User or Group")
	}
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func mapFailed(stderr io.Writer, err error) error {
	var se *scim.Error
	if errors.As(err, &se) {
		fmt.Fprintf(stderr, "rejected (%d %s): %s\n", se.Status, se.ScimType, se.Detail)
		return errSilent
	}
	return err
}

// noResolver resolves nothing: references print as pending.
type noResolver struct{}

func (noResolver) ResolveUser(by, value string) (string, bool) { return "", false }

func (c *cli) listenCommand() *cobra.Command {
	var cf configFlag
	var addr, secret string
	var raw bool
	cmd := &cobra.Command{
		Use:   "listen",
		Short: "a local webhook receiver that verifies signatures and prints events",
		Long: `A local webhook receiver: it verifies each delivery's Standard Webhooks signature and prints
the event. By default it listens where the gateway delivers by default (the first target's
host:port, 127.0.0.1:9000) and verifies with the first target's secret, else with the secret
the gateway generates in the data dir (either may start first).`,
		Example: `  scimgate listen
  scimgate listen --json --addr 127.0.0.1:9001`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.listen(cmd.Context(), cf.value(cmd, c.getenv), addr, secret, raw)
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&addr, "addr", "", "`host:port` to listen on (default: the first target's, 127.0.0.1:9000)")
	cmd.Flags().StringVar(&secret, "secret", "", "whsec_ `secret` to verify with (default: the target's, else data_dir/webhook-secret)")
	cmd.Flags().BoolVar(&raw, "json", false, "print each event as one line of JSON")
	return cmd
}

// listen is the receiver of `scimgate listen`.
func (c *cli) listen(ctx context.Context, path, addr, secretFlag string, raw bool) error {
	stdout := c.stdout
	cfg, _, _, err := loadConfig(path, c.getenv)
	if err != nil {
		return err
	}
	var secrets []string
	if secretFlag != "" {
		secrets = []string{secretFlag}
	} else if len(cfg.Outbox.Targets) > 0 && len(cfg.Outbox.Targets[0].Secrets) > 0 {
		secrets = cfg.Outbox.Targets[0].Secrets
	} else if s, err := loadOrCreateWebhookSecret(cfg.DataDir); err == nil {
		// The same file the gateway reads (or will create): start either first.
		secrets = []string{s}
	} else {
		return fmt.Errorf("webhook secret: %w", err)
	}
	if addr == "" {
		addr = "127.0.0.1:9000"
		if len(cfg.Outbox.Targets) > 0 {
			if u, err := url.Parse(cfg.Outbox.Targets[0].URL); err == nil && u.Host != "" {
				addr = u.Host
			}
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "listening on http://%s — verifying signatures with %d secret(s); Ctrl-C to stop\n", ln.Addr(), len(secrets))
	var mu sync.Mutex // one event's lines together
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 10<<20))
		if err != nil {
			http.Error(w, "read body", http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if err := outbox.Verify(secrets, r.Header, body, time.Now()); err != nil {
			fmt.Fprintf(stdout, "✗ rejected delivery %s: %v\n", r.Header.Get("webhook-id"), err)
			http.Error(w, "invalid signature", http.StatusUnauthorized)
			return
		}
		printEvent(stdout, body, raw)
		w.WriteHeader(http.StatusNoContent)
	})}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// printEvent writes one verified event: a summary line, the changes, and
// the data.
func printEvent(w io.Writer, body []byte, raw bool) {
	if raw {
		fmt.Fprintf(w, "%s\n", bytes.TrimSpace(body))
		return
	}
	var ev struct {
		ID         string                     `json:"id"`
		Type       string                     `json:"type"`
		OccurredAt string                     `json:"occurred_at"`
		Sequence   uint64                     `json:"sequence"`
		Data       map[string]json.RawMessage `json:"data"`
		Changes    map[string]json.RawMessage `json:"changes"`
	}
	if err := json.Unmarshal(body, &ev); err != nil {
		fmt.Fprintf(w, "✓ (unparsed) %s\n", body)
		return
	}
	fmt.Fprintf(w, "✓ %-22s seq=%-6d %s  %s\n", ev.Type, ev.Sequence, ev.OccurredAt, ev.ID)
	keys := make([]string, 0, len(ev.Changes))
	for k := range ev.Changes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "    %s: %s\n", k, ev.Changes[k])
	}
	for _, k := range []string{"user", "group", "member_group"} {
		if d, ok := ev.Data[k]; ok {
			fmt.Fprintf(w, "    %s %s\n", k, d)
		}
	}
}
