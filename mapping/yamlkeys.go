package mapping

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// UnknownKey is a YAML mapping key that the Go type its mapping decodes
// into has no yaml field for.
type UnknownKey struct {
	Key     *yaml.Node // the key: its Value and its Line
	Path    string     // its YAML path from where the walk began ("auth.basic[0].user")
	Allowed []string   // the keys allowed there, sorted
}

// WalkKeys is the one known-key check of our YAML documents (the mapping
// section here, the command's configuration file, a bearer token of the
// gateway's; an outbox transport, which may import only the engine, checks
// its own section). yaml.v3's KnownFields works only through a Decoder,
// not node.Decode (go-yaml #460), and stops at the first unknown key.
//
// It walks n, YAML that decodes into a value of type t, and calls unknown,
// in document order, for each mapping key at any depth that the type it
// decodes into has no yaml field for (a field without a yaml tag is known
// by its lower-cased name, as yaml.v3 decodes it; inline fields are the
// struct's own). It descends through structs, maps, slices and arrays. A
// type below t that decodes itself (a yaml.Unmarshaler) or a yaml.Node is
// not entered: it checks its own keys. visit, if not nil, is called first
// on every node with the type it decodes into and the node's path; false
// skips the node and what it holds. path is n's own place ("" at the top).
func WalkKeys(n *yaml.Node, t reflect.Type, path string, visit func(n *yaml.Node, t reflect.Type, path string) bool, unknown func(UnknownKey)) {
	walkKeys(n, t, path, true, visit, unknown)
}

var (
	unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()
	nodeType        = reflect.TypeFor[yaml.Node]()
)

func walkKeys(n *yaml.Node, t reflect.Type, path string, top bool, visit func(*yaml.Node, reflect.Type, string) bool, unknown func(UnknownKey)) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if visit != nil && !visit(n, t, path) {
		return
	}
	if !top && (reflect.PointerTo(t).Implements(unmarshalerType) || t == nodeType) {
		return
	}
	switch {
	case n.Kind == yaml.MappingNode && t.Kind() == reflect.Struct:
		fields := yamlFields(t)
		var allowed []string
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i], n.Content[i+1]
			at := joinPath(path, key.Value)
			ft, ok := fields[key.Value]
			if !ok {
				if allowed == nil {
					allowed = slices.Sorted(maps.Keys(fields))
				}
				unknown(UnknownKey{Key: key, Path: at, Allowed: allowed})
				continue
			}
			walkKeys(val, ft, at, false, visit, unknown)
		}
	case n.Kind == yaml.MappingNode && t.Kind() == reflect.Map:
		for i := 0; i+1 < len(n.Content); i += 2 {
			walkKeys(n.Content[i+1], t.Elem(), joinPath(path, n.Content[i].Value), false, visit, unknown)
		}
	case n.Kind == yaml.SequenceNode && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array):
		for i, c := range n.Content {
			walkKeys(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i), false, visit, unknown)
		}
	}
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// yamlFields maps a struct's yaml keys to field types (inline fields
// flattened).
func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if strings.Contains(opts, "inline") {
			for k, v := range yamlFields(f.Type) {
				out[k] = v
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Type
	}
	return out
}
