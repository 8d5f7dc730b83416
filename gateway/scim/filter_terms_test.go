package scim

import "testing"

func TestMembershipValue(t *testing.T) {
	for _, tc := range []struct {
		filter, attr, want string
		ok                 bool
	}{
		{`members eq "u1"`, "members", "u1", true},
		{`members.value eq "u1"`, "members", "u1", true},
		{`Members.Value EQ "u1"`, "members", "u1", true},
		{`members[value eq "u1"]`, "members", "u1", true},
		{`urn:ietf:params:scim:schemas:core:2.0:Group:members.value eq "u1"`, "members", "u1", true},
		{`groups.value eq "g1"`, "groups", "g1", true},
		{`members.display eq "u1"`, "members", "", false},
		{`members.value co "u1"`, "members", "", false},
		{`members[value eq "u1" or value eq "u2"]`, "members", "", false},
		{`members[type eq "User"]`, "members", "", false},
		{`displayName eq "x"`, "members", "", false},
		{`members eq "u1"`, "groups", "", false},
	} {
		f, err := ParseFilter(tc.filter)
		if err != nil {
			t.Fatalf("%s: %v", tc.filter, err)
		}
		got, ok := f.MembershipValue(tc.attr)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: MembershipValue(%q) = %q, %v; want %q, %v", tc.filter, tc.attr, got, ok, tc.want, tc.ok)
		}
	}
}

func TestConjunctsAndMentions(t *testing.T) {
	f, err := ParseFilter(`id eq "g" and (members eq "u" and displayName sw "a")`)
	if err != nil {
		t.Fatal(err)
	}
	terms := f.Conjuncts()
	if len(terms) != 3 {
		t.Fatalf("Conjuncts = %d terms, want 3", len(terms))
	}
	if got, want := And(terms[0], terms[2]).String(), `id eq "g" and displayName sw "a"`; got != want {
		t.Errorf("And = %s, want %s", got, want)
	}
	if And() != nil || And(nil, nil) != nil {
		t.Error("And of nothing is not nil")
	}
	for _, tc := range []struct {
		filter string
		want   bool
	}{
		{`members eq "u"`, true},
		{`displayName eq "x" or not (members.value pr)`, true},
		{`emails[value eq "members"]`, false},
		{`displayName eq "members"`, false},
	} {
		f, err := ParseFilter(tc.filter)
		if err != nil {
			t.Fatal(err)
		}
		if got := f.Mentions("members"); got != tc.want {
			t.Errorf("%s: Mentions(members) = %v, want %v", tc.filter, got, tc.want)
		}
	}
}
