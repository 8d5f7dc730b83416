package outbox

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Standard Webhooks header names (https://www.standardwebhooks.com/).
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// Tolerance is how far webhook-timestamp may be from the verifier's clock.
const Tolerance = 5 * time.Minute

const secretPrefix = "whsec_"

// Verification errors returned by Verify.
var (
	ErrMissingHeader   = errors.New("outbox: missing webhook header")
	ErrTimestamp       = errors.New("outbox: webhook timestamp outside tolerance")
	ErrNoMatch         = errors.New("outbox: no webhook signature matches")
	ErrInvalidSecret   = errors.New("outbox: signing secret is not whsec_ followed by base64")
	errNoSecrets       = errors.New("outbox: no signing secrets")
	errBadTimestampFmt = fmt.Errorf("%w: not unix seconds", ErrTimestamp)
)

// NewSecret returns a fresh signing secret: "whsec_" and the base64 of 24
// random bytes.
func NewSecret() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("outbox: new secret: %w", err)
	}
	return secretPrefix + base64.StdEncoding.EncodeToString(b), nil
}

// decodeSecret returns the HMAC key of a secret: the base64-decoded part after
// "whsec_" (the prefix is optional, as in the Standard Webhooks libraries).
func decodeSecret(s string) ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, secretPrefix))
	if err != nil || len(k) == 0 {
		return nil, ErrInvalidSecret
	}
	return k, nil
}

func decodeSecrets(secrets []string) ([][]byte, error) {
	if len(secrets) == 0 {
		return nil, errNoSecrets
	}
	keys := make([][]byte, len(secrets))
	for i, s := range secrets {
		k, err := decodeSecret(s)
		if err != nil {
			return nil, fmt.Errorf("secret %d: %w", i, err)
		}
		keys[i] = k
	}
	return keys, nil
}

// Sign returns the webhook-signature header value for a message: for each
// secret, "v1," and the base64 HMAC-SHA256 of id + "." + unix seconds of ts +
// "." + body, separated by spaces.
func Sign(secrets []string, id string, ts time.Time, body []byte) (string, error) {
	keys, err := decodeSecrets(secrets)
	if err != nil {
		return "", err
	}
	return signKeys(keys, id, ts.Unix(), body), nil
}

// Signer signs messages with a target's decoded secrets, as Sign does;
// a transport builds one per target. The zero Signer has no secrets.
type Signer struct{ keys [][]byte }

// NewSigner decodes secrets (see Sign); it fails without a secret or on
// one that is not whsec_ followed by base64, never echoing it.
func NewSigner(secrets []string) (Signer, error) {
	keys, err := decodeSecrets(secrets)
	if err != nil {
		return Signer{}, err
	}
	return Signer{keys: keys}, nil
}

// Empty reports whether s has no secret.
func (s Signer) Empty() bool { return len(s.keys) == 0 }

// Sign returns the webhook-signature header value of a message whose
// webhook-timestamp is ts (unix seconds).
func (s Signer) Sign(id string, ts int64, body []byte) string { return signKeys(s.keys, id, ts, body) }

func signKeys(keys [][]byte, id string, ts int64, body []byte) string {
	var sb strings.Builder
	for i, k := range keys {
		if i > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString("v1,")
		sb.WriteString(base64.StdEncoding.EncodeToString(mac(k, id, ts, body)))
	}
	return sb.String()
}

func mac(key []byte, id string, ts int64, body []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(id))
	h.Write([]byte{'.'})
	h.Write(strconv.AppendInt(nil, ts, 10))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

// Verify checks the webhook-id, webhook-timestamp and webhook-signature headers
// of a received webhook against any of secrets. The timestamp must be within
// Tolerance of now, and at least one "v1," signature must match one secret
// (compared in constant time). It returns ErrMissingHeader, ErrTimestamp,
// ErrNoMatch or ErrInvalidSecret.
func Verify(secrets []string, h http.Header, body []byte, now time.Time) error {
	keys, err := decodeSecrets(secrets)
	if err != nil {
		return err
	}
	id, tsStr, sigs := h.Get(HeaderID), h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	for name, v := range map[string]string{HeaderID: id, HeaderTimestamp: tsStr, HeaderSignature: sigs} {
		if v == "" {
			return fmt.Errorf("%w: %s", ErrMissingHeader, name)
		}
	}
	ts, err := strconv.ParseInt(tsStr, 10, 64)
	if err != nil {
		return errBadTimestampFmt
	}
	if d := now.Sub(time.Unix(ts, 0)); d > Tolerance || d < -Tolerance {
		return fmt.Errorf("%w: %s off", ErrTimestamp, d.Round(time.Second))
	}
	for _, k := range keys {
		want := mac(k, id, ts, body)
		for _, s := range strings.Fields(sigs) {
			b64, ok := strings.CutPrefix(s, "v1,")
			if !ok {
				continue // other schemes (v1a, …) are not ours
			}
			got, err := base64.StdEncoding.DecodeString(b64)
			if err == nil && hmac.Equal(got, want) {
				return nil
			}
		}
	}
	return ErrNoMatch
}
