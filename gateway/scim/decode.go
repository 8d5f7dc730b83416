package scim

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"unicode/utf8"
)

// DefaultMaxDepth is the nesting bound (objects and arrays; the top-level
// object is depth 1) that DecodeObject, ParsePatch and ApplyPatch apply when
// no other is given: scim.limits.max_depth's default. SCIM documents need 5
// (a PatchOp's value inside a multi-valued attribute of an extension).
const DefaultMaxDepth = 32

// Limits bounds what one request may contain. The zero value means the
// defaults.
type Limits struct {
	// MaxDepth bounds the nesting of a request body and of a document after
	// PATCH (scim.limits.max_depth); 0 means DefaultMaxDepth.
	MaxDepth int
}

func (l Limits) maxDepth() int {
	if l.MaxDepth <= 0 {
		return DefaultMaxDepth
	}
	return l.MaxDepth
}

// DecodeObject decodes a POST or PUT request body: one JSON object, numbers
// as json.Number (integers stay exact for the mapping), nothing after it.
// maxDepth bounds the nesting of objects and arrays (the top-level object is
// depth 1); 0 or less means DefaultMaxDepth.
//
// Before decoding, one linear pass over the bytes rejects a document nested
// deeper than maxDepth (so a 10,000-deep body costs O(n), never a deep
// decode), invalid UTF-8, and \u escapes of unpaired UTF-16 surrogates
// ("\ud800"), which encoding/json would silently turn into U+FFFD so that two
// different names became one. Every error is an *Error with status 400 and
// scimType invalidSyntax whose detail gives the byte offset and, for depth,
// the limit and its key scim.limits.max_depth. No detail quotes the body.
func DecodeObject(body []byte, maxDepth int) (map[string]any, error) {
	v, err := decodeJSON(body, Limits{MaxDepth: maxDepth}.maxDepth(), "request body")
	if err != nil {
		return nil, err
	}
	doc, ok := v.(map[string]any)
	if !ok || doc == nil {
		return nil, badRequest(InvalidSyntax, "request body must be a JSON object with the resource's attributes, got %s", describeType(v))
	}
	return doc, nil
}

// decodeJSON checks body with scanJSON and decodes one JSON value from it
// (UseNumber), refusing data after it. what names the body in details.
func decodeJSON(body []byte, maxDepth int, what string) (any, *Error) {
	if err := scanJSON(body, maxDepth, what); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		var se *json.SyntaxError
		switch {
		case errors.Is(err, io.EOF):
			return nil, badRequest(InvalidSyntax, "%s is empty; expected a JSON object", what)
		case errors.Is(err, io.ErrUnexpectedEOF):
			return nil, badRequest(InvalidSyntax, "%s is truncated JSON: it ends before the object is closed", what)
		case errors.As(err, &se):
			return nil, badRequest(InvalidSyntax, "%s is not valid JSON: %s (at byte %d)", what, se.Error(), se.Offset)
		}
		return nil, badRequest(InvalidSyntax, "%s is not valid JSON: %v", what, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, badRequest(InvalidSyntax, "%s has data after the JSON object (at byte %d); send exactly one object", what, dec.InputOffset())
	}
	return v, nil
}

// scanJSON is the linear pre-scan of DecodeObject: nesting depth outside
// strings, UTF-8 and surrogate escapes inside them. Syntax is left to the
// decoder, which runs only when the scan passes.
func scanJSON(body []byte, maxDepth int, what string) *Error {
	depth := 0
	for i := 0; i < len(body); {
		c := body[i]
		switch {
		case c == '"':
			end, err := scanString(body, i+1, what)
			if err != nil {
				return err
			}
			i = end
			continue
		case c == '{' || c == '[':
			depth++
			if depth > maxDepth {
				return badRequest(InvalidSyntax, "%s is nested more than %d levels deep (objects and arrays; at byte %d), the limit set by scim.limits.max_depth: no SCIM attribute is nested this deep, so flatten the value",
					what, maxDepth, i)
			}
		case c == '}' || c == ']':
			depth--
		case c >= utf8.RuneSelf:
			if r, size := utf8.DecodeRune(body[i:]); r == utf8.RuneError && size == 1 {
				return invalidUTF8(what, i)
			}
		}
		i++
	}
	return nil
}

// scanString checks the string whose contents start at body[i] and returns
// the offset just after its closing quote (len(body) when unterminated,
// which the decoder then reports).
func scanString(body []byte, i int, what string) (int, *Error) {
	for i < len(body) {
		c := body[i]
		switch {
		case c == '"':
			return i + 1, nil
		case c == '\\':
			if i+1 < len(body) && body[i+1] == 'u' {
				r, ok := hexAt(body, i+2)
				if !ok {
					i += 2 // a bad escape: the decoder reports it
					continue
				}
				switch {
				case r >= 0xDC00 && r <= 0xDFFF:
					return 0, unpairedSurrogate(what, body[i:i+6], i)
				case r >= 0xD800 && r <= 0xDBFF:
					lo, ok := -1, false
					if i+7 < len(body) && body[i+6] == '\\' && body[i+7] == 'u' {
						lo, ok = hexAt(body, i+8)
					}
					if !ok || lo < 0xDC00 || lo > 0xDFFF {
						return 0, unpairedSurrogate(what, body[i:i+6], i)
					}
					i += 12
				default:
					i += 6
				}
				continue
			}
			i += 2
		case c < utf8.RuneSelf:
			i++
		default:
			r, size := utf8.DecodeRune(body[i:])
			if r == utf8.RuneError && size == 1 {
				return 0, invalidUTF8(what, i)
			}
			i += size
		}
	}
	return len(body), nil
}

// hexAt returns the value of the four hex digits at body[i:i+4].
func hexAt(body []byte, i int) (int, bool) {
	if i+4 > len(body) {
		return 0, false
	}
	r, ok := hex4(string(body[i:i+4]), 0)
	return int(r), ok
}

func invalidUTF8(what string, at int) *Error {
	return badRequest(InvalidSyntax, "%s is not valid UTF-8 (at byte %d): send JSON text encoded as UTF-8", what, at)
}

func unpairedSurrogate(what string, esc []byte, at int) *Error {
	return badRequest(InvalidSyntax, "%s has the escape %s (at byte %d), half of a UTF-16 surrogate pair without its other half; it is not a character: fix the text that contains it",
		what, esc, at)
}

// describeType names the JSON type of v without its value, for details
// about values that must not be quoted (write-only, unknown attributes).
func describeType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	}
	if _, ok := number(v); ok {
		return "a number"
	}
	return "a value of another type"
}

// Depth returns the nesting depth of a decoded JSON value: 0 for a scalar,
// 1 for an object or array of scalars (so a document's top level is 1). It
// stops counting at limit+1, so its cost is bounded by the document's size
// and its recursion by limit; limit 0 or less means DefaultMaxDepth.
func Depth(v any, limit int) int {
	if limit <= 0 {
		limit = DefaultMaxDepth
	}
	return depth(v, limit+1)
}

func depth(v any, stop int) int {
	d := 0
	visit := func(e any) bool {
		d = max(d, 1+depth(e, stop-1))
		return d >= stop
	}
	switch x := v.(type) {
	case map[string]any:
		d = 1
		for _, e := range x {
			if stop <= 1 || visit(e) {
				break
			}
		}
	case []any:
		d = 1
		for _, e := range x {
			if stop <= 1 || visit(e) {
				break
			}
		}
	}
	return d
}
