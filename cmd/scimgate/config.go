package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/scimgate/scimgate/gateway"
	"github.com/scimgate/scimgate/mapping"
	"github.com/scimgate/scimgate/outbox"
	"github.com/scimgate/scimgate/outbox/rest"
)

// Config is the whole configuration file. Each section is owned by the
// package it configures; this file only assembles them.
type Config struct {
	// DataDir holds the bbolt file and generated secrets (SCIMGATE_DATA_DIR).
	DataDir string              `yaml:"data_dir"`
	SCIM    gateway.Config      `yaml:"scim"`
	Admin   gateway.AdminConfig `yaml:"admin"`
	API     gateway.APIConfig   `yaml:"api"`
	Outbox  outbox.Config       `yaml:"outbox"`
	Mapping mapping.Rules       `yaml:"mapping"`
	Log     LogConfig           `yaml:"log"`
}

// LogConfig selects the log handler.
type LogConfig struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // json or text
}

// Default values of the environment variables (README.md, "Configure").
const (
	defaultListen      = ":8080"
	defaultAdminListen = "127.0.0.1:8081"
	defaultDataDir     = "./data"
	defaultWebhookURL  = "http://127.0.0.1:9000/hooks"
)

// DefaultConfig is what `scimgate serve` runs without --config: the same
// as config.example.yaml under the same environment (a test keeps the two
// equal). The command passes a fileEnv's Get as getenv, so that the _FILE
// forms of the variables work here as in a config file.
func DefaultConfig(getenv func(string) string) Config {
	env := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	cfg := Config{
		DataDir: env("SCIMGATE_DATA_DIR", defaultDataDir),
		SCIM:    gateway.DefaultConfig(),
		Admin:   gateway.DefaultAdminConfig(),
		API:     gateway.DefaultAPIConfig(),
		Outbox:  outbox.DefaultConfig(),
		Mapping: mapping.DefaultRules(),
		Log:     LogConfig{Level: "info", Format: "json"},
	}
	cfg.Outbox.Transports = transports()
	cfg.SCIM.Listen = env("SCIMGATE_LISTEN", defaultListen)
	cfg.SCIM.Auth.BearerTokens = gateway.Tokens(getenv("SCIMGATE_SCIM_TOKEN"))
	cfg.Admin.Listen = env("SCIMGATE_ADMIN_LISTEN", defaultAdminListen)
	cfg.Admin.Tokens = nonEmpty(getenv("SCIMGATE_ADMIN_TOKEN"))
	cfg.API.Tokens = nonEmpty(getenv("SCIMGATE_API_TOKEN"))
	cfg.Outbox.Targets = []outbox.Target{{
		Name:    "default",
		URL:     env("SCIMGATE_WEBHOOK_URL", defaultWebhookURL),
		Events:  []string{"*"},
		Secrets: nonEmpty(getenv("SCIMGATE_WEBHOOK_SECRET")),
		Timeout: 15 * time.Second,
	}}
	return cfg
}

func nonEmpty(vals ...string) []string {
	var out []string
	for _, v := range vals {
		if strings.TrimSpace(v) != "" {
			out = append(out, v)
		}
	}
	return out
}

// ConfigError is a problem in a configuration file, located by line.
type ConfigError struct {
	File  string
	Line  int    // 0 when unknown
	Field string // YAML path, e.g. "outbox.targets[0].url"
	Err   error
}

func (e *ConfigError) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc += ":" + strconv.Itoa(e.Line)
	}
	if e.Field != "" {
		return fmt.Sprintf("%s: %s: %v", loc, e.Field, e.Err)
	}
	return fmt.Sprintf("%s: %v", loc, e.Err)
}

func (e *ConfigError) Unwrap() error { return e.Err }

// ErrUnknownKey marks a key no section defines (a typo, usually): the
// mapping section reports its own, with every other problem of its rules.
var ErrUnknownKey = mapping.ErrUnknownKey

// LoadConfig reads a config file on top of DefaultConfig. ${NAME} and
// ${NAME:-default} in values are expanded from getenv (and only those: a
// secret such as "$2a$10$…" is left alone); every variable may instead be
// given as a file named by NAME_FILE (lookupEnv). Unknown keys are errors.
// The result is not yet validated: generated secrets are filled in first.
func LoadConfig(path string, getenv func(string) string) (Config, *yaml.Node, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, nil, err
	}
	return ParseConfig(path, data, getenv)
}

// ParseConfig is LoadConfig on bytes; name labels errors.
func ParseConfig(name string, data []byte, getenv func(string) string) (Config, *yaml.Node, error) {
	return parseConfig(name, data, getenv, false)
}

// parseConfig is ParseConfig; lenient expands what it cannot resolve to
// the reference's default or "" instead of failing (the admin commands read
// only admin.listen, and need not have the gateway's secrets).
func parseConfig(name string, data []byte, getenv func(string) string, lenient bool) (Config, *yaml.Node, error) {
	env := newFileEnv(getenv)
	lookup := env.Lookup
	if lenient {
		lookup = func(name string) (string, error) {
			if v, err := lookupEnv(getenv, name); err == nil && v != "" {
				return v, nil
			}
			return "", errLenient
		}
	}
	cfg := DefaultConfig(env.Get)
	if err := env.Err(); err != nil && !lenient {
		return cfg, nil, &ConfigError{File: name, Err: err}
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return cfg, nil, yamlSyntaxError(name, data, err) // on its real line
	}
	if len(root.Content) == 0 { // empty file: defaults
		return cfg, &root, nil
	}
	doc := root.Content[0]
	if err := expandNode(doc, lookup); err != nil {
		return cfg, nil, &ConfigError{File: name, Line: err.line, Err: err}
	}
	if err := checkKnown(doc, reflect.TypeOf(cfg)); err != nil {
		err.File = name
		return cfg, nil, err
	}
	// Sections present in the file replace the defaults' lists rather than
	// appending to them.
	if err := doc.Decode(&cfg); err != nil {
		return cfg, nil, &ConfigError{File: name, Err: err}
	}
	cfg.SCIM.Auth.BearerTokens = gateway.NonEmptyTokens(cfg.SCIM.Auth.BearerTokens)
	cfg.Admin.Tokens = nonEmpty(cfg.Admin.Tokens...)
	cfg.API.Tokens = nonEmpty(cfg.API.Tokens...)
	for i := range cfg.Outbox.Targets {
		cfg.Outbox.Targets[i].Secrets = nonEmpty(cfg.Outbox.Targets[i].Secrets...)
	}
	return cfg, doc, nil
}

// errLenient is a lenient lookup that found nothing.
var errLenient = errors.New("unresolved")

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

type expandError struct {
	line int
	name string
	err  error // from lookupEnv (the _FILE form); nil when simply unset
}

func (e *expandError) Error() string {
	if e.err != nil {
		return fmt.Sprintf("${%s}: %v", e.name, e.err)
	}
	return fmt.Sprintf("${%s} is not set in the environment (set %s or %s_FILE, or write ${%s:-default} for a default)", e.name, e.name, e.name, e.name)
}

func (e *expandError) Unwrap() error { return e.err }

// expandNode expands environment references in every scalar value. A
// ${NAME} without default that is unset (or empty) is an error, so a
// missing secret is noticed at start, not at the first request; write
// ${NAME:-} where empty is fine (a generated secret, for instance). A
// NAME_FILE that cannot be read is an error even with a default.
func expandNode(n *yaml.Node, lookup func(string) (string, error)) *expandError {
	switch n.Kind {
	case yaml.ScalarNode:
		if !strings.Contains(n.Value, "${") {
			return nil
		}
		var err *expandError
		n.Value = envRef.ReplaceAllStringFunc(n.Value, func(m string) string {
			sub := envRef.FindStringSubmatch(m)
			v, lerr := lookup(sub[1])
			if errors.Is(lerr, errLenient) {
				return sub[3] // the default, or ""
			}
			if lerr != nil {
				if err == nil {
					err = &expandError{line: n.Line, name: sub[1], err: lerr}
				}
				return ""
			}
			if v != "" {
				return v
			}
			if sub[2] != "" {
				return sub[3]
			}
			if err == nil {
				err = &expandError{line: n.Line, name: sub[1]}
			}
			return ""
		})
		// Let the expanded text resolve to its natural type (an int, a
		// duration) unless the author quoted it.
		if n.Style == 0 {
			n.Tag = ""
		}
		return err
	default:
		for _, c := range n.Content {
			if err := expandNode(c, lookup); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkKnown rejects the first mapping key that the target struct type has
// no yaml field for, naming the key, its line and the keys that are
// allowed. A section whose type decodes itself (the mapping, a YAML section
// kept for its transport) checks its own keys.
func checkKnown(n *yaml.Node, t reflect.Type) *ConfigError {
	var first *ConfigError
	mapping.WalkKeys(n, t, "", nil, func(k mapping.UnknownKey) {
		if first == nil {
			first = &ConfigError{Line: k.Key.Line, Field: k.Path,
				Err: fmt.Errorf("%w (allowed here: %s)", ErrUnknownKey, strings.Join(k.Allowed, ", "))}
		}
	})
	return first
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// lineOf finds the line of a YAML path such as "outbox.targets[1].url" (or
// of its nearest existing ancestor) in doc.
func lineOf(doc *yaml.Node, field string) int {
	if doc == nil {
		return 0
	}
	n, line := doc, doc.Line
	for _, part := range splitPath(field) {
		if n == nil {
			break
		}
		if idx, err := strconv.Atoi(part); err == nil {
			if n.Kind != yaml.SequenceNode || idx >= len(n.Content) {
				break
			}
			n = n.Content[idx]
			line = n.Line
			continue
		}
		var next *yaml.Node
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == part {
					line, next = n.Content[i].Line, n.Content[i+1]
					break
				}
			}
		}
		if next == nil {
			break
		}
		n = next
	}
	return line
}

// splitPath turns "a.b[2].c" into ["a", "b", "2", "c"].
func splitPath(p string) []string {
	p = strings.NewReplacer("[", ".", "]", "").Replace(p)
	return strings.FieldsFunc(p, func(r rune) bool { return r == '.' })
}

// Validate checks every section and locates each problem in the file.
func (c *Config) Validate(file string, doc *yaml.Node) error {
	// Every configuration passes here before use (serve, reload, validate,
	// actions): the target types built outside the engine are wired here.
	c.Outbox.Transports = transports()
	var errs []error
	add := func(section string, err error) { errs = append(errs, locate(file, doc, section, err)...) }
	add("scim", c.SCIM.Validate())
	add("admin", c.Admin.Validate())
	add("api", c.API.Validate())
	add("outbox", c.Outbox.Validate())
	errs = append(errs, c.distinctTokens(file, doc)...)
	if _, err := mapping.Compile(c.Mapping); err != nil {
		add("mapping", err)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, &ConfigError{File: file, Line: lineOf(doc, "log.level"), Field: "log.level", Err: fmt.Errorf("%q: use debug, info, warn or error", c.Log.Level)})
	}
	switch c.Log.Format {
	case "json", "text":
	default:
		errs = append(errs, &ConfigError{File: file, Line: lineOf(doc, "log.format"), Field: "log.format", Err: fmt.Errorf("%q: use json or text", c.Log.Format)})
	}
	if c.DataDir == "" {
		errs = append(errs, &ConfigError{File: file, Line: lineOf(doc, "data_dir"), Field: "data_dir", Err: errors.New("required")})
	}
	return errors.Join(errs...)
}

// distinctTokens refuses an app API token that is also a SCIM or admin
// token: the API's tokens are accepted under /v1/ and nowhere else.
func (c *Config) distinctTokens(file string, doc *yaml.Node) []error {
	type use struct{ field, token string }
	var uses []use
	for i, t := range c.SCIM.Auth.BearerTokens {
		uses = append(uses, use{fmt.Sprintf("scim.auth.bearer_tokens[%d]", i), t.Token})
	}
	for i, t := range c.Admin.Tokens {
		uses = append(uses, use{fmt.Sprintf("admin.tokens[%d]", i), t})
	}
	for i, t := range c.API.Tokens {
		uses = append(uses, use{fmt.Sprintf("api.tokens[%d]", i), t})
	}
	var errs []error
	seen := map[string]string{}
	for _, u := range uses {
		if strings.TrimSpace(u.token) == "" {
			continue
		}
		key := gateway.SecretHash(u.token)
		if other, dup := seen[key]; dup && strings.HasPrefix(u.field, "api.") && !strings.HasPrefix(other, "api.") {
			errs = append(errs, &ConfigError{File: file, Line: lineOf(doc, u.field), Field: u.field,
				Err: fmt.Errorf("the same token as %s: the app API's tokens must differ from the SCIM and admin tokens (generate one with `scimgate token`)", other)})
		}
		seen[key] = u.field
	}
	return errs
}

// flatten splits errors.Join trees into their leaves.
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// locate turns a section's validation errors into ConfigErrors that name
// the file, the line and the full YAML path.
func locate(file string, doc *yaml.Node, section string, err error) []error {
	if err == nil {
		return nil
	}
	var out []error
	for _, e := range flatten(err) {
		field, cause := splitField(e)
		if field != "" {
			field = section + "." + field
		} else {
			field = section
		}
		line := lineOf(doc, field)
		if le := (*rest.LineError)(nil); errors.As(e, &le) && le.Line > 0 {
			line = le.Line // a rest section's paths (actions[user.created]…) are not lineOf's
		}
		out = append(out, &ConfigError{File: file, Line: line, Field: field, Err: cause})
	}
	return out
}

// splitField reads the path and the cause out of the packages' FieldError
// types (path "" for any other error).
func splitField(err error) (string, error) {
	var oe *outbox.FieldError
	var me *mapping.FieldError // also the gateway's
	switch {
	case errors.As(err, &oe):
		return strings.TrimPrefix(oe.Field, "outbox."), oe.Err
	case errors.As(err, &me):
		return me.Field, me.Err
	}
	return "", err
}

// formatErrors prints one config problem per line.
func formatErrors(err error) string {
	var b bytes.Buffer
	for _, e := range flatten(err) {
		b.WriteString(e.Error())
		b.WriteByte('\n')
	}
	return strings.TrimSuffix(b.String(), "\n")
}
