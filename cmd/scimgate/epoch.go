package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"

	"github.com/scimgate/scimgate/outbox"
)

// Numbering across restores (docs/operations.md, "Backup and restore").
//
// Event sequences and resource versions must only grow, even after an
// older backup replaces the database. The application keeps an epoch in a
// file beside the database (data/epoch) and the same pair (epoch, boot id)
// inside it (outbox.ReadBoot/WriteBoot). At every start a fresh boot id is
// written to both, database first. A database whose pair differs from the
// file's was put in place from elsewhere — `scimgate restore`, or a copy
// by hand — so the epoch becomes max(file, database) + 1, and every
// sequence and version issued from then on is above epoch << 40, above
// anything the data dir issued before (2^40 numbers per epoch). Epoch 0,
// never restored, means floor 0: numbering exactly as in release 1.
//
// The boot id also changes when the gateway stops cleanly and after each
// online backup, so that a backup put back by hand never carries the pair
// the file holds. What cannot be detected: a release-1 backup copied into a
// data dir that has never run this release (there is no epoch file yet),
// and a backup put back after the epoch file itself was lost or restored
// with it; keep data/epoch with the volume, or use `scimgate restore`.

const (
	epochFile  = "epoch"
	epochShift = 40
)

// epochState is the content of data/epoch.
//
// Writing a new pair takes two writes, the file and the database, and
// either may fail or be cut by a kill -9. So the file is written
// first, naming the new pair as pending beside the current one; then the
// database commits the new pair; then the file is rewritten without the
// pending pair. A database that holds either pair of the file is the one
// this data dir wrote: a failed or missing second write is not a restore.
// A backup put back holds an older boot id, neither of the two.
type epochState struct {
	Epoch uint64 `json:"epoch"`
	Boot  string `json:"boot"`
	// PendingEpoch and PendingBoot are the pair being written to the
	// database ("" when none).
	PendingEpoch uint64 `json:"pending_epoch,omitempty"`
	PendingBoot  string `json:"pending_boot,omitempty"`
}

// holds reports whether the database's pair is one this file vouches for.
func (e epochState) holds(epoch uint64, boot string) bool {
	return (epoch == e.Epoch && boot == e.Boot) || (e.PendingBoot != "" && epoch == e.PendingEpoch && boot == e.PendingBoot)
}

// current is the pair alone, without a pending one.
func (e epochState) current() epochState { return epochState{Epoch: e.Epoch, Boot: e.Boot} }

// writeBoot moves data dir and database to the pair next in the order of
// epochState: the file with next pending, the database (write, which
// commits next), the file with next alone. An error from the last step is
// returned as done=true: the database holds next and the next start knows
// it (the pending pair).
func writeBoot(dataDir string, cur, next epochState, write func(epochState) error) (done bool, err error) {
	pending := cur.current()
	pending.PendingEpoch, pending.PendingBoot = next.Epoch, next.Boot
	if err := writeEpochFile(dataDir, pending); err != nil {
		return false, err
	}
	if err := write(next); err != nil {
		return false, err
	}
	return true, writeEpochFile(dataDir, next.current())
}

// floor is the first number of the epoch: every sequence and version
// issued in it is above it.
func (e epochState) floor() uint64 { return e.Epoch << epochShift }

// readEpochFile returns the file's pair; a missing file is epoch 0 with no
// boot id (a data dir from release 1, or a new one).
func readEpochFile(dataDir string) (epochState, error) {
	path := filepath.Join(dataDir, epochFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return epochState{}, nil
	} else if err != nil {
		return epochState{}, fmt.Errorf("read %s: %w", path, err)
	}
	var e epochState
	if err := json.Unmarshal(b, &e); err != nil || e.Boot == "" {
		return epochState{}, fmt.Errorf("%s is damaged (%q); it records the restore epoch: restore it from the backup of the data dir, or delete it only if this database was never restored", path, truncate(string(b), 80))
	}
	return e, nil
}

// writeEpochFile replaces data/epoch atomically and durably: a temporary
// file, fsync, rename, fsync of the directory.
func writeEpochFile(dataDir string, e epochState) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return writeFileDurable(filepath.Join(dataDir, epochFile), append(b, '\n'))
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// newBootID is a random id for one run of the gateway.
func newBootID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b) // crypto/rand does not fail
	return hex.EncodeToString(b)
}

// epochDecision is what startEpoch found and did.
type epochDecision struct {
	epochState
	Restored        bool   // the database's pair differed from the file's
	FileEpoch       uint64 // before
	DBEpoch         uint64
	Raised          bool   // RaiseSequence moved the log's sequence up
	PreviousTailSeq uint64 // the log's last sequence before the raise
	// Held is the pair the data dir vouches for now: the database's when
	// the file holds it (perhaps as the pending pair), else the file's.
	Held epochState
}

// planEpoch compares the database's pair with the file's (either of its
// pairs) and decides the epoch of this run: raised when they differ.
func planEpoch(db *bolt.DB, file epochState) (epochDecision, error) {
	d := epochDecision{FileEpoch: file.Epoch}
	err := db.View(func(tx *bolt.Tx) error {
		dbEpoch, dbBoot := outbox.ReadBoot(tx)
		d.DBEpoch = dbEpoch
		d.Epoch = dbEpoch
		d.Held = epochState{Epoch: dbEpoch, Boot: dbBoot}
		if !file.holds(dbEpoch, dbBoot) {
			d.Restored = true
			d.Epoch = max(file.Epoch, file.PendingEpoch, dbEpoch) + 1
			d.Held = file.current()
		}
		return nil
	})
	d.Boot = newBootID()
	return d, err
}

// startEpoch runs inside the start-up write transaction, between the two
// writes of the file (writeBoot): it raises the event sequence to the
// decided epoch's floor and records the new boot id in the database.
func startEpoch(tx *bolt.Tx, d *epochDecision) error {
	d.PreviousTailSeq = outbox.Tail(tx)
	raised, err := outbox.RaiseSequence(tx, d.floor())
	if err != nil {
		return err
	}
	d.Raised = raised
	return outbox.WriteBoot(tx, d.Epoch, d.Boot)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
