package outbox

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// stepSender is a two-step transport built through Config.Transports: step
// one saves an "app id" to the id map and the event's progress, step two
// fails on the first attempt. A retry must skip step one (its progress was
// durable) and the engine must clear the progress once the event is done.
type stepSender struct {
	state *State
	mu    sync.Mutex
	step1 map[string]int // event ID → times step one ran
	fail2 map[string]bool
}

func (s *stepSender) Send(ctx context.Context, ev Event) error {
	var done []byte
	if err := s.state.View(func(tx *StateTx) (err error) { done, err = tx.Progress(ev.ID); return err }); err != nil {
		return err
	}
	if string(done) != "1" {
		s.mu.Lock()
		s.step1[ev.ID]++
		s.mu.Unlock()
		err := s.state.Update(func(tx *StateTx) error {
			if err := tx.Put("ids", []byte(ev.Resources[0]), []byte("app-"+ev.ID)); err != nil {
				return err
			}
			return tx.SetProgress(ev.ID, []byte("1"))
		})
		if err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.fail2[ev.ID] {
		s.fail2[ev.ID] = true
		return errors.New("step two: 503")
	}
	return nil
}

func TestTransportStateAndProgress(t *testing.T) {
	db := mustOpenDB(t)
	cfg := testConfig("")
	var snd *stepSender
	var section yaml.Node
	if err := yaml.Unmarshal([]byte("base_url: http://127.0.0.1:1\n"), &section); err != nil {
		t.Fatal(err)
	}
	cfg.Targets = []Target{{Name: "app", Type: TypeRest, Rest: *section.Content[0]}}
	var validated []string
	cfg.Transports = map[string]Transport{TypeRest: {
		Validate: func(tg Target, prefix string) []error {
			validated = append(validated, prefix+":"+tg.Rest.Content[0].Value)
			return nil
		},
		New: func(tg Target, env Env) (Sender, error) {
			snd = &stepSender{state: env.State, step1: map[string]int{}, fail2: map[string]bool{}}
			return snd, nil
		},
	}}
	d := newTestDispatcher(t, db, cfg)
	if strings.Join(validated, ",") != "outbox.targets[0]:base_url" {
		t.Fatalf("Validate saw %v", validated)
	}
	runDispatcher(t, d)
	evs := enqueue(t, db, d, userEvent("user.created", "u1"), userEvent("user.created", "u2"))
	waitStatus(t, d, 5*time.Second, "both delivered", func(s TargetStatus) bool { return s.Delivered == 2 })
	snd.mu.Lock()
	for _, ev := range evs {
		if snd.step1[ev.ID] != 1 {
			t.Errorf("event %s: step one ran %d times, want 1 (its progress was committed before step two failed)", ev.ID, snd.step1[ev.ID])
		}
	}
	snd.mu.Unlock()
	// The id map stays; each event's progress is gone with its delivery
	// (the engine deletes it in the commit that records the delivery, which
	// Delivered can precede by a batch).
	deadline := time.Now().Add(5 * time.Second)
	for {
		var left []string
		err := d.State("app").View(func(tx *StateTx) error {
			for _, ev := range evs {
				if p, err := tx.Progress(ev.ID); err != nil || p != nil {
					left = append(left, ev.ID)
				}
				if v, _ := tx.Get("ids", []byte(ev.Resources[0])); string(v) != "app-"+ev.ID {
					t.Errorf("id map of %s = %q", ev.Resources[0], v)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("progress of %v not cleared after delivery", left)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := d.State("app").View(func(tx *StateTx) error {
		if n, err := tx.Count("ids"); err != nil || n != 2 {
			t.Errorf("Count(ids) = %d, %v", n, err)
		}
		if _, err := tx.Get("progress", []byte("x")); !errors.Is(err, ErrStateSpace) {
			t.Errorf("Get on the engine's space = %v, want ErrStateSpace", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestTransportValidation: a type nobody registered is refused with the
// registered ones named; a rest section on another type is refused.
func TestTransportValidation(t *testing.T) {
	cfg := testConfig("http://127.0.0.1:1/hook", "whsec_"+strings.Repeat("A", 32))
	var n yaml.Node
	if err := yaml.Unmarshal([]byte("a: 1\n"), &n); err != nil {
		t.Fatal(err)
	}
	cfg.Targets[0].Rest = *n.Content[0]
	cfg.Targets = append(cfg.Targets, Target{Name: "b", Type: "soap"})
	cfg.Transports[TypeRest] = Transport{}
	err := cfg.Validate()
	for _, want := range []string{"targets[0].rest: invalid: only a target of type rest", `targets[1].type: invalid: "soap": use webhook (the default), kafka, nats, rest`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate = %v, want %q", err, want)
		}
	}
}

// State updates made while Run runs go through the committer's group
// transaction, beside delivery outcomes: an update whose fn fails is
// rolled back alone (nothing it wrote is kept, its caller gets its error)
// and every other update made at the same time commits.
func TestStateUpdatesFailAlone(t *testing.T) {
	db := mustOpenDB(t)
	cfg := testConfig("")
	var section yaml.Node
	if err := yaml.Unmarshal([]byte("base_url: http://127.0.0.1:1\n"), &section); err != nil {
		t.Fatal(err)
	}
	cfg.Targets = []Target{{Name: "app", Type: TypeRest, Rest: *section.Content[0]}}
	var state *State
	cfg.Transports = map[string]Transport{TypeRest: {
		Validate: func(Target, string) []error { return nil },
		New: func(_ Target, env Env) (Sender, error) {
			state = env.State
			return SenderFunc(func(context.Context, Event) error { return nil }), nil
		},
	}}
	d := newTestDispatcher(t, db, cfg)
	runDispatcher(t, d)
	enqueue(t, db, d, userEvent("user.created", "u1"))
	waitStatus(t, d, 5*time.Second, "delivered", func(s TargetStatus) bool { return s.Delivered == 1 })
	const n = 200
	errBad := errors.New("bad update")
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs[i] = state.Update(func(tx *StateTx) error {
				if err := tx.Put("keys", []byte(fmt.Sprintf("k%03d", i)), []byte("v")); err != nil {
					return err
				}
				if i%7 == 0 {
					return errBad
				}
				return nil
			})
		})
	}
	wg.Wait()
	want := 0
	for i, err := range errs {
		switch {
		case i%7 == 0 && !errors.Is(err, errBad):
			t.Errorf("update %d: %v, want its own error", i, err)
		case i%7 != 0 && err != nil:
			t.Errorf("update %d: %v", i, err)
		case i%7 != 0:
			want++
		}
	}
	err := state.View(func(tx *StateTx) error {
		got, err := tx.Count("keys")
		if err != nil {
			return err
		}
		if got != want {
			t.Errorf("%d keys committed, want %d", got, want)
		}
		for i := 0; i < n; i += 7 {
			if v, _ := tx.Get("keys", []byte(fmt.Sprintf("k%03d", i))); v != nil {
				t.Errorf("key k%03d of a failed update was kept", i)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
