package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/scimgate/scimgate/outbox"
)

// limitsApp starts a gateway with the listener limits given.
func limitsApp(t *testing.T, edit func(*Config)) *app {
	t.Helper()
	secret, _ := outbox.NewSecret()
	cfg := DefaultConfig(testEnv(t.TempDir(), "http://127.0.0.1:9/hooks", secret))
	edit(&cfg)
	a := startAppCfg(t, cfg, appOptions{})
	t.Cleanup(func() { closeApp(t, a) })
	return a
}

// closeApp stops a test's app, bounded: a connection the server cannot
// end would otherwise hold Shutdown forever.
func closeApp(t *testing.T, a *app) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Close(ctx); err != nil {
		t.Errorf("close: %v", err)
	}
}

// closedWithin reads from conn until the server closes it, and reports
// how long that took (or fails after max).
func closedWithin(t *testing.T, conn net.Conn, max time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	conn.SetReadDeadline(start.Add(max))
	_, err := io.Copy(io.Discard, conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server kept the connection open for %s", max)
	}
	return time.Since(start)
}

// A client that trickles a body is cut off after the read timeout (issue
// 8, item 3): it cannot hold a goroutine and a descriptor forever.
func TestTrickledBodyIsCutOff(t *testing.T) {
	a := limitsApp(t, func(c *Config) { c.SCIM.Limits.ReadTimeout = 400 * time.Millisecond })
	for _, token := range []string{e2eToken, "a-wrong-token-0123456789"} {
		conn, err := net.Dial("tcp", a.SCIMAddr())
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "POST /scim/v2/Users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/scim+json\r\nContent-Length: 100000\r\n\r\n{", token)
		stop := make(chan struct{})
		go func() { // one byte every 50 ms: 100 KB would take 80 minutes
			for {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
					if _, err := conn.Write([]byte(" ")); err != nil {
						return
					}
				}
			}
		}()
		took := closedWithin(t, conn, 5*time.Second)
		close(stop)
		conn.Close()
		if took > 3*time.Second {
			t.Errorf("token %s…: connection closed after %s, want about the 400 ms read timeout", token[:4], took)
		}
		t.Logf("trickling client (token %s…) cut off after %s", token[:4], took.Round(time.Millisecond))
	}
}

// rawGet sends a keep-alive GET on conn and reads the whole response.
func rawGet(conn net.Conn, path string, timeout time.Duration) (int, error) {
	conn.SetDeadline(time.Now().Add(timeout))
	defer conn.SetDeadline(time.Time{})
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", path, e2eToken); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, err
}

// With max_connections N, the N+1th client waits (in the accept queue) and
// is served as soon as one of the N closes.
func TestMaxConnections(t *testing.T) {
	a := limitsApp(t, func(c *Config) { c.SCIM.Limits.MaxConnections = 2 })
	var held []net.Conn
	for range 2 {
		conn, err := net.Dial("tcp", a.SCIMAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if status, err := rawGet(conn, "/scim/v2/Users", 5*time.Second); err != nil || status != 200 {
			t.Fatalf("held connection: %d %v", status, err)
		}
		held = append(held, conn) // kept alive, idle
	}
	third, err := net.Dial("tcp", a.SCIMAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	result := make(chan error, 1)
	start := time.Now()
	go func() {
		status, err := rawGet(third, "/scim/v2/Users", 10*time.Second)
		if err == nil && status != 200 {
			err = fmt.Errorf("status %d", status)
		}
		result <- err
	}()
	select {
	case err := <-result:
		t.Fatalf("the third connection was served while two were open (err %v)", err)
	case <-time.After(500 * time.Millisecond):
	}
	held[0].Close()
	select {
	case err := <-result:
		if err != nil {
			t.Fatalf("third connection: %v", err)
		}
		t.Logf("third connection served %s after it connected, once one of the two closed", time.Since(start).Round(time.Millisecond))
	case <-time.After(5 * time.Second):
		t.Fatal("the third connection was not served after one closed")
	}
}

// Idle admin connections are closed after admin.idle_timeout (before, the
// admin listener had no idle timeout at all); the SCIM listener's too.
func TestIdleConnectionsClosed(t *testing.T) {
	a := limitsApp(t, func(c *Config) {
		c.Admin.IdleTimeout = 300 * time.Millisecond
		c.SCIM.Limits.IdleTimeout = 300 * time.Millisecond
	})
	for name, addr := range map[string]string{"admin": a.AdminAddr(), "scim": a.SCIMAddr()} {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		path := "/healthz"
		if name == "scim" {
			path = "/scim/v2/ServiceProviderConfig"
		}
		if status, err := rawGet(conn, path, 5*time.Second); err != nil || status != 200 {
			t.Fatalf("%s: %d %v", name, status, err)
		}
		took := closedWithin(t, conn, 5*time.Second)
		conn.Close()
		if took > 2*time.Second {
			t.Errorf("%s: idle connection closed after %s, want about 300 ms", name, took)
		}
	}
}

// The limits reach the servers as configured (defaults of the example).
func TestListenerLimitsDefaults(t *testing.T) {
	a := limitsApp(t, func(*Config) {})
	if a.scimSrv.ReadTimeout != 30*time.Second || a.scimSrv.WriteTimeout != 60*time.Second || a.scimSrv.IdleTimeout != 2*time.Minute {
		t.Errorf("scim server timeouts: read %s write %s idle %s", a.scimSrv.ReadTimeout, a.scimSrv.WriteTimeout, a.scimSrv.IdleTimeout)
	}
	if a.adminSrv.ReadTimeout != 30*time.Second || a.adminSrv.WriteTimeout != 2*time.Minute || a.adminSrv.IdleTimeout != time.Minute {
		t.Errorf("admin server timeouts: read %s write %s idle %s", a.adminSrv.ReadTimeout, a.adminSrv.WriteTimeout, a.adminSrv.IdleTimeout)
	}
}

// the probes and /metrics answer whatever the admin
// listener's other clients do. 300 waiting /v1/events consumers and 300
// connections that never finish their request headers, on a listener whose
// admin.max_connections is 256, leave /healthz, /readyz and /metrics
// answering at once; long polls beyond their own bound get 503 with
// Retry-After.
func TestProbesAnswerBesideLongPollsAndHalfOpenConnections(t *testing.T) {
	defer func(n int) { maxLongPolls = n }(maxLongPolls)
	maxLongPolls = 300
	a := limitsApp(t, func(c *Config) { c.API.Tokens = []string{apiTestToken}; c.Admin.MaxConnections = 256 })
	addr := a.AdminAddr()
	poll := func() (net.Conn, error) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			return nil, err
		}
		_, err = fmt.Fprintf(conn, "GET /v1/events?after=0&wait=60s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", apiTestToken)
		return conn, err
	}
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 300 {
		conn, err := poll()
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
	}
	for range 300 { // half-sent headers
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n")
		conns = append(conns, conn)
	}
	// Wait until the 300 polls hold their slots (on a loaded machine the
	// server takes a while to read 600 connections' requests): the next
	// one is refused.
	deadline := time.Now().Add(60 * time.Second)
	for len(a.polls) < cap(a.polls) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	var status int
	var retry string
	for time.Now().Before(deadline) {
		conn, err := poll()
		if err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err == nil {
			status, retry = resp.StatusCode, resp.Header.Get("Retry-After")
			resp.Body.Close()
		}
		conn.Close()
		if status == http.StatusServiceUnavailable {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if status != http.StatusServiceUnavailable || retry == "" {
		t.Fatalf("the long poll beyond the bound: %d, Retry-After %q; want 503 with Retry-After", status, retry)
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		code, err := rawGet(conn, path, time.Second)
		conn.Close()
		if err != nil || code != 200 {
			t.Errorf("%s beside 300 long polls and 300 half-open connections: %d %v after %s", path, code, err, time.Since(start).Round(time.Millisecond))
		}
	}
}
