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
	berrors "go.etcd.io/bbolt/errors"
)

// The start-up check of the database file (issue 8, item 10).
//
// A damaged bbolt file must not crash the process: bbolt maps the file
// into memory, so reading past the end of a truncated file is a SIGBUS,
// a wild page number a SIGSEGV, and a page that fails bbolt's assertions
// a panic — in a goroutine bbolt starts itself when it rebuilds the
// freelist at open (NoFreelistSync), where nothing can recover it. A
// container would restart in a loop with a goroutine dump. So before the
// database is opened for writing, checkDatabase examines it in three
// steps and turns every problem into one line:
//
//  1. Without mapping anything (plain reads): the file is not empty, both
//     meta pages are read and at least one is valid (magic, version,
//     FNV checksum, as bbolt checks them), and the file is at least as
//     long as the valid meta's high-water mark says (truncation), with
//     the root and freelist pages below that mark.
//  2. Read-only, in a goroutine with debug.SetPanicOnFault so that a
//     fault on the mapping is a recoverable panic: every bucket is walked
//     with cursors, so every reachable branch, leaf and overflow page is
//     loaded through bbolt's own page assertions (page id and type), every
//     key is read and must sort strictly after the previous one, every
//     value's first and last byte is read, and nested buckets are walked
//     to a bounded depth. Then every branch page is read again with plain
//     reads (checkBranches): each key inside its page and in order, each
//     child a page of the file that names itself — what the cursors do not
//     read and bbolt's freelist rebuild does.
//  3. The read-write open runs in such a goroutine too: bbolt's freelist
//     rebuild then walks pages that step 2 has already read, and the
//     inconsistencies it reports (a page referenced twice, a reachable
//     freed page) surface as a recoverable panic in the opening goroutine.
//
// What it does not catch: a flipped bit inside a key or value that leaves
// the tree well-formed (bbolt keeps no data checksums; a JSON value that no
// longer parses fails when it is read, as an error, not a crash), nor a
// page that is well-formed but reachable from two places (bbolt's rebuild
// reports that at step 3, as a refused start, not a crash). bbolt's own
// tx.Check (0.53 s on the file below, warm) adds the freelist accounting,
// which NoFreelistSync files do not have; `scimgate restore` runs it.
//
// Cost, measured on a 1.3 GB file (800,000 keys; TestStartupCheckCost): the
// check and the read-write open together take 1.3–1.5 s with a cold page
// cache and 0.55–0.7 s with a warm one. Before step 2 the file is read
// sequentially once (prefetch): bbolt's open alone, which walks the pages
// in tree order, took 8 s on the cold file without it.

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
	res.PageSize, res.Pages, res.TxID = m.pageSize, m.pgid, m.txid
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

// walkDatabase is step 2 on a read-only handle. It returns the root page
// of every bucket that has pages of its own (for checkBranches).
func walkDatabase(db *bolt.DB, res *dbCheck) ([]uint64, error) {
	var roots []uint64
	err := db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			return walkBucket(b, fmt.Sprintf("%q", name), 1, res, &roots)
		})
	})
	return roots, err
}

func walkBucket(b *bolt.Bucket, path string, depth int, res *dbCheck, roots *[]uint64) error {
	if depth > maxBucketDepth {
		return fmt.Errorf("bucket %s: nested deeper than %d levels", path, maxBucketDepth)
	}
	res.Buckets++
	if r := uint64(b.Root()); r != 0 { // 0: an inline bucket, inside its parent's leaf
		*roots = append(*roots, r)
	}
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
				if err := walkBucket(nb, fmt.Sprintf("%s/%q", path, k), depth+1, res, roots); err != nil {
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

// Page types and element sizes of bbolt's format.
const (
	boltBranchPage = 0x01
	boltLeafPage   = 0x02
	boltElemSize   = 16 // branch: pos u32, ksize u32, pgid u64
)

// checkBranches reads every branch page under the given bucket roots with
// plain reads (nothing mapped, so nothing can fault) and checks what the
// cursor walk does not read: each element's key lies inside its page, the
// keys are in order, and each child is a page of the file whose header
// names it. bbolt's freelist rebuild reads those keys at open, in its own
// goroutine, where a wild offset would crash the process.
func checkBranches(path string, pageSize uint32, hwm uint64, roots []uint64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	ps := int64(pageSize)
	hdr := make([]byte, boltPageHeader)
	var buf []byte
	seen := map[uint64]bool{} // a page reached twice is a cycle or a shared page
	var visit func(pgid uint64, depth int) error
	visit = func(pgid uint64, depth int) error {
		if depth > 64 {
			return fmt.Errorf("page %d: the tree is deeper than 64 levels", pgid)
		}
		if pgid < 2 || pgid >= hwm {
			return fmt.Errorf("page %d is outside the file's %d pages", pgid, hwm)
		}
		if seen[pgid] {
			return fmt.Errorf("page %d is reached twice in the tree", pgid)
		}
		seen[pgid] = true
		if _, err := f.ReadAt(hdr, int64(pgid)*ps); err != nil {
			return fmt.Errorf("page %d: %v", pgid, err)
		}
		le := binary.LittleEndian
		id, flags, count, overflow := le.Uint64(hdr), le.Uint16(hdr[8:]), int(le.Uint16(hdr[10:])), uint64(le.Uint32(hdr[12:]))
		switch {
		case id != pgid:
			return fmt.Errorf("page %d identifies as page %d", pgid, id)
		case flags == boltLeafPage:
			return nil // the cursor walk read it
		case flags != boltBranchPage:
			return fmt.Errorf("page %d has type %#x, want a branch or leaf page", pgid, flags)
		case pgid+overflow >= hwm:
			return fmt.Errorf("branch page %d overflows past the file's %d pages", pgid, hwm)
		}
		span := int64(overflow+1) * ps
		if int64(cap(buf)) < span {
			buf = make([]byte, span)
		}
		page := buf[:span]
		if _, err := f.ReadAt(page, int64(pgid)*ps); err != nil {
			return fmt.Errorf("branch page %d: %v", pgid, err)
		}
		var prev []byte
		children := make([]uint64, 0, count)
		for i := 0; i < count; i++ {
			at := int64(boltPageHeader + i*boltElemSize)
			if at+boltElemSize > span {
				return fmt.Errorf("branch page %d: %d elements do not fit in the page", pgid, count)
			}
			pos, ksize, child := int64(le.Uint32(page[at:])), int64(le.Uint32(page[at+4:])), le.Uint64(page[at+8:])
			if at+pos+ksize > span {
				return fmt.Errorf("branch page %d: the key of element %d lies outside the page", pgid, i)
			}
			key := page[at+pos : at+pos+ksize]
			if prev != nil && bytes.Compare(prev, key) >= 0 {
				return fmt.Errorf("branch page %d: keys out of order at element %d", pgid, i)
			}
			prev = append(prev[:0], key...)
			children = append(children, child)
		}
		for _, c := range children {
			if err := visit(c, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	for _, r := range roots {
		if err := visit(r, 0); err != nil {
			return err
		}
	}
	return nil
}

// boltOptions are the options the gateway opens its database with.
func boltOptions() *bolt.Options {
	return &bolt.Options{
		Timeout: time.Second, // a second process on the same file fails fast
		// Measured (DESIGN.md): no freelist sync + hashmap freelist keeps
		// commits fast on a large file that has been emptied.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
		// Reads do not block the writer on remapping until the file passes this.
		InitialMmapSize: 256 << 20,
	}
}

// lockError is the lock timeout, with the hint that belongs to it only.
func lockError(path string, err error) error {
	return fmt.Errorf("open %s: %w (is another scimgate using this data dir?)", path, err)
}

// checkDatabase runs steps 1 and 2 on an existing file. It returns
// os.ErrNotExist when there is no file, errEmptyDatabase for a zero-length
// one, a *corruptError for a damaged one, and the lock error when another
// process holds the file.
func checkDatabase(path string) (dbCheck, error) {
	start := time.Now()
	res, err := checkMeta(path)
	if err != nil {
		return res, err
	}
	prefetch(path, int64(res.Pages)*int64(res.PageSize))
	err = protect(func() error {
		db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
		if err != nil {
			return err
		}
		defer db.Close()
		roots, err := walkDatabase(db, &res)
		if err == nil {
			err = checkBranches(path, res.PageSize, res.Pages, roots)
		}
		return err
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

// openDatabase checks the gateway's database file and opens it for
// writing. A missing file is created; an empty one is refused unless
// initEmpty is set (serve --init).
func openDatabase(path string, initEmpty bool) (*bolt.DB, dbCheck, error) {
	res, err := checkDatabase(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case errors.Is(err, errEmptyDatabase) && initEmpty:
	case errors.Is(err, errEmptyDatabase):
		return nil, res, fmt.Errorf("%s is empty; if this is a new installation, delete it or start with --init", path)
	case err != nil:
		return nil, res, err
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
