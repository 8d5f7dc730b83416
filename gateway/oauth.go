package gateway

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
)

// The token endpoint, POST {base_path}/oauth/token: the OAuth 2.0 client
// credentials grant (RFC 6749 §4.4) for identity providers that
// authenticate that way (Entra's "OAuth2 Client Credentials Grant").
//
// Access tokens are self-contained and signed (HMAC-SHA256) with a key the
// application keeps in its data directory, so they survive a restart; one
// names its client, its expiry, a fingerprint of the secret the client
// authenticated with (and of that secret's incarnation: a secret removed
// and added back is a new one) and a random nonce, so removing the client
// or that secret from the configuration revokes it at once, and no two
// tokens are alike. Nothing is stored per token.

// oauthError is an RFC 6749 §5.2 error response.
type oauthError struct {
	Code        string `json:"error"`
	Description string `json:"error_description"`
}

func writeOAuth(c echo.Context, status int, v any) error {
	h := c.Response().Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.Blob(status, "application/json;charset=UTF-8", b)
}

func oauthFail(c echo.Context, status int, code, desc string) error {
	if status == http.StatusUnauthorized {
		c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Basic realm="scimgate-oauth", charset="UTF-8"`)
		refuseBody(c.Response())
	}
	return writeOAuth(c, status, oauthError{Code: code, Description: desc})
}

func (s *Server) tokenHandler(c echo.Context) error {
	r := c.Request()
	auth := s.auth.Load()
	addr := auth.client(r)
	if wait := s.tokenLimiter.Load().reserve(addr.String(), time.Now()); wait > 0 {
		c.Response().Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
		return writeOAuth(c, http.StatusTooManyRequests, oauthError{Code: "slow_down",
			Description: "too many token requests from this address; a token lasts " + auth.ttl.String() + ": reuse it"})
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get(echo.HeaderContentType)); mt != "application/x-www-form-urlencoded" {
		return oauthFail(c, http.StatusBadRequest, "invalid_request", "send the request form-encoded (Content-Type: application/x-www-form-urlencoded), RFC 6749 §4.4.2")
	}
	body, err := readLimited(r, 64<<10)
	if err != nil {
		return oauthFail(c, http.StatusBadRequest, "invalid_request", "could not read the request body: "+err.Error())
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return oauthFail(c, http.StatusBadRequest, "invalid_request", "the body is not valid form encoding")
	}
	for k, v := range form {
		if len(v) > 1 {
			return oauthFail(c, http.StatusBadRequest, "invalid_request", "parameter "+k+" is repeated (RFC 6749 §3.2)")
		}
	}
	// Client authentication (RFC 6749 §2.3.1): HTTP Basic with the form-
	// encoded id and secret, or client_id and client_secret in the body.
	id, secret, viaHeader := "", "", false
	if h := r.Header.Get(echo.HeaderAuthorization); h != "" {
		u, p, ok := r.BasicAuth()
		if !ok {
			return oauthFail(c, http.StatusUnauthorized, "invalid_client", "the Authorization header is not HTTP Basic with the client id and secret")
		}
		var err1, err2 error
		id, err1 = url.QueryUnescape(u)
		secret, err2 = url.QueryUnescape(p)
		if err1 != nil || err2 != nil {
			return oauthFail(c, http.StatusUnauthorized, "invalid_client", "the client id or secret in the Authorization header is not form-encoded")
		}
		viaHeader = true
	}
	if form.Has("client_secret") || form.Has("client_id") && !viaHeader {
		if viaHeader && form.Has("client_secret") {
			return oauthFail(c, http.StatusBadRequest, "invalid_request", "authenticate the client one way: the Authorization header or client_id/client_secret, not both")
		}
		id, secret = form.Get("client_id"), form.Get("client_secret")
	}
	if viaHeader && form.Has("client_id") && form.Get("client_id") != id {
		return oauthFail(c, http.StatusBadRequest, "invalid_request", "client_id in the body differs from the one in the Authorization header")
	}
	switch gt := form.Get("grant_type"); gt {
	case "client_credentials":
	case "":
		return oauthFail(c, http.StatusBadRequest, "invalid_request", "grant_type is missing: send grant_type=client_credentials")
	default:
		return oauthFail(c, http.StatusBadRequest, "unsupported_grant_type", "only grant_type=client_credentials is supported")
	}
	if id == "" {
		return oauthFail(c, http.StatusUnauthorized, "invalid_client", "no client credentials: send the client id and secret with HTTP Basic or as client_id and client_secret")
	}
	client, i, sum, ok := auth.authenticateClient(id, secret)
	if !ok {
		s.logger.Warn("token request refused: invalid client credentials", "client_key", clientKey(sum[:]))
		return oauthFail(c, http.StatusUnauthorized, "invalid_client", "the client id or secret is not valid (check scim.auth.oauth_clients)")
	}
	if !allowed(client.cidrs, addr) {
		// RFC 6749 §5.2: unauthorized_client is a 400, like every error of
		// the token endpoint but invalid_client.
		return writeOAuth(c, http.StatusBadRequest, oauthError{Code: "unauthorized_client",
			Description: "this client may request tokens only from its allowed_cidrs, and this request came from " + addr.String()})
	}
	token, ttl := auth.issue(client, i)
	resp := map[string]any{"access_token": token, "token_type": "Bearer", "expires_in": int(ttl.Seconds())}
	if form.Has("scope") {
		resp["scope"] = "scim" // the one scope there is (RFC 6749 §3.3: say so when it differs)
	}
	return writeOAuth(c, http.StatusOK, resp)
}

// readLimited reads the body, refusing one longer than n bytes.
func readLimited(r *http.Request, n int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r.Body, n+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > n {
		return nil, fmt.Errorf("the body is larger than %d bytes", n)
	}
	return b, nil
}

// newTokenKey returns a random signing key: access tokens then last only
// as long as the process (the application sets a persisted one).
func newTokenKey() []byte {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return b
}

// tokenMethodNotAllowed answers other methods on the token endpoint.
func tokenMethodNotAllowed(c echo.Context) error {
	c.Response().Header().Set(echo.HeaderAllow, http.MethodPost)
	return writeOAuth(c, http.StatusMethodNotAllowed, oauthError{Code: "invalid_request", Description: "use POST " + strings.TrimSuffix(c.Request().URL.Path, "/")})
}
