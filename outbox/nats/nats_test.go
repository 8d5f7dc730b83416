package nats

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/scimgate/scimgate/outbox"
)

// The delivery tests, through the dispatcher and a real server, are the
// engine's (outbox/stream_nats_test.go); these look inside the sender.

// natsServer is an in-process NATS server with JetStream on 127.0.0.1,
// stopped when the test ends.
type natsServer struct{ srv *server.Server }

func startNATS(t testing.TB) *natsServer {
	t.Helper()
	srv, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		JetStreamMaxMemory: 64 << 20, JetStreamMaxStore: 1 << 30, NoLog: true, NoSigs: true,
	})
	if err != nil {
		t.Fatalf("nats server: %v", err)
	}
	srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	return &natsServer{srv}
}

func (ns *natsServer) url() string { return ns.srv.ClientURL() }

func (ns *natsServer) js(t testing.TB) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(ns.url())
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

func natsTarget(url string, mod func(*outbox.NATSConfig)) outbox.Target {
	c := &outbox.NATSConfig{URLs: []string{url}, Stream: "SCIMGATE", CreateStream: true}
	if mod != nil {
		mod(c)
	}
	return outbox.Target{Name: "app", Type: outbox.TypeNATS, NATS: c, Timeout: 2 * time.Second}
}

// TestNATSClassify checks the classification of failures that the other
// tests cannot provoke with one server (a stream without a leader) or that
// need no server at all.
func TestNATSClassify(t *testing.T) {
	ns := startNATS(t)
	js := ns.js(t)
	if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "SCIMGATE", Subjects: []string{"scimgate.>"}}); err != nil {
		t.Fatal(err)
	}
	snd, err := New(natsTarget(ns.url(), nil))
	if err != nil {
		t.Fatal(err)
	}
	s := snd.(*natsSender)
	defer s.Close()
	sjs, nc, err := s.connect(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	api := func(code int, errCode jetstream.ErrorCode, desc string) error {
		return fmt.Errorf("nats: %w", &jetstream.APIError{Code: code, ErrorCode: errCode, Description: desc})
	}
	for _, tc := range []struct {
		name   string
		err    error
		reason string
		class  string // retry, permanent, pause
	}{
		{"no responders, stream there", jetstream.ErrNoStreamResponse, outbox.ReasonLeader, "retry"},
		{"full", api(503, 10077, "maximum messages exceeded"), outbox.ReasonFull, "retry"},
		{"other stream", api(400, 10060, "expected stream does not match"), outbox.ReasonNotInStream, "permanent"},
		{"too large for the stream", jetstream.ErrStreamMessageExceedsMaximum, outbox.ReasonTooLarge, "permanent"},
		{"max_payload", nats.ErrMaxPayload, outbox.ReasonTooLarge, "permanent"},
		{"authorization", nats.ErrAuthorization, outbox.ReasonAuth, "pause"},
		{"timeout", context.DeadlineExceeded, outbox.ReasonTimeout, "retry"},
		{"jetstream off", jetstream.ErrJetStreamNotEnabledForAccount, outbox.ReasonUnavailable, "retry"},
		{"leader", api(503, 10008, "JetStream cluster stream leader not found"), outbox.ReasonLeader, "retry"},
		{"unknown api error", api(500, 10999, "something else"), outbox.ReasonRejected, "retry"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := s.classify(t.Context(), sjs, nc, "scimgate.user.created", 10, time.Now(), tc.err)
			var se *outbox.StreamError
			if !errors.As(got, &se) || se.Reason != tc.reason {
				t.Fatalf("classify(%v) = %v, want reason %s", tc.err, got, tc.reason)
			}
			class := "retry"
			if outbox.IsPermanent(got) {
				class = "permanent"
			} else if outbox.IsPauseTarget(got) {
				class = "pause"
			}
			if class != tc.class {
				t.Errorf("classify(%v) = %v: %s, want %s", tc.err, got, class, tc.class)
			}
			if !errors.Is(got, tc.err) && !errors.Is(got, errors.Unwrap(tc.err)) {
				t.Errorf("classify(%v) = %v, which does not wrap the cause", tc.err, got)
			}
		})
	}
}

func TestNATSSubjectTemplate(t *testing.T) {
	for _, tc := range []struct {
		tmpl, typ, want, stream, err string
	}{
		{tmpl: "scimgate.{type}", typ: "group.member_added", want: "scimgate.group.member_added", stream: "scimgate.>"},
		{tmpl: "acme.idp.{kind}.{action}", typ: "user.created", want: "acme.idp.user.created", stream: "acme.idp.>"},
		{tmpl: "events", typ: "user.created", want: "events", stream: "events"},
		{tmpl: "a.{kind}.b", typ: "snapshot.started", want: "a.snapshot.b", stream: "a.>"},
		{tmpl: "{type}", typ: "user.created", want: "user.created", stream: "create_stream needs"},
		{tmpl: "x-{type}", typ: "user.created", want: "x-user.created", stream: "create_stream needs"},
		{tmpl: "scimgate.{id}", err: "unknown placeholder {id}"},
		{tmpl: "scimgate.>", err: "may not contain"},
		{tmpl: "scimgate..{type}", err: "empty token"},
		{tmpl: "scimgate.{type}.", err: "empty token"},
		{tmpl: "a b.{type}", err: "may not contain"},
		{tmpl: "a.{type", err: "may not contain"},
	} {
		tmpl, err := parseSubject(tc.tmpl)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseSubject(%q) = %v, want an error containing %q", tc.tmpl, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseSubject(%q): %v", tc.tmpl, err)
			continue
		}
		if got := tmpl.render(tc.typ); got != tc.want {
			t.Errorf("%q.render(%q) = %q, want %q", tc.tmpl, tc.typ, got, tc.want)
		}
		subs, err := tmpl.streamSubjects()
		if got := strings.Join(subs, ","); err != nil {
			got = err.Error()
			if !strings.Contains(got, tc.stream) {
				t.Errorf("%q.streamSubjects() error %q, want %q", tc.tmpl, got, tc.stream)
			}
		} else if got != tc.stream {
			t.Errorf("%q.streamSubjects() = %q, want %q", tc.tmpl, got, tc.stream)
		}
	}
	for _, tc := range []struct {
		filter, subject string
		want            bool
	}{
		{"scimgate.>", "scimgate.user.created", true},
		{"scimgate.>", "scimgate", false},
		{"scimgate.*", "scimgate.user.created", false},
		{"scimgate.*.created", "scimgate.user.created", true},
		{"scimgate.user.>", "scimgate.group.created", false},
		{"events", "events", true},
		{">", "a.b", true},
	} {
		if got := subjectMatch(tc.filter, tc.subject); got != tc.want {
			t.Errorf("subjectMatch(%q, %q) = %v, want %v", tc.filter, tc.subject, got, tc.want)
		}
	}
}

// FuzzStreamSubject: parseSubject never panics, and a template it accepts
// renders valid subjects for every event type, all captured by the
// subjects of the stream create_stream would make.
//
//	go test -run '^$' -fuzz FuzzStreamSubject -fuzztime 10s ./outbox/nats/
func FuzzStreamSubject(f *testing.F) {
	for _, s := range []string{"scimgate.{type}", "a.{kind}.v1.{action}", "events", "{type}", "x.{type}.", "a..b", "a.{nope}", "{{type}}", "a.{type}{kind}"} {
		f.Add(s)
	}
	types := []string{"user.created", "user.deactivated", "group.member_added", "group.members_snapshot", "snapshot.started", "snapshot.completed"}
	f.Fuzz(func(t *testing.T, raw string) {
		tmpl, err := parseSubject(raw)
		if err != nil {
			return
		}
		filters, ferr := tmpl.streamSubjects()
		for _, typ := range types {
			subj := tmpl.render(typ)
			if strings.ContainsAny(subj, " \t\r\n*>{}") || slices.Contains(strings.Split(subj, "."), "") {
				t.Fatalf("template %q renders invalid subject %q for %s", raw, subj, typ)
			}
			if ferr == nil && !slices.ContainsFunc(filters, func(f string) bool { return subjectMatch(f, subj) }) {
				t.Fatalf("template %q: subject %q (%s) is not captured by the created stream's subjects %v", raw, subj, typ, filters)
			}
		}
	})
}

// TestNATSDescribe: status names the servers without credentials, and the
// stream.
func TestNATSDescribe(t *testing.T) {
	c := &outbox.NATSConfig{URLs: []string{"nats://u:hunter2@h:4222,tls://k:4443"}, Stream: "S"}
	if got := hosts(c); !slices.Equal(got, []string{"h:4222", "k:4443"}) {
		t.Errorf("hosts() = %v", got)
	}
	if got, want := Describe(outbox.Target{Type: outbox.TypeNATS, NATS: c}), "nats://h:4222,k:4443 stream S"; got != want {
		t.Errorf("Describe = %q, want %q", got, want)
	}
}
