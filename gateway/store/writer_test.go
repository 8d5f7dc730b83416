package store

import (
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scimgate/scimgate/gateway/scim"
)

func openTestDB(t *testing.T) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "w.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("b")); return err }); err != nil {
		t.Fatal(err)
	}
	return db
}

// TestWriterGroupCommitIsolatesFailures runs many writes through one
// writer at once. Some fail cleanly (a SCIM refusal decided before
// writing), some fail after writing (a storage-level error): the first
// kind must not cost the others their commit, the second must leave none
// of its own writes behind, and every successful write must be durable.
func TestWriterGroupCommitIsolatesFailures(t *testing.T) {
	db := openTestDB(t)
	w := newWriter(db, isClean, nil)
	w.start()
	defer w.close()

	errDirty := errors.New("disk says no")
	const n = 300
	results := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			key := []byte(fmt.Sprintf("k%03d", i))
			results[i] = w.update(func(tx *bolt.Tx) error {
				switch i % 10 {
				case 3: // refused before writing, like a 409
					return scim.Errorf(http.StatusConflict, scim.Uniqueness, "taken")
				case 7: // fails after writing: must be rolled back
					if err := tx.Bucket([]byte("b")).Put(key, []byte("partial")); err != nil {
						return err
					}
					return errDirty
				}
				return tx.Bucket([]byte("b")).Put(key, []byte("ok"))
			})
		})
	}
	wg.Wait()
	err := db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("b"))
		for i := range n {
			v := b.Get([]byte(fmt.Sprintf("k%03d", i)))
			switch i % 10 {
			case 3:
				var se *scim.Error
				if !errors.As(results[i], &se) || v != nil {
					t.Errorf("write %d: err %v, value %q; want the SCIM error and nothing stored", i, results[i], v)
				}
			case 7:
				if !errors.Is(results[i], errDirty) || v != nil {
					t.Errorf("write %d: err %v, value %q; want its error and its write rolled back", i, results[i], v)
				}
			default:
				if results[i] != nil || string(v) != "ok" {
					t.Errorf("write %d: err %v, value %q; want committed", i, results[i], v)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestWriterCloseDrainsQueue: writes queued before close are answered,
// and a write after close gets an error instead of hanging.
func TestWriterCloseDrainsQueue(t *testing.T) {
	db := openTestDB(t)
	w := newWriter(db, isClean, nil)
	w.start()
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := range 50 {
		wg.Go(func() {
			errs <- w.update(func(tx *bolt.Tx) error {
				return tx.Bucket([]byte("b")).Put([]byte(fmt.Sprint(i)), []byte("x"))
			})
		})
	}
	wg.Wait()
	w.close()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("queued write: %v", err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- w.update(func(*bolt.Tx) error { return nil }) }()
	select {
	case err := <-done:
		if !errors.Is(err, errClosed) {
			t.Errorf("write after close: %v, want errClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("write after close hangs")
	}
}
