package rest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/scimgate/scimgate/outbox"
)

// Trace is one step of a dry run: the request as it would be (or was)
// sent, and what came of it.
type Trace struct {
	Step     string
	Skipped  bool // its when was false
	Method   string
	URL      string
	Header   http.Header // secrets redacted
	Body     string
	Saves    []SaveTrace    // without --send: the expressions it would save
	Status   int            // with --send
	Response string         // with --send: the start of the body, redacted
	Then     Then           // with --send
	Saved    map[string]any // with --send
}

// SaveTrace is a value a step would save.
type SaveTrace struct{ Key, Expr string }

func (s *Sender) tracef(t Trace) {
	if s.trace != nil {
		s.trace(t)
	}
}

// DryRunOptions says how far a dry run goes.
type DryRunOptions struct {
	// Send performs the requests against the app (otherwise they are only
	// rendered).
	Send bool
	// State, when set, is the target's id map: read for app ids, and
	// written (the saves) when Send is set — the --link of the command.
	// Without it the dry run starts from an empty id map and writes nothing.
	State *outbox.State
	// IDs, when State is nil, supplies the id map's entries read-only
	// ("User/<scim id>" → saved values), e.g. from a stopped data dir.
	IDs func(key string) map[string]any
	// Trace receives each step.
	Trace func(Trace)
}

// DryRun runs ev through target t's action as options say and returns
// what Send would have returned.
func DryRun(ctx context.Context, t outbox.Target, ev outbox.Event, o DryRunOptions) error {
	s, err := newSender(t, o.State, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer s.Close()
	s.send, s.trace, s.ids = o.Send, o.Trace, o.IDs
	return s.Send(ctx, ev)
}

// PrintTrace writes a trace the way `scimgate actions test` shows it.
func PrintTrace(w io.Writer, t Trace) {
	if t.Skipped {
		fmt.Fprintf(w, "step %s: skipped (when is false)\n", t.Step)
		return
	}
	fmt.Fprintf(w, "step %s:\n  %s %s\n", t.Step, t.Method, t.URL)
	for _, k := range sortedKeys(t.Header) {
		fmt.Fprintf(w, "  %s: %s\n", k, strings.Join(t.Header[k], ", "))
	}
	if t.Body != "" {
		fmt.Fprintf(w, "  %s\n", t.Body)
	}
	for _, sv := range t.Saves {
		fmt.Fprintf(w, "  would save %s = %s\n", sv.Key, sv.Expr)
	}
	if t.Status != 0 {
		fmt.Fprintf(w, "  → %d %s: %s\n", t.Status, http.StatusText(t.Status), t.Then)
		if t.Response != "" {
			fmt.Fprintf(w, "  %s\n", strings.TrimSpace(t.Response))
		}
		for _, k := range sortedSaveKeys(t.Saved) {
			b, _ := json.Marshal(t.Saved[k])
			fmt.Fprintf(w, "  saved %s = %s\n", k, b)
		}
	}
}

func sortedSaveKeys(m map[string]any) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	for i := 1; i < len(ks); i++ {
		for j := i; j > 0 && ks[j] < ks[j-1]; j-- {
			ks[j], ks[j-1] = ks[j-1], ks[j]
		}
	}
	return ks
}
