package scim

import (
	"encoding/json"
	"testing"
)

func TestErrorMarshalJSON(t *testing.T) {
	tests := []struct {
		name string
		err  *Error
		want string
	}{
		{"withType", Errorf(400, InvalidFilter, "filter %q is bad", "x"),
			`{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"400","scimType":"invalidFilter","detail":"filter \"x\" is bad"}`},
		{"noType", &Error{Status: 404, Detail: "User 1 not found"},
			`{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"404","detail":"User 1 not found"}`},
		{"noDetail", &Error{Status: 401},
			`{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"status":"401","detail":"Unauthorized"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.err)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tt.want {
				t.Errorf("json.Marshal(%#v) = %s, want %s", tt.err, b, tt.want)
			}
			// A value (not pointer) inside another struct marshals the same way.
			b2, _ := json.Marshal(struct{ E *Error }{tt.err})
			if want := `{"E":` + tt.want + `}`; string(b2) != want {
				t.Errorf("nested json.Marshal = %s, want %s", b2, want)
			}
		})
	}
}

func TestErrorError(t *testing.T) {
	tests := []struct {
		err  *Error
		want string
	}{
		{Errorf(400, InvalidPath, "bad"), "scim: 400 invalidPath: bad"},
		{&Error{Status: 404}, "scim: 404: Not Found"},
		{&Error{Status: 409, ScimType: Uniqueness, Detail: "dup"}, "scim: 409 uniqueness: dup"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}
