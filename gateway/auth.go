package gateway

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/scimgate/scimgate/gateway/scim"
)

// authenticator checks SCIM credentials against hashes only.
type authenticator struct {
	bearer [][sha256.Size]byte
	basic  []basicHash
	header string // WWW-Authenticate challenge
}

type basicHash struct {
	user [sha256.Size]byte
	pass [sha256.Size]byte
}

func newAuthenticator(cfg AuthConfig) *authenticator {
	a := &authenticator{}
	var challenges []string
	for _, t := range cfg.BearerTokens {
		a.bearer = append(a.bearer, hashSecret(t))
	}
	if len(a.bearer) > 0 {
		challenges = append(challenges, `Bearer realm="scimgate"`)
	}
	for _, b := range cfg.Basic {
		a.basic = append(a.basic, basicHash{user: sha256.Sum256([]byte(b.Username)), pass: hashSecret(b.Password)})
	}
	if len(a.basic) > 0 {
		challenges = append(challenges, `Basic realm="scimgate", charset="UTF-8"`)
	}
	a.header = strings.Join(challenges, ", ")
	return a
}

// check returns a client key for rate limiting (a hash prefix of the
// credential, never the credential) and whether the request is authorised.
// Every configured credential is compared, in constant time, whatever
// matches first.
func (a *authenticator) check(r *http.Request) (string, bool) {
	scheme, cred, _ := strings.Cut(r.Header.Get(echo.HeaderAuthorization), " ")
	cred = strings.TrimSpace(cred)
	switch strings.ToLower(scheme) {
	case "bearer":
		sum := sha256.Sum256([]byte(cred))
		ok := 0
		for i := range a.bearer {
			ok |= subtle.ConstantTimeCompare(sum[:], a.bearer[i][:])
		}
		return clientKey(sum[:]), ok == 1
	case "basic":
		raw, err := base64.StdEncoding.DecodeString(cred)
		if err != nil {
			return "", false
		}
		user, pass, found := strings.Cut(string(raw), ":")
		if !found {
			return "", false
		}
		u, p := sha256.Sum256([]byte(user)), sha256.Sum256([]byte(pass))
		ok := 0
		for i := range a.basic {
			ok |= subtle.ConstantTimeCompare(u[:], a.basic[i].user[:]) & subtle.ConstantTimeCompare(p[:], a.basic[i].pass[:])
		}
		return clientKey(u[:]), ok == 1
	}
	return "", false
}

func clientKey(sum []byte) string { return base64.RawURLEncoding.EncodeToString(sum[:6]) }

// requireAuth rejects unauthenticated requests with a SCIM 401 and a
// WWW-Authenticate challenge (RFC 7644 §3.12; Okta's SPEC test 11).
func (s *Server) requireAuth(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		key, ok := s.auth.check(c.Request())
		if !ok {
			c.Response().Header().Set(echo.HeaderWWWAuthenticate, s.auth.header)
			refuseBody(c.Response())
			detail := "authorization failure: send the scimgate token as \"Authorization: Bearer <token>\""
			if len(s.auth.bearer) == 0 {
				detail = "authorization failure: send the configured key and secret with HTTP Basic authentication"
			}
			if c.Request().Header.Get(echo.HeaderAuthorization) != "" {
				detail = "authorization failure: the credentials presented are not valid for this gateway; check the token in the IdP's provisioning settings"
			}
			return scim.Errorf(http.StatusUnauthorized, "", "%s", detail)
		}
		c.Set(ctxClientKey, key)
		return next(c)
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
