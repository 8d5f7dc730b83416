package store

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"

	"github.com/scimgate/scimgate/gateway/scim"
)

func TestFoldKey(t *testing.T) {
	for _, tc := range []struct{ a, b string }{
		{"ada@example.com", "ADA@Example.COM"},
		{"ada@example.com", "ada@example.com "},
		{"ada@example.com", "\u00a0ada@example.com"}, // no-break space trims too
		{"jos\u00e9", "jose\u0301"},                  // composed, decomposed
		{"sam", "\u017fam"},                          // long s folds to s
		{"strasse", "Stra\u00dfe"},                   // full folding
		{"zwj", "zw\u200bj"},                         // invisible characters never count
		{"boss@x.comzzz", "boss@x.com\u0000zzz"},
	} {
		if ka, kb := foldKey(tc.a), foldKey(tc.b); ka != kb {
			t.Errorf("foldKey(%q) = %q, foldKey(%q) = %q; want equal", tc.a, ka, tc.b, kb)
		}
	}
	for _, tc := range []struct{ a, b string }{
		{"ada@example.com", "ada@example.org"},
		{"jos\u00e9", "jose"},
	} {
		if foldKey(tc.a) == foldKey(tc.b) {
			t.Errorf("foldKey(%q) == foldKey(%q); want different", tc.a, tc.b)
		}
	}
	// externalId is caseExact (RFC 7643): trimmed and NFC, not folded.
	if got, want := exactKey(" Ext-jos\u00e9 "), exactKey("Ext-jose\u0301"); got != want {
		t.Errorf("exactKey = %q and %q, want equal", got, want)
	}
	if exactKey("EXT-1") == exactKey("ext-1") {
		t.Error("exactKey folds case; externalId is caseExact")
	}
	if strings.ContainsRune(foldKey("a\x00b"), 0) || strings.ContainsRune(exactKey("a\x00b"), 0) {
		t.Error("a key contains NUL")
	}
}

// TestLookalikeDuplicates: every look-alike of
// an existing userName or group displayName is refused, with 409 when it
// is the same name written differently and 400 naming the attribute when
// it holds a control or invisible character; the detail never quotes it.
func TestLookalikeDuplicates(t *testing.T) {
	ts := newTestStore(t)
	ada := ts.createUser(`{"userName":"ada@example.com"}`)
	ts.createUser(`{"userName":"jos\u00e9@example.com"}`)
	ts.createUser(`{"userName":"sam@example.com"}`)
	for _, tc := range []struct {
		name, userName string
		status         int
		scimType       string
		detail         []string
	}{
		{"trailing space", "ada@example.com ", 409, scim.Uniqueness, []string{ada}},
		{"upper case", "ADA@EXAMPLE.COM", 409, scim.Uniqueness, nil},
		{"leading tab", "\tada@example.com", 400, scim.InvalidValue, []string{"userName", "control character (U+0009) at character 1"}},
		{"decomposed", "jose\u0301@example.com", 409, scim.Uniqueness, nil},
		{"long s", "\u017fam@example.com", 409, scim.Uniqueness, nil},
		{"zero-width space", "a\u200bda@example.com", 400, scim.InvalidValue, []string{"userName", "zero-width character (U+200B) at character 2"}},
		{"bidi override", "\u202eada@example.com", 400, scim.InvalidValue, []string{"bidirectional"}},
		{"NUL", "ada@example.com\u0000x", 400, scim.InvalidValue, []string{"NUL"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ts.CreateUser(doc(t, `{"userName":`+quoteJSON(tc.userName)+`}`))
			se := wantSCIMError(t, "create", err, tc.status, tc.scimType, tc.detail...)
			if strings.Contains(se.Detail, "example.com") {
				t.Errorf("detail quotes the value: %s", se.Detail)
			}
		})
	}
	total, _, err := ts.ListUsers(Query{Count: 10})
	if err != nil || total != 3 {
		t.Fatalf("users = %d (%v), want the 3 originals only", total, err)
	}

	// Group displayName, the same rule.
	ts.createGroup(`{"displayName":"Engineering"}`)
	_, err = ts.CreateGroup(doc(t, `{"displayName":"engineering "}`))
	wantSCIMError(t, "group look-alike", err, http.StatusConflict, scim.Uniqueness)
	_, err = ts.CreateGroup(doc(t, `{"displayName":"Eng\u200dineering"}`))
	wantSCIMError(t, "group zero-width", err, http.StatusBadRequest, scim.InvalidValue, "displayName")

	// Other identifiers: externalId, email values, member values, ids in paths.
	_, err = ts.CreateUser(doc(t, `{"userName":"x@example.com","externalId":"e\u0000x"}`))
	wantSCIMError(t, "externalId", err, 400, scim.InvalidValue, "externalId")
	_, err = ts.CreateUser(doc(t, `{"userName":"x@example.com","emails":[{"value":"a@b.c"},{"value":"boss@x.com\u0000zzz"}]}`))
	wantSCIMError(t, "email", err, 400, scim.InvalidValue, "emails[1].value", "NUL")
	_, err = ts.CreateGroup(doc(t, `{"displayName":"G","members":[{"value":"`+ada+`\ufeff"}]}`))
	wantSCIMError(t, "member", err, 400, scim.InvalidValue, "members[0].value")
	_, err = ts.GetUser(ada + "\x00")
	wantSCIMError(t, "id in path", err, 400, scim.InvalidValue, "id")
	_, err = ts.PatchUser(ada, "", []scim.Operation{{Op: "replace", Path: &scim.Path{Attr: "userName"}, Value: "ada\u2060@example.com"}})
	wantSCIMError(t, "patch", err, 400, scim.InvalidValue, "userName")
}

// TestNameKeptAsSent: the stored document and the record keep the value
// the client sent; the key only decides uniqueness and lookups, which
// agree with it (the userName eq point lookup included).
func TestNameKeptAsSent(t *testing.T) {
	ts := newTestStore(t)
	id := ts.createUser(`{"userName":"Bob@Example.com "}`)
	r, err := ts.GetUser(id)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Doc["userName"]; got != "Bob@Example.com " {
		t.Errorf("userName = %q, want as sent", got)
	}
	for _, v := range []string{"bob@example.com", "BOB@EXAMPLE.COM ", "Bob@Example.com "} {
		f, err := scim.ParseFilter(`userName eq ` + quoteJSON(v))
		if err != nil {
			t.Fatal(err)
		}
		total, page, err := ts.ListUsers(Query{Filter: f, Count: 10})
		if err != nil || total != 1 || len(page) != 1 || page[0].ID != id {
			t.Errorf("userName eq %q: total %d, page %v, err %v; want the user", v, total, ids(page), err)
		}
	}
	// The manager reference resolves by the same key.
	rep := ts.createUser(`{"userName":"rep@example.com","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"manager":{"value":"BOB@example.com"}}}`)
	rec, err := ts.UserRecord(rep)
	if err != nil {
		t.Fatal(err)
	}
	if got := field(t, rec, "manager_id"); got != id {
		t.Errorf("manager_id = %v, want %s", got, id)
	}
}

// TestNULIndexKeys, on data written before values
// were checked: an email index key "boss@x.com 0x00 zzz 0x00 <id>" must
// not make a lookup of boss@x.com resolve to "zzz 0x00 <id>".
func TestNULIndexKeys(t *testing.T) {
	ts := newTestStore(t)
	mallory := ts.createUser(`{"userName":"mallory@example.com"}`)
	err := ts.db.Update(func(tx *bolt.Tx) error { // what release 1 wrote for that email
		return tx.Bucket(bucketUsersByEmail).Put(joinKey("boss@x.com", "zzz", mallory), nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	rep := ts.createUser(`{"userName":"rep@example.com","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"manager":{"value":"boss@x.com"}}}`)
	rec, err := ts.UserRecord(rep)
	if err != nil {
		t.Fatal(err)
	}
	if got := field(t, rec, "manager_id"); got != nil {
		t.Fatalf("manager_id = %q, want none (pending)", got)
	}
	f, _ := scim.ParseFilter(`emails.value eq "boss@x.com"`)
	if total, page, err := ts.ListUsers(Query{Filter: f, Count: 10}); err != nil || total != 0 {
		t.Errorf("emails eq boss@x.com: %d %v %v, want nothing", total, ids(page), err)
	}
	boss := ts.createUser(`{"userName":"boss","emails":[{"value":"boss@x.com"}]}`)
	rec, _ = ts.UserRecord(rep)
	if got := field(t, rec, "manager_id"); got != boss {
		t.Errorf("manager_id after the boss arrives = %v, want %s", got, boss)
	}
}

func quoteJSON(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// FuzzKeys: keys never hold a NUL or an invisible character, are stable
// (the key of a key is itself), and checkIdentifier refuses exactly the
// values with an invisible character, without quoting them.
func FuzzKeys(f *testing.F) {
	for _, s := range []string{"ada@example.com", " ADA@example.com\t", "jose\u0301", "\u017fam", "a\u200bb", "boss@x.com\x00zzz", "İstanbul", "ǰ", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, k := range []string{foldKey(s), exactKey(s)} {
			if strings.IndexFunc(k, invisible) >= 0 {
				t.Fatalf("key %q of %q holds an invisible character", k, s)
			}
		}
		if k := foldKey(s); foldKey(k) != k {
			t.Fatalf("foldKey not stable: %q → %q → %q", s, k, foldKey(k))
		}
		if k := exactKey(s); exactKey(k) != k {
			t.Fatalf("exactKey not stable: %q → %q → %q", s, k, exactKey(k))
		}
		err := checkIdentifier("userName", s)
		if (err != nil) != (strings.IndexFunc(s, invisible) >= 0) {
			t.Fatalf("checkIdentifier(%q) = %v", s, err)
		}
		if err != nil && len(s) > 3 && strings.Contains(err.Error(), s) {
			t.Fatalf("detail quotes the value: %v", err)
		}
	})
}

// TestFoldKeyIdempotentEveryRune checks every rune, alone and after an
// ASCII prefix: the key of a key is itself, and a rune and each member of
// its simple case class get the same key. Cherokee was the case cases.Fold
// got wrong ("ꮪ" → "Ꮪ" → "ꮪ"; FuzzKeys found it in CI).
func TestFoldKeyIdempotentEveryRune(t *testing.T) {
	bad := 0
	for r := rune(0x80); r <= unicode.MaxRune && bad < 10; r++ {
		if !utf8.ValidRune(r) {
			continue
		}
		for _, s := range []string{string(r), "00000000000" + string(r)} {
			if k := foldKey(s); foldKey(k) != k {
				t.Errorf("foldKey not stable: %q → %q → %q", s, k, foldKey(k))
				bad++
			}
		}
		if f := unicode.SimpleFold(r); f != r && strings.IndexFunc(string(r), invisible) < 0 {
			if a, b := foldKey(string(r)), foldKey(string(f)); a != b {
				t.Errorf("%U and %U are one case class but get keys %q and %q", r, f, a, b)
				bad++
			}
		}
	}
	if a, b := foldKey("ꮪꮪ"), foldKey("ᏚᏚ"); a != b {
		t.Errorf("Cherokee small and capital: %q and %q", a, b)
	}
}

// The paths string-attribute refusals name.
func TestWalkStringsPaths(t *testing.T) {
	const ent = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
	d := doc(t, `{"name":{"givenName":"a"},"emails":[{"value":"b"},{"display":"c"}],"`+ent+`":{"department":"d","manager":{"value":"e"}}}`)
	var got []string
	if err := walkStrings(d, "", func(attr, s string) error { got = append(got, attr+"="+s); return nil }); err != nil {
		t.Fatal(err)
	}
	want := []string{"emails[0].value=b", "emails[1].display=c", "name.givenName=a", ent + ":department=d", ent + ":manager.value=e"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("walkStrings = %q, want %q", got, want)
	}
}
