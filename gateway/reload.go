package gateway

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
)

// diffConfig describes what changed from old to next in the parts Reload
// applies, never quoting a secret: credentials are counted, and a changed
// secret is reported as changed.
func diffConfig(old, next *Config) []string {
	var out []string
	count := func(what string, a, b int, same bool) {
		switch {
		case a != b:
			out = append(out, fmt.Sprintf("scim.auth.%s: %d → %d", what, a, b))
		case !same:
			out = append(out, fmt.Sprintf("scim.auth.%s: changed (%d)", what, b))
		}
	}
	count("bearer_tokens", len(Tokens(old.Auth.tokenStrings()...)), len(Tokens(next.Auth.tokenStrings()...)),
		reflect.DeepEqual(old.Auth.BearerTokens, next.Auth.BearerTokens))
	count("basic", len(old.Auth.Basic), len(next.Auth.Basic), reflect.DeepEqual(old.Auth.Basic, next.Auth.Basic))
	count("oauth_clients", len(old.Auth.OAuthClients), len(next.Auth.OAuthClients),
		reflect.DeepEqual(old.Auth.OAuthClients, next.Auth.OAuthClients))
	if old.Auth.OAuthTokenTTL != next.Auth.OAuthTokenTTL {
		out = append(out, fmt.Sprintf("scim.auth.oauth_token_ttl: %s → %s", old.Auth.OAuthTokenTTL, next.Auth.OAuthTokenTTL))
	}
	if !slices.Equal(old.TrustedProxies, next.TrustedProxies) {
		out = append(out, fmt.Sprintf("scim.trusted_proxies: %s → %s", list(old.TrustedProxies), list(next.TrustedProxies)))
	}
	if old.ForwardedHeader != next.ForwardedHeader {
		out = append(out, fmt.Sprintf("scim.forwarded_header: %q → %q", old.ForwardedHeader, next.ForwardedHeader))
	}
	ov, nv := reflect.ValueOf(old.Limits), reflect.ValueOf(next.Limits)
	for i := range ov.NumField() {
		name, _, _ := strings.Cut(ov.Type().Field(i).Tag.Get("yaml"), ",")
		if listenerLimits[name] {
			continue // bound to the listener: the application reports them as needing a restart
		}
		if a, b := ov.Field(i).Interface(), nv.Field(i).Interface(); a != b {
			out = append(out, fmt.Sprintf("scim.limits.%s: %v → %v", name, a, b))
		}
	}
	for _, f := range []struct{ name, a, b string }{
		{"public_url", old.PublicURL, next.PublicURL},
		{"patch_response", old.PatchResponse, next.PatchResponse},
	} {
		if f.a != f.b {
			out = append(out, fmt.Sprintf("scim.%s: %q → %q", f.name, f.a, f.b))
		}
	}
	for _, f := range []struct{ name, a, b string }{
		{"listen", old.Listen, next.Listen},
		{"base_path", old.BasePath, next.BasePath},
		{"unknown_members", old.UnknownMembers, next.UnknownMembers},
	} {
		if f.a != f.b {
			out = append(out, fmt.Sprintf("scim.%s: %q → %q is not reloaded: restart scimgate to apply it", f.name, f.a, f.b))
		}
	}
	return out
}

// listenerLimits are the limits the http.Server and the listener hold;
// Reload does not apply them.
var listenerLimits = map[string]bool{"read_timeout": true, "write_timeout": true, "idle_timeout": true, "max_connections": true}

func list(l []string) string { return "[" + strings.Join(l, ", ") + "]" }
