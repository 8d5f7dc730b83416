package scim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
)

// MediaType is the SCIM media type (RFC 7644 §3.1) that responses carry.
const MediaType = "application/scim+json"

// Schema and message URNs of RFC 7643 and RFC 7644.
const (
	SchemaUser                  = "urn:ietf:params:scim:schemas:core:2.0:User"
	SchemaGroup                 = "urn:ietf:params:scim:schemas:core:2.0:Group"
	SchemaEnterpriseUser        = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
	SchemaListResponse          = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
	SchemaError                 = "urn:ietf:params:scim:api:messages:2.0:Error"
	SchemaPatchOp               = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
	SchemaServiceProviderConfig = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"
	SchemaResourceType          = "urn:ietf:params:scim:schemas:core:2.0:ResourceType"
	SchemaSchema                = "urn:ietf:params:scim:schemas:core:2.0:Schema"
)

// The scimType values of RFC 7644 §3.12, Table 9.
const (
	// InvalidFilter: the filter syntax or comparison is invalid.
	InvalidFilter = "invalidFilter"
	// TooMany: the filter yields more results than the server will return.
	TooMany = "tooMany"
	// Uniqueness: a value violates a uniqueness constraint (409).
	Uniqueness = "uniqueness"
	// Mutability: the change is incompatible with an attribute's mutability
	// or requiredness.
	Mutability = "mutability"
	// InvalidSyntax: the request body is not valid JSON or not a valid message.
	InvalidSyntax = "invalidSyntax"
	// InvalidPath: a PATCH path or an attribute path is invalid.
	InvalidPath = "invalidPath"
	// NoTarget: a PATCH path selects nothing (or remove has no path).
	NoTarget = "noTarget"
	// InvalidValue: a value is missing or of the wrong type.
	InvalidValue = "invalidValue"
	// InvalidVers: the SCIM protocol version is not supported.
	InvalidVers = "invalidVers"
	// Sensitive: the request would expose sensitive data (e.g. in a URL).
	Sensitive = "sensitive"
)

// Error is a SCIM error response (RFC 7644 §3.12). It marshals as
// {"schemas":[SchemaError],"status":"400","scimType":"…","detail":"…"}:
// status is a string and scimType is omitted when empty. Detail is written
// for the administrator of the identity provider and says what to fix.
type Error struct {
	Status   int    // HTTP status code, e.g. 400
	ScimType string // one of the scimType constants, or "" (e.g. 404)
	Detail   string // human-readable explanation
}

// Error returns a one-line description such as
// "scim: 400 invalidFilter: filter … is incomplete".
func (e *Error) Error() string {
	s := "scim: " + strconv.Itoa(e.Status)
	if e.ScimType != "" {
		s += " " + e.ScimType
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	} else if t := http.StatusText(e.Status); t != "" {
		s += ": " + t
	}
	return s
}

// errorJSON is the wire form of Error.
type errorJSON struct {
	Schemas  []string `json:"schemas"`
	Status   string   `json:"status"`
	ScimType string   `json:"scimType,omitempty"`
	Detail   string   `json:"detail,omitempty"`
}

// MarshalJSON renders e as a SCIM Error message. An empty Detail is replaced
// by the HTTP status text, because Okta's suite requires a non-empty detail.
func (e *Error) MarshalJSON() ([]byte, error) {
	d := e.Detail
	if d == "" {
		d = http.StatusText(e.Status)
	}
	return json.Marshal(errorJSON{
		Schemas:  []string{SchemaError},
		Status:   strconv.Itoa(e.Status),
		ScimType: e.ScimType,
		Detail:   d,
	})
}

// Errorf returns an *Error with the given status and scimType and a detail
// formatted as with fmt.Sprintf.
func Errorf(status int, scimType, format string, args ...any) *Error {
	return &Error{Status: status, ScimType: scimType, Detail: fmt.Sprintf(format, args...)}
}

// badRequest returns a 400 *Error.
func badRequest(scimType, format string, args ...any) *Error {
	return Errorf(http.StatusBadRequest, scimType, format, args...)
}
