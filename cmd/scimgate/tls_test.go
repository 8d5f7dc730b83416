package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scimgate/scimgate/outbox"
)

// writeCert writes a self-signed certificate for 127.0.0.1 with the given
// serial number.
func writeCert(t *testing.T, certFile, keyFile string, serial int64) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "scimgate-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
}

func TestTLSServesAndReloads(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writeCert(t, certFile, keyFile, 1)
	secret, _ := outbox.NewSecret()
	getenv := testEnv(dir, "http://127.0.0.1:9/hooks", secret)
	cfg := DefaultConfig(getenv)
	cfg.SCIM.TLS.CertFile, cfg.SCIM.TLS.KeyFile = certFile, keyFile
	if err := prepareSecrets(&cfg, nopWriter{}); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate("(test)", nil); err != nil {
		t.Fatal(err)
	}
	a, err := newApp(cfg, discard(), appOptions{Reload: func(Config) (Config, error) { return cfg, nil }})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	defer a.Close(t.Context())
	serial := func() int64 {
		t.Helper()
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true}}
		req, _ := http.NewRequest("GET", "https://"+a.SCIMAddr()+"/scim/v2/Users", nil)
		req.Header.Set("Authorization", "Bearer "+e2eToken)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET /Users over TLS: %d", resp.StatusCode)
		}
		return resp.TLS.PeerCertificates[0].SerialNumber.Int64()
	}
	if got := serial(); got != 1 {
		t.Fatalf("serial = %d, want 1", got)
	}
	// What SIGHUP does: the renewed files are served from the next handshake.
	writeCert(t, certFile, keyFile, 2)
	if changes, err := a.reload("test"); err != nil || len(changes) != 1 || changes[0] != "scim.tls: certificate reloaded" {
		t.Fatalf("reload: %q %v", changes, err)
	}
	if got := serial(); got != 2 {
		t.Errorf("serial after reload = %d, want 2", got)
	}
	// A broken file keeps the old certificate.
	os.WriteFile(certFile, []byte("garbage"), 0o600)
	var re *reloadError
	if _, err := a.reload("test"); !errors.As(err, &re) || !strings.Contains(err.Error(), "scim.tls") {
		t.Errorf("reload of a broken certificate: %v", err)
	}
	if got := serial(); got != 2 {
		t.Errorf("serial after failed reload = %d, want 2", got)
	}
}

type nopWriter struct{}

func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
