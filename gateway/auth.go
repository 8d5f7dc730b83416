package gateway

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"net/textproto"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/scimgate/scimgate/gateway/scim"
)

// authenticator checks SCIM credentials against hashes only. It is
// immutable; a reload swaps in a new one.
type authenticator struct {
	bearer  []bearerHash
	basic   []basicHash
	clients []*oauthClient
	byID    map[string]*oauthClient
	trusted []netip.Prefix
	fwd     string // the header naming the client behind a trusted proxy
	key     []byte // signs access tokens
	ttl     time.Duration
	header  string // WWW-Authenticate challenge
	now     func() time.Time
}

type bearerHash struct {
	sum   [sha256.Size]byte
	cidrs []netip.Prefix
}

type basicHash struct {
	user  [sha256.Size]byte
	pass  [sha256.Size]byte
	cidrs []netip.Prefix
}

type oauthClient struct {
	id      string
	secrets [][sha256.Size]byte
	// incs are the secrets' incarnations (see secretIncarnations), in the
	// order of secrets.
	incs  []string
	cidrs []netip.Prefix
}

// secretKey names one secret of one client, for secretIncarnations.
type secretKey struct {
	client string
	sum    [sha256.Size]byte
}

// secretIncarnations gives each OAuth client secret an incarnation, which
// an access token's secret fingerprint includes. The secrets of the
// configuration the server starts with have the empty one (so tokens
// survive a restart); a secret a reload adds gets a random one. A secret
// removed and then added back is therefore a new incarnation, and the
// tokens issued under it before its removal stay revoked. The application
// keeps them across restarts (Server.SetSecretIncarnations): a secret the
// last run did not have — added while it was stopped, or removed by a
// reload and added back before the restart — gets a random one too.
type secretIncarnations map[secretKey]string

// restore returns inc with each secret's saved incarnation (saved is keyed
// by name), a random one for a secret the last run did not have, and inc's
// own (the empty one) for all when nothing was saved (the first start).
func (inc secretIncarnations) restore(saved map[string]string, name func(secretKey) string) secretIncarnations {
	out := secretIncarnations{}
	for k, v := range inc {
		if saved != nil {
			var ok bool
			if v, ok = saved[name(k)]; !ok {
				v = newIncarnation()
			}
		}
		out[k] = v
	}
	return out
}

// export is inc keyed by name, for saving.
func (inc secretIncarnations) export(name func(secretKey) string) map[string]string {
	out := make(map[string]string, len(inc))
	for k, v := range inc {
		out[name(k)] = v
	}
	return out
}

func newIncarnation() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// next returns the incarnations for cfg's secrets: kept for a secret in
// inc, random for a new one (the empty one for all when inc is nil: the
// first configuration).
func (inc secretIncarnations) next(cfg Config) secretIncarnations {
	out := secretIncarnations{}
	for _, oc := range cfg.Auth.OAuthClients {
		for _, s := range oc.ClientSecrets {
			if strings.TrimSpace(s) == "" {
				continue
			}
			k := secretKey{client: oc.ClientID, sum: hashSecret(s)}
			v, ok := inc[k]
			if !ok && inc != nil {
				v = newIncarnation()
			}
			out[k] = v
		}
	}
	return out
}

// accessTokenPrefix starts every access token the token endpoint issues;
// static tokens (base64url, from `scimgate token`) never contain a '.'.
const accessTokenPrefix = "sgat_"

func newAuthenticator(cfg Config, key []byte, inc secretIncarnations) *authenticator {
	a := &authenticator{byID: map[string]*oauthClient{}, trusted: prefixes(cfg.TrustedProxies),
		fwd: textproto.CanonicalMIMEHeaderKey(cfg.ForwardedHeader), key: key,
		ttl: cfg.Auth.OAuthTokenTTL, now: time.Now}
	if a.ttl <= 0 {
		a.ttl = time.Hour
	}
	var challenges []string
	for _, t := range cfg.Auth.BearerTokens {
		if strings.TrimSpace(t.Token) != "" {
			a.bearer = append(a.bearer, bearerHash{sum: hashSecret(t.Token), cidrs: prefixes(t.AllowedCIDRs)})
		}
	}
	for _, oc := range cfg.Auth.OAuthClients {
		c := &oauthClient{id: oc.ClientID, cidrs: prefixes(oc.AllowedCIDRs)}
		for _, s := range oc.ClientSecrets {
			if strings.TrimSpace(s) != "" {
				sum := hashSecret(s)
				c.secrets = append(c.secrets, sum)
				c.incs = append(c.incs, inc[secretKey{client: oc.ClientID, sum: sum}])
			}
		}
		a.clients = append(a.clients, c)
		a.byID[c.id] = c
	}
	if len(a.bearer) > 0 || len(a.clients) > 0 {
		challenges = append(challenges, `Bearer realm="scimgate"`)
	}
	for _, b := range cfg.Auth.Basic {
		a.basic = append(a.basic, basicHash{user: sha256.Sum256([]byte(b.Username)), pass: hashSecret(b.Password), cidrs: prefixes(b.AllowedCIDRs)})
	}
	if len(a.basic) > 0 {
		challenges = append(challenges, `Basic realm="scimgate", charset="UTF-8"`)
	}
	a.header = strings.Join(challenges, ", ")
	return a
}

// authFailure says why a request was not authorised.
type authFailure int

const (
	authOK        authFailure = iota
	authMissing               // no credentials presented
	authInvalid               // credentials presented that are not valid
	authExpired               // an access token past its expiry
	authForbidden             // a valid credential used from outside its allowed_cidrs
)

// check returns a client key for rate limiting (a hash prefix of the
// credential, never the credential) and why the request is not
// authorised, if it is not. Every configured credential of the presented
// kind is compared, in constant time, whatever matches first.
func (a *authenticator) check(r *http.Request) (string, authFailure) {
	scheme, cred, _ := strings.Cut(r.Header.Get(echo.HeaderAuthorization), " ")
	cred = strings.TrimSpace(cred)
	switch strings.ToLower(scheme) {
	case "bearer":
		if strings.HasPrefix(cred, accessTokenPrefix) {
			return a.checkAccessToken(r, cred)
		}
		sum := sha256.Sum256([]byte(cred))
		match := -1
		for i := range a.bearer {
			if subtle.ConstantTimeCompare(sum[:], a.bearer[i].sum[:]) == 1 {
				match = i
			}
		}
		if match < 0 {
			return "", authInvalid
		}
		return clientKey(sum[:]), a.where(r, a.bearer[match].cidrs)
	case "basic":
		raw, err := base64.StdEncoding.DecodeString(cred)
		if err != nil {
			return "", authInvalid
		}
		user, pass, found := strings.Cut(string(raw), ":")
		if !found {
			return "", authInvalid
		}
		u, p := sha256.Sum256([]byte(user)), sha256.Sum256([]byte(pass))
		match := -1
		for i := range a.basic {
			if subtle.ConstantTimeCompare(u[:], a.basic[i].user[:])&subtle.ConstantTimeCompare(p[:], a.basic[i].pass[:]) == 1 {
				match = i
			}
		}
		if match < 0 {
			return "", authInvalid
		}
		return clientKey(u[:]), a.where(r, a.basic[match].cidrs)
	case "":
		return "", authMissing
	}
	return "", authInvalid
}

// client is the address r comes from (see clientAddress).
func (a *authenticator) client(r *http.Request) netip.Addr { return clientAddress(r, a.trusted, a.fwd) }

// where checks the request's address against a credential's allowlist.
func (a *authenticator) where(r *http.Request, cidrs []netip.Prefix) authFailure {
	if len(cidrs) == 0 || allowed(cidrs, a.client(r)) {
		return authOK
	}
	return authForbidden
}

// accessToken is the signed payload of an access token: the client, the
// expiry, a fingerprint of the secret it authenticated with (and of that
// secret's incarnation), so that removing the client or that secret from
// the configuration revokes it, and a random nonce, so that no two tokens
// are the same (two requests in the same second get different tokens).
type accessToken struct {
	Client string `json:"c"`
	Exp    int64  `json:"e"`
	Secret string `json:"f"`
	Nonce  string `json:"n"`
}

// issue returns a new access token for client c, which authenticated with
// its i-th secret.
func (a *authenticator) issue(c *oauthClient, i int) (string, time.Duration) {
	nonce := make([]byte, 16)
	_, _ = rand.Read(nonce)
	payload, _ := json.Marshal(accessToken{Client: c.id, Exp: a.now().Add(a.ttl).Unix(),
		Secret: a.fingerprint(c.secrets[i], c.incs[i]), Nonce: base64.RawURLEncoding.EncodeToString(nonce)})
	p := base64.RawURLEncoding.EncodeToString(payload)
	return accessTokenPrefix + p + "." + base64.RawURLEncoding.EncodeToString(a.mac("token", []byte(p))), a.ttl
}

func (a *authenticator) mac(purpose string, data []byte) []byte {
	m := hmac.New(sha256.New, a.key)
	m.Write([]byte(purpose))
	m.Write([]byte{0})
	m.Write(data)
	return m.Sum(nil)
}

func (a *authenticator) fingerprint(secret [sha256.Size]byte, inc string) string {
	return base64.RawURLEncoding.EncodeToString(a.mac("secret", append(secret[:], inc...))[:9])
}

func (a *authenticator) checkAccessToken(r *http.Request, tok string) (string, authFailure) {
	p, sig, ok := strings.Cut(strings.TrimPrefix(tok, accessTokenPrefix), ".")
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if !ok || err != nil || !hmac.Equal(got, a.mac("token", []byte(p))) {
		return "", authInvalid
	}
	raw, err := base64.RawURLEncoding.DecodeString(p)
	var at accessToken
	if err != nil || json.Unmarshal(raw, &at) != nil {
		return "", authInvalid
	}
	if a.now().Unix() >= at.Exp {
		return "", authExpired
	}
	c := a.byID[at.Client]
	if c == nil {
		return "", authInvalid // the client was removed: its tokens are revoked
	}
	current := false
	for i, s := range c.secrets {
		current = current || subtle.ConstantTimeCompare([]byte(a.fingerprint(s, c.incs[i])), []byte(at.Secret)) == 1
	}
	if !current {
		return "", authInvalid // the secret it was issued for was removed
	}
	sum := sha256.Sum256([]byte("oauth client\x00" + c.id))
	return clientKey(sum[:]), a.where(r, c.cidrs)
}

// authenticateClient checks OAuth client credentials (RFC 6749 §2.3.1) and
// returns the client, the index of the secret that matched and the hash of
// the secret presented.
func (a *authenticator) authenticateClient(id, secret string) (*oauthClient, int, [sha256.Size]byte, bool) {
	sum := sha256.Sum256([]byte(secret))
	c := a.byID[id]
	if c == nil {
		return nil, -1, sum, false
	}
	match := -1
	for i := range c.secrets {
		if subtle.ConstantTimeCompare(sum[:], c.secrets[i][:]) == 1 {
			match = i
		}
	}
	if match < 0 {
		return nil, -1, sum, false
	}
	return c, match, sum, true
}

func clientKey(sum []byte) string { return base64.RawURLEncoding.EncodeToString(sum[:6]) }

// requireAuth rejects unauthenticated requests with a SCIM 401 and a
// WWW-Authenticate challenge (RFC 7644 §3.12; Okta's SPEC test 11; RFC
// 6750 §3.1 error codes for bearer tokens), and credentials used from an
// address outside their allowed_cidrs with 403.
func (s *Server) requireAuth(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		auth := s.auth.Load()
		key, failure := auth.check(c.Request())
		switch failure {
		case authOK:
			c.Set(ctxClientKey, key)
			return next(c)
		case authForbidden:
			refuseBody(c.Response())
			return scim.Errorf(http.StatusForbidden, "",
				"this credential may be used only from its allowed_cidrs, and this request came from %s; add the identity provider's egress address to the list (see docs/okta.md or docs/entra.md)",
				auth.client(c.Request()))
		}
		challenge := auth.header
		detail := "authorization failure: send the scimgate token as \"Authorization: Bearer <token>\""
		if len(auth.bearer) == 0 && len(auth.clients) == 0 {
			detail = "authorization failure: send the configured key and secret with HTTP Basic authentication"
		}
		if failure == authInvalid {
			detail = "authorization failure: the credentials presented are not valid for this gateway; check the token in the IdP's provisioning settings"
		}
		if scheme, _, _ := strings.Cut(c.Request().Header.Get(echo.HeaderAuthorization), " "); strings.EqualFold(scheme, "bearer") {
			desc := "the access token is not valid"
			if failure == authExpired {
				desc = "the access token expired"
				detail = "authorization failure: the access token expired; request a new one from the token endpoint"
			}
			challenge = strings.Replace(challenge, `Bearer realm="scimgate"`,
				fmt.Sprintf(`Bearer realm="scimgate", error="invalid_token", error_description=%q`, desc), 1)
		}
		c.Response().Header().Set(echo.HeaderWWWAuthenticate, challenge)
		refuseBody(c.Response())
		return scim.Errorf(http.StatusUnauthorized, "", "%s", detail)
	}
}

const ctxClientKey = "scimgate.client"

// refuseBody makes the server close the connection after this response
// instead of reading the rest of the request body for keep-alive (net/http
// drains up to 256 KiB): an unauthenticated client may be trickling a body
// to hold a goroutine and a descriptor.
func refuseBody(w http.ResponseWriter) {
	w.Header().Set("Connection", "close")
	_ = http.NewResponseController(w).SetReadDeadline(time.Now())
}
