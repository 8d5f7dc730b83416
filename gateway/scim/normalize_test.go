package scim

import (
	"strings"
	"testing"
)

func TestNormalize(t *testing.T) {
	users, groups := NewUserResourceType(), NewGroupResourceType()
	tests := []struct {
		name string
		rt   *ResourceType
		in   string
		want string
	}{
		{"okta create", users, `{
  "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
  "userName": "test.user@okta.local",
  "name": {"givenName": "Test", "familyName": "User"},
  "emails": [{"primary": true, "value": "test.user@okta.local", "type": "work"}],
  "displayName": "Test User",
  "locale": "en-US",
  "externalId": "00ujl29u0le5T6Aj10h7",
  "groups": [],
  "password": "1mz050nq",
  "active": true
}`, `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"test.user@okta.local","name":{"givenName":"Test","familyName":"User"},
  "emails":[{"primary":true,"value":"test.user@okta.local","type":"work"}],"displayName":"Test User","locale":"en-US","externalId":"00ujl29u0le5T6Aj10h7","active":true}`},
		{"okta put drops id meta groups", users, `{
  "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
  "id": "23a35c27-23d3-4c03-b4c5-6443c09e7173",
  "userName": "test.user@okta.local",
  "name": {"givenName": "Another", "middleName": "Excited", "familyName": "User"},
  "emails": [{"primary": true, "value": "test.user@okta.local", "type": "work", "display": "test.user@okta.local"}],
  "active": true,
  "groups": [],
  "meta": {"resourceType": "User"}
}`, `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"test.user@okta.local","name":{"givenName":"Another","middleName":"Excited","familyName":"User"},
  "emails":[{"primary":true,"value":"test.user@okta.local","type":"work","display":"test.user@okta.local"}],"active":true}`},
		{"active True string and key case", users, `{"UserName":"emp1","active":"True","emails":[{"Primary":"false","type":"work","value":"a@b.c"}]}`,
			`{"userName":"emp1","active":true,"emails":[{"primary":false,"type":"work","value":"a@b.c"}]}`},
		{"nulls dropped", users, `{"userName":"u","title":null,"addresses":[{"country":null,"locality":"L","type":"other"},null],"roles":[],"custom":{"a":null,"b":[null,1]}}`,
			`{"userName":"u","addresses":[{"locality":"L","type":"other"}],"roles":[],"custom":{"b":[1]}}`},
		{"enterprise canonical and manager string", users, `{"userName":"u","URN:IETF:PARAMS:SCIM:SCHEMAS:EXTENSION:ENTERPRISE:2.0:USER":{"Department":"Sales","manager":"m1","employeeNumber":"1001"}}`,
			`{"userName":"u","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"Sales","manager":{"value":"m1"},"employeeNumber":"1001"}}`},
		{"enterprise manager object kept, its read-only displayName ignored", users, `{"userName":"u","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"manager":{"value":"m","displayName":"Boss"}}}`,
			`{"userName":"u","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"manager":{"value":"m"}}}`},
		{"undeclared extension generic", users, `{"userName":"u","urn:ietf:params:scim:schemas:extension:cybsafe:2.0:User":{"costCentre":"42","hireDate":"2024-01-02","x":null}}`,
			`{"userName":"u","urn:ietf:params:scim:schemas:extension:cybsafe:2.0:User":{"costCentre":"42","hireDate":"2024-01-02"}}`},
		{"top-level manager", users, `{"userName":"u","manager":{"value":"m"}}`, `{"userName":"u","manager":{"value":"m"}}`},
		{"unknown attributes kept", users, `{"userName":"u","adreses":[{"x":1}]}`, `{"userName":"u","adreses":[{"x":1}]}`},
		{"entra group", groups, `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group","http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"],"externalId":"8aa1a0c0","displayName":"G","meta":{"resourceType":"Group"}}`,
			`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group","http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"],"externalId":"8aa1a0c0","displayName":"G"}`},
		{"group members", groups, `{"displayName":"G","members":[{"value":"u1","display":"VP","$ref":null}],"id":"x"}`,
			`{"displayName":"G","members":[{"value":"u1","display":"VP"}]}`},
		{"entra user create", users, `{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],"externalId":"0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef","userName":"Test_User_ab6490ee-1e48-479e-a20b-2d77186b5dd1","active":true,"emails":[{"primary":true,"type":"work","value":"Test_User_fd0ea19b@testuser.com"}],"meta":{"resourceType":"User"},"name":{"formatted":"givenName familyName","familyName":"familyName","givenName":"givenName"},"roles":[],"addresses":null,"title":null}`,
			`{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],"externalId":"0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef","userName":"Test_User_ab6490ee-1e48-479e-a20b-2d77186b5dd1","active":true,"emails":[{"primary":true,"type":"work","value":"Test_User_fd0ea19b@testuser.com"}],"name":{"formatted":"givenName familyName","familyName":"familyName","givenName":"givenName"},"roles":[]}`},
		{"nil rt", nil, `{"id":"x","active":"True","a":null}`, `{"id":"x","active":"True"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := mustDoc(t, tt.in)
			before := canon(t, doc)
			got, err := Normalize(doc, tt.rt)
			if err != nil {
				t.Fatalf("Normalize(%s) error = %v", tt.in, err)
			}
			if g, w := canon(t, got), canonJSON(t, tt.want); g != w {
				t.Errorf("Normalize(%s)\n = %s\nwant %s", tt.in, g, w)
			}
			if canon(t, doc) != before {
				t.Errorf("Normalize modified its input")
			}
		})
	}
}

func TestNormalizeErrors(t *testing.T) {
	users := NewUserResourceType()
	tests := []struct{ name, in, detail string }{
		{"userName number", `{"userName":123}`, `attribute "userName" must be a string, got the number 123`},
		{"userName object", `{"userName":{"a":1}}`, `"userName" must be a string, got an object`},
		{"active maybe", `{"userName":"u","active":"maybe"}`, `"active" must be a boolean (true or false), got the string "maybe"`},
		{"emails string", `{"userName":"u","emails":"a@b.c"}`, `"emails" is multi-valued and must be an array`},
		{"emails element string", `{"userName":"u","emails":["a@b.c"]}`, `"emails" must be an object`},
		{"primary maybe", `{"userName":"u","emails":[{"value":"a","primary":"yes"}]}`, `"emails.primary" must be a boolean`},
		{"name string", `{"userName":"u","name":"Bob"}`, `"name" must be an object`},
		{"extension not object", `{"userName":"u","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":"x"}`, `must be an object`},
		{"duplicate key", `{"userName":"u","USERNAME":"v"}`, `given twice`},
		{"duplicate sub key", `{"userName":"u","name":{"givenName":"a","GivenName":"b"}}`, `given twice`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Normalize(mustDoc(t, tt.in), users)
			if err == nil {
				t.Fatalf("Normalize(%s) = %s, want error", tt.in, canon(t, got))
			}
			se := scimErr(t, err)
			if se.Status != 400 || se.ScimType != InvalidValue || !strings.Contains(se.Detail, tt.detail) {
				t.Errorf("Normalize(%s) error = %d %s %q, want 400 invalidValue containing %q", tt.in, se.Status, se.ScimType, se.Detail, tt.detail)
			}
		})
	}
}

func TestMissing(t *testing.T) {
	tests := []struct {
		rt   *ResourceType
		in   string
		want string
	}{
		{NewUserResourceType(), `{"userName":"u"}`, ""},
		{NewUserResourceType(), `{"userame":"u"}`, "userName"},
		{NewUserResourceType(), `{"userName":""}`, "userName"},
		{NewGroupResourceType(), `{"displayName":"g"}`, ""},
		{NewGroupResourceType(), `{"members":[]}`, "displayName"},
		{nil, `{}`, ""},
	}
	for _, tt := range tests {
		if got := Missing(mustDoc(t, tt.in), tt.rt); got != tt.want {
			t.Errorf("Missing(%s) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// Okta sends number-typed profile attributes as JSON numbers; a string
// attribute stores their text, while server-unique identifiers refuse them.
func TestNormalizeNumbersForStrings(t *testing.T) {
	doc := mustDoc(t, `{"userName":"u","name":{"givenName":1},"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"employeeNumber":1001,"department":5}}`)
	got, err := Normalize(doc, NewUserResourceType())
	if err != nil {
		t.Fatal(err)
	}
	ent := got[SchemaEnterpriseUser].(map[string]any)
	if got["name"].(map[string]any)["givenName"] != "1" || ent["employeeNumber"] != "1001" || ent["department"] != "5" {
		t.Errorf("Normalize = %v", got)
	}
	if _, err := Normalize(mustDoc(t, `{"userName":123}`), NewUserResourceType()); err == nil {
		t.Error("userName as a number accepted")
	}
}
