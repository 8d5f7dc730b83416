// Package gateway is scimgate's HTTP side. Server is the SCIM 2.0 API
// (RFC 7644) that Okta and Entra ID call: authentication, request
// decoding, discovery endpoints and the one place an error becomes a SCIM
// error response. Each request is parsed with gateway/scim and handed to
// gateway/store, which maps the resource through the mapping rules and
// commits it together with its outbox events in one bbolt transaction;
// the response is written only after that commit. Admin is the operator's
// listener: health, readiness, Prometheus metrics, status, dead letters,
// replay, pause and online backup.
package gateway
