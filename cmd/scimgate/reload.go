package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/scimgate/scimgate/gateway"
	"github.com/scimgate/scimgate/gateway/scim"
	"github.com/scimgate/scimgate/gateway/store"
	"github.com/scimgate/scimgate/mapping"
	"github.com/scimgate/scimgate/outbox"
)

// Reload (SIGHUP, `scimgate reload` → POST /admin/reload).
//
// A reload loads and validates the configuration and the environment
// exactly as serve does at start (the _FILE secrets are read again, so a
// rotated Kubernetes secret is picked up); a configuration that fails is
// refused with its problems and the running one is kept. Then each part is
// applied by the component that owns it, one call each:
//
//	outbox targets and delivery settings   Dispatcher.Reload(outbox.Config)   (outbox)
//	SCIM credentials and request limits    Server.Reload(gateway.Config)      (gateway)
//	admin and app API tokens               Admin.Reload(gateway.AdminConfig, gateway.APIConfig) (gateway)
//	the mapping (rules, catalog, remap)    Store.SetMapper, Server.SetMapper  (store; the catalog refused while a user holds a value it drops)
//	the TLS certificate                    certReloader.load                  (here)
//	log.level                              slog.LevelVar                      (here)
//
// The dispatcher goes first because it may still refuse (its own
// validation); the others cannot fail once validated. What is not
// reloadable, and why: the listeners' addresses, timeouts and connection
// limits (bound to open sockets and to the http.Server, which reads them
// unsynchronised), data_dir (the open, locked database), the extension
// schemas a mapping reads or declares (the resource types the store
// validates with and /Schemas serves), scim.base_path (the routes),
// turning TLS on or off, and log.format. A change to those is reported as
// needing a restart, and `scimgate reload` exits 1.
//
// A new mapping is swapped into the store in its writer (no write maps
// with the old one after it) and, when its fingerprint differs, the stored
// records are mapped again in the background (remap: on_change) or wait
// for `scimgate remap` (remap: manual); see store/remap.go.

// The reload methods of the components, asserted at start so that each
// part is reloaded by one call as soon as its owner provides it.
type (
	outboxReloader interface {
		Reload(outbox.Config) ([]string, error)
	}
	scimReloader interface {
		Reload(gateway.Config) ([]string, error)
	}
	adminReloader interface {
		Reload(gateway.AdminConfig, gateway.APIConfig) ([]string, error)
	}
)

// reloadError is a refused reload: the new configuration's problems. The
// admin API answers it with 400 and the list.
type reloadError struct{ problems []string }

func (e *reloadError) Error() string {
	return "configuration refused, keeping the running one:\n  " + strings.Join(e.problems, "\n  ")
}

// Problems lists what to fix, one line each.
func (e *reloadError) Problems() []string { return e.problems }

// notReloadable are the configuration paths a reload cannot apply.
var notReloadable = []string{
	"data_dir", "log.format",
	"scim.listen", "scim.base_path",
	"scim.limits.read_timeout", "scim.limits.write_timeout", "scim.limits.idle_timeout", "scim.limits.max_connections",
	"admin.listen", "admin.read_timeout", "admin.write_timeout", "admin.idle_timeout", "admin.max_connections", "admin.console",
}

func restartNeeded(path string) bool {
	for _, p := range notReloadable {
		if path == p || strings.HasPrefix(path, p+".") || strings.HasPrefix(path, p+"[") {
			return true
		}
	}
	return false
}

// reload applies a new configuration (see the top of this file), logs the
// outcome, and returns what changed, one line each, without any secret
// value. trigger names the caller in the log ("SIGHUP", "admin API"). A
// refused configuration is a *reloadError.
func (a *app) reload(trigger string) ([]string, error) {
	changes, level, err := a.applyReload()
	var re *reloadError
	switch {
	case errors.As(err, &re):
		a.logger.Error("configuration reload refused; the running configuration is kept", "trigger", trigger, "problems", re.Problems())
	case err != nil:
		a.logger.Error("configuration reload failed", "trigger", trigger, "err", err)
	case len(changes) == 0:
		a.logger.Info("configuration reloaded: no changes", "trigger", trigger)
	case slices.ContainsFunc(changes, notApplied):
		a.logger.Warn("configuration reloaded, except what needs a restart or failed (not applied)", "trigger", trigger, "changes", changes)
	default:
		a.logger.Info("configuration reloaded", "trigger", trigger, "changes", changes)
	}
	if level != nil && a.opts.LogLevel != nil {
		a.opts.LogLevel.Set(*level) // after the line above, which a higher level would hide
	}
	return changes, err
}

// notApplied reports whether a line of a reload's changes names a part that
// was not applied: `scimgate reload` then exits 1.
func notApplied(change string) bool {
	return strings.Contains(change, "needs a restart") || strings.Contains(change, "not applied")
}

func (a *app) applyReload() (changes []string, level *slog.Level, err error) {
	if a.opts.Reload == nil {
		return nil, nil, fmt.Errorf("reload is not available in this process")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	cur := a.cfg
	next, err := a.opts.Reload(cur)
	if err != nil {
		return nil, nil, &reloadError{problems: strings.Split(strings.TrimPrefix(err.Error(), "invalid configuration:\n"), "\n")}
	}
	var restart []string
	diff := configChanges(cur, next)
	for _, d := range diff {
		if restartNeeded(d.path) {
			restart = append(restart, d.String()+": needs a restart")
		}
	}
	// TLS: certificates are re-read on every reload (renewals keep their
	// file names); new file names apply too. Turning TLS on or off needs a
	// restart, as the listener is plain or TLS.
	switch {
	case a.certs != nil && next.SCIM.TLS.CertFile != "":
		if err := a.certs.load(next.SCIM.TLS.CertFile, next.SCIM.TLS.KeyFile); err != nil {
			return nil, nil, &reloadError{problems: []string{"scim.tls: " + err.Error()}}
		}
		changes = append(changes, "scim.tls: certificate reloaded")
	case (a.certs != nil) != (next.SCIM.TLS.CertFile != ""):
		restart = append(restart, "scim.tls: turning TLS on or off needs a restart")
	}
	apply := func(section string, reloader any, call func() ([]string, error)) error {
		if !sectionChanged(diff, section) {
			return nil
		}
		if reloader == nil {
			for _, d := range diff {
				if strings.HasPrefix(d.path, section) && !restartNeeded(d.path) {
					restart = append(restart, d.String()+": needs a restart (this build cannot reload it)")
				}
			}
			return nil
		}
		c, err := call()
		if err != nil {
			return err
		}
		changes = append(changes, c...)
		return nil
	}
	// The catalog may still refuse (a value it drops is assigned): check it
	// before anything is applied, apply it after the rest.
	catalogChanged := sectionChanged(diff, "mapping.catalog")
	if catalogChanged {
		if _, problems := a.checkCatalog(cur.Mapping.Catalog, next.Mapping.Catalog); len(problems) > 0 {
			return nil, nil, &reloadError{problems: problems}
		}
	}
	var nextMapper *mapping.Mapper
	mappingChanged := sectionChanged(diff, "mapping")
	if mappingChanged {
		if nextMapper, err = mapping.Compile(next.Mapping); err != nil {
			var problems []string
			for _, e := range flatten(err) {
				problems = append(problems, "mapping."+e.Error())
			}
			return nil, nil, &reloadError{problems: problems}
		}
	}
	if r, ok := any(a.dispatcher).(outboxReloader); ok {
		err = apply("outbox", r, func() ([]string, error) { return r.Reload(next.Outbox) })
	} else {
		err = apply("outbox", nil, nil)
	}
	if err != nil {
		return nil, nil, &reloadError{problems: []string{"outbox: " + err.Error()}}
	}
	if r, ok := any(a.scim).(scimReloader); ok {
		err = apply("scim", r, func() ([]string, error) { return r.Reload(next.SCIM) })
	} else {
		err = apply("scim", nil, nil)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("scim: %w (outbox changes, if any, are applied)", err)
	}
	if r, ok := any(a.admin).(adminReloader); ok {
		err = apply("admin", r, func() ([]string, error) { return r.Reload(next.Admin, next.API) })
		if err == nil && !sectionChanged(diff, "admin") {
			err = apply("api", r, func() ([]string, error) { return r.Reload(next.Admin, next.API) })
		}
	} else {
		err = apply("admin", nil, nil)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("admin: %w (outbox and scim changes, if any, are applied)", err)
	}
	if next.Log.Level != cur.Log.Level && a.opts.LogLevel != nil {
		var l slog.Level
		if l.UnmarshalText([]byte(next.Log.Level)) == nil {
			level = &l
			changes = append(changes, fmt.Sprintf("log.level: %s → %s", cur.Log.Level, next.Log.Level))
		}
	}
	// What a restart would apply stays as it runs: keep those sections of
	// the running configuration, take the rest.
	kept := next
	kept.DataDir, kept.Log.Format = cur.DataDir, cur.Log.Format
	if mappingChanged {
		c, r, applied := a.reloadMapping(cur.Mapping, next.Mapping, nextMapper, diff)
		changes, restart = append(changes, c...), append(restart, r...)
		if !applied {
			kept.Mapping = cur.Mapping
		}
	}
	kept.SCIM.Listen, kept.SCIM.BasePath = cur.SCIM.Listen, cur.SCIM.BasePath
	kept.SCIM.Limits.ReadTimeout, kept.SCIM.Limits.WriteTimeout = cur.SCIM.Limits.ReadTimeout, cur.SCIM.Limits.WriteTimeout
	kept.SCIM.Limits.IdleTimeout, kept.SCIM.Limits.MaxConnections = cur.SCIM.Limits.IdleTimeout, cur.SCIM.Limits.MaxConnections
	kept.Admin.Listen, kept.Admin.ReadTimeout, kept.Admin.WriteTimeout = cur.Admin.Listen, cur.Admin.ReadTimeout, cur.Admin.WriteTimeout
	kept.Admin.IdleTimeout, kept.Admin.MaxConnections, kept.Admin.Console = cur.Admin.IdleTimeout, cur.Admin.MaxConnections, cur.Admin.Console
	a.cfg = kept
	return append(changes, restart...), level, nil
}

func sectionChanged(diff []change, section string) bool {
	for _, d := range diff {
		if d.path == section || strings.HasPrefix(d.path, section+".") {
			return true
		}
	}
	return false
}

// change is one differing configuration value.
type change struct {
	path     string
	note     string // "added", "removed"; "" for a changed value
	old, new string // shown only for numbers, booleans and durations
}

func (c change) String() string {
	if c.note != "" {
		return c.path + " " + c.note
	}
	if c.old == "" && c.new == "" {
		return c.path + " changed"
	}
	return fmt.Sprintf("%s: %s → %s", c.path, c.old, c.new)
}

// configChanges lists the paths (YAML names) whose values differ. Values
// are shown only for numbers, booleans and durations: any string may be a
// secret, a URL with credentials or a header.
func configChanges(old, new Config) []change {
	var out []change
	diffValue(reflect.ValueOf(old), reflect.ValueOf(new), "", &out)
	sort.Slice(out, func(i, j int) bool { return out[i].path < out[j].path })
	return out
}

var durationType = reflect.TypeOf(time.Duration(0))

func diffValue(a, b reflect.Value, path string, out *[]change) {
	if reflect.DeepEqual(a.Interface(), b.Interface()) {
		return
	}
	switch a.Kind() {
	case reflect.Struct:
		t := a.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "-" {
				continue
			}
			if name == "" {
				name = strings.ToLower(f.Name)
			}
			diffValue(a.Field(i), b.Field(i), join(path, name), out)
		}
		return
	case reflect.Slice:
		if a.Type() == reflect.TypeOf([]outbox.Target(nil)) {
			diffTargets(a.Interface().([]outbox.Target), b.Interface().([]outbox.Target), path, out)
			return
		}
	case reflect.Pointer:
		if !a.IsNil() && !b.IsNil() {
			diffValue(a.Elem(), b.Elem(), path, out)
			return
		}
	case reflect.Bool, reflect.Int, reflect.Int64, reflect.Float64:
		o, n := fmt.Sprint(a.Interface()), fmt.Sprint(b.Interface())
		if a.Type() == durationType {
			o, n = a.Interface().(time.Duration).String(), b.Interface().(time.Duration).String()
		}
		*out = append(*out, change{path: path, old: o, new: n})
		return
	}
	*out = append(*out, change{path: path})
}

// diffTargets matches targets by name.
func diffTargets(old, new []outbox.Target, path string, out *[]change) {
	byName := map[string]outbox.Target{}
	for _, t := range old {
		byName[t.Name] = t
	}
	seen := map[string]bool{}
	for _, t := range new {
		seen[t.Name] = true
		p := fmt.Sprintf("%s[%s]", path, t.Name)
		if o, ok := byName[t.Name]; ok {
			diffValue(reflect.ValueOf(o), reflect.ValueOf(t), p, out)
		} else {
			*out = append(*out, change{path: p, note: "added"})
		}
	}
	for _, t := range old {
		if !seen[t.Name] {
			*out = append(*out, change{path: fmt.Sprintf("%s[%s]", path, t.Name), note: "removed"})
		}
	}
}

// checkCatalog compiles a reloaded catalog and refuses it while a user still
// holds a value it drops (revoke it in the identity provider first). It
// returns the compiled catalog, or the problems.
func (a *app) checkCatalog(old, next []mapping.CatalogType) ([]mapping.CatalogType, []string) {
	compiled, err := mapping.CompileCatalog(next)
	if err != nil {
		var problems []string
		for _, e := range flatten(err) {
			problems = append(problems, "mapping."+e.Error())
		}
		return nil, problems
	}
	oldCompiled, _ := mapping.CompileCatalog(old)
	var problems []string
	for _, rv := range mapping.RemovedValues(oldCompiled, compiled) {
		f, err := scim.ParseFilter(fmt.Sprintf("%s[value eq %q]", rv.Attribute, rv.ID))
		if err != nil {
			problems = append(problems, fmt.Sprintf("mapping.catalog: cannot check who holds %s %q: %v", rv.Type, rv.ID, err))
			continue
		}
		total, page, err := a.store.ListUsers(store.Query{Filter: f, StartIndex: 1, Count: 1})
		if err != nil {
			problems = append(problems, fmt.Sprintf("mapping.catalog: cannot check who holds %s %q: %v", rv.Type, rv.ID, err))
			continue
		}
		if total > 0 {
			problems = append(problems, fmt.Sprintf("mapping.catalog: %s %q is removed but still assigned to %d user(s), e.g. %s: revoke it in the identity provider first, then reload",
				rv.Type, rv.ID, total, page[0].ID))
		}
	}
	return compiled, problems
}

// reloadMapping swaps in a changed mapping (compiled as next): the store
// maps every write with it from now on and, when the fingerprint changed,
// maps the stored records again (remap: on_change) or waits for
// `scimgate remap` (manual). It returns the changes, what was not applied,
// and whether the mapping was.
func (a *app) reloadMapping(cur, next mapping.Rules, m *mapping.Mapper, diff []change) (changes, notApplied []string, applied bool) {
	old := a.store.Mapper()
	manual := next.Remap == mapping.RemapManual
	a.store.SetRemapManual(manual)
	if err := a.store.SetMapper(m); err != nil {
		a.store.SetRemapManual(cur.Remap == mapping.RemapManual)
		return nil, []string{"mapping: not applied, the running mapping is kept: " + err.Error()}, false
	}
	a.mapper = m
	a.scim.SetMapper(m)
	if sectionChanged(diff, "mapping.catalog") {
		changes = append(changes, catalogChanges(cur.Catalog, next.Catalog)...)
	}
	if cur.Remap != next.Remap {
		changes = append(changes, fmt.Sprintf("mapping.remap: %s → %s", orDefault(cur.Remap, mapping.RemapOnChange), orDefault(next.Remap, mapping.RemapOnChange)))
	}
	if ofp, nfp := old.Fingerprint(), m.Fingerprint(); ofp != nfp {
		if manual {
			changes = append(changes, fmt.Sprintf("mapping: fingerprint %s → %s; remap: manual: the stored records keep the previous output until `scimgate remap` (preview it with `scimgate remap --dry-run`)", ofp, nfp))
		} else {
			changes = append(changes, fmt.Sprintf("mapping: fingerprint %s → %s; the stored records are being mapped again in the background (`scimgate status` shows the progress)", ofp, nfp))
		}
	} else if !sectionChanged(diff, "mapping.catalog") && cur.Remap == next.Remap {
		changes = append(changes, "mapping: changed, with the same records (fingerprint "+nfp+")")
	}
	if !sameSchemas(old.UserExtensions(), m.UserExtensions()) || !sameSchemas(old.GroupExtensions(), m.GroupExtensions()) {
		notApplied = append(notApplied, "mapping: the extension schemas the rules read or declare changed: /Schemas and the schemas stored resources are validated with needs a restart (the rules themselves are applied)")
	}
	return changes, notApplied, true
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// sameSchemas compares two lists of extension schemas as served.
func sameSchemas(a, b []*scim.Schema) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(x) == string(y)
}

// catalogChanges describes a catalog reload by type and value counts.
func catalogChanges(old, next []mapping.CatalogType) []string {
	count := func(c []mapping.CatalogType) map[string]int {
		m := map[string]int{}
		for _, t := range c {
			m[t.Name] = len(t.Values)
		}
		return m
	}
	o, n := count(old), count(next)
	var out []string
	for name, k := range n {
		if ok, had := o[name]; !had {
			out = append(out, fmt.Sprintf("mapping.catalog: type %s added (%d values)", name, k))
		} else if ok != k {
			out = append(out, fmt.Sprintf("mapping.catalog: type %s: %d → %d values", name, ok, k))
		}
	}
	for name := range o {
		if _, has := n[name]; !has {
			out = append(out, "mapping.catalog: type "+name+" removed")
		}
	}
	if len(out) == 0 {
		out = append(out, "mapping.catalog: values changed")
	}
	sort.Strings(out)
	return out
}
