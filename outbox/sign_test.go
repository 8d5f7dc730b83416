package outbox

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The example from the Standard Webhooks reference libraries' test suites.
func TestSignSpecVector(t *testing.T) {
	got, err := Sign([]string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, "msg_p5jXN8AQM9LWM0D4loKWxJek",
		time.Unix(1614265330, 0), []byte(`{"test": 2432232314}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Errorf("Sign = %q, want %q", got, want)
	}
}

func signedHeader(t *testing.T, secrets []string, id string, ts time.Time, body []byte) http.Header {
	t.Helper()
	sig, err := Sign(secrets, id, ts, body)
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	h.Set("webhook-id", id)
	h.Set("webhook-timestamp", strconv.FormatInt(ts.Unix(), 10))
	h.Set("webhook-signature", sig)
	return h
}

func TestSignIndependentVerifier(t *testing.T) {
	for range 20 {
		secret := mustSecret(t)
		body := []byte(`{"id":"evt_x","data":{"user":{"id":"2819c223"}}}`)
		h := signedHeader(t, []string{secret}, newEventID(), time.Now(), body)
		if err := specVerify(secret, h, body); err != nil {
			t.Fatalf("specVerify: %v", err)
		}
	}
}

func TestSignRotation(t *testing.T) {
	old, cur := mustSecret(t), mustSecret(t)
	body := []byte(`{}`)
	h := signedHeader(t, []string{old, cur}, "evt_1", time.Now(), body)
	if n := len(strings.Fields(h.Get("webhook-signature"))); n != 2 {
		t.Fatalf("signature header has %d signatures, want 2", n)
	}
	for _, s := range []string{old, cur} {
		if err := specVerify(s, h, body); err != nil {
			t.Errorf("specVerify with one of two secrets: %v", err)
		}
		if err := Verify([]string{s}, h, body, time.Now()); err != nil {
			t.Errorf("Verify with one of two secrets: %v", err)
		}
	}
}

func TestVerify(t *testing.T) {
	secret, other := mustSecret(t), mustSecret(t)
	now := time.Now()
	body := []byte(`{"id":"evt_1","type":"user.created"}`)
	h := signedHeader(t, []string{secret}, "evt_1", now, body)

	if err := Verify([]string{secret}, h, body, now); err != nil {
		t.Fatalf("round trip: %v", err)
	}
	if err := Verify([]string{other, secret}, h, body, now.Add(4*time.Minute)); err != nil {
		t.Errorf("second secret, 4 min later: %v", err)
	}
	tests := []struct {
		name    string
		secrets []string
		h       http.Header
		body    []byte
		now     time.Time
		want    error
	}{
		{"tamperedBody", []string{secret}, h, []byte(`{"id":"evt_1","type":"user.deleted"}`), now, ErrNoMatch},
		{"wrongSecret", []string{other}, h, body, now, ErrNoMatch},
		{"oldTimestamp", []string{secret}, h, body, now.Add(6 * time.Minute), ErrTimestamp},
		{"futureTimestamp", []string{secret}, h, body, now.Add(-6 * time.Minute), ErrTimestamp},
		{"missingID", []string{secret}, without(h, "webhook-id"), body, now, ErrMissingHeader},
		{"missingSignature", []string{secret}, without(h, "webhook-signature"), body, now, ErrMissingHeader},
		{"tamperedID", []string{secret}, with(h, "webhook-id", "evt_2"), body, now, ErrNoMatch},
		{"badSecret", []string{"whsec_!!"}, h, body, now, ErrInvalidSecret},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := Verify(tt.secrets, tt.h, tt.body, tt.now); !errors.Is(err, tt.want) {
				t.Errorf("Verify = %v, want %v", err, tt.want)
			}
		})
	}
}

func without(h http.Header, k string) http.Header {
	h = h.Clone()
	h.Del(k)
	return h
}

func with(h http.Header, k, v string) http.Header {
	h = h.Clone()
	h.Set(k, v)
	return h
}

func TestNewSecret(t *testing.T) {
	a, b := mustSecret(t), mustSecret(t)
	if a == b {
		t.Fatal("two secrets are equal")
	}
	raw, ok := strings.CutPrefix(a, "whsec_")
	if !ok {
		t.Fatalf("NewSecret = %q, want whsec_ prefix", a)
	}
	if k, err := base64.StdEncoding.DecodeString(raw); err != nil || len(k) != 24 {
		t.Errorf("key = %d bytes, %v; want 24 bytes", len(k), err)
	}
}
