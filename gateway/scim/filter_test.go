package scim

import (
	"strings"
	"testing"
)

func TestParseFilter(t *testing.T) {
	tests := []struct {
		name, in, want string // want is the canonical String()
	}{
		{"eq", `userName eq "bjensen"`, `userName eq "bjensen"`},
		{"ne", `title ne "x"`, `title ne "x"`},
		{"co", `name.familyName co "O'Malley"`, `name.familyName co "O'Malley"`},
		{"sw", `userName sw "J"`, `userName sw "J"`},
		{"ew", `userName ew "@example.com"`, `userName ew "@example.com"`},
		{"gt", `meta.lastModified gt "2011-05-13T04:42:34Z"`, `meta.lastModified gt "2011-05-13T04:42:34Z"`},
		{"ge", `meta.lastModified ge "2011-05-13T04:42:34Z"`, `meta.lastModified ge "2011-05-13T04:42:34Z"`},
		{"lt", `meta.lastModified lt "2011-05-13T04:42:34Z"`, `meta.lastModified lt "2011-05-13T04:42:34Z"`},
		{"le", `meta.lastModified le "2011-05-13T04:42:34Z"`, `meta.lastModified le "2011-05-13T04:42:34Z"`},
		{"pr", `title pr`, `title pr`},
		{"upperOp", `userName EQ "x"`, `userName eq "x"`},
		{"mixedOp", `username Eq "%s"`, `username eq "%s"`},
		{"upperLogical", `title pr AND userName eq "x" OR not (active eq true)`, `title pr and userName eq "x" or not (active eq true)`},
		{"precedence", `a pr or b pr and c pr`, `a pr or b pr and c pr`},
		{"precedenceGrouped", `(a pr or b pr) and c pr`, `(a pr or b pr) and c pr`},
		{"rightGrouped", `a pr and (b pr and c pr)`, `a pr and (b pr and c pr)`},
		{"redundantParens", `((userName eq "x"))`, `userName eq "x"`},
		{"not", `not (title pr)`, `not (title pr)`},
		{"NOT", `NOT (title pr) And Not(a pr)`, `not (title pr) and not (a pr)`},
		{"notNoSpace", `not(title pr)`, `not (title pr)`},
		{"notBindsTighter", `not (a pr) and b pr`, `not (a pr) and b pr`},
		{"attrCalledNot", `not pr`, `not pr`},
		{"valuePath", `emails[type eq "work" and value co "@example.com"]`, `emails[type eq "work" and value co "@example.com"]`},
		{"valuePathAnd", `userType eq "Employee" and emails[type eq "work" and value co "@example.com"]`, `userType eq "Employee" and emails[type eq "work" and value co "@example.com"]`},
		{"valuePathOr", `emails[type eq "work"] or title pr`, `emails[type eq "work"] or title pr`},
		{"valuePathSub", `emails[type eq "work"].value eq "x@example.com"`, `emails[type eq "work"].value eq "x@example.com"`},
		{"urn", `urn:ietf:params:scim:schemas:core:2.0:User:userName sw "J"`, `urn:ietf:params:scim:schemas:core:2.0:User:userName sw "J"`},
		{"urnSub", `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq "26118915"`, `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq "26118915"`},
		{"caseAttr", `name.FamilyName eq "x"`, `name.FamilyName eq "x"`},
		{"escapes", `displayName eq "a \"b\" \\ \/ \n \u00e9 \ud83d\ude00"`, `displayName eq "a \"b\" \\ / \n é 😀"`},
		{"true", `active eq true`, `active eq true`},
		{"false", `active eq false`, `active eq false`},
		{"null", `title eq null`, `title eq null`},
		{"TrueBare", `active eq True`, `active eq true`},
		{"number", `loginCount gt 10`, `loginCount gt 10`},
		{"numberExp", `x eq -1.5e3`, `x eq -1.5e3`},
		{"bareString", `userName sw O`, `userName sw "O"`},
		{"bareExternalId", `externalId eq jyoung`, `externalId eq "jyoung"`},
		{"bareLeadingZero", `employeeNumber eq 01234`, `employeeNumber eq "01234"`},
		{"bareDate7", `meta.Created gt 2015-10-10T14:38:21.8617979-07:00`, `meta.Created gt "2015-10-10T14:38:21.8617979-07:00"`},
		{"bareInGroup", `(userName eq jyoung)`, `userName eq "jyoung"`},
		{"bareInValuePath", `emails[value eq x@y.z]`, `emails[value eq "x@y.z"]`},
		{"postman", `name.FamilyName eq Employee and (emails.Value co example.com or emails.Value co example.org)`,
			`name.FamilyName eq "Employee" and (emails.Value co "example.com" or emails.Value co "example.org")`},
		{"whitespace", "  userName   eq \t \"x\"  and\n title pr ", `userName eq "x" and title pr`},
		{"noSpaceBeforeString", `userName eq"x"`, `userName eq "x"`},
		{"keywordValue", `title eq and`, `title eq "and"`},
		{"ref", `members.$ref pr`, `members.$ref pr`},
		{"deepButAllowed", strings.Repeat("(", 60) + "a pr" + strings.Repeat(")", 60), `a pr`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := ParseFilter(tt.in)
			if err != nil {
				t.Fatalf("ParseFilter(%q) error = %v, want nil", tt.in, err)
			}
			if got := f.String(); got != tt.want {
				t.Errorf("ParseFilter(%q) = %s, want %s", tt.in, got, tt.want)
			}
			g, err := ParseFilter(f.String())
			if err != nil || g.String() != f.String() {
				t.Errorf("ParseFilter(%q) = %v, %v; want round trip", f.String(), g, err)
			}
		})
	}
}

func TestParseFilterStructure(t *testing.T) {
	// "a or b and c" must be a or (b and c).
	f, err := ParseFilter(`a pr or b pr and c pr`)
	if err != nil {
		t.Fatal(err)
	}
	if f.op != opOr || f.right.op != opAnd {
		t.Errorf("ParseFilter(a or b and c) root %v right %v, want or(a, and(b, c))", opNames[f.op], opNames[f.right.op])
	}
	f, _ = ParseFilter(`a pr and b pr or c pr`)
	if f.op != opOr || f.left.op != opAnd {
		t.Errorf("ParseFilter(a and b or c) root %v left %v, want or(and(a, b), c)", opNames[f.op], opNames[f.left.op])
	}
	f, _ = ParseFilter(`emails[type eq "work"].value eq "x"`)
	if f.op != opEq || f.path.Attr != "emails" || f.path.Sub != "value" || f.path.Filter == nil {
		t.Errorf("Entra valuePath parsed as %+v", f.path)
	}
}

func TestParseFilterErrors(t *testing.T) {
	tests := []struct {
		name, in, detail string // detail: substring of the error detail
	}{
		{"empty", ``, "empty"},
		{"blank", `   `, "empty"},
		{"incompleteValue", `userName eq`, `filter "userName eq" is incomplete: expected a value after "eq" at position 11`},
		{"noOperator", `userName`, `expected an operator`},
		{"unknownOperator", `userName equals "x"`, `unknown operator "equals" at position 9`},
		{"missingParen", `(userName eq "x"`, `expected ")"`},
		{"extraParen", `userName eq "x")`, `unexpected ")" at position 15`},
		{"missingBracket", `emails[type eq "work"`, `expected "]"`},
		{"unterminated", `userName eq "abc`, `no closing`},
		{"badEscape", `userName eq "a\qb"`, `invalid escape`},
		{"badUnicode", `userName eq "\u12"`, `invalid \u escape`},
		{"loneSurrogate", `userName eq "\ud800"`, `surrogate pair without its other half`},
		{"loneLowSurrogate", `userName eq "a\udc00"`, `at position 14 is half`},
		{"highThenNotLow", `userName eq "\ud800\u0041"`, `surrogate`},
		{"trailing", `userName eq "x" title pr`, `unexpected "title"`},
		{"danglingAnd", `userName eq "x" and`, `incomplete`},
		{"danglingOr", `title pr or`, `incomplete`},
		{"badName", `1abc eq "x"`, `invalid attribute name "1abc"`},
		{"deepSub", `name.a.b eq "x"`, `nested too deeply`},
		{"subThenFilter", `emails.value[type eq "x"] pr`, `must follow the attribute name`},
		{"badSubAfterFilter", `emails[type eq "x"].1 eq "y"`, `invalid sub-attribute`},
		{"emptyGroup", `()`, `unexpected ")"`},
		{"notWithoutOperand", `not ()`, `unexpected ")"`},
		{"valuePathSubNoOp", `emails[type eq "work"].value`, `expected an operator`},
		{"badURN", `urn:x eq "1"`, `invalid schema URN`},
		{"operatorNoAttr", `eq "x"`, `unexpected`},
		{"tooDeep", strings.Repeat("(", 70) + "a pr" + strings.Repeat(")", 70), "deeper than 64"},
		{"tooLong", `userName eq "` + strings.Repeat("x", 5000) + `"`, "limit is 4096"},
		{"openBracket", `[`, `unexpected "["`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := ParseFilter(tt.in)
			if err == nil {
				t.Fatalf("ParseFilter(%q) = %v, want error", tt.in, f)
			}
			se := scimErr(t, err)
			if se.Status != 400 || se.ScimType != InvalidFilter {
				t.Errorf("ParseFilter(%q) error = %d %s, want 400 invalidFilter", tt.in, se.Status, se.ScimType)
			}
			if !strings.Contains(se.Detail, tt.detail) {
				t.Errorf("ParseFilter(%q) detail = %q, want it to contain %q", tt.in, se.Detail, tt.detail)
			}
		})
	}
}

func TestMatch(t *testing.T) {
	user := mustDoc(t, sampleUser)
	rt := NewUserResourceType()
	tests := []struct {
		filter string
		want   bool
	}{
		// caseExact rules
		{`userName eq "BJENSEN@EXAMPLE.COM"`, true},
		{`USERNAME eq "bjensen@example.com"`, true},
		{`userName ne "BJENSEN@EXAMPLE.COM"`, false},
		{`externalId eq "00ujl29u0le5T6Aj10h7"`, true},
		{`externalId eq "00UJL29U0LE5T6AJ10H7"`, false},
		{`id eq "2819C223-7F76-453A-919D-413861904646"`, false},
		{`id eq "2819c223-7f76-453a-919d-413861904646"`, true},
		{`displayName eq "babs jensen"`, true},
		{`DisplayName eq "Babs Jensen"`, true},
		{`name.FamilyName eq "JENSEN"`, true},
		{`name.familyName co "ens"`, true},
		{`name.familyName sw "jen"`, true},
		{`name.familyName ew "SEN"`, true},
		{`name.familyName ew "x"`, false},
		{`title gt "A"`, true},
		{`title lt "tour guide z"`, true},
		{`title ge "TOUR GUIDE"`, true},
		{`title le "tour guide"`, true},
		{`title gt "tour guide"`, false},
		// unquoted values
		{`userName sw B`, true},
		{`externalId eq 00ujl29u0le5T6Aj10h7`, true},
		// multi-valued: any element
		{`emails.value eq "babs@jensen.org"`, true},
		{`emails.value eq "BABS@JENSEN.ORG"`, true},
		{`emails co "jensen.org"`, true},
		{`emails co "nowhere"`, false},
		{`emails.type eq "home"`, true},
		{`emails[type eq "work"]`, true},
		{`emails[type eq "other"]`, false},
		{`emails[type eq "work" and value co "@example.com"]`, true},
		{`emails[type eq "home" and value co "@example.com"]`, false},
		{`emails[type eq "work"].value eq "bjensen@example.com"`, true},
		{`emails[type eq "home"].value eq "bjensen@example.com"`, false},
		{`emails[primary eq true].value sw "bjensen"`, true},
		{`emails[not (type eq "work")].value eq "babs@jensen.org"`, true},
		// pr
		{`title pr`, true},
		{`nickName pr`, false},
		{`roles pr`, false},
		{`nosuch pr`, false},
		{`emails pr`, true},
		{`emails.display pr`, false},
		{`name.givenName pr`, true},
		{`emails[type eq "work"] pr`, true},
		{`emails[type eq "other"] pr`, false},
		{`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager pr`, true},
		{`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:costCenter pr`, false},
		// null
		{`title eq null`, false},
		{`nickName eq null`, true},
		{`nosuch eq null`, true},
		{`title ne null`, true},
		// ne on absent
		{`nosuch ne "x"`, true},
		{`nosuch eq "x"`, false},
		{`nosuch gt "x"`, false},
		// booleans
		{`active eq true`, true},
		{`active eq "True"`, true},
		{`active eq false`, false},
		{`active ne false`, true},
		{`active eq True`, true},
		// numbers
		{`loginCount eq 42`, true},
		{`loginCount gt 41.5`, true},
		{`loginCount lt 42`, false},
		{`loginCount ge "42"`, true},
		{`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq 701984`, true},
		// dateTime ordering
		{`meta.created lt "2011-01-01T00:00:00Z"`, true},
		{`meta.created gt "2010-01-23T04:56:21.9999999Z"`, true},
		{`meta.created gt "2010-01-23T05:56:21+01:00"`, true},
		{`meta.created eq "2010-01-23T05:56:22+01:00"`, true},
		{`meta.Created gt 2015-10-10T14:38:21.8617979-07:00`, false},
		{`meta.lastModified gt "2011-05-13T04:42:34.1229999Z"`, true},
		{`meta.lastModified gt "2011-05-13T04:42:34.123Z"`, false},
		{`meta.lastModified ge "2011-05-13T04:42:34.123Z"`, true},
		{`meta.lastModified sw "2011-05"`, true},
		// URNs
		{`urn:ietf:params:scim:schemas:core:2.0:User:userName eq "bjensen@example.com"`, true},
		{`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "tour operations"`, true},
		{`URN:IETF:PARAMS:SCIM:SCHEMAS:EXTENSION:ENTERPRISE:2.0:USER:Department eq "Tour Operations"`, true},
		{`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq "26118915-6090-4610-87e4-49d8ca9f808d"`, true},
		{`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager eq "26118915-6090-4610-87e4-49d8ca9f808d"`, true},
		{`urn:ietf:params:scim:schemas:extension:acme:2.0:User:x eq "1"`, false},
		{`urn:ietf:params:scim:schemas:extension:acme:2.0:User:x ne "1"`, true},
		// logic
		{`userName eq "x" or title pr`, true},
		{`userName eq "x" or title pr and active eq false`, false},
		{`(userName eq "x" or title pr) and active eq true`, true},
		{`not (userName eq "x")`, true},
		{`not (title pr)`, false},
		{`name.FamilyName eq Jensen and (emails.Value co example.com or emails.Value co example.org)`, true},
		// complex compared as a whole (Validate rejects, Match is false)
		{`name eq "Barbara"`, false},
	}
	for _, tt := range tests {
		t.Run(tt.filter, func(t *testing.T) {
			f, err := ParseFilter(tt.filter)
			if err != nil {
				t.Fatalf("ParseFilter(%q): %v", tt.filter, err)
			}
			if got := f.Match(user, rt); got != tt.want {
				t.Errorf("ParseFilter(%q).Match(user, User) = %v, want %v", tt.filter, got, tt.want)
			}
		})
	}
}

func TestMatchNilResourceType(t *testing.T) {
	user := mustDoc(t, sampleUser)
	tests := []struct {
		filter string
		want   bool
	}{
		{`externalId eq "00UJL29U0LE5T6AJ10H7"`, true}, // no schema: case-insensitive
		{`meta.created lt "2011-01-01T00:00:00Z"`, true},
		{`meta.created gt "2010-01-23T05:56:21+01:00"`, true},
		{`active eq "true"`, true},
		{`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "TOUR OPERATIONS"`, true},
		{`emails[type eq "WORK"].value eq "BJENSEN@example.com"`, true},
	}
	for _, tt := range tests {
		f, err := ParseFilter(tt.filter)
		if err != nil {
			t.Fatalf("ParseFilter(%q): %v", tt.filter, err)
		}
		if got := f.Match(user, nil); got != tt.want {
			t.Errorf("ParseFilter(%q).Match(user, nil) = %v, want %v", tt.filter, got, tt.want)
		}
	}
}

func TestMatchStoredShapes(t *testing.T) {
	rt := NewUserResourceType()
	tests := []struct {
		name, doc, filter string
		want              bool
	}{
		{"activeString", `{"active":"False"}`, `active eq false`, true},
		{"activeStringNe", `{"active":"False"}`, `active eq true`, false},
		{"float64", `{"n": 3}`, `n gt 2`, true},
		{"keyCase", `{"USERNAME":"Alice","Emails":[{"Value":"a@b.c","Type":"work"}]}`, `userName eq "alice" and emails[type eq "work"].value eq "A@B.C"`, true},
		{"emptyArray", `{"emails":[]}`, `emails pr`, false},
		{"emptyObject", `{"name":{}}`, `name pr`, false},
		{"nullValue", `{"title":null}`, `title pr`, false},
		{"emptyString", `{"title":""}`, `title pr`, false},
		{"singleComplexValuePath", `{"x":{"type":"a","value":"v"}}`, `x[type eq "a"].value eq "v"`, true},
		{"nonASCIIFold", `{"displayName":"ÉLODIE"}`, `displayName co "élo"`, true},
		{"nonASCIIOrder", `{"displayName":"éa"}`, `displayName lt "ÉB"`, true},
		{"badDate", `{"meta":{"created":"yesterday"}}`, `meta.created gt "2010-01-01T00:00:00Z"`, true}, // falls back to string compare
		{"membersValue", `{"members":[{"value":"u1"},{"value":"u2"}]}`, `members[value eq "u2"]`, true},
		{"primaryString", `{"emails":[{"value":"a","primary":"True"}]}`, `emails[primary eq true].value eq "a"`, true},
		{"wrongContainer", `{"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":"oops"}`, `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "x"`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := ParseFilter(tt.filter)
			if err != nil {
				t.Fatalf("ParseFilter(%q): %v", tt.filter, err)
			}
			if got := f.Match(mustDoc(t, tt.doc), rt); got != tt.want {
				t.Errorf("ParseFilter(%q).Match(%s) = %v, want %v", tt.filter, tt.doc, got, tt.want)
			}
		})
	}
	var nilFilter *Filter
	if !nilFilter.Match(map[string]any{}, rt) {
		t.Errorf("(*Filter)(nil).Match = false, want true")
	}
}

func TestValidate(t *testing.T) {
	users, groups := NewUserResourceType(), NewGroupResourceType()
	tests := []struct {
		filter string
		rt     *ResourceType
		ok     bool
	}{
		{`userName eq "x"`, users, true},
		{`active gt true`, users, false},
		{`active eq true`, users, true},
		{`x509Certificates.value gt "x"`, users, false},
		{`emails[primary ge true]`, users, false},
		{`name eq "x"`, users, false},
		{`name pr`, users, true},
		{`meta eq "x"`, users, false},
		{`emails co "x"`, users, true}, // RFC 7644 example
		{`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager eq "x"`, users, true},
		{`userName[value eq "x"]`, users, false},
		{`unknown gt true`, users, true},
		{`not (active le false) or userName pr`, users, false},
		{`meta.created gt "2011-01-01T00:00:00Z"`, users, true},
		{`members[value eq "x"]`, groups, true},
		{`members gt "x"`, groups, true},
		// membership filters the store serves from its index
		{`members eq "2819c223"`, groups, true},
		{`members.value eq "2819c223"`, groups, true},
		{`members[value eq "2819c223"]`, groups, true},
		{`urn:ietf:params:scim:schemas:core:2.0:Group:members.value eq "2819c223"`, groups, true},
		{`id eq "g1" and members eq "2819c223"`, groups, true},
		{`groups.value eq "g1"`, users, true},
		{`groups eq "g1"`, users, true},
		{`groups[value eq "g1"]`, users, true},
		{`members.value gt true`, groups, true}, // value is a string: ordering allowed
		{`members[value eq "x"].value pr`, groups, true},
		{`active gt true`, nil, true},
	}
	for _, tt := range tests {
		f, err := ParseFilter(tt.filter)
		if err != nil {
			t.Fatalf("ParseFilter(%q): %v", tt.filter, err)
		}
		err = f.Validate(tt.rt)
		if (err == nil) != tt.ok {
			t.Errorf("ParseFilter(%q).Validate = %v, want ok=%v", tt.filter, err, tt.ok)
			continue
		}
		if err != nil {
			if se := scimErr(t, err); se.Status != 400 || se.ScimType != InvalidFilter {
				t.Errorf("ParseFilter(%q).Validate = %d %s, want 400 invalidFilter", tt.filter, se.Status, se.ScimType)
			}
		}
	}
}

func TestEquality(t *testing.T) {
	tests := []struct {
		filter, path, value string
		ok                  bool
	}{
		{`userName eq "Test.User@okta.local"`, "userName", "Test.User@okta.local", true},
		{`externalId eq jyoung`, "externalId", "jyoung", true},
		{`externalId eq 1234`, "externalId", "1234", true},
		{`displayName eq "Test SCIMv2"`, "displayName", "Test SCIMv2", true},
		{`id eq "abc"`, "id", "abc", true},
		{`emails.value eq "a@b.c"`, "emails.value", "a@b.c", true},
		{`emails[type eq "work"].value eq "a@b.c"`, `emails[type eq "work"].value`, "a@b.c", true},
		{`USERNAME EQ "x"`, "USERNAME", "x", true},
		{`userName eq "x" and active eq true`, "userName", "x", true},
		{`active eq true and (title pr and externalId eq "e")`, "externalId", "e", true},
		{`userName eq "x" or userName eq "y"`, "", "", false},
		{`not (userName eq "x")`, "", "", false},
		{`userName ne "x"`, "", "", false},
		{`userName co "x"`, "", "", false},
		{`active eq true`, "", "", false},
		{`title eq null`, "", "", false},
		{`emails[type eq "work"]`, "", "", false},
	}
	for _, tt := range tests {
		f, err := ParseFilter(tt.filter)
		if err != nil {
			t.Fatalf("ParseFilter(%q): %v", tt.filter, err)
		}
		p, v, ok := f.Equality()
		got := ""
		if p != nil {
			got = p.String()
		}
		if ok != tt.ok || got != tt.path || v != tt.value {
			t.Errorf("ParseFilter(%q).Equality() = %q, %q, %v, want %q, %q, %v", tt.filter, got, v, ok, tt.path, tt.value, tt.ok)
		}
	}
	f, _ := ParseFilter(`emails[type eq "work"].value eq "x"`)
	p, _, _ := f.Equality()
	if p.Attr != "emails" || p.Sub != "value" || p.Filter == nil || p.Filter.String() != `type eq "work"` {
		t.Errorf("Equality path = %#v, want Path{Attr: emails, Filter: type eq \"work\", Sub: value}", p)
	}
}

func TestMatchConcurrent(t *testing.T) {
	f, err := ParseFilter(`emails[type eq "work"].value eq "bjensen@example.com" and meta.created lt "2011-01-01T00:00:00Z"`)
	if err != nil {
		t.Fatal(err)
	}
	user, rt := mustDoc(t, sampleUser), NewUserResourceType()
	done := make(chan bool)
	for range 4 {
		go func() {
			ok := true
			for range 200 {
				ok = ok && f.Match(user, rt) && f.String() != ""
			}
			done <- ok
		}()
	}
	for range 4 {
		if !<-done {
			t.Errorf("concurrent Match = false, want true")
		}
	}
}

func BenchmarkParseFilter(b *testing.B) {
	for _, s := range []string{
		`userName eq "test.user@okta.local"`,
		`emails[type eq "work"].value eq "x@example.com" and (active eq true or meta.lastModified gt "2011-05-13T04:42:34Z")`,
	} {
		b.Run(strings.Fields(s)[0], func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ParseFilter(s); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkMatch(b *testing.B) {
	user := mustDoc(b, sampleUser)
	rt := NewUserResourceType()
	for _, s := range []string{
		`userName eq "BJENSEN@example.com"`,
		`emails[type eq "work"].value eq "bjensen@example.com" and meta.lastModified gt "2011-05-13T04:42:34Z"`,
		`name.familyName co "ens" or title sw "tour"`,
	} {
		f, err := ParseFilter(s)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(strings.Fields(s)[0], func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				f.Match(user, rt)
			}
		})
	}
}
