package rest_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/scimgate/scimgate/outbox"
	"github.com/scimgate/scimgate/outbox/rest"
)

// FuzzActions: any rest section either fails Validate with errors or
// builds a sender; a built sender's dry run on any event data returns an
// error or nil, and never panics (expressions are bounded and contained).
func FuzzActions(f *testing.F) {
	f.Add(appSection("http://127.0.0.1:1", "k"), `{"user":{"id":"u1","login":"a"}}`)
	f.Add("base_url: http://x\nactions:\n  user.updated: [{name: a, method: PUT, path: 'record.x[0] + 1', body: [1, 'item', {a: 'steps'}]}]\n", `{"user":{"x":[]}}`)
	f.Add("base_url: http://x\nactions:\n  user.updated: [{name: a, method: PUT, path: '\"/\"', for_each: 'record.l', body: {x: 'item.y / 0'}}]\n", `{"user":{"l":[{"y":1}]}}`)
	f.Add("base_url: http://x\nactions:\n  user.updated: [{name: a, method: GET, path: 'repeat(\"x\", 1000000)'}]\n", `{}`)
	f.Fuzz(func(t *testing.T, section, data string) {
		start := time.Now()
		defer func() {
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("took %v", d)
			}
		}()
		var n yaml.Node
		if yaml.Unmarshal([]byte(section), &n) != nil || len(n.Content) == 0 {
			return
		}
		tg := outbox.Target{Name: "f", Type: outbox.TypeRest, Rest: *n.Content[0]}
		if errs := rest.Validate(tg, "p"); len(errs) > 0 {
			for _, e := range errs {
				if e == nil || e.Error() == "" {
					t.Fatal("empty error")
				}
			}
			return
		}
		if !json.Valid([]byte(data)) {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		for _, typ := range []string{"user.created", "user.updated", "user.deleted", "group.member_added"} {
			_ = rest.DryRun(ctx, tg, outbox.Event{ID: "evt_f", Type: typ, Data: json.RawMessage(data)}, rest.DryRunOptions{Trace: func(rest.Trace) {}})
		}
	})
}
