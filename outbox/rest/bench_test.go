package rest_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"

	"github.com/scimgate/scimgate/outbox"
	"github.com/scimgate/scimgate/outbox/rest"
	"github.com/scimgate/scimgate/outbox/webhook"
)

// BenchmarkStep: one step of a typical action (a Redmine-style user
// create: a JSON body of five expression leaves, a header, a save from
// the response) against a local app that answers at once, beside a plain
// webhook delivery of the same event to the same app. The difference is
// the action engine's cost per step. No id map (State) here: its commit
// is the engine's durable write, measured with the outbox's own benchmarks.
func BenchmarkStep(b *testing.B) {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(201)
		_, _ = w.Write([]byte(`{"user":{"id":7,"login":"ada@example.com"}}`))
	}))
	defer app.Close()
	ev := userEvent("user.created", "2819c223-7f76-453a-919d-413861904646", "ada@example.com", `,"email":"ada@example.com","active":true`)
	ev.ID = "evt_bench"
	ctx := context.Background()
	b.Run("rest", func(b *testing.B) {
		tg := outbox.Target{Name: "app", Type: outbox.TypeRest, Timeout: 5 * time.Second, Rest: restNode(b, `base_url: `+app.URL+`
headers: {X-Api-Key: "0123456789abcdef"}
actions:
  user.created:
    - name: create
      method: POST
      path: '"/users.json"'
      body:
        user:
          login: 'record.login'
          firstname: 'default(record.first_name, "-")'
          lastname: 'default(record.last_name, "-")'
          mail: 'lower(record.email)'
          status: 'record.active ? 1 : 3'
      save: {id: 'response.body.user.id'}
`)}
		s, err := rest.New(tg, outbox.Env{})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		cpu := cpuTime()
		for b.Loop() {
			if err := s.Send(ctx, ev); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N)/1e3, "cpu-µs/op")
	})
	b.Run("webhook", func(b *testing.B) {
		secret, _ := outbox.NewSecret()
		w, err := webhook.New(outbox.Target{Name: "app", URL: app.URL, Secrets: []string{secret}, Timeout: 5 * time.Second}, 1)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		cpu := cpuTime()
		for b.Loop() {
			if err := w.Send(ctx, ev); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N)/1e3, "cpu-µs/op")
	})
}

// BenchmarkExpr: compiling and evaluating the typical body's five
// expressions with expr-lang/expr (docs/actions.md compares cel-go).
func BenchmarkExpr(b *testing.B) {
	srcs := []string{`record.login`, `default(record.first_name, "-")`, `record.last_name ?? "-"`, `lower(record.email)`, `record.active ? 1 : 3`}
	env := map[string]any{"record": map[string]any{}}
	def := expr.Function("default", func(p ...any) (any, error) { return p[0], nil }, new(func(any, any) any))
	b.Run("compile", func(b *testing.B) {
		for b.Loop() {
			for _, s := range srcs {
				if _, err := expr.Compile(s, expr.Env(env), def); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("eval", func(b *testing.B) {
		var ps []*vmProgram
		for _, s := range srcs {
			p, err := expr.Compile(s, expr.Env(env), def)
			if err != nil {
				b.Fatal(err)
			}
			ps = append(ps, &vmProgram{p})
		}
		run := map[string]any{"record": map[string]any{"login": "ada@example.com", "first_name": "Ada", "last_name": "Lovelace", "email": "Ada@Example.com", "active": true}}
		b.ReportAllocs()
		for b.Loop() {
			for _, p := range ps {
				if _, err := expr.Run(p.p, run); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}

type vmProgram struct{ p *vm.Program }

// cpuTime is the process's user+system CPU in nanoseconds (the app's
// handler included, the same for both senders).
func cpuTime() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}
