package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
)

// natsServer is an in-process NATS server with JetStream on 127.0.0.1,
// stopped when the test ends. restart brings it back on the same port and
// store directory.
type natsServer struct {
	t    testing.TB
	opts server.Options
	srv  *server.Server
}

func startNATS(t testing.TB, mod func(*server.Options)) *natsServer {
	t.Helper()
	ns := &natsServer{t: t, opts: server.Options{
		Host: "127.0.0.1", Port: freeTCPPort(t), JetStream: true, StoreDir: t.TempDir(),
		JetStreamMaxMemory: 64 << 20, JetStreamMaxStore: 1 << 30, NoLog: true, NoSigs: true,
	}}
	if mod != nil {
		mod(&ns.opts)
	}
	ns.start()
	t.Cleanup(ns.stop)
	return ns
}

func (ns *natsServer) start() {
	ns.t.Helper()
	opts := ns.opts // NewServer keeps and changes the options
	srv, err := server.NewServer(&opts)
	if err != nil {
		ns.t.Fatalf("nats server: %v", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		ns.t.Fatal("nats server not ready")
	}
	ns.srv = srv
}

func (ns *natsServer) stop() {
	if ns.srv != nil {
		ns.srv.Shutdown()
		ns.srv.WaitForShutdown()
		ns.srv = nil
	}
}

func (ns *natsServer) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", ns.opts.Port) }

// js connects a client for the test's own look at the stream.
func (ns *natsServer) js(t testing.TB, opts ...nats.Option) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(ns.url(), opts...)
	if err != nil {
		t.Fatalf("test client: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// natsMessages reads every message of the stream, in stream order.
func natsMessages(t testing.TB, js jetstream.JetStream, stream string) []streamMsg {
	t.Helper()
	ctx := t.Context()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatalf("stream %s: %v", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []streamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatalf("get %d: %v", seq, err)
		}
		h := map[string]string{}
		for k, v := range m.Header {
			h[k] = v[0]
		}
		out = append(out, streamMsg{Pos: m.Sequence, Subject: m.Subject, Header: h, Body: m.Data, Time: m.Time})
	}
	return out
}

func natsCount(t testing.TB, js jetstream.JetStream, stream string) uint64 {
	t.Helper()
	st, err := js.Stream(t.Context(), stream)
	if err != nil {
		return 0
	}
	info, err := st.Info(t.Context())
	if err != nil {
		return 0
	}
	return info.State.Msgs
}

func natsTarget(url string, mod func(*NATSConfig)) Target {
	c := &NATSConfig{URLs: []string{url}, Stream: "SCIMGATE", CreateStream: true}
	if mod != nil {
		mod(c)
	}
	return Target{Type: TypeNATS, NATS: c}
}

// TestNATSOktaRun delivers an Okta-shaped run to a stream the target
// creates: every event once, the envelope as the body, the headers, the
// subject from the template, and per-resource order.
func TestNATSOktaRun(t *testing.T) {
	ns := startNATS(t, nil)
	db := mustOpenDB(t)
	d := newTestDispatcher(t, db, streamConfig(natsTarget(ns.url()+", "+ns.url(), func(c *NATSConfig) {
		c.MaxAge = 48 * time.Hour
	})))
	runDispatcher(t, d)
	sent := oktaRun(t, db, d, 60, 4)

	js := ns.js(t)
	waitUntil(t, 20*time.Second, fmt.Sprintf("%d messages in the stream", len(sent)), func() bool {
		return natsCount(t, js, "SCIMGATE") >= uint64(len(sent))
	})
	st := waitStatus(t, d, 5*time.Second, "backlog drained", func(st TargetStatus) bool { return st.Backlog == 0 })
	if st.DeadLetters != 0 || st.Delivered != uint64(len(sent)) {
		t.Errorf("status: %d delivered, %d dead letters; want %d, 0", st.Delivered, st.DeadLetters, len(sent))
	}
	if got, want := st.URL, fmt.Sprintf("nats://127.0.0.1:%d,127.0.0.1:%d stream SCIMGATE", ns.opts.Port, ns.opts.Port); got != want {
		t.Errorf("status URL = %q, want %q", got, want)
	}
	got := natsMessages(t, js, "SCIMGATE")
	checkStream(t, sent, got)
	byID := map[string]Event{}
	for _, ev := range sent {
		byID[ev.ID] = ev
	}
	for _, m := range got {
		ev := byID[m.id()]
		if want := "scimgate." + ev.Type; m.Subject != want {
			t.Errorf("event %s: subject %q, want %q", ev.ID, m.Subject, want)
		}
		if got := m.Header[jetstream.MsgIDHeader]; got != ev.ID {
			t.Errorf("event %s: Nats-Msg-Id = %q, want the event id", ev.ID, got)
		}
		if _, ok := m.Header[HeaderSignature]; ok {
			t.Errorf("event %s: signed although the target has no secrets", ev.ID)
		}
	}

	// The stream was created with the documented settings.
	s, err := js.Stream(t.Context(), "SCIMGATE")
	if err != nil {
		t.Fatal(err)
	}
	c := s.CachedInfo().Config
	if !slices.Equal(c.Subjects, []string{"scimgate.>"}) || c.Storage != jetstream.FileStorage ||
		c.Retention != jetstream.LimitsPolicy || c.Discard != jetstream.DiscardOld ||
		c.Duplicates != 10*time.Minute || c.MaxAge != 48*time.Hour || c.Replicas != 1 {
		t.Errorf("created stream config: subjects %v, storage %v, retention %v, discard %v, duplicates %v, max age %v, replicas %d",
			c.Subjects, c.Storage, c.Retention, c.Discard, c.Duplicates, c.MaxAge, c.Replicas)
	}
}

// TestNATSSignedAndTemplated checks a custom subject template, target
// headers and Standard Webhooks signatures on a stream the operator made.
func TestNATSSignedAndTemplated(t *testing.T) {
	ns := startNATS(t, nil)
	js := ns.js(t)
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "IDP", Subjects: []string{"idp.>"}}); err != nil {
		t.Fatal(err)
	}
	secret := mustSecret(t)
	db := mustOpenDB(t)
	tg := natsTarget(ns.url(), func(c *NATSConfig) {
		c.Stream, c.CreateStream, c.Subject = "IDP", false, "idp.{kind}.v1.{action}"
	})
	tg.Secrets, tg.Headers = []string{secret}, map[string]string{"X-Tenant": "acme"}
	d := newTestDispatcher(t, db, streamConfig(tg))
	runDispatcher(t, d)
	sent := enqueue(t, db, d, userEvent("user.created", "u1"), memberEvent("group.member_added", "g1", "u1"))
	waitUntil(t, 10*time.Second, "2 messages", func() bool { return natsCount(t, js, "IDP") >= 2 })
	got := natsMessages(t, js, "IDP")
	checkStream(t, sent, got)
	for i, want := range []string{"idp.user.v1.created", "idp.group.v1.member_added"} {
		if got[i].Subject != want {
			t.Errorf("message %d subject %q, want %q", i, got[i].Subject, want)
		}
		if got[i].Header["X-Tenant"] != "acme" {
			t.Errorf("message %d: target header missing: %v", i, got[i].Header)
		}
		h := http.Header{}
		for k, v := range got[i].Header {
			h.Set(k, v)
		}
		if err := specVerify(secret, h, got[i].Body); err != nil {
			t.Errorf("message %d: signature: %v", i, err)
		}
	}
	if st := waitStatus(t, d, 5*time.Second, "delivered", func(st TargetStatus) bool { return st.Delivered == 2 }); st.URL != "nats://127.0.0.1:"+fmt.Sprint(ns.opts.Port)+" stream IDP" {
		t.Errorf("status URL %q", st.URL)
	}
}

// TestNATSServerDown stops the server while events are committed, and
// starts it again on the same address and store: everything arrives, in
// order, and nothing is dead-lettered.
func TestNATSServerDown(t *testing.T) {
	ns := startNATS(t, nil)
	db := mustOpenDB(t)
	d := newTestDispatcher(t, db, streamConfig(natsTarget(ns.url(), nil)))
	runDispatcher(t, d)
	sent := enqueue(t, db, d, userEvent("user.created", "u1"), userEvent("user.created", "u2"))
	js := ns.js(t)
	waitUntil(t, 10*time.Second, "first events", func() bool { return natsCount(t, js, "SCIMGATE") == 2 })

	ns.stop()
	for i := range 20 {
		sent = append(sent, enqueue(t, db, d, userEvent("user.updated", fmt.Sprint("u", i%4)))...)
	}
	st := waitStatus(t, d, 10*time.Second, "a failed attempt", func(st TargetStatus) bool { return st.LastError != "" && st.Backlog > 0 })
	if !strings.HasPrefix(st.LastError, "nats: ") {
		t.Errorf("last_error %q does not say it is about nats", st.LastError)
	}
	t.Logf("while down: %s", st.LastError)
	for range 2 { // two retries against the dead server
		at := st.LastErrorAt
		st = waitStatus(t, d, 10*time.Second, "a retry against the dead server", func(st TargetStatus) bool { return st.LastErrorAt.After(at) })
	}

	ns.start()
	js = ns.js(t)
	waitUntil(t, 20*time.Second, "every event after the restart", func() bool { return natsCount(t, js, "SCIMGATE") >= uint64(len(sent)) })
	st = waitStatus(t, d, 5*time.Second, "backlog drained", func(st TargetStatus) bool { return st.Backlog == 0 })
	if st.DeadLetters != 0 {
		t.Errorf("%d dead letters, want 0", st.DeadLetters)
	}
	checkStream(t, sent, natsMessages(t, js, "SCIMGATE"))
}

// TestNATSStreamMissing: without create_stream, a missing stream is retried
// with a reason that says so, and delivery starts once it exists.
func TestNATSStreamMissing(t *testing.T) {
	ns := startNATS(t, nil)
	db := mustOpenDB(t)
	d := newTestDispatcher(t, db, streamConfig(natsTarget(ns.url(), func(c *NATSConfig) { c.CreateStream = false })))
	runDispatcher(t, d)
	sent := enqueue(t, db, d, userEvent("user.created", "u1"))
	st := waitStatus(t, d, 10*time.Second, "a failed attempt", func(st TargetStatus) bool { return st.LastError != "" })
	if !strings.Contains(st.LastError, "stream SCIMGATE does not exist") || st.DeadLetters != 0 || st.Paused {
		t.Errorf("status %+v, want a retried 'does not exist'", st)
	}
	js := ns.js(t)
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "SCIMGATE", Subjects: []string{"scimgate.>"}}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "the event", func() bool { return natsCount(t, js, "SCIMGATE") == 1 })
	checkStream(t, sent, natsMessages(t, js, "SCIMGATE"))
}

// TestNATSStreamRecreated: with create_stream, a stream deleted while the
// gateway runs is created again by the next publish, which then succeeds.
func TestNATSStreamRecreated(t *testing.T) {
	ns := startNATS(t, nil)
	js := ns.js(t)
	db := mustOpenDB(t)
	d := newTestDispatcher(t, db, streamConfig(natsTarget(ns.url(), nil)))
	runDispatcher(t, d)
	enqueue(t, db, d, userEvent("user.created", "u1"))
	waitUntil(t, 10*time.Second, "first event", func() bool { return natsCount(t, js, "SCIMGATE") == 1 })
	if err := js.DeleteStream(t.Context(), "SCIMGATE"); err != nil {
		t.Fatal(err)
	}
	sent := enqueue(t, db, d, userEvent("user.updated", "u1"))
	st := waitStatus(t, d, 10*time.Second, "delivered", func(st TargetStatus) bool { return st.Delivered == 2 })
	if st.LastError != "" || st.DeadLetters != 0 {
		t.Errorf("status %+v: want the publish to succeed within its attempt", st)
	}
	checkStream(t, sent, natsMessages(t, js, "SCIMGATE"))
}

// TestNATSRejectedDeadLetterReplay: a message larger than the stream's
// max_msg_size and a subject outside the stream are dead-lettered with a
// reason; after the stream is fixed, Replay delivers them.
func TestNATSRejectedDeadLetterReplay(t *testing.T) {
	ns := startNATS(t, nil)
	js := ns.js(t)
	cfg := jetstream.StreamConfig{Name: "SCIMGATE", Subjects: []string{"scimgate.user.>"}, MaxMsgSize: 1024, Duplicates: 2 * time.Minute}
	if _, err := js.CreateStream(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	db := mustOpenDB(t)
	d := newTestDispatcher(t, db, streamConfig(natsTarget(ns.url(), nil))) // create_stream on: an existing stream is left alone
	runDispatcher(t, d)
	big := userEvent("user.updated", "u2")
	big.Data = json.RawMessage(fmt.Sprintf(`{"user":{"id":"u2","version":2,"bio":%q}}`, strings.Repeat("x", 2000)))
	sent := enqueue(t, db, d, userEvent("user.created", "u1"), big, Event{Type: "group.created", Resources: []string{"Group/g1"}, Data: json.RawMessage(`{"group":{"id":"g1"}}`)},
		userEvent("user.created", "u3"))
	st := waitStatus(t, d, 10*time.Second, "2 dead letters", func(st TargetStatus) bool { return st.DeadLetters == 2 && st.Backlog == 0 })
	if st.Delivered != 2 {
		t.Errorf("delivered %d, want the 2 small user events", st.Delivered)
	}
	dls, err := d.DeadLetters("app", 0, 10)
	if err != nil || len(dls) != 2 {
		t.Fatalf("DeadLetters = %d, %v", len(dls), err)
	}
	if got := dls[0]; got.Event.ID != sent[1].ID || got.Attempts != 1 || !strings.Contains(got.LastError, "exceeds stream SCIMGATE's max_msg_size (1024 bytes)") {
		t.Errorf("first dead letter: %s after %d attempts: %q", got.Event.Type, got.Attempts, got.LastError)
	}
	if got := dls[1]; got.Event.ID != sent[2].ID || got.Attempts != 1 || !strings.Contains(got.LastError, "subject scimgate.group.created is not in stream SCIMGATE (subjects scimgate.user.>)") {
		t.Errorf("second dead letter: %s after %d attempts: %q", got.Event.Type, got.Attempts, got.LastError)
	}

	cfg.Subjects, cfg.MaxMsgSize = []string{"scimgate.>"}, -1
	if _, err := js.UpdateStream(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	if n, err := d.Replay("app", nil); n != 2 || err != nil {
		t.Fatalf("Replay = %d, %v", n, err)
	}
	waitStatus(t, d, 10*time.Second, "replayed", func(st TargetStatus) bool { return st.Delivered == 4 && st.DeadLetters == 0 })
	got := natsMessages(t, js, "SCIMGATE")
	if len(got) != 4 {
		t.Fatalf("%d messages, want 4", len(got))
	}
	// The replayed ones come after the others; per resource nothing is out of order.
	checkStream(t, sent, got)
}

// TestNATSStreamFull: a stream that discards new messages at its limit
// refuses the publish; the event is retried (not dead-lettered) with the
// reason, and delivered once the limit is raised.
func TestNATSStreamFull(t *testing.T) {
	ns := startNATS(t, nil)
	js := ns.js(t)
	cfg := jetstream.StreamConfig{Name: "SCIMGATE", Subjects: []string{"scimgate.>"}, MaxMsgs: 2, Discard: jetstream.DiscardNew}
	if _, err := js.CreateStream(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	db := mustOpenDB(t)
	d := newTestDispatcher(t, db, streamConfig(natsTarget(ns.url(), nil)))
	runDispatcher(t, d)
	sent := enqueue(t, db, d, userEvent("user.created", "u1"))
	sent = append(sent, enqueue(t, db, d, userEvent("user.updated", "u1"))...)
	sent = append(sent, enqueue(t, db, d, userEvent("user.deactivated", "u1"))...)
	st := waitStatus(t, d, 10*time.Second, "a refused publish", func(st TargetStatus) bool { return st.Delivered == 2 && st.LastError != "" })
	if !strings.Contains(st.LastError, "stream SCIMGATE is full") || st.DeadLetters != 0 || st.Paused {
		t.Errorf("status %+v, want a retried 'is full'", st)
	}
	cfg.MaxMsgs = -1
	if _, err := js.UpdateStream(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, d, 10*time.Second, "delivered", func(st TargetStatus) bool { return st.Delivered == 3 })
	checkStream(t, sent, natsMessages(t, js, "SCIMGATE"))
}

// TestNATSDuplicateAbsorbed: the same event published twice (an ack lost,
// or a crash between the PubAck and the commit) is one message.
func TestNATSDuplicateAbsorbed(t *testing.T) {
	ns := startNATS(t, nil)
	js := ns.js(t)
	db := mustOpenDB(t)
	tg := natsTarget(ns.url(), nil)
	d := newTestDispatcher(t, db, streamConfig(tg))

	// The sender alone: twice the same event.
	snd := d.targets[0].sender
	ev := enqueue(t, db, nil, userEvent("user.created", "u1"))[0]
	for i := range 2 {
		if err := snd.Send(t.Context(), ev); err != nil {
			t.Fatalf("Send %d: %v", i, err)
		}
	}
	if n := natsCount(t, js, "SCIMGATE"); n != 1 {
		t.Errorf("%d messages after publishing one event twice, want 1", n)
	}

	// Through the dispatcher: every first attempt publishes and then
	// reports a failure, as if the PubAck had been lost; the retry
	// publishes again.
	var lost atomic.Int64
	var first sync.Map
	d.targets[0].sender = SenderFunc(func(ctx context.Context, ev Event) error {
		err := snd.Send(ctx, ev)
		if _, again := first.LoadOrStore(ev.ID, true); err == nil && !again {
			lost.Add(1)
			return errors.New("simulated lost PubAck")
		}
		return err
	})
	runDispatcher(t, d)
	var evs []Event
	for i := range 30 {
		evs = append(evs, userEvent("user.updated", fmt.Sprint("u", i%5)))
	}
	sent := append([]Event{ev}, enqueue(t, db, d, evs...)...)
	// ev too: it was enqueued after NewDispatcher.
	waitStatus(t, d, 10*time.Second, "delivered", func(st TargetStatus) bool { return st.Delivered == 31 && st.Backlog == 0 })
	if lost.Load() != 31 {
		t.Errorf("%d acks lost, want 31", lost.Load())
	}
	got := natsMessages(t, js, "SCIMGATE")
	if len(got) != 31 {
		t.Errorf("%d messages, want 31 (one per event)", len(got))
	}
	checkStream(t, sent, got)
}

// TestNATSRestartAfterPubAck: the gateway stops (or dies) after the
// server stored the messages but before the outbox recorded the
// deliveries; the next run publishes them again and the stream keeps one
// copy of each.
func TestNATSRestartAfterPubAck(t *testing.T) {
	ns := startNATS(t, nil)
	js := ns.js(t)
	db := mustOpenDB(t)
	cfg := streamConfig(natsTarget(ns.url(), nil))
	d1 := newTestDispatcher(t, db, cfg)
	snd := d1.targets[0].sender
	d1.targets[0].sender = SenderFunc(func(ctx context.Context, ev Event) error {
		if err := snd.Send(ctx, ev); err != nil {
			return err
		}
		<-ctx.Done() // stored; the outcome never reaches the outbox
		return ctx.Err()
	})
	stop := runDispatcher(t, d1)
	var evs []Event
	for i := range cfg.Concurrency { // one in flight per resource, all at once
		evs = append(evs, userEvent("user.updated", fmt.Sprint("u", i)))
	}
	sent := enqueue(t, db, d1, evs...)
	waitUntil(t, 10*time.Second, "every message stored", func() bool { return natsCount(t, js, "SCIMGATE") == uint64(len(sent)) })
	stop()
	if sts, _ := d1.Status(); sts[0].Backlog != len(sent) || sts[0].Delivered != 0 {
		t.Fatalf("after the stop: backlog %d, delivered %d; want %d pending", sts[0].Backlog, sts[0].Delivered, len(sent))
	}

	d2 := newTestDispatcher(t, db, cfg) // the restarted gateway
	runDispatcher(t, d2)
	waitStatus(t, d2, 10*time.Second, "redelivered", func(st TargetStatus) bool { return st.Delivered == uint64(len(sent)) && st.Backlog == 0 })
	got := natsMessages(t, js, "SCIMGATE")
	if len(got) != len(sent) {
		t.Errorf("%d messages after the redelivery, want %d", len(got), len(sent))
	}
	checkStream(t, sent, got)
}

// TestNATSAuthPausesTarget: refused credentials pause the target with the
// reason and keep every event pending; fixing the password file and
// resuming delivers them.
func TestNATSAuthPausesTarget(t *testing.T) {
	ns := startNATS(t, func(o *server.Options) {
		o.Users = []*server.User{{Username: "scimgate", Password: "s3cret-pass"}}
	})
	dir := t.TempDir()
	pwFile := writeSecretFile(t, dir, "nats-password", "wrong-pass")
	db := mustOpenDB(t)
	d := newTestDispatcher(t, db, streamConfig(natsTarget(ns.url(), func(c *NATSConfig) {
		c.User, c.PasswordFile = "scimgate", pwFile
	})))
	runDispatcher(t, d)
	sent := enqueue(t, db, d, userEvent("user.created", "u1"), userEvent("user.created", "u2"))
	st := waitStatus(t, d, 10*time.Second, "paused", func(st TargetStatus) bool { return st.Paused })
	if !strings.Contains(st.LastError, "refused the credentials") || !strings.Contains(strings.ToLower(st.LastError), "authorization violation") {
		t.Errorf("last_error %q, want the refusal", st.LastError)
	}
	// The pause says why (not a webhook's 410), and never the password.
	if strings.Contains(st.PausedReason, "410 Gone") || !strings.Contains(st.PausedReason, "nats:") {
		t.Errorf("paused_reason = %q, want the stream's refusal", st.PausedReason)
	}
	if strings.Contains(st.LastError, "wrong-pass") || strings.Contains(st.PausedReason, "wrong-pass") {
		t.Error("the password is in the status")
	}
	if st.Backlog != 2 || st.DeadLetters != 0 {
		t.Errorf("backlog %d, dead %d; want 2 pending, none dead", st.Backlog, st.DeadLetters)
	}

	writeSecretFile(t, dir, "nats-password", "s3cret-pass")
	if err := d.Resume("app"); err != nil {
		t.Fatal(err)
	}
	js := ns.js(t, nats.UserInfo("scimgate", "s3cret-pass"))
	waitUntil(t, 10*time.Second, "delivery after resume", func() bool { return natsCount(t, js, "SCIMGATE") == 2 })
	checkStream(t, sent, natsMessages(t, js, "SCIMGATE"))
}

// TestNATSPublishPermissionPauses: a user that may not publish a subject
// gets no PubAck; the server's permission violation pauses the target
// rather than burning retries.
func TestNATSPublishPermissionPauses(t *testing.T) {
	ns := startNATS(t, func(o *server.Options) {
		o.Users = []*server.User{
			{Username: "scimgate", Password: "pw", Permissions: &server.Permissions{
				Publish: &server.SubjectPermission{Allow: []string{"scimgate.user.>", "$JS.API.>"}},
			}},
			{Username: "admin", Password: "pw"},
		}
	})
	js := ns.js(t, nats.UserInfo("admin", "pw"))
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "SCIMGATE", Subjects: []string{"scimgate.>"}}); err != nil {
		t.Fatal(err)
	}
	db := mustOpenDB(t)
	tg := natsTarget(ns.url(), func(c *NATSConfig) { c.User, c.Password = "scimgate", "pw" })
	tg.Timeout = 500 * time.Millisecond
	d := newTestDispatcher(t, db, streamConfig(tg))
	runDispatcher(t, d)
	enqueue(t, db, d, userEvent("user.created", "u1"), Event{Type: "group.created", Resources: []string{"Group/g1"}, Data: json.RawMessage(`{}`)})
	st := waitStatus(t, d, 10*time.Second, "paused", func(st TargetStatus) bool { return st.Paused })
	if !strings.Contains(st.LastError, "Permissions Violation for Publish to \"scimgate.group.created\"") {
		t.Errorf("last_error %q, want the permission violation", st.LastError)
	}
	if st.Delivered != 1 || st.Backlog != 1 || st.DeadLetters != 0 {
		t.Errorf("delivered %d, backlog %d, dead %d; want 1, 1, 0", st.Delivered, st.Backlog, st.DeadLetters)
	}
}

// TestNATSCredentials connects with each kind of credential and TLS and
// delivers one event.
func TestNATSCredentials(t *testing.T) {
	dir := t.TempDir()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	seedFile := writeSecretFile(t, dir, "user.nk", string(seed))
	pki := newTestPKI(t)

	cases := []struct {
		name   string
		server func(*server.Options)
		target func(*NATSConfig)
		client []nats.Option
	}{
		{"token_file",
			func(o *server.Options) { o.Authorization = "tok-123" },
			func(c *NATSConfig) { c.TokenFile = writeSecretFile(t, dir, "token", "tok-123") },
			[]nats.Option{nats.Token("tok-123")}},
		{"nkey_seed_file",
			func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: pub}} },
			func(c *NATSConfig) { c.NKeySeedFile = seedFile },
			[]nats.Option{nats.Nkey(pub, func(n []byte) ([]byte, error) { return kp.Sign(n) })}},
		{"mutual_tls",
			func(o *server.Options) {
				tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: pki.ServerCert, KeyFile: pki.ServerKey, CaFile: pki.CA, Verify: true})
				if err != nil {
					t.Fatal(err)
				}
				o.TLSConfig, o.TLS, o.TLSVerify = tc, true, true
			},
			func(c *NATSConfig) {
				c.URLs = []string{strings.Replace(c.URLs[0], "nats://", "tls://", 1)}
				c.TLS = &TLSConfig{CAFile: pki.CA, CertFile: pki.ClientCert, KeyFile: pki.ClientKey}
			},
			[]nats.Option{nats.RootCAs(pki.CA), nats.ClientCert(pki.ClientCert, pki.ClientKey)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ns := startNATS(t, tc.server)
			db := mustOpenDB(t)
			d := newTestDispatcher(t, db, streamConfig(natsTarget(ns.url(), tc.target)))
			runDispatcher(t, d)
			sent := enqueue(t, db, d, userEvent("user.created", "u1"))
			js := ns.js(t, tc.client...)
			waitUntil(t, 10*time.Second, "the event", func() bool { return natsCount(t, js, "SCIMGATE") == 1 })
			checkStream(t, sent, natsMessages(t, js, "SCIMGATE"))
		})
	}

	t.Run("creds_file", func(t *testing.T) {
		// Operator mode: an operator, a system account, an account with
		// JetStream, and a user whose JWT and seed form the .creds file.
		mk := func(create func() (nkeys.KeyPair, error)) (nkeys.KeyPair, string) {
			kp, err := create()
			if err != nil {
				t.Fatal(err)
			}
			pub, _ := kp.PublicKey()
			return kp, pub
		}
		okp, opub := mk(nkeys.CreateOperator)
		oc := jwt.NewOperatorClaims(opub)
		resolver := &server.MemAccResolver{}
		account := func(js bool) (nkeys.KeyPair, string) {
			akp, apub := mk(nkeys.CreateAccount)
			ac := jwt.NewAccountClaims(apub)
			if js {
				ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
			}
			aj, err := ac.Encode(okp)
			if err != nil {
				t.Fatal(err)
			}
			if err := resolver.Store(apub, aj); err != nil {
				t.Fatal(err)
			}
			return akp, apub
		}
		_, sysPub := account(false)
		akp, _ := account(true)
		ukp, upub := mk(nkeys.CreateUser)
		uj, err := jwt.NewUserClaims(upub).Encode(akp)
		if err != nil {
			t.Fatal(err)
		}
		useed, _ := ukp.Seed()
		creds, err := jwt.FormatUserConfig(uj, useed)
		if err != nil {
			t.Fatal(err)
		}
		credsFile := filepath.Join(dir, "scimgate.creds")
		if err := os.WriteFile(credsFile, creds, 0o600); err != nil {
			t.Fatal(err)
		}
		ns := startNATS(t, func(o *server.Options) {
			o.TrustedOperators, o.AccountResolver, o.SystemAccount = []*jwt.OperatorClaims{oc}, resolver, sysPub
		})
		db := mustOpenDB(t)
		d := newTestDispatcher(t, db, streamConfig(natsTarget(ns.url(), func(c *NATSConfig) { c.CredsFile = credsFile })))
		runDispatcher(t, d)
		sent := enqueue(t, db, d, userEvent("user.created", "u1"))
		js := ns.js(t, nats.UserCredentials(credsFile))
		waitUntil(t, 10*time.Second, "the event", func() bool { return natsCount(t, js, "SCIMGATE") == 1 })
		checkStream(t, sent, natsMessages(t, js, "SCIMGATE"))
	})
	t.Run("tls_unknown_ca_pauses", func(t *testing.T) {
		ns := startNATS(t, cases[2].server)
		db := mustOpenDB(t)
		d := newTestDispatcher(t, db, streamConfig(natsTarget(ns.url(), func(c *NATSConfig) {
			c.URLs = []string{strings.Replace(c.URLs[0], "nats://", "tls://", 1)}
			c.TLS = &TLSConfig{Enabled: true, CertFile: pki.ClientCert, KeyFile: pki.ClientKey} // system roots: the test CA is unknown
		})))
		runDispatcher(t, d)
		enqueue(t, db, d, userEvent("user.created", "u1"))
		st := waitStatus(t, d, 10*time.Second, "paused", func(st TargetStatus) bool { return st.Paused })
		if !strings.Contains(st.LastError, "TLS with") || !strings.Contains(st.LastError, "certificate") {
			t.Errorf("last_error %q, want a TLS verification failure", st.LastError)
		}
	})
	t.Run("missing_seed_file_pauses", func(t *testing.T) {
		ns := startNATS(t, cases[1].server)
		db := mustOpenDB(t)
		d := newTestDispatcher(t, db, streamConfig(natsTarget(ns.url(), func(c *NATSConfig) {
			c.NKeySeedFile = filepath.Join(dir, "absent.nk")
		})))
		runDispatcher(t, d)
		enqueue(t, db, d, userEvent("user.created", "u1"))
		st := waitStatus(t, d, 10*time.Second, "paused", func(st TargetStatus) bool { return st.Paused })
		if !strings.Contains(st.LastError, "nats.nkey_seed_file") || !strings.Contains(st.LastError, "absent.nk") {
			t.Errorf("last_error %q, want the unreadable file named", st.LastError)
		}
	})
}

// TestNATSCloseReconnects: the dispatcher closes the sender when Run stops;
// a second Run on the same dispatcher connects again.
func TestNATSCloseReconnects(t *testing.T) {
	ns := startNATS(t, nil)
	js := ns.js(t)
	db := mustOpenDB(t)
	d := newTestDispatcher(t, db, streamConfig(natsTarget(ns.url(), nil)))
	stop := runDispatcher(t, d)
	sent := enqueue(t, db, d, userEvent("user.created", "u1"))
	waitUntil(t, 10*time.Second, "first event", func() bool { return natsCount(t, js, "SCIMGATE") == 1 })
	stop()
	// The server sees the sender's connection go: only the test's is left.
	waitUntil(t, 5*time.Second, "the sender's connection closed", func() bool { return ns.srv.NumClients() == 1 })
	runDispatcher(t, d)
	sent = append(sent, enqueue(t, db, d, userEvent("user.updated", "u1"))...)
	waitUntil(t, 10*time.Second, "second event", func() bool { return natsCount(t, js, "SCIMGATE") == 2 })
	checkStream(t, sent, natsMessages(t, js, "SCIMGATE"))
}

func TestNATSConfigValidate(t *testing.T) {
	ok := func() *NATSConfig { return &NATSConfig{URLs: []string{"nats://127.0.0.1:4222"}, Stream: "S"} }
	for _, tc := range []struct {
		name  string
		mod   func(*NATSConfig)
		field string // "" = valid
		is    error
	}{
		{"minimal", func(*NATSConfig) {}, "", nil},
		{"comma list and bare host", func(c *NATSConfig) { c.URLs = []string{"nats://a:4222, b:4222", "tls://c:4443"} }, "", nil},
		{"every create setting", func(c *NATSConfig) {
			c.CreateStream, c.MaxAge, c.DuplicateWindow, c.Replicas = true, time.Hour, 2*time.Minute, 3
		}, "", nil},
		{"user and password file", func(c *NATSConfig) { c.User, c.PasswordFile = "u", "/run/secrets/p" }, "", nil},
		{"no urls", func(c *NATSConfig) { c.URLs = []string{" , "} }, "outbox.targets[0].nats.urls", ErrRequired},
		{"http url", func(c *NATSConfig) { c.URLs = []string{"http://a:4222"} }, "outbox.targets[0].nats.urls[0]", ErrInvalid},
		{"no stream", func(c *NATSConfig) { c.Stream = "" }, "outbox.targets[0].nats.stream", ErrRequired},
		{"stream with dot", func(c *NATSConfig) { c.Stream = "a.b" }, "outbox.targets[0].nats.stream", ErrInvalid},
		{"bad template", func(c *NATSConfig) { c.Subject = "x.{user}" }, "outbox.targets[0].nats.subject", ErrInvalid},
		{"create without prefix", func(c *NATSConfig) { c.Subject, c.CreateStream = "{type}", true }, "outbox.targets[0].nats.subject", ErrInvalid},
		{"short window", func(c *NATSConfig) { c.DuplicateWindow = time.Minute }, "outbox.targets[0].nats.duplicate_window", ErrInvalid},
		{"window over age", func(c *NATSConfig) { c.MaxAge, c.DuplicateWindow = 3*time.Minute, 5*time.Minute }, "outbox.targets[0].nats.duplicate_window", ErrInvalid},
		{"age under default window", func(c *NATSConfig) { c.MaxAge = 5 * time.Minute }, "outbox.targets[0].nats.max_age", ErrInvalid},
		{"replicas", func(c *NATSConfig) { c.Replicas = 7 }, "outbox.targets[0].nats.replicas", ErrInvalid},
		{"password without user", func(c *NATSConfig) { c.Password = "p" }, "outbox.targets[0].nats.user", ErrRequired},
		{"user without password", func(c *NATSConfig) { c.User = "u" }, "outbox.targets[0].nats.password", ErrRequired},
		{"password twice", func(c *NATSConfig) { c.User, c.Password, c.PasswordFile = "u", "p", "/f" }, "outbox.targets[0].nats.password_file", ErrInvalid},
		{"token twice", func(c *NATSConfig) { c.Token, c.TokenFile = "t", "/f" }, "outbox.targets[0].nats.token_file", ErrInvalid},
		{"two methods", func(c *NATSConfig) { c.Token, c.CredsFile = "t", "/c" }, "outbox.targets[0].nats.user", ErrInvalid},
		{"cert without key", func(c *NATSConfig) { c.TLS = &TLSConfig{CertFile: "/c"} }, "outbox.targets[0].nats.tls.cert_file", ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok()
			tc.mod(c)
			checkValidate(t, streamConfig(Target{Type: TypeNATS, NATS: c}), tc.field, tc.is)
		})
	}
	// A password in a URL or a secret is never echoed.
	c := ok()
	c.URLs = []string{"nats://u:hunter2@%zz"}
	c.Token, c.Password = "tok-hunter2", "hunter2"
	cfg := streamConfig(Target{Type: TypeNATS, NATS: c})
	if err := cfg.Validate(); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("Validate = %v: want errors without the secrets", err)
	}
}

// natsBenchServer starts a server for benchmarks and returns a target.
func natsBench(b *testing.B) (*natsServer, Target) {
	ns := startNATS(b, nil)
	return ns, natsTarget(ns.url(), nil)
}

// BenchmarkNATSDeliver measures events/s published through the dispatcher
// into a JetStream file stream on an in-process server, with b.N events
// enqueued before the dispatcher starts (as BenchmarkDeliver does for
// webhooks).
//
//	go test -run '^$' -bench 'BenchmarkNATSDeliver$' -benchtime 100000x ./outbox/
func BenchmarkNATSDeliver(b *testing.B) {
	ns, tg := natsBench(b)
	db := mustOpenDB(b)
	cfg := streamConfig(tg)
	cfg.Concurrency = DefaultConfig().Concurrency
	d := newTestDispatcher(b, db, cfg)
	preload(b, db, b.N)
	js := ns.js(b)
	b.ResetTimer()
	start := time.Now()
	stop := runDispatcher(b, d)
	for {
		sts, _ := d.Status()
		if sts[0].Backlog == 0 && sts[0].Delivered == uint64(b.N) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	took := time.Since(start)
	b.StopTimer()
	stop()
	if n := natsCount(b, js, "SCIMGATE"); n != uint64(b.N) {
		b.Fatalf("%d messages in the stream, want %d", n, b.N)
	}
	b.ReportMetric(float64(b.N)/took.Seconds(), "events/s")
}

// TestNATSLatency measures commit → message stored in the stream (seen by
// an ordered consumer) at low load, one event at a time.
func TestNATSLatency(t *testing.T) {
	ns := startNATS(t, nil)
	db := mustOpenDB(t)
	d := newTestDispatcher(t, db, streamConfig(natsTarget(ns.url(), nil)))
	runDispatcher(t, d)
	enqueue(t, db, d, userEvent("user.created", "warmup")) // creates the stream
	js := ns.js(t)
	waitUntil(t, 10*time.Second, "warm-up", func() bool { return natsCount(t, js, "SCIMGATE") == 1 })
	cons, err := js.OrderedConsumer(t.Context(), "SCIMGATE", jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		t.Fatal(err)
	}
	arrived := make(chan time.Time, 1)
	cc, err := cons.Consume(func(m jetstream.Msg) { arrived <- time.Now() })
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Stop()
	measureLatency(t, db, d, arrived, "stream")
}
