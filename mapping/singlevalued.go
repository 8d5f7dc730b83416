package mapping

import (
	"slices"
	"strings"
)

// HasSingleValued reports whether the catalog has a type that allows one
// value per user (multi_valued: false).
func (m *Mapper) HasSingleValued() bool {
	for _, t := range m.Catalog() {
		if !t.IsMultiValued() {
			return true
		}
	}
	return false
}

// ReplaceSingleValued applies the single-valued add rule of RFC 7644
// §3.5.2.1 to the catalog's single-valued types: after is a user document
// as one PATCH add operation left before (only its roles and entitlements
// are read); for each single-valued type to which the add brought a value,
// the values of that type before holds are removed from after, in place,
// so the add replaces the type's value. An identity provider that changes
// a role as two PATCHes then works in either order: add then remove (the
// remove finds nothing), or remove then add. Two values of the type
// brought by the same add are left for the catalog check to refuse.
func (m *Mapper) ReplaceSingleValued(before, after map[string]any) {
	catalog := m.Catalog()
	for _, attr := range []string{"roles", "entitlements"} {
		var single []*CatalogType
		for i := range catalog {
			if catalog[i].Attribute == attr && !catalog[i].IsMultiValued() {
				single = append(single, &catalog[i])
			}
		}
		if len(single) == 0 {
			continue
		}
		// typeOf names the single-valued type of an assigned id, "" for none.
		typeOf := func(id string) (string, string) {
			if t, v := findValue(single, id); t != nil {
				return t.Name, v.ID
			}
			return "", ""
		}
		old := map[string]bool{} // catalog ids of single-valued types before
		for _, id := range assignedValues(before, attr) {
			if _, v := typeOf(id); v != "" {
				old[v] = true
			}
		}
		replaced := map[string]bool{} // types the add brought a new value to
		for _, id := range assignedValues(after, attr) {
			if t, v := typeOf(id); t != "" && !old[v] {
				replaced[t] = true
			}
		}
		if len(replaced) == 0 {
			continue
		}
		key, list := listAttr(after, attr)
		kept := slices.DeleteFunc(slices.Clone(list), func(e any) bool {
			ids := assignedValues(map[string]any{attr: []any{e}}, attr)
			if len(ids) != 1 {
				return false
			}
			t, v := typeOf(ids[0])
			return t != "" && replaced[t] && old[v]
		})
		if len(kept) == len(list) {
			continue
		}
		after[key] = kept
	}
}

// listAttr returns the key and the elements of a multi-valued attribute of
// doc, matched case-insensitively.
func listAttr(doc map[string]any, attr string) (string, []any) {
	for k, v := range doc {
		if strings.EqualFold(k, attr) {
			if list, ok := v.([]any); ok {
				return k, list
			}
			return k, []any{v}
		}
	}
	return attr, nil
}
