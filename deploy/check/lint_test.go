package check

import (
	"os"
	"testing"

	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	"sigs.k8s.io/yaml"
)

// TestChartLint runs `helm lint`'s rules (Chart.yaml, values and schema,
// templates, object metadata, deprecated APIs) with the defaults and with
// the sidecar example; a warning fails, information is logged.
func TestChartLint(t *testing.T) {
	side, err := os.ReadFile(sidecarValues)
	if err != nil {
		t.Fatal(err)
	}
	var sideVals map[string]any
	if err := yaml.Unmarshal(side, &sideVals); err != nil {
		t.Fatal(err)
	}
	for name, vals := range map[string]map[string]any{"defaults": nil, "sidecar": sideVals} {
		l := lint.All(chartDir, vals, "idp", false)
		for _, m := range l.Messages {
			if m.Severity >= support.WarningSev {
				t.Errorf("%s: %s", name, m)
			} else {
				t.Logf("%s: %s", name, m)
			}
		}
	}
	// And the linter does fail: a value the schema refuses is an error.
	l := lint.All(chartDir, map[string]any{"persistence": map[string]any{"accessMode": "ReadWriteMany"}}, "idp", false)
	if l.HighestSeverity < support.ErrorSev {
		t.Errorf("lint passed accessMode ReadWriteMany: %v", l.Messages)
	}
}
