package scim

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"time"
)

// addElementsQuadratic is the release-1 addElements, kept as the reference
// for the linear one: each item compared with each element.
func addElementsQuadratic(list, items []any, def *Attribute) []any {
	byValue := def != nil && strings.EqualFold(def.Name, "members")
	for _, it := range items {
		dup := false
		for _, e := range list {
			if deepEqual(e, it) {
				dup = true
				break
			}
			if byValue {
				em, ok1 := e.(map[string]any)
				im, ok2 := it.(map[string]any)
				if ok1 && ok2 && sameValue(em, im) {
					for k, v := range im {
						kk, ok := findKey(em, k)
						if !ok {
							kk = k
						}
						em[kk] = v
					}
					dup = true
					break
				}
			}
		}
		if dup {
			continue
		}
		list = append(list, it)
		if m, ok := it.(map[string]any); ok {
			if p, _ := Get(m, "primary"); p == true {
				for _, e := range list[:len(list)-1] {
					if em, ok := e.(map[string]any); ok {
						if k, ok := findKey(em, "primary"); ok && em[k] == true {
							em[k] = false
						}
					}
				}
			}
		}
	}
	return list
}

// randElem returns a small random element drawn from few values, so that
// duplicates, equal values with other sub-attributes, equal numbers in
// other spellings and primaries are frequent.
func randElem(r *rand.Rand) any {
	switch r.IntN(10) {
	case 0:
		return fmt.Sprint("s", r.IntN(3))
	case 1:
		return json.Number([]string{"1", "1.0", "2", "-0", "0"}[r.IntN(5)])
	case 2:
		return nil
	}
	m := map[string]any{}
	switch r.IntN(4) {
	case 0:
		m["value"] = fmt.Sprint("v", r.IntN(4))
	case 1:
		m["value"] = json.Number([]string{"7", "7.0", "8"}[r.IntN(3)])
	case 2:
		m["value"] = ""
	}
	if r.IntN(2) == 0 {
		m["display"] = fmt.Sprint("d", r.IntN(2))
	}
	if r.IntN(3) == 0 {
		m["primary"] = r.IntN(2) == 0
	}
	if r.IntN(8) == 0 {
		m["tags"] = []any{fmt.Sprint("t", r.IntN(2))}
	}
	return m
}

func randList(r *rand.Rand, n int) []any {
	out := make([]any, r.IntN(n+1))
	for i := range out {
		out[i] = randElem(r)
	}
	return out
}

func TestAddElementsMatchesQuadratic(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 2))
	defs := []*Attribute{nil, GroupSchema.Attr("members"), UserSchema.Attr("emails")}
	for n := 0; n < 5000; n++ {
		def := defs[n%len(defs)]
		list, items := randList(r, 6), randList(r, 6)
		want := canon(t, addElementsQuadratic(DeepCopy(list).([]any), DeepCopy(items).([]any), def))
		if got := canon(t, addElements(DeepCopy(list).([]any), DeepCopy(items).([]any), def)); got != want {
			t.Fatalf("addElements(%s, %s, %v)\n = %s\nwant %s (the quadratic reference)", canon(t, list), canon(t, items), def != nil, got, want)
		}
	}
}

// emailsPatch returns a path-less add of n new emails.
func emailsPatch(tb testing.TB, n int) []Operation {
	tb.Helper()
	emails := make([]any, n)
	for i := range emails {
		emails[i] = map[string]any{"value": fmt.Sprintf("user%d@example.com", i), "type": "work"}
	}
	body, err := json.Marshal(map[string]any{"schemas": []string{SchemaPatchOp},
		"Operations": []any{map[string]any{"op": "add", "value": map[string]any{"emails": emails}}}})
	if err != nil {
		tb.Fatal(err)
	}
	ops, err := ParsePatch(body)
	if err != nil {
		tb.Fatal(err)
	}
	return ops
}

// A path-less add of 30,000 emails used to take 30 s, quadratic. The work
// must grow linearly: ten times the emails in about ten times the CPU time
// (quadratic would be a hundred). CPU time, not the wall clock: the wall
// clock also counts the time spent waiting for a core, and on a loaded
// machine one such wait in the short run made it fail (43×). Each size is
// measured three times and the least kept, which drops a run slowed by a
// garbage collection started by the one before.
func TestApplyPatchLargeAddIsLinear(t *testing.T) {
	users := NewUserResourceType()
	doc := mustDoc(t, `{"userName":"u","emails":[{"value":"old@example.com","type":"home","primary":true}]}`)
	add := func(n int) (map[string]any, time.Duration) {
		ops := emailsPatch(t, n)
		var got map[string]any
		least := time.Duration(-1)
		for range 3 {
			runtime.GC()
			start := cpuTime(t)
			var err error
			got, err = ApplyPatch(doc, ops, users)
			took := cpuTime(t) - start
			if err != nil {
				t.Fatal(err)
			}
			if least < 0 || took < least {
				least = took
			}
			if took > 10*time.Second {
				break // quadratic: no need to wait for two more
			}
		}
		if got := len(got["emails"].([]any)); got != n+1 {
			t.Fatalf("emails after adding %d = %d, want %d", n, got, n+1)
		}
		return got, least
	}
	small, tSmall := add(3000)
	_, tLarge := add(30000)
	if tLarge > 30*tSmall && tLarge > 200*time.Millisecond {
		t.Errorf("adding 30,000 emails took %v of CPU, 3,000 took %v: %.0f×, want about 10× (linear)", tLarge, tSmall, float64(tLarge)/float64(tSmall))
	}
	// Adding the same values again changes nothing.
	again, err := ApplyPatch(small, emailsPatch(t, 3000), users)
	if err != nil {
		t.Fatal(err)
	}
	if canon(t, again) != canon(t, small) {
		t.Errorf("adding the same 3,000 emails again changed the document")
	}
}

func BenchmarkApplyPatchAddEmails(b *testing.B) {
	users := NewUserResourceType()
	for _, n := range []int{1000, 10000, 30000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			doc := mustDoc(b, `{"userName":"u","emails":[{"value":"old@example.com","type":"home"}]}`)
			ops := emailsPatch(b, n)
			for b.Loop() {
				if _, err := ApplyPatch(doc, ops, users); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
