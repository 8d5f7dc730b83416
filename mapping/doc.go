// Package mapping turns SCIM resources into canonical records.
//
// The gateway hands it each User or Group that an IdP pushes; YAML rules
// (the config's `mapping:` section, see docs/mapping.md), compiled once by
// Compile, read SCIM attribute paths (with the path grammar of gateway/scim),
// transform and validate the values and name the record's fields. A required
// field that is missing or invalid fails the SCIM request with a 400
// invalidValue error naming the field. Diff compares two records for the
// `changes` of an event. The package does no I/O: references to other users
// are resolved through a Resolver the store provides.
package mapping

// Time zones are validated against the embedded IANA database when the
// system has none (distroless images, scratch).
import _ "time/tzdata"
