package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scimgate/scimgate/gateway/store"
	berrors "go.etcd.io/bbolt/errors"
)

// The start-up check of the database file.
//
// A damaged bbolt file must not crash the process: bbolt maps the file
// into memory, so reading past the end of a truncated file is a SIGBUS,
// a wild page number a SIGSEGV, and a page that fails bbolt's assertions
// a panic — and at open, with NoFreelistSync, bbolt rebuilds the freelist
// by walking every page in a goroutine of its own, where nothing can
// recover either. (On the first inconsistency that walk reports, bbolt
// panics in the opening goroutine and closes its transaction while the
// walker still uses it: a nil dereference in the walker, even when the
// panic is recovered.) A container would restart in a loop with a
// goroutine dump. So before the database is opened for writing,
// checkDatabase examines it and turns every problem into one line:
//
//  1. Plain reads, nothing mapped (checkMeta): the file is not empty, both
//     meta pages are read and at least one is valid (magic, version, FNV
//     checksum, as bbolt checks them), the file is at least as long as the
//     valid meta's high-water mark says (truncation), and the root and
//     freelist pages are below that mark.
//  2. The whole page tree, from the root bucket through every nested
//     bucket, over a read-only view with every access bounds-checked, so
//     that nothing can fault (checkTree): what bbolt's rebuild checks —
//     every page reached once, below the mark, naming itself, a branch or
//     a leaf; every key and value inside its page; keys in order within a
//     page and within the range the parent gives it. The file is read
//     sequentially first (prefetch), so the walk finds it in the page
//     cache.
//  3. Every bucket walked with bbolt's own cursors, read-only, in a
//     goroutine with debug.SetPanicOnFault, where a fault is a recoverable
//     panic: every key and both ends of every value through bbolt's own
//     code and assertions, inline buckets included.
//  4. The read-write open, in such a goroutine too: bbolt's rebuild then
//     walks pages steps 2 and 3 have read and found sound.
//
// After a clean stop — the file's last commit wrote the freelist
// (store.SyncFreelist, after everything else Close writes) and both meta
// pages are sound — no write was cut short and bbolt's open reads the
// freelist instead of walking the pages. Step 3 then runs after the gateway
// has started (verifyDatabase, in one read transaction beside it): it costs
// as much as step 2, and the time between SIGTERM and the new process
// answering is what Okta's admins pay for each deploy (docs/operations.md).
// If it finds damage the gateway stops with the same one line and leaves
// the file without the freelist, so the next start checks it whole and
// refuses it. Step 2 stays before the open: it is what keeps bbolt's reads
// from faulting.
//
// What it does not catch: a flipped bit inside a key or value that leaves
// the tree well-formed — bbolt keeps no data checksums; a value that no
// longer decodes fails when it is read, as an error (the outbox's loader
// stops the dispatcher on an undecodable event, see the report of
// TestRandomBitFlipsNeverCrash). bbolt's own tx.Check (0.53 s on the file
// below, warm) adds only freelist accounting, which NoFreelistSync files
// do not keep; `scimgate restore` runs it on a backup.
//
// Cost, measured on a 1.3 GB file (800,000 keys; TestStartupCheckCost): the
// whole check and the read-write open together take 1.3–1.6 s with a cold
// page cache and 0.5–0.6 s with a warm one; bbolt's open alone, which walks
// the pages in tree order, took 8 s on the cold file without the prefetch.
// After a clean stop, see docs/operations.md (Upgrades).

// Meta page layout of bbolt's file format (go.etcd.io/bbolt/internal/common).
const (
	boltMagic        = 0xED0CDAED
	boltVersion      = 2
	boltPageHeader   = 16 // id u64, flags u16, count u16, overflow u32
	boltMetaSize     = 64 // magic, version, page size, flags u32; root, sequence, freelist, pgid, txid, checksum u64
	boltMetaChecksum = 56 // the checksum covers the bytes before it
	boltNoFreelist   = ^uint64(0)
	maxBucketDepth   = 16 // scimgate nests buckets two levels deep
)

// errCorrupt marks a database file that fails the check.
var errCorrupt = errors.New("database file is corrupt")

// corruptError says what is wrong with which file, and what to do.
type corruptError struct {
	path   string
	detail string
}

func (e *corruptError) Error() string {
	return fmt.Sprintf("database file is corrupt: %s: %s; restore it from a backup, see docs/operations.md", e.path, e.detail)
}

func (e *corruptError) Unwrap() error { return errCorrupt }

func corrupt(path, format string, args ...any) error {
	return &corruptError{path: path, detail: fmt.Sprintf(format, args...)}
}

// errEmptyDatabase is an existing file of zero bytes: an empty database
// would make the next Okta push re-create everyone with new ids.
var errEmptyDatabase = errors.New("database file is empty")

// boltMeta is one decoded meta page.
type boltMeta struct {
	pageSize                   uint32
	root, freelist, pgid, txid uint64
	valid                      bool
	problem                    string // why it is not valid
}

// readMeta decodes the meta page at off (plain reads: nothing is mapped).
func readMeta(f *os.File, off int64) boltMeta {
	buf := make([]byte, boltPageHeader+boltMetaSize)
	if _, err := f.ReadAt(buf, off); err != nil {
		return boltMeta{problem: fmt.Sprintf("meta page at byte %d cannot be read: %v", off, err)}
	}
	m := buf[boltPageHeader:]
	le := binary.LittleEndian // bbolt writes its structs in the machine's order; every supported target is little-endian
	meta := boltMeta{
		pageSize: le.Uint32(m[8:]), root: le.Uint64(m[16:]), freelist: le.Uint64(m[32:]),
		pgid: le.Uint64(m[40:]), txid: le.Uint64(m[48:]),
	}
	h := fnv.New64a()
	h.Write(m[:boltMetaChecksum])
	switch {
	case le.Uint32(m[0:]) != boltMagic:
		meta.problem = "not a bbolt database (bad magic number)"
	case le.Uint32(m[4:]) != boltVersion:
		meta.problem = fmt.Sprintf("unsupported bbolt file version %d", le.Uint32(m[4:]))
	case le.Uint64(m[boltMetaChecksum:]) != h.Sum64():
		meta.problem = "meta page checksum mismatch"
	case meta.pageSize < 512 || meta.pageSize&(meta.pageSize-1) != 0:
		meta.problem = fmt.Sprintf("invalid page size %d", meta.pageSize)
	default:
		meta.valid = true
	}
	return meta
}

// dbCheck is what the check found, for the start-up log.
type dbCheck struct {
	Size     int64
	PageSize uint32
	Pages    uint64 // high-water mark
	TxID     uint64
	Keys     int
	Buckets  int
	Warning  string // e.g. one damaged meta page (bbolt uses the other)
	Elapsed  time.Duration
	// Compaction is what the start-up compaction did; CompactionErr why it
	// could not (the file is then used as it was).
	Compaction    store.CompactReport
	CompactionErr error
	root          uint64 // the root bucket's page
	// Clean is set when the file's last transaction wrote the freelist
	// (store.SyncFreelist, the last write of a clean shutdown) and both meta
	// pages are sound: no write was cut by a crash.
	Clean bool
	// Deferred is set when the page-tree walk was left to verifyDatabase,
	// which runs after the gateway has started (a clean file, see Clean).
	Deferred bool
}

// checkMeta is step 1: it reports errEmptyDatabase for a zero-length file
// and a *corruptError for a file bbolt would crash on or refuse.
func checkMeta(path string) (dbCheck, error) {
	f, err := os.Open(path)
	if err != nil {
		return dbCheck{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return dbCheck{}, err
	}
	res := dbCheck{Size: fi.Size()}
	if fi.Size() == 0 {
		return res, errEmptyDatabase
	}
	if fi.Size() < 2*1024 {
		return res, corrupt(path, "the file is truncated: %d bytes, less than two pages", fi.Size())
	}
	m0 := readMeta(f, 0)
	var m1 boltMeta
	switch {
	case m0.valid:
		m1 = readMeta(f, int64(m0.pageSize))
	default:
		// Like bbolt: without page 0, look for page 1 at every page size.
		m1 = boltMeta{problem: "no valid second meta page found"}
		for size := int64(1024); size <= 16<<20 && size < fi.Size()-1024; size <<= 1 {
			if m := readMeta(f, size); m.valid && int64(m.pageSize) == size {
				m1 = m
				break
			}
		}
	}
	var m boltMeta
	switch {
	case m0.valid && m1.valid:
		if m = m0; m1.txid > m0.txid {
			m = m1
		}
	case m0.valid:
		m, res.Warning = m0, "the second meta page is damaged ("+m1.problem+"); bbolt uses the first"
	case m1.valid:
		m, res.Warning = m1, "the first meta page is damaged ("+m0.problem+"); bbolt uses the second"
	default:
		return res, corrupt(path, "both meta pages are damaged: %s; %s", m0.problem, m1.problem)
	}
	res.PageSize, res.Pages, res.TxID, res.root = m.pageSize, m.pgid, m.txid, m.root
	res.Clean = m0.valid && m1.valid && m.freelist != boltNoFreelist
	if need := int64(m.pgid) * int64(m.pageSize); m.pgid > uint64(fi.Size()) || fi.Size() < need {
		return res, corrupt(path, "the file is truncated: %d bytes, but its last transaction (%d) uses %d pages of %d bytes (%d bytes)",
			fi.Size(), m.txid, m.pgid, m.pageSize, need)
	}
	if m.root < 2 || m.root >= m.pgid {
		return res, corrupt(path, "the root page %d is outside the file's %d pages", m.root, m.pgid)
	}
	if m.freelist != boltNoFreelist && (m.freelist < 2 || m.freelist >= m.pgid) {
		return res, corrupt(path, "the freelist page %d is outside the file's %d pages", m.freelist, m.pgid)
	}
	return res, nil
}

// protect runs fn in a goroutine whose memory faults are panics
// (debug.SetPanicOnFault) and turns any panic — a fault on the mapped file
// or a bbolt assertion — into an error.
func protect(fn func() error) error {
	done := make(chan error, 1)
	go func() {
		debug.SetPanicOnFault(true)
		defer func() {
			if r := recover(); r != nil {
				done <- fmt.Errorf("%v", r)
			}
		}()
		done <- fn()
	}()
	return <-done
}

// walkDatabase walks every bucket of a read-only handle with cursors.
func walkDatabase(db *bolt.DB, res *dbCheck) error {
	return db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			return walkBucket(b, fmt.Sprintf("%q", name), 1, res)
		})
	})
}

func walkBucket(b *bolt.Bucket, path string, depth int, res *dbCheck) error {
	if depth > maxBucketDepth {
		return fmt.Errorf("bucket %s: nested deeper than %d levels", path, maxBucketDepth)
	}
	res.Buckets++
	var prev []byte
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if prev != nil && bytes.Compare(prev, k) >= 0 {
			return fmt.Errorf("bucket %s: keys out of order after key %d", path, res.Keys)
		}
		prev = k
		res.Keys++
		if v == nil {
			if nb := b.Bucket(k); nb != nil {
				if err := walkBucket(nb, fmt.Sprintf("%s/%q", path, k), depth+1, res); err != nil {
					return err
				}
			}
			continue
		}
		if len(v) > 0 {
			_ = v[0] + v[len(v)-1] // touch both ends: an overflow page past the end of the file faults here
		}
	}
	return nil
}

// prefetch reads the first n bytes of the file sequentially, so that the
// walk that follows (and bbolt's own at open), which visit pages in tree
// order, find them in the page cache: on a cold 1.3 GB file the walk took
// 7.6–8.4 s by itself, and 0.8–1.1 s with this read before it.
// Errors are ignored: the walk reports what matters.
func prefetch(path string, n int64) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	buf := make([]byte, 4<<20)
	for off := int64(0); off < n; {
		k, err := f.ReadAt(buf[:min(int64(len(buf)), n-off)], off)
		off += int64(k)
		if err != nil {
			return
		}
	}
}

// Page types, flags and element sizes of bbolt's format.
const (
	boltBranchPage = 0x01
	boltLeafPage   = 0x02
	boltBucketLeaf = 0x01 // leaf element flag: the value is a bucket
	boltElemSize   = 16   // branch: pos, ksize u32, pgid u64; leaf: flags, pos, ksize, vsize u32
	boltBucketHdr  = 16   // a bucket value: root pgid u64, sequence u64 (then the inline page when root is 0)
)

// checkTree walks the whole page tree of the file from the root bucket
// over a read-only view of it (readPages), with bounds checked on every
// access, so that nothing can fault. It checks what bbolt's freelist
// rebuild checks at open — every page reached once, below the high-water
// mark, naming itself, a branch or a leaf; each key inside its page; keys
// in order within a page and within the range its parent gives it — and
// follows nested buckets. It must find everything that rebuild would: the
// rebuild runs in a goroutine of bbolt's own, and on the first problem it
// panics in the opening goroutine and rolls its transaction back while its
// walker still runs, which then dereferences the closed transaction (a
// crash with a goroutine dump, whatever recovers the panic).
func checkTree(view []byte, pageSize uint32, hwm, root uint64) (keys int, err error) {
	ps := uint64(pageSize)
	le := binary.LittleEndian
	if uint64(len(view)) < hwm*ps {
		return 0, fmt.Errorf("the file is shorter than its %d pages", hwm)
	}
	seen := make([]bool, hwm)
	var pending []uint64 // roots of nested buckets, checked after the current one
	var visit func(pgid uint64, min, max []byte, depth int) ([]byte, error)
	visit = func(pgid uint64, min, max []byte, depth int) ([]byte, error) {
		if depth > 64 {
			return nil, fmt.Errorf("page %d: the tree is deeper than 64 levels", pgid)
		}
		if pgid < 2 || pgid >= hwm {
			return nil, fmt.Errorf("page %d is outside the file's %d pages", pgid, hwm)
		}
		hdr := view[pgid*ps:]
		id, flags, count, overflow := le.Uint64(hdr), le.Uint16(hdr[8:]), int(le.Uint16(hdr[10:])), uint64(le.Uint32(hdr[12:]))
		switch {
		case id != pgid:
			return nil, fmt.Errorf("page %d identifies as page %d", pgid, id)
		case flags != boltBranchPage && flags != boltLeafPage:
			return nil, fmt.Errorf("page %d has type %#x, not a branch or leaf page", pgid, flags)
		case overflow >= hwm-pgid:
			return nil, fmt.Errorf("page %d overflows past the file's %d pages", pgid, hwm)
		}
		for p := pgid; p <= pgid+overflow; p++ {
			if seen[p] {
				return nil, fmt.Errorf("page %d is reached twice in the tree", p)
			}
			seen[p] = true
		}
		page := view[pgid*ps : (pgid+overflow+1)*ps]
		span := uint64(len(page))
		if uint64(boltPageHeader)+uint64(count)*boltElemSize > span {
			return nil, fmt.Errorf("page %d: %d elements do not fit in it", pgid, count)
		}
		// in returns b[off:off+n] or an error when it leaves the page.
		in := func(off, n uint64, what string, i int) ([]byte, error) {
			if off > span || n > span-off {
				return nil, fmt.Errorf("page %d: the %s of element %d lies outside the page", pgid, what, i)
			}
			return page[off : off+n], nil
		}
		// Key order as bbolt checks it: after the previous key (or the
		// parent's lower bound), before the parent's upper bound.
		order := func(i int, key, prev []byte) error {
			if prev != nil && bytes.Compare(prev, key) > 0 || i > 0 && bytes.Equal(prev, key) {
				return fmt.Errorf("page %d: key %d is out of order", pgid, i)
			}
			if max != nil && bytes.Compare(key, max) >= 0 {
				return fmt.Errorf("page %d: key %d is beyond its parent's range", pgid, i)
			}
			return nil
		}
		running := min
		if flags == boltBranchPage {
			var last []byte
			for i := range count {
				at := uint64(boltPageHeader) + uint64(i)*boltElemSize
				pos, ksize, child := uint64(le.Uint32(page[at:])), uint64(le.Uint32(page[at+4:])), le.Uint64(page[at+8:])
				key, err := in(at+pos, ksize, "key", i)
				if err != nil {
					return nil, err
				}
				if err := order(i, key, running); err != nil {
					return nil, err
				}
				upper := max
				if i+1 < count {
					nat := at + boltElemSize
					npos, nksize := uint64(le.Uint32(page[nat:])), uint64(le.Uint32(page[nat+4:]))
					if upper, err = in(nat+npos, nksize, "key", i+1); err != nil {
						return nil, err
					}
				}
				if last, err = visit(child, key, upper, depth+1); err != nil {
					return nil, err
				}
				running = last
			}
			return last, nil
		}
		var key []byte
		for i := range count {
			at := uint64(boltPageHeader) + uint64(i)*boltElemSize
			eflags, pos, ksize, vsize := le.Uint32(page[at:]), uint64(le.Uint32(page[at+4:])), uint64(le.Uint32(page[at+8:])), uint64(le.Uint32(page[at+12:]))
			var err error
			if key, err = in(at+pos, ksize, "key", i); err != nil {
				return nil, err
			}
			value, err := in(at+pos+ksize, vsize, "value", i)
			if err != nil {
				return nil, err
			}
			if err := order(i, key, running); err != nil {
				return nil, err
			}
			running = key
			keys++
			if eflags&boltBucketLeaf != 0 {
				if len(value) < boltBucketHdr {
					return nil, fmt.Errorf("page %d: bucket %d has a value of %d bytes", pgid, i, len(value))
				}
				if r := le.Uint64(value); r != 0 { // 0: inline, inside this value
					pending = append(pending, r)
				}
			}
		}
		return key, nil
	}
	pending = append(pending, root)
	for len(pending) > 0 {
		r := pending[len(pending)-1]
		pending = pending[:len(pending)-1]
		if _, err := visit(r, nil, nil, 0); err != nil {
			return keys, err
		}
	}
	return keys, nil
}

// boltOptions are the options the gateway opens its database with.
func boltOptions() *bolt.Options { return store.BoltOptions() }

// lockError is the lock timeout, with the hint that belongs to it only.
func lockError(path string, err error) error {
	return fmt.Errorf("open %s: %w (is another scimgate using this data dir?)", path, err)
}

// checkDatabase runs steps 1 to 3 on an existing file. It returns
// os.ErrNotExist when there is no file, errEmptyDatabase for a zero-length
// one, a *corruptError for a damaged one, and the lock error when another
// process holds the file.
func checkDatabase(path string) (dbCheck, error) { return checkFile(path, false) }

// checkFile is checkDatabase; with deferClean, a file whose last run ended
// cleanly (dbCheck.Clean) gets steps 1 and 2 only and is marked Deferred:
// step 3 is left to verifyDatabase, once the gateway answers. Step 2 is
// what keeps bbolt's own reads from faulting; step 3 reads every key again
// through bbolt's code, and on a 1 GB file costs as much as step 2, in the
// time SCIM goes unanswered across a restart.
func checkFile(path string, deferClean bool) (dbCheck, error) {
	start := time.Now()
	res, err := checkMeta(path)
	if err != nil {
		return res, err
	}
	if err := withView(path, int64(res.Pages)*int64(res.PageSize), func(view []byte) error {
		_, err := checkTree(view, res.PageSize, res.Pages, res.root)
		return err
	}); err != nil {
		var ce *corruptError
		if errors.As(err, &ce) {
			return res, err
		}
		return res, corrupt(path, "%v", err)
	}
	if deferClean && res.Clean {
		res.Deferred, res.Elapsed = true, time.Since(start)
		return res, nil
	}
	err = protect(func() error {
		db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
		if err != nil {
			return err
		}
		defer db.Close()
		return walkDatabase(db, &res)
	})
	res.Elapsed = time.Since(start)
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return res, lockError(path, err)
	case err != nil:
		return res, corrupt(path, "%v", err)
	}
	return res, nil
}

// verifyDatabase is step 3 on the open database, beside the running
// gateway: every bucket walked with bbolt's cursors in one read
// transaction, faults and bbolt's assertions turned into an error.
func verifyDatabase(db *bolt.DB, path string) (dbCheck, error) {
	start := time.Now()
	var res dbCheck
	err := protect(func() error { return walkDatabase(db, &res) })
	res.Elapsed = time.Since(start)
	if err != nil {
		return res, corrupt(path, "%v", err)
	}
	return res, nil
}

// openDatabase checks the gateway's database file and opens it for
// writing. A missing file is created; an empty one is refused unless
// initEmpty is set (serve --init).
func openDatabase(path string, initEmpty bool) (*bolt.DB, dbCheck, error) {
	res, err := checkFile(path, true)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case errors.Is(err, errEmptyDatabase) && initEmpty:
	case errors.Is(err, errEmptyDatabase):
		return nil, res, fmt.Errorf("%s is empty; if this is a new installation, delete it or start with --init", path)
	case err != nil:
		return nil, res, err
	}
	// A file that is mostly free is rewritten without its free pages
	// before it is opened (and any other gets its freelist synced, so the
	// open does not read every page); on failure the file is left intact.
	if err == nil {
		err = protect(func() (err error) {
			res.Compaction, err = store.CompactFile(path, store.DefaultCompactFree, boltOptions())
			return err
		})
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, res, lockError(path, err)
		}
		res.CompactionErr, err = err, nil
	}
	var db *bolt.DB
	err = protect(func() (err error) {
		db, err = bolt.Open(path, 0o600, boltOptions())
		return err
	})
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return nil, res, lockError(path, err)
	case err != nil:
		return nil, res, corrupt(path, "%v", err)
	}
	return db, res, nil
}

// copyFile copies src to dst (created 0600, fsynced).
func copyFile(dst, src string) (int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return n, err
}
