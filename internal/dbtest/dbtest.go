// Package dbtest is test support shared by the packages that keep their
// state in bbolt: consistency checks of the real files tests write.
package dbtest

import (
	"errors"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// Check runs bbolt's full consistency check (every page) in tx.
func Check(tx *bolt.Tx) error {
	var errs []error
	for err := range tx.Check() { // drain: Check's channel is unbuffered
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// CloseWhenDone checks db for consistency and closes it when the test ends,
// failing the test if either goes wrong.
func CloseWhenDone(t testing.TB, db *bolt.DB) {
	t.Cleanup(func() {
		if err := db.View(Check); err != nil {
			t.Errorf("bolt consistency: %v", err)
		}
		if err := db.Close(); err != nil {
			t.Errorf("close bolt: %v", err)
		}
	})
}
