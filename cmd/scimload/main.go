// Command scimload drives identity-provider-shaped SCIM traffic against any
// SCIM 2.0 base URL and prints, per request kind, the count, the errors,
// p50/p90/p99 latency and the rate: what to run to size a deployment, and
// what produced the SCIM figures in docs/performance.md.
//
//	scimload -url http://127.0.0.1:8080/scim/v2 -token "$TOKEN" -mix okta -clients 16 -duration 60s
//
// Mixes:
//
//	okta    per user: `userName eq` pre-check, POST, full PUT, PATCH
//	        deactivate; every fifth user a PATCH adding -group-size members
//	        to the client's group (docs/performance.md's run)
//	entra   per user: `userName eq` pre-check, POST, PATCH replacing
//	        attributes by path, PATCH active "False"; every fifth user a
//	        PATCH adding -group-size members and Entra's membership check
//	        (`id eq … and members eq …`, excludedAttributes=members)
//	import  Okta's import and lookups against the stored users: pages of
//	        100 at random startIndex and `userName eq` of stored users
//	        (flatness from 1,000 to 100,000 users: -users 100000)
//
// -users N first creates N users (the pool group adds draw members from;
// the import mix reads them). With -receive ADDR scimload also runs a
// webhook receiver (point the gateway's target at http://ADDR/hooks; with
// -secret it verifies Standard Webhooks signatures) and reports delivery:
// events received, commit-to-receiver latency (from each event's
// occurred_at, stamped when its transaction commits), and how long after
// the run the backlog took to drain — read from the admin status when
// -admin is given, else until the receiver has been idle for a second.
//
// Only loopback or your own test hosts: scimload sends as fast as the
// server answers.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/scimgate/scimgate/outbox"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "scimload:", err)
		os.Exit(1)
	}
}

// options are scimload's flags.
type options struct {
	base, token, mix     string
	clients, users       int
	groupSize, rounds    int
	duration             time.Duration
	receive, secret      string
	admin, adminToken    string
	jsonOut, failOnError bool
}

func parse(args []string, out io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("scimload", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&o.base, "url", "http://127.0.0.1:8080/scim/v2", "SCIM base URL")
	fs.StringVar(&o.token, "token", "", "bearer token (default: $SCIMLOAD_TOKEN, then $SCIMGATE_SCIM_TOKEN)")
	fs.StringVar(&o.mix, "mix", "okta", "okta, entra or import")
	fs.IntVar(&o.clients, "clients", 16, "concurrent clients")
	fs.DurationVar(&o.duration, "duration", 30*time.Second, "how long the mix runs")
	fs.IntVar(&o.rounds, "rounds", 0, "stop after this many rounds in all (0: run for -duration)")
	fs.IntVar(&o.users, "users", 1000, "users created before the mix (the member pool; what import reads)")
	fs.IntVar(&o.groupSize, "group-size", 50, "members added by one group PATCH")
	fs.StringVar(&o.receive, "receive", "", "run a webhook receiver on this address (e.g. 127.0.0.1:9100) and report delivery")
	fs.StringVar(&o.secret, "secret", "", "whsec_… secret to verify deliveries with (default: $SCIMLOAD_WEBHOOK_SECRET)")
	fs.StringVar(&o.admin, "admin", "", "admin base URL (e.g. http://127.0.0.1:8081) to read the backlog from")
	fs.StringVar(&o.adminToken, "admin-token", "", "admin token (default: $SCIMGATE_ADMIN_TOKEN)")
	fs.BoolVar(&o.jsonOut, "json", false, "print the summary as JSON")
	fs.BoolVar(&o.failOnError, "fail-on-error", false, "exit 1 when any request failed")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	o.token = firstNonEmpty(o.token, os.Getenv("SCIMLOAD_TOKEN"), os.Getenv("SCIMGATE_SCIM_TOKEN"))
	o.secret = firstNonEmpty(o.secret, os.Getenv("SCIMLOAD_WEBHOOK_SECRET"))
	o.adminToken = firstNonEmpty(o.adminToken, os.Getenv("SCIMGATE_ADMIN_TOKEN"))
	switch {
	case o.token == "":
		return o, errors.New("no token: pass -token or set SCIMLOAD_TOKEN")
	case o.mix != "okta" && o.mix != "entra" && o.mix != "import":
		return o, fmt.Errorf("-mix %q: want okta, entra or import", o.mix)
	case o.clients < 1 || o.groupSize < 1 || o.users < 0:
		return o, errors.New("-clients and -group-size must be at least 1, -users at least 0")
	case o.mix == "import" && o.users < 100:
		return o, errors.New("-mix import reads stored users: give -users 100 or more")
	}
	o.base = strings.TrimRight(o.base, "/")
	return o, nil
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

func run(ctx context.Context, args []string, out io.Writer) error {
	o, err := parse(args, out)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	l := &load{o: o, stats: map[string]*kindStats{}, hc: &http.Client{Timeout: 30 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: o.clients + 4, MaxConnsPerHost: o.clients + 4}}}
	l.run = fmt.Sprintf("%x", rand.Uint32())
	var rec *receiver
	if o.receive != "" {
		if rec, err = startReceiver(o.receive, o.secret); err != nil {
			return err
		}
		defer rec.close()
	}
	if err := l.preload(ctx); err != nil {
		return err
	}
	if rec != nil { // the preload's events are not the mix's
		rec.drain(ctx, l, time.Now())
		rec.reset()
	}
	start := time.Now()
	l.mixRun(ctx)
	elapsed := time.Since(start)
	sum := l.summary(elapsed)
	if rec != nil {
		sum.Delivery = rec.report(ctx, l, start)
	}
	if o.jsonOut {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(sum); err != nil {
			return err
		}
	} else {
		sum.print(out)
	}
	if o.failOnError && sum.Total.Errors > 0 {
		return fmt.Errorf("%d requests failed", sum.Total.Errors)
	}
	return ctx.Err()
}

// load is one run: the client, the per-kind statistics, the member pool.
type load struct {
	o     options
	hc    *http.Client
	run   string // tags the names this run creates
	mu    sync.Mutex
	stats map[string]*kindStats
	pool  []string // user ids for group adds: the preloaded users, then the mix's (under mu)
	seq   atomic.Int64
}

type kindStats struct {
	lat      []time.Duration
	errors   int
	firstErr string
}

// do sends one request of kind, records it, and returns the body when the
// status is one of want.
func (l *load) do(ctx context.Context, kind, method, path, body string, want ...int) ([]byte, bool) {
	req, err := http.NewRequestWithContext(ctx, method, l.o.base+path, strings.NewReader(body))
	if err != nil {
		l.record(kind, 0, err.Error())
		return nil, false
	}
	req.Header.Set("Authorization", "Bearer "+l.o.token)
	req.Header.Set("Accept", "application/scim+json")
	if body != "" {
		req.Header.Set("Content-Type", "application/scim+json")
	}
	t0 := time.Now()
	resp, err := l.hc.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			l.record(kind, 0, err.Error())
		}
		return nil, false
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	d := time.Since(t0)
	if err == nil && slices.Contains(want, resp.StatusCode) {
		l.record(kind, d, "")
		return raw, true
	}
	if ctx.Err() == nil {
		l.record(kind, d, fmt.Sprintf("%s %s: %d %.200s", method, strings.SplitN(path, "?", 2)[0], resp.StatusCode, raw))
	}
	return nil, false
}

func (l *load) record(kind string, d time.Duration, failure string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := l.stats[kind]
	if k == nil {
		k = &kindStats{}
		l.stats[kind] = k
	}
	if failure != "" {
		k.errors++
		if k.firstErr == "" {
			k.firstErr = failure
		}
		return
	}
	k.lat = append(k.lat, d)
}

// preload creates o.users users at full concurrency.
func (l *load) preload(ctx context.Context) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	ids := make([]string, l.o.users)
	for range l.o.clients {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < l.o.users && ctx.Err() == nil; i = int(next.Add(1)) - 1 {
				ids[i] = l.createUser(ctx, "preload", l.userName("pool", i))
			}
		})
	}
	wg.Wait()
	for _, id := range ids {
		if id != "" {
			l.pool = append(l.pool, id)
		}
	}
	if len(l.pool) < l.o.users {
		return fmt.Errorf("preload created %d of %d users: %s", len(l.pool), l.o.users, l.stats["preload"].firstErr)
	}
	return ctx.Err()
}

func (l *load) userName(what string, i int) string {
	return fmt.Sprintf("scimload.%s.%s.%d@example.com", l.run, what, i)
}

func (l *load) createUser(ctx context.Context, kind, name string) string {
	body := oktaUser(name, "Test")
	if l.o.mix == "entra" {
		body = entraUser(name)
	}
	raw, ok := l.do(ctx, kind, "POST", "/Users", body, http.StatusCreated)
	if !ok {
		return ""
	}
	var r struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(raw, &r)
	if kind != "preload" && r.ID != "" {
		l.mu.Lock()
		l.pool = append(l.pool, r.ID)
		l.mu.Unlock()
	}
	return r.ID
}

// mixRun runs the clients until -duration or -rounds.
func (l *load) mixRun(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, l.o.duration)
	defer cancel()
	var rounds atomic.Int64
	more := func() bool {
		return ctx.Err() == nil && (l.o.rounds == 0 || rounds.Add(1) <= int64(l.o.rounds))
	}
	var wg sync.WaitGroup
	for c := range l.o.clients {
		wg.Go(func() {
			var group string
			cursor := c * len(l.pool) / l.o.clients // where this client's group takes members from
			if l.o.mix != "import" {
				raw, ok := l.do(ctx, "group-create", "POST", "/Groups",
					fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"scimload %s %d","members":[]}`, l.run, c),
					http.StatusCreated)
				if !ok {
					return
				}
				var g struct {
					ID string `json:"id"`
				}
				_ = json.Unmarshal(raw, &g)
				group = g.ID
			}
			for i := 0; more(); i++ {
				switch l.o.mix {
				case "okta":
					l.oktaRound(ctx, group, i, &cursor)
				case "entra":
					l.entraRound(ctx, group, i, &cursor)
				case "import":
					l.importRound(ctx)
				}
			}
		})
	}
	wg.Wait()
}

const patchOp = `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[`

func (l *load) oktaRound(ctx context.Context, group string, i int, cursor *int) {
	name := l.userName("okta", int(l.seq.Add(1)))
	l.do(ctx, "filter", "GET", "/Users?filter="+url.QueryEscape(`userName eq "`+name+`"`)+"&startIndex=1&count=100", "", http.StatusOK)
	id := l.createUser(ctx, "create", name)
	if id == "" {
		return
	}
	l.do(ctx, "replace", "PUT", "/Users/"+id, oktaUser(name, "Another"), http.StatusOK)
	l.do(ctx, "deactivate", "PATCH", "/Users/"+id, patchOp+`{"op":"replace","value":{"active":false}}]}`, http.StatusOK, http.StatusNoContent)
	if i%5 == 4 {
		l.do(ctx, "group-add", "PATCH", "/Groups/"+group, patchOp+`{"op":"add","path":"members","value":[`+l.members(cursor)+`]}]}`,
			http.StatusOK, http.StatusNoContent)
	}
}

func (l *load) entraRound(ctx context.Context, group string, i int, cursor *int) {
	name := l.userName("entra", int(l.seq.Add(1)))
	l.do(ctx, "filter", "GET", "/Users?filter="+url.QueryEscape(`userName eq "`+name+`"`), "", http.StatusOK)
	id := l.createUser(ctx, "create", name)
	if id == "" {
		return
	}
	l.do(ctx, "update", "PATCH", "/Users/"+id, patchOp+`{"op":"Replace","path":"displayName","value":"Entra Changed"},{"op":"Replace","path":"title","value":"Engineer"}]}`,
		http.StatusOK, http.StatusNoContent)
	l.do(ctx, "deactivate", "PATCH", "/Users/"+id, patchOp+`{"op":"Replace","path":"active","value":"False"}]}`, http.StatusOK, http.StatusNoContent)
	if i%5 == 4 {
		l.do(ctx, "group-add", "PATCH", "/Groups/"+group, patchOp+`{"op":"Add","path":"members","value":[`+l.members(cursor)+`]}]}`,
			http.StatusOK, http.StatusNoContent)
		l.do(ctx, "member-check", "GET", "/Groups?filter="+url.QueryEscape(`id eq "`+group+`" and members eq "`+id+`"`)+"&excludedAttributes=members", "", http.StatusOK)
	}
}

func (l *load) importRound(ctx context.Context) {
	n := len(l.pool)
	l.do(ctx, "import-page", "GET", fmt.Sprintf("/Users?startIndex=%d&count=100", 1+rand.IntN(max(1, n/100))*100), "", http.StatusOK)
	l.do(ctx, "filter", "GET", "/Users?filter="+url.QueryEscape(`userName eq "`+l.userName("pool", rand.IntN(n))+`"`)+"&startIndex=1&count=100", "", http.StatusOK)
}

// members is the next -group-size member values from the pool, from the
// client's cursor on: each of its group's adds brings users the group does
// not have yet, until the pool (which the mix's creates grow) comes round.
func (l *load) members(cursor *int) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	vals := make([]string, 0, l.o.groupSize)
	for range min(l.o.groupSize, len(l.pool)) {
		vals = append(vals, fmt.Sprintf(`{"value":%q}`, l.pool[*cursor%len(l.pool)]))
		*cursor++
	}
	return strings.Join(vals, ",")
}

func oktaUser(name, given string) string {
	return fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":%q,
 "name":{"givenName":%q,"familyName":"User"},"emails":[{"primary":true,"value":%q,"type":"work"}],
 "displayName":"Test User","locale":"en-US","externalId":%q,"groups":[],"active":true}`,
		name, given, name, "00u"+strings.NewReplacer("@", "", ".", "").Replace(name))
}

func entraUser(name string) string {
	return fmt.Sprintf(`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
 "externalId":%q,"userName":%q,"active":true,"displayName":"Entra User","emails":[{"primary":true,"type":"work","value":%q}],
 "name":{"givenName":"Entra","familyName":"User","formatted":"Entra User"},
 "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"Engineering","employeeNumber":"1"}}`,
		strings.SplitN(name, "@", 2)[0], name, name)
}

// ---- the summary ----

// Summary is what a run measured.
type Summary struct {
	Mix      string    `json:"mix"`
	Clients  int       `json:"clients"`
	Seconds  float64   `json:"seconds"`
	Kinds    []Kind    `json:"kinds"`
	Total    Kind      `json:"total"`
	Delivery *Delivery `json:"delivery,omitempty"`
}

// Kind is one request kind's figures (latencies in milliseconds).
type Kind struct {
	Kind       string  `json:"kind"`
	Count      int     `json:"count"`
	Errors     int     `json:"errors"`
	P50        float64 `json:"p50_ms"`
	P90        float64 `json:"p90_ms"`
	P99        float64 `json:"p99_ms"`
	Rate       float64 `json:"rate_per_s"`
	FirstError string  `json:"first_error,omitempty"`
}

func (l *load) summary(elapsed time.Duration) Summary {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := Summary{Mix: l.o.mix, Clients: l.o.clients, Seconds: elapsed.Seconds(), Total: Kind{Kind: "total (mix)"}}
	var all []time.Duration
	for name, k := range l.stats {
		kd := kindOf(name, k.lat, k.errors, elapsed)
		kd.FirstError = k.firstErr
		if name == "preload" {
			kd.Rate = 0 // not part of the timed run
		} else {
			all = append(all, k.lat...)
			s.Total.Errors += k.errors
		}
		s.Kinds = append(s.Kinds, kd)
	}
	slices.SortFunc(s.Kinds, func(a, b Kind) int { return strings.Compare(a.Kind, b.Kind) })
	t := kindOf("total (mix)", all, s.Total.Errors, elapsed)
	s.Total = t
	return s
}

func kindOf(name string, lat []time.Duration, errs int, elapsed time.Duration) Kind {
	k := Kind{Kind: name, Count: len(lat), Errors: errs}
	if len(lat) > 0 {
		lat = slices.Clone(lat)
		slices.Sort(lat)
		k.P50, k.P90, k.P99 = msAt(lat, .5), msAt(lat, .9), msAt(lat, .99)
		k.Rate = float64(len(lat)) / elapsed.Seconds()
	}
	return k
}

func msAt(sorted []time.Duration, q float64) float64 {
	return float64(sorted[min(len(sorted)-1, int(q*float64(len(sorted))))].Microseconds()) / 1000
}

func (s Summary) print(out io.Writer) {
	fmt.Fprintf(out, "scimload: %s mix, %d clients, %.1f s\n", s.Mix, s.Clients, s.Seconds)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "kind\tcount\terrors\tp50 ms\tp90 ms\tp99 ms\trate/s\t")
	for _, k := range append(s.Kinds, s.Total) {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.2f\t%.2f\t%.2f\t%.1f\t\n", k.Kind, k.Count, k.Errors, k.P50, k.P90, k.P99, k.Rate)
	}
	tw.Flush()
	for _, k := range s.Kinds {
		if k.FirstError != "" {
			fmt.Fprintf(out, "first %s error: %s\n", k.Kind, k.FirstError)
		}
	}
	if d := s.Delivery; d != nil {
		fmt.Fprintf(out, "delivery: %d events received during the run (%.0f/s), %d bad signatures; commit→receiver p50 %.1f ms, p90 %.1f ms, p99 %.1f ms\n",
			d.DuringRun, d.Rate, d.BadSignatures, d.P50, d.P90, d.P99)
		fmt.Fprintf(out, "          backlog drained %.2f s after the run (%s); %d events received in all, %d of them again (at least once)\n",
			d.DrainSeconds, d.DrainSource, d.Received, d.Duplicates)
	}
}

// ---- delivery ----

// Delivery is what the receiver saw.
type Delivery struct {
	Received      int64   `json:"received"`
	Duplicates    int64   `json:"duplicates"` // redeliveries of an event already received (at least once)
	DuringRun     int64   `json:"during_run"`
	Rate          float64 `json:"rate_per_s"`
	BadSignatures int64   `json:"bad_signatures"`
	P50           float64 `json:"commit_to_receiver_p50_ms"`
	P90           float64 `json:"commit_to_receiver_p90_ms"`
	P99           float64 `json:"commit_to_receiver_p99_ms"`
	DrainSeconds  float64 `json:"drain_seconds"`
	DrainSource   string  `json:"drain_source"`
}

// receiver is a webhook endpoint that verifies and times deliveries.
type receiver struct {
	secret  string
	srv     *http.Server
	mu      sync.Mutex
	lat     []time.Duration
	n, bad  atomic.Int64
	last    atomic.Int64 // unix nanos of the last arrival
	counted bool         // lat collects (off after the run)
	seen    map[string]bool
	dups    int64
}

func startReceiver(addr, secret string) (*receiver, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("receiver: %w", err)
	}
	r := &receiver{secret: secret, counted: true, seen: map[string]bool{}}
	r.srv = &http.Server{Handler: http.HandlerFunc(r.serve), ReadHeaderTimeout: 10 * time.Second}
	go r.srv.Serve(ln)
	return r, nil
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 4<<20))
	now := time.Now()
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if r.secret != "" {
		if err := outbox.Verify([]string{r.secret}, req.Header, body, now); err != nil {
			r.bad.Add(1)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
	}
	var env struct {
		OccurredAt time.Time `json:"occurred_at"`
	}
	r.mu.Lock()
	if id := req.Header.Get(outbox.HeaderID); r.seen[id] {
		r.dups++
	} else {
		r.seen[id] = true
	}
	if json.Unmarshal(body, &env) == nil && !env.OccurredAt.IsZero() && r.counted {
		r.lat = append(r.lat, now.Sub(env.OccurredAt))
	}
	r.mu.Unlock()
	r.n.Add(1)
	r.last.Store(now.UnixNano())
	w.WriteHeader(http.StatusNoContent)
}

func (r *receiver) reset() {
	r.mu.Lock()
	r.lat = r.lat[:0]
	r.dups = 0
	r.mu.Unlock()
	r.n.Store(0)
}

func (r *receiver) close() { _ = r.srv.Close() }

// report stops counting latencies, waits for the backlog to drain and
// says what the receiver saw.
func (r *receiver) report(ctx context.Context, l *load, start time.Time) *Delivery {
	end := time.Now()
	r.mu.Lock()
	r.counted = false
	lat := slices.Clone(r.lat)
	r.mu.Unlock()
	d := &Delivery{DuringRun: r.n.Load()}
	d.Rate = float64(d.DuringRun) / end.Sub(start).Seconds()
	if len(lat) > 0 {
		slices.Sort(lat)
		d.P50, d.P90, d.P99 = msAt(lat, .5), msAt(lat, .9), msAt(lat, .99)
	}
	d.DrainSeconds, d.DrainSource = r.drain(ctx, l, end)
	d.Received, d.BadSignatures = r.n.Load(), r.bad.Load()
	r.mu.Lock()
	d.Duplicates = r.dups
	r.mu.Unlock()
	return d
}

// drain waits (at most 5 minutes) until the gateway has nothing left to
// deliver and returns how long after since that was: with -admin, until its
// status shows no backlog and nothing arrives for a quarter of a second
// after (the status is published by the dispatcher's loop, so a zero read
// just after the last commit may not count events it has yet to pull);
// without, until the receiver has been idle for a second. The time is that
// of the last arrival or of the zero backlog, whichever is later.
func (r *receiver) drain(ctx context.Context, l *load, since time.Time) (float64, string) {
	deadline := time.Now().Add(5 * time.Minute)
	last := func() time.Time { return time.Unix(0, max(r.last.Load(), since.UnixNano())) }
	if l.o.admin != "" {
		for time.Now().Before(deadline) && ctx.Err() == nil {
			backlog, err := l.backlog(ctx)
			if err != nil {
				return time.Since(since).Seconds(), "admin status unreadable: " + err.Error()
			}
			if backlog > 0 {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			zero := time.Now()
			time.Sleep(250 * time.Millisecond)
			if again, err := l.backlog(ctx); err == nil && again == 0 && !last().After(zero) {
				end := zero
				if a := last(); a.After(end) {
					end = a
				}
				return end.Sub(since).Seconds(), "admin status: backlog 0"
			}
		}
		return time.Since(since).Seconds(), "admin status: backlog not 0 after 5 minutes"
	}
	for time.Now().Before(deadline) && ctx.Err() == nil && time.Since(last()) < time.Second {
		time.Sleep(10 * time.Millisecond)
	}
	return max(0, time.Unix(0, r.last.Load()).Sub(since).Seconds()), "last arrival; the receiver then idle for 1 s"
}

// backlog sums the targets' backlogs from GET /admin/status.
func (l *load) backlog(ctx context.Context) (int, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", strings.TrimRight(l.o.admin, "/")+"/admin/status", nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+l.o.adminToken)
	resp, err := l.hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("status %d", resp.StatusCode)
	}
	var st struct {
		Targets []struct {
			Backlog int `json:"backlog"`
		} `json:"targets"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return 0, err
	}
	n := 0
	for _, t := range st.Targets {
		n += t.Backlog
	}
	return n, nil
}
