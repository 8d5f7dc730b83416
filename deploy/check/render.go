// Package check validates scimgate's deployment files offline, as CI runs
// them: the Helm chart rendered with the Helm SDK and every object decoded
// strictly into the Kubernetes and prometheus-operator API types, the
// Compose file loaded with compose-go against the Compose specification,
// and the signature-verification programs of docs/events.md run against
// real events from the real gateway. It is its own module so that the
// gateway's go.mod stays small; nothing here is imported by the gateway.
package check

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/releaseutil"
	"helm.sh/helm/v3/pkg/strvals"
	"sigs.k8s.io/yaml"
)

// Install is what `helm template|install|upgrade --install` is given: the
// release, the chart and the value flags, applied in Helm's order (files,
// then --set, --set-string, --set-file, left to right within each kind).
type Install struct {
	Release    string
	Namespace  string
	Chart      string            // the chart directory
	ValueFiles []string          // -f / --values
	Set        []string          // --set
	SetString  []string          // --set-string
	SetFile    map[string]string // --set-file key → the content to use
}

// Manifest is one rendered object: its template, kind and name, and YAML.
type Manifest struct {
	Template   string
	APIVersion string
	Kind       string
	Name       string
	YAML       []byte
}

// Rendering is a chart rendered for one Install.
type Rendering struct {
	Manifests []Manifest
	Notes     string
	Values    map[string]any // the values after coalescing with the chart's defaults
}

// Render renders the chart as `helm template` would for a new install:
// values validated against values.schema.json, templates executed in
// strict mode (a reference to a value that does not exist is an error).
func Render(in Install) (*Rendering, error) {
	ch, err := loader.Load(in.Chart)
	if err != nil {
		return nil, fmt.Errorf("load chart: %w", err)
	}
	vals := map[string]any{}
	for _, f := range in.ValueFiles {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var m map[string]any
		if err := yaml.Unmarshal(b, &m); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		vals = mergeMaps(vals, m)
	}
	for _, s := range in.Set {
		if err := strvals.ParseInto(s, vals); err != nil {
			return nil, fmt.Errorf("--set %s: %w", s, err)
		}
	}
	for _, s := range in.SetString {
		if err := strvals.ParseIntoString(s, vals); err != nil {
			return nil, fmt.Errorf("--set-string %s: %w", s, err)
		}
	}
	for _, k := range sortedKeys(in.SetFile) {
		content := in.SetFile[k]
		if err := strvals.ParseIntoFile(k+"=file", vals, func(rs []rune) (any, error) { return content, nil }); err != nil {
			return nil, fmt.Errorf("--set-file %s: %w", k, err)
		}
	}
	ns := in.Namespace
	if ns == "" {
		ns = "default"
	}
	top, err := chartutil.ToRenderValues(ch, vals, chartutil.ReleaseOptions{Name: in.Release, Namespace: ns, Revision: 1, IsInstall: true}, chartutil.DefaultCapabilities)
	if err != nil {
		return nil, err
	}
	out, err := engine.Engine{Strict: true}.Render(ch, top)
	if err != nil {
		return nil, err
	}
	r := &Rendering{}
	if v, ok := top["Values"].(chartutil.Values); ok {
		r.Values = v
	}
	for _, name := range sortedKeys(out) {
		body := out[name]
		if strings.HasSuffix(name, "NOTES.txt") {
			r.Notes = body
			continue
		}
		if filepath.Ext(name) != ".yaml" {
			continue
		}
		docs := releaseutil.SplitManifests(body)
		for _, k := range sortedKeys(docs) {
			doc := docs[k]
			if strings.TrimSpace(doc) == "" {
				continue
			}
			var head struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
				Metadata   struct {
					Name string `json:"name"`
				} `json:"metadata"`
			}
			if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
				return nil, fmt.Errorf("%s: not YAML: %w\n%s", name, err, doc)
			}
			if head.Kind == "" {
				// A template that rendered comments only.
				var any map[string]any
				if yaml.Unmarshal([]byte(doc), &any) == nil && len(any) == 0 {
					continue
				}
				return nil, fmt.Errorf("%s: an object without a kind:\n%s", name, doc)
			}
			r.Manifests = append(r.Manifests, Manifest{Template: name, APIVersion: head.APIVersion, Kind: head.Kind, Name: head.Metadata.Name, YAML: []byte(doc)})
		}
	}
	return r, nil
}

// mergeMaps merges b over a as `helm -f a -f b` does: maps merge key by
// key, anything else in b replaces a's.
func mergeMaps(a, b map[string]any) map[string]any {
	out := maps.Clone(a)
	for k, v := range b {
		if vm, ok := v.(map[string]any); ok {
			if am, ok := out[k].(map[string]any); ok {
				out[k] = mergeMaps(am, vm)
				continue
			}
		}
		out[k] = v
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Find returns the rendered objects of one kind.
func (r *Rendering) Find(kind string) []Manifest {
	var out []Manifest
	for _, m := range r.Manifests {
		if m.Kind == kind {
			out = append(out, m)
		}
	}
	return out
}
