package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// BoltOptions are the bbolt options the application should open the
// database with (measured in docs/performance.md):
//
//   - no freelist written at commits (NoFreelistSync) with the hashmap
//     freelist: a commit on a file with many free pages (events pruned)
//     costs what it costs on a full one — measured on an emptied 1 GB file
//     with 90,000 free pages, 0.13 ms a commit without, 21.7 ms with the
//     freelist written at every commit. The price is at open: bbolt then
//     rebuilds the freelist by reading every page (10.5 s and the whole
//     file in memory for 1 GB) unless the file ends with a synced
//     freelist, which SyncFreelist writes at a clean shutdown;
//   - an initial mmap of 256 MiB, so reads do not block the writer on
//     remapping until the file passes it;
//   - a one-second lock timeout: a second process on the same file fails
//     fast.
func BoltOptions() *bolt.Options {
	return &bolt.Options{Timeout: time.Second, NoFreelistSync: true, FreelistType: bolt.FreelistMapType,
		InitialMmapSize: 256 << 20}
}

// SyncFreelist writes db's freelist into the file with one empty commit, so
// that the next open reads it (a few pages) instead of rebuilding it from
// every page of the file. Call it at shutdown, after the store and the
// dispatcher have stopped and before db.Close: nothing else may write to
// db meanwhile. The next commit with NoFreelistSync frees that freelist
// again, so a crash (no SyncFreelist) only costs the next start a rebuild.
func SyncFreelist(db *bolt.DB) error {
	prev := db.NoFreelistSync
	db.NoFreelistSync = false
	defer func() { db.NoFreelistSync = prev }()
	return db.Update(func(*bolt.Tx) error { return nil })
}

// DefaultCompactFree is the share of free pages above which CompactFile
// compacts: a file at least half free.
const DefaultCompactFree = 0.5

// CompactReport says what CompactFile found and did.
type CompactReport struct {
	Compacted     bool
	Before, After int64   // file sizes in bytes (After = Before when not compacted)
	Free          float64 // share of the file that was free before
	Took          time.Duration
}

// CompactFile rewrites the bbolt file at path without its free pages when
// at least minFree of it is free (DefaultCompactFree when 0), and leaves
// it alone otherwise (with its freelist synced, see SyncFreelist). It
// must run while nobody has the file open — at
// start-up, before the application opens the database, or while the
// application has closed it (the database, the store and the dispatcher
// are stopped; SCIM requests wait or get 503 for that long). opts are the
// options the application opens the file with (nil: BoltOptions).
//
// The copy (bbolt.Compact: every bucket, key, value and sequence, pages
// filled) goes to path + ".compact", is fsynced and then renamed over path,
// and the directory is fsynced: a crash at any point leaves either the old
// file or the new one, both complete. Measured in docs/performance.md: a
// 1 GB file holding 100,000 users and a 100,000-member group.
func CompactFile(path string, minFree float64, opts *bolt.Options) (CompactReport, error) {
	start := time.Now()
	if minFree <= 0 {
		minFree = DefaultCompactFree
	}
	if opts == nil {
		opts = BoltOptions()
	}
	var rep CompactReport
	st, err := os.Stat(path)
	if err != nil {
		return rep, err
	}
	rep.Before, rep.After = st.Size(), st.Size()
	src, err := bolt.Open(path, 0o600, opts)
	if err != nil {
		return rep, fmt.Errorf("open %s: %w", path, err)
	}
	defer src.Close()
	err = src.View(func(tx *bolt.Tx) error {
		rep.Free = freeShare(src, tx)
		return nil
	})
	if err != nil {
		return rep, err
	}
	if rep.Free < minFree {
		// Opening rebuilt the freelist if the last run did not end with
		// SyncFreelist; write it, so the application's open is quick.
		if err := SyncFreelist(src); err != nil {
			return rep, err
		}
		rep.Took = time.Since(start)
		return rep, src.Close()
	}
	dst, tmp, err := openCopy(path, opts)
	if err != nil {
		return rep, err
	}
	if err := bolt.Compact(dst, src, 64<<20); err != nil {
		dst.Close()
		os.Remove(tmp)
		return rep, fmt.Errorf("compact %s: %w", path, err)
	}
	used, err := installCopy(dst, tmp, path, func() error {
		if err := src.Close(); err != nil {
			return fmt.Errorf("close %s: %w", path, err)
		}
		return nil
	})
	if err != nil {
		return rep, err
	}
	rep.After, rep.Compacted, rep.Took = used, true, time.Since(start)
	return rep, nil
}

// openCopy creates path + ".compact" (removing a leftover of an interrupted
// compaction) for a copy of the database, opened with opts but without an
// fsync per commit (installCopy syncs once) and with its freelist synced.
func openCopy(path string, opts *bolt.Options) (*bolt.DB, string, error) {
	tmp := path + ".compact"
	_ = os.Remove(tmp)
	o := *opts
	o.NoSync, o.NoFreelistSync = true, false
	dst, err := bolt.Open(tmp, 0o600, &o)
	if err != nil {
		return nil, "", fmt.Errorf("open %s: %w", tmp, err)
	}
	return dst, tmp, nil
}

// installCopy fsyncs and closes the copy dst at tmp, truncates it to its
// last page (bbolt grows a file in steps of 16 MiB ahead of its pages;
// nothing past the last page is referenced), calls beforeRename, renames it
// over path and fsyncs the directory: a crash leaves either file complete.
// It returns the new file's size; on failure tmp is removed.
func installCopy(dst *bolt.DB, tmp, path string, beforeRename func() error) (int64, error) {
	var used int64
	_ = dst.View(func(tx *bolt.Tx) error { used = tx.Size(); return nil })
	err := dst.Sync()
	if err != nil {
		err = fmt.Errorf("sync %s: %w", tmp, err)
	}
	if cerr := dst.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close %s: %w", tmp, cerr)
	}
	if err == nil {
		err = truncateSync(tmp, used)
	}
	if err == nil && beforeRename != nil {
		err = beforeRename()
	}
	if err == nil {
		if rerr := os.Rename(tmp, path); rerr != nil {
			err = fmt.Errorf("replace %s: %w", path, rerr)
		}
	}
	if err != nil {
		os.Remove(tmp)
		return 0, err
	}
	return used, syncDir(filepath.Dir(path))
}

// freeShare is the share of db's pages, up to its highest, that are free
// or freed by the last commits (pending until no reader needs them). The
// file itself is larger: bbolt grows it in steps of AllocSize (16 MiB), and
// that tail is sparse, not on disk, so it does not count as free.
func freeShare(db *bolt.DB, tx *bolt.Tx) float64 {
	used := tx.Size()
	if used <= 0 {
		return 0
	}
	st := db.Stats()
	free := int64(st.FreePageN+st.PendingPageN) * int64(db.Info().PageSize)
	return float64(free) / float64(used)
}

func truncateSync(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = f.Truncate(size)
	if err == nil {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	return errors.Join(err, d.Close())
}

// CompactOnline compacts the database at path, open as db, while the
// application keeps serving, and stops its writes only for the catch-up:
//
//  1. it copies a snapshot of db (one read transaction, bbolt.Compact)
//     into path + ".compact" while writes go on;
//  2. it calls stop, which must return once nothing writes to db any more
//     — the store's writes held by Store.Pause, the dispatcher's Run ended
//     (its outcomes committed) — and must not write itself;
//  3. it brings the copy up to db's state — every bucket, nested bucket,
//     key, value and sequence that changed since the snapshot, found by
//     walking both files side by side — fsyncs it, truncates it to its last
//     page and renames it over path (a crash leaves either file complete).
//
// The caller then reopens path, hands the new *bolt.DB to the store's
// resume (and to the dispatcher it starts again and anything else holding
// db), and closes db. When less than minFree of the file is free
// (DefaultCompactFree when 0) nothing is done and stop is not called. Writes
// wait during step 3 only: measured in docs/performance.md.
func CompactOnline(db *bolt.DB, path string, minFree float64, stop func() error) (CompactReport, time.Duration, error) {
	start := time.Now()
	if minFree <= 0 {
		minFree = DefaultCompactFree
	}
	var rep CompactReport
	st, err := os.Stat(path)
	if err != nil {
		return rep, 0, err
	}
	rep.Before, rep.After = st.Size(), st.Size()
	_ = db.View(func(tx *bolt.Tx) error {
		rep.Free = freeShare(db, tx)
		return nil
	})
	if rep.Free < minFree {
		rep.Took = time.Since(start)
		return rep, 0, nil
	}
	dst, tmp, err := openCopy(path, BoltOptions())
	if err != nil {
		return rep, 0, err
	}
	fail := func(err error) (CompactReport, time.Duration, error) {
		dst.Close()
		os.Remove(tmp)
		return rep, 0, err
	}
	if err := bolt.Compact(dst, db, 64<<20); err != nil {
		return fail(fmt.Errorf("compact %s: %w", path, err))
	}
	if err := stop(); err != nil {
		return fail(fmt.Errorf("stop the writers of %s: %w", path, err))
	}
	paused := time.Now()
	err = db.View(func(src *bolt.Tx) error {
		return dst.Update(func(tx *bolt.Tx) error { return syncTx(tx, src) })
	})
	if err != nil {
		return fail(fmt.Errorf("catch up %s: %w", tmp, err))
	}
	used, err := installCopy(dst, tmp, path, nil)
	if err != nil {
		return rep, 0, err
	}
	rep.After, rep.Compacted, rep.Took = used, true, time.Since(start)
	return rep, time.Since(paused), nil
}

// syncTx makes dst's buckets equal to src's.
func syncTx(dst, src *bolt.Tx) error { return syncNode(dst, src) }

// syncBucket makes d equal to s, its sequence included.
func syncBucket(d, s *bolt.Bucket) error {
	if d.Sequence() != s.Sequence() {
		if err := d.SetSequence(s.Sequence()); err != nil {
			return err
		}
	}
	return syncNode(d, s)
}

// node is what a transaction's root and a bucket have in common.
type node interface {
	Cursor() *bolt.Cursor
	Bucket(name []byte) *bolt.Bucket
	CreateBucket(name []byte) (*bolt.Bucket, error)
	DeleteBucket(name []byte) error
}

// syncNode makes d's keys, values and nested buckets equal to s's: it walks
// both in key order, collects the differences (a cursor must not be used
// across changes to its bucket), applies them, then does the same for the
// nested buckets both have. A transaction's root holds only buckets.
func syncNode(d, s node) error {
	type put struct{ k, v []byte }
	var puts []put
	var dels, newBuckets, delBuckets, nested [][]byte
	cd, cs := d.Cursor(), s.Cursor()
	kd, vd := cd.First()
	ks, vs := cs.First()
	for ks != nil || kd != nil {
		cmp := 0
		switch {
		case kd == nil:
			cmp = -1
		case ks == nil:
			cmp = 1
		default:
			cmp = bytes.Compare(ks, kd)
		}
		switch {
		case cmp < 0: // only in s
			if vs == nil {
				newBuckets = append(newBuckets, bytes.Clone(ks))
			} else {
				puts = append(puts, put{bytes.Clone(ks), bytes.Clone(vs)})
			}
			ks, vs = cs.Next()
		case cmp > 0: // only in d
			if vd == nil {
				delBuckets = append(delBuckets, bytes.Clone(kd))
			} else {
				dels = append(dels, bytes.Clone(kd))
			}
			kd, vd = cd.Next()
		default:
			switch {
			case vs == nil && vd == nil:
				nested = append(nested, bytes.Clone(ks))
			case vs == nil: // a value became a bucket
				dels = append(dels, bytes.Clone(kd))
				newBuckets = append(newBuckets, bytes.Clone(ks))
			case vd == nil: // a bucket became a value
				delBuckets = append(delBuckets, bytes.Clone(kd))
				puts = append(puts, put{bytes.Clone(ks), bytes.Clone(vs)})
			case !bytes.Equal(vs, vd):
				puts = append(puts, put{bytes.Clone(ks), bytes.Clone(vs)})
			}
			ks, vs = cs.Next()
			kd, vd = cd.Next()
		}
	}
	for _, k := range delBuckets {
		if err := d.DeleteBucket(k); err != nil {
			return err
		}
	}
	if len(dels) > 0 || len(puts) > 0 {
		b, ok := d.(*bolt.Bucket)
		if !ok {
			return errors.New("compact: a value at the top level of the database")
		}
		for _, k := range dels {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		for _, p := range puts {
			if err := b.Put(p.k, p.v); err != nil {
				return err
			}
		}
	}
	for _, k := range newBuckets {
		b, err := d.CreateBucket(k)
		if err != nil {
			return err
		}
		if err := copyBucket(b, s.Bucket(k)); err != nil {
			return err
		}
	}
	for _, k := range nested {
		if err := syncBucket(d.Bucket(k), s.Bucket(k)); err != nil {
			return err
		}
	}
	return nil
}

// copyBucket copies s, nested buckets and sequences included, into the
// empty bucket d.
func copyBucket(d, s *bolt.Bucket) error {
	if err := d.SetSequence(s.Sequence()); err != nil {
		return err
	}
	d.FillPercent = 1.0
	return s.ForEach(func(k, v []byte) error {
		if v != nil {
			return d.Put(bytes.Clone(k), bytes.Clone(v))
		}
		nb, err := d.CreateBucket(bytes.Clone(k))
		if err != nil {
			return err
		}
		return copyBucket(nb, s.Bucket(k))
	})
}
