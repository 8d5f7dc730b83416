package rest_test

import (
	"errors"
	"fmt"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/scimgate/scimgate/outbox"
)

// TestIDMapReader: the engine reads the rest target's id map through
// Transport.IDs (Dispatcher.ViewIDMap while it runs, ReadIDMap on a
// stopped file): pages follow each other without gap or repeat, look-ups
// work both ways, and status carries the map's size and the request
// counters by outcome and step.
func TestIDMapReader(t *testing.T) {
	app := newFakeApp(t)
	h := startHarness(t, testConfig(t, appSection(app.URL, app.apiKey)))
	var evs []outbox.Event
	for i := range 5 {
		evs = append(evs, userEvent("user.created", fmt.Sprintf("u%d", i), fmt.Sprintf("login%d", i), ""))
	}
	evs = append(evs, groupEvent("group.created", "g1", "Eng"))
	h.enqueue(evs...)
	h.settled(6, 0)

	var all []outbox.IDEntry
	err := h.d.ViewIDMap("app", func(m outbox.IDMapTx) error {
		after := ""
		for pages := 0; ; pages++ {
			list, next, err := m.List(after, 2)
			if err != nil {
				return err
			}
			if len(list) > 2 || pages > 3 {
				return fmt.Errorf("page %d: %d entries", pages, len(list))
			}
			all = append(all, list...)
			if next == "" {
				return nil
			}
			after = next
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"Group/g1", "User/u0", "User/u1", "User/u2", "User/u3", "User/u4"}
	if len(all) != len(want) {
		t.Fatalf("listed %v", all)
	}
	for i, e := range all {
		if e.Type+"/"+e.ID != want[i] {
			t.Errorf("entry %d = %s/%s, want %s", i, e.Type, e.ID, want[i])
		}
	}
	u2 := h.ids("User/u2")["id"].(float64)
	err = h.d.ViewIDMap("app", func(m outbox.IDMapTx) error {
		e, err := m.ByApp("User", fmt.Sprint(u2))
		if err != nil || e == nil || e.ID != "u2" {
			return fmt.Errorf("ByApp(%v) = %+v, %v", u2, e, err)
		}
		if e, err := m.Get("User", "u9"); e != nil || err != nil {
			return fmt.Errorf("Get(u9) = %+v, %v", e, err)
		}
		if e, err := m.ByApp("Group", fmt.Sprint(u2)); e != nil || err != nil {
			return fmt.Errorf("ByApp(Group, %v) = %+v, %v (a user's app id)", u2, e, err)
		}
		if n, err := m.Count(); n != 6 || err != nil {
			return fmt.Errorf("Count = %d, %v", n, err)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	if err := h.d.ViewIDMap("nosuch", func(outbox.IDMapTx) error { return nil }); !errors.Is(err, outbox.ErrUnknownTarget) {
		t.Errorf("unknown target: %v", err)
	}

	st := h.status()
	if st.IDMapSize == nil || *st.IDMapSize != 6 {
		t.Errorf("status id_map_size = %v", st.IDMapSize)
	}
	// The collectors are the process's: other tests' target "app" adds to
	// them, so compare the parts with each other.
	if r := st.Requests; r == nil || r.Requests == 0 || r.Steps == nil {
		t.Errorf("status requests = %+v", r)
	} else {
		sum, steps := uint64(0), uint64(0)
		for _, n := range r.Outcomes {
			sum += n
		}
		for _, s := range r.Steps {
			steps += s.Requests
		}
		if sum != r.Requests || steps != r.Requests {
			t.Errorf("requests %d, by outcome %d, by step %d", r.Requests, sum, steps)
		}
	}

	// Stopped: the same entries from the file.
	h.stopRun()
	err = h.db.View(func(tx *bolt.Tx) error {
		m, err := outbox.ReadIDMap(tx, h.cfg, h.cfg.Targets[0])
		if err != nil {
			return err
		}
		list, next, err := m.List("", 100)
		if err != nil || next != "" || len(list) != 6 || list[3].ID != "u2" {
			return fmt.Errorf("stopped: %v %q %v", list, next, err)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}
