package store

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/scimgate/scimgate/gateway/scim"
)

// addMembers creates n users and puts them in group gid, in chunks.
func (ts *testStore) addMembers(gid string, n int) []string {
	ts.t.Helper()
	var all []string
	for len(all) < n {
		// Concurrent creates share commits (the writer's group commit).
		chunk := make([]string, min(500, n-len(all)))
		var wg sync.WaitGroup
		for w := range 16 {
			wg.Go(func() {
				for i := w; i < len(chunk); i += 16 {
					r, err := ts.CreateUser(doc(ts.t, fmt.Sprintf(`{"userName":"m%d-%s@example.com"}`, len(all)+i, gid)))
					if err != nil {
						ts.t.Error(err)
						return
					}
					chunk[i] = r.ID
				}
			})
		}
		wg.Wait()
		if ts.t.Failed() {
			ts.t.FailNow()
		}
		var vals []string
		for _, id := range chunk {
			vals = append(vals, fmt.Sprintf(`{"value":%q}`, id))
		}
		op := scim.Operation{Op: "add", Path: &scim.Path{Attr: "members"}, Value: doc(ts.t, `{"v":[`+strings.Join(vals, ",")+`]}`)["v"]}
		if _, err := ts.PatchGroup(gid, "", []scim.Operation{op}); err != nil {
			ts.t.Fatal(err)
		}
		all = append(all, chunk...)
	}
	return all
}

func memberLen(r *Resource) int {
	m, _ := r.Doc["members"].([]any)
	return len(m)
}

// TestGroupPageHoldsCount: a page of groups holds the Count groups asked
// for, each with all its members, however many members they have together
// (a member budget used to end pages early, and Okta's
// import, which advances startIndex by count, skipped the groups between),
// filtered or not; paging by count visits every group once.
func TestGroupPageHoldsCount(t *testing.T) {
	ts := newTestStore(t)
	sizes := []int{30, 30, 30, 120, 10, 0, 50}
	var gids []string
	for i, n := range sizes {
		gid := ts.createGroup(fmt.Sprintf(`{"displayName":"g%d"}`, i))
		ts.addMembers(gid, n)
		gids = append(gids, gid)
	}
	f, _ := scim.ParseFilter(`displayName sw "g"`)
	for _, filter := range []*scim.Filter{nil, f} {
		var seen []string
		for start := 1; start <= len(gids); start += 2 {
			total, page, err := ts.ListGroups(Query{Filter: filter, StartIndex: start, Count: 2, Members: true})
			if err != nil {
				t.Fatal(err)
			}
			if total != len(gids) {
				t.Fatalf("total = %d, want %d", total, len(gids))
			}
			if want := min(2, len(gids)-start+1); len(page) != want {
				t.Fatalf("filter %v: page at %d holds %d groups, want %d", filter, start, len(page), want)
			}
			for _, r := range page {
				seen = append(seen, r.ID)
				if n := sizes[len(seen)-1]; memberLen(r) != n {
					t.Errorf("group of %d members rendered %d", n, memberLen(r))
				}
			}
		}
		if !sameStrings(seen, gids) {
			t.Errorf("filter %v: paging visited %v, want each group once in order", filter, seen)
		}
	}
}

// TestMembershipFilters: the membership
// filters Okta and Entra send are answered from the index, alone and
// combined with other terms; shapes that cannot be answered are a 400
// invalidFilter, never a silent empty result.
func TestMembershipFilters(t *testing.T) {
	ts := newTestStore(t)
	u1 := ts.createUser(`{"userName":"u1@example.com","active":true}`)
	u2 := ts.createUser(`{"userName":"u2@example.com","active":false}`)
	u3 := ts.createUser(`{"userName":"u3@example.com"}`)
	g1 := ts.createGroup(fmt.Sprintf(`{"displayName":"G1","members":[{"value":%q},{"value":%q}]}`, u1, u2))
	g2 := ts.createGroup(fmt.Sprintf(`{"displayName":"G2","members":[{"value":%q},{"value":%q}]}`, u1, g1))
	g3 := ts.createGroup(`{"displayName":"G3"}`)
	_ = u3
	sorted := func(a ...string) string {
		for i := range a {
			for j := i + 1; j < len(a); j++ {
				if a[j] < a[i] {
					a[i], a[j] = a[j], a[i]
				}
			}
		}
		return strings.Join(a, ",")
	}
	for _, tc := range []struct {
		groups bool
		filter string
		want   string
	}{
		{true, fmt.Sprintf(`members.value eq %q`, u1), sorted(g1, g2)},
		{true, fmt.Sprintf(`members[value eq %q]`, u1), sorted(g1, g2)},
		{true, fmt.Sprintf(`members eq %q`, u2), g1},
		{true, fmt.Sprintf(`urn:ietf:params:scim:schemas:core:2.0:Group:members eq %q`, u2), g1},
		{true, fmt.Sprintf(`id eq %q and members eq %q`, g1, u1), g1}, // Entra's membership check
		{true, fmt.Sprintf(`id eq %q and members eq %q`, g3, u1), ""},
		{true, fmt.Sprintf(`members eq %q and displayName eq "g2"`, u1), g2},
		{true, fmt.Sprintf(`members eq %q and members eq %q`, u1, u2), g1},
		{true, fmt.Sprintf(`members eq %q`, g1), g2}, // nested group
		{true, fmt.Sprintf(`members eq %q`, u3), ""},
		{false, fmt.Sprintf(`groups.value eq %q`, g1), sorted(u1, u2)},
		{false, fmt.Sprintf(`groups eq %q and active eq true`, g1), u1},
		{false, fmt.Sprintf(`groups[value eq %q] and userName eq "U1@example.com"`, g2), u1},
		{false, fmt.Sprintf(`groups eq %q`, g2), u1}, // g1 is a group, not a user
	} {
		f, err := scim.ParseFilter(tc.filter)
		if err != nil {
			t.Fatal(err)
		}
		list := ts.ListUsers
		if tc.groups {
			list = ts.ListGroups
		}
		total, page, err := list(Query{Filter: f, Count: 10})
		if err != nil {
			t.Errorf("%s: %v", tc.filter, err)
			continue
		}
		if got := strings.Join(ids(page), ","); got != tc.want || total != len(page) {
			t.Errorf("%s: total %d, got %q, want %q", tc.filter, total, got, tc.want)
		}
	}
	// Paging through a membership filter.
	total, page, _ := ts.ListUsers(Query{Filter: mustFilter(t, fmt.Sprintf(`groups eq %q`, g1)), StartIndex: 2, Count: 1})
	if total != 2 || len(page) != 1 || page[0].ID != strings.Split(sorted(u1, u2), ",")[1] {
		t.Errorf("second page: total %d, %v", total, ids(page))
	}
	for _, tc := range []struct {
		groups bool
		filter string
	}{
		{true, fmt.Sprintf(`members eq %q or displayName eq "G3"`, u1)},
		{true, fmt.Sprintf(`not (members eq %q)`, u1)},
		{true, `members co "a"`},
		{true, `members pr`},
		{true, `members.display eq "u1@example.com"`},
		{true, fmt.Sprintf(`members[value eq %q or value eq %q]`, u1, u2)},
		{false, `groups.display eq "G1"`},
		{false, fmt.Sprintf(`userName eq "x" or groups eq %q`, g1)},
	} {
		f := mustFilter(t, tc.filter)
		list := ts.ListUsers
		if tc.groups {
			list = ts.ListGroups
		}
		_, _, err := list(Query{Filter: f, Count: 10})
		wantSCIMError(t, tc.filter, err, 400, scim.InvalidFilter, "eq \"<id>\"")
	}
}

func mustFilter(t testing.TB, s string) *scim.Filter {
	t.Helper()
	f, err := scim.ParseFilter(s)
	if err != nil {
		t.Fatalf("filter %s: %v", s, err)
	}
	return f
}
