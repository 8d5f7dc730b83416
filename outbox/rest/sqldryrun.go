package rest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/scimgate/scimgate/outbox"
)

// SQLTrace is one statement of a dry run: its text and parameters, and
// with --send what it returned.
type SQLTrace struct {
	Step     string
	Skipped  bool // its when was false
	SQL      string
	Args     []any // secrets redacted
	Saves    []SaveTrace
	Rows     []map[string]any // with --send: up to 100 returned rows
	Affected int
	Error    string // with --send: the database's error, redacted
	Then     Then
	Saved    map[string]any
}

func (s *SQLSender) tracef(t SQLTrace) {
	if s.trace != nil {
		s.trace(t)
	}
}

// SQLDryRunOptions says how far a sql dry run goes.
type SQLDryRunOptions struct {
	// Send runs the statements in a transaction that is then rolled back
	// (otherwise they are only rendered, and the database is not opened).
	Send bool
	// IDs supplies the id map's entries read-only ("User/<scim id>" →
	// saved values), e.g. from a stopped data dir.
	IDs   func(key string) map[string]any
	Trace func(SQLTrace)
}

// SQLDryRun runs ev through sql target t's action as options say and
// returns what Send would have returned. Nothing is committed, and the id
// map is not written.
func SQLDryRun(ctx context.Context, t outbox.Target, ev outbox.Event, o SQLDryRunOptions) error {
	s, err := newSQLSender(t, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer s.Close()
	s.send, s.commit, s.trace = o.Send, false, o.Trace
	s.base.ids = o.IDs
	s.base.trace = func(Trace) {} // appId of an unknown resource shows as {app id of …}
	return s.Send(ctx, ev)
}

// PrintSQLTrace writes a trace the way `scimgate actions test` shows it.
func PrintSQLTrace(w io.Writer, t SQLTrace) {
	if t.Skipped {
		fmt.Fprintf(w, "step %s: skipped (when is false)\n", t.Step)
		return
	}
	fmt.Fprintf(w, "step %s:\n", t.Step)
	for _, l := range strings.Split(strings.TrimSpace(t.SQL), "\n") {
		fmt.Fprintf(w, "  %s\n", l)
	}
	for i, a := range t.Args {
		b, _ := json.Marshal(a)
		fmt.Fprintf(w, "    $%d = %s\n", i+1, b)
	}
	for _, sv := range t.Saves {
		fmt.Fprintf(w, "  would save %s = %s\n", sv.Key, sv.Expr)
	}
	if t.Then == "" {
		return
	}
	if t.Error != "" {
		fmt.Fprintf(w, "  → error: %s: %s\n", t.Error, t.Then)
	} else {
		fmt.Fprintf(w, "  → %d row(s): %s\n", t.Affected, t.Then)
	}
	for _, r := range t.Rows {
		b, _ := json.Marshal(r)
		fmt.Fprintf(w, "  %s\n", b)
	}
	for _, k := range sortedSaveKeys(t.Saved) {
		b, _ := json.Marshal(t.Saved[k])
		fmt.Fprintf(w, "  saved %s = %s\n", k, b)
	}
}
