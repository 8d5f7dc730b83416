// Command scimgate is a SCIM 2.0 gateway: identity providers provision
// users and groups into it, and it delivers signed webhook events to the
// apps behind it. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"
	_ "time/tzdata" // timezone validation must not depend on the image having tzdata

	"gopkg.in/yaml.v3"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, errSilent) {
			fmt.Fprintf(os.Stderr, "scimgate: %v\n", err)
		}
		os.Exit(1)
	}
}

// errSilent is a failure that has already been reported.
var errSilent = errors.New("failed")

const usage = `scimgate — a SCIM 2.0 gateway that turns Okta / Entra ID provisioning into signed webhooks.

Usage:
  scimgate serve    [--config FILE]            run the gateway (config also from SCIMGATE_CONFIG)
  scimgate validate [--config FILE]            check a config without starting anything
  scimgate map      [--config FILE] [FILE]     map a sample SCIM resource (stdin without FILE) and print the record
  scimgate token                               print a new random token and the hash to put in the config
  scimgate listen   [--config FILE] [--addr A] a local webhook receiver that verifies signatures and prints events
  scimgate status                              status of a running gateway (admin API)
  scimgate dead-letters list|show|replay|discard [--target T] [ID…]
  scimgate replay   [--target T] [ID…]         replay dead letters (all of the target without IDs)
  scimgate pause|resume [--target T]           stop or restart deliveries to a target
  scimgate backup   FILE                       write a consistent copy of the running gateway's database
  scimgate health                              exit 0 when the gateway answers /healthz (Docker HEALTHCHECK)
  scimgate version

Admin commands take --admin URL (default from admin.listen, http://127.0.0.1:8081) and
--token (default $SCIMGATE_ADMIN_TOKEN).
`

// run is main without the process: testable end to end.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errSilent
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "serve":
		return cmdServe(ctx, args, getenv, stdout, stderr)
	case "validate":
		return cmdValidate(args, getenv, stdout, stderr)
	case "map":
		return cmdMap(args, getenv, stdin, stdout, stderr)
	case "token":
		return cmdToken(stdout)
	case "listen":
		return cmdListen(ctx, args, getenv, stdout, stderr)
	case "status", "dead-letters", "replay", "pause", "resume", "backup", "health":
		return cmdAdmin(ctx, cmd, args, getenv, stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "scimgate", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "unknown command %q\n\n%s", cmd, usage)
	return errSilent
}

// configFlag registers --config with its SCIMGATE_CONFIG default.
func configFlag(fs *flag.FlagSet, getenv func(string) string) *string {
	return fs.String("config", getenv("SCIMGATE_CONFIG"), "config file (default: embedded defaults driven by SCIMGATE_* variables)")
}

// loadConfig reads the file (or the embedded defaults when path is "").
func loadConfig(path string, getenv func(string) string) (Config, *yaml.Node, string, error) {
	if path == "" {
		return DefaultConfig(getenv), nil, "(defaults)", nil
	}
	cfg, doc, err := LoadConfig(path, getenv)
	return cfg, doc, path, err
}

func newLogger(cfg LogConfig, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Level))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func cmdServe(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlag(fs, getenv)
	if err := fs.Parse(args); err != nil {
		return errSilent
	}
	cfg, doc, name, err := loadConfig(*path, getenv)
	if err != nil {
		return err
	}
	if err := prepareSecrets(&cfg, stdout); err != nil {
		return err
	}
	if err := cfg.Validate(name, doc); err != nil {
		return fmt.Errorf("invalid configuration:\n%s", formatErrors(err))
	}
	logger := newLogger(cfg.Log, stderr)
	a, err := newApp(cfg, logger)
	if err != nil {
		return err
	}
	if err := a.Start(); err != nil {
		_ = a.Close(context.Background())
		return err
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
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
			if a.certs != nil {
				if err := a.certs.reload(); err != nil {
					logger.Error("TLS reload failed; keeping the old certificate", "err", err)
				} else {
					logger.Info("TLS certificate reloaded")
				}
			}
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return errors.Join(runErr, a.Close(sctx))
}

func cmdValidate(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := configFlag(fs, getenv)
	if err := fs.Parse(args); err != nil {
		return errSilent
	}
	cfg, doc, name, err := loadConfig(*path, getenv)
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
		fmt.Fprintln(stderr, formatErrors(err))
		return errSilent
	}
	fmt.Fprintf(stdout, "%s: ok (%d user rules, %d group rules, %d webhook targets)\n", name, len(cfg.Mapping.User), len(cfg.Mapping.Group), len(cfg.Outbox.Targets))
	return nil
}

func cmdToken(stdout io.Writer) error {
	token, err := newToken()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "token: %s\nhash:  %s\n\nGive the token to the identity provider; put the hash in the config:\n  scim:\n    auth:\n      bearer_tokens: [\"%s\"]\n",
		token, hashOf(token), hashOf(token))
	return nil
}
