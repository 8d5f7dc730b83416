package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/scimgate/scimgate/mapping"
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
	// TrustedProxies are the addresses or CIDR ranges of reverse proxies
	// whose X-Forwarded-For / Forwarded headers name the client. The
	// address a credential's allowed_cidrs is checked against is the
	// nearest untrusted hop; headers from any other peer are ignored.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// ForwardedHeader is the one header that names the client behind a
	// trusted proxy: "X-Forwarded-For" (the default: what Go's
	// ReverseProxy, nginx, ingress-nginx, AWS ALB, Traefik and Envoy set),
	// "Forwarded" (RFC 7239) or another comma-separated list of addresses
	// such as "X-Real-IP". No other header is read: a proxy passes a
	// client's copy of the headers it does not set through untouched.
	ForwardedHeader string `yaml:"forwarded_header"`
	// UnknownMembers is what a member id that names no user or group does
	// in a group write: "ignore" it (the default: no membership, no event,
	// a warning and a metric; the rest of the request applies) or "reject"
	// the whole request with 400.
	UnknownMembers string `yaml:"unknown_members"`
}

// AuthConfig holds SCIM credentials. Secrets are written as "sha256:<hex>"
// of the secret, or as the secret itself (normally "${SCIMGATE_SCIM_TOKEN}"
// from the environment); either way only the hash is kept in memory, and
// comparisons are constant-time. Several credentials of each kind may be
// valid at once, so one can be rotated without downtime. Each may carry
// allowed_cidrs: requests with it from any other address get 403.
type AuthConfig struct {
	BearerTokens []BearerToken     `yaml:"bearer_tokens"`
	Basic        []BasicCredential `yaml:"basic"`
	// OAuthClients may obtain short-lived access tokens from
	// POST {base_path}/oauth/token (RFC 6749 §4.4 client credentials) and
	// present them as bearer tokens (Entra's "OAuth2 Client Credentials
	// Grant").
	OAuthClients []OAuthClient `yaml:"oauth_clients"`
	// OAuthTokenTTL is the lifetime of the access tokens issued (1h).
	OAuthTokenTTL time.Duration `yaml:"oauth_token_ttl"`
}

// BearerToken is one static bearer token. In YAML it is the token itself
// (a string, the release-1 form) or {token: …, allowed_cidrs: […]}.
type BearerToken struct {
	Token        string   `yaml:"token"`
	AllowedCIDRs []string `yaml:"allowed_cidrs"`
}

// Tokens returns static bearer tokens without address limits, empty
// strings skipped (an unset ${SCIMGATE_SCIM_TOKEN:-} expands to "").
func Tokens(tokens ...string) []BearerToken {
	var out []BearerToken
	for _, t := range tokens {
		if strings.TrimSpace(t) != "" {
			out = append(out, BearerToken{Token: t})
		}
	}
	return out
}

// UnmarshalYAML accepts a scalar (the token) or a mapping.
func (t *BearerToken) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*t = BearerToken{Token: n.Value}
		return nil
	}
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: expected a mapping with token, allowed_cidrs", n.Line)
	}
	type plain BearerToken
	var err error
	mapping.WalkKeys(n, reflect.TypeFor[plain](), "", nil, func(k mapping.UnknownKey) {
		if err == nil {
			err = fmt.Errorf("line %d: unknown key %q (allowed here: %s)", k.Key.Line, k.Key.Value, strings.Join(k.Allowed, ", "))
		}
	})
	if err != nil {
		return err
	}
	return n.Decode((*plain)(t))
}

// BasicCredential is one HTTP Basic key and secret (Cyolo-style).
type BasicCredential struct {
	Username     string   `yaml:"username"`
	Password     string   `yaml:"password"`
	AllowedCIDRs []string `yaml:"allowed_cidrs"`
}

// OAuthClient is one OAuth 2.0 client of the token endpoint.
type OAuthClient struct {
	ClientID string `yaml:"client_id"`
	// ClientSecrets are the valid secrets (hashes or plain, as tokens);
	// several at once for rotation. Removing a secret revokes the access
	// tokens issued with it; removing the client revokes all of its tokens.
	ClientSecrets []string `yaml:"client_secrets"`
	AllowedCIDRs  []string `yaml:"allowed_cidrs"`
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
	// MaxMembersPerList is accepted so that configurations written for
	// earlier releases still load, and has no effect: a GET /Groups page
	// holds the groups asked for, each with all its members, written one
	// group at a time (docs/operations.md, Limits).
	MaxMembersPerList int `yaml:"max_members_per_list"`
	// MaxResourceBytes bounds a stored resource, encoded (its attributes,
	// its canonical record and its event data; a group's members are kept
	// apart and not counted): a write that would make it larger is refused
	// with 413, so in-limit requests cannot pile up a resource that costs
	// every later write, read and delivery of it.
	MaxResourceBytes int `yaml:"max_resource_bytes"`
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
	// TokenRatePerSecond and TokenBurst limit requests to the OAuth token
	// endpoint per client address (1/s, burst 10): a client needs one token
	// an hour, so more is a misconfigured client or secret guessing.
	TokenRatePerSecond float64 `yaml:"token_rate_per_second"`
	TokenBurst         int     `yaml:"token_burst"`
}

// TLSConfig names a certificate and key file.
type TLSConfig struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// DefaultConfig returns the defaults config.example.yaml shows (the
// command's TestExampleConfigEqualsDefaults keeps the two equal).
func DefaultConfig() Config {
	return Config{
		Listen:          ":8080",
		BasePath:        "/scim/v2",
		PatchResponse:   "no_content",
		UnknownMembers:  "ignore",
		ForwardedHeader: DefaultForwardedHeader,
		Auth:            AuthConfig{OAuthTokenTTL: time.Hour},
		Limits: LimitsConfig{
			MaxBodyBytes:       1 << 20,
			MaxPageSize:        1000,
			MaxOperations:      1000,
			MaxMembers:         10000,
			MaxFilterBytes:     4096,
			MaxDepth:           32,
			MaxValues:          10000,
			MaxMembersPerList:  10000,
			MaxResourceBytes:   512 << 10,
			ReadTimeout:        30 * time.Second,
			WriteTimeout:       60 * time.Second,
			IdleTimeout:        2 * time.Minute,
			MaxConnections:     1024,
			TokenRatePerSecond: 1,
			TokenBurst:         10,
		},
	}
}

// Validation sentinels, for errors.Is.
var (
	ErrRequired = errors.New("required")
	ErrInvalid  = errors.New("invalid")
)

// fieldErr is a configuration problem at a path relative to "scim" (such
// as "auth.bearer_tokens[1]"), as the mapping's *FieldError: one type for
// the command to read the path out of (the outbox engine, which imports
// nothing of ours, keeps its own).
func fieldErr(field string, err error, format string, args ...any) error {
	return &mapping.FieldError{Field: field, Err: fmt.Errorf("%w: "+format, append([]any{err}, args...)...)}
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
	cidrs := func(field string, list []string) {
		for j, c := range list {
			if _, err := parsePrefix(c); err != nil {
				errs = append(errs, fieldErr(fmt.Sprintf("%s[%d]", field, j), ErrInvalid, "%q is not an IP address or CIDR range such as 203.0.113.0/24", c))
			}
		}
	}
	for i, t := range c.Auth.BearerTokens {
		if strings.TrimSpace(t.Token) == "" {
			continue // an unset ${SCIMGATE_SCIM_TOKEN:-}: none
		}
		if err := checkSecret(t.Token); err != nil {
			errs = append(errs, fieldErr(fmt.Sprintf("auth.bearer_tokens[%d]", i), ErrInvalid, "%v", err))
		}
		cidrs(fmt.Sprintf("auth.bearer_tokens[%d].allowed_cidrs", i), t.AllowedCIDRs)
	}
	for i, b := range c.Auth.Basic {
		if b.Username == "" {
			errs = append(errs, fieldErr(fmt.Sprintf("auth.basic[%d].username", i), ErrRequired, "a key is needed"))
		}
		if err := checkSecret(b.Password); err != nil {
			errs = append(errs, fieldErr(fmt.Sprintf("auth.basic[%d].password", i), ErrInvalid, "%v", err))
		}
		cidrs(fmt.Sprintf("auth.basic[%d].allowed_cidrs", i), b.AllowedCIDRs)
	}
	ids := map[string]int{}
	for i, oc := range c.Auth.OAuthClients {
		at := fmt.Sprintf("auth.oauth_clients[%d]", i)
		switch {
		case oc.ClientID == "":
			errs = append(errs, fieldErr(at+".client_id", ErrRequired, "a client id is needed (what Entra's Client Identifier field holds)"))
		case strings.ContainsAny(oc.ClientID, ":\x00\r\n"):
			errs = append(errs, fieldErr(at+".client_id", ErrInvalid, "must not contain ':' or control characters (RFC 6749 §2.3.1)"))
		default:
			if j, dup := ids[oc.ClientID]; dup {
				errs = append(errs, fieldErr(at+".client_id", ErrInvalid, "also the id of auth.oauth_clients[%d]", j))
			}
			ids[oc.ClientID] = i
		}
		var secrets int
		for j, sec := range oc.ClientSecrets {
			if strings.TrimSpace(sec) == "" {
				continue
			}
			secrets++
			if err := checkSecret(sec); err != nil {
				errs = append(errs, fieldErr(fmt.Sprintf("%s.client_secrets[%d]", at, j), ErrInvalid, "%v", err))
			}
		}
		if secrets == 0 {
			errs = append(errs, fieldErr(at+".client_secrets", ErrRequired, "at least one secret is needed (generate one with `scimgate token`)"))
		}
		cidrs(at+".allowed_cidrs", oc.AllowedCIDRs)
	}
	if c.Auth.OAuthTokenTTL < time.Minute || c.Auth.OAuthTokenTTL > 24*time.Hour {
		errs = append(errs, fieldErr("auth.oauth_token_ttl", ErrInvalid, "%s: use between 1m and 24h (Entra expects 60 to 360 minutes)", c.Auth.OAuthTokenTTL))
	}
	cidrs("trusted_proxies", c.TrustedProxies)
	if c.ForwardedHeader != "" && !validHeaderName(c.ForwardedHeader) {
		errs = append(errs, fieldErr("forwarded_header", ErrInvalid, "%q is not a header name: use X-Forwarded-For (the default), Forwarded or the header your proxy sets, such as X-Real-IP", c.ForwardedHeader))
	}
	switch c.UnknownMembers {
	case "ignore", "reject":
	default:
		errs = append(errs, fieldErr("unknown_members", ErrInvalid, "%q: use ignore or reject", c.UnknownMembers))
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, fieldErr("tls", ErrInvalid, "set both cert_file and key_file, or neither"))
	}
	errs = append(errs, c.Limits.validate()...)
	return errors.Join(errs...)
}

// limitBounds are the bounds of every scim.limits key: a value outside them
// is refused at load (and by a reload), naming the key and its bounds.
// They keep a typo (max_depth: 10000, a body of 1 TB) from undoing the
// protection the limit exists for.
var limitBounds = []struct {
	key    string
	lo, hi float64
	get    func(*LimitsConfig) float64
	dur    bool // a duration: shown as one
}{
	{"max_body_bytes", 1 << 10, 64 << 20, func(l *LimitsConfig) float64 { return float64(l.MaxBodyBytes) }, false},
	{"max_page_size", 1, 10000, func(l *LimitsConfig) float64 { return float64(l.MaxPageSize) }, false},
	{"max_operations", 1, 10000, func(l *LimitsConfig) float64 { return float64(l.MaxOperations) }, false},
	{"max_members", 1, 100000, func(l *LimitsConfig) float64 { return float64(l.MaxMembers) }, false},
	{"max_filter_bytes", 64, 64 << 10, func(l *LimitsConfig) float64 { return float64(l.MaxFilterBytes) }, false},
	{"max_depth", 8, 64, func(l *LimitsConfig) float64 { return float64(l.MaxDepth) }, false},
	{"max_values", 1, 100000, func(l *LimitsConfig) float64 { return float64(l.MaxValues) }, false},
	{"max_members_per_list", 1, 1000000, func(l *LimitsConfig) float64 { return float64(l.MaxMembersPerList) }, false},
	{"max_resource_bytes", 4 << 10, 16 << 20, func(l *LimitsConfig) float64 { return float64(l.MaxResourceBytes) }, false},
	{"read_timeout", float64(100 * time.Millisecond), float64(time.Hour), func(l *LimitsConfig) float64 { return float64(l.ReadTimeout) }, true},
	{"write_timeout", float64(100 * time.Millisecond), float64(time.Hour), func(l *LimitsConfig) float64 { return float64(l.WriteTimeout) }, true},
	{"idle_timeout", float64(100 * time.Millisecond), float64(time.Hour), func(l *LimitsConfig) float64 { return float64(l.IdleTimeout) }, true},
	{"max_connections", 1, 100000, func(l *LimitsConfig) float64 { return float64(l.MaxConnections) }, false},
	{"rate_per_second", 0, 100000, func(l *LimitsConfig) float64 { return l.RatePerSecond }, false},
	{"burst", 0, 1000000, func(l *LimitsConfig) float64 { return float64(l.Burst) }, false},
	{"token_rate_per_second", 0.001, 1000, func(l *LimitsConfig) float64 { return l.TokenRatePerSecond }, false},
	{"token_burst", 1, 10000, func(l *LimitsConfig) float64 { return float64(l.TokenBurst) }, false},
}

// validate checks every limit against limitBounds.
func (l *LimitsConfig) validate() []error {
	var errs []error
	for _, b := range limitBounds {
		v := b.get(l)
		if v >= b.lo && v <= b.hi {
			continue
		}
		show := func(f float64) string {
			if b.dur {
				return time.Duration(f).String()
			}
			return strconv.FormatFloat(f, 'f', -1, 64)
		}
		errs = append(errs, fieldErr("limits."+b.key, ErrInvalid, "%s is out of bounds: use a value between %s and %s", show(v), show(b.lo), show(b.hi)))
	}
	return errs
}

// HasCredentials reports whether any bearer token, Basic credential or
// OAuth client is set.
func (a AuthConfig) HasCredentials() bool {
	return len(Tokens(a.tokenStrings()...)) > 0 || len(a.Basic) > 0 || len(a.OAuthClients) > 0
}

func (a AuthConfig) tokenStrings() []string {
	out := make([]string, len(a.BearerTokens))
	for i, t := range a.BearerTokens {
		out[i] = t.Token
	}
	return out
}

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

// NonEmptyTokens drops tokens whose value is empty (an unset
// ${SCIMGATE_SCIM_TOKEN:-} expands to ""), returning nil when none is left.
func NonEmptyTokens(ts []BearerToken) []BearerToken {
	var out []BearerToken
	for _, t := range ts {
		if strings.TrimSpace(t.Token) != "" {
			out = append(out, t)
		}
	}
	return out
}

// SecretHash returns the "sha256:<hex>" form of a configured secret, written
// either as the secret itself or in that form, so two can be compared.
func SecretHash(s string) string {
	sum := hashSecret(s)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// validHeaderName reports whether s is an HTTP header field name (an RFC
// 9110 token).
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}
