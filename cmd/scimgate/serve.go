package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/scimgate/scimgate/outbox"
)

func (c *cli) serveCommand() *cobra.Command {
	var cf configFlag
	var initEmpty bool
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "run the gateway: SCIM listener, admin listener, event delivery",
		Long: `Run the gateway: the SCIM listener the identity provider talks to, the admin listener
(/healthz, /readyz, /metrics, /admin/), and the delivery of events to every target.

Without --config it runs on built-in defaults identical to config.example.yaml, driven by the
SCIMGATE_* variables (README.md). Secrets may also come from files: SCIMGATE_SCIM_TOKEN_FILE,
SCIMGATE_ADMIN_TOKEN_FILE, SCIMGATE_WEBHOOK_SECRET_FILE, and NAME_FILE for any ${NAME} the
config references. Tokens that are not configured are generated on first start and printed once.

The database file is checked before serving; a damaged file stops the start with one line that
says so. SIGHUP reloads the configuration (see 'scimgate reload'); SIGTERM stops gracefully.`,
		Example: `  scimgate serve
  scimgate serve --config config.example.yaml
  SCIMGATE_SCIM_TOKEN_FILE=/run/secrets/scim-token scimgate serve`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.serve(cmd.Context(), cf.value(cmd, c.getenv), initEmpty)
		},
	}
	cf.register(cmd)
	cmd.Flags().BoolVar(&initEmpty, "init", false, "initialise an existing empty database file (refused without it: an empty file is usually a failed copy)")
	return cmd
}

// loadConfig reads the file (or the built-in defaults when path is ""),
// with the _FILE forms of the variables.
func loadConfig(path string, getenv func(string) string) (Config, *yaml.Node, string, error) {
	if path == "" {
		env := newFileEnv(getenv)
		cfg := DefaultConfig(env.Get)
		return cfg, nil, "(defaults)", env.Err()
	}
	cfg, doc, err := LoadConfig(path, getenv)
	return cfg, doc, path, err
}

// loadServeConfig is what serve runs on, at start and at every reload:
// the configuration, its generated secrets, validated.
func loadServeConfig(path string, getenv func(string) string, out io.Writer) (Config, error) {
	cfg, pending, err := planServeConfig(path, getenv)
	if err != nil {
		return cfg, err
	}
	return cfg, pending.commit(out)
}

// planServeConfig is loadServeConfig with the generated tokens left to
// commit once the gateway has started (pendingTokens).
func planServeConfig(path string, getenv func(string) string) (Config, pendingTokens, error) {
	cfg, doc, name, err := loadConfig(path, getenv)
	if err != nil {
		return cfg, nil, err
	}
	pending, err := planSecrets(&cfg)
	if err != nil {
		return cfg, nil, err
	}
	if err := cfg.Validate(name, doc); err != nil {
		return cfg, nil, fmt.Errorf("invalid configuration:\n%s", formatErrors(err))
	}
	return cfg, pending, nil
}

// loadReloadConfig is loadServeConfig for a reload of a gateway running on
// running: it generates nothing (reloadSecrets), and an empty configuration
// file, which would reload as all defaults, is refused.
func loadReloadConfig(path string, getenv func(string) string, running Config) (Config, error) {
	cfg, doc, name, err := loadConfig(path, getenv)
	if err != nil {
		return cfg, err
	}
	if path != "" && (doc == nil || doc.Kind != yaml.MappingNode) {
		return cfg, fmt.Errorf("invalid configuration:\n%s: the file is empty (or holds no settings); it would reload as all defaults", name)
	}
	if problems := reloadSecrets(&cfg, running); len(problems) > 0 {
		return cfg, fmt.Errorf("invalid configuration:\n%s", strings.Join(problems, "\n"))
	}
	if err := cfg.Validate(name, doc); err != nil {
		return cfg, fmt.Errorf("invalid configuration:\n%s", formatErrors(err))
	}
	return cfg, nil
}

func newLogger(cfg LogConfig, w io.Writer, level *slog.LevelVar) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(cfg.Level))
	level.Set(l)
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func (c *cli) serve(ctx context.Context, path string, initEmpty bool) error {
	// From the start: SIGHUP's default action would end the process, and
	// one sent during start-up is a reload once the gateway runs.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	cfg, pending, err := planServeConfig(path, c.getenv)
	if err != nil {
		return err
	}
	level := new(slog.LevelVar)
	logger := newLogger(cfg.Log, c.stderr, level)
	a, err := newApp(cfg, logger, appOptions{InitEmpty: initEmpty, LogLevel: level,
		Reload: func(running Config) (Config, error) { return loadReloadConfig(path, c.getenv, running) },
		// The database is checked and the listeners are bound: keep and
		// show the generated tokens now, before anything is served.
		BeforeServe: func() error { return pending.commit(c.stdout) }})
	if err != nil {
		return err
	}
	if err := a.Start(); err != nil {
		_ = a.Close(context.Background())
		return err
	}
	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			logger.Info("shutting down")
			break loop
		case err := <-a.Err():
			runErr = err
			break loop
		case <-hup:
			_, _ = a.reload("SIGHUP") // it logs the outcome
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return errors.Join(runErr, a.Close(sctx))
}

func (c *cli) validateCommand() *cobra.Command {
	var cf configFlag
	cmd := &cobra.Command{
		Use:   "validate",
		Short: "check a configuration without starting anything",
		Long: `Check a configuration file (or the built-in defaults) as serve would, without starting
anything: unknown keys, invalid values and unset variables are reported with their file, line
and key. Secrets that serve would generate are not errors here.`,
		Example: `  scimgate validate --config config.example.yaml`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.validate(cf.value(cmd, c.getenv))
		},
	}
	cf.register(cmd)
	return cmd
}

func (c *cli) validate(path string) error {
	cfg, doc, name, err := loadConfig(path, c.getenv)
	if err != nil {
		return err
	}
	// Secrets that serve would generate are not a configuration error.
	placeholder := "whsec_" + "cGxhY2Vob2xkZXJwbGFjZWhvbGRlcnBs"
	for i := range cfg.Outbox.Targets {
		if len(cfg.Outbox.Targets[i].Secrets) == 0 {
			cfg.Outbox.Targets[i].Secrets = []string{placeholder}
		}
	}
	if err := cfg.Validate(name, doc); err != nil {
		fmt.Fprintln(c.stderr, formatErrors(err))
		return errSilent
	}
	fmt.Fprintf(c.stdout, "%s: ok (%d user rules, %d group rules, %d targets)\n", name, len(cfg.Mapping.User), len(cfg.Mapping.Group), len(cfg.Outbox.Targets))
	return nil
}

func (c *cli) tokenCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "token",
		Short: "print a new random token and the hash to put in the config",
		Long: `Print a new random bearer token (for the identity provider, or an admin token) and its
"sha256:…" hash, which is what the config keeps (scim.auth.bearer_tokens, admin.tokens).`,
		Args: noArgs,
		RunE: func(*cobra.Command, []string) error {
			token, err := newToken()
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "token: %s\nhash:  %s\n\nGive the token to the identity provider; put the hash in the config:\n  scim:\n    auth:\n      bearer_tokens: [\"%s\"]\n",
				token, hashOf(token), hashOf(token))
			return nil
		},
	}
}

func (c *cli) secretCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "secret",
		Short: "print a new whsec_… webhook signing secret",
		Long: `Print a new Standard Webhooks signing secret ("whsec_" + base64 of 24 random bytes): the
value of SCIMGATE_WEBHOOK_SECRET (or a target's secrets), shared with the app that verifies
the signatures.`,
		Example: `  export WHSEC=$(scimgate secret)`,
		Args:    noArgs,
		RunE: func(*cobra.Command, []string) error {
			s, err := outbox.NewSecret()
			if err != nil {
				return err
			}
			fmt.Fprintln(c.stdout, s)
			return nil
		},
	}
}

func (c *cli) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "print the version",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			fmt.Fprintf(c.stdout, "scimgate %s (%s)\n", version, runtime.Version())
			return nil
		},
	}
}
