package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
)

// Config is the `scim:` section: the listener identity providers talk to.
type Config struct {
	// Listen is the SCIM listener address (SCIMGATE_LISTEN, ":8080").
	Listen string `yaml:"listen"`
	// BasePath is where the SCIM endpoints live ("/scim/v2").
	BasePath string `yaml:"base_path"`
	// PublicURL, when set, is the absolute base URL used in meta.location
	// and Location headers (e.g. "https://scim.example.com/scim/v2", as the
	// IdP sees it behind a proxy). Otherwise it is derived from each request.
	PublicURL string `yaml:"public_url"`
	// Auth lists the credentials an identity provider may present.
	Auth AuthConfig `yaml:"auth"`
	// Limits bound what one request may ask for.
	Limits LimitsConfig `yaml:"limits"`
	// PatchResponse is what a successful PATCH returns: "no_content" (204,
	// what Entra prefers and Okta accepts) or "resource" (200 with the
	// resource).
	PatchResponse string `yaml:"patch_response"`
	// TLS serves SCIM over HTTPS when both files are set (reloaded on SIGHUP).
	TLS TLSConfig `yaml:"tls"`
	// UnknownMembers is what a member id that names no user or group does
	// in a group write: "ignore" it (the default: no membership, no event,
	// a warning and a metric; the rest of the request applies) or "reject"
	// the whole request with 400.
	UnknownMembers string `yaml:"unknown_members"`
}

// AuthConfig holds SCIM credentials. Secrets are written as "sha256:<hex>"
// of the secret, or as the secret itself (normally "${SCIMGATE_SCIM_TOKEN}"
// from the environment); either way only the hash is kept in memory, and
// comparisons are constant-time. Several bearer tokens may be valid at
// once, so a token can be rotated without downtime.
type AuthConfig struct {
	BearerTokens []string          `yaml:"bearer_tokens"`
	Basic        []BasicCredential `yaml:"basic"`
}

// BasicCredential is one HTTP Basic key and secret (Cyolo-style).
type BasicCredential struct {
	Username string `yaml:"username"`
	Password string `yaml:"password"`
}

// LimitsConfig bounds request sizes, rates and the SCIM listener's
// connections. docs/operations.md has the table of every limit.
type LimitsConfig struct {
	MaxBodyBytes   int64 `yaml:"max_body_bytes"`
	MaxPageSize    int   `yaml:"max_page_size"`
	MaxOperations  int   `yaml:"max_operations"`
	MaxMembers     int   `yaml:"max_members"`
	MaxFilterBytes int   `yaml:"max_filter_bytes"`
	// MaxDepth bounds the nesting of a JSON document (objects and arrays).
	MaxDepth int `yaml:"max_depth"`
	// MaxValues bounds the values of multi-valued attributes in one
	// request: a POST or PUT body, or all PATCH operations together (with
	// or without a path).
	MaxValues int `yaml:"max_values"`
	// MaxMembersPerList bounds the group members rendered in one list
	// response (GET /Groups); GET /Groups/{id} always has them all.
	MaxMembersPerList int `yaml:"max_members_per_list"`
	// ReadTimeout bounds reading a whole request (headers and body),
	// WriteTimeout writing the response, IdleTimeout a keep-alive
	// connection between requests.
	ReadTimeout  time.Duration `yaml:"read_timeout"`
	WriteTimeout time.Duration `yaml:"write_timeout"`
	IdleTimeout  time.Duration `yaml:"idle_timeout"`
	// MaxConnections bounds the connections the SCIM listener holds open;
	// further clients wait in the kernel's accept queue.
	MaxConnections int `yaml:"max_connections"`
	// RatePerSecond and Burst limit requests per client (by credential,
	// else by address); 0 disables. Excess gets 429 with Retry-After.
	RatePerSecond float64 `yaml:"rate_per_second"`
	Burst         int     `yaml:"burst"`
}

// TLSConfig names a certificate and key file.
type TLSConfig struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// DefaultConfig returns the defaults DESIGN.md promises.
func DefaultConfig() Config {
	return Config{
		Listen:         ":8080",
		BasePath:       "/scim/v2",
		PatchResponse:  "no_content",
		UnknownMembers: "ignore",
		Limits: LimitsConfig{
			MaxBodyBytes:      1 << 20,
			MaxPageSize:       1000,
			MaxOperations:     1000,
			MaxMembers:        10000,
			MaxFilterBytes:    4096,
			MaxDepth:          32,
			MaxValues:         10000,
			MaxMembersPerList: 10000,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      60 * time.Second,
			IdleTimeout:       2 * time.Minute,
			MaxConnections:    1024,
		},
	}
}

// FieldError is a configuration problem at a YAML path such as
// "scim.auth.bearer_tokens[1]".
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

// Validation sentinels, for errors.Is.
var (
	ErrRequired = errors.New("required")
	ErrInvalid  = errors.New("invalid")
)

func fieldErr(field string, err error, format string, args ...any) error {
	return &FieldError{Field: field, Err: fmt.Errorf("%w: "+format, append([]any{err}, args...)...)}
}

// Validate checks the section; field names are relative to "scim".
func (c *Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fieldErr("listen", ErrInvalid, "%q is not host:port", c.Listen))
	}
	if !strings.HasPrefix(c.BasePath, "/") {
		errs = append(errs, fieldErr("base_path", ErrInvalid, "%q must start with /", c.BasePath))
	}
	if c.PublicURL != "" {
		if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fieldErr("public_url", ErrInvalid, "%q is not an absolute http(s) URL", c.PublicURL))
		}
	}
	switch c.PatchResponse {
	case "no_content", "resource":
	default:
		errs = append(errs, fieldErr("patch_response", ErrInvalid, "%q: use no_content or resource", c.PatchResponse))
	}
	for i, t := range c.Auth.BearerTokens {
		if err := checkSecret(t); err != nil {
			errs = append(errs, fieldErr(fmt.Sprintf("auth.bearer_tokens[%d]", i), ErrInvalid, "%v", err))
		}
	}
	for i, b := range c.Auth.Basic {
		if b.Username == "" {
			errs = append(errs, fieldErr(fmt.Sprintf("auth.basic[%d].username", i), ErrRequired, "a key is needed"))
		}
		if err := checkSecret(b.Password); err != nil {
			errs = append(errs, fieldErr(fmt.Sprintf("auth.basic[%d].password", i), ErrInvalid, "%v", err))
		}
	}
	switch c.UnknownMembers {
	case "ignore", "reject":
	default:
		errs = append(errs, fieldErr("unknown_members", ErrInvalid, "%q: use ignore or reject", c.UnknownMembers))
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, fieldErr("tls", ErrInvalid, "set both cert_file and key_file, or neither"))
	}
	l := c.Limits
	for name, v := range map[string]int64{
		"limits.max_body_bytes": l.MaxBodyBytes, "limits.max_page_size": int64(l.MaxPageSize),
		"limits.max_operations": int64(l.MaxOperations), "limits.max_members": int64(l.MaxMembers),
		"limits.max_filter_bytes": int64(l.MaxFilterBytes), "limits.max_depth": int64(l.MaxDepth),
		"limits.max_values": int64(l.MaxValues), "limits.max_members_per_list": int64(l.MaxMembersPerList),
		"limits.read_timeout": int64(l.ReadTimeout), "limits.write_timeout": int64(l.WriteTimeout),
		"limits.idle_timeout": int64(l.IdleTimeout), "limits.max_connections": int64(l.MaxConnections),
	} {
		if v <= 0 {
			errs = append(errs, fieldErr(name, ErrInvalid, "must be positive"))
		}
	}
	if l.RatePerSecond < 0 || l.Burst < 0 {
		errs = append(errs, fieldErr("limits.rate_per_second", ErrInvalid, "must not be negative"))
	}
	return errors.Join(errs...)
}

// HasCredentials reports whether any bearer token or Basic credential is set.
func (a AuthConfig) HasCredentials() bool { return len(a.BearerTokens) > 0 || len(a.Basic) > 0 }

// checkSecret accepts "sha256:<64 hex>" or a plain secret of 16+ bytes.
func checkSecret(s string) error {
	if h, ok := strings.CutPrefix(s, "sha256:"); ok {
		if b, err := hex.DecodeString(h); err != nil || len(b) != sha256.Size {
			return errors.New("sha256: must be followed by 64 hex digits (scimgate token prints one)")
		}
		return nil
	}
	if len(s) < 16 {
		return errors.New("a plain secret must be at least 16 characters; generate one with `scimgate token`")
	}
	return nil
}

// hashSecret returns the SHA-256 of a configured secret ("sha256:" form or plain).
func hashSecret(s string) [sha256.Size]byte {
	if h, ok := strings.CutPrefix(s, "sha256:"); ok {
		var out [sha256.Size]byte
		b, _ := hex.DecodeString(h)
		copy(out[:], b)
		return out
	}
	return sha256.Sum256([]byte(s))
}

// HashToken returns the "sha256:<hex>" form of a token for the config.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return "sha256:" + hex.EncodeToString(sum[:])
}
