package outbox

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	secret := "whsec_" + strings.Repeat("QUJD", 8)
	good := func() Config {
		cfg := DefaultConfig()
		cfg.Targets = []Target{
			{Name: "app", URL: "http://127.0.0.1:9000/hooks", Secrets: []string{secret}},
			{Name: "audit-2", URL: "https://audit.example/in?token=x", Events: []string{"user.*", "group.member_added", "*"},
				Headers: map[string]string{"X-Api-Key": "k"}, Secrets: []string{secret, secret}, Timeout: 5 * time.Second},
		}
		cfg.Transports = maps.Clone(TestTransports)
		return cfg
	}
	if cfg := good(); cfg.Validate() != nil {
		t.Fatalf("good config: %v", cfg.Validate())
	}
	if cfg := DefaultConfig(); cfg.Validate() != nil {
		t.Fatalf("DefaultConfig: %v", cfg.Validate())
	}
	// The engine knows no type by itself: a target whose type has no
	// Transport (even the default, webhook) is a configuration error.
	{
		cfg := good()
		cfg.Transports = nil
		err := cfg.Validate()
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != "outbox.targets[0].type" || !errors.Is(err, ErrInvalid) {
			t.Errorf("Validate without transports = %v, want outbox.targets[0].type invalid", err)
		}
	}
	tests := []struct {
		name   string
		modify func(*Config)
		field  string
		want   error
	}{
		{"noURL", func(c *Config) { c.Targets[1].URL = "" }, "outbox.targets[1].url", ErrRequired},
		{"badScheme", func(c *Config) { c.Targets[0].URL = "ftp://x/y" }, "outbox.targets[0].url", ErrInvalid},
		{"noHost", func(c *Config) { c.Targets[0].URL = "http:///y" }, "outbox.targets[0].url", ErrInvalid},
		{"unparsable", func(c *Config) { c.Targets[0].URL = "http://a b:%zz/" }, "outbox.targets[0].url", ErrInvalid},
		{"noName", func(c *Config) { c.Targets[0].Name = "" }, "outbox.targets[0].name", ErrRequired},
		{"badName", func(c *Config) { c.Targets[0].Name = "App!" }, "outbox.targets[0].name", ErrInvalid},
		{"dupName", func(c *Config) { c.Targets[1].Name = "app" }, "outbox.targets[1].name", ErrInvalid},
		{"noSecret", func(c *Config) { c.Targets[0].Secrets = nil }, "outbox.targets[0].secrets", ErrRequired},
		{"secretPrefix", func(c *Config) { c.Targets[0].Secrets = []string{"QUJD"} }, "outbox.targets[0].secrets[0]", ErrInvalid},
		{"secretBase64", func(c *Config) { c.Targets[1].Secrets[1] = "whsec_***" }, "outbox.targets[1].secrets[1]", ErrInvalid},
		{"pattern", func(c *Config) { c.Targets[1].Events = []string{"user.*.x"} }, "outbox.targets[1].events[0]", ErrInvalid},
		{"patternStar", func(c *Config) { c.Targets[1].Events = []string{"user*"} }, "outbox.targets[1].events[0]", ErrInvalid},
		{"reservedHeader", func(c *Config) { c.Targets[1].Headers = map[string]string{"webhook-id": "x"} }, "outbox.targets[1].headers", ErrInvalid},
		{"headerCRLF", func(c *Config) { c.Targets[1].Headers = map[string]string{"X-A": "a\r\nB: c"} }, "outbox.targets[1].headers", ErrInvalid},
		{"negativeTimeout", func(c *Config) { c.Targets[0].Timeout = -time.Second }, "outbox.targets[0].timeout", ErrInvalid},
		{"concurrency", func(c *Config) { c.Concurrency = 0 }, "outbox.concurrency", ErrInvalid},
		{"noBackoff", func(c *Config) { c.Backoff = nil }, "outbox.backoff", ErrRequired},
		{"negativeBackoff", func(c *Config) { c.Backoff = []time.Duration{-1, time.Second} }, "outbox.backoff[0]", ErrInvalid},
		{"zeroLastBackoff", func(c *Config) { c.Backoff = []time.Duration{0} }, "outbox.backoff[0]", ErrInvalid},
		{"unlimited", func(c *Config) { c.MaxAttempts, c.MaxAge = 0, 0 }, "outbox.max_attempts", ErrInvalid},
		{"retention", func(c *Config) { c.Retention = 0 }, "outbox.retention", ErrInvalid},
		{"poll", func(c *Config) { c.PollInterval = 0 }, "outbox.poll_interval", ErrInvalid},
		{"retryAfterMax", func(c *Config) { c.RetryAfterMax = -1 }, "outbox.retry_after_max", ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good()
			tt.modify(&cfg)
			err := cfg.Validate()
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Validate = %v, want a *FieldError", err)
			}
			if fe.Field != tt.field || !errors.Is(fe, tt.want) {
				t.Errorf("Validate = %v (field %q), want field %q wrapping %v", err, fe.Field, tt.field, tt.want)
			}
			if strings.Contains(err.Error(), "QUJD") || strings.Contains(err.Error(), "token=x") {
				t.Errorf("error %q leaks a secret or URL query", err)
			}
		})
	}
}

func TestConfigOnlyMaxAge(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxAttempts = 0
	if err := cfg.Validate(); err != nil {
		t.Errorf("max_attempts 0 with max_age set: %v", err)
	}
}

func TestMatcher(t *testing.T) {
	tests := []struct {
		patterns []string
		typ      string
		want     bool
	}{
		{[]string{"*"}, "user.created", true},
		{[]string{"user.*"}, "user.created", true},
		{[]string{"user.*"}, "group.created", false},
		{[]string{"user.*"}, "users.created", false},
		{[]string{"group.member_added"}, "group.member_added", true},
		{[]string{"group.member_added"}, "group.member_removed", false},
		{[]string{"user.deleted", "group.*"}, "group.deleted", true},
	}
	for _, tt := range tests {
		if got := newMatcher(tt.patterns).match(tt.typ); got != tt.want {
			t.Errorf("match(%v, %q) = %v, want %v", tt.patterns, tt.typ, got, tt.want)
		}
	}
}

func TestRedactURL(t *testing.T) {
	if got, want := RedactURL("https://user:pw@hooks.example:8443/in/x?token=s3cret#f"), "https://hooks.example:8443/in/x"; got != want {
		t.Errorf("RedactURL = %q, want %q", got, want)
	}
}

// TestTransportURL: url belongs to the webhook; a nats target names its
// servers in its section (its transport's own text, reported once), and a
// type whose transport says nothing about url gets the general refusal.
func TestTransportURL(t *testing.T) {
	cfg := testConfig("http://127.0.0.1:1/hook", "whsec_"+strings.Repeat("A", 32))
	cfg.Transports[TypeRest] = Transport{}
	cfg.Targets = append(cfg.Targets,
		Target{Name: "n", Type: TypeNATS, URL: "nats://h:4222", NATS: &NATSConfig{URLs: []string{"nats://h:4222"}, Stream: "S"}},
		Target{Name: "r", Type: TypeRest, URL: "https://app.example"})
	var got []string
	for _, err := range flattenErrors(cfg.Validate()) {
		got = append(got, err.Error())
	}
	want := []string{
		"outbox.targets[1].url: invalid: a nats target takes its servers in nats.urls, not url",
		"outbox.targets[2].url: invalid: a rest target takes its address in its rest section, not url",
	}
	if !slices.Equal(got, want) {
		t.Errorf("Validate = %q, want %q", got, want)
	}
}

func flattenErrors(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	if err == nil {
		return nil
	}
	return []error{err}
}
