package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/net/netutil"

	"github.com/scimgate/scimgate/gateway"
	"github.com/scimgate/scimgate/gateway/store"
	"github.com/scimgate/scimgate/mapping"
	"github.com/scimgate/scimgate/outbox"
	"github.com/scimgate/scimgate/outbox/rest"
)

// Files in the data directory.
const (
	dbFile            = "scimgate.db"
	scimTokenFile     = "scim-token.sha256"
	adminTokenFile    = "admin-token.sha256"
	webhookSecretFile = "webhook-secret"
	tokenKeyFile      = "oauth-token-key" // signs OAuth access tokens, so they survive a restart
	incarnationsFile  = "oauth-secrets"   // the OAuth client secrets' incarnations (gateway.Server.SetSecretIncarnations)
)

// appOptions are what newApp needs beyond the validated configuration.
type appOptions struct {
	// InitEmpty lets an existing zero-length database file be initialised
	// (serve --init); otherwise it is refused.
	InitEmpty bool
	// Reload loads and validates the configuration as serve did at start,
	// without generating any secret, given the running configuration
	// (SIGHUP, POST /admin/reload). Nil: reload is not available.
	Reload func(running Config) (Config, error)
	// LogLevel, when set, is the logger's level; reload changes it.
	LogLevel *slog.LevelVar
	// BeforeServe, when set, runs in Start once both listeners are bound,
	// before anything is served (serve keeps and shows generated tokens
	// there); its error fails the start.
	BeforeServe func() error
}

// app is one running gateway: the database, the SCIM and admin listeners
// and the dispatcher. newApp wires, Start starts, Close stops (H3).
type app struct {
	opts       appOptions
	logger     *slog.Logger
	dbp        atomic.Pointer[bolt.DB] // replaced by an online compaction
	store      *store.Store
	mapper     *mapping.Mapper
	feed       *outbox.Feed
	dispatcher *outbox.Dispatcher
	scim       *gateway.Server
	admin      *gateway.Admin
	registry   *prometheus.Registry
	certs      *certReloader

	mu    sync.Mutex // cfg and epoch, for reload and boot rotation
	cfg   Config
	epoch epochState

	scimLn, adminLn net.Listener
	scimSrv         *http.Server
	adminSrv        *http.Server
	ctx             context.Context
	cancel          context.CancelFunc
	dispStop        func()        // ends the dispatcher's Run and waits for it
	adminBusy       chan struct{} // admin requests being served (admin.max_connections)
	polls           chan struct{} // long polls waiting (maxLongPolls)
	compactMu       sync.Mutex
	wg              sync.WaitGroup
	runErr          chan error
	// check is what the start-up check found; when it left step 3 to
	// verifyDatabase (check.Deferred), Start runs it and a failure sets
	// corrupt, so that Close leaves the file as a crash would: the next
	// start then checks it whole and refuses it with one line.
	check   dbCheck
	corrupt atomic.Bool
}

// newApp checks and opens the database, applies the restore epoch, and
// builds every component. cfg must be validated, with its secrets prepared.
func newApp(cfg Config, logger *slog.Logger, opts appOptions) (*app, error) {
	mapper, err := mapping.Compile(cfg.Mapping)
	if err != nil {
		return nil, fmt.Errorf("mapping: %w", err)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	path := filepath.Join(cfg.DataDir, dbFile)
	fileEpoch, err := readEpochFile(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	leftover := path + ".compact"
	_, leftoverErr := os.Stat(leftover)
	db, check, err := openDatabase(path, opts.InitEmpty)
	if err != nil {
		return nil, err
	}
	// An online compaction cut by a kill -9 leaves its copy, as large as
	// the database; no other gateway runs here now (the file is locked).
	if leftoverErr == nil {
		if err := os.Remove(leftover); err != nil && !errors.Is(err, os.ErrNotExist) {
			logger.Warn("could not remove the copy an interrupted compaction left", "path", leftover, "err", err)
		} else {
			logger.Warn("removed "+leftover+", the copy an interrupted compaction left", "path", leftover)
		}
	}
	if check.Warning != "" {
		logger.Warn("database file damaged but readable: "+check.Warning, "path", path)
	}
	switch c := check.Compaction; {
	case check.CompactionErr != nil:
		logger.Warn("start-up compaction failed; the file is used as it was", "path", path, "err", check.CompactionErr)
	case c.Compacted:
		logger.Info("database compacted at start-up: it was mostly free", "path", path, "bytes_before", c.Before,
			"bytes_after", c.After, "free", fmt.Sprintf("%.0f%%", 100*c.Free), "took", c.Took)
	}
	logger.Debug("database checked", "path", path, "bytes", check.Size, "pages", check.Pages, "keys", check.Keys, "elapsed", check.Elapsed)
	var mig store.Migration
	ep, err := planEpoch(db, fileEpoch)
	var done bool
	if err == nil {
		done, err = writeBoot(cfg.DataDir, ep.Held, ep.epochState, func(epochState) error {
			return db.Update(func(tx *bolt.Tx) error {
				var err error
				if mig, err = store.Init(tx, logger); err != nil {
					return err
				}
				if err := outbox.InitBuckets(tx); err != nil {
					return err
				}
				return startEpoch(tx, &ep)
			})
		})
	}
	if done && err != nil { // the database holds the new pair; the file names it pending
		logger.Warn("could not finish writing data/epoch; the next start reads its pending boot id", "err", err)
		err = nil
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("init %s: %w", path, err)
	}
	if ep.Restored {
		logger.Warn("the database was restored or replaced since the last start: raised the restore epoch so that sequences and versions keep growing",
			"epoch", ep.Epoch, "file_epoch", ep.FileEpoch, "database_epoch", ep.DBEpoch, "floor", ep.floor(),
			"previous_last_sequence", ep.PreviousTailSeq, "sequence_raised", ep.Raised)
	}
	a := &app{opts: opts, cfg: cfg, epoch: ep.epochState, logger: logger, registry: prometheus.NewRegistry(), runErr: make(chan error, 3), check: check}
	a.dbp.Store(db)
	om := outbox.NewMetrics()
	a.dispatcher, err = outbox.NewDispatcher(db, cfg.Outbox, logger, om)
	if err != nil {
		db.Close()
		return nil, err
	}
	_ = mig // Init logged any migration and its collisions
	a.feed = outbox.NewFeed(db, outbox.FeedConfig{MaxWait: cfg.API.MaxWait})
	obs := newObserver(logger)
	obs.init()
	a.store = store.New(db, mapper, store.Options{UserExtensions: mapper.UserExtensions(),
		OnCommit:     func() { a.dispatcher.Notify(); a.feed.Notify() },
		VersionFloor: ep.floor(), Logger: logger, Observer: obs,
		UnknownMembers: cfg.SCIM.UnknownMembers, MaxDepth: cfg.SCIM.Limits.MaxDepth,
		RemapManual: cfg.Mapping.Remap == mapping.RemapManual})
	a.dispatcher.SetSnapshot(a.store.Snapshot)
	a.mapper = mapper
	gm := gateway.NewMetrics()
	a.scim = gateway.NewServer(cfg.SCIM, a.store, logger, gm)
	a.scim.SetMapper(mapper)
	key, err := loadOrCreateTokenKey(cfg.DataDir)
	if err != nil {
		a.store.Close()
		db.Close()
		return nil, err
	}
	a.scim.SetTokenKey(key)
	saved, err := loadIncarnations(cfg.DataDir)
	if err == nil {
		err = a.scim.SetSecretIncarnations(saved, func(m map[string]string) error { return saveIncarnations(cfg.DataDir, m) })
	}
	if err != nil {
		a.store.Close()
		db.Close()
		return nil, err
	}
	a.registry.MustRegister(obs.collectors()...)
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{Name: "scimgate_build_info", Help: "Always 1; the labels name the running build.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()}})
	buildInfo.Set(1)
	a.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), buildInfo)
	a.registry.MustRegister(gm.Collectors()...)
	a.registry.MustRegister(om.Collectors()...)
	a.registry.MustRegister(rest.Collectors()...)
	a.registry.MustRegister(newStoreCollector(a.store))
	a.admin = gateway.NewAdmin(cfg.Admin, gateway.AdminDeps{DB: db, Store: a.store, SCIM: a.scim, Dispatcher: a.dispatcher,
		Gatherer: a.registry, Logger: logger, Version: version, API: cfg.API, Feed: a.feed,
		Reload:  func() ([]string, error) { return a.reload("admin API") },
		Compact: a.compact})
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
// serves them, and runs the dispatcher. Each listener bounds its open
// connections (further clients wait in the kernel's accept queue) and its
// servers time out slow reads, slow writes and idle keep-alives: a client
// that trickles a body cannot hold a goroutine and a descriptor forever.
func (a *app) Start() error {
	lim, alim := a.cfg.SCIM.Limits, a.cfg.Admin
	ln, err := net.Listen("tcp", a.cfg.SCIM.Listen)
	if err != nil {
		return fmt.Errorf("scim listener: %w", err)
	}
	a.scimLn = netutil.LimitListener(ln, lim.MaxConnections)
	if ln, err = net.Listen("tcp", a.cfg.Admin.Listen); err != nil {
		a.scimLn.Close()
		return fmt.Errorf("admin listener: %w", err)
	}
	// The admin listener's connections are bounded loosely (file
	// descriptors): admin.max_connections bounds the requests it serves at
	// once, long polls have their own bound, and the probes and /metrics
	// none (adminHandler), so that no client of the app API, and no
	// connection that never finishes its headers, stops a probe.
	a.adminLn = netutil.LimitListener(ln, alim.MaxConnections+maxLongPolls+halfOpenHeadroom)
	a.adminBusy = make(chan struct{}, alim.MaxConnections)
	a.polls = make(chan struct{}, maxLongPolls)
	if a.opts.BeforeServe != nil {
		if err := a.opts.BeforeServe(); err != nil {
			a.scimLn.Close()
			a.adminLn.Close()
			return err
		}
	}
	errLog := slog.NewLogLogger(a.logger.Handler(), slog.LevelWarn)
	a.scimSrv = &http.Server{Handler: a.scim, ErrorLog: errLog,
		ReadHeaderTimeout: min(10*time.Second, lim.ReadTimeout), ReadTimeout: lim.ReadTimeout,
		WriteTimeout: lim.WriteTimeout, IdleTimeout: lim.IdleTimeout}
	a.adminSrv = &http.Server{Handler: a.adminHandler(), ErrorLog: errLog,
		ReadHeaderTimeout: min(adminHeaderTimeout, alim.ReadTimeout), ReadTimeout: alim.ReadTimeout,
		WriteTimeout: alim.WriteTimeout, IdleTimeout: alim.IdleTimeout}
	ctx, cancel := context.WithCancel(context.Background())
	a.ctx, a.cancel = ctx, cancel
	a.runDispatcher()
	a.wg.Add(4)
	go func() {
		defer a.wg.Done()
		a.compactWhenMostlyFree(ctx)
	}()
	go func() {
		defer a.wg.Done()
		a.admin.Run(ctx) // the console's delivery chart samples
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
	if a.check.Deferred {
		a.wg.Go(a.verify)
	}
	a.logger.Info("scimgate started", "version", version, "scim", scheme+"://"+a.scimLn.Addr().String()+a.cfg.SCIM.BasePath,
		"admin", a.adminLn.Addr().String(), "data_dir", a.cfg.DataDir, "targets", len(a.cfg.Outbox.Targets), "epoch", a.epoch.Epoch)
	return nil
}

// The admin listener's bounds (Start, adminHandler).
var (
	// maxLongPolls bounds the /v1/events long polls waiting at once (the
	// app API docs invite up to 1,000 consumers); one more gets 503 with
	// Retry-After.
	maxLongPolls = 1000
)

const (
	// halfOpenHeadroom is the admin listener's room for connections that
	// have not sent a request yet, beyond what its requests may hold.
	halfOpenHeadroom = 1024
	// adminHeaderTimeout is how long the admin listener waits for a
	// request's headers (the SCIM listener waits 10 s).
	adminHeaderTimeout = 5 * time.Second
	// busyRetryAfter is the Retry-After of a 503 for a full bound.
	busyRetryAfter = "5"
)

// isLongPoll reports whether r is a /v1/events read that may wait.
func isLongPoll(r *http.Request) bool {
	if r.Method != http.MethodGet || r.URL.Path != "/v1/events" {
		return false
	}
	d, err := time.ParseDuration(r.URL.Query().Get("wait"))
	return err == nil && d > 0
}

// adminHandler is the admin API, plus two duties of this package. It
// bounds what the listener serves: the probes and /metrics are always
// served, long polls up to maxLongPolls, every other request up to
// admin.max_connections at once; beyond a bound the answer is 503 with
// Retry-After. And after a successful online backup it rotates the boot id,
// so that the backup, if it is later copied back by hand, carries a pair
// the epoch file no longer holds and the next start raises the epoch
// (epoch.go).
func (a *app) adminHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/healthz" || r.URL.Path == "/readyz" || r.URL.Path == "/metrics":
			a.admin.ServeHTTP(w, r)
			return
		case isLongPoll(r):
			select {
			case a.polls <- struct{}{}:
				defer func() { <-a.polls }()
			default:
				busy(w, fmt.Sprintf("%d long polls are waiting, the most this gateway serves at once; retry later", cap(a.polls)))
				return
			}
		default:
			select {
			case a.adminBusy <- struct{}{}:
				defer func() { <-a.adminBusy }()
			default:
				busy(w, fmt.Sprintf("%d admin requests are being served, admin.max_connections; retry later", cap(a.adminBusy)))
				return
			}
		}
		if r.Method != http.MethodGet || r.URL.Path != "/admin/backup" {
			a.admin.ServeHTTP(w, r)
			return
		}
		sw := &statusWriter{ResponseWriter: w}
		a.admin.ServeHTTP(sw, r)
		if sw.status == http.StatusOK || (sw.status == 0 && sw.wrote) {
			if err := a.rotateBoot(); err != nil {
				a.logger.Error("rotate the boot id after a backup", "err", err)
			}
		}
	})
}

// busy answers 503 with Retry-After: a bound of the admin listener is full.
func busy(w http.ResponseWriter, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Retry-After", busyRetryAfter)
	w.WriteHeader(http.StatusServiceUnavailable)
	b, _ := json.Marshal(map[string]string{"error": msg})
	_, _ = w.Write(append(b, '\n'))
}

// statusWriter records the status of a response it passes through.
type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (the backup
// stream extends its own write deadline).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// rotateBoot writes a fresh boot id, in the order of writeBoot.
func (a *app) rotateBoot() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	next := epochState{Epoch: a.epoch.Epoch, Boot: newBootID()}
	done, err := writeBoot(a.cfg.DataDir, a.epoch, next, func(next epochState) error {
		return a.db().Update(func(tx *bolt.Tx) error { return outbox.WriteBoot(tx, next.Epoch, next.Boot) })
	})
	if done {
		a.epoch = next
	}
	return err
}

// SCIMAddr and AdminAddr return the bound addresses (useful with port 0).
func (a *app) SCIMAddr() string  { return a.scimLn.Addr().String() }
func (a *app) AdminAddr() string { return a.adminLn.Addr().String() }

// Err reports a listener or dispatcher failure after Start.
func (a *app) Err() <-chan error { return a.runErr }

// Close shuts down in a fixed order: stop accepting and finish in-flight
// SCIM requests, stop the dispatcher (pending events stay in the outbox),
// stop the store's writer, rotate the boot id, close the database. Every
// step runs; the errors are joined.
func (a *app) Close(ctx context.Context) error {
	var errs []error
	// Long polls answer now, with an empty page; both listeners stop
	// together, and what is still running after httpShutdown is cut, so
	// that the steps below run well within an orchestrator's grace period
	// (a poll once held SIGTERM for 30 s, and the kubelet's SIGKILL came first).
	a.feed.Stop()
	hctx, cancel := context.WithTimeout(ctx, httpShutdown)
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, srv := range []*http.Server{a.scimSrv, a.adminSrv} {
		if srv == nil {
			continue
		}
		wg.Go(func() {
			err := srv.Shutdown(hctx)
			if err != nil {
				err = errors.Join(err, srv.Close())
			}
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		})
	}
	wg.Wait()
	a.compactMu.Lock() // an online compaction under way finishes first
	defer a.compactMu.Unlock()
	if a.cancel != nil {
		a.cancel()
	}
	a.wg.Wait()
	a.store.Close()
	errs = append(errs, a.rotateBoot())
	// Nothing writes any more: write the freelist once, as the file's last
	// commit, so that the next start reads it instead of every page of the
	// file and knows the run ended cleanly (dbCheck.Clean). A file found
	// damaged is left as a crash leaves it, to be checked whole.
	if a.corrupt.Load() {
		a.logger.Warn("the database file failed its check: the next start checks it whole")
	} else if err := store.SyncFreelist(a.db()); err != nil {
		a.logger.Warn("could not write the freelist at shutdown; the next start reads the whole file", "err", err)
	}
	errs = append(errs, a.db().Close())
	a.logger.Info("scimgate stopped")
	return errors.Join(errs...)
}

// verify runs step 3 of the database check beside the running gateway
// (checkFile deferred it: the last run ended cleanly). A damaged file
// stops the gateway with the check's error.
func (a *app) verify() {
	// An online compaction under way reads every key through bbolt itself,
	// and Close holds the lock while it waits for this goroutine.
	if !a.compactMu.TryLock() {
		return
	}
	defer a.compactMu.Unlock()
	res, err := verifyDatabase(a.db(), filepath.Join(a.cfg.DataDir, dbFile))
	if err != nil {
		a.corrupt.Store(true)
		select {
		case a.runErr <- err:
		default:
		}
		return
	}
	a.logger.Info("database file verified beside the running gateway", "keys", res.Keys, "buckets", res.Buckets, "elapsed", res.Elapsed)
}

// httpShutdown bounds the wait for requests in flight at shutdown.
const httpShutdown = 10 * time.Second

func isLoopback(addr net.Addr) bool {
	tcp, ok := addr.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}

// storeCollector exports store counts at scrape time.
type storeCollector struct {
	s                     *store.Store
	users, active, groups *prometheus.Desc
	remap, remapState     *prometheus.Desc
	rejected              *prometheus.Desc
}

func newStoreCollector(s *store.Store) *storeCollector {
	return &storeCollector{s: s,
		users:  prometheus.NewDesc("scimgate_store_users", "Users in the store.", nil, nil),
		active: prometheus.NewDesc("scimgate_store_active_users", "Active users in the store.", nil, nil),
		groups: prometheus.NewDesc("scimgate_store_groups", "Groups in the store.", nil, nil),
		remap: prometheus.NewDesc("scimgate_remap_resources",
			"The last pass that applied a mapping change to the stored records (the running one): resources at its start (total), examined (done), whose record changed (changed), rejected by the mapping (rejected).",
			[]string{"count"}, nil),
		remapState: prometheus.NewDesc("scimgate_remap_state",
			"1 for the state of the last mapping remap (pending: waiting for `scimgate remap`; running; done).", []string{"state"}, nil),
		rejected: prometheus.NewDesc("scimgate_mapping_rejected_resources",
			"Stored resources the mapping in force rejects: they keep the record an earlier mapping made (scimgate status lists them).", nil, nil),
	}
}

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.users
	ch <- c.active
	ch <- c.groups
	ch <- c.remap
	ch <- c.remapState
	ch <- c.rejected
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	st, err := c.s.Stats()
	if err != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.users, prometheus.GaugeValue, float64(st.Users))
	ch <- prometheus.MustNewConstMetric(c.active, prometheus.GaugeValue, float64(st.ActiveUsers))
	ch <- prometheus.MustNewConstMetric(c.groups, prometheus.GaugeValue, float64(st.Groups))
	rs := c.s.RemapStatus()
	ch <- prometheus.MustNewConstMetric(c.rejected, prometheus.GaugeValue, float64(rs.Rejected))
	if last := rs.Last; last != nil {
		for name, v := range map[string]int{"total": last.Total, "done": last.Done, "changed": last.Changed, "rejected": last.Rejected} {
			ch <- prometheus.MustNewConstMetric(c.remap, prometheus.GaugeValue, float64(v), name)
		}
		for _, state := range []string{store.RemapPending, store.RemapRunning, store.RemapDone} {
			v := 0.0
			if last.State == state {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(c.remapState, prometheus.GaugeValue, v, state)
		}
	}
}

// certReloader serves a certificate that SIGHUP reloads from disk.
type certReloader struct {
	mu                sync.RWMutex
	certFile, keyFile string
	cert              *tls.Certificate
}

func newCertReloader(certFile, keyFile string) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile}
	return r, r.reload()
}

func (r *certReloader) reload() error {
	r.mu.RLock()
	certFile, keyFile := r.certFile, r.keyFile
	r.mu.RUnlock()
	return r.load(certFile, keyFile)
}

// load reads the pair and serves it from the next handshake; on an error
// the current certificate stays.
func (r *certReloader) load(certFile, keyFile string) error {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("load TLS certificate: %w", err)
	}
	r.mu.Lock()
	r.cert, r.certFile, r.keyFile = &cert, certFile, keyFile
	r.mu.Unlock()
	return nil
}

func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.cert, nil
}

// db is the database the gateway runs on.
func (a *app) db() *bolt.DB { return a.dbp.Load() }

// runDispatcher runs the dispatcher until the app stops or dispStop ends it.
func (a *app) runDispatcher() {
	ctx, cancel := context.WithCancel(a.ctx)
	done := make(chan struct{})
	a.dispStop = func() { cancel(); <-done }
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer close(done)
		if err := a.dispatcher.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			a.logger.Error("dispatcher stopped", "err", err)
			a.runErr <- fmt.Errorf("dispatcher: %w", err)
		}
	}()
}

// Online compaction: the bbolt file never shrinks by itself, so
// when it is mostly free the gateway rewrites it while serving. The copy is
// made while writes go on; SCIM writes and deliveries are held only while
// the copy catches up (measured: about 300 ms on a 1 GB file), then the
// gateway reopens the file and goes on. It runs when the file is at least
// half free (checked every compactEvery) and on POST /admin/compact.
const (
	compactEvery   = 10 * time.Minute
	compactMinSize = 64 << 20 // smaller files are not worth it
)

func (a *app) compactWhenMostlyFree(ctx context.Context) {
	t := time.NewTicker(compactEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		// On disk: bbolt's file has a sparse tail (compact walks the
		// buckets, which is not worth it for a small file).
		if fi, err := os.Stat(a.db().Path()); err != nil || allocated(fi) < compactMinSize {
			continue
		}
		if _, err := a.compact(false); err != nil {
			a.logger.Error("online compaction failed", "err", err)
		}
	}
}

// compact rewrites the database without its free pages when at least half
// of it is free (any file with force), holding writes only for the
// catch-up. On failure the gateway keeps running on the file as it was.
func (a *app) compact(force bool) (store.CompactReport, error) {
	a.compactMu.Lock()
	defer a.compactMu.Unlock()
	if a.ctx == nil || a.ctx.Err() != nil {
		return store.CompactReport{}, errors.New("the gateway is not running")
	}
	old := a.db()
	path := old.Path()
	before, err := os.Stat(path)
	if err != nil {
		return store.CompactReport{}, err
	}
	// Decide on what a compaction would reclaim (liveBytes), not on the
	// free pages alone: pages left partly used count too.
	reclaimable, err := reclaimableShare(old, before)
	if err != nil {
		return store.CompactReport{}, err
	}
	if !force && reclaimable < store.DefaultCompactFree {
		return store.CompactReport{Before: allocated(before), After: allocated(before), Free: reclaimable}, nil
	}
	const minFree = 1e-9 // decided above
	var resumeStore, resumeDispatcher func(*bolt.DB)
	locked, stopped := false, false
	stop := func() error {
		// Nothing may write to the old file from here until it is replaced:
		// the epoch and boot rotation, reloads, the dispatcher and its admin
		// writes, and the store's writes all wait.
		a.mu.Lock()
		locked = true
		a.dispStop()
		stopped = true
		var err error
		if resumeDispatcher, err = a.dispatcher.Suspend(); err != nil {
			return err
		}
		resumeStore, err = a.store.Pause()
		return err
	}
	rep, held, err := store.CompactOnline(old, path, minFree, stop)
	next := old
	if after, serr := os.Stat(path); serr == nil && !os.SameFile(before, after) {
		// The file was replaced by its compacted copy (even if a later step
		// failed): from here on only the new file may be written.
		db, oerr := bolt.Open(path, 0o600, boltOptions())
		if oerr != nil {
			// Writing on would go to a file that is gone: stop the gateway,
			// whose next start opens (and checks) the new file.
			a.runErr <- fmt.Errorf("online compaction replaced %s but it does not open: %w", path, oerr)
			return rep, oerr
		}
		next = db
	}
	if next != old {
		a.dbp.Store(next)
		a.feed.SetDB(next)
		a.admin.SetDB(next)
	}
	if resumeStore != nil {
		resumeStore(next)
	}
	if resumeDispatcher != nil {
		resumeDispatcher(next)
	}
	if stopped {
		a.runDispatcher()
	}
	if locked {
		a.mu.Unlock()
	}
	if next != old {
		go func() {
			if cerr := old.Close(); cerr != nil { // waits for reads still under way (a backup)
				a.logger.Warn("closing the database file replaced by compaction", "err", cerr)
			}
		}()
	}
	// Reported on disk: Before as it was, Free the estimate the decision
	// was made on (the CLI shows live data and what is reclaimable).
	rep.Before, rep.Free = allocated(before), reclaimable
	switch {
	case err != nil:
		return rep, err
	case rep.Compacted:
		a.logger.Info("database compacted online", "bytes_before", rep.Before, "bytes_after", rep.After,
			"reclaimed_bytes", rep.Before-rep.After, "took", rep.Took, "writes_held", held)
	}
	return rep, nil
}

// reclaimableShare estimates the share of the file on disk that a
// compaction gives back: what it holds on disk (its sparse tail does not
// count) less the live data (liveBytes).
func reclaimableShare(db *bolt.DB, fi os.FileInfo) (float64, error) {
	live, err := liveBytes(db)
	if err != nil || allocated(fi) <= 0 {
		return 0, err
	}
	return max(0, float64(allocated(fi)-live)/float64(allocated(fi))), nil
}

// liveBytes is the bytes the database's keys and values occupy in their
// pages, plus the meta, freelist and root pages: about the size of a
// compacted copy. A file's free pages undercount what a compaction
// reclaims (pages left partly used by deletions, the file's preallocated
// tail): a 16 MiB file "33% free" compacted to 44 KiB.
func liveBytes(db *bolt.DB) (int64, error) {
	var live int64
	err := db.View(func(tx *bolt.Tx) error {
		live = 4 * int64(db.Info().PageSize)
		return tx.ForEach(func(_ []byte, b *bolt.Bucket) error {
			s := b.Stats()
			live += int64(s.BranchInuse + s.LeafInuse)
			return nil
		})
	})
	return live, err
}
