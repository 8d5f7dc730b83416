package outbox

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// streamConfig returns testConfig's fast retries with one stream target
// "app" (timeout 2s).
// checkValidate checks that cfg validates when field is empty, and
// otherwise that Validate names field with an error that is is.
func checkValidate(t *testing.T, cfg Config, field string, is error) {
	t.Helper()
	err := cfg.Validate()
	if field == "" {
		if err != nil {
			t.Fatalf("Validate: %v", err)
		}
		return
	}
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != field || !errors.Is(err, is) {
		t.Fatalf("Validate = %v, want %s: %v", err, field, is)
	}
}

func streamConfig(tg Target) Config {
	cfg := testConfig("")
	tg.Name = "app"
	if tg.Timeout == 0 {
		tg.Timeout = 2 * time.Second
	}
	cfg.Targets = []Target{tg}
	return cfg
}

// streamMsg is one message read back from a broker.
type streamMsg struct {
	Pos       uint64 // stream sequence or offset
	Partition int32
	Subject   string // NATS subject or Kafka key
	Header    map[string]string
	Body      []byte
	Time      time.Time
}

func (m streamMsg) id() string { return m.Header[HeaderID] }

// oktaRun enqueues what an Okta tenant pushes, in many small transactions
// from concurrent goroutines: users created (some in one transaction),
// groups created, then concurrently profile updates, deactivations and
// reactivations, and membership adds (PATCH with several members in one
// transaction) and removes. It returns every stored event.
func oktaRun(t testing.TB, db *bolt.DB, d *Dispatcher, users, groups int) []Event {
	t.Helper()
	var (
		mu  sync.Mutex
		all []Event
		wg  sync.WaitGroup
	)
	add := func(evs ...Event) {
		stored := enqueue(t, db, d, evs...)
		mu.Lock()
		all = append(all, stored...)
		mu.Unlock()
	}
	uid := func(i int) string { return fmt.Sprintf("u%03d", i) }
	gid := func(i int) string { return fmt.Sprintf("g%02d", i) }
	user := func(typ string, i, version int) Event {
		return Event{Type: typ, Resources: []string{"User/" + uid(i)},
			Data: json.RawMessage(fmt.Sprintf(`{"user":{"id":%q,"version":%d,"login":"user%d@example.com"}}`, uid(i), version, i))}
	}
	group := func(typ string, i int) Event {
		return Event{Type: typ, Resources: []string{"Group/" + gid(i)},
			Data: json.RawMessage(fmt.Sprintf(`{"group":{"id":%q,"version":1,"name":"Group %d"}}`, gid(i), i))}
	}
	member := func(typ string, g, u int) Event {
		return Event{Type: typ, Resources: []string{"Group/" + gid(g), "User/" + uid(u)},
			Data: json.RawMessage(fmt.Sprintf(`{"group":{"id":%q,"version":1},"user":{"id":%q,"version":1}}`, gid(g), uid(u)))}
	}

	// Creation: four importers, the first user of every four alone, the
	// next three in one transaction (a batch import).
	for w := range 4 {
		wg.Go(func() {
			for i := w * 4; i < users; i += 16 {
				add(user("user.created", i, 1))
				var batch []Event
				for j := i + 1; j < min(i+4, users); j++ {
					batch = append(batch, user("user.created", j, 1))
				}
				if len(batch) > 0 {
					add(batch...)
				}
			}
		})
	}
	wg.Go(func() {
		for g := range groups {
			add(group("group.created", g))
		}
	})
	wg.Wait()

	// Changes: profile pushes, deactivations and memberships, concurrently.
	for w := range 2 {
		wg.Go(func() {
			for i := w; i < users; i += 2 {
				add(user("user.updated", i, 2))
				if i%5 == 0 {
					add(user("user.deactivated", i, 3))
				}
				if i%10 == 0 {
					add(user("user.reactivated", i, 4))
				}
			}
		})
	}
	for g := range groups {
		wg.Go(func() {
			var batch []Event
			for u := g; u < users; u += groups {
				batch = append(batch, member("group.member_added", g, u))
				if len(batch) == 5 {
					add(batch...)
					batch = nil
				}
			}
			if len(batch) > 0 {
				add(batch...)
			}
			add(group("group.updated", g))
			for u := g; u < users; u += 3 * groups {
				add(member("group.member_removed", g, u))
			}
		})
	}
	wg.Wait()
	slices.SortFunc(all, func(a, b Event) int { return int(a.Seq) - int(b.Seq) })
	return all
}

// checkStream checks that got holds every event of sent exactly once, with
// the envelope as the value and the stream headers, and that for every
// resource the events about it appear in sequence order. keyOf says which
// resource a message is about.
func checkStream(t testing.TB, sent []Event, got []streamMsg) {
	t.Helper()
	byID := map[string]Event{}
	for _, ev := range sent {
		byID[ev.ID] = ev
	}
	seen := map[string]int{}
	last := map[string]uint64{} // resource → highest sequence seen so far
	for _, m := range got {
		id := m.id()
		ev, ok := byID[id]
		if !ok {
			t.Errorf("message at %d has webhook-id %q, which is no event sent", m.Pos, id)
			continue
		}
		if seen[id]++; seen[id] > 1 {
			t.Errorf("event %s (%s) is in the stream %d times", id, ev.Type, seen[id])
			continue
		}
		if got, want := string(m.Body), string(ev.Envelope()); got != want {
			t.Errorf("event %s: value = %s, want the envelope %s", id, got, want)
		}
		for k, want := range map[string]string{
			HeaderEventType: ev.Type, HeaderSequence: strconv.FormatUint(ev.Seq, 10), HeaderContentType: "application/json",
		} {
			if got := m.Header[k]; got != want {
				t.Errorf("event %s: header %s = %q, want %q", id, k, got, want)
			}
		}
		for _, r := range ev.Resources {
			if ev.Seq < last[r] {
				t.Errorf("event %d (%s) about %s arrived after event %d about it", ev.Seq, ev.Type, r, last[r])
			}
			last[r] = max(last[r], ev.Seq)
		}
	}
	for _, ev := range sent {
		if seen[ev.ID] == 0 {
			t.Errorf("event %d (%s %v) never arrived", ev.Seq, ev.Type, ev.Resources)
		}
	}
}

// freeTCPPort returns a port that was free a moment ago, for a broker that
// must come back on the same address.
func freeTCPPort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// testPKI writes a CA, a server certificate for 127.0.0.1 and localhost and
// a client certificate, as PEM files in dir.
type testPKI struct {
	CA, ServerCert, ServerKey, ClientCert, ClientKey string
}

func newTestPKI(t testing.TB) testPKI {
	t.Helper()
	dir := t.TempDir()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	now := time.Now()
	caKey := key()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "scimgate test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage, certName, keyName string) (string, string) {
		k := key()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{usage},
			KeyUsage: x509.KeyUsageDigitalSignature, DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return write(certName, "CERTIFICATE", der), write(keyName, "EC PRIVATE KEY", kder)
	}
	p := testPKI{CA: write("ca.pem", "CERTIFICATE", caDER)}
	p.ServerCert, p.ServerKey = leaf(2, "server", x509.ExtKeyUsageServerAuth, "server.pem", "server-key.pem")
	p.ClientCert, p.ClientKey = leaf(3, "scimgate", x509.ExtKeyUsageClientAuth, "client.pem", "client-key.pem")
	return p
}

// writeSecretFile writes a secret file (with a trailing newline, as editors
// and kubectl leave it) and returns its path.
func writeSecretFile(t testing.TB, dir, name, value string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(value+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// waitUntil polls cond every 10ms until it holds.
func waitUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
