package scim

import (
	"strings"
	"testing"
)

func TestParsePatch(t *testing.T) {
	tests := []struct {
		name, body string
		want       string // ops as "op path value;" with value as JSON
	}{
		{"okta deactivate", `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
 "Operations":[{"op":"replace","value":{"active":false}}]}`, `replace <nil> {"active":false};`},
		{"entra capitalised", `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","path":"active","value":"False"}]}`,
			`replace active "False";`},
		{"no schemas, lower operations", `{"operations":[{"OP":"ADD","PATH":"nickName","VALUE":"Babs"}]}`, `add nickName "Babs";`},
		{"remove value list", `{"Operations":[{"op":"Remove","path":"members","value":[{"value":"u1091"}]}]}`,
			`remove members [{"value":"u1091"}];`},
		{"remove filter", `{"Operations":[{"op":"remove","path":"members[value eq \"7f4bc1a3\"]"}]}`,
			`remove members[value eq "7f4bc1a3"] <nil>;`},
		{"number", `{"Operations":[{"op":"add","path":"loginCount","value":12345678901234567890}]}`,
			`add loginCount 12345678901234567890;`},
		{"null value", `{"Operations":[{"op":"replace","path":"title","value":null}]}`, `replace title <nil>;`},
		{"empty path is no path", `{"Operations":[{"op":"replace","path":"","value":{"a":1}}]}`, `replace <nil> {"a":1};`},
		{"postman extras", `{"id":"g1","Operations":[{"name":"addMember","op":"add","path":"members","value":"string id 1"}],"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"]}`,
			`add members "string id 1";`},
		{"two ops", `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
 "Operations":[
   {"op":"remove","path":"members[value eq \"89bb1940-b905-4575-9e7f-6f887cfb368e\"]"},
   {"op":"add","path":"members","value":[{"value":"23a35c27-23d3-4c03-b4c5-6443c09e7173","display":"test.user@okta.local"}]}]}`,
			`remove members[value eq "89bb1940-b905-4575-9e7f-6f887cfb368e"] <nil>;add members [{"display":"test.user@okta.local","value":"23a35c27-23d3-4c03-b4c5-6443c09e7173"}];`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ops, err := ParsePatch([]byte(tt.body))
			if err != nil {
				t.Fatalf("ParsePatch(%s) error = %v", tt.body, err)
			}
			var b strings.Builder
			for _, op := range ops {
				p := "<nil>"
				if op.Path != nil {
					p = op.Path.String()
				}
				v := "<nil>"
				if op.Value != nil {
					v = canon(t, op.Value)
				}
				b.WriteString(op.Op + " " + p + " " + v + ";")
			}
			if got := b.String(); got != tt.want {
				t.Errorf("ParsePatch(%s) = %s, want %s", tt.body, got, tt.want)
			}
		})
	}
}

func TestParsePatchErrors(t *testing.T) {
	tests := []struct {
		name, body, scimType, detail string
	}{
		{"junk", `{"acve": tre}`, InvalidSyntax, "not valid JSON"},
		{"empty", ``, InvalidSyntax, "empty"},
		{"trailing", `{"Operations":[]} {}`, InvalidSyntax, "after the JSON"},
		{"array body", `[]`, InvalidSyntax, "must be a JSON object"},
		{"wrong schema", `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"Operations":[{"op":"add","path":"a","value":1}]}`, InvalidValue, "PatchOp"},
		{"no operations", `{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"]}`, InvalidValue, "no \"Operations\""},
		{"empty operations", `{"Operations":[]}`, InvalidValue, "empty"},
		{"operations object", `{"Operations":{"op":"add"}}`, InvalidSyntax, "must be an array"},
		{"op not object", `{"Operations":["add"]}`, InvalidSyntax, "Operations[0]"},
		{"unknown op", `{"Operations":[{"op":"add","path":"a","value":1},{"op":"merge","path":"a","value":1}]}`, InvalidValue, `Operations[1]: unknown op the string "merge"`},
		{"missing op", `{"Operations":[{"path":"a","value":1}]}`, InvalidValue, "unknown op null"},
		{"bad path", `{"Operations":[{"op":"add","path":"a[b","value":1}]}`, InvalidPath, "Operations[0]"},
		{"path number", `{"Operations":[{"op":"add","path":1,"value":1}]}`, InvalidPath, "must be a string"},
		{"remove no path", `{"Operations":[{"op":"remove"}]}`, NoTarget, "remove needs a \"path\""},
		{"add no value", `{"Operations":[{"op":"add","path":"title"}]}`, InvalidValue, "needs a \"value\""},
		{"replace no value", `{"Operations":[{"op":"replace"}]}`, InvalidValue, "needs a \"value\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ops, err := ParsePatch([]byte(tt.body))
			if err == nil {
				t.Fatalf("ParsePatch(%s) = %v, want error", tt.body, ops)
			}
			se := scimErr(t, err)
			if se.Status != 400 || se.ScimType != tt.scimType || !strings.Contains(se.Detail, tt.detail) {
				t.Errorf("ParsePatch(%s) error = %d %s %q, want 400 %s containing %q", tt.body, se.Status, se.ScimType, se.Detail, tt.scimType, tt.detail)
			}
		})
	}
}

const patchUser = `{
  "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
  "id": "23a35c27-23d3-4c03-b4c5-6443c09e7173",
  "userName": "test.user@okta.local",
  "name": {"givenName": "Test", "familyName": "User"},
  "emails": [{"primary": true, "value": "test.user@okta.local", "type": "work"}],
  "displayName": "Test User",
  "active": true,
  "meta": {"resourceType": "User"}
}`

func TestApplyPatch(t *testing.T) {
	users, groups := NewUserResourceType(), NewGroupResourceType()
	tests := []struct {
		name string
		rt   *ResourceType
		doc  string
		body string
		want string
	}{
		// Okta §1.3(g)
		{"okta deactivate", users, `{"userName":"u","active":true}`,
			`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
 "Operations":[{"op":"replace","value":{"active":false}}]}`,
			`{"userName":"u","active":false}`},
		{"okta reactivate", users, `{"userName":"u","active":false}`,
			`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
 "Operations":[{"op":"replace","value":{"active":true}}]}`,
			`{"userName":"u","active":true}`},
		{"okta password", users, `{"userName":"u"}`,
			`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","value":{"password":"1mz050nq"}}]}`,
			`{"userName":"u"}`}, // accepted, never stored
		// Okta §1.3(h)
		{"okta membership change", groups, `{"displayName":"Test SCIMv2","members":[{"value":"89bb1940-b905-4575-9e7f-6f887cfb368e","display":"a"},{"value":"x"}]}`,
			`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
 "Operations":[
   {"op":"remove","path":"members[value eq \"89bb1940-b905-4575-9e7f-6f887cfb368e\"]"},
   {"op":"add","path":"members","value":[{"value":"23a35c27-23d3-4c03-b4c5-6443c09e7173","display":"test.user@okta.local"}]}]}`,
			`{"displayName":"Test SCIMv2","members":[{"value":"x"},{"value":"23a35c27-23d3-4c03-b4c5-6443c09e7173","display":"test.user@okta.local"}]}`},
		{"okta full push", groups, `{"displayName":"Test SCIMv2","members":[{"value":"old"}]}`,
			`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
 "Operations":[{"op":"replace","path":"members","value":[
   {"value":"23a35c27-23d3-4c03-b4c5-6443c09e7173","display":"test.user@okta.local"},
   {"value":"89bb1940-b905-4575-9e7f-6f887cfb368e","display":"test.user@okta.local"}]}]}`,
			`{"displayName":"Test SCIMv2","members":[{"value":"23a35c27-23d3-4c03-b4c5-6443c09e7173","display":"test.user@okta.local"},{"value":"89bb1940-b905-4575-9e7f-6f887cfb368e","display":"test.user@okta.local"}]}`},
		{"okta rename ignores id", groups, `{"id":"abf4dd94-a4c0-4f67-89c9-76b03340cb9b","displayName":"Old","members":[{"value":"m"}]}`,
			`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
 "Operations":[{"op":"replace","value":{"id":"abf4dd94-a4c0-4f67-89c9-76b03340cb9b","displayName":"Test SCIMv2"}}]}`,
			`{"id":"abf4dd94-a4c0-4f67-89c9-76b03340cb9b","displayName":"Test SCIMv2","members":[{"value":"m"}]}`},
		{"no-path ignores meta groups schemas and other ids", users, `{"id":"1","userName":"u"}`,
			`{"Operations":[{"op":"replace","value":{"id":"2","meta":{"x":1},"groups":[],"schemas":["x"],"title":"T"}}]}`,
			`{"id":"1","userName":"u","title":"T"}`},
		{"okta add existing member is no-op", groups, `{"displayName":"g","members":[{"value":"u1","display":"a"}]}`,
			`{"Operations":[{"op":"add","path":"members","value":[{"value":"u1","display":"a"}]}]}`,
			`{"displayName":"g","members":[{"value":"u1","display":"a"}]}`},
		{"add existing member updates display", groups, `{"displayName":"g","members":[{"value":"u1","display":"a"}]}`,
			`{"Operations":[{"op":"add","path":"members","value":[{"value":"u1","display":"b"}]}]}`,
			`{"displayName":"g","members":[{"value":"u1","display":"b"}]}`},
		{"remove non-member is no-op", groups, `{"displayName":"g","members":[{"value":"u1"}]}`,
			`{"Operations":[{"op":"remove","path":"members[value eq \"nobody\"]"}]}`,
			`{"displayName":"g","members":[{"value":"u1"}]}`},
		{"remove last member drops attribute", groups, `{"displayName":"g","members":[{"value":"u1"}]}`,
			`{"Operations":[{"op":"remove","path":"members[value eq \"u1\"]"}]}`,
			`{"displayName":"g"}`},
		{"replace members with empty list", groups, `{"displayName":"g","members":[{"value":"u1"}]}`,
			`{"Operations":[{"op":"replace","path":"members","value":[]}]}`,
			`{"displayName":"g","members":[]}`},
		{"add empty list to absent is no-op", groups, `{"displayName":"g"}`,
			`{"Operations":[{"op":"add","path":"members","value":[]}]}`,
			`{"displayName":"g"}`},
		{"add empty list keeps empty", groups, `{"displayName":"g","members":[]}`,
			`{"Operations":[{"op":"add","path":"members","value":[]}]}`,
			`{"displayName":"g","members":[]}`},
		// Entra §3.1
		{"entra disable default", users, `{"userName":"u","active":true}`,
			`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Replace","path":"active","value":"False"}]}`,
			`{"userName":"u","active":false}`},
		{"entra disable flagged", users, `{"userName":"u","active":true}`,
			`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"active","value":false}]}`,
			`{"userName":"u","active":false}`},
		{"entra add single-valued", users, `{"userName":"u"}`,
			`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"Add","path":"nickName","value":"Babs"}]}`,
			`{"userName":"u","nickName":"Babs"}`},
		{"entra replace multiple default", users, patchUser,
			`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[
  {"op":"Replace","path":"displayName","value":"Pvlo"},
  {"op":"Replace","path":"emails[type eq \"work\"].value","value":"TestBcwqnm@test.microsoft.com"},
  {"op":"Replace","path":"name.givenName","value":"Gtfd"},
  {"op":"Replace","path":"name.familyName","value":"Pkqf"},
  {"op":"Replace","path":"externalId","value":"Eqpj"},
  {"op":"Replace","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber","value":"Eqpj"}]}`,
			`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"id":"23a35c27-23d3-4c03-b4c5-6443c09e7173","userName":"test.user@okta.local",
  "name":{"givenName":"Gtfd","familyName":"Pkqf"},"emails":[{"primary":true,"value":"TestBcwqnm@test.microsoft.com","type":"work"}],
  "displayName":"Pvlo","active":true,"meta":{"resourceType":"User"},"externalId":"Eqpj",
  "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"employeeNumber":"Eqpj"}}`},
		{"entra replace multiple flagged", users, patchUser,
			`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[
  {"op":"replace","path":"emails[type eq \"work\"].value","value":"TestMhvaes@test.microsoft.com"},
  {"op":"replace","value":{"displayName":"Bjfe","name.givenName":"Kkom","name.familyName":"Unua",
     "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber":"Aklq"}}]}`,
			`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"id":"23a35c27-23d3-4c03-b4c5-6443c09e7173","userName":"test.user@okta.local",
  "name":{"givenName":"Kkom","familyName":"Unua"},"emails":[{"primary":true,"value":"TestMhvaes@test.microsoft.com","type":"work"}],
  "displayName":"Bjfe","active":true,"meta":{"resourceType":"User"},
  "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"employeeNumber":"Aklq"}}`},
		{"entra work email created when missing", users, `{"userName":"u"}`,
			`{"Operations":[{"op":"Replace","path":"emails[type eq \"work\"].value","value":"a@b.c"}]}`,
			`{"userName":"u","emails":[{"type":"work","value":"a@b.c"}]}`},
		{"entra work email appended beside home", users, `{"userName":"u","emails":[{"type":"home","value":"h@b.c"}]}`,
			`{"Operations":[{"op":"Replace","path":"emails[type eq \"work\"].value","value":"a@b.c"}]}`,
			`{"userName":"u","emails":[{"type":"home","value":"h@b.c"},{"type":"work","value":"a@b.c"}]}`},
		{"entra remove member default", groups, `{"displayName":"g","members":[{"value":"u1091"},{"value":"u2"}]}`,
			`{"Operations":[{"op":"Remove","path":"members","value":[{"value":"u1091"}]}]}`,
			`{"displayName":"g","members":[{"value":"u2"}]}`},
		{"entra remove member flagged", groups, `{"displayName":"g","members":[{"value":"7f4bc1a3-…"},{"value":"u2"}]}`,
			`{"Operations":[{"op":"remove","path":"members[value eq \"7f4bc1a3-…\"]"}]}`,
			`{"displayName":"g","members":[{"value":"u2"}]}`},
		{"entra add members with null ref", groups, `{"displayName":"g"}`,
			`{"Operations":[{"op":"Add","path":"members","value":[{"$ref":null,"value":"a"},{"$ref":null,"value":"b"}]}]}`,
			`{"displayName":"g","members":[{"value":"a"},{"value":"b"}]}`},
		{"postman add member plain string", groups, `{"displayName":"g"}`,
			`{"id":"g1","Operations":[{"op":"add","path":"members","value":"string id 1"}],"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"]}`,
			`{"displayName":"g","members":[{"value":"string id 1"}]}`},
		{"postman add member with displayName", groups, `{"displayName":"g","members":[]}`,
			`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"name":"addMember","op":"add","path":"members","value":[{"displayName":"new User","value":"id4"}]}]}`,
			`{"displayName":"g","members":[{"displayName":"new User","value":"id4"}]}`},
		{"postman remove all members", groups, `{"displayName":"g","members":[{"value":"a"},{"value":"b"}]}`,
			`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"remove","path":"members"}]}`,
			`{"displayName":"g"}`},
		{"postman replace userName", users, `{"userName":"u"}`,
			`{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[{"op":"replace","path":"userName","value":"ryan3"}]}`,
			`{"userName":"ryan3"}`},
		// manager
		{"entra manager bare string", users, `{"userName":"u"}`,
			`{"Operations":[{"op":"Add","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager","value":"m1"}]}`,
			`{"userName":"u","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"manager":{"value":"m1"}}}`},
		{"entra manager replace", users, `{"userName":"u","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"d","manager":{"value":"m1","displayName":"Boss"}}}`,
			`{"Operations":[{"op":"Replace","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager","value":"m2"}]}`,
			`{"userName":"u","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"d","manager":{"value":"m2","displayName":"Boss"}}}`},
		{"entra manager replace empty removes", users, `{"userName":"u","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"d","manager":{"value":"m1"}}}`,
			`{"Operations":[{"op":"Replace","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager","value":""}]}`,
			`{"userName":"u","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"d"}}`},
		{"manager null removes and drops empty extension", users, `{"userName":"u","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"manager":{"value":"m1"}}}`,
			`{"Operations":[{"op":"replace","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager","value":null}]}`,
			`{"userName":"u"}`},
		{"manager remove", users, `{"userName":"u","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"d","manager":{"value":"m1"}}}`,
			`{"Operations":[{"op":"Remove","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager"}]}`,
			`{"userName":"u","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"d"}}`},
		{"manager legacy array", users, `{"userName":"u"}`,
			`{"Operations":[{"op":"Add","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager","value":[{"$ref":null,"value":"m3"}]}]}`,
			`{"userName":"u","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"manager":{"value":"m3"}}}`},
		{"manager object", users, `{"userName":"u"}`,
			`{"Operations":[{"op":"add","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager","value":{"value":"m4","displayName":"B"}}]}`,
			`{"userName":"u","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"manager":{"value":"m4","displayName":"B"}}}`},
		{"manager.value path", users, `{"userName":"u"}`,
			`{"Operations":[{"op":"add","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value","value":"m5"}]}`,
			`{"userName":"u","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"manager":{"value":"m5"}}}`},
		{"top-level manager bare string", users, `{"userName":"u"}`,
			`{"Operations":[{"op":"Add","path":"manager","value":"m6"}]}`,
			`{"userName":"u","manager":{"value":"m6"}}`},
		// SCIM_Null_Update
		{"null update with empty string", users, `{"userName":"u","title":"T","nickName":"N"}`,
			`{"Operations":[{"op":"Replace","path":"title","value":""},{"op":"replace","path":"nickName","value":null}]}`,
			`{"userName":"u"}`},
		{"no-path null update", users, `{"userName":"u","title":"T","name":{"givenName":"G","familyName":"F"}}`,
			`{"Operations":[{"op":"replace","value":{"title":null,"name.givenName":""}}]}`,
			`{"userName":"u","name":{"familyName":"F"}}`},
		// generic RFC semantics
		{"add appends and skips duplicates", users, `{"userName":"u","emails":[{"value":"a","type":"work"}]}`,
			`{"Operations":[{"op":"add","path":"emails","value":[{"value":"a","type":"work"},{"value":"b","type":"home"}]}]}`,
			`{"userName":"u","emails":[{"value":"a","type":"work"},{"value":"b","type":"home"}]}`},
		{"add primary clears others", users, `{"userName":"u","emails":[{"value":"a","primary":true}]}`,
			`{"Operations":[{"op":"add","path":"emails","value":[{"value":"b","primary":"True"}]}]}`,
			`{"userName":"u","emails":[{"value":"a","primary":false},{"value":"b","primary":true}]}`},
		{"add complex merges", users, `{"userName":"u","name":{"givenName":"G","familyName":"F"}}`,
			`{"Operations":[{"op":"add","path":"name","value":{"middleName":"M","GivenName":"G2"}}]}`,
			`{"userName":"u","name":{"givenName":"G2","familyName":"F","middleName":"M"}}`},
		{"replace complex merges", users, `{"userName":"u","name":{"givenName":"G","familyName":"F"}}`,
			`{"Operations":[{"op":"replace","path":"name","value":{"givenName":"G2"}}]}`,
			`{"userName":"u","name":{"givenName":"G2","familyName":"F"}}`},
		{"add creates missing", users, `{"userName":"u"}`,
			`{"Operations":[{"op":"add","path":"phoneNumbers","value":[{"value":"1","type":"work"}]},{"op":"add","path":"title","value":"T"}]}`,
			`{"userName":"u","phoneNumbers":[{"value":"1","type":"work"}],"title":"T"}`},
		{"add single-valued replaces", users, `{"userName":"u","title":"A"}`,
			`{"Operations":[{"op":"add","path":"title","value":"B"}]}`,
			`{"userName":"u","title":"B"}`},
		{"replace multi-valued whole list", users, `{"userName":"u","emails":[{"value":"a"},{"value":"b"}]}`,
			`{"Operations":[{"op":"replace","path":"emails","value":[{"value":"c"}]}]}`,
			`{"userName":"u","emails":[{"value":"c"}]}`},
		{"replace valuePath element", users, `{"userName":"u","addresses":[{"type":"work","locality":"A"},{"type":"home","locality":"B"}]}`,
			`{"Operations":[{"op":"replace","path":"addresses[type eq \"work\"]","value":{"type":"work","locality":"C"}}]}`,
			`{"userName":"u","addresses":[{"type":"work","locality":"C"},{"type":"home","locality":"B"}]}`},
		{"add valuePath merges", users, `{"userName":"u","addresses":[{"type":"work","locality":"A"}]}`,
			`{"Operations":[{"op":"add","path":"addresses[type eq \"work\"]","value":{"region":"R"}}]}`,
			`{"userName":"u","addresses":[{"type":"work","locality":"A","region":"R"}]}`},
		{"add valuePath creates", users, `{"userName":"u"}`,
			`{"Operations":[{"op":"add","path":"addresses[type eq \"work\"]","value":{"region":"R"}}]}`,
			`{"userName":"u","addresses":[{"type":"work","region":"R"}]}`},
		{"name.FamilyName creates canonical", users, `{"userName":"u"}`,
			`{"Operations":[{"op":"add","path":"name.FamilyName","value":"F"}]}`,
			`{"userName":"u","name":{"familyName":"F"}}`},
		{"existing key case kept", users, `{"USERNAME":"u","Name":{"GivenName":"g"}}`,
			`{"Operations":[{"op":"replace","path":"userName","value":"v"},{"op":"replace","path":"name.givenName","value":"h"}]}`,
			`{"USERNAME":"v","Name":{"GivenName":"h"}}`},
		{"canonical name for new attribute", users, `{"userName":"u"}`,
			`{"Operations":[{"op":"replace","path":"DISPLAYNAME","value":"D"},{"op":"replace","value":{"NICKNAME":"N"}}]}`,
			`{"userName":"u","displayName":"D","nickName":"N"}`},
		{"remove sub-attribute", users, `{"userName":"u","name":{"givenName":"G","familyName":"F"}}`,
			`{"Operations":[{"op":"remove","path":"name.givenName"}]}`,
			`{"userName":"u","name":{"familyName":"F"}}`},
		{"remove last sub-attribute drops parent", users, `{"userName":"u","name":{"givenName":"G"}}`,
			`{"Operations":[{"op":"remove","path":"name.givenName"}]}`,
			`{"userName":"u"}`},
		{"remove sub of filtered elements", users, `{"userName":"u","emails":[{"value":"a","type":"work","display":"x"},{"value":"b","display":"y"}]}`,
			`{"Operations":[{"op":"remove","path":"emails[type eq \"work\"].display"}]}`,
			`{"userName":"u","emails":[{"value":"a","type":"work"},{"value":"b","display":"y"}]}`},
		{"remove plain multi-valued", users, `{"userName":"u","emails":[{"value":"a"}]}`,
			`{"Operations":[{"op":"remove","path":"emails"}]}`,
			`{"userName":"u"}`},
		{"remove absent is no-op", users, `{"userName":"u"}`,
			`{"Operations":[{"op":"remove","path":"title"},{"op":"remove","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"}]}`,
			`{"userName":"u"}`},
		{"remove whole extension", users, `{"userName":"u","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"d"}}`,
			`{"Operations":[{"op":"remove","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"}]}`,
			`{"userName":"u"}`},
		{"no-path extension object merges", users, `{"userName":"u","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"d","costCenter":"c"}}`,
			`{"Operations":[{"op":"replace","value":{"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"Department":"e","manager":"m"}}}]}`,
			`{"userName":"u","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"e","costCenter":"c","manager":{"value":"m"}}}`},
		{"extension key case kept", users, `{"userName":"u","URN:IETF:PARAMS:SCIM:SCHEMAS:EXTENSION:ENTERPRISE:2.0:USER":{"department":"d"}}`,
			`{"Operations":[{"op":"replace","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department","value":"e"}]}`,
			`{"userName":"u","URN:IETF:PARAMS:SCIM:SCHEMAS:EXTENSION:ENTERPRISE:2.0:USER":{"department":"e"}}`},
		{"custom extension generic", users, `{"userName":"u"}`,
			`{"Operations":[{"op":"add","path":"urn:ietf:params:scim:schemas:extension:cybsafe:2.0:User:costCentre","value":42},{"op":"add","value":{"urn:ietf:params:scim:schemas:extension:cybsafe:2.0:User":{"hireDate":"2024-01-02"}}}]}`,
			`{"userName":"u","urn:ietf:params:scim:schemas:extension:cybsafe:2.0:User":{"costCentre":42,"hireDate":"2024-01-02"}}`},
		{"undeclared bare URN without version", users, `{"userName":"u"}`,
			`{"Operations":[{"op":"add","value":{"urn:acme:custom":{"x":"1"}}},{"op":"add","path":"urn:acme:custom:y","value":"2"}]}`,
			`{"userName":"u","urn:acme:custom":{"x":"1","y":"2"}}`},
		{"core URN path", users, `{"userName":"u"}`,
			`{"Operations":[{"op":"replace","path":"urn:ietf:params:scim:schemas:core:2.0:User:title","value":"T"}]}`,
			`{"userName":"u","title":"T"}`},
		{"custom attribute generic", users, `{"userName":"u"}`,
			`{"Operations":[{"op":"add","path":"favouriteColours","value":["red"]},{"op":"add","path":"favouriteColours","value":["blue","red"]},{"op":"add","path":"shoe.size","value":44}]}`,
			`{"userName":"u","favouriteColours":["red","blue"],"shoe":{"size":44}}`},
		{"boolean sub-attribute coerced", users, `{"userName":"u","emails":[{"value":"a","type":"work"}]}`,
			`{"Operations":[{"op":"replace","path":"emails[type eq \"work\"].primary","value":"TRUE"}]}`,
			`{"userName":"u","emails":[{"value":"a","type":"work","primary":true}]}`},
		{"set sub on all elements", users, `{"userName":"u","emails":[{"value":"a"},{"value":"b"}]}`,
			`{"Operations":[{"op":"replace","path":"emails.type","value":"other"}]}`,
			`{"userName":"u","emails":[{"value":"a","type":"other"},{"value":"b","type":"other"}]}`},
		{"nil rt generic", nil, `{"userName":"u","active":true}`,
			`{"Operations":[{"op":"replace","path":"active","value":"False"},{"op":"replace","value":{"id":"x"}}]}`,
			`{"userName":"u","active":"False","id":"x"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := mustDoc(t, tt.doc)
			before := canon(t, doc)
			ops, err := ParsePatch([]byte(tt.body))
			if err != nil {
				t.Fatalf("ParsePatch: %v", err)
			}
			got, err := ApplyPatch(doc, ops, tt.rt)
			if err != nil {
				t.Fatalf("ApplyPatch(%s, %s) error = %v", tt.doc, tt.body, err)
			}
			if g, w := canon(t, got), canonJSON(t, tt.want); g != w {
				t.Errorf("ApplyPatch(%s, %s)\n = %s\nwant %s", tt.doc, tt.body, g, w)
			}
			if after := canon(t, doc); after != before {
				t.Errorf("ApplyPatch modified doc: %s, was %s", after, before)
			}
		})
	}
}

func TestApplyPatchErrors(t *testing.T) {
	users, groups := NewUserResourceType(), NewGroupResourceType()
	tests := []struct {
		name     string
		rt       *ResourceType
		doc      string
		body     string
		scimType string
		detail   string
	}{
		{"remove userName", users, `{"userName":"u"}`, `{"Operations":[{"op":"remove","path":"userName"}]}`, Mutability, `"userName" is required`},
		{"remove displayName", groups, `{"displayName":"g"}`, `{"Operations":[{"op":"Remove","path":"displayName"}]}`, Mutability, "required"},
		{"clear userName", users, `{"userName":"u"}`, `{"Operations":[{"op":"replace","path":"userName","value":""}]}`, Mutability, "required"},
		{"no-path null displayName", groups, `{"displayName":"g"}`, `{"Operations":[{"op":"replace","value":{"displayName":null}}]}`, Mutability, "required"},
		{"active maybe", users, `{"userName":"u"}`, `{"Operations":[{"op":"replace","path":"active","value":"maybe"}]}`, InvalidValue, `"active" must be a boolean`},
		{"active number", users, `{"userName":"u"}`, `{"Operations":[{"op":"replace","value":{"active":1}}]}`, InvalidValue, "boolean"},
		{"userName object", users, `{"userName":"u"}`, `{"Operations":[{"op":"replace","path":"userName","value":{"a":1}}]}`, InvalidValue, "must be a string"},
		{"name not object", users, `{"userName":"u"}`, `{"Operations":[{"op":"replace","path":"name","value":"x"}]}`, InvalidValue, "object"},
		{"replace valuePath no match", users, `{"userName":"u","addresses":[{"type":"home"}]}`,
			`{"Operations":[{"op":"replace","path":"addresses[type eq \"work\"]","value":{"type":"work"}}]}`, NoTarget, "matches"},
		{"replace valuePath sub unbuildable", users, `{"userName":"u"}`,
			`{"Operations":[{"op":"replace","path":"emails[type co \"w\"].value","value":"x"}]}`, NoTarget, "cannot be built"},
		{"no-path value not object", users, `{"userName":"u"}`, `{"Operations":[{"op":"replace","value":"x"}]}`, InvalidValue, "object"},
		{"no-path bad key", users, `{"userName":"u"}`, `{"Operations":[{"op":"replace","value":{"a b":1}}]}`, InvalidPath, `"a b"`},
		{"explicit read-only", users, `{"userName":"u"}`, `{"Operations":[{"op":"replace","path":"id","value":"x"}]}`, Mutability, "read-only"},
		{"explicit read-only remove", users, `{"userName":"u","meta":{}}`, `{"Operations":[{"op":"remove","path":"meta"}]}`, Mutability, "read-only"},
		{"second op fails", users, `{"userName":"u"}`, `{"Operations":[{"op":"replace","path":"title","value":"T"},{"op":"replace","path":"active","value":[]}]}`, InvalidValue, "Operations[1]"},
		{"extension not object", users, `{"userName":"u"}`, `{"Operations":[{"op":"add","path":"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User","value":"x"}]}`, InvalidValue, "must be an object"},
		{"sub on empty list", users, `{"userName":"u","emails":[]}`, `{"Operations":[{"op":"replace","path":"emails.value","value":"x"}]}`, NoTarget, "no values"},
		{"unknown op built by hand", users, `{"userName":"u"}`, ``, InvalidValue, "unknown op"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := mustDoc(t, tt.doc)
			before := canon(t, doc)
			var ops []Operation
			if tt.body == "" {
				ops = []Operation{{Op: "move", Value: 1}}
			} else {
				var err error
				if ops, err = ParsePatch([]byte(tt.body)); err != nil {
					t.Fatalf("ParsePatch: %v", err)
				}
			}
			got, err := ApplyPatch(doc, ops, tt.rt)
			if err == nil {
				t.Fatalf("ApplyPatch(%s, %s) = %s, want error", tt.doc, tt.body, canon(t, got))
			}
			se := scimErr(t, err)
			if se.Status != 400 || se.ScimType != tt.scimType || !strings.Contains(se.Detail, tt.detail) {
				t.Errorf("ApplyPatch(%s, %s) error = %d %s %q, want 400 %s containing %q", tt.doc, tt.body, se.Status, se.ScimType, se.Detail, tt.scimType, tt.detail)
			}
			if got != nil {
				t.Errorf("ApplyPatch returned a document with its error")
			}
			if after := canon(t, doc); after != before {
				t.Errorf("failed ApplyPatch modified doc: %s, was %s", after, before)
			}
		})
	}
}
