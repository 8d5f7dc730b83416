package store

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scimgate/scimgate/gateway/scim"
	"github.com/scimgate/scimgate/mapping"
	"github.com/scimgate/scimgate/outbox"
)

// SchemaVersion is the layout version kept under meta/schema. Version 2
// derives index keys with foldKey/exactKey (version 1 lower-cased them) and
// adds member counts, resolved-reference and shadowed-name buckets; Init
// migrates a version 1 file (see migrate.go). Version 3 keys a name holding
// a Cherokee letter by its case class (foldKey is idempotent); Init re-keys
// a version 2 file.
const SchemaVersion = "3"

var (
	bucketMeta          = []byte("meta")
	bucketUsers         = []byte("users")
	bucketUsersByName   = []byte("users_by_name")
	bucketUsersByExtID  = []byte("users_by_extid")
	bucketUsersByEmail  = []byte("users_by_email")
	bucketUsersOrder    = []byte("users_order")
	bucketUsersBlocks   = []byte("users_blocks")
	bucketGroups        = []byte("groups")
	bucketGroupsByName  = []byte("groups_by_name")
	bucketGroupsByExtID = []byte("groups_by_extid")
	bucketGroupsOrder   = []byte("groups_order")
	bucketGroupsBlocks  = []byte("groups_blocks")
	bucketMembers       = []byte("members")
	bucketMemberOf      = []byte("member_of")
	bucketRefsPending   = []byte("refs_pending")
	bucketRefsDependent = []byte("refs_dependent")
	// Added in schema 2.
	bucketMemberCounts   = []byte("member_counts")
	bucketRefsResolved   = []byte("refs_resolved")
	bucketRefsResolvedBy = []byte("refs_resolved_by")
	bucketUsersShadowed  = []byte("users_name_shadowed")
	bucketGroupsShadowed = []byte("groups_name_shadowed")
	bucketRemap          = []byte("users_remap") // id → "": map again at the next New (see migrate1)

	allBuckets = [][]byte{
		bucketMeta, bucketUsers, bucketUsersByName, bucketUsersByExtID, bucketUsersByEmail,
		bucketUsersOrder, bucketUsersBlocks, bucketGroups, bucketGroupsByName, bucketGroupsByExtID,
		bucketGroupsOrder, bucketGroupsBlocks, bucketMembers, bucketMemberOf, bucketRefsPending,
		bucketRefsDependent, bucketMemberCounts, bucketRefsResolved, bucketRefsResolvedBy,
		bucketUsersShadowed, bucketGroupsShadowed, bucketRemap, bucketRejected,
	}

	keySchema     = []byte("schema")
	keyLastChange = []byte("last_change")
	keyActive     = []byte("users_active")
)

// appended are the buckets whose keys a write appends at the end (ids are
// time-ordered, sequences grow, a group's new members have the newest
// ids), and outbox_events, the event log the writer appends to. bbolt
// splits a full page at its FillPercent (0.5 by default), which for keys
// that only append leaves every page half empty: filling them to
// appendedFill halves their pages on disk and the pages each commit
// writes.
var appended = [][]byte{bucketUsers, bucketGroups, bucketUsersOrder, bucketGroupsOrder, bucketUsersBlocks,
	bucketGroupsBlocks, bucketMembers, []byte("outbox_events")}

const appendedFill = 0.9

// fillAppended sets the fill of the appended buckets for the transaction
// (bbolt's FillPercent is not persistent).
func fillAppended(tx *bolt.Tx) {
	for _, name := range appended {
		if b := tx.Bucket(name); b != nil {
			b.FillPercent = appendedFill
		}
	}
}

// blockBits sets the size of a paging block: 1<<blockBits creation
// sequence numbers share one live-count entry.
const blockBits = 10

// Errors the gateway translates into SCIM errors.
var (
	ErrNotFound        = errors.New("resource not found")
	ErrVersionMismatch = errors.New("version mismatch")
	ErrSchemaVersion   = errors.New("unsupported database schema version")
)

// Options configures a Store.
type Options struct {
	// UserExtensions are extension schemas advertised for users beyond
	// the enterprise one (normally the mapping's UserExtensions).
	UserExtensions []*scim.Schema
	// Now stamps meta and events; time.Now when nil.
	Now func() time.Time
	// OnCommit is called after each transaction that enqueued events (the
	// dispatcher's Notify). It must not block.
	OnCommit func()
	// VersionFloor makes every version written greater than it: a
	// resource's next version is max(current, VersionFloor) + 1. The
	// application folds its restore epoch into it so that versions keep
	// growing after an older backup is restored.
	VersionFloor uint64
	// Logger receives the writer's recovered panics (with their stack) and
	// warnings such as ignored member ids; it logs ids, never values.
	// Discarded when nil.
	Logger *slog.Logger
	// Observer hears about mapping warnings, mapping rejections and
	// ignored member ids; nil: nobody.
	Observer Observer
	// UnknownMembers says what a member id that names no user or group
	// does to a group write: UnknownIgnore (the default, also for "") or
	// UnknownReject (config scim.unknown_members).
	UnknownMembers string
	// MaxDepth bounds the nesting of a document a PATCH produces
	// (scim.limits.max_depth); scim.DefaultMaxDepth when 0. It is the
	// value until SetLimits, which the gateway's Server calls with its
	// configuration at start and at each reload (the one source).
	MaxDepth int
	// MaxResourceBytes bounds a stored resource, encoded
	// (scim.limits.max_resource_bytes); DefaultMaxResourceBytes when 0.
	// SetLimits changes it, as MaxDepth.
	MaxResourceBytes int
	// RemapManual is config remap: manual: a changed mapping (at start or
	// by SetMapper) leaves the stored records as they are until Remap is
	// called, and says so in RemapStatus and the log. Otherwise (on_change)
	// they are mapped again in the background at once.
	RemapManual bool
}

// Limits bound what a client write may produce; SetLimits changes them.
type Limits struct {
	// MaxDepth bounds the nesting of a document a PATCH produces
	// (scim.DefaultMaxDepth when 0).
	MaxDepth int
	// MaxResourceBytes bounds a stored resource, encoded
	// (DefaultMaxResourceBytes when 0).
	MaxResourceBytes int
}

// DefaultMaxResourceBytes is the default of scim.limits.max_resource_bytes.
const DefaultMaxResourceBytes = 512 << 10

// SetLimits replaces the limits writes check from now on (a reload).
func (s *Store) SetLimits(l Limits) {
	if l.MaxDepth <= 0 {
		l.MaxDepth = scim.DefaultMaxDepth
	}
	if l.MaxResourceBytes <= 0 {
		l.MaxResourceBytes = DefaultMaxResourceBytes
	}
	s.lim.Store(&l)
}

// patchLimits is what a PATCH may produce.
func (s *Store) patchLimits() scim.Limits { return scim.Limits{MaxDepth: s.lim.Load().MaxDepth} }

// The values of Options.UnknownMembers.
const (
	// UnknownIgnore drops unknown member ids (no membership, no event),
	// applies the rest, and logs and reports how many were dropped.
	UnknownIgnore = "ignore"
	// UnknownReject refuses the whole request with 400 invalidValue.
	UnknownReject = "reject"
)

// Observer is told, after the fact, what operators watch. Its
// methods are called after the transaction commits (MappingRejected: after
// the refusal), from the store's goroutines: they must not block. They
// carry resource kinds ("user", "group"), ids, field names and counts,
// never values.
type Observer interface {
	// MappingWarning reports an optional record field dropped or defaulted
	// because its value was invalid (mapping.Result.WarnedFields).
	MappingWarning(resource, id, field string)
	// MappingRejected reports a write refused by the mapping, with the
	// record fields involved (mapping.Rejection.Fields).
	MappingRejected(resource string, fields []string)
	// UnknownMembers reports member ids ignored in a write of group
	// groupID (UnknownIgnore).
	UnknownMembers(groupID string, ids int)
}

// Store is the bbolt-backed resource store. It is safe for concurrent use.
type Store struct {
	dbp    atomic.Pointer[bolt.DB]        // swapped by Pause's resume
	mapper atomic.Pointer[mapping.Mapper] // swapped by SetMapper, in the writer
	now    func() time.Time
	wake   func()
	floor  uint64
	lim    atomic.Pointer[Limits] // what a client write may produce (SetLimits)
	w      *writer
	rm     *remapper // the background pass of a changed mapping (remap.go)
	log    *slog.Logger
	obs    Observer
	reject bool // Options.UnknownMembers == UnknownReject

	users  *kind
	groups *kind

	lastChange atomic.Int64 // unix nanos of the last committed change
	writeCounters
}

// kind holds what users and groups have in common: their buckets, their
// unique naming attribute and their resource type.
type kind struct {
	name     string // "User" or "Group"
	event    string // event type prefix: "user" or "group"
	rt       *scim.ResourceType
	nameAttr string // userName or displayName: required, unique case-insensitively
	data     []byte
	byName   []byte
	shadowed []byte // foldKey(name) 0x00 id → be64(seq): a name another resource holds (see Init)
	byExtID  []byte
	order    []byte
	blocks   []byte
	count    []byte // meta key of the live count
}

// New returns a Store over db, whose buckets InitBuckets must have created,
// and starts its writer. Close stops it.
func New(db *bolt.DB, mapper *mapping.Mapper, opts Options) *Store {
	s := &Store{now: opts.Now, wake: opts.OnCommit, floor: opts.VersionFloor,
		log: opts.Logger, obs: opts.Observer, reject: opts.UnknownMembers == UnknownReject}
	s.SetLimits(Limits{MaxDepth: opts.MaxDepth, MaxResourceBytes: opts.MaxResourceBytes})
	s.mapper.Store(mapper)
	s.dbp.Store(db)
	if s.now == nil {
		s.now = time.Now
	}
	if s.wake == nil {
		s.wake = func() {}
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.users = userKind(opts.UserExtensions...)
	var groupExts []*scim.Schema
	if mapper != nil {
		groupExts = mapper.GroupExtensions() // the extensions group rules read
	}
	s.groups = groupKind(groupExts...)
	_ = db.View(func(tx *bolt.Tx) error {
		if t, err := time.Parse(time.RFC3339Nano, string(tx.Bucket(bucketMeta).Get(keyLastChange))); err == nil {
			s.lastChange.Store(t.UnixNano())
		}
		return nil
	})
	s.w = newWriter(db, isClean, s.log)
	s.w.begin = fillAppended
	s.w.start()
	s.remapQueued()
	s.initRemap(opts.RemapManual)
	return s
}

// remapQueued maps again the users the migration queued (users_remap),
// in one write, before the store serves: each whose record changes gets
// user.updated. A failure is logged and retried at the next start.
func (s *Store) remapQueued() {
	var queued []string
	_ = s.view(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketRemap); b != nil {
			_ = b.ForEach(func(k, _ []byte) error { queued = append(queued, string(k)); return nil })
		}
		return nil
	})
	if len(queued) == 0 {
		return
	}
	err := s.w.update(func(tx *bolt.Tx) error {
		now, m := s.now(), s.mapper.Load()
		for _, id := range queued {
			if _, err := s.remapUser(tx, m, id, now, ""); err != nil {
				return err
			}
			if err := tx.Bucket(bucketRemap).Delete([]byte(id)); err != nil {
				return err
			}
		}
		return s.touched(tx, now)
	})
	if err != nil {
		s.log.Error("mapping again the users whose references release 1 resolved wrongly failed; retried at the next start",
			"users", len(queued), "err", err)
		return
	}
	s.log.Info("mapped again the users whose references release 1 resolved wrongly", "users", len(queued))
}

func userKind(ext ...*scim.Schema) *kind {
	return &kind{
		name: "User", event: "user", rt: scim.NewUserResourceType(ext...), nameAttr: "userName",
		data: bucketUsers, byName: bucketUsersByName, shadowed: bucketUsersShadowed, byExtID: bucketUsersByExtID,
		order: bucketUsersOrder, blocks: bucketUsersBlocks, count: []byte("users_count"),
	}
}

func groupKind(ext ...*scim.Schema) *kind {
	return &kind{
		name: "Group", event: "group", rt: scim.NewGroupResourceType(ext...), nameAttr: "displayName",
		data: bucketGroups, byName: bucketGroupsByName, shadowed: bucketGroupsShadowed, byExtID: bucketGroupsByExtID,
		order: bucketGroupsOrder, blocks: bucketGroupsBlocks, count: []byte("groups_count"),
	}
}

// Close waits for queued writes to commit and stops the writer. It does not
// close the database.
func (s *Store) Close() {
	s.stopRemap()
	s.w.close()
}

// view runs a read transaction on the store's current database.
func (s *Store) view(fn func(tx *bolt.Tx) error) error { return s.dbp.Load().View(fn) }

// Pause holds the store's writes: it returns once the writes queued before
// it have committed and the writer is idle. Writes from then on wait (they
// are not refused); reads go on. resume(db) makes the store use db from
// then on — the same database, or the file CompactOnline replaced, opened
// again (nil: the same) — and lets the writes go on; it must be called,
// once, before Close.
func (s *Store) Pause() (resume func(db *bolt.DB), err error) {
	r, err := s.w.pause()
	if err != nil {
		return nil, err
	}
	return func(db *bolt.DB) {
		if db != nil {
			s.dbp.Store(db)
		}
		r(db)
	}, nil
}

// UserType and GroupType return the resource types the store validates
// against, for discovery endpoints and filter validation.
func (s *Store) UserType() *scim.ResourceType  { return s.users.rt }
func (s *Store) GroupType() *scim.ResourceType { return s.groups.rt }

// isClean reports whether err is a refusal decided before anything was
// written, so the rest of a group-committed batch may still commit.
func isClean(err error) bool {
	var se *scim.Error
	return errors.As(err, &se) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrVersionMismatch) ||
		errors.Is(err, errConflict)
}

// Resource is a stored resource as the gateway renders it.
type Resource struct {
	ID       string
	Version  uint64
	Created  time.Time
	Modified time.Time
	// Doc is the SCIM representation: the attributes the client sent,
	// with id, meta (without location) and groups or members filled in.
	Doc map[string]any
	// tag is the entity tag when it covers more than Version: a user's
	// groups (see Store.addGroups).
	tag string
}

// nextVersion is the version a resource at version cur gets when it
// changes (cur 0: a new resource).
func (s *Store) nextVersion(cur uint64) uint64 { return max(cur, s.floor) + 1 }

// ETag returns the resource's weak entity tag, also its meta.version. A
// user's tag covers its groups too, which change without a new version of
// the user: W/"<version>-<hash of its groups>" when it is in any group.
func (r *Resource) ETag() string {
	if r.tag != "" {
		return r.tag
	}
	return etag(r.Version)
}

func etag(v uint64) string { return `W/"` + strconv.FormatUint(v, 10) + `"` }

// record is what the users and groups buckets hold.
type record struct {
	ID       string    `json:"id"`
	Seq      uint64    `json:"seq"`
	Created  time.Time `json:"created"`
	Modified time.Time `json:"modified"`
	Version  uint64    `json:"version"`
	// Data is the record as events carry it (see eventData), encoded at
	// each write so member events are composed without decoding.
	Data    json.RawMessage `json:"data"`
	Display string          `json:"display,omitempty"` // members' display value
	Doc     map[string]any  `json:"doc"`               // client attributes, normalised; no id, meta, groups, members, password
	Record  map[string]any  `json:"record"`            // the canonical record the mapping produced
	// FP is the fingerprint of the mapping that produced Record
	// (mapping.Mapper.Fingerprint); "" for a record written before
	// fingerprints, which a remap treats as on an older mapping.
	FP string `json:"fp,omitempty"`

	size int // bytes of the stored form it was decoded from (0: not decoded)
}

// Stats are the store's counts for status and metrics.
type Stats struct {
	Users       int       `json:"users"`
	ActiveUsers int       `json:"active_users"`
	Groups      int       `json:"groups"`
	LastChange  time.Time `json:"last_change,omitzero"`
}

// Stats returns the current counts.
func (s *Store) Stats() (Stats, error) {
	var st Stats
	err := s.view(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		st.Users = int(getCounter(meta, s.users.count))
		st.ActiveUsers = int(getCounter(meta, keyActive))
		st.Groups = int(getCounter(meta, s.groups.count))
		return nil
	})
	if n := s.lastChange.Load(); n != 0 {
		st.LastChange = time.Unix(0, n).UTC()
	}
	return st, err
}

// LastChange returns when the last SCIM change committed (zero if never).
func (s *Store) LastChange() time.Time {
	if n := s.lastChange.Load(); n != 0 {
		return time.Unix(0, n).UTC()
	}
	return time.Time{}
}

// ---- helpers shared by users and groups ----

// newID returns a UUID version 7 (RFC 9562): 48 bits of Unix
// milliseconds, then random bits. Ids made later sort later, so a new
// record's key lands at the end of its bucket (and a new member's keys at
// the end of its group's range) instead of in a random leaf: fewer pages
// dirtied per write, fuller pages on disk.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[6:])
	ms := uint64(time.Now().UnixMilli())
	b[0], b[1], b[2], b[3], b[4], b[5] = byte(ms>>40), byte(ms>>32), byte(ms>>24), byte(ms>>16), byte(ms>>8), byte(ms)
	b[6] = b[6]&0x0f | 0x70
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func be64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}

func getCounter(b *bolt.Bucket, key []byte) uint64 { return fromBE64(b.Get(key)) }

// fromBE64 decodes be64 (0 for anything but 8 bytes).
func fromBE64(v []byte) uint64 {
	if len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func addCounter(b *bolt.Bucket, key []byte, delta int) error {
	return b.Put(key, be64(uint64(int64(getCounter(b, key))+int64(delta))))
}

func joinKey(parts ...string) []byte {
	return []byte(strings.Join(parts, "\x00"))
}

// decodeJSON decodes with UseNumber so integers survive exactly.
func decodeJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	return dec.Decode(v)
}

func (k *kind) get(tx *bolt.Tx, id string) (*record, error) {
	v := tx.Bucket(k.data).Get([]byte(id))
	if v == nil {
		return nil, ErrNotFound
	}
	var r record
	if err := decodeJSON(v, &r); err != nil {
		return nil, fmt.Errorf("decode %s %s: %w", k.event, id, err)
	}
	return &r, nil
}

func (k *kind) put(tx *bolt.Tx, r *record) error {
	enc, err := k.encode(r)
	if err != nil {
		return err
	}
	return tx.Bucket(k.data).Put([]byte(r.ID), enc.bytes(r.Seq))
}

// decode decodes a stored record of k read from its bucket.
func (k *kind) decode(id string, v []byte) (*record, error) {
	var r record
	if err := decodeJSON(v, &r); err != nil {
		return nil, fmt.Errorf("decode %s %s: %w", k.event, id, err)
	}
	r.size = len(v)
	return &r, nil
}

// getRS is get through a read set: the record of id as the snapshot holds it.
func (k *kind) getRS(tx *bolt.Tx, rs *readSet, id string) (*record, error) {
	v := rs.get(tx, k.data, []byte(id))
	if v == nil {
		return nil, ErrNotFound
	}
	return k.decode(id, v)
}

// nameOf returns the unique naming attribute of a doc ("" when absent).
func (k *kind) nameOf(doc map[string]any) string {
	v, _ := scim.Get(doc, k.nameAttr)
	s, _ := v.(string)
	return s
}

func externalIDOf(doc map[string]any) string { return stringAttr(doc, "externalId") }

// checkName enforces the required, unique name (compared by foldKey). id
// is the resource being written ("" on create).
func (k *kind) checkName(tx *bolt.Tx, rs *readSet, doc map[string]any, id string) error {
	name := k.nameOf(doc)
	key := foldKey(name)
	if key == "" {
		return scim.Errorf(http.StatusBadRequest, scim.InvalidValue,
			"%s is required: send a non-empty %q string in the %s", k.nameAttr, k.nameAttr, k.name)
	}
	if other := rs.get(tx, k.byName, []byte(key)); other != nil && string(other) != id {
		return scim.Errorf(http.StatusConflict, scim.Uniqueness,
			"a %s with this %s already exists (id %s; names are compared ignoring case, surrounding spaces and Unicode normalisation form); link to it instead of creating a new one",
			k.name, k.nameAttr, other)
	}
	return nil
}

// index adds (old == nil) or moves the secondary index entries of r.
func (k *kind) index(tx *bolt.Tx, old, r *record) error {
	var oldName, oldExt string
	if old != nil {
		oldName, oldExt = foldKey(k.nameOf(old.Doc)), exactKey(externalIDOf(old.Doc))
	}
	name, ext := foldKey(k.nameOf(r.Doc)), exactKey(externalIDOf(r.Doc))
	if old == nil || oldName != name {
		if old != nil {
			if err := k.unindexName(tx, oldName, r.ID); err != nil {
				return err
			}
		}
		if err := tx.Bucket(k.byName).Put([]byte(name), []byte(r.ID)); err != nil {
			return err
		}
	}
	if old == nil || oldExt != ext {
		if old != nil && oldExt != "" {
			if err := tx.Bucket(k.byExtID).Delete(joinKey(oldExt, r.ID)); err != nil {
				return err
			}
		}
		if ext != "" {
			if err := tx.Bucket(k.byExtID).Put(joinKey(ext, r.ID), nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// unindexName gives up id's claim on the name key: its index entry when
// id holds it (then the oldest resource shadowed under that name, if any,
// takes it over), or its shadowed entry when another resource holds it.
// Shadowed names exist only in databases migrated from schema 1, where two
// names that differed only in case folding, spacing or normalisation were
// both accepted.
func (k *kind) unindexName(tx *bolt.Tx, key, id string) error {
	byName, sh := tx.Bucket(k.byName), tx.Bucket(k.shadowed)
	if owner := byName.Get([]byte(key)); owner == nil || string(owner) != id {
		return sh.Delete(joinKey(key, id))
	}
	var heir string
	var heirSeq uint64
	scanPrefix(sh, key, func(tail, v []byte) bool {
		if seq := fromBE64(v); heir == "" || seq < heirSeq {
			heir, heirSeq = string(tail), seq
		}
		return true
	})
	if heir == "" {
		return byName.Delete([]byte(key))
	}
	if err := sh.Delete(joinKey(key, heir)); err != nil {
		return err
	}
	return byName.Put([]byte(key), []byte(heir))
}

// unindex removes every index entry of r, including its paging position.
func (k *kind) unindex(tx *bolt.Tx, r *record) error {
	if err := k.unindexName(tx, foldKey(k.nameOf(r.Doc)), r.ID); err != nil {
		return err
	}
	if ext := exactKey(externalIDOf(r.Doc)); ext != "" {
		if err := tx.Bucket(k.byExtID).Delete(joinKey(ext, r.ID)); err != nil {
			return err
		}
	}
	if err := tx.Bucket(k.order).Delete(be64(r.Seq)); err != nil {
		return err
	}
	if err := addCounter(tx.Bucket(k.blocks), be64(r.Seq>>blockBits), -1); err != nil {
		return err
	}
	return addCounter(tx.Bucket(bucketMeta), k.count, -1)
}

// insert writes a new record, prepared as enc, with its creation-order
// position and its name and externalId index entries.
func (k *kind) insert(tx *bolt.Tx, r *record, enc encoded) error {
	seq, err := tx.Bucket(k.order).NextSequence()
	if err != nil {
		return err
	}
	r.Seq = seq
	if err := tx.Bucket(k.order).Put(be64(seq), []byte(r.ID)); err != nil {
		return err
	}
	if err := addCounter(tx.Bucket(k.blocks), be64(seq>>blockBits), 1); err != nil {
		return err
	}
	if err := addCounter(tx.Bucket(bucketMeta), k.count, 1); err != nil {
		return err
	}
	if err := k.index(tx, nil, r); err != nil {
		return err
	}
	return tx.Bucket(k.data).Put([]byte(r.ID), enc.bytes(seq))
}

// checkIfMatch compares an If-Match header with the current entity tag.
func checkIfMatch(ifMatch, cur string) error {
	if ifMatch == "" || ifMatch == "*" {
		return nil
	}
	for _, tag := range strings.Split(ifMatch, ",") {
		tag = strings.TrimSpace(tag)
		if tag == cur || "W/"+tag == cur {
			return nil
		}
	}
	return ErrVersionMismatch
}

// meta builds the SCIM meta attribute (without location).
func (k *kind) meta(r *record) map[string]any {
	return map[string]any{
		"resourceType": k.name,
		"created":      r.Created.UTC().Format(time.RFC3339Nano),
		"lastModified": r.Modified.UTC().Format(time.RFC3339Nano),
		"version":      etag(r.Version),
	}
}

// resource renders r as the client sees it, without members or groups.
func (k *kind) resource(r *record) *Resource {
	doc := make(map[string]any, len(r.Doc)+3)
	for key, v := range r.Doc {
		doc[key] = v
	}
	if _, ok := scim.Get(doc, "schemas"); !ok {
		doc["schemas"] = []any{k.rt.Schema.ID}
	}
	doc["id"] = r.ID
	doc["meta"] = k.meta(r)
	return &Resource{ID: r.ID, Version: r.Version, Created: r.Created, Modified: r.Modified, Doc: doc}
}

// encodeData sets r.Data: the canonical record as events carry it, the
// mapped fields plus the SCIM id and the version that only grows.
func (r *record) encodeData() error {
	d := make(map[string]any, len(r.Record)+2)
	for k, v := range r.Record {
		d[k] = v
	}
	d["id"] = r.ID
	d["version"] = r.Version
	b, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("encode event data of %s: %w", r.ID, err)
	}
	r.Data = b
	return nil
}

// eventData returns r's event data, encoding it if r changed since.
func eventData(r *record) json.RawMessage {
	if r.Data == nil {
		_ = r.encodeData() // a record that decoded from JSON encodes back
	}
	return r.Data
}

// dataOf composes an event's data object from (key, encoded record) pairs.
func dataOf(pairs ...any) json.RawMessage {
	b := make([]byte, 0, 256)
	b = append(b, '{')
	for i := 0; i+1 < len(pairs); i += 2 {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, pairs[i].(string)...)
		b = append(b, `":`...)
		b = append(b, pairs[i+1].(json.RawMessage)...)
	}
	return append(b, '}')
}

// enqueue appends one event to the outbox in tx and arranges the wake-up.
func (s *Store) enqueue(tx *bolt.Tx, typ string, resources []string, data json.RawMessage, changes map[string]mapping.Change) error {
	return s.enqueueCause(tx, typ, resources, data, changes, "")
}

// enqueueCause is enqueue with the event's cause ("mapping" for a remap).
func (s *Store) enqueueCause(tx *bolt.Tx, typ string, resources []string, data json.RawMessage, changes map[string]mapping.Change, cause string) error {
	ev := outbox.Event{Type: typ, Resources: resources, Data: data, Cause: cause}
	var err error
	if changes != nil {
		if ev.Changes, err = json.Marshal(changes); err != nil {
			return fmt.Errorf("encode event changes: %w", err)
		}
	}
	if _, err := outbox.Enqueue(tx, ev, s.now()); err != nil {
		return err
	}
	tx.OnCommit(s.wake)
	return nil
}

// touched records the time of a committed change (meta and memory).
func (s *Store) touched(tx *bolt.Tx, now time.Time) error {
	tx.OnCommit(func() { s.lastChange.Store(now.UnixNano()) })
	return tx.Bucket(bucketMeta).Put(keyLastChange, []byte(now.UTC().Format(time.RFC3339Nano)))
}

func resKey(kind, id string) string { return kind + "/" + id }

// newRecord is the record of a resource of kind k created now, with the
// client's doc and the canonical record the mapping made of it: encoded,
// within the size bound, and with its created event.
func (s *Store) newRecord(k *kind, id string, doc, canonical map[string]any, fp string) (*record, encoded, event, error) {
	now := s.now()
	r := &record{ID: id, Created: now, Modified: now, Version: s.nextVersion(0), Doc: doc, Record: canonical, FP: fp}
	enc, err := k.encode(r)
	if err != nil {
		return nil, enc, event{}, err
	}
	if err := s.checkSize(k, enc, 0); err != nil {
		return nil, enc, event{}, err
	}
	created, err := newEvent(k.event+".created", []string{resKey(k.name, id)}, dataOf(k.event, r.Data), nil)
	return r, enc, created, err
}

// jsonEqual reports whether two JSON documents are the same.
func jsonEqual(a, b any) bool {
	x, err1 := json.Marshal(a)
	y, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}
