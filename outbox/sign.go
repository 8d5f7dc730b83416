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

// Standard Webhooks (https://www.standardwebhooks.com/) header names.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// verifyTolerance bounds the age of a delivery a receiver accepts.
const verifyTolerance = 5 * time.Minute

// NewSecret returns a new signing secret: "whsec_" and 24 random bytes.
func NewSecret() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "whsec_" + base64.StdEncoding.EncodeToString(b), nil
}

func decodeSecret(s string) ([]byte, error) {
	raw, ok := strings.CutPrefix(s, "whsec_")
	if !ok {
		return nil, errors.New("a signing secret starts with whsec_ (leave it empty to have one generated)")
	}
	key, err := base64.StdEncoding.DecodeString(raw)
	if err != nil || len(key) < 16 {
		return nil, errors.New("the part after whsec_ must be base64 of at least 16 bytes")
	}
	return key, nil
}

// Sign returns the webhook-signature header value for one delivery: one
// "v1,<base64 HMAC-SHA256>" per secret, space-separated, over
// "id.timestamp.body".
func Sign(secrets []string, id string, ts time.Time, body []byte) (string, error) {
	sigs := make([]string, 0, len(secrets))
	for _, s := range secrets {
		key, err := decodeSecret(s)
		if err != nil {
			return "", err
		}
		sigs = append(sigs, "v1,"+base64.StdEncoding.EncodeToString(mac(key, id, ts.Unix(), body)))
	}
	return strings.Join(sigs, " "), nil
}

func mac(key []byte, id string, ts int64, body []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(id))
	h.Write([]byte{'.'})
	h.Write([]byte(strconv.FormatInt(ts, 10)))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

// Verify checks a delivery's Standard Webhooks headers against any of
// secrets: the timestamp must be within five minutes of now, and one v1
// signature must match (compared in constant time).
func Verify(secrets []string, h http.Header, body []byte, now time.Time) error {
	id, tsText, sigs := h.Get(HeaderID), h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	if id == "" || tsText == "" || sigs == "" {
		return errors.New("missing webhook-id, webhook-timestamp or webhook-signature header")
	}
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return fmt.Errorf("webhook-timestamp %q is not unix seconds", tsText)
	}
	if d := now.Sub(time.Unix(ts, 0)); d > verifyTolerance || d < -verifyTolerance {
		return fmt.Errorf("webhook-timestamp is %s away from now (tolerance %s)", d.Round(time.Second), verifyTolerance)
	}
	for _, s := range secrets {
		key, err := decodeSecret(s)
		if err != nil {
			return err
		}
		want := mac(key, id, ts, body)
		for _, sig := range strings.Fields(sigs) {
			v, b64, ok := strings.Cut(sig, ",")
			if !ok || v != "v1" {
				continue
			}
			got, err := base64.StdEncoding.DecodeString(b64)
			if err == nil && hmac.Equal(got, want) {
				return nil
			}
		}
	}
	return errors.New("no webhook-signature matches")
}
