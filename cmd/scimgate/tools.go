package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/scimgate/scimgate/gateway"
	"github.com/scimgate/scimgate/gateway/scim"
	"github.com/scimgate/scimgate/outbox"
)

func hashOf(token string) string { return gateway.HashToken(token) }

// cmdMap runs the mapping on a sample SCIM resource: the way a platform
// team writes and tests its YAML.
func cmdMap(args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("map", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlag(fs, getenv)
	kind := fs.String("type", "", "User or Group (default: from the resource's schemas)")
	if err := fs.Parse(args); err != nil {
		return errSilent
	}
	cfg, doc, name, err := loadConfig(*path, getenv)
	if err != nil {
		return err
	}
	mapper, err := compileMapping(cfg, name, doc)
	if err != nil {
		fmt.Fprintln(stderr, formatErrors(err))
		return errSilent
	}
	in := stdin
	if fs.NArg() > 0 {
		f, err := os.Open(fs.Arg(0))
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
	if *kind == "" {
		*kind = "User"
		if v, _ := scim.Get(res, "schemas"); fmt.Sprint(v) != "" && strings.Contains(fmt.Sprint(v), scim.SchemaGroup) {
			*kind = "Group"
		}
	}
	var out any
	switch strings.ToLower(*kind) {
	case "user":
		norm, err := scim.Normalize(res, scim.NewUserResourceType(mapper.UserExtensions()...))
		if err != nil {
			return mapFailed(stderr, err)
		}
		r, err := mapper.MapUser(norm, noResolver{})
		if err != nil {
			return mapFailed(stderr, err)
		}
		out = r
	case "group":
		norm, err := scim.Normalize(res, scim.NewGroupResourceType())
		if err != nil {
			return mapFailed(stderr, err)
		}
		r, err := mapper.MapGroup(norm)
		if err != nil {
			return mapFailed(stderr, err)
		}
		out = r
	default:
		return fmt.Errorf("--type must be User or Group")
	}
	enc := json.NewEncoder(stdout)
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

// cmdListen is a local webhook receiver: it verifies each delivery's
// Standard Webhooks signature and prints the event readably.
func cmdListen(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("listen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlag(fs, getenv)
	addr := fs.String("addr", "", "address to listen on (default: host:port of the first webhook target, 127.0.0.1:9000)")
	secretFlag := fs.String("secret", "", "whsec_ secret (default: the target's, else the one the gateway generated in the data dir)")
	raw := fs.Bool("json", false, "print each event as one line of JSON")
	if err := fs.Parse(args); err != nil {
		return errSilent
	}
	cfg, _, _, err := loadConfig(*path, getenv)
	if err != nil {
		return err
	}
	var secrets []string
	if *secretFlag != "" {
		secrets = []string{*secretFlag}
	} else if len(cfg.Outbox.Targets) > 0 && len(cfg.Outbox.Targets[0].Secrets) > 0 {
		secrets = cfg.Outbox.Targets[0].Secrets
	} else if s, err := loadOrCreateWebhookSecret(cfg.DataDir); err == nil {
		// The same file the gateway reads (or will create): start either first.
		secrets = []string{s}
	} else {
		return fmt.Errorf("webhook secret: %w", err)
	}
	if *addr == "" {
		*addr = "127.0.0.1:9000"
		if len(cfg.Outbox.Targets) > 0 {
			if u, err := url.Parse(cfg.Outbox.Targets[0].URL); err == nil && u.Host != "" {
				*addr = u.Host
			}
		}
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "listening on http://%s — verifying signatures with %d secret(s); Ctrl-C to stop\n", ln.Addr(), len(secrets))
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 10<<20))
		if err != nil {
			http.Error(w, "read body", http.StatusBadRequest)
			return
		}
		if err := outbox.Verify(secrets, r.Header, body, time.Now()); err != nil {
			fmt.Fprintf(stdout, "✗ rejected delivery %s: %v\n", r.Header.Get("webhook-id"), err)
			http.Error(w, "invalid signature", http.StatusUnauthorized)
			return
		}
		printEvent(stdout, body, *raw)
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
