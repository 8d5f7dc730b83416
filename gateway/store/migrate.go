package store

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Migration reports what Init did to the file's layout.
type Migration struct {
	From, To string // schema versions; From is "" for a new file, equal to To when nothing was done
	// Users, Groups, Memberships and Refs are the counts reindexed.
	Users, Groups, Memberships, Refs int
	// Remap counts users whose record holds a reference release 1
	// resolved wrongly (through a value containing NUL); New maps them
	// again, which emits user.updated for each.
	Remap int
	// Collisions are pairs of resources whose names the new keys consider
	// the same (see Collision).
	Collisions []Collision
	Took       time.Duration
}

// Collision is two resources of a file written by release 1 whose names
// (userName, or a group's displayName) differ as sent but are the same
// identifier under foldKey: "ada@example.com" and "ada@example.com ", a
// composed and a decomposed "é", "ſam" and "sam". Both records are kept;
// Indexed, the older, holds the name (lookups, filters, references find
// it), Shadowed gets it when Indexed is deleted or renamed. A write that
// changes Shadowed is refused with 409 until one of them is renamed.
type Collision struct {
	Resource string `json:"resource"` // "user" or "group"
	Attr     string `json:"attribute"`
	Indexed  string `json:"indexed_id"`
	Shadowed string `json:"shadowed_id"`
}

// InitBuckets is Init with slog.Default() for the migration's warnings.
func InitBuckets(tx *bolt.Tx) error {
	_, err := Init(tx, nil)
	return err
}

// Init creates the store's buckets in a new file, or migrates the layout of
// an existing one to SchemaVersion, inside tx (the application's start-up
// write transaction), and returns what it did. A file with a schema this
// binary does not know is refused with ErrSchemaVersion.
//
// The migration from schema 1 rebuilds, in this one transaction, every key
// derived from a value (name, externalId and email indexes, pending
// references), counts each group's members, and indexes the references
// already resolved. It reads each record once, in creation order, and
// holds nothing per record but the index entries it writes: the
// transaction is atomic (a crash before commit leaves the file as release
// 1 wrote it, and the next start migrates again). Measured
// (TestMigrateScale, 2 shared cores): 100,000 users and a 50,000-member
// group in 1.9 s, commit included, with a peak heap of 63 MB. Every
// collision is logged as a warning with both ids (logger nil:
// slog.Default()).
func Init(tx *bolt.Tx, logger *slog.Logger) (Migration, error) {
	if logger == nil {
		logger = slog.Default()
	}
	start := time.Now()
	meta, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return Migration{}, fmt.Errorf("create bucket %s: %w", bucketMeta, err)
	}
	m := Migration{From: string(meta.Get(keySchema)), To: SchemaVersion}
	if m.From != "" && m.From != "1" && m.From != "2" && m.From != SchemaVersion {
		return m, fmt.Errorf("%w: file has %q, this binary reads %q (and migrates \"1\" and \"2\")", ErrSchemaVersion, m.From, SchemaVersion)
	}
	for _, name := range allBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return m, fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	if m.From == SchemaVersion {
		return m, nil
	}
	if m.From == "1" || m.From == "2" {
		migrate := migrate1
		if m.From == "2" {
			migrate = migrate2
		}
		if err := migrate(tx, &m); err != nil {
			return m, fmt.Errorf("migrate store schema %s to %s: %w", m.From, SchemaVersion, err)
		}
		m.Took = time.Since(start)
		for _, c := range m.Collisions {
			logger.Warn("two names written by release 1 are now the same identifier; the older keeps it, rename one of them in the identity provider",
				"resource", c.Resource, "attribute", c.Attr, "indexed_id", c.Indexed, "shadowed_id", c.Shadowed)
		}
		logger.Info("store migrated", "from", m.From, "to", m.To, "users", m.Users, "groups", m.Groups,
			"memberships", m.Memberships, "references", m.Refs, "remap", m.Remap, "collisions", len(m.Collisions), "took", m.Took)
	}
	return m, meta.Put(keySchema, []byte(SchemaVersion))
}

// resetBuckets empties the named buckets (delete and create: O(pages)).
func resetBuckets(tx *bolt.Tx, names ...[]byte) error {
	for _, name := range names {
		if err := tx.DeleteBucket(name); err != nil && err != bolt.ErrBucketNotFound {
			return err
		}
		if _, err := tx.CreateBucket(name); err != nil {
			return err
		}
	}
	return nil
}

// migrate1 rebuilds what schema 2 derives differently from schema 1.
func migrate1(tx *bolt.Tx, m *Migration) error {
	if err := resetBuckets(tx, bucketUsersByName, bucketUsersByExtID, bucketUsersByEmail, bucketUsersShadowed,
		bucketGroupsByName, bucketGroupsByExtID, bucketGroupsShadowed, bucketMemberCounts,
		bucketRefsResolved, bucketRefsResolvedBy, bucketRemap); err != nil {
		return err
	}
	users, groups := userKind(), groupKind()
	for _, k := range []*kind{users, groups} {
		n, err := reindex(tx, k, m, true)
		if err != nil {
			return err
		}
		if k == users {
			m.Users = n
		} else {
			m.Groups = n
		}
	}
	if err := rekeyPending(tx, m); err != nil {
		return err
	}
	// Member counts: one pass over the membership keys, in group order.
	counts := tx.Bucket(bucketMemberCounts)
	var group []byte
	var n uint64
	flush := func() error {
		if group == nil {
			return nil
		}
		return counts.Put(group, be64(n))
	}
	c := tx.Bucket(bucketMembers).Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		i := bytes.IndexByte(k, 0)
		if i <= 0 {
			continue
		}
		if !bytes.Equal(k[:i], group) {
			if err := flush(); err != nil {
				return err
			}
			group, n = bytes.Clone(k[:i]), 0
		}
		n++
		m.Memberships++
	}
	return flush()
}

// migrate2 re-keys a schema 2 file: schema 3's foldKey gives a different
// key where a name held a Cherokee letter (cases.Fold was not idempotent
// there; see caseClasses) or a default-ignorable character schema 2 kept
// (U+034F, the Hangul fillers, variation selectors: see invisible), so
// the name, externalId, email and shadowed-name
// indexes and the pending references are rebuilt. The resolved references
// and member counts schema 2 kept are right as they are.
func migrate2(tx *bolt.Tx, m *Migration) error {
	if err := resetBuckets(tx, bucketUsersByName, bucketUsersByExtID, bucketUsersByEmail, bucketUsersShadowed,
		bucketGroupsByName, bucketGroupsByExtID, bucketGroupsShadowed); err != nil {
		return err
	}
	users, groups := userKind(), groupKind()
	var err error
	if m.Users, err = reindex(tx, users, m, false); err != nil {
		return err
	}
	if m.Groups, err = reindex(tx, groups, m, false); err != nil {
		return err
	}
	return rekeyPending(tx, m)
}

// reindex writes the name, externalId (and, for users, email) index
// entries of every resource of k, in creation order, so that of two
// colliding names the older is indexed; from release 1 (refs) also the
// resolved references, which release 1 did not keep.
func reindex(tx *bolt.Tx, k *kind, m *Migration, refs bool) (int, error) {
	byName, sh, byExt := tx.Bucket(k.byName), tx.Bucket(k.shadowed), tx.Bucket(k.byExtID)
	data := tx.Bucket(k.data)
	n := 0
	c := tx.Bucket(k.order).Cursor()
	for _, id := c.First(); id != nil; _, id = c.Next() {
		v := data.Get(id)
		if v == nil {
			continue
		}
		var r record
		if err := decodeJSON(v, &r); err != nil {
			return n, fmt.Errorf("decode %s %s: %w", k.event, id, err)
		}
		n++
		if key := foldKey(k.nameOf(r.Doc)); key != "" {
			if owner := byName.Get([]byte(key)); owner != nil {
				m.Collisions = append(m.Collisions, Collision{Resource: k.event, Attr: k.nameAttr, Indexed: string(owner), Shadowed: r.ID})
				if err := sh.Put(joinKey(key, r.ID), be64(r.Seq)); err != nil {
					return n, err
				}
			} else if err := byName.Put([]byte(key), []byte(r.ID)); err != nil {
				return n, err
			}
		}
		if ext := exactKey(externalIDOf(r.Doc)); ext != "" {
			if err := byExt.Put(joinKey(ext, r.ID), nil); err != nil {
				return n, err
			}
		}
		if k.event != "user" {
			continue
		}
		if err := indexEmails(tx, nil, &r); err != nil {
			return n, err
		}
		if !refs {
			continue
		}
		// Release 1 kept no index of resolved references. A record field
		// whose value is the id of another user is taken for one: when
		// that user is deleted the dependant is mapped again, which for a
		// field that was no reference changes nothing and emits nothing.
		var fields []string
		broken := false
		idFields(r.Record, "", func(field, value string) {
			switch {
			case strings.IndexByte(value, 0) >= 0:
				broken = true
			case len(value) == 36 && value[8] == '-' && value[13] == '-' && value != r.ID && data.Get([]byte(value)) != nil:
				fields = append(fields, field, value)
			}
		})
		if broken {
			// A reference release 1 resolved through a value with a NUL
			// (values are checked since): New maps the user again and
			// tells the app.
			if err := tx.Bucket(bucketRemap).Put([]byte(r.ID), nil); err != nil {
				return n, err
			}
			m.Remap++
		}
		for i := 0; i < len(fields); i += 2 {
			if err := putResolved(tx, r.ID, fields[i+1], fields[i]); err != nil {
				return n, err
			}
			m.Refs++
		}
	}
	return n, nil
}

// idFields calls fn for every string value of rec (nested objects
// included) with its dotted field name.
func idFields(rec map[string]any, prefix string, fn func(field, value string)) {
	for key, v := range rec {
		switch v := v.(type) {
		case string:
			fn(prefix+key, v)
		case map[string]any:
			idFields(v, prefix+key+".", fn)
		}
	}
}

// rekeyPending rewrites the pending references under their new keys.
// Release 1 kept only the lower-cased value; foldKey of it is the key of
// the original value (folding subsumes lower-casing).
func rekeyPending(tx *bolt.Tx, m *Migration) error {
	pending, dep := tx.Bucket(bucketRefsPending), tx.Bucket(bucketRefsDependent)
	type ref struct{ dep, value, field string }
	var refs []ref
	c := dep.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		i := bytes.IndexByte(k, 0)
		if i <= 0 {
			continue
		}
		d, value := string(k[:i]), string(k[i+1:])
		field := pending.Get(joinKey(value, d))
		if field == nil {
			continue
		}
		refs = append(refs, ref{d, value, string(field)})
	}
	if err := resetBuckets(tx, bucketRefsPending, bucketRefsDependent); err != nil {
		return err
	}
	pending, dep = tx.Bucket(bucketRefsPending), tx.Bucket(bucketRefsDependent)
	for _, r := range refs {
		key := foldKey(r.value)
		if key == "" {
			continue
		}
		if err := pending.Put(joinKey(key, r.dep), []byte(r.field)); err != nil {
			return err
		}
		if err := dep.Put(joinKey(r.dep, key), nil); err != nil {
			return err
		}
		m.Refs++
	}
	return nil
}

// memberCount returns how many members group id has, without reading them.
func memberCount(tx *bolt.Tx, id string) int {
	return int(getCounter(tx.Bucket(bucketMemberCounts), []byte(id)))
}
