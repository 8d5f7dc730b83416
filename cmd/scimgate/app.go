package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	bolt "go.etcd.io/bbolt"

	"github.com/scimgate/scimgate/gateway"
	"github.com/scimgate/scimgate/gateway/store"
	"github.com/scimgate/scimgate/mapping"
	"github.com/scimgate/scimgate/outbox"
)

// Files in the data directory.
const (
	dbFile            = "scimgate.db"
	scimTokenFile     = "scim-token.sha256"
	adminTokenFile    = "admin-token.sha256"
	webhookSecretFile = "webhook-secret"
)

// app is one running gateway: the database, the SCIM and admin listeners
// and the dispatcher. newApp wires, Start starts, Close stops (H3).
type app struct {
	cfg        Config
	logger     *slog.Logger
	db         *bolt.DB
	store      *store.Store
	dispatcher *outbox.Dispatcher
	scim       *gateway.Server
	admin      *gateway.Admin
	registry   *prometheus.Registry
	certs      *certReloader

	scimLn, adminLn net.Listener
	scimSrv         *http.Server
	adminSrv        *http.Server
	cancel          context.CancelFunc
	wg              sync.WaitGroup
	runErr          chan error
}

// newApp opens the database and builds every component. cfg must be
// validated, with its secrets prepared.
func newApp(cfg Config, logger *slog.Logger) (*app, error) {
	mapper, err := mapping.Compile(cfg.Mapping)
	if err != nil {
		return nil, fmt.Errorf("mapping: %w", err)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	path := filepath.Join(cfg.DataDir, dbFile)
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: time.Second, // a second process on the same file fails fast
		// Measured (DESIGN.md): no freelist sync + hashmap freelist keeps
		// commits fast on a large file that has been emptied.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
		// Reads do not block the writer on remapping until the file passes this.
		InitialMmapSize: 256 << 20,
	})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w (is another scimgate using this data dir?)", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if err := store.InitBuckets(tx); err != nil {
			return err
		}
		return outbox.InitBuckets(tx)
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init %s: %w", path, err)
	}
	a := &app{cfg: cfg, logger: logger, db: db, registry: prometheus.NewRegistry(), runErr: make(chan error, 1)}
	om := outbox.NewMetrics()
	a.dispatcher, err = outbox.NewDispatcher(db, cfg.Outbox, logger, om)
	if err != nil {
		db.Close()
		return nil, err
	}
	a.store = store.New(db, mapper, store.Options{UserExtensions: mapper.UserExtensions(), OnCommit: a.dispatcher.Notify})
	gm := gateway.NewMetrics()
	a.scim = gateway.NewServer(cfg.SCIM, a.store, logger, gm)
	a.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a.registry.MustRegister(gm.Collectors()...)
	a.registry.MustRegister(om.Collectors()...)
	a.registry.MustRegister(newStoreCollector(a.store))
	a.admin = gateway.NewAdmin(cfg.Admin, gateway.AdminDeps{DB: db, Store: a.store, SCIM: a.scim, Dispatcher: a.dispatcher,
		Gatherer: a.registry, Logger: logger, Version: version})
	if cfg.SCIM.TLS.CertFile != "" {
		if a.certs, err = newCertReloader(cfg.SCIM.TLS.CertFile, cfg.SCIM.TLS.KeyFile); err != nil {
			a.store.Close()
			db.Close()
			return nil, err
		}
	}
	return a, nil
}

// Start opens both listeners (errors come back here, synchronously) and
// serves them, and runs the dispatcher.
func (a *app) Start() error {
	var err error
	if a.scimLn, err = net.Listen("tcp", a.cfg.SCIM.Listen); err != nil {
		return fmt.Errorf("scim listener: %w", err)
	}
	if a.adminLn, err = net.Listen("tcp", a.cfg.Admin.Listen); err != nil {
		a.scimLn.Close()
		return fmt.Errorf("admin listener: %w", err)
	}
	a.scimSrv = &http.Server{Handler: a.scim, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(a.logger.Handler(), slog.LevelWarn)}
	a.adminSrv = &http.Server{Handler: a.admin, ReadHeaderTimeout: 10 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	a.wg.Add(3)
	go func() {
		defer a.wg.Done()
		if err := a.dispatcher.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			a.logger.Error("dispatcher stopped", "err", err)
			a.runErr <- fmt.Errorf("dispatcher: %w", err)
		}
	}()
	go func() {
		defer a.wg.Done()
		var err error
		if a.certs != nil {
			a.scimSrv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: a.certs.get}
			err = a.scimSrv.ServeTLS(a.scimLn, "", "")
		} else {
			err = a.scimSrv.Serve(a.scimLn)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.runErr <- fmt.Errorf("scim listener: %w", err)
		}
	}()
	go func() {
		defer a.wg.Done()
		if err := a.adminSrv.Serve(a.adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.runErr <- fmt.Errorf("admin listener: %w", err)
		}
	}()
	scheme := "http"
	if a.certs != nil {
		scheme = "https"
	} else if !isLoopback(a.scimLn.Addr()) {
		a.logger.Warn("serving SCIM over plain HTTP on a non-loopback address: put a TLS-terminating proxy in front, or set scim.tls (Okta requires HTTPS)",
			"addr", a.scimLn.Addr().String())
	}
	a.logger.Info("scimgate started", "version", version, "scim", scheme+"://"+a.scimLn.Addr().String()+a.cfg.SCIM.BasePath,
		"admin", a.adminLn.Addr().String(), "data_dir", a.cfg.DataDir, "targets", len(a.cfg.Outbox.Targets))
	return nil
}

// SCIMAddr and AdminAddr return the bound addresses (useful with port 0).
func (a *app) SCIMAddr() string  { return a.scimLn.Addr().String() }
func (a *app) AdminAddr() string { return a.adminLn.Addr().String() }

// Err reports a listener or dispatcher failure after Start.
func (a *app) Err() <-chan error { return a.runErr }

// Close shuts down in a fixed order: stop accepting and finish in-flight
// SCIM requests, stop the dispatcher (pending events stay in the outbox),
// stop the store's writer, close the database. Every step runs; the first
// error is returned.
func (a *app) Close(ctx context.Context) error {
	var errs []error
	if a.scimSrv != nil {
		errs = append(errs, a.scimSrv.Shutdown(ctx))
	}
	if a.adminSrv != nil {
		errs = append(errs, a.adminSrv.Shutdown(ctx))
	}
	if a.cancel != nil {
		a.cancel()
	}
	a.wg.Wait()
	a.store.Close()
	errs = append(errs, a.db.Close())
	a.logger.Info("scimgate stopped")
	return errors.Join(errs...)
}

func isLoopback(addr net.Addr) bool {
	tcp, ok := addr.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}

// storeCollector exports store counts at scrape time.
type storeCollector struct {
	s                     *store.Store
	users, active, groups *prometheus.Desc
}

func newStoreCollector(s *store.Store) *storeCollector {
	return &storeCollector{s: s,
		users:  prometheus.NewDesc("scimgate_store_users", "Users in the store.", nil, nil),
		active: prometheus.NewDesc("scimgate_store_active_users", "Active users in the store.", nil, nil),
		groups: prometheus.NewDesc("scimgate_store_groups", "Groups in the store.", nil, nil),
	}
}

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.users
	ch <- c.active
	ch <- c.groups
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	st, err := c.s.Stats()
	if err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.users, prometheus.GaugeValue, float64(st.Users))
	ch <- prometheus.MustNewConstMetric(c.active, prometheus.GaugeValue, float64(st.ActiveUsers))
	ch <- prometheus.MustNewConstMetric(c.groups, prometheus.GaugeValue, float64(st.Groups))
}

// certReloader serves a certificate that SIGHUP reloads from disk.
type certReloader struct {
	certFile, keyFile string
	mu                sync.RWMutex
	cert              *tls.Certificate
}

func newCertReloader(certFile, keyFile string) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile}
	return r, r.reload()
}

func (r *certReloader) reload() error {
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("load TLS certificate: %w", err)
	}
	r.mu.Lock()
	r.cert = &cert
	r.mu.Unlock()
	return nil
}

func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.cert, nil
}

// ---- secrets that are generated when not configured ----

// prepareSecrets fills in what the environment contract generates on first
// start: the SCIM and admin tokens (only their hashes are kept, in the data
// dir; the token is printed once) and the webhook signing secret (kept in
// a 0600 file, because signing needs the secret itself and `scimgate
// listen` must read it while the gateway holds the database lock).
func prepareSecrets(cfg *Config, out io.Writer) error {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	if !cfg.SCIM.Auth.HasCredentials() {
		h, err := loadOrCreateToken(filepath.Join(cfg.DataDir, scimTokenFile), "SCIM bearer token (give it to Okta: API Token / Entra: Secret Token)", out)
		if err != nil {
			return err
		}
		cfg.SCIM.Auth.BearerTokens = gateway.Tokens(h)
	}
	if len(cfg.Admin.Tokens) == 0 {
		h, err := loadOrCreateToken(filepath.Join(cfg.DataDir, adminTokenFile), "admin token (export SCIMGATE_ADMIN_TOKEN=… for scimgate status)", out)
		if err != nil {
			return err
		}
		cfg.Admin.Tokens = []string{h}
	}
	var need bool
	for _, t := range cfg.Outbox.Targets {
		need = need || len(t.Secrets) == 0
	}
	if need {
		secret, err := loadOrCreateWebhookSecret(cfg.DataDir)
		if err != nil {
			return err
		}
		for i := range cfg.Outbox.Targets {
			if len(cfg.Outbox.Targets[i].Secrets) == 0 {
				cfg.Outbox.Targets[i].Secrets = []string{secret}
			}
		}
	}
	return nil
}

// loadOrCreateToken returns the "sha256:…" hash kept in file, creating a
// new token (printed once to out) when the file does not exist.
func loadOrCreateToken(file, what string, out io.Writer) (string, error) {
	if b, err := os.ReadFile(file); err == nil {
		return strings.TrimSpace(string(b)), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	token, err := newToken()
	if err != nil {
		return "", err
	}
	h := gateway.HashToken(token)
	if err := writeFileAtomic(file, []byte(h+"\n")); err != nil {
		return "", err
	}
	fmt.Fprintf(out, "Generated %s, shown only this once:\n\n    %s\n\n(its hash is kept in %s; delete that file to generate a new one)\n\n", what, token, file)
	return h, nil
}

func loadOrCreateWebhookSecret(dataDir string) (string, error) {
	file := filepath.Join(dataDir, webhookSecretFile)
	if b, err := os.ReadFile(file); err == nil {
		return strings.TrimSpace(string(b)), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	secret, err := outbox.NewSecret()
	if err != nil {
		return "", err
	}
	// `scimgate listen` may run before the gateway has made the data dir.
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", fmt.Errorf("data dir: %w", err)
	}
	return secret, writeFileAtomic(file, []byte(secret+"\n"))
}

func writeFileAtomic(file string, data []byte) error {
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, file)
}

// newToken returns 32 random bytes, base64url: a bearer token.
func newToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}
