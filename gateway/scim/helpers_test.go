package scim

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
)

// mustDoc decodes a JSON object the way the gateway does (UseNumber).
func mustDoc(t testing.TB, s string) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("decode %s: %v", s, err)
	}
	return m
}

// canon returns the canonical JSON of v (sorted keys) for comparisons.
func canon(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal %v: %v", v, err)
	}
	return string(b)
}

// canonJSON re-encodes a JSON text canonically.
func canonJSON(t testing.TB, s string) string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %s: %v", s, err)
	}
	return canon(t, v)
}

// scimErr returns err as an *Error, failing the test otherwise.
func scimErr(t testing.TB, err error) *Error {
	t.Helper()
	var se *Error
	if !errors.As(err, &se) {
		t.Fatalf("error %v (%T) is not a *scim.Error", err, err)
	}
	return se
}

// sampleUser is a user as the gateway stores it.
const sampleUser = `{
  "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
  "id": "2819c223-7f76-453a-919d-413861904646",
  "externalId": "00ujl29u0le5T6Aj10h7",
  "userName": "bjensen@example.com",
  "name": {"givenName": "Barbara", "familyName": "Jensen", "formatted": "Ms. Barbara J Jensen"},
  "displayName": "Babs Jensen",
  "title": "Tour Guide",
  "active": true,
  "emails": [
    {"value": "bjensen@example.com", "type": "work", "primary": true},
    {"value": "babs@jensen.org", "type": "home"}
  ],
  "phoneNumbers": [{"value": "555-555-8377", "type": "work"}],
  "roles": [],
  "nickName": "",
  "loginCount": 42,
  "meta": {"resourceType": "User", "created": "2010-01-23T04:56:22Z", "lastModified": "2011-05-13T04:42:34.123Z", "version": "W/\"a330bc54f0671c9\""},
  "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
    "employeeNumber": "701984", "department": "Tour Operations",
    "manager": {"value": "26118915-6090-4610-87e4-49d8ca9f808d", "displayName": "John Smith"}
  }
}`

const sampleGroup = `{
  "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
  "id": "abf4dd94-a4c0-4f67-89c9-76b03340cb9b",
  "displayName": "Test SCIMv2",
  "members": [
    {"value": "89bb1940-b905-4575-9e7f-6f887cfb368e", "display": "other@okta.local"},
    {"value": "u1091", "display": "u1091@okta.local"}
  ]
}`
