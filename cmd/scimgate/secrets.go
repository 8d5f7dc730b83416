package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"

	"github.com/scimgate/scimgate/gateway"
	"github.com/scimgate/scimgate/outbox"
)

// Secrets that are generated when not configured.

// prepareSecrets fills in what the environment contract generates on first
// start: the SCIM and admin tokens (only their hashes are kept, in the data
// dir; the token is printed once) and the webhook signing secret (kept in
// a 0600 file, because signing needs the secret itself and `scimgate
// listen` must read it while the gateway holds the database lock).
func prepareSecrets(cfg *Config, out io.Writer) error {
	p, err := planSecrets(cfg)
	if err != nil {
		return err
	}
	return p.commit(out)
}

// pendingTokens are tokens generated for a start but neither kept nor shown
// yet: serve commits them once the database is checked and the listeners
// are bound, so that a start that fails (a port in use, a damaged
// database) prints no token that never worked, and the next
// start generates them again.
type pendingTokens []pendingToken

type pendingToken struct {
	file, what, token string
}

// commit keeps each token's hash (durably) and prints the token, once.
func (p pendingTokens) commit(out io.Writer) error {
	for _, t := range p {
		if err := writeFileDurable(t.file, []byte(gateway.HashToken(t.token)+"\n")); err != nil {
			return err
		}
		fmt.Fprintf(out, "Generated %s, shown only this once:\n\n    %s\n\n(its hash is kept in %s; delete that file to generate a new one)\n\n", t.what, t.token, t.file)
	}
	return nil
}

// planSecrets is prepareSecrets with the generated tokens left to commit.
// The webhook secret, which is never shown, is written at once.
func planSecrets(cfg *Config) (pendingTokens, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	var pending pendingTokens
	token := func(file, what string) (string, error) {
		if h, err := readGenerated(file, tokenHashFile); err != nil || h != "" {
			return h, err
		}
		t, err := newToken()
		if err != nil {
			return "", err
		}
		pending = append(pending, pendingToken{file: file, what: what, token: t})
		return gateway.HashToken(t), nil
	}
	if !cfg.SCIM.Auth.HasCredentials() {
		h, err := token(filepath.Join(cfg.DataDir, scimTokenFile), "SCIM bearer token (give it to Okta: API Token / Entra: Secret Token; export TOKEN=… for the README's curl)")
		if err != nil {
			return nil, err
		}
		cfg.SCIM.Auth.BearerTokens = gateway.Tokens(h)
	}
	if len(cfg.Admin.Tokens) == 0 {
		h, err := token(filepath.Join(cfg.DataDir, adminTokenFile), "admin token (export SCIMGATE_ADMIN_TOKEN=… for scimgate status)")
		if err != nil {
			return nil, err
		}
		cfg.Admin.Tokens = []string{h}
	}
	if needsWebhookSecret(*cfg) {
		secret, err := loadOrCreateWebhookSecret(cfg.DataDir)
		if err != nil {
			return nil, err
		}
		setWebhookSecret(cfg, secret)
	}
	return pending, nil
}

func needsWebhookSecret(cfg Config) bool {
	for _, t := range cfg.Outbox.Targets {
		if len(t.Secrets) == 0 {
			return true
		}
	}
	return false
}

func setWebhookSecret(cfg *Config, secret string) {
	for i := range cfg.Outbox.Targets {
		if len(cfg.Outbox.Targets[i].Secrets) == 0 {
			cfg.Outbox.Targets[i].Secrets = []string{secret}
		}
	}
}

// reloadSecrets is prepareSecrets for a reload, which never generates a
// secret: a generated token is printed once, to the log of a
// process that is already running, and would replace every credential the
// identity provider holds. A listener left without credentials is refused,
// unless the running configuration is itself on the data dir's generated
// credentials (a configuration that never had any). The problems are
// returned one line each.
func reloadSecrets(cfg *Config, running Config) []string {
	var problems []string
	const never = "a reload never generates one"
	if !cfg.SCIM.Auth.HasCredentials() {
		h, err := readGenerated(filepath.Join(cfg.DataDir, scimTokenFile), tokenHashFile)
		gen := gateway.AuthConfig{BearerTokens: gateway.Tokens(h)}
		switch {
		case err != nil:
			problems = append(problems, "scim.auth: "+err.Error())
		case h == "" || !sameCredentials(running.SCIM.Auth, gen):
			problems = append(problems, "scim.auth: no credentials (bearer_tokens, basic or oauth_clients; a token's _FILE must not be empty): the identity provider would be refused everywhere, and "+never+"; put them back, or restart to generate a token")
		default:
			cfg.SCIM.Auth.BearerTokens = gen.BearerTokens
		}
	}
	if len(cfg.Admin.Tokens) == 0 {
		h, err := readGenerated(filepath.Join(cfg.DataDir, adminTokenFile), tokenHashFile)
		switch {
		case err != nil:
			problems = append(problems, "admin.tokens: "+err.Error())
		case h == "" || !reflect.DeepEqual(running.Admin.Tokens, []string{h}):
			problems = append(problems, "admin.tokens: no admin token, and "+never+"; put it back (SCIMGATE_ADMIN_TOKEN or its _FILE), or restart to generate one")
		default:
			cfg.Admin.Tokens = []string{h}
		}
	}
	if needsWebhookSecret(*cfg) {
		secret, err := readGenerated(filepath.Join(cfg.DataDir, webhookSecretFile), webhookSecretKind)
		switch {
		case err != nil:
			problems = append(problems, "outbox.targets: "+err.Error())
		case secret == "":
			problems = append(problems, "outbox.targets: a target has no secrets and the data dir holds no generated "+webhookSecretFile+"; "+never+": set the target's secrets (or SCIMGATE_WEBHOOK_SECRET), or restart to generate one")
		default:
			setWebhookSecret(cfg, secret)
		}
	}
	return problems
}

// sameCredentials reports whether running accepts exactly the generated
// credentials gen (bearer tokens only).
func sameCredentials(running, gen gateway.AuthConfig) bool {
	return reflect.DeepEqual(running.BearerTokens, gen.BearerTokens) && len(running.Basic) == 0 && len(running.OAuthClients) == 0
}

// generatedKind describes the content of a generated secret file, so that
// an empty or damaged one stops the start with one line instead
// of a gateway that refuses every request.
type generatedKind struct {
	valid func(string) bool
	what  string // what the file must hold
	after string // what deleting it means
}

var (
	tokenHashRe   = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	tokenHashFile = generatedKind{valid: tokenHashRe.MatchString, what: `"sha256:" and 64 hex digits, the hash of the generated token`,
		after: "the next start generates and prints a new token, which the client then needs"}
	webhookSecretKind = generatedKind{valid: validWebhookSecret, what: "a whsec_… signing secret",
		after: "the next start generates a new secret, which every app verifying signatures then needs"}
)

func validWebhookSecret(s string) bool {
	k, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, "whsec_"))
	return strings.HasPrefix(s, "whsec_") && err == nil && len(k) > 0
}

// readGenerated returns a generated secret file's content, checked; "" when
// there is no such file.
func readGenerated(file string, kind generatedKind) (string, error) {
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	} else if err != nil {
		return "", err
	}
	v := strings.TrimSpace(string(b))
	switch {
	case v == "":
		return "", fmt.Errorf("%s is empty: it should hold %s; restore it, or delete it (%s)", file, kind.what, kind.after)
	case !kind.valid(v):
		return "", fmt.Errorf("%s is damaged: it should hold %s; restore it, or delete it (%s)", file, kind.what, kind.after)
	}
	return v, nil
}

func loadOrCreateWebhookSecret(dataDir string) (string, error) {
	file := filepath.Join(dataDir, webhookSecretFile)
	if s, err := readGenerated(file, webhookSecretKind); err != nil || s != "" {
		return s, err
	}
	secret, err := outbox.NewSecret()
	if err != nil {
		return "", err
	}
	// `scimgate listen` may run before the gateway has made the data dir.
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", fmt.Errorf("data dir: %w", err)
	}
	return secret, writeFileDurable(file, []byte(secret+"\n"))
}

// writeFileDurable replaces file (0600) whole and durably: a temporary file
// beside it, fsync, rename, fsync of the directory. A crash leaves the old
// content or the new, never an empty or partial file.
func writeFileDurable(file string, data []byte) error {
	dir := filepath.Dir(file)
	f, err := os.CreateTemp(dir, filepath.Base(file)+".tmp*") // 0600
	if err != nil {
		return fmt.Errorf("write %s: %w", file, err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, file)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", file, err)
	}
	return syncDir(dir)
}

// newToken returns 32 random bytes, base64url: a bearer token.
func newToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// loadOrCreateTokenKey returns the key that signs OAuth access tokens, kept
// in the data dir (0600) so that tokens survive a restart; deleting the
// file revokes every token at the next start.
func loadOrCreateTokenKey(dataDir string) ([]byte, error) {
	file := filepath.Join(dataDir, tokenKeyFile)
	if b, err := os.ReadFile(file); err == nil {
		key, err := base64.RawStdEncoding.DecodeString(strings.TrimSpace(string(b)))
		if err != nil || len(key) < 32 {
			return nil, fmt.Errorf("%s is not a base64 key of at least 32 bytes: delete it to generate a new one (OAuth access tokens issued so far stop working)", file)
		}
		return key, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	return key, writeFileDurable(file, []byte(base64.RawStdEncoding.EncodeToString(key)+"\n"))
}

// loadIncarnations reads what saveIncarnations kept: nil when there is no
// file (a first start, or the first since an upgrade: the secrets keep the
// tokens issued so far).
func loadIncarnations(dataDir string) (map[string]string, error) {
	file := filepath.Join(dataDir, incarnationsFile)
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var f struct {
		Secrets map[string]string `json:"secrets"`
	}
	if err := json.Unmarshal(b, &f); err != nil || f.Secrets == nil {
		return nil, fmt.Errorf("%s is not what scimgate writes: delete it and %s to revoke every OAuth access token (clients then ask for new ones)", file, tokenKeyFile)
	}
	return f.Secrets, nil
}

// saveIncarnations keeps the OAuth client secrets' incarnations (opaque
// names and random values: no secret, no hash of one) in the data dir.
func saveIncarnations(dataDir string, m map[string]string) error {
	b, err := json.Marshal(map[string]any{"secrets": m})
	if err != nil {
		return err
	}
	return writeFileDurable(filepath.Join(dataDir, incarnationsFile), append(b, '\n'))
}
