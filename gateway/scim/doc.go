// Package scim is the SCIM 2.0 protocol (RFC 7643/7644) without I/O: schema
// definitions, attribute paths, filters, PATCH operations, resource
// normalisation and projection, list responses and error messages.
//
// The gateway decodes a request body with DecodeObject (or ParsePatchLimits
// for PATCH), which bound its nesting and refuse invalid UTF-8, counts its
// values with CountValues / CountPatchValues against the configured limits
// before anything reaches the store, calls Normalize, ParseFilter and
// ApplyPatchLimits here, and renders every resource it returns with Project,
// which also renders "schemas". Nothing in this package does network or
// disk I/O, logs, or keeps state, so every function is safe for concurrent
// use.
//
// Resources are plain JSON documents. Attribute names are looked up
// case-insensitively everywhere (RFC 7643 §2.1); values keep the case the
// client sent. Extension attributes live under their schema URN key, e.g.
// doc["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"].
//
// The parsers are lenient where identity providers deviate from the RFCs
// (Microsoft Entra ID's capitalised PATCH ops, "True"/"False" strings,
// unquoted filter values, emails[type eq "work"].value paths, bare-string
// managers; Okta's no-path PATCH with read-only attributes), and every error
// a client can act on is an *Error carrying the RFC 7644 §3.12 scimType.
package scim
