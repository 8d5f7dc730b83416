package outbox

import (
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Suspend (online compaction): refused while Run runs; while suspended an
// admin write waits, and resume moves the dispatcher — the held write
// included — to the new file, where a new Run delivers.
func TestSuspendMovesToTheNewFile(t *testing.T) {
	secret := mustSecret(t)
	rc := newReceiver(t, secret, nil)
	db := mustOpenDB(t)
	d := newTestDispatcher(t, db, testConfig(rc.srv.URL, secret))
	stop := runDispatcher(t, d)
	if _, err := d.Suspend(); err == nil {
		t.Fatal("Suspend while Run runs: no error")
	}
	first := enqueue(t, db, d, userEvent("user.created", "u1"))[0]
	rc.waitFor(t, 5*time.Second, "the first event", func() bool { return rc.acked[first.ID] > 0 })
	stop()

	resume, err := d.Suspend()
	if err != nil {
		t.Fatal(err)
	}
	paused := make(chan error, 1)
	go func() { paused <- d.Pause("app", "held by the test") }()
	select {
	case err := <-paused:
		t.Fatalf("an admin write finished while suspended: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	// The copy an online compaction would make.
	path := filepath.Join(t.TempDir(), "new.db")
	if err := db.View(func(tx *bolt.Tx) error { return tx.CopyFile(path, 0o600) }); err != nil {
		t.Fatal(err)
	}
	ndb := openDB(t, path)
	t.Cleanup(func() { closeDB(t, ndb) })
	resume(ndb)
	if err := <-paused; err != nil {
		t.Fatal(err)
	}
	var oldPaused, newPaused bool
	for _, c := range []struct {
		db  *bolt.DB
		out *bool
	}{{db, &oldPaused}, {ndb, &newPaused}} {
		err := c.db.View(func(tx *bolt.Tx) error {
			*c.out = targetBucket(tx, "app").Get(keyPause) != nil
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if oldPaused || !newPaused {
		t.Fatalf("the pause held by Suspend: in the old file %v, in the new %v; want the new only", oldPaused, newPaused)
	}
	if err := d.Resume("app"); err != nil {
		t.Fatal(err)
	}
	runDispatcher(t, d)
	second := enqueue(t, ndb, d, userEvent("user.created", "u2"))[0]
	rc.waitFor(t, 5*time.Second, "the event in the new file", func() bool { return rc.acked[second.ID] > 0 })
	if second.Seq != first.Seq+1 {
		t.Errorf("sequence in the new file %d; want %d", second.Seq, first.Seq+1)
	}
}
