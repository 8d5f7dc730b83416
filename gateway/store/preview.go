package store

import (
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scimgate/scimgate/mapping"
)

// PreviewOptions bound what a remap preview lists.
type PreviewOptions struct {
	// Examples is how many changing records it shows as diffs (default 10).
	Examples int
	// MaxRejections bounds the rejections it lists (default 1,000); all
	// are counted.
	MaxRejections int
}

// Preview is what mapping every stored resource with a candidate mapping
// would do (a dry run of the remap): nothing is written.
type Preview struct {
	// Fingerprint is the candidate mapping's; Current the mapping the
	// stored records are on (meta/mapping_fp; empty on a database older
	// than fingerprints).
	Fingerprint string `json:"fingerprint"`
	Current     string `json:"current,omitempty"`
	// Users and Groups count the resources examined.
	Users  int `json:"users"`
	Groups int `json:"groups"`
	// Changed counts the records that would change (one event each):
	// ChangedUsers + ChangedGroups.
	Changed       int `json:"changed"`
	ChangedUsers  int `json:"changed_users"`
	ChangedGroups int `json:"changed_groups"`
	// UserFields and GroupFields count, per top-level record field, the
	// records whose value of that field would change.
	UserFields  map[string]int `json:"user_fields"`
	GroupFields map[string]int `json:"group_fields"`
	// Examples are the first changing records, as the events' changes.
	Examples []PreviewExample `json:"examples"`
	// Rejected counts the resources the candidate rejects (they would keep
	// their record); Rejections lists them, at most MaxRejections.
	Rejected   int              `json:"rejected"`
	Rejections []RemapRejection `json:"rejections"`
	TookMS     int64            `json:"took_ms"`
}

// PreviewExample is one record the candidate mapping would change.
type PreviewExample struct {
	Resource string                    `json:"resource"` // "user" or "group"
	ID       string                    `json:"id"`
	Changes  map[string]mapping.Change `json:"changes"`
}

// PreviewRemap maps every stored resource with m in one read transaction
// of the store's database (the running gateway's admin API).
func (s *Store) PreviewRemap(m *mapping.Mapper, o PreviewOptions) (*Preview, error) {
	return PreviewRemap(s.dbp.Load(), m, o)
}

// PreviewRemap maps every resource stored in db with m in one read
// transaction and reports what the remap would do: the records that change,
// per field, the first examples, and the resources m rejects. It decides
// with the remap's own comparison (compareUser, compareGroup), so on an
// unchanged database its counts are what the remap then does. db may be
// read-only (a backup, or a stopped gateway's file).
func PreviewRemap(db *bolt.DB, m *mapping.Mapper, o PreviewOptions) (*Preview, error) {
	if m == nil {
		return nil, errors.New("preview: no mapping")
	}
	if o.Examples <= 0 {
		o.Examples = 10
	}
	if o.MaxRejections <= 0 {
		o.MaxRejections = 1000
	}
	t0 := time.Now()
	p := &Preview{Fingerprint: m.Fingerprint(), UserFields: map[string]int{}, GroupFields: map[string]int{},
		Examples: []PreviewExample{}, Rejections: []RemapRejection{}}
	users, groups := userKind(), groupKind()
	err := db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil || tx.Bucket(bucketUsers) == nil || tx.Bucket(bucketGroups) == nil {
			return errors.New("not a scimgate database (its buckets are missing)")
		}
		p.Current = string(meta.Get(keyMappingFP))
		for _, k := range []*kind{users, groups} {
			fields := p.UserFields
			if k == groups {
				fields = p.GroupFields
			}
			c := tx.Bucket(k.data).Cursor()
			for key, v := c.First(); key != nil; key, v = c.Next() {
				d, err := k.decode(string(key), v)
				if err != nil {
					return err
				}
				var changes map[string]mapping.Change
				var rej *mapping.Rejection
				if k == users {
					p.Users++
					_, changes, rej = compareUser(tx, m, d)
				} else {
					p.Groups++
					_, changes, rej = compareGroup(m, d)
				}
				if rej != nil {
					p.Rejected++
					if len(p.Rejections) < o.MaxRejections {
						p.Rejections = append(p.Rejections, RemapRejection{Resource: k.event, ID: d.ID, Fields: rej.Fields,
							Reasons: rej.Reasons, Fingerprint: p.Fingerprint})
					}
					continue
				}
				if len(changes) == 0 {
					continue
				}
				p.Changed++
				if k == users {
					p.ChangedUsers++
				} else {
					p.ChangedGroups++
				}
				for f := range changes {
					fields[f]++
				}
				if len(p.Examples) < o.Examples {
					p.Examples = append(p.Examples, PreviewExample{Resource: k.event, ID: d.ID, Changes: changes})
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("preview the remap: %w", err)
	}
	p.TookMS = time.Since(t0).Milliseconds()
	return p, nil
}
