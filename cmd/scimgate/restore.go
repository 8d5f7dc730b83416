package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	bolt "go.etcd.io/bbolt"

	"github.com/scimgate/scimgate/gateway/store"
	"github.com/scimgate/scimgate/outbox"
)

// errLocked is a database another process has open.
var errLocked = errors.New("the database is open in another process")

func (c *cli) restoreCommand() *cobra.Command {
	var cf configFlag
	cmd := &cobra.Command{
		Use:   "restore FILE",
		Short: "replace the database with a backup (offline: stop scimgate first)",
		Long: `Replace the gateway's database with FILE, a backup written by 'scimgate backup'.

scimgate must be stopped: restore refuses while the database is open. FILE is checked first
(bbolt's full consistency check, and a schema this binary reads); the current database is kept
beside it as scimgate.db.pre-restore-<UTC time>; then FILE is copied in place. The next
'scimgate serve' raises the restore epoch, so every event sequence and resource version issued
after the restore is greater than any issued before it (docs/events.md).

Changes committed after the backup was taken are lost with their events: after the restore,
run an import or a push of profiles from the identity provider to re-sync.`,
		Example: `  scimgate restore scimgate-2026-11-23.db
  SCIMGATE_DATA_DIR=/data scimgate restore /backups/scimgate.db`,
		Args: argsBetween(1, 1, "FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, _, _, err := loadConfig(cf.value(cmd, c.getenv), c.getenv)
			if err != nil {
				return err
			}
			return restoreDatabase(args[0], cfg.DataDir, time.Now(), c.stdout)
		},
	}
	cf.register(cmd)
	return cmd
}

// verifyBackup checks a backup file completely before it replaces the
// database: the start-up check, bbolt's full consistency check (tx.Check:
// every page reachable or free exactly once, key order across pages), and
// schema versions this binary reads. It returns the backup's epoch.
func verifyBackup(file string) (dbCheck, uint64, error) {
	res, err := checkDatabase(file)
	switch {
	case errors.Is(err, errEmptyDatabase):
		return res, 0, fmt.Errorf("%s is empty: not a backup", file)
	case err != nil:
		return res, 0, err
	}
	var epoch uint64
	err = protect(func() error {
		db, err := bolt.Open(file, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
		if err != nil {
			return err
		}
		defer db.Close()
		return db.View(func(tx *bolt.Tx) error {
			var errs []error
			for err := range tx.Check() { // drain: Check's channel is unbuffered
				if len(errs) < 3 {
					errs = append(errs, err)
				}
			}
			if len(errs) > 0 {
				return corrupt(file, "%v", errors.Join(errs...))
			}
			// The store's meta bucket holds its schema version: without it
			// this is some other bbolt file.
			if tx.Bucket([]byte("meta")) == nil {
				return fmt.Errorf("%s is a bbolt file but not a scimgate database", file)
			}
			epoch, _ = outbox.ReadBoot(tx)
			return nil
		})
	})
	if err != nil {
		var ce *corruptError
		if errors.As(err, &ce) || errors.Is(err, os.ErrNotExist) {
			return res, 0, err
		}
		return res, 0, fmt.Errorf("check %s: %w", file, err)
	}
	return res, epoch, nil
}

// checkSchema opens a copy of the backup for writing and runs the start-up
// schema checks of the store and the outbox in a transaction that is rolled
// back: the backup itself is never opened for writing.
func checkSchema(copyPath string) error {
	return protect(func() error {
		db, err := bolt.Open(copyPath, 0o600, boltOptions())
		if err != nil {
			return err
		}
		defer db.Close()
		tx, err := db.Begin(true)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if err := store.InitBuckets(tx); err != nil {
			return err
		}
		return outbox.InitBuckets(tx)
	})
}

// restoreDatabase is `scimgate restore FILE` (docs/operations.md, "Backup
// and restore"; docs/events.md, "After a restore"): offline, checked, the
// current database kept, FILE copied in place durably, and the epoch file
// marked so that the next serve raises the epoch.
func restoreDatabase(file, dataDir string, now time.Time, out io.Writer) error {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	dbPath := filepath.Join(dataDir, dbFile)
	if abs, _ := filepath.Abs(file); abs == mustAbs(dbPath) {
		return fmt.Errorf("%s is the database itself; give the backup file", file)
	}
	// Refuse while a gateway has the database open, and keep it closed to
	// others until the new file is in place.
	if _, err := os.Stat(dbPath); err == nil {
		unlock, err := lockFile(dbPath)
		if errors.Is(err, errLocked) {
			return fmt.Errorf("%s is open in another process: stop scimgate before restoring", dbPath)
		} else if err != nil {
			return err
		}
		defer unlock()
	}
	res, backupEpoch, err := verifyBackup(file)
	if err != nil {
		return fmt.Errorf("not restoring: %w", err)
	}
	fmt.Fprintf(out, "%s: consistent (%d keys in %d buckets, %d pages of %d bytes)\n", file, res.Keys, res.Buckets, res.Pages, res.PageSize)
	current, err := readEpochFile(dataDir)
	if err != nil {
		return err
	}
	tmp := dbPath + ".restore.partial"
	n, err := copyFile(tmp, file)
	if err == nil {
		err = checkSchema(tmp)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("not restoring: %w", err)
	}
	if _, err := os.Stat(dbPath); err == nil {
		kept := dbPath + ".pre-restore-" + now.UTC().Format("20060102T150405Z")
		if err := os.Link(dbPath, kept); err != nil {
			os.Remove(tmp)
			return fmt.Errorf("keep the current database: %w", err)
		}
		fmt.Fprintf(out, "kept the current database as %s\n", kept)
	}
	// The epoch file first: a new boot id that the restored database does
	// not carry, so that the next serve raises the epoch even if this
	// process dies before the rename below.
	next := epochState{Epoch: max(current.Epoch, backupEpoch), Boot: "restore-" + newBootID()}
	if err := writeEpochFile(dataDir, next); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, dbPath); err != nil {
		return fmt.Errorf("put the backup in place: %w", err)
	}
	if err := syncDir(dataDir); err != nil {
		return err
	}
	fmt.Fprintf(out, "restored %s to %s (%d bytes)\n", file, dbPath, n)
	fmt.Fprintf(out, "Start scimgate: event sequences and resource versions continue above every number issued before (restore epoch %d).\n", next.Epoch+1)
	fmt.Fprintln(out, "Changes made after the backup was taken are lost: run an import or a push from the identity provider to re-sync.")
	return nil
}

func mustAbs(p string) string {
	abs, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	return abs
}
