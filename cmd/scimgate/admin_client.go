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

// adminCommand finishes an admin command that needs the token: it adds the
// shared flags (--target and --json where asked, as register does) and runs
// run with the command's client.
func (c *cli) adminCommand(cmd *cobra.Command, f *adminFlags, target, jsonOut bool, run func(cmd *cobra.Command, cl *adminClient, args []string) error) *cobra.Command {
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		cl, err := c.client(cmd, f, true)
		if err != nil {
			return err
		}
		return run(cmd, cl, args)
	}
	f.register(cmd, target, jsonOut)
	return cmd
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

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func compactJSON(raw json.RawMessage) string {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return string(raw)
	}
	return b.String()
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
