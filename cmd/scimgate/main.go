// Command scimgate is a SCIM 2.0 gateway: identity providers provision
// users and groups into it, and it delivers signed webhook events to the
// apps behind it. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	_ "time/tzdata" // timezone validation must not depend on the image having tzdata
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(report(err, os.Stderr))
}

// Exit codes: 0 success, 1 failure, 2 wrong usage.
const (
	exitFailure = 1
	exitUsage   = 2
)

// errSilent is a failure that has already been reported.
var errSilent = errors.New("failed")

// usageError is wrong usage of a command: exit 2 with a one-line hint.
type usageError struct {
	cmd string // "scimgate backup"
	msg string // "" when the usage was already printed
}

func (e *usageError) Error() string {
	if e.msg == "" {
		return "usage"
	}
	return fmt.Sprintf("%s: %s (see '%s --help')", e.cmd, e.msg, e.cmd)
}

// report prints err (unless already reported) and returns the exit code.
func report(err error, stderr io.Writer) int {
	var ue *usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		if ue.msg != "" {
			fmt.Fprintln(stderr, ue.Error())
		}
		return exitUsage
	case errors.Is(err, errSilent):
		return exitFailure
	}
	fmt.Fprintf(stderr, "scimgate: %v\n", err)
	return exitFailure
}

// run is main without the process: testable end to end. It parses args
// with the command tree of cli.go and runs the command.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	if args == nil {
		args = []string{} // nil would make cobra read os.Args
	}
	c := &cli{getenv: getenv, stdin: stdin, stdout: stdout, stderr: stderr}
	root := c.rootCommand()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	return root.ExecuteContext(ctx)
}
