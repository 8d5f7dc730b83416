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

// Numbering across restores (CONTRACTS.md; issue 9).
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
type epochState struct {
	Epoch uint64 `json:"epoch"`
	Boot  string `json:"boot"`
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
}

// startEpoch runs inside the start-up write transaction: it compares the
// database's pair with the file's, raises the epoch when they differ,
// raises the event sequence to the floor, and records a fresh boot id in
// the database. The caller writes the same pair to the file after commit.
func startEpoch(tx *bolt.Tx, file epochState) (epochDecision, error) {
	dbEpoch, dbBoot := outbox.ReadBoot(tx)
	d := epochDecision{epochState: file, FileEpoch: file.Epoch, DBEpoch: dbEpoch}
	if dbEpoch != file.Epoch || dbBoot != file.Boot {
		d.Restored = true
		d.Epoch = max(file.Epoch, dbEpoch) + 1
	}
	d.PreviousTailSeq = outbox.Tail(tx)
	raised, err := outbox.RaiseSequence(tx, d.floor())
	if err != nil {
		return d, err
	}
	d.Raised = raised
	d.Boot = newBootID()
	if err := outbox.WriteBoot(tx, d.Epoch, d.Boot); err != nil {
		return d, err
	}
	return d, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
