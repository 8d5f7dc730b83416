package outbox

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Helpers the stream transports (outbox/nats, outbox/kafka) share; they
// may import only the engine, so the engine holds them.

// InvalidField is a *FieldError at field wrapping ErrInvalid.
func InvalidField(field, format string, args ...any) error {
	return &FieldError{Field: field, Err: fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))}
}

// ReadSecret returns value, or the content of file without its trailing
// line break when file is set. The error names the key, never the value.
func ReadSecret(value, file, field string) (string, error) {
	if file == "" {
		return value, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%s: %w", field, err)
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", fmt.Errorf("%s: %s is empty", field, file)
	}
	return s, nil
}

// SplitList splits entries that hold several comma-separated values and
// drops empty ones.
func SplitList(in []string) []string {
	var out []string
	for _, e := range in {
		for _, v := range strings.Split(e, ",") {
			if v = strings.TrimSpace(v); v != "" {
				out = append(out, v)
			}
		}
	}
	return out
}

// TLSAuthError reports whether err is a certificate verification failure
// or a TLS alert from the server: every event would fail the same way until
// the configuration is fixed.
func TLSAuthError(err error) bool {
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	var ve *tls.CertificateVerificationError
	var ae tls.AlertError
	return errors.As(err, &ua) || errors.As(err, &he) || errors.As(err, &ci) || errors.As(err, &ve) || errors.As(err, &ae)
}
