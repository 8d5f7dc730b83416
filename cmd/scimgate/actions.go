package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	bolt "go.etcd.io/bbolt"

	"github.com/scimgate/scimgate/gateway/store"
	"github.com/scimgate/scimgate/mapping"
	"github.com/scimgate/scimgate/outbox"
	"github.com/scimgate/scimgate/outbox/rest"
)

func (c *cli) actionsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "actions",
		Short: "try an action target's steps (type: rest or sql) on one event",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cmd.SetOut(c.stderr)
			_ = cmd.Help()
			return &usageError{cmd: cmd.CommandPath()}
		},
	}
	cmd.AddCommand(c.actionsTestCommand())
	return cmd
}

type actionsTestFlags struct {
	cf                  configFlag
	target, event       string
	record, user, group string
	send, link          bool
	changes             string
}

func (c *cli) actionsTestCommand() *cobra.Command {
	var f actionsTestFlags
	cmd := &cobra.Command{
		Use:   "test",
		Short: "print the requests an action target would send for one event (a dry run)",
		Long: `Run one event through an action target's steps (docs/actions.md) and print each request as
it would be sent — method, URL, headers with secrets redacted, body — with the values it would
save, touching nothing. The event's record comes from --record FILE (the record as in
data.user / data.group, or as ` + "`scimgate map`" + ` prints it, or a whole event envelope with data
and changes) or from the stopped gateway's data dir (--user ID, --group ID; both for a
membership event).

--send performs the steps against the app and prints its answers; the outbox and the id map
are still not written unless --link is given too (then the saves land in the data dir's id
map: stop the gateway first). App ids of other resources come from the data dir's id map
when it is readable, else print as {app id of User/…}.`,
		Example: `  scimgate actions test --config examples/redmine.yaml --target redmine --event user.created --record user.json
  scimgate actions test --config config.yaml --target app --event user.updated --user 2819c223 --send`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.target == "" || f.event == "" {
				return usagef(cmd, "--target and --event are required")
			}
			if (f.record == "") == (f.user == "" && f.group == "") {
				return usagef(cmd, "give --record FILE, or --user ID / --group ID")
			}
			if f.link && !f.send {
				return usagef(cmd, "--link saves what --send received: give both")
			}
			return c.actionsTest(cmd.Context(), f.cf.value(cmd, c.getenv), f)
		},
	}
	f.cf.register(cmd)
	fl := cmd.Flags()
	fl.StringVar(&f.target, "target", "", "the action target's `NAME`")
	fl.StringVar(&f.event, "event", "", "the event `TYPE`, e.g. user.created")
	fl.StringVar(&f.record, "record", "", "the record (or event envelope) as JSON in `FILE` (- for stdin)")
	fl.StringVar(&f.user, "user", "", "read user `ID` from the data dir")
	fl.StringVar(&f.group, "group", "", "read group `ID` from the data dir")
	fl.StringVar(&f.changes, "changes", "", "the event's changes as JSON in `FILE` (field → {old, new})")
	fl.BoolVar(&f.send, "send", false, "send the requests to the app and print its answers")
	fl.BoolVar(&f.link, "link", false, "with --send: write the saves to the data dir's id map")
	return cmd
}

// loadChecked loads and validates the configuration as `scimgate validate`
// does (secrets serve would generate are not required).
func (c *cli) loadChecked(path string) (Config, error) {
	cfg, doc, name, err := loadConfig(path, c.getenv)
	if err != nil {
		return cfg, err
	}
	placeholder := "whsec_" + "cGxhY2Vob2xkZXJwbGFjZWhvbGRlcnBs"
	for i := range cfg.Outbox.Targets {
		if len(cfg.Outbox.Targets[i].Secrets) == 0 {
			cfg.Outbox.Targets[i].Secrets = []string{placeholder}
		}
	}
	if err := cfg.Validate(name, doc); err != nil {
		fmt.Fprintln(c.stderr, formatErrors(err))
		return cfg, errSilent
	}
	return cfg, nil
}

func restTarget(cfg Config, name string) (outbox.Target, error) {
	var names []string
	for _, t := range cfg.Outbox.Targets {
		if t.Type == outbox.TypeRest || t.Type == outbox.TypeSQL {
			if t.Name == name {
				return t, nil
			}
			names = append(names, t.Name)
		}
	}
	if len(names) == 0 {
		return outbox.Target{}, fmt.Errorf("target %q: the configuration has no target of type rest or sql", name)
	}
	return outbox.Target{}, fmt.Errorf("target %q: no target of type rest or sql by that name (there are: %s)", name, strings.Join(names, ", "))
}

// openData opens the data dir's database read-only (the gateway must be
// stopped: it holds the file's lock).
func openData(cfg Config, writable bool) (*bolt.DB, error) {
	path := filepath.Join(cfg.DataDir, dbFile)
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("data dir %s: %w", cfg.DataDir, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: !writable, Timeout: time.Second})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("%s is %w: stop the gateway (or point --config at a copy of a backup)", path, errDataInUse)
	}
	return db, err
}

func (c *cli) actionsTest(ctx context.Context, path string, f actionsTestFlags) error {
	cfg, err := c.loadChecked(path)
	if err != nil {
		return err
	}
	t, err := restTarget(cfg, f.target)
	if err != nil {
		return err
	}
	ev := outbox.Event{ID: "evt_dryrun", Type: f.event, OccurredAt: time.Now().UTC(), Seq: 1}
	var db *bolt.DB
	if f.user != "" || f.group != "" || f.link {
		if db, err = openData(cfg, f.link); err != nil {
			return err
		}
		defer db.Close()
	}
	data := map[string]any{}
	if f.record != "" {
		raw, err := readInput(c.stdin, f.record)
		if err != nil {
			return err
		}
		var v map[string]any
		if err := json.Unmarshal(raw, &v); err != nil {
			return fmt.Errorf("--record %s: %v", f.record, err)
		}
		if r, ok := v["record"].(map[string]any); ok && len(v) == 1 { // `scimgate map`'s output
			v = r
		}
		if d, ok := v["data"].(map[string]any); ok { // an envelope
			data = d
			if ch, ok := v["changes"]; ok {
				ev.Changes, _ = json.Marshal(ch)
			}
		} else if strings.HasPrefix(f.event, "group.") {
			data["group"] = v
		} else {
			data["user"] = v
		}
	} else {
		mapper, err := mapping.Compile(cfg.Mapping)
		if err != nil {
			return err
		}
		st := store.New(db, mapper, store.Options{UserExtensions: mapper.UserExtensions()})
		defer st.Close()
		for _, r := range []struct{ id, key string }{{f.user, "user"}, {f.group, "group"}} {
			if r.id == "" {
				continue
			}
			get := st.UserRecord
			if r.key == "group" {
				get = st.GroupRecord
			}
			rec, err := get(r.id)
			if err != nil {
				return fmt.Errorf("%s %s: %w", r.key, r.id, err)
			}
			data[r.key] = json.RawMessage(rec)
		}
	}
	if f.changes != "" {
		raw, err := readInput(c.stdin, f.changes)
		if err != nil {
			return err
		}
		ev.Changes = raw
	}
	if ev.Data, err = json.Marshal(data); err != nil {
		return err
	}
	if t.Type == outbox.TypeSQL {
		return c.actionsTestSQL(ctx, t, ev, db, f)
	}
	opts := rest.DryRunOptions{Send: f.send, Trace: func(tr rest.Trace) { rest.PrintTrace(c.stdout, tr) }}
	if f.link {
		d, err := outbox.NewDispatcher(db, cfg.Outbox, nil, nil)
		if err != nil {
			return err
		}
		opts.State = d.State(t.Name)
	} else if db != nil {
		opts.IDs = idMapReader(db, t.Name)
	}
	mode := "dry run: nothing is sent"
	if f.send {
		mode = "sending to the app; the id map is not written"
		if f.link {
			mode = "sending to the app and saving to the id map"
		}
	}
	fmt.Fprintf(c.stdout, "target %s, event %s (%s)\n", t.Name, f.event, mode)
	return c.actionsResult(rest.DryRun(ctx, t, ev, opts), f.send, "every step rendered (nothing was sent)", "done")
}

// actionsTestSQL is actionsTest for a target of type sql: the statements
// and their parameters; with --send they run in a transaction that is
// rolled back, and what they returned is printed.
func (c *cli) actionsTestSQL(ctx context.Context, t outbox.Target, ev outbox.Event, db *bolt.DB, f actionsTestFlags) error {
	if f.link {
		return fmt.Errorf("target %s is of type sql: --send runs its statements in a transaction that is rolled back, so there is nothing to --link", t.Name)
	}
	opts := rest.SQLDryRunOptions{Send: f.send, Trace: func(tr rest.SQLTrace) { rest.PrintSQLTrace(c.stdout, tr) }}
	if db != nil {
		opts.IDs = idMapReader(db, t.Name)
	}
	mode := "dry run: nothing is sent"
	if f.send {
		mode = "running the statements in a transaction that is rolled back"
	}
	fmt.Fprintf(c.stdout, "target %s, event %s (%s)\n", t.Name, f.event, mode)
	return c.actionsResult(rest.SQLDryRun(ctx, t, ev, opts), f.send, "every statement rendered (nothing was sent)", "done (rolled back)")
}

// idMapReader reads target's id map in db (the offline data dir), for a
// dry run's appId.
func idMapReader(db *bolt.DB, target string) func(key string) map[string]any {
	return func(key string) map[string]any {
		var out map[string]any
		_ = db.View(func(tx *bolt.Tx) error {
			v, err := outbox.ReadState(tx, target).Get(rest.SpaceIDs, []byte(key))
			if err == nil && v != nil {
				_ = json.Unmarshal(v, &out)
			}
			return nil
		})
		return out
	}
}

// actionsResult prints how a dry run ended: rendered is what a run without
// --send says, sent what a successful --send says. A failure is said with
// the app's answer and ends the command with a non-zero status.
func (c *cli) actionsResult(err error, send bool, rendered, sent string) error {
	switch {
	case err == nil && !send:
		fmt.Fprintln(c.stdout, "result: "+rendered)
		return nil
	case err == nil:
		fmt.Fprintln(c.stdout, "result: "+sent)
		return nil
	case outbox.IsPermanent(err):
		fmt.Fprintf(c.stdout, "result: dead letter: %v\n", err)
	default:
		fmt.Fprintf(c.stdout, "result: would retry: %v\n", err)
	}
	var se *outbox.StatusError
	if errors.As(err, &se) && se.Body != "" {
		fmt.Fprintf(c.stdout, "%s\n", strings.TrimSpace(se.Body))
	}
	return errSilent
}

func readInput(stdin io.Reader, name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(stdin)
	}
	return os.ReadFile(name)
}

func (c *cli) idsCommand() *cobra.Command {
	var af adminFlags
	var target, appID, typ string
	cmd := &cobra.Command{
		Use:   "ids --target NAME [SCIM-ID | --app-id ID]",
		Short: "print an action target's id map (our ids ↔ the app's), from the data dir or the running gateway",
		Long: `Print the id map of an action target (docs/actions.md): each resource's SCIM id with the
values its steps saved (the app's id first). With a SCIM-ID, that resource's entry; with
--app-id, the resource the app knows by that id. Reads the data dir read-only when no
gateway holds it (a stopped gateway, or a configuration whose data_dir holds a restored
backup); while the gateway runs, asks its admin API (GET /admin/targets/NAME/ids, with
--admin and --token as the other admin commands).`,
		Example: `  scimgate ids --config examples/redmine.yaml --target redmine
  scimgate ids --config config.yaml --target redmine 2819c223-7f76-453a-919d-413861904646
  scimgate ids --config config.yaml --target redmine --app-id 7`,
		Args: argsBetween(0, 1, "at most one SCIM-ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if target == "" {
				return usagef(cmd, "--target is required")
			}
			if len(args) > 0 && appID != "" {
				return usagef(cmd, "give a SCIM-ID or --app-id, not both")
			}
			if typ != "" && typ != "User" && typ != "Group" {
				return usagef(cmd, "--type must be User or Group")
			}
			err := c.ids(af.cf.value(cmd, c.getenv), target, args, appID, typ)
			if errors.Is(err, errDataInUse) {
				return c.idsOnline(cmd, &af, target, args, appID, typ)
			}
			return err
		},
	}
	af.register(cmd, false, false)
	cmd.Flags().StringVar(&target, "target", "", "the action target's `NAME`")
	cmd.Flags().StringVar(&appID, "app-id", "", "find the resource the app knows by `ID`")
	cmd.Flags().StringVar(&typ, "type", "", "only `User` or Group entries")
	return cmd
}

func (c *cli) ids(path, target string, args []string, appID, typ string) error {
	cfg, err := c.loadChecked(path)
	if err != nil {
		return err
	}
	if _, err := restTarget(cfg, target); err != nil {
		return err
	}
	db, err := openData(cfg, false)
	if err != nil {
		return err
	}
	defer db.Close()
	types := []string{"User", "Group"}
	if typ != "" {
		types = []string{typ}
	}
	found := 0
	err = db.View(func(tx *bolt.Tx) error {
		st := outbox.ReadState(tx, target)
		show := func(key string) error {
			v, err := st.Get(rest.SpaceIDs, []byte(key))
			if err != nil || v == nil {
				return err
			}
			found++
			fmt.Fprintf(c.stdout, "%s %s\n", key, v)
			return nil
		}
		switch {
		case appID != "":
			for _, ty := range types {
				scimID, err := st.Get(rest.SpaceApp, []byte(ty+"/"+appID))
				if err != nil {
					return err
				}
				if scimID != nil {
					if err := show(ty + "/" + string(scimID)); err != nil {
						return err
					}
				}
			}
		case len(args) == 1:
			for _, ty := range types {
				if err := show(ty + "/" + args[0]); err != nil {
					return err
				}
			}
		default:
			for _, ty := range types {
				prefix := []byte(ty + "/")
				err := st.Scan(rest.SpaceIDs, prefix, func(k, v []byte) (bool, error) {
					if !strings.HasPrefix(string(k), string(prefix)) {
						return false, nil
					}
					found++
					fmt.Fprintf(c.stdout, "%s %s\n", k, v)
					return true, nil
				})
				if err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if found == 0 && (appID != "" || len(args) == 1) {
		fmt.Fprintln(c.stderr, "not in the id map of target "+target)
		return errSilent
	}
	return nil
}
