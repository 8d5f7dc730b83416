package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// cli carries what every command needs: the process's environment and
// streams (run's arguments, so that tests drive the real command tree).
type cli struct {
	getenv         func(string) string
	stdin          io.Reader
	stdout, stderr io.Writer
}

// Command groups of the root help.
const (
	groupGateway = "gateway"
	groupAdmin   = "admin"
	groupTools   = "tools"
)

// rootCommand builds the command tree (README.md, "Operate"). Flags work
// anywhere after the command name; every command has its own --help, which
// exits 0 and runs nothing; wrong usage exits 2 with a one-line hint. No
// flag default shows a secret: defaults taken from the environment are
// named, never printed.
func (c *cli) rootCommand() *cobra.Command {
	cobra.EnableCommandSorting = false // the order below: most used first
	root := &cobra.Command{
		Use:   "scimgate",
		Short: "a SCIM 2.0 gateway that turns Okta / Entra ID provisioning into signed events",
		Long: `scimgate — a SCIM 2.0 gateway that turns Okta / Entra ID provisioning into signed events.

Identity providers push users and groups over SCIM; scimgate maps them through YAML rules,
stores them, and delivers signed events to your app. See README.md and docs/.`,
		Version:       version,
		SilenceErrors: true,
		SilenceUsage:  true,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return nil
			}
			msg := fmt.Sprintf("unknown command %q", args[0])
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				msg += fmt.Sprintf("; did you mean %q?", s[0])
			}
			return &usageError{cmd: "scimgate", msg: msg}
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			// Bare `scimgate`: the command list, as wrong usage.
			cmd.SetOut(c.stderr)
			_ = cmd.Help()
			return &usageError{cmd: "scimgate"}
		},
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
	}
	root.SuggestionsMinimumDistance = 2
	root.SetVersionTemplate("scimgate {{.Version}} (" + runtime.Version() + ")\n")
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return &usageError{cmd: cmd.CommandPath(), msg: err.Error()}
	})
	root.AddGroup(
		&cobra.Group{ID: groupGateway, Title: "Run the gateway:"},
		&cobra.Group{ID: groupAdmin, Title: "Operate a running gateway (admin API; --admin URL, --token):"},
		&cobra.Group{ID: groupTools, Title: "Tools:"},
	)
	root.SetHelpCommandGroupID(groupTools)
	add := func(group string, cmds ...*cobra.Command) {
		for _, cmd := range cmds {
			cmd.GroupID = group
			root.AddCommand(cmd)
		}
	}
	add(groupGateway, c.serveCommand(), c.validateCommand(), c.restoreCommand())
	add(groupAdmin, c.statusCommand(), c.deadLettersCommand(), c.replayCommand(), c.retryCommand(),
		c.pauseCommand(), c.resumeCommand(), c.backfillCommand(), c.backupCommand(), c.compactCommand(), c.reloadCommand(), c.remapCommand(), c.healthCommand())
	add(groupTools, c.mapCommand(), c.actionsCommand(), c.idsCommand(), c.tokenCommand(), c.secretCommand(), c.listenCommand(), c.versionCommand())
	return root
}

// ---- argument and flag helpers ----

// usagef is a usage error of cmd.
func usagef(cmd *cobra.Command, format string, args ...any) error {
	return &usageError{cmd: cmd.CommandPath(), msg: fmt.Sprintf(format, args...)}
}

// argsBetween accepts min..max positional arguments (max < 0: any number)
// named what in errors, none of which may look like a flag (a flag after
// "--", or a typo such as "—target").
func argsBetween(min, max int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		for _, a := range args {
			if len(a) > 1 && (strings.HasPrefix(a, "-") || strings.HasPrefix(a, "—")) {
				return usagef(cmd, "%q looks like a flag but is not one of this command's flags", a)
			}
		}
		switch {
		case len(args) < min:
			return usagef(cmd, "missing %s", what)
		case max >= 0 && len(args) > max:
			if max == 0 {
				return usagef(cmd, "unexpected argument %q", args[0])
			}
			return usagef(cmd, "unexpected argument %q (it takes %s)", args[max], what)
		}
		return nil
	}
}

var noArgs = argsBetween(0, 0, "")

// configFlag is --config, whose default is $SCIMGATE_CONFIG (resolved at
// run time, so help shows the name and not the value).
type configFlag struct{ path string }

func (f *configFlag) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.path, "config", "", "the configuration `FILE` (default $SCIMGATE_CONFIG, else the built-in defaults)")
}

// value returns the flag, else $SCIMGATE_CONFIG, else "" (defaults).
func (f *configFlag) value(cmd *cobra.Command, getenv func(string) string) string {
	if cmd.Flags().Changed("config") {
		return f.path
	}
	return getenv("SCIMGATE_CONFIG")
}

// isTerminal reports whether w is a terminal: progress is redrawn with \r
// there and printed as plain lines elsewhere (a CronJob's log).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
