package outbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

const testTopic = "scimgate-events"

// kafkaCluster is an in-process Kafka (kfake) on 127.0.0.1 with its data
// in a temp directory, closed when the test ends. restart brings it back on
// the same port with the same data.
type kafkaCluster struct {
	t    testing.TB
	opts []kfake.Opt
	c    *kfake.Cluster
	addr string
}

func startKafka(t testing.TB, opts ...kfake.Opt) *kafkaCluster {
	t.Helper()
	port := freeTCPPort(t)
	kc := &kafkaCluster{t: t, addr: fmt.Sprintf("127.0.0.1:%d", port),
		opts: append([]kfake.Opt{kfake.NumBrokers(1), kfake.Ports(port), kfake.DataDir(t.TempDir())}, opts...)}
	kc.start()
	t.Cleanup(kc.stop)
	return kc
}

func (kc *kafkaCluster) start() {
	kc.t.Helper()
	c, err := kfake.NewCluster(kc.opts...)
	if err != nil {
		kc.t.Fatalf("kfake: %v", err)
	}
	kc.c = c
}

func (kc *kafkaCluster) stop() {
	if kc.c != nil {
		kc.c.Close()
		kc.c = nil
	}
}

// client is a client for the test's own look at the cluster.
func (kc *kafkaCluster) client(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(kc.addr)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// count is the number of records in the topic (0 if it does not exist).
func (kc *kafkaCluster) count(t testing.TB, opts ...kgo.Opt) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	cl := kc.client(t, opts...)
	defer cl.Close()
	offs, err := kadm.NewClient(cl).ListEndOffsets(ctx, testTopic)
	if err != nil {
		return 0
	}
	var n int64
	offs.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			n += o.Offset
		}
	})
	return n
}

// records reads n records of the topic from the start.
func (kc *kafkaCluster) records(t testing.TB, n int, opts ...kgo.Opt) []streamMsg {
	t.Helper()
	cl := kc.client(t, append([]kgo.Opt{kgo.ConsumeTopics(testTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}, opts...)...)
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	var out []streamMsg
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records: %v", len(out), n, ctx.Err())
		}
		fs.EachError(func(topic string, p int32, err error) { t.Logf("fetch %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			h := map[string]string{}
			for _, rh := range r.Headers {
				h[rh.Key] = string(rh.Value)
			}
			out = append(out, streamMsg{Pos: uint64(r.Offset), Partition: r.Partition, Subject: string(r.Key), Header: h, Body: r.Value, Time: r.Timestamp})
		})
	}
	return out
}

func kafkaTarget(addr string, mod func(*KafkaConfig)) Target {
	c := &KafkaConfig{Brokers: []string{addr}, Topic: testTopic, CreateTopic: true}
	if mod != nil {
		mod(c)
	}
	return Target{Type: TypeKafka, Kafka: c}
}

// checkKeys checks that every record is keyed by its event's primary
// resource.
func checkKeys(t testing.TB, sent []Event, got []streamMsg) {
	t.Helper()
	byID := map[string]Event{}
	for _, ev := range sent {
		byID[ev.ID] = ev
	}
	for _, m := range got {
		if ev := byID[m.id()]; m.Subject != ev.Resources[0] {
			t.Errorf("event %s (%s) keyed %q, want %q", ev.ID, ev.Type, m.Subject, ev.Resources[0])
		}
	}
}

// TestKafkaOktaRun delivers an Okta-shaped run into a one-partition topic
// the target creates: every event once, keyed by its primary resource, the
// envelope as the value, the headers, and per-resource order.
func TestKafkaOktaRun(t *testing.T) {
	kc := startKafka(t)
	db := mustOpenDB(t)
	d := newTestDispatcher(t, db, streamConfig(kafkaTarget(kc.addr+","+kc.addr, nil)))
	runDispatcher(t, d)
	sent := oktaRun(t, db, d, 60, 4)
	st := waitStatus(t, d, 30*time.Second, "backlog drained", func(st TargetStatus) bool { return st.Backlog == 0 && st.Delivered == uint64(len(sent)) })
	if st.DeadLetters != 0 {
		t.Errorf("%d dead letters", st.DeadLetters)
	}
	if got, want := st.URL, "kafka://"+kc.addr+","+kc.addr+" topic "+testTopic; got != want {
		t.Errorf("status URL = %q, want %q", got, want)
	}
	got := kc.records(t, len(sent))
	checkStream(t, sent, got)
	checkKeys(t, sent, got)

	adm := kadm.NewClient(kc.client(t))
	td, err := adm.ListTopics(t.Context(), testTopic)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(td[testTopic].Partitions); n != 1 {
		t.Errorf("created topic has %d partitions, want 1 (the default)", n)
	}
}

// TestKafkaPartitionsByKey: with several partitions, each resource's
// events share one partition, in order; a membership is written after the
// user's creation (which is in another partition) was acknowledged.
func TestKafkaPartitionsByKey(t *testing.T) {
	kc := startKafka(t)
	db := mustOpenDB(t)
	d := newTestDispatcher(t, db, streamConfig(kafkaTarget(kc.addr, func(c *KafkaConfig) { c.Partitions = 4 })))
	runDispatcher(t, d)
	sent := oktaRun(t, db, d, 40, 4)
	waitStatus(t, d, 30*time.Second, "backlog drained", func(st TargetStatus) bool { return st.Backlog == 0 && st.Delivered == uint64(len(sent)) })
	got := kc.records(t, len(sent))
	checkKeys(t, sent, got)

	byID := map[string]Event{}
	for _, ev := range sent {
		byID[ev.ID] = ev
	}
	partOf := map[string]int32{}
	lastSeq := map[string]uint64{}
	created := map[string]time.Time{}
	parts := map[int32]bool{}
	slices.SortStableFunc(got, func(a, b streamMsg) int { return int(a.Pos) - int(b.Pos) }) // offset order within each partition
	for _, m := range got {
		ev := byID[m.id()]
		parts[m.Partition] = true
		if p, ok := partOf[m.Subject]; ok && p != m.Partition {
			t.Errorf("key %s in partitions %d and %d", m.Subject, p, m.Partition)
		}
		partOf[m.Subject] = m.Partition
		if ev.Seq < lastSeq[m.Subject] {
			t.Errorf("key %s: event %d after %d", m.Subject, ev.Seq, lastSeq[m.Subject])
		}
		lastSeq[m.Subject] = max(lastSeq[m.Subject], ev.Seq)
		if ev.Type == "user.created" {
			created[ev.Resources[0]] = m.Time
		}
	}
	for _, m := range got {
		if ev := byID[m.id()]; ev.Type == "group.member_added" {
			if c, ok := created[ev.Resources[1]]; !ok || m.Time.Before(c) {
				t.Errorf("%s for %s stamped %v, before the user's creation %v", ev.Type, ev.Resources[1], m.Time, c)
			}
		}
	}
	if len(parts) < 2 {
		t.Errorf("records in %d partitions; the keys should spread over several", len(parts))
	}
}

// TestKafkaBrokerDown closes the cluster while events are committed and
// starts it again on the same address and data: everything arrives, in
// order, and nothing is dead-lettered.
func TestKafkaBrokerDown(t *testing.T) {
	kc := startKafka(t)
	db := mustOpenDB(t)
	d := newTestDispatcher(t, db, streamConfig(kafkaTarget(kc.addr, nil)))
	runDispatcher(t, d)
	sent := enqueue(t, db, d, userEvent("user.created", "u1"), userEvent("user.created", "u2"))
	waitStatus(t, d, 10*time.Second, "first events", func(st TargetStatus) bool { return st.Delivered == 2 })

	kc.stop()
	for i := range 20 {
		sent = append(sent, enqueue(t, db, d, userEvent("user.updated", fmt.Sprint("u", i%4)))...)
	}
	st := waitStatus(t, d, 20*time.Second, "a failed attempt", func(st TargetStatus) bool { return st.LastError != "" && st.Backlog > 0 })
	if !strings.HasPrefix(st.LastError, "kafka: ") {
		t.Errorf("last_error %q does not say it is about kafka", st.LastError)
	}
	t.Logf("while down: %s", st.LastError)

	kc.start()
	st = waitStatus(t, d, 30*time.Second, "backlog drained", func(st TargetStatus) bool { return st.Backlog == 0 })
	if st.DeadLetters != 0 || st.Delivered != uint64(len(sent)) {
		t.Errorf("delivered %d, %d dead letters; want %d, 0", st.Delivered, st.DeadLetters, len(sent))
	}
	got := kc.records(t, len(sent))
	checkStream(t, sent, got)
}

// TestKafkaLeaderChange moves the partition's leadership between three
// brokers while events flow: NOT_LEADER answers are retried (by the client
// or the outbox), and everything arrives once, in order.
func TestKafkaLeaderChange(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(1, testTopic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	kc := &kafkaCluster{t: t, c: c, addr: c.ListenAddrs()[0]}
	db := mustOpenDB(t)
	d := newTestDispatcher(t, db, streamConfig(kafkaTarget(strings.Join(c.ListenAddrs(), ","), nil)))
	runDispatcher(t, d)
	stop := make(chan struct{})
	moved := make(chan int)
	go func() {
		n := 0
		defer func() { moved <- n }()
		for {
			select {
			case <-stop:
				return
			case <-time.After(15 * time.Millisecond):
			}
			if err := c.MoveTopicPartition(testTopic, 0, (c.LeaderFor(testTopic, 0)+1)%3); err == nil {
				n++
			}
		}
	}()
	var sent []Event
	for i := range 150 {
		sent = append(sent, enqueue(t, db, d, userEvent("user.updated", fmt.Sprint("u", i%7)))...)
		time.Sleep(time.Millisecond)
	}
	st := waitStatus(t, d, 30*time.Second, "backlog drained", func(st TargetStatus) bool { return st.Backlog == 0 })
	close(stop)
	t.Logf("%d leader moves; last error %q", <-moved, st.LastError)
	if st.DeadLetters != 0 || st.Delivered != uint64(len(sent)) {
		t.Errorf("delivered %d, %d dead letters; want %d, 0", st.Delivered, st.DeadLetters, len(sent))
	}
	checkStream(t, sent, kc.records(t, len(sent)))
}

// TestKafkaTopicMissing: without create_topic, a missing topic is retried
// with a reason that says so, and delivery starts once it exists.
func TestKafkaTopicMissing(t *testing.T) {
	kc := startKafka(t)
	db := mustOpenDB(t)
	tg := kafkaTarget(kc.addr, func(c *KafkaConfig) { c.CreateTopic = false })
	d := newTestDispatcher(t, db, streamConfig(tg))
	runDispatcher(t, d)
	sent := enqueue(t, db, d, userEvent("user.created", "u1"))
	st := waitStatus(t, d, 20*time.Second, "a failed attempt", func(st TargetStatus) bool { return st.LastError != "" })
	if !strings.Contains(st.LastError, "topic "+testTopic+" does not exist") || st.DeadLetters != 0 || st.Paused {
		t.Errorf("status %+v, want a retried 'does not exist'", st)
	}
	if _, err := kadm.NewClient(kc.client(t)).CreateTopic(t.Context(), 1, 1, nil, testTopic); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, d, 20*time.Second, "delivered", func(st TargetStatus) bool { return st.Delivered == 1 })
	checkStream(t, sent, kc.records(t, 1))
}

// TestKafkaTooLargeDeadLetterReplay: a record larger than the topic's
// max.message.bytes is dead-lettered with the reason (the others are
// delivered); after the topic's limit is raised, Replay delivers it.
func TestKafkaTooLargeDeadLetterReplay(t *testing.T) {
	kc := startKafka(t)
	adm := kadm.NewClient(kc.client(t))
	limit := "2048"
	if _, err := adm.CreateTopic(t.Context(), 1, 1, map[string]*string{"max.message.bytes": &limit}, testTopic); err != nil {
		t.Fatal(err)
	}
	db := mustOpenDB(t)
	d := newTestDispatcher(t, db, streamConfig(kafkaTarget(kc.addr, nil)))
	runDispatcher(t, d)
	big := userEvent("user.updated", "u2")
	big.Data = json.RawMessage(fmt.Sprintf(`{"user":{"id":"u2","version":2,"bio":%q}}`, strings.Repeat("x", 3000)))
	var small []Event
	for i := range 30 { // enough to be batched together, past the limit
		small = append(small, userEvent("user.created", fmt.Sprint("s", i)))
	}
	sent := enqueue(t, db, d, append([]Event{big}, small...)...)
	st := waitStatus(t, d, 20*time.Second, "a dead letter", func(st TargetStatus) bool { return st.DeadLetters == 1 && st.Backlog == 0 })
	if st.Delivered != 30 {
		t.Errorf("delivered %d, want the 30 small events", st.Delivered)
	}
	dls, err := d.DeadLetters("app", 0, 10)
	if err != nil || len(dls) != 1 {
		t.Fatalf("DeadLetters = %d, %v", len(dls), err)
	}
	if got := dls[0]; got.Event.ID != big.ID && got.Event.ID != sent[0].ID || got.Attempts != 1 ||
		!strings.Contains(got.LastError, "exceeds topic "+testTopic+"'s max.message.bytes (2048)") {
		t.Errorf("dead letter %s after %d attempts: %q", got.Event.Type, got.Attempts, got.LastError)
	}

	big1m := "1048576"
	if _, err := adm.AlterTopicConfigs(t.Context(), []kadm.AlterConfig{{Name: "max.message.bytes", Value: &big1m}}, testTopic); err != nil {
		t.Fatal(err)
	}
	if n, err := d.Replay("app", nil); n != 1 || err != nil {
		t.Fatalf("Replay = %d, %v", n, err)
	}
	waitStatus(t, d, 20*time.Second, "replayed", func(st TargetStatus) bool { return st.Delivered == 31 && st.DeadLetters == 0 })
	checkStream(t, sent, kc.records(t, 31))
}

// TestKafkaMaxMessageBytes: the configured limit applies when it is below
// the topic's.
func TestKafkaMaxMessageBytes(t *testing.T) {
	kc := startKafka(t)
	db := mustOpenDB(t)
	d := newTestDispatcher(t, db, streamConfig(kafkaTarget(kc.addr, func(c *KafkaConfig) { c.MaxMessageBytes = 1500 })))
	runDispatcher(t, d)
	big := userEvent("user.updated", "u2")
	big.Data = json.RawMessage(fmt.Sprintf(`{"user":{"id":"u2","bio":%q}}`, strings.Repeat("x", 2000)))
	enqueue(t, db, d, big, userEvent("user.created", "u1"))
	waitStatus(t, d, 20*time.Second, "a dead letter", func(st TargetStatus) bool { return st.DeadLetters == 1 && st.Delivered == 1 })
	dls, _ := d.DeadLetters("app", 0, 10)
	if len(dls) != 1 || !strings.Contains(dls[0].LastError, "exceeds kafka.max_message_bytes (1500)") {
		t.Errorf("dead letters %+v", dls)
	}
}

// TestKafkaAuth: SASL credentials that are refused, and a principal without
// the topic ACL, pause the target with the reason; granting the ACL and
// resuming delivers.
func TestKafkaAuth(t *testing.T) {
	acl := func(op kmsg.ACLOperation) kfake.ACL {
		return kfake.ACL{Resource: kmsg.ACLResourceTypeTopic, Name: testTopic, Pattern: kmsg.ACLResourcePatternTypeLiteral, Operation: op, Allow: true}
	}
	kc := startKafka(t, kfake.EnableSASL(), kfake.EnableACLs(),
		kfake.Superuser("SCRAM-SHA-256", "admin", "admin-pw"),
		kfake.User("PLAIN", "writer", "writer-pw", acl(kmsg.ACLOperationWrite), acl(kmsg.ACLOperationDescribe), acl(kmsg.ACLOperationCreate)),
		kfake.User("SCRAM-SHA-512", "reader", "reader-pw", acl(kmsg.ACLOperationRead), acl(kmsg.ACLOperationDescribe)),
	)
	// kfake closes the connection on a wrong password; Kafka answers
	// SaslAuthenticate with SASL_AUTHENTICATION_FAILED first (KIP-152),
	// which is what the sender sees in production. Answer as Kafka does.
	kc.c.ControlKey(int16(kmsg.SASLAuthenticate), func(req kmsg.Request) (kmsg.Response, error, bool) {
		kc.c.KeepControl()
		r := req.(*kmsg.SASLAuthenticateRequest)
		parts := strings.Split(string(r.SASLAuthBytes), "\x00")
		if len(parts) != 3 || parts[1] != "writer" || parts[2] == "writer-pw" {
			return nil, nil, false
		}
		resp := r.ResponseKind().(*kmsg.SASLAuthenticateResponse)
		resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
		msg := "Authentication failed: Invalid username or password"
		resp.ErrorMessage = &msg
		return resp, nil, true
	})
	admin := []kgo.Opt{kgo.SASL(scram.Auth{User: "admin", Pass: "admin-pw"}.AsSha256Mechanism())}
	dir := t.TempDir()

	t.Run("scram_superuser", func(t *testing.T) {
		db := mustOpenDB(t)
		d := newTestDispatcher(t, db, streamConfig(kafkaTarget(kc.addr, func(c *KafkaConfig) {
			c.SASL = &KafkaSASL{Mechanism: "scram-sha-256", Username: "admin", PasswordFile: writeSecretFile(t, dir, "admin", "admin-pw")}
		})))
		runDispatcher(t, d)
		enqueue(t, db, d, userEvent("user.created", "u1"))
		waitStatus(t, d, 20*time.Second, "delivered", func(st TargetStatus) bool { return st.Delivered == 1 })
	})
	t.Run("plain_with_acls", func(t *testing.T) {
		db := mustOpenDB(t)
		d := newTestDispatcher(t, db, streamConfig(kafkaTarget(kc.addr, func(c *KafkaConfig) {
			c.SASL = &KafkaSASL{Mechanism: "PLAIN", Username: "writer", Password: "writer-pw"}
		})))
		runDispatcher(t, d)
		enqueue(t, db, d, userEvent("user.created", "u2"))
		waitStatus(t, d, 20*time.Second, "delivered", func(st TargetStatus) bool { return st.Delivered == 1 })
	})
	t.Run("wrong_password_pauses", func(t *testing.T) {
		db := mustOpenDB(t)
		pw := writeSecretFile(t, dir, "writer", "not-the-password")
		d := newTestDispatcher(t, db, streamConfig(kafkaTarget(kc.addr, func(c *KafkaConfig) {
			c.SASL = &KafkaSASL{Mechanism: "PLAIN", Username: "writer", PasswordFile: pw}
		})))
		runDispatcher(t, d)
		enqueue(t, db, d, userEvent("user.created", "u3"))
		st := waitStatus(t, d, 20*time.Second, "paused", func(st TargetStatus) bool { return st.Paused })
		if !strings.Contains(st.LastError, "refused the connection's credentials") || strings.Contains(st.LastError, "not-the-password") {
			t.Errorf("last_error %q", st.LastError)
		}
		if st.Backlog != 1 || st.DeadLetters != 0 {
			t.Errorf("backlog %d, dead %d; want 1, 0", st.Backlog, st.DeadLetters)
		}
		writeSecretFile(t, dir, "writer", "writer-pw")
		if err := d.Resume("app"); err != nil {
			t.Fatal(err)
		}
		waitStatus(t, d, 20*time.Second, "delivered after resume", func(st TargetStatus) bool { return st.Delivered == 1 })
	})
	t.Run("no_write_acl_pauses", func(t *testing.T) {
		db := mustOpenDB(t)
		d := newTestDispatcher(t, db, streamConfig(kafkaTarget(kc.addr, func(c *KafkaConfig) {
			c.CreateTopic = false
			c.SASL = &KafkaSASL{Mechanism: "SCRAM-SHA-512", Username: "reader", Password: "reader-pw"}
		})))
		runDispatcher(t, d)
		enqueue(t, db, d, userEvent("user.created", "u4"))
		st := waitStatus(t, d, 20*time.Second, "paused", func(st TargetStatus) bool { return st.Paused })
		if !strings.Contains(st.LastError, "needs WRITE on topic "+testTopic) {
			t.Errorf("last_error %q", st.LastError)
		}
		adm := kadm.NewClient(kc.client(t, admin...))
		res, err := adm.CreateACLs(t.Context(), kadm.NewACLs().Allow("User:reader").Topics(testTopic).
			Operations(kadm.OpWrite).ResourcePatternType(kadm.ACLPatternLiteral))
		if err == nil {
			for _, r := range res {
				err = errors.Join(err, r.Err)
			}
		}
		if err != nil {
			t.Fatalf("CreateACLs: %v", err)
		}
		if err := d.Resume("app"); err != nil {
			t.Fatal(err)
		}
		waitStatus(t, d, 20*time.Second, "delivered after resume", func(st TargetStatus) bool { return st.Delivered == 1 })
	})
	if n := kc.count(t, admin...); n != 4 {
		t.Errorf("%d records in the topic, want 4", n)
	}
}

// TestKafkaTLS produces over mutual TLS with a private CA.
func TestKafkaTLS(t *testing.T) {
	pki := newTestPKI(t)
	stc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: pki.ServerCert, KeyFile: pki.ServerKey, CaFile: pki.CA, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	kc := startKafka(t, kfake.TLS(stc))
	db := mustOpenDB(t)
	d := newTestDispatcher(t, db, streamConfig(kafkaTarget(kc.addr, func(c *KafkaConfig) {
		c.TLS = &TLSConfig{CAFile: pki.CA, CertFile: pki.ClientCert, KeyFile: pki.ClientKey}
	})))
	runDispatcher(t, d)
	sent := enqueue(t, db, d, userEvent("user.created", "u1"))
	waitStatus(t, d, 20*time.Second, "delivered", func(st TargetStatus) bool { return st.Delivered == 1 })
	ctc := &TLSConfig{CAFile: pki.CA, CertFile: pki.ClientCert, KeyFile: pki.ClientKey}
	tc, err := ctc.Build("test")
	if err != nil {
		t.Fatal(err)
	}
	checkStream(t, sent, kc.records(t, 1, kgo.DialTLSConfig(tc)))

	t.Run("unknown_ca_pauses", func(t *testing.T) {
		db := mustOpenDB(t)
		d := newTestDispatcher(t, db, streamConfig(kafkaTarget(kc.addr, func(c *KafkaConfig) {
			c.TLS = &TLSConfig{Enabled: true, CertFile: pki.ClientCert, KeyFile: pki.ClientKey}
		})))
		runDispatcher(t, d)
		enqueue(t, db, d, userEvent("user.created", "u1"))
		st := waitStatus(t, d, 20*time.Second, "paused", func(st TargetStatus) bool { return st.Paused })
		if !strings.Contains(st.LastError, "certificate") {
			t.Errorf("last_error %q, want the certificate problem", st.LastError)
		}
	})
}

func TestKafkaConfigValidate(t *testing.T) {
	ok := func() *KafkaConfig { return &KafkaConfig{Brokers: []string{"127.0.0.1:9092"}, Topic: "t"} }
	for _, tc := range []struct {
		name  string
		mod   func(*KafkaConfig)
		field string
		is    error
	}{
		{"minimal", func(*KafkaConfig) {}, "", nil},
		{"comma list", func(c *KafkaConfig) { c.Brokers = []string{"a:9092, b:9092", "[::1]:9093"} }, "", nil},
		{"everything", func(c *KafkaConfig) {
			c.CreateTopic, c.Partitions, c.ReplicationFactor, c.MaxMessageBytes = true, 6, 3, 2<<20
			c.TLS = &TLSConfig{Enabled: true, CAFile: "/ca.pem"}
			c.SASL = &KafkaSASL{Mechanism: "scram-sha-512", Username: "u", PasswordFile: "/p"}
		}, "", nil},
		{"no brokers", func(c *KafkaConfig) { c.Brokers = nil }, "outbox.targets[0].kafka.brokers", ErrRequired},
		{"no port", func(c *KafkaConfig) { c.Brokers = []string{"kafka"} }, "outbox.targets[0].kafka.brokers[0]", ErrInvalid},
		{"no topic", func(c *KafkaConfig) { c.Topic = "" }, "outbox.targets[0].kafka.topic", ErrRequired},
		{"bad topic", func(c *KafkaConfig) { c.Topic = "a/b" }, "outbox.targets[0].kafka.topic", ErrInvalid},
		{"dots topic", func(c *KafkaConfig) { c.Topic = ".." }, "outbox.targets[0].kafka.topic", ErrInvalid},
		{"partitions", func(c *KafkaConfig) { c.Partitions = -1 }, "outbox.targets[0].kafka.partitions", ErrInvalid},
		{"replication", func(c *KafkaConfig) { c.ReplicationFactor = -1 }, "outbox.targets[0].kafka.replication_factor", ErrInvalid},
		{"tiny max", func(c *KafkaConfig) { c.MaxMessageBytes = 100 }, "outbox.targets[0].kafka.max_message_bytes", ErrInvalid},
		{"mechanism", func(c *KafkaConfig) { c.SASL = &KafkaSASL{Mechanism: "GSSAPI", Username: "u", Password: "p"} }, "outbox.targets[0].kafka.sasl.mechanism", ErrInvalid},
		{"no mechanism", func(c *KafkaConfig) { c.SASL = &KafkaSASL{Username: "u", Password: "p"} }, "outbox.targets[0].kafka.sasl.mechanism", ErrRequired},
		{"no user", func(c *KafkaConfig) { c.SASL = &KafkaSASL{Mechanism: "PLAIN", Password: "p"} }, "outbox.targets[0].kafka.sasl.username", ErrRequired},
		{"no password", func(c *KafkaConfig) { c.SASL = &KafkaSASL{Mechanism: "PLAIN", Username: "u"} }, "outbox.targets[0].kafka.sasl.password", ErrRequired},
		{"both passwords", func(c *KafkaConfig) {
			c.SASL = &KafkaSASL{Mechanism: "PLAIN", Username: "u", Password: "p", PasswordFile: "/p"}
		}, "outbox.targets[0].kafka.sasl.password_file", ErrInvalid},
		{"key without cert", func(c *KafkaConfig) { c.TLS = &TLSConfig{KeyFile: "/k"} }, "outbox.targets[0].kafka.tls.cert_file", ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok()
			tc.mod(c)
			checkValidate(t, streamConfig(Target{Type: TypeKafka, Kafka: c}), tc.field, tc.is)
		})
	}
	c := ok()
	c.SASL = &KafkaSASL{Mechanism: "hunter2", Username: "u", Password: "hunter2-pw"}
	cfg := streamConfig(Target{Type: TypeKafka, Kafka: c})
	if err := cfg.Validate(); err == nil || strings.Contains(err.Error(), "hunter2-pw") {
		t.Errorf("Validate = %v: want an error without the password", err)
	}
}

// BenchmarkKafkaDeliver measures events/s produced through the dispatcher
// into a one-partition topic of an in-process cluster (kfake), with b.N
// events enqueued before the dispatcher starts.
//
//	go test -run '^$' -bench 'BenchmarkKafkaDeliver$' -benchtime 100000x ./outbox/
func BenchmarkKafkaDeliver(b *testing.B) {
	kc := startKafka(b)
	db := mustOpenDB(b)
	cfg := streamConfig(kafkaTarget(kc.addr, nil))
	cfg.Concurrency = DefaultConfig().Concurrency
	d := newTestDispatcher(b, db, cfg)
	preload(b, db, b.N)
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
	if n := kc.count(b); n != int64(b.N) {
		b.Fatalf("%d records in the topic, want %d", n, b.N)
	}
	b.ReportMetric(float64(b.N)/took.Seconds(), "events/s")
}

// TestKafkaLatency measures commit → record readable by a consumer at low
// load, one event at a time.
func TestKafkaLatency(t *testing.T) {
	kc := startKafka(t)
	db := mustOpenDB(t)
	d := newTestDispatcher(t, db, streamConfig(kafkaTarget(kc.addr, nil)))
	runDispatcher(t, d)
	enqueue(t, db, d, userEvent("user.created", "warmup")) // creates the topic
	waitStatus(t, d, 20*time.Second, "warm-up", func(st TargetStatus) bool { return st.Delivered == 1 })
	cl := kc.client(t, kgo.ConsumeTopics(testTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(time.Second))
	arrived := make(chan time.Time, 16)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			at := time.Now()
			fs.EachRecord(func(*kgo.Record) { arrived <- at })
		}
	}()
	defer func() { cancel(); <-done }()
	// The consumer is positioned once it has read the warm-up record.
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("consumer did not start")
	}
	measureLatency(t, db, d, arrived, "consumer")
}

// TestKafkaTopicRecreated: a topic deleted while the
// target runs, then created again (by the target's create_topic, or by the
// operator), takes deliveries again without a restart: the producer must
// forget the old topic id instead of failing with UNKNOWN_TOPIC_ID
// forever, and the error while it is missing must not tell the operator to
// set a create_topic that is already set.
func TestKafkaTopicRecreated(t *testing.T) {
	for _, create := range []bool{true, false} {
		t.Run(fmt.Sprintf("create_topic=%v", create), func(t *testing.T) {
			kc := startKafka(t)
			adm := kadm.NewClient(kc.client(t))
			if _, err := adm.CreateTopic(t.Context(), 1, 1, nil, testTopic); err != nil {
				t.Fatal(err)
			}
			db := mustOpenDB(t)
			tg := kafkaTarget(kc.addr, func(c *KafkaConfig) { c.CreateTopic = create })
			d := newTestDispatcher(t, db, streamConfig(tg))
			runDispatcher(t, d)
			enqueue(t, db, d, userEvent("user.created", "u1"))
			waitStatus(t, d, 20*time.Second, "the first event", func(st TargetStatus) bool { return st.Delivered == 1 })

			resp, err := adm.DeleteTopics(t.Context(), testTopic)
			if err == nil {
				err = resp.Error()
			}
			if err != nil {
				t.Fatal(err)
			}
			if !create {
				sent := enqueue(t, db, d, userEvent("user.created", "u2"))
				st := waitStatus(t, d, 20*time.Second, "a failed attempt", func(st TargetStatus) bool { return st.LastError != "" })
				if !strings.Contains(st.LastError, "topic "+testTopic+" does not exist") || st.DeadLetters != 0 || st.Paused {
					t.Errorf("status %+v, want a retried 'does not exist'", st)
				}
				if _, err := adm.CreateTopic(t.Context(), 1, 1, nil, testTopic); err != nil {
					t.Fatal(err)
				}
				waitStatus(t, d, 20*time.Second, "delivered after the topic is back", func(st TargetStatus) bool { return st.Delivered == 2 })
				checkStream(t, sent, kc.records(t, 1))
				return
			}
			sent := enqueue(t, db, d, userEvent("user.created", "u2"), userEvent("user.updated", "u2"))
			st := waitStatus(t, d, 20*time.Second, "delivered into the re-created topic", func(st TargetStatus) bool {
				return st.Delivered == 3 || st.DeadLetters > 0 || st.Paused
			})
			if st.Delivered != 3 {
				t.Fatalf("status %+v, want 3 delivered", st)
			}
			if strings.Contains(st.LastError, "create_topic: true") {
				t.Errorf("last_error %q tells to set create_topic, which is set", st.LastError)
			}
			checkStream(t, sent, kc.records(t, 2))
		})
	}
}
